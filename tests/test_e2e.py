"""The service end to end, as a user runs it: real API and worker processes, real HTTP.

- the embedded default (`gan serve`: SQLite store, filesystem broker, one worker child);
- Redis and PostgreSQL at 127.0.0.1, with API and worker as separate processes;
- a worker stopped (SIGTERM) and killed (SIGKILL) mid-job: the job resumes from its checkpoint.
"""

from __future__ import annotations

import io
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import redis
import torch
from celery import Celery
from PIL import Image
from sqlalchemy import create_engine, text

from gan.checkpoint import load_checkpoint
from harness.services import GAN, Service, events_of, free_port, wait_for
from tests.conftest import REDIS_URL, cache_judge, require_service
from tests.quality import digit_statistics, looks_like_digits
from worker.celery_app import TRAIN_TASK
from worker.settings import Settings

__all__ = ["GAN", "Service", "events_of", "free_port", "wait_for"]  # also imported from here

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def embedded(tmp_path: Path, mnist_dir: Path, quick_mnist_judge: Path) -> Iterator[Service]:
    service = Service(tmp_path, {"GAN_DATA_DIR": str(mnist_dir)})  # the rest: defaults
    cache_judge(quick_mnist_judge, Settings(), tmp_path)  # the processes' defaults
    yield service
    service.stop()


def test_embedded_default_end_to_end(embedded: Service, mnist) -> None:
    serve = embedded.serve()  # API + one worker child, SQLite and filesystem broker under var/
    job_id = embedded.submit(
        {
            "preset": "classic",
            "max_steps": 1000,
            "checkpoint_every": 50,
            "log_every": 25,
            "eval_every": 1000,  # one evaluation, at the end: the samples' default (best) is it
        }
    )
    assert embedded.job(job_id)["state"] in ("queued", "running")

    def running_with_checkpoint() -> dict[str, Any] | None:
        job = embedded.job(job_id)
        return job if job["state"] == "running" and job["checkpoint_step"] else None

    running = wait_for(running_with_checkpoint, 120, "the job to run and write a checkpoint")
    assert 0 < running["step"] <= 1000 and running["total_steps"] == 1000
    assert running["images_per_sec"] > 0 and running["d_loss"] is not None
    while_running = httpx.get(f"{embedded.url}/jobs/{job_id}/samples?n=16", timeout=30)
    assert while_running.status_code == 200 and while_running.headers["content-type"] == "image/png"
    assert int(while_running.headers["x-checkpoint-step"]) >= 50

    done = wait_for(lambda: embedded.job(job_id)["state"] == "succeeded", 300, "success", every=0.5)
    assert done
    job = embedded.job(job_id)
    assert (job["step"], job["checkpoint_step"], job["error"]) == (1000, 1000, None)
    assert [j["id"] for j in httpx.get(f"{embedded.url}/jobs").json()["jobs"]] == [job_id]

    png = httpx.get(f"{embedded.url}/jobs/{job_id}/samples?n=64&seed=0", timeout=30)
    assert png.status_code == 200 and png.headers["x-checkpoint-step"] == "1000"
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


def test_redis_and_postgres_end_to_end(
    tmp_path: Path, mnist_dir: Path, postgres_url: str, quick_mnist_judge: Path
) -> None:
    require_service("Redis", 6379)
    cache_judge(quick_mnist_judge, Settings(), tmp_path)  # the processes' defaults
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
    spec = {"max_steps": 600, "checkpoint_every": 50, "log_every": 10, "eval_every": 0}
    job_id = embedded.submit(spec)

    worker = embedded.start("worker")
    wait_for(lambda: (embedded.job(job_id)["checkpoint_step"] or 0) >= 100, 120, "step 100")
    worker.send_signal(signal.SIGTERM)  # warm shutdown: checkpoint, requeue, exit
    assert worker.wait(timeout=60) == 0
    stopped = embedded.job(job_id)  # checkpointed where it stopped, and back in the queue
    assert stopped["state"] == "queued" and stopped["checkpoint_step"] == stopped["step"]

    worker = embedded.start("worker")
    wait_for(lambda: embedded.job(job_id)["step"] >= stopped["step"] + 150, 120, "progress")
    worker.send_signal(signal.SIGKILL)  # no warning at all
    worker.wait(timeout=10)
    killed_at = embedded.job(job_id)
    assert killed_at["state"] == "running"

    embedded.start("worker")  # finds the orphaned running job and requeues it
    wait_for(lambda: embedded.job(job_id)["state"] == "succeeded", 180, "success", every=0.5)
    assert embedded.job(job_id)["step"] == 600
    logs = embedded.logs()
    assert f"resumed from step-{stopped['step']:08d}.pt" in logs
    assert logs.count("its worker was lost; requeued") == 1  # only the killed worker's job
    assert logs.count("resumed from") == 2


def test_sigkilled_worker_job_resumes_on_another_worker(redis_postgres: Service) -> None:
    service = redis_postgres
    service.serve("--no-worker")
    first = service.start("worker")
    job_id = service.submit(
        {"max_steps": 800, "checkpoint_every": 50, "log_every": 10, "eval_every": 0}
    )
    wait_for(lambda: (service.job(job_id)["checkpoint_step"] or 0) >= 100, 120, "step 100")
    first.send_signal(signal.SIGKILL)  # no warning at all
    first.wait(timeout=10)
    killed = service.job(job_id)
    assert killed["state"] == "running" and killed["attempts"] == 1

    service.start("worker")  # two healthy workers: the job runs on exactly one of them
    service.start("worker")
    wait_for(lambda: service.job(job_id)["attempts"] == 2, 60, "the job to be claimed again")
    # A duplicate delivery while it trains (Redis redelivering the killed worker's message,
    # say) finds the lease held and does nothing.
    celery = Celery(broker=service.env["GAN_BROKER_URL"])
    celery.send_task(TRAIN_TASK, args=[job_id], queue=service.env["GAN_TASK_QUEUE"])
    wait_for(lambda: service.job(job_id)["state"] == "succeeded", 240, "success", every=0.5)

    job = service.job(job_id)
    assert (job["step"], job["checkpoint_step"], job["attempts"]) == (800, 800, 2)
    states = [data["state"] for kind, data in events_of(service, job_id) if kind == "state"]
    assert states == ["queued", "running", "queued", "running", "succeeded"]
    logs = service.logs()
    resumed = [
        int(line.split("step-")[1][:8]) for line in logs.splitlines() if "resumed from" in line
    ]
    assert len(resumed) == 1  # trained by one worker after the kill
    lost_steps = killed["step"] - resumed[0]
    assert 0 <= lost_steps <= 50, lost_steps  # at most one checkpoint interval is lost
    assert f"job {job_id}: busy" in logs  # the duplicate was dropped
    final = load_checkpoint(Path(service.tmp_path, "var/artifacts/jobs", job_id,
                                 "checkpoints", "step-00000800.pt"))  # fmt: skip
    assert final["step"] == 800


def test_queued_jobs_survive_redis_losing_its_data(redis_postgres: Service) -> None:
    service = redis_postgres
    service.serve("--no-worker")
    worker = service.start("worker")
    spec = {"max_steps": 40, "checkpoint_every": 20, "log_every": 10, "eval_every": 0}
    warm_up = service.submit(spec)
    wait_for(lambda: service.job(warm_up)["state"] == "succeeded", 120, "the first job")
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=60) == 0

    waiting = [service.submit(spec) for _ in range(2)]  # their messages wait in Redis …
    broker = redis.Redis.from_url(service.env["GAN_BROKER_URL"])
    assert broker.llen(service.env["GAN_TASK_QUEUE"]) == 2
    broker.flushdb()  # … until Redis loses everything (a restart without persistence)

    service.start("worker")  # its reconciler finds the store's queued jobs and enqueues them

    def succeeded() -> bool:
        return all(service.job(job_id)["state"] == "succeeded" for job_id in waiting)

    wait_for(succeeded, 120, "success")
    assert [service.job(job_id)["attempts"] for job_id in waiting] == [1, 1]
    assert "the broker lost its messages: enqueuing 2 queued jobs" in service.logs()


def test_the_whole_lifecycle_over_http(redis_postgres: Service) -> None:
    """A user's session with an API key, on Redis, PostgreSQL and a real worker: create
    (idempotently), cancel mid-run, resume with more steps, follow, sample, download, delete."""
    service = redis_postgres
    service.env["GAN_API_KEYS"] = "e2e-key"
    service.serve("--no-worker", "--processes", "2")  # two API processes on one port
    url, auth = service.url, {"X-API-Key": "e2e-key"}
    assert httpx.get(f"{url}/readyz", timeout=10).json()["checks"] == {
        "database": "ok", "broker": "ok", "artifacts": "ok"
    }  # fmt: skip
    service.start("worker")

    def job() -> dict[str, Any]:
        response = httpx.get(f"{url}/jobs/{job_id}", headers=auth, timeout=10)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    spec = {"max_steps": 100_000, "checkpoint_every": 100, "log_every": 20, "eval_every": 0}
    assert httpx.post(f"{url}/jobs", json=spec, timeout=10).status_code == 401
    retry = {**auth, "Idempotency-Key": "e2e-create-1"}
    job_id = httpx.post(f"{url}/jobs", json=spec, headers=retry, timeout=10).json()["id"]
    again = httpx.post(f"{url}/jobs", json=spec, headers=retry, timeout=10)
    assert again.json()["id"] == job_id and again.headers["idempotent-replayed"] == "true"

    wait_for(lambda: (job()["checkpoint_step"] or 0) >= 200, 120, "step 200")
    running = job()
    assert running["eta_seconds"] > 0 and running["worker"] is not None
    cancel = httpx.post(f"{url}/jobs/{job_id}/cancel", headers=auth, timeout=10)
    assert cancel.json()["state"] in ("cancelling", "cancelled")
    wait_for(lambda: job()["state"] == "cancelled", 60, "the worker to stop")
    stopped = job()
    assert stopped["checkpoint_step"] == stopped["step"] < 100_000  # checkpointed where it stopped
    assert stopped["step"] - running["step"] <= 20 + 100  # within a report or so

    listed = httpx.get(f"{url}/jobs/{job_id}/checkpoints", headers=auth, timeout=10).json()
    assert listed["checkpoints"][-1]["step"] == stopped["step"]
    download = httpx.get(listed["checkpoints"][-1]["download"], headers=auth, timeout=30)
    assert torch.load(io.BytesIO(download.content), weights_only=True)["step"] == stopped["step"]

    target = stopped["step"] + 200
    resumed = httpx.post(
        f"{url}/jobs/{job_id}/resume", json={"max_steps": target}, headers=auth, timeout=10
    )
    assert resumed.status_code == 202 and resumed.json()["state"] == "queued"
    wait_for(lambda: job()["state"] == "succeeded", 120, "success", every=0.5)
    assert (job()["step"], job()["attempts"]) == (target, 2)

    events = events_of(service, job_id, auth)
    states = [data["state"] for kind, data in events if kind == "state"]
    assert states == [
        "queued", "running", "cancelling", "cancelled", "queued", "running", "succeeded",
    ]  # fmt: skip
    assert ("checkpoint", {"step": target}) in events

    points = httpx.get(f"{url}/jobs/{job_id}/metrics", headers=auth, timeout=10).json()["points"]
    assert points[-1]["step"] == target
    assert points[-1]["d_grad_norm"] > 0 and points[-1]["g_grad_norm"] > 0

    png = httpx.get(f"{url}/jobs/{job_id}/samples?n=16", headers=auth, timeout=30)
    assert png.status_code == 200 and png.headers["x-checkpoint-step"] == str(target)
    cached = httpx.get(
        f"{url}/jobs/{job_id}/samples?n=16",
        headers={**auth, "If-None-Match": png.headers["etag"]},
        timeout=30,
    )
    assert cached.status_code == 304
    walk = httpx.get(f"{url}/jobs/{job_id}/interpolation?steps=5", headers=auth, timeout=30)
    assert walk.status_code == 200 and walk.headers["content-type"] == "image/png"
    succeeded = httpx.get(f"{url}/jobs?state=succeeded", headers=auth, timeout=10).json()
    assert [j["id"] for j in succeeded["jobs"]] == [job_id]
    scrape = httpx.get(f"{url}/metrics", timeout=10).text
    assert 'gan_jobs{state="succeeded"} 1.0' in scrape

    assert httpx.delete(f"{url}/jobs/{job_id}", headers=auth, timeout=10).status_code == 204
    assert httpx.get(f"{url}/jobs/{job_id}", headers=auth, timeout=10).status_code == 404
    assert not (service.tmp_path / "var" / "artifacts" / "jobs" / job_id).exists()
