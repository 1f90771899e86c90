"""Store and broker outages under a running service: the scenarios of ``python -m bench.outage``
(full size) and tests/reliability/test_store_faults.py (the size CI can afford). Each injects
the fault into real processes (a PostgreSQL and a Redis of its own, stopped and started again
for real), checks that no job is stranded, trained twice or failed by it, and returns what it
measured (seconds from the store's or broker's return to recovery, reports held, …).

Scenario ``queued_through_postgres_outage``: a worker has run and stopped (so the reconcilers'
sentinel is in Redis, as in any service that has run a while: nothing looks lost); ``jobs``
tiny jobs wait in Redis; PostgreSQL stops and a worker starts: each claim fails on the store,
and the task is retried later (with backoff) instead of being consumed. The reconciler's
re-sends are turned off (GAN_RESEND_AFTER_S of an hour), so only the retries can save the jobs:
once PostgreSQL is back, every job runs, once.

Scenario ``training_through_postgres_outage``: PostgreSQL stops for ``down_s`` while a job
trains: the worker trains on, its progress reports wait in memory, and go in once the store is
back; the job succeeds with every step and every point of its time series, claimed once, its
worker never counted lost, no error.

Scenario ``worker_lost_while_redis_down``: Redis (keeping its data across a restart) goes down,
then the worker training a job is killed; the other worker's reconciler requeues the job when its
lease expires, but cannot send it. Redis comes back with its data (the reconciler's sentinel
too, so nothing looks lost): the failed send is retried and the job resumes from its
checkpoint. The time-based re-sends are turned off: the failed send alone must be retried.
"""

from __future__ import annotations

import signal
import time
from typing import Any

import httpx

from harness.postgres import PostgresServer
from harness.services import RedisServer, Service, events_of, wait_for

# Tiny jobs: the 8-Gaussian ring (no data files to read), no evaluations.
RING = {"dataset": "ring8", "eval_every": 0, "log_every": 10}
SLOW = 600  # seconds for what takes 10 to 60 s on an idle machine
NO_RESENDS = {"GAN_RESEND_AFTER_S": "3600"}  # the reconciler's time-based re-sends, off


def states_of(service: Service, job_id: str) -> list[str]:
    return [data["state"] for kind, data in events_of(service, job_id) if kind == "state"]


def sentinel_of(service: Service) -> str:
    """The key the reconcilers keep in Redis (``worker.reconcile.sentinel_key``)."""
    return f"gan:sentinel:{service.env['GAN_TASK_QUEUE']}"


def stored(service: Service, job_id: str, column: str) -> Any:
    """A column of the job's row in the store, such as ``lost`` (the times its worker was
    counted lost) or ``lease_owner`` ("host/pid"), which the API does not show."""
    from worker.store import jobs
    from worker.store.db import session_scope

    with session_scope(service.env["GAN_DATABASE_URL"]) as session:
        job = jobs.get_job(session, job_id)
        assert job is not None
        return getattr(job, column)


def queued_through_postgres_outage(
    service: Service, postgres: PostgresServer, redis: RedisServer, *, jobs: int, down_s: float
) -> dict[str, Any]:
    """The API runs, no worker yet; returns the figures."""
    earlier = service.start("worker", env=NO_RESENDS)
    wait_for(lambda: redis.client().exists(sentinel_of(service)), 60, "a reconciler's pass")
    earlier.terminate()
    earlier.wait(timeout=60)
    queued = [service.submit({**RING, "max_steps": 20}) for _ in range(jobs)]
    postgres.stop()
    down_at = time.monotonic()
    service.start("worker", env=NO_RESENDS)
    time.sleep(max(0.0, down_s - (time.monotonic() - down_at)))
    postgres.start()
    figures: dict[str, Any] = {"postgres_down_s": round(time.monotonic() - down_at, 1)}
    back_at = time.monotonic()

    def all_succeeded() -> bool:
        return all(service.job(job_id)["state"] == "succeeded" for job_id in queued)

    wait_for(all_succeeded, SLOW, "every job to succeed", every=0.5)
    figures["all_done_after_s"] = round(time.monotonic() - back_at, 1)
    for job_id in queued:
        assert service.job(job_id)["attempts"] == 1
        assert states_of(service, job_id) == ["queued", "running", "succeeded"]
    figures["claims_failed"] = service.logs().count("the job store is unreachable; will try")
    figures["jobs"], figures["jobs_stranded"] = jobs, 0
    return figures


def training_through_postgres_outage(
    service: Service, postgres: PostgresServer, *, max_steps: int, down_s: float
) -> dict[str, Any]:
    """The API and a worker run; returns the figures."""
    job_id = service.submit({**RING, "max_steps": max_steps, "checkpoint_every": 500})
    wait_for(lambda: service.job(job_id)["step"] >= 50, 120, "the job to train")
    postgres.stop()
    down_at = time.monotonic()
    time.sleep(down_s)
    postgres.start()
    figures: dict[str, Any] = {"postgres_down_s": round(time.monotonic() - down_at, 1)}
    wait_for(lambda: service.job(job_id)["state"] == "succeeded", SLOW, "success", every=0.5)

    job = service.job(job_id)
    assert (job["step"], job["attempts"], job["error"]) == (max_steps, 1, None)
    assert stored(service, job_id, "lost") == 0
    assert states_of(service, job_id) == ["queued", "running", "succeeded"]
    logs = service.logs()
    held = [line for line in logs.splitlines() if "reports wait for the store" in line]
    assert held or "the job store is back" in logs  # the outage did hit the training
    assert "internal error" not in logs
    metrics = httpx.get(f"{service.url}/jobs/{job_id}/metrics?max_points=10000", timeout=30)
    steps = [point["step"] for point in metrics.json()["points"]]
    assert steps == list(range(10, max_steps + 1, 10))  # no report lost
    figures["reports_held_max"] = max((int(line.split("(")[1].split()[0]) for line in held),
                                      default=0)  # fmt: skip
    figures["steps"], figures["steps_lost"], figures["lost"] = max_steps, 0, 0
    return figures


def worker_lost_while_redis_down(
    service: Service, redis: RedisServer, *, max_steps: int
) -> dict[str, Any]:
    """The API runs, no worker yet; the service has a short lease; returns the figures."""
    workers = [service.start("worker", env=NO_RESENDS) for _ in range(2)]
    wait_for(lambda: redis.client().exists(sentinel_of(service)), 60, "a reconciler's pass")
    job_id = service.submit({**RING, "max_steps": max_steps, "checkpoint_every": 100})
    wait_for(lambda: service.job(job_id)["step"] >= 120, 120, "the job to train")

    redis.stop()
    down_at = time.monotonic()
    pid = int(stored(service, job_id, "lease_owner").rsplit("/", 1)[1])
    [training] = [worker for worker in workers if worker.pid == pid]
    training.send_signal(signal.SIGKILL)
    training.wait(timeout=10)  # the other's reconciler runs while its Celery waits for Redis
    wait_for(lambda: service.job(job_id)["state"] == "queued", 60, "the lease to expire")
    wait_for(lambda: "could not enqueue it" in service.logs(), 30, "a send that fails")
    redis.start()
    figures: dict[str, Any] = {"redis_down_s": round(time.monotonic() - down_at, 1)}
    back_at = time.monotonic()
    wait_for(lambda: service.job(job_id)["attempts"] == 2, 120, "the job to be claimed again")
    figures["reclaimed_after_redis_back_s"] = round(time.monotonic() - back_at, 1)
    wait_for(lambda: service.job(job_id)["state"] == "succeeded", SLOW, "success", every=0.5)

    job = service.job(job_id)
    assert (job["step"], job["attempts"], stored(service, job_id, "lost")) == (max_steps, 2, 1)
    assert states_of(service, job_id) == ["queued", "running", "queued", "running", "succeeded"]
    assert "the broker lost its messages" not in service.logs()  # the sentinel survived
    figures["jobs_stranded"] = 0
    return figures
