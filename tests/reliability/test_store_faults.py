"""The job store and the broker blink under a running service (real processes: a PostgreSQL and
a Redis of the test's own, stopped and started again for real): no job is stranded, a job
trains on through a PostgreSQL restart, and a job whose worker was lost while Redis was down
runs once both are back. RELIABILITY.md ("Store and broker outages") gives the figures."""

from __future__ import annotations

import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from harness.postgres import PostgresServer, postgres_bin
from harness.services import RedisServer, Service, events_of, wait_for
from tests.conftest import REQUIRE_SERVICES
from worker.store import jobs
from worker.store.db import session_scope

pytestmark = pytest.mark.e2e

# Tiny jobs: the 8-Gaussian ring (no data files to read), no evaluations.
RING = {"dataset": "ring8", "eval_every": 0, "log_every": 10}
SLOW = 300  # seconds for what takes 10 to 20 s on an idle machine


@pytest.fixture
def own_postgres(tmp_path: Path) -> Iterator[PostgresServer]:
    if postgres_bin() is None:
        if REQUIRE_SERVICES:
            pytest.fail("PostgreSQL's server binaries are not installed")
        pytest.skip("PostgreSQL's server binaries are not installed")
    server = PostgresServer(tmp_path)
    server.start()
    yield server
    server.close()


@pytest.fixture
def persistent_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis of the test's own that keeps its data across a restart (as a production one)."""
    folder = tmp_path / "redis"
    folder.mkdir()
    server = RedisServer(folder, persistent=True)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def outage_service(
    tmp_path: Path, own_postgres: PostgresServer, persistent_redis: RedisServer
) -> Iterator[Service]:
    """API and workers (none started yet) on the test's own PostgreSQL and Redis, a reconciler
    pass every second, one CPU thread a worker."""
    service = Service(
        tmp_path,
        {
            "GAN_DATABASE_URL": own_postgres.url,
            "GAN_BROKER_URL": persistent_redis.url,
            "GAN_TASK_QUEUE": f"test-{uuid.uuid4().hex[:8]}",
            "GAN_RECONCILE_EVERY_S": "1",
            "OMP_NUM_THREADS": "1",
        },
    )
    yield service
    service.stop()


def lost_count(service: Service, job_id: str) -> int:
    """Times the job's worker was counted lost (in the store: the API does not show it)."""
    with session_scope(service.env["GAN_DATABASE_URL"]) as session:
        job = jobs.get_job(session, job_id)
        assert job is not None
        return job.lost


def states_of(service: Service, job_id: str) -> list[str]:
    return [data["state"] for kind, data in events_of(service, job_id) if kind == "state"]


def test_jobs_queued_while_postgres_is_down_all_run_after(
    outage_service: Service, own_postgres: PostgresServer, figures: dict[str, Any]
) -> None:
    """Six jobs wait in Redis; PostgreSQL stops and a worker starts: each claim fails on the
    store, and the task is retried later (with backoff) instead of being consumed. The
    reconciler's re-sends are turned off (GAN_RESEND_AFTER_S of an hour), so only the retries
    can save the jobs: once PostgreSQL is back, every job runs, once."""
    service = outage_service
    service.serve("--no-worker")
    queued = [service.submit({**RING, "max_steps": 20}) for _ in range(6)]
    own_postgres.stop()
    down_at = time.monotonic()
    service.start("worker", env={"GAN_RESEND_AFTER_S": "3600"})
    time.sleep(10)
    own_postgres.start()
    figures["postgres_down_s"] = round(time.monotonic() - down_at, 1)
    back_at = time.monotonic()

    def all_succeeded() -> bool:
        return all(service.job(job_id)["state"] == "succeeded" for job_id in queued)

    wait_for(all_succeeded, SLOW, "every job to succeed", every=0.5)
    figures["all_done_after_s"] = round(time.monotonic() - back_at, 1)
    for job_id in queued:
        assert service.job(job_id)["attempts"] == 1
        assert states_of(service, job_id) == ["queued", "running", "succeeded"]
    retries = service.logs().count("the job store is unreachable; will try again")
    assert 6 <= retries <= 6 * 8, retries  # each job backs off: 1, 2, 4, 8 s … not a spin
    figures["claims_failed"] = retries
    figures["jobs_stranded"] = 0


def test_a_job_trains_on_through_a_postgres_restart(
    outage_service: Service, own_postgres: PostgresServer, figures: dict[str, Any]
) -> None:
    """PostgreSQL stops for 10 s while a job trains (a lease of 30 s): the worker keeps
    training, its progress reports wait in memory, and once the store is back they all go in;
    the job succeeds with every step and every point of its time series, claimed once, no
    worker counted lost, no error."""
    service = outage_service
    service.serve("--no-worker")
    service.start("worker", env={"GAN_LEASE_S": "30"})
    max_steps = 800  # about 20 s here; on a faster machine it ends during the outage
    job_id = service.submit({**RING, "max_steps": max_steps, "checkpoint_every": 500})
    wait_for(lambda: service.job(job_id)["step"] >= 50, 120, "the job to train")
    own_postgres.stop()
    down_at = time.monotonic()
    time.sleep(10)
    own_postgres.start()
    figures["postgres_down_s"] = round(time.monotonic() - down_at, 1)
    wait_for(lambda: service.job(job_id)["state"] == "succeeded", SLOW, "success", every=0.5)

    job = service.job(job_id)
    assert (job["step"], job["attempts"], job["error"]) == (max_steps, 1, None)
    assert lost_count(service, job_id) == 0
    assert states_of(service, job_id) == ["queued", "running", "succeeded"]
    logs = service.logs()
    assert "reports wait for the store" in logs  # the outage did hit the training
    assert "internal error" not in logs
    metrics = httpx.get(f"{service.url}/jobs/{job_id}/metrics?max_points=10000", timeout=30)
    steps = [point["step"] for point in metrics.json()["points"]]
    assert steps == list(range(10, max_steps + 1, 10))  # no report lost
    figures["reports_held_max"] = max(
        int(line.split("(")[1].split()[0])
        for line in logs.splitlines()
        if "reports wait for the store" in line
    )
    figures["steps_lost"] = figures["lost"] = 0


def test_a_worker_lost_while_redis_is_down_has_its_job_run_after(
    outage_service: Service, persistent_redis: RedisServer, figures: dict[str, Any]
) -> None:
    """Redis goes down, then the worker training a job is killed; a second worker's reconciler
    requeues the job when its lease expires, but cannot send it. Redis comes back with its data
    (the reconciler's sentinel too, so nothing looks lost): the reconciler sends the job on its
    next pass, and it resumes from its checkpoint. The reconciler's time-based re-sends are
    turned off (GAN_RESEND_AFTER_S of an hour): the failed send alone must be retried."""
    service = outage_service
    service.env |= {"GAN_LEASE_S": "3", "GAN_RESEND_AFTER_S": "3600"}
    service.serve("--no-worker")
    first = service.start("worker")
    sentinel = f"gan:sentinel:{service.env['GAN_TASK_QUEUE']}"
    wait_for(lambda: persistent_redis.client().exists(sentinel), 60, "the first reconciler pass")
    job_id = service.submit({**RING, "max_steps": 400, "checkpoint_every": 100})
    wait_for(lambda: service.job(job_id)["step"] >= 150, 120, "the job to train")

    persistent_redis.stop()
    down_at = time.monotonic()
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    service.start("worker")  # its reconciler runs while its Celery waits for the broker
    wait_for(lambda: service.job(job_id)["state"] == "queued", 60, "the lease to expire")
    wait_for(lambda: "could not enqueue it" in service.logs(), 30, "a send that fails")
    persistent_redis.start()
    figures["redis_down_s"] = round(time.monotonic() - down_at, 1)
    back_at = time.monotonic()
    wait_for(lambda: service.job(job_id)["attempts"] == 2, 120, "the job to be claimed again")
    figures["reclaimed_after_redis_back_s"] = round(time.monotonic() - back_at, 1)
    wait_for(lambda: service.job(job_id)["state"] == "succeeded", SLOW, "success", every=0.5)

    job = service.job(job_id)
    assert (job["step"], job["attempts"], lost_count(service, job_id)) == (400, 2, 1)
    assert states_of(service, job_id) == ["queued", "running", "queued", "running", "succeeded"]
    assert "the broker lost its messages" not in service.logs()  # the sentinel survived
    figures["jobs_stranded"] = 0
