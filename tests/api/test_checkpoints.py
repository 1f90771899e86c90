"""GET /jobs/{id}/checkpoints and /jobs/{id}/checkpoints/{name}, on checkpoints written by real
(tiny) training runs."""

import io
from datetime import UTC, datetime, timedelta

import pytest
import torch

from api import sampling
from gan.checkpoint import checkpoint_path
from tests.api.test_metrics import report
from tests.api.test_samples import job_with_a_best_checkpoint, train_job_briefly
from worker.artifacts import ArtifactStore

FID = {"fid": 40.0, "diversity": 0.9}


def test_checkpoints_lists_the_files_with_best_and_metrics(client, settings):
    job_id = job_with_a_best_checkpoint(client, settings)  # steps 2, 4; best.pt is step 2's
    report(settings, job_id, 2, metrics=FID, metrics_step=2, best=FID, best_step=2)
    report(settings, job_id, 4)  # no evaluation at step 4
    body = client.get(f"/jobs/{job_id}/checkpoints").json()
    assert body["job_id"] == job_id
    listed = body["checkpoints"]
    assert [(c["name"], c["step"], c["best"], c["metrics"]) for c in listed] == [
        ("2", 2, True, FID),
        ("best", 2, True, FID),
        ("4", 4, False, None),
    ]
    directory = settings.checkpoint_dir(job_id)
    files = {"2": checkpoint_path(directory, 2), "4": checkpoint_path(directory, 4)}
    files["best"] = directory / "best.pt"
    for checkpoint in listed:
        stat = files[checkpoint["name"]].stat()
        assert checkpoint["size_bytes"] == stat.st_size
        created = datetime.fromisoformat(checkpoint["created_at"])
        assert created.tzinfo is not None
        written = datetime.fromtimestamp(stat.st_mtime_ns / 1e9, UTC)
        assert abs(created - written) < timedelta(milliseconds=1)
        assert checkpoint["download"].endswith(f"/jobs/{job_id}/checkpoints/{checkpoint['name']}")
        assert client.get(checkpoint["download"]).content == files[checkpoint["name"]].read_bytes()


def test_checkpoints_of_a_job_without_any(client):
    job_id = client.post("/jobs", json={"max_steps": 10}).json()["id"]
    assert client.get(f"/jobs/{job_id}/checkpoints").json() == {
        "job_id": job_id,
        "checkpoints": [],
    }
    assert client.get("/jobs/nope/checkpoints").status_code == 404
    response = client.get(f"/jobs/{job_id}/checkpoints/latest")
    assert response.status_code == 409 and "no checkpoint yet" in response.json()["detail"]


def test_download_is_the_file(client, settings):
    job_id = job_with_a_best_checkpoint(client, settings)
    directory = settings.checkpoint_dir(job_id)
    for name, path, kind, filename in (
        ("2", checkpoint_path(directory, 2), "step", f"{job_id}-step-00000002.pt"),
        ("4", checkpoint_path(directory, 4), "step", f"{job_id}-step-00000004.pt"),
        ("latest", checkpoint_path(directory, 4), "latest", f"{job_id}-step-00000004.pt"),
        ("best", directory / "best.pt", "best", f"{job_id}-best-step-00000002.pt"),
    ):
        response = client.get(f"/jobs/{job_id}/checkpoints/{name}")
        assert response.status_code == 200, response.text
        assert response.content == path.read_bytes(), name
        assert response.headers["content-type"] == "application/octet-stream"
        assert response.headers["content-length"] == str(path.stat().st_size)
        assert response.headers["content-disposition"] == f'attachment; filename="{filename}"'
        assert response.headers["x-checkpoint"] == kind
        step = torch.load(io.BytesIO(response.content), weights_only=True)["step"]
        assert response.headers["x-checkpoint-step"] == str(step)
    # Step 2's file pruned: best.pt still has its weights.
    checkpoint_path(directory, 2).unlink()
    response = client.get(f"/jobs/{job_id}/checkpoints/2")
    assert response.content == (directory / "best.pt").read_bytes()


def test_bad_checkpoint_names_are_422_naming_name(client, settings):
    job_id = train_job_briefly(client, settings)
    for name in ("..%2Fx", "..%2F..%2Fgan.db", "step-1.pt", "best.pt", "%C2%B2", "-1", "1.5",
                 "newest", "latest%20", "1e3", "a/b", "9" * 30):  # fmt: skip
        response = client.get(f"/jobs/{job_id}/checkpoints/{name}")
        assert response.status_code == 422, (name, response.text)
        [error] = response.json()["detail"]
        assert error["loc"] == ["path", "name"], error


def test_a_step_not_on_disk_is_404_listing_those_that_are(client, settings):
    job_id = job_with_a_best_checkpoint(client, settings)
    response = client.get(f"/jobs/{job_id}/checkpoints/3")
    assert response.status_code == 404
    detail = response.json()["detail"]
    assert "no checkpoint at step 3" in detail and "steps 2, 4 and best (step 2)" in detail
    assert client.get("/jobs/nope/checkpoints/2").status_code == 404
    no_best = train_job_briefly(client, settings, steps=4, checkpoint_every=2)
    response = client.get(f"/jobs/{no_best}/checkpoints/best")
    assert response.status_code == 404 and "on disk: steps 2, 4" in response.json()["detail"]


def test_a_checkpoint_pruned_between_listing_and_reading(client, settings, monkeypatch):
    job_id = train_job_briefly(client, settings, steps=4, checkpoint_every=2, keep_checkpoints=5)
    step2 = checkpoint_path(settings.checkpoint_dir(job_id), 2)
    data = step2.read_bytes()
    entries = sampling.Checkpoints.entries

    def list_then_prune(folder):
        """The listing, after which training prunes step 2 (as it does its oldest)."""
        found = entries(folder)
        step2.unlink(missing_ok=True)
        return found

    monkeypatch.setattr(sampling.Checkpoints, "entries", list_then_prune)
    step2.write_bytes(data)
    listed = client.get(f"/jobs/{job_id}/checkpoints").json()["checkpoints"]
    assert [c["name"] for c in listed] == ["4"]
    for path in ("checkpoints/2", "samples?checkpoint=2"):
        step2.write_bytes(data)
        response = client.get(f"/jobs/{job_id}/{path}")
        assert response.status_code == 404, response.text
        assert "no checkpoint at step 2; on disk: steps 4" in response.json()["detail"]


def test_an_open_checkpoint_survives_pruning_and_a_replaced_one_is_found_again(tmp_path):
    directory = tmp_path / "checkpoints"
    directory.mkdir()
    path = checkpoint_path(directory, 2)
    path.write_bytes(b"weights")
    folder = sampling.Checkpoints(ArtifactStore(str(tmp_path), tmp_path / "cache"), "checkpoints")
    found = sampling.find(folder, "2")
    with sampling.open_file(found) as file:
        path.unlink()  # pruned while the response streams it
        assert file.read() == b"weights"
    path.write_bytes(b"other weights")  # not the file that was found
    with pytest.raises(sampling.CheckpointChanged):
        sampling.open_file(found)
    assert sampling.find(folder, "2").size == len(b"other weights")


def test_openapi_documents_the_checkpoint_endpoints(client):
    spec = client.get("/openapi.json").json()
    listing = spec["paths"]["/jobs/{job_id}/checkpoints"]["get"]
    assert listing["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/CheckpointList"
    }
    fields = spec["components"]["schemas"]["CheckpointOut"]["properties"]
    assert set(fields) == {
        "name",
        "step",
        "created_at",
        "size_bytes",
        "best",
        "metrics",
        "download",
    }
    download = spec["paths"]["/jobs/{job_id}/checkpoints/{name}"]["get"]
    assert "application/octet-stream" in download["responses"]["200"]["content"]
    [name] = [p for p in download["parameters"] if p["name"] == "name"]
    assert name["in"] == "path" and "pattern" in name["schema"] and name["description"]


def damage(path) -> None:
    """Rewrite a checkpoint with one value changed and its old checksum: torch reads it, the
    checksum does not match (what a bad disk or a careless hand does)."""
    state = torch.load(path, weights_only=True)
    torch.save({**state, "step": state["step"] + 1}, path)


def test_a_checkpoint_that_fails_its_checksum_is_never_served(client, settings):
    job_id = job_with_a_best_checkpoint(client, settings)  # steps 2, 4; best.pt is step 2's
    directory = settings.checkpoint_dir(job_id)
    assert client.get(f"/jobs/{job_id}/checkpoints/latest").status_code == 200  # verified once
    damage(checkpoint_path(directory, 4))
    damage(directory / "best.pt")
    for name in ("latest", "4", "best"):
        response = client.get(f"/jobs/{job_id}/checkpoints/{name}")
        assert response.status_code == 409, name
        assert "do not match its checksum" in response.json()["detail"], name
    for query in ("checkpoint=latest", "checkpoint=4", "checkpoint=best"):
        response = client.get(f"/jobs/{job_id}/samples?n=4&{query}")
        assert response.status_code == 409, query
        assert "do not match its checksum" in response.json()["detail"], query
    assert client.get(f"/jobs/{job_id}/checkpoints/2").status_code == 200  # the good one


def test_a_folder_named_like_a_checkpoint_is_not_one(client, settings):
    job_id = train_job_briefly(client, settings, steps=2, checkpoint_every=2)
    directory = settings.checkpoint_dir(job_id)
    (directory / "step-00009999.pt").mkdir()
    listed = client.get(f"/jobs/{job_id}/checkpoints").json()["checkpoints"]
    assert [c["name"] for c in listed] == ["2"]
    latest = client.get(f"/jobs/{job_id}/checkpoints/latest")
    assert latest.status_code == 200 and latest.headers["x-checkpoint-step"] == "2"
    missing = client.get(f"/jobs/{job_id}/checkpoints/9999")
    assert missing.status_code == 404 and "on disk: steps 2" in missing.json()["detail"]
    assert client.get(f"/jobs/{job_id}/samples?n=4&checkpoint=latest").status_code == 200
