"""The API on an object store (a real S3 server, SeaweedFS): a job trained by a worker on
another machine (a cache folder of its own) is listed, downloaded and sampled; a replaced
checkpoint is noticed by its ETag; an upload reaches the store and the worker; DELETE removes
the job's objects."""

from __future__ import annotations

import io
from collections.abc import Iterator

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from tests.conftest import app_client
from worker.artifacts import checkpoints_key
from worker.settings import Settings
from worker.store import jobs
from worker.store.db import session_scope
from worker.store.states import SUCCEEDED
from worker.tasks import run_job


@pytest.fixture
def api_host(s3_settings: Settings) -> Settings:
    return s3_settings.model_copy(update={"cache_dir": s3_settings.cache_dir.parent / "api"})


@pytest.fixture
def worker_host(s3_settings: Settings) -> Settings:
    return s3_settings.model_copy(update={"cache_dir": s3_settings.cache_dir.parent / "worker"})


@pytest.fixture
def s3_client(api_host: Settings) -> Iterator[TestClient]:
    with app_client(api_host) as client:
        yield client


def trained(client: TestClient, worker_host: Settings, **spec: object) -> str:
    response = client.post("/jobs", json={"preset": "classic", "eval_every": 0, **spec})
    assert response.status_code == 202, response.text
    job_id: str = response.json()["id"]
    run_job(job_id, worker_host)
    with session_scope(worker_host.database_url) as session:
        job = jobs.get_job(session, job_id)
        assert job is not None and job.state == SUCCEEDED, job.error if job else None
    return job_id


def test_the_api_serves_a_job_trained_on_another_machine(s3_client, worker_host, api_host):
    job_id = trained(s3_client, worker_host, dataset="ring8", max_steps=4, checkpoint_every=2)
    assert not api_host.checkpoint_dir(job_id).exists()  # nothing on the API's disk
    listed = s3_client.get(f"/jobs/{job_id}/checkpoints").json()["checkpoints"]
    assert [c["name"] for c in listed] == ["2", "4"]
    store = worker_host.artifacts()
    download = s3_client.get(f"/jobs/{job_id}/checkpoints/latest")
    assert download.status_code == 200
    assert download.content == store.read_bytes(f"{checkpoints_key(job_id)}/step-00000004.pt")
    first = s3_client.get(f"/jobs/{job_id}/samples?n=4&format=npy&checkpoint=latest")
    assert first.status_code == 200 and first.headers["x-checkpoint-step"] == "4"
    again = s3_client.get(
        f"/jobs/{job_id}/samples?n=4&format=npy&checkpoint=latest",
        headers={"If-None-Match": first.headers["etag"]},
    )
    assert again.status_code == 304
    # Another worker replaces step 4 (a resumed run writes it again): a new ETag, new samples.
    key = f"{checkpoints_key(job_id)}/step-00000004.pt"
    store.write_bytes(key, store.read_bytes(f"{checkpoints_key(job_id)}/step-00000002.pt"))
    replaced = s3_client.get(
        f"/jobs/{job_id}/samples?n=4&format=npy&checkpoint=latest",
        headers={"If-None-Match": first.headers["etag"]},
    )
    assert replaced.status_code == 200 and replaced.headers["etag"] != first.headers["etag"]
    assert replaced.content != first.content
    assert s3_client.delete(f"/jobs/{job_id}").status_code == 204
    assert store.listing(f"jobs/{job_id}") == []


def test_an_upload_through_the_api_trains_on_a_worker_elsewhere(s3_client, worker_host, api_host):
    archive = io.BytesIO()
    import zipfile

    with zipfile.ZipFile(archive, "w") as z:
        for label in ("a", "b"):
            for i in range(8):
                image = Image.fromarray(np.full((28, 28), 30 * i, dtype=np.uint8))
                png = io.BytesIO()
                image.save(png, format="PNG")
                z.writestr(f"{label}/{i}.png", png.getvalue())
    response = s3_client.post("/datasets", files={"file": ("tiny.zip", archive.getvalue())})
    assert response.status_code == 201, response.text
    dataset_id = response.json()["id"]
    store = api_host.artifacts()
    names = sorted(e.name for e in store.listing(f"datasets/{dataset_id}"))
    assert names == ["images.npy", "labels.npy", "meta.json", "owner"]
    listed = s3_client.get("/datasets").json()["datasets"]
    assert [d["id"] for d in listed] == [dataset_id]
    job_id = trained(s3_client, worker_host, dataset=dataset_id, max_steps=2,
                     checkpoint_every=2, batch_size=8)  # fmt: skip
    assert (worker_host.datasets_dir / dataset_id / "images.npy").is_file()  # fetched there
    assert s3_client.get(f"/jobs/{job_id}/samples?n=4").status_code == 200
