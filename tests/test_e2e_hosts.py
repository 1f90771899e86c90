"""The service across "machines": the API and two workers as separate processes, each in a
working folder of its own with its own local var/, sharing only Redis, PostgreSQL and a bucket
of a real S3 server (SeaweedFS). The first worker is SIGKILLed mid-job; the second goes on from
its newest checkpoint, read from the bucket; the API serves the job's checkpoints and samples
from there; an upload made through the API trains on the worker; DELETE removes the objects."""

from __future__ import annotations

import io
import signal
import zipfile
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from harness.objectstore import SeaweedFS
from harness.services import Service, wait_for
from worker.artifacts import ArtifactStore

pytestmark = pytest.mark.e2e
SHARED = ("GAN_DATA_DIR", "GAN_DATABASE_URL", "GAN_BROKER_URL", "GAN_TASK_QUEUE", "GAN_LEASE_S",
          "GAN_RECONCILE_EVERY_S")  # fmt: skip


def machine(folder: Path, env: dict[str, str]) -> Service:
    """A "machine": processes started in ``folder`` (their var/ is theirs alone)."""
    folder.mkdir()
    return Service(folder, env)


def tiny_archive() -> bytes:
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        for label in ("a", "b"):
            for i in range(8):
                png = io.BytesIO()
                Image.fromarray(np.full((28, 28), 30 * i, dtype=np.uint8)).save(png, "PNG")
                z.writestr(f"{label}/{i}.png", png.getvalue())
    return archive.getvalue()


def test_a_job_moves_between_machines_through_the_object_store(
    redis_postgres: Service, seaweedfs: SeaweedFS, tmp_path: Path
) -> None:
    prefix = f"e2e-{tmp_path.name[-12:]}"
    env = {name: redis_postgres.env[name] for name in SHARED}
    env |= {**seaweedfs.env, "GAN_ARTIFACTS_URL": seaweedfs.url(prefix)}
    api, b, c = (machine(tmp_path / name, env) for name in ("host-a", "host-b", "host-c"))
    try:
        api.serve("--no-worker")
        first = b.start("worker")
        job_id = api.submit({"dataset": "ring8", "max_steps": 160, "checkpoint_every": 20,
                             "log_every": 5, "eval_every": 0, "batch_size": 32})  # fmt: skip
        wait_for(lambda: (api.job(job_id)["checkpoint_step"] or 0) >= 40, 240, "step 40")
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        killed = api.job(job_id)
        c.start("worker")  # another machine, nothing of the job on its disk
        wait_for(lambda: api.job(job_id)["state"] == "succeeded", 240, "success", every=0.5)
        resumed = [int(line.split("step-")[1][:8]) for line in c.logs().splitlines()
                   if "resumed from" in line]  # fmt: skip
        assert len(resumed) == 1, c.logs()
        assert 0 <= killed["step"] - resumed[0] <= 20  # at most one checkpoint interval lost
        print(f"killed at step {killed['step']}; resumed on another machine from {resumed[0]}")
        assert not (tmp_path / "host-a" / "var" / "artifacts").exists()  # the API's disk: none

        listed = httpx.get(f"{api.url}/jobs/{job_id}/checkpoints", timeout=30).json()
        assert listed["checkpoints"][-1]["step"] == 160
        download = httpx.get(f"{api.url}/jobs/{job_id}/checkpoints/latest", timeout=30)
        local = tmp_path / "host-c" / "var/cache/artifacts/jobs" / job_id / "checkpoints"
        assert download.content == (local / "step-00000160.pt").read_bytes()
        samples = httpx.get(f"{api.url}/jobs/{job_id}/samples?n=16", timeout=60)
        assert samples.status_code == 200 and samples.headers["x-checkpoint-step"] == "160"

        upload = httpx.post(f"{api.url}/datasets", timeout=60,
                            files={"file": ("tiny.zip", tiny_archive())})  # fmt: skip
        assert upload.status_code == 201, upload.text
        trained = api.submit({"dataset": upload.json()["id"], "max_steps": 4,
                              "checkpoint_every": 2, "batch_size": 8, "eval_every": 0})  # fmt: skip
        wait_for(lambda: api.job(trained)["state"] == "succeeded", 120, "the upload's job")

        keys = httpx.get(f"{api.url}/jobs/{trained}/checkpoints", timeout=30).json()
        assert [c["step"] for c in keys["checkpoints"]] == [2, 4]
        for job in (job_id, trained):
            assert httpx.delete(f"{api.url}/jobs/{job}", timeout=30).status_code == 204
        with pytest.MonkeyPatch.context() as patch:
            for name, value in seaweedfs.env.items():
                patch.setenv(name, value)
            store = ArtifactStore(seaweedfs.url(prefix), tmp_path / "check")
            assert store.listing("jobs") == []
            assert [e.key.split("/")[0] for e in store.listing("")] == ["datasets"] * 4
    finally:
        for host in (api, b, c):
            host.stop()
