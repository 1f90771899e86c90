"""The service end to end, as a user runs it: real API and worker processes, real HTTP.

- the embedded default (`gan serve`: SQLite store, filesystem broker, one worker child);
- Redis and PostgreSQL at 127.0.0.1, with API and worker as separate processes;
- a worker stopped (SIGTERM) and killed (SIGKILL) mid-job: the job resumes from its checkpoint.
"""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import redis
from PIL import Image
from sqlalchemy import create_engine, text

from tests.conftest import REDIS_URL, require_service
from tests.quality import digit_statistics, looks_like_digits

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[1]
GAN = str(Path(sys.executable).with_name("gan"))  # the console script of this environment


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(condition: Callable[[], Any], timeout: float, what: str, every: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


class Service:
    """Processes of the service in one environment, with their logs in files."""

    def __init__(self, tmp_path: Path, env: dict[str, str]) -> None:
        self.tmp_path, self.port = tmp_path, free_port()
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **env}
        self.url = f"http://127.0.0.1:{self.port}"
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self, *args: str) -> subprocess.Popen[bytes]:
        log = open(self.tmp_path / f"{args[0]}-{len(self.processes)}.log", "wb")  # noqa: SIM115
        process = subprocess.Popen(
            [GAN, *args], cwd=self.tmp_path, env=self.env, stdout=log, stderr=subprocess.STDOUT
        )
        self.processes.append(process)
        return process

    def serve(self, *flags: str) -> subprocess.Popen[bytes]:
        process = self.start("serve", "--port", str(self.port), *flags)
        wait_for(self.live, 60, "the API to answer /livez")
        return process

    def live(self) -> bool:
        try:
            return httpx.get(f"{self.url}/livez", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.tmp_path.glob("*.log")))

    def job(self, job_id: str) -> dict[str, Any]:
        response = httpx.get(f"{self.url}/jobs/{job_id}", timeout=10)
        assert response.status_code == 200, response.text
        job: dict[str, Any] = response.json()
        assert job["state"] != "failed", f"job failed: {job['error']}\n{self.logs()}"
        return job

    def submit(self, spec: dict[str, Any]) -> str:
        response = httpx.post(f"{self.url}/jobs", json=spec, timeout=10)
        assert response.status_code == 202, response.text
        job_id: str = response.json()["id"]
        return job_id

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()


@pytest.fixture
def embedded(tmp_path: Path, mnist_dir: Path) -> Iterator[Service]:
    service = Service(tmp_path, {"GAN_DATA_DIR": str(mnist_dir)})  # the rest: defaults
    yield service
    service.stop()


def test_embedded_default_end_to_end(embedded: Service, mnist) -> None:
    serve = embedded.serve()  # API + one worker child, SQLite and filesystem broker under var/
    job_id = embedded.submit(
        {"preset": "classic", "max_steps": 300, "checkpoint_every": 50, "log_every": 25}
    )
    assert embedded.job(job_id)["state"] in ("queued", "running")

    def running_with_checkpoint() -> dict[str, Any] | None:
        job = embedded.job(job_id)
        return job if job["state"] == "running" and job["checkpoint_step"] else None

    running = wait_for(running_with_checkpoint, 120, "the job to run and write a checkpoint")
    assert 0 < running["step"] <= 300 and running["total_steps"] == 300
    assert running["images_per_sec"] > 0 and running["d_loss"] is not None
    while_running = httpx.get(f"{embedded.url}/jobs/{job_id}/samples?n=16", timeout=30)
    assert while_running.status_code == 200 and while_running.headers["content-type"] == "image/png"
    assert int(while_running.headers["x-checkpoint-step"]) >= 50

    done = wait_for(lambda: embedded.job(job_id)["state"] == "succeeded", 300, "success", every=0.5)
    assert done
    job = embedded.job(job_id)
    assert (job["step"], job["checkpoint_step"], job["error"]) == (300, 300, None)
    assert [j["id"] for j in httpx.get(f"{embedded.url}/jobs").json()["jobs"]] == [job_id]

    png = httpx.get(f"{embedded.url}/jobs/{job_id}/samples?n=64&seed=0", timeout=30)
    assert png.status_code == 200 and png.headers["x-checkpoint-step"] == "300"
    assert Image.open(io.BytesIO(png.content)).size == (242, 242)
    again = httpx.get(f"{embedded.url}/jobs/{job_id}/samples?n=64&seed=0", timeout=30)
    assert again.content == png.content
    npy = httpx.get(f"{embedded.url}/jobs/{job_id}/samples?n=256&format=npy", timeout=30)
    samples = np.load(io.BytesIO(npy.content), allow_pickle=False)
    assert samples.shape == (256, 28, 28) and samples.dtype == np.uint8
    real = mnist.data.squeeze(1).numpy().astype(float)
    assert looks_like_digits(samples, real), digit_statistics(samples, real)

    assert (embedded.tmp_path / "var" / "gan.db").is_file()  # the embedded defaults were used
    serve.terminate()
    assert serve.wait(timeout=90) == 0
    assert "worker stopped (exit code 0)" in embedded.logs()


def test_redis_and_postgres_end_to_end(tmp_path: Path, mnist_dir: Path, postgres_url: str) -> None:
    require_service("Redis", 6379)
    queue = f"test-{uuid.uuid4().hex[:8]}"
    service = Service(
        tmp_path,
        {
            "GAN_DATA_DIR": str(mnist_dir),
            "GAN_DATABASE_URL": postgres_url,
            "GAN_BROKER_URL": REDIS_URL,
            "GAN_TASK_QUEUE": queue,
        },
    )
    try:
        service.start("worker")
        service.serve("--no-worker")
        job_id = service.submit({"max_steps": 60, "checkpoint_every": 30, "log_every": 10})
        wait_for(lambda: service.job(job_id)["state"] == "succeeded", 180, "success", every=0.5)
        png = httpx.get(f"{service.url}/jobs/{job_id}/samples", timeout=30)
        assert png.status_code == 200 and png.headers["x-checkpoint-step"] == "60"
    finally:
        service.stop()
    with create_engine(postgres_url).connect() as connection:  # the job lives in PostgreSQL
        row = connection.execute(
            text("SELECT state, step FROM jobs WHERE id = :id"), {"id": job_id}
        )
        assert row.one() == ("succeeded", 60)
    client = redis.Redis.from_url(REDIS_URL)
    assert client.exists(f"_kombu.binding.{queue}")  # the task went through Redis
    assert client.llen(queue) == 0
    client.delete(f"_kombu.binding.{queue}")
    # nothing fell back to the embedded store or broker (checkpoints do go to var/artifacts)
    assert not (tmp_path / "var" / "gan.db").exists() and not (tmp_path / "var" / "broker").exists()


def test_stopped_or_killed_worker_resumes_from_checkpoint(embedded: Service) -> None:
    embedded.serve("--no-worker")
    job_id = embedded.submit({"max_steps": 1200, "checkpoint_every": 100, "log_every": 20})

    worker = embedded.start("worker")
    wait_for(lambda: (embedded.job(job_id)["checkpoint_step"] or 0) >= 200, 120, "step 200")
    worker.send_signal(signal.SIGTERM)  # warm shutdown: checkpoint, requeue, exit
    assert worker.wait(timeout=60) == 0
    stopped = embedded.job(job_id)  # checkpointed where it stopped, and back in the queue
    assert stopped["state"] == "queued" and stopped["checkpoint_step"] == stopped["step"]

    worker = embedded.start("worker")
    wait_for(lambda: embedded.job(job_id)["step"] >= stopped["step"] + 300, 120, "progress")
    worker.send_signal(signal.SIGKILL)  # no warning at all
    worker.wait(timeout=10)
    killed_at = embedded.job(job_id)
    assert killed_at["state"] == "running"

    embedded.start("worker")  # finds the orphaned running job and requeues it
    wait_for(lambda: embedded.job(job_id)["state"] == "succeeded", 180, "success", every=0.5)
    assert embedded.job(job_id)["step"] == 1200
    logs = embedded.logs()
    assert f"resumed from step-{stopped['step']:08d}.pt" in logs
    assert logs.count("re-enqueued") == 1  # only the killed worker's job was orphaned
    assert logs.count("resumed from") == 2
