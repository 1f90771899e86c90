"""The job store and the broker blink under a running service (real processes: a PostgreSQL and
a Redis of the test's own, stopped and started again for real): no job is stranded, a job
trains on through a PostgreSQL restart, and a job whose worker was lost while Redis was down
runs once both are back. The scenarios are harness/outage.py's, at the size CI can afford
(``python -m bench.outage`` runs them full size); RELIABILITY.md gives the figures."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.outage import (
    queued_through_postgres_outage,
    training_through_postgres_outage,
    worker_lost_while_redis_down,
)
from harness.postgres import PostgresServer
from harness.services import RedisServer, Service

pytestmark = pytest.mark.e2e


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


def test_jobs_queued_while_postgres_is_down_all_run_after(
    outage_service: Service,
    own_postgres: PostgresServer,
    persistent_redis: RedisServer,
    figures: dict[str, Any],
) -> None:
    """harness.outage.queued_through_postgres_outage: six jobs, PostgreSQL down 10 s; the
    worker backs off (1, 2, 4, 8 s … per job) rather than spinning through its queue."""
    outage_service.serve("--no-worker")
    figures.update(
        queued_through_postgres_outage(
            outage_service, own_postgres, persistent_redis, jobs=6, down_s=10
        )
    )
    assert 6 <= figures["claims_failed"] <= 6 * 8


def test_a_job_trains_on_through_a_postgres_restart(
    outage_service: Service, own_postgres: PostgresServer, figures: dict[str, Any]
) -> None:
    """harness.outage.training_through_postgres_outage: PostgreSQL down 10 s, shorter than the
    lease (30 s); 600 steps take about 15 s here (on a faster machine the job ends during the
    outage, and its end is recorded once the store is back)."""
    outage_service.serve("--no-worker")
    outage_service.start("worker", env={"GAN_LEASE_S": "30"})
    figures.update(
        training_through_postgres_outage(outage_service, own_postgres, max_steps=600, down_s=10)
    )


def test_a_worker_lost_while_redis_is_down_has_its_job_run_after(
    outage_service: Service, persistent_redis: RedisServer, figures: dict[str, Any]
) -> None:
    """harness.outage.worker_lost_while_redis_down, with a lease of 3 s."""
    outage_service.env["GAN_LEASE_S"] = "3"
    outage_service.serve("--no-worker")
    figures.update(worker_lost_while_redis_down(outage_service, persistent_redis, max_steps=300))
