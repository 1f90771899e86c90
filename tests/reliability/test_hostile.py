"""Hostile and malformed input against the real app (in-process, real job store and files):
path traversal in every id, checkpoint and dataset parameter, oversized bodies, numbers far
past their limits, NaN and infinities, unicode, API keys that are missing, another tenant's
or guessed, and checkpoint files built to run code when unpickled. Each gets a 4xx that names
the problem; nothing is read or written outside the service's folders, and nothing runs."""

from __future__ import annotations

import io
import pickle
import zipfile
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from api.main import app
from gan.config import resolve
from gan.data import ring8
from gan.train import train
from worker.settings import Settings, get_settings
from worker.store import jobs
from worker.store.db import session_scope


@pytest.fixture
def job(client: TestClient, settings: Settings) -> str:
    """A job with real checkpoints on disk (a 4-step run on the 8-Gaussian ring)."""
    spec = {"dataset": "ring8", "max_steps": 4, "checkpoint_every": 2, "eval_every": 0}
    job_id: str = client.post("/jobs", json=spec).json()["id"]
    train(resolve("classic", **spec), ring8(), settings.checkpoint_dir(job_id))
    return job_id


def problem(response: Any) -> str:
    """What a 4xx says: its detail, or each of its validation errors' location and message."""
    detail = response.json()["detail"]
    if isinstance(detail, str):
        return detail
    return " | ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in detail)


def named(response: Any, *words: str) -> None:
    """The answer is a 4xx whose detail names every one of ``words`` (a field, a value)."""
    assert 400 <= response.status_code < 500, (response.status_code, response.text)
    said = problem(response)
    for word in words:
        assert word in said, (word, said)


# (method, path with {job} for a real job's id, request arguments, status, words it must name)
CASES: list[tuple[str, str, dict[str, Any], int, tuple[str, ...]]] = [
    # path traversal: ids, checkpoint names and dataset ids are single names, never paths
    ("GET", "/jobs/%2e%2e", {}, 404, ("no job with id '..'",)),
    ("GET", "/jobs/..%2f..%2fetc%2fpasswd", {}, 404, ("/jobs/../../etc/passwd", "no such route")),
    ("DELETE", "/jobs/%2e%2e", {}, 404, ("no job with id '..'",)),
    ("GET", "/jobs/..%5c..%5cwindows/samples", {}, 404, ("no job with id '..\\\\..\\\\windows'",)),
    ("GET", "/jobs/{job}/checkpoints/..%2f..%2f..%2fgan.db", {}, 422, ("name", "checkpoint")),
    ("GET", "/jobs/{job}/checkpoints/%2e%2e", {}, 422, ("name",)),
    ("GET", "/jobs/{job}/checkpoints//etc/passwd", {}, 422, ("name",)),
    ("GET", "/jobs/{job}/samples", {"params": {"checkpoint": "../../best"}}, 422, ("checkpoint",)),
    ("GET", "/jobs/{job}/interpolation", {"params": {"checkpoint": "/etc/passwd"}}, 422,
     ("checkpoint",)),
    ("GET", "/datasets/%2e%2e", {}, 404, ("no dataset with id '..'",)),
    ("GET", "/datasets/ds-..%2f..%2fjobs", {}, 404, ("no such route",)),
    ("POST", "/jobs", {"json": {"dataset": "../../../etc/passwd"}}, 422, ("dataset",)),
    ("POST", "/jobs", {"json": {"dataset": "ds-../../jobs"}}, 422, ("dataset",)),
    # sizes and counts far past their limits
    ("GET", "/jobs/{job}/samples", {"params": {"n": 10**12}}, 422, ("n", "1024")),
    ("GET", "/jobs/{job}/samples", {"params": {"n": -1}}, 422, ("n",)),
    ("GET", "/jobs/{job}/samples", {"params": {"nrow": 10**6}}, 422, ("nrow",)),
    ("GET", "/jobs/{job}/samples", {"params": {"seed": 2**63}}, 422, ("seed",)),
    ("GET", "/jobs/{job}/interpolation", {"params": {"steps": 10**9}}, 422, ("steps",)),
    ("GET", "/jobs/{job}/interpolation", {"params": {"rows": 10**9}}, 422, ("rows",)),
    ("GET", "/jobs/{job}/metrics", {"params": {"max_points": 10**9}}, 422, ("max_points",)),
    ("GET", "/jobs", {"params": {"limit": 10**9}}, 422, ("limit",)),
    ("POST", "/jobs", {"json": {"batch_size": 10**9}}, 422, ("batch_size", "8192")),
    ("POST", "/jobs", {"json": {"batch_size": 10**400}}, 422, ("batch_size",)),
    ("POST", "/jobs", {"json": {"max_steps": 10**20}}, 422, ("max_steps",)),
    ("POST", "/jobs", {"json": {"width": 2**40, "arch": "dcgan"}}, 422, ("width",)),
    ("POST", "/jobs/{job}/resume", {"json": {"max_steps": 10**20}}, 422, ("max_steps",)),
    # found by fuzzing: ids past a database integer were a 500 (OverflowError in SQLite)
    ("GET", "/jobs/{job}/events", {"params": {"after": 2**63}}, 422, ("after",)),
    ("GET", "/jobs/{job}/events", {"headers": {"Last-Event-ID": str(2**63)}}, 422,
     ("Last-Event-ID",)),
    ("GET", "/jobs/{job}/metrics", {"params": {"since_step": 2**63}}, 422, ("since_step",)),
    # NaN and infinities, in bodies, queries and headers
    ("POST", "/jobs", {"content": '{"lr_g": NaN}'}, 422, ("lr_g",)),
    ("POST", "/jobs", {"content": '{"lr_d": Infinity}'}, 422, ("lr_d",)),
    ("POST", "/jobs", {"content": '{"label_smoothing": -Infinity}'}, 422, ("label_smoothing",)),
    ("POST", "/jobs", {"content": '{"max_steps": 1e999}'}, 422, ("max_steps",)),
    ("GET", "/jobs/{job}/samples", {"params": {"truncation": "nan"}}, 422, ("truncation",)),
    ("GET", "/jobs/{job}/samples", {"params": {"truncation": "inf"}}, 422, ("truncation",)),
    ("GET", "/jobs/{job}/samples", {"params": {"n": "Infinity"}}, 422, ("n",)),
    ("GET", "/jobs/{job}/events", {"headers": {"Last-Event-ID": "NaN"}}, 422, ("Last-Event-ID",)),
    ("GET", "/jobs/{job}/events", {"headers": {"Last-Event-ID": "-1"}}, 422, ("Last-Event-ID",)),
    # unicode where only ASCII is meaningful
    ("GET", "/jobs/%E6%95%B0%E5%AD%97", {}, 404, ("no job with id '数字'",)),
    ("GET", "/jobs/{job}/checkpoints/%D9%A3", {}, 422, ("name",)),  # Arabic-Indic ٣
    ("GET", "/jobs/{job}/samples", {"params": {"label": "٣"}}, 422, ("label",)),
    ("POST", "/jobs", {"json": {"preset": "clássico"}}, 422, ("preset", "clássico")),
    ("POST", "/jobs", {"json": {"dataset": "mnist\u0000"}}, 422, ("dataset",)),
    ("POST", "/jobs", {"json": {"max_steps": 5}, "headers": {"Idempotency-Key": "ключ".encode()}},
     422, ("Idempotency-Key",)),
    # bodies of the wrong shape or size
    ("POST", "/jobs", {"content": b"x" * (2**20 + 1)}, 413, ("over the limit of 1048576",)),
    ("POST", "/jobs", {"content": "[" * 100_000}, 422, ("body",)),
    ("POST", "/jobs", {"content": b"\xff\xfe not utf-8"}, 422, ("body", "JSON")),
    ("POST", "/jobs/{job}/resume", {"json": [1, 2, 3]}, 422, ("body",)),
    ("POST", "/datasets", {"files": {"file": ("big.zip", bytes(101 * 2**20 + 1))}}, 413,
     ("over the limit of 105906176 bytes for POST /datasets",)),
    # found by fuzzing: a broken multipart body was a 400 that the API did not document
    ("POST", "/datasets", {"content": b"--b\r\n1437413--b--\r\n",
                           "headers": {"content-type": "multipart/form-data; boundary=b"}}, 422,
     ("body", "cannot be parsed", "multipart")),
]  # fmt: skip


@pytest.mark.parametrize(
    ("method", "path", "arguments", "status", "words"),
    CASES,
    ids=[f"{i}-{m} {p}" for i, (m, p, *_) in enumerate(CASES)],
)
def test_hostile_input_gets_a_4xx_naming_the_problem(
    client: TestClient,
    job: str,
    settings: Settings,
    method: str,
    path: str,
    arguments: dict[str, Any],
    status: int,
    words: tuple[str, ...],
) -> None:
    before = sorted(
        p.relative_to(settings.artifacts_dir) for p in settings.artifacts_dir.rglob("*")
    )
    if "content" in arguments and "headers" not in arguments:
        arguments = {**arguments, "headers": {"content-type": "application/json"}}
    response = client.request(method, path.replace("{job}", job), **arguments)
    assert response.status_code == status, response.text
    named(response, *words)
    assert files_under(settings.artifacts_dir) == before  # nothing written, moved or removed


def files_under(folder: Path) -> list[Path]:
    return sorted(path.relative_to(folder) for path in folder.rglob("*"))


def png(value: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (8, 8), value).save(buffer, format="PNG")
    return buffer.getvalue()


def test_unicode_names_are_kept_and_nothing_escapes_the_datasets_folder(client, settings):
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("números/ünï.png", png(0))
        z.writestr("数字/字.png", png(255))
    name = "数字 ✓ ünïcödé ../../../etc"
    files = {"file": ("../../évil.zip", archive.getvalue(), "application/zip")}
    response = client.post("/datasets", files=files, data={"name": name, "image_size": "8"})
    assert response.status_code == 201, response.text
    dataset = response.json()
    assert dataset["name"] == name and dataset["classes"] == ["números", "数字"]
    assert client.get(f"/datasets/{dataset['id']}").json()["name"] == name
    written = {
        p.relative_to(settings.artifacts_dir).parts[:2] for p in settings.artifacts_dir.rglob("*")
    }
    assert written <= {("datasets",), ("datasets", dataset["id"])}


class Payload:
    """Unpickled, it would create the file ``marker``: what a malicious checkpoint does."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.marker,))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # torch, about the bare pickle
def test_checkpoints_are_never_unpickled_beyond_tensors(client, settings, job, tmp_path):
    marker = tmp_path / "pwned"
    folder = settings.checkpoint_dir(job)
    evil = {"format": "gan-checkpoint", "format_version": 3, "step": 99, "x": Payload(marker)}
    torch.save(evil, folder / "step-00000099.pt")
    (folder / "best.pt").write_bytes(pickle.dumps(Payload(marker)))  # a bare pickle, too

    for name in ("latest", "99"):
        refused = client.get(f"/jobs/{job}/samples", params={"checkpoint": name})
        named(refused, "step-00000099.pt is not a readable gan-checkpoint file")
        assert refused.status_code == 409
    refused = client.get(f"/jobs/{job}/samples", params={"checkpoint": "best"})
    assert refused.status_code == 409 and "best.pt is not a readable" in refused.text
    listed = client.get(f"/jobs/{job}/checkpoints")
    assert listed.status_code == 200  # the unreadable best.pt is left out of the listing
    assert [c["name"] for c in listed.json()["checkpoints"]] == ["2", "4", "99"]
    # a worker resuming the job moves it aside instead of loading it
    spec = resolve("classic", dataset="ring8", max_steps=6, checkpoint_every=2, eval_every=0)
    train(spec, ring8(), folder)
    assert (folder / "step-00000099.pt.corrupt").is_file()
    assert not marker.exists()  # nothing ran


@pytest.fixture
def keyed(client: TestClient, settings: Settings) -> Settings:
    """One good key, and at most three unknown keys a minute from one client address."""
    keyed = settings.model_copy(update={"api_keys": ("good-key",), "bad_keys_per_minute": 3})
    app.dependency_overrides[get_settings] = lambda: keyed
    return keyed


def test_guessing_keys_is_rate_limited_per_client_address_without_locking_out_valid_keys(
    client, keyed
):
    good, bad = {"X-API-Key": "good-key"}, {"Authorization": "Bearer guess"}
    assert client.get("/jobs").status_code == 401  # no key: not a guess
    for _ in range(3):
        assert client.get("/jobs", headers=bad).status_code == 401
    refused = client.get("/jobs", headers=bad)
    assert refused.status_code == 429
    assert 1 <= int(refused.headers["retry-after"]) <= 20  # one more guess every 60 / 3 s
    named(refused, "too many unknown API keys from testclient", "at most 3 a minute")
    # a valid key still works from that address (a tenant behind the guesser's NAT or proxy)
    assert client.get("/jobs", headers=good).status_code == 200
    assert client.get("/jobs", headers=bad).status_code == 429  # and the guesser still waits
    assert client.get("/livez").status_code == 200  # what needs no key still answers

    with TestClient(app, client=("192.0.2.7", 50000)) as elsewhere:  # another address
        assert elsewhere.get("/jobs", headers=good).status_code == 200
        assert elsewhere.get("/jobs", headers=bad).status_code == 401


def test_another_tenants_jobs_do_not_exist_for_a_key(client, settings):
    both = settings.model_copy(update={"api_keys": ("key-a", "key-b")})
    app.dependency_overrides[get_settings] = lambda: both
    as_a, as_b = {"X-API-Key": "key-a"}, {"X-API-Key": "key-b"}
    theirs = client.post("/jobs", json={"max_steps": 5}, headers=as_a).json()["id"]
    for method, path in [("GET", ""), ("GET", "/samples"), ("GET", "/checkpoints"),
                         ("GET", "/checkpoints/latest"), ("GET", "/events"), ("GET", "/metrics"),
                         ("GET", "/interpolation"), ("POST", "/cancel"), ("POST", "/resume"),
                         ("DELETE", "")]:  # fmt: skip
        response = client.request(method, f"/jobs/{theirs}{path}", headers=as_b)
        assert response.status_code == 404, (method, path, response.text)
        named(response, f"no job with id '{theirs}'")
    with session_scope(settings.database_url) as session:
        untouched = jobs.get_job(session, theirs)
        assert untouched is not None and untouched.state == "queued"


def test_nothing_runs_on_the_worker_for_a_refused_spec(client, settings):
    """A spec the API refuses never reaches the queue (the broker folder stays empty)."""
    for spec in ({"batch_size": 10**9}, {"dataset": "../x"}, {"lr_g": "NaN"}):
        assert client.post("/jobs", json=spec).status_code == 422
    queue = settings.broker_dir / "queue"
    assert not queue.exists() or not list(queue.iterdir())


def test_the_largest_event_id_and_step_are_answered(client, settings, job):
    """Regression (fuzzing): the largest values the parameters take reach the database."""
    with session_scope(settings.database_url) as session:
        queued = jobs.get_job(session, job)
        assert queued is not None
        jobs.cancel(queued)  # finished: its event stream ends
    events = client.get(f"/jobs/{job}/events", params={"after": 2**63 - 1})
    assert events.status_code == 200 and "event:" not in events.text
    points = client.get(f"/jobs/{job}/metrics", params={"since_step": 10_000_000})
    assert points.status_code == 200 and points.json()["points"] == []
