"""Fixtures of the fault, hostile-input, fuzzing and load tests.

The fault tests run the service as real processes on a Redis of their own (``redis-server`` on a
free port, started and stopped by the test, so that restarting or flushing it touches nothing
else on the machine) and the real PostgreSQL, with short leases so that lost workers and lost
messages are noticed in seconds.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.services import RedisServer, Service

FIGURES = os.environ.get("GAN_RELIABILITY_FIGURES")  # a JSON-lines file to append figures to


@pytest.fixture
def service(
    tmp_path: Path, mnist_dir: Path, postgres_url: str, own_redis: RedisServer
) -> Iterator[Service]:
    """API and workers as separate processes (none started yet) on the test's own Redis and the
    real PostgreSQL, with short leases (3 s), a reconciler pass every second, and one CPU thread
    a worker."""
    service = Service(
        tmp_path,
        {
            "GAN_DATA_DIR": str(mnist_dir),
            "GAN_DATABASE_URL": postgres_url,
            "GAN_BROKER_URL": own_redis.url,
            "GAN_TASK_QUEUE": f"test-{uuid.uuid4().hex[:8]}",
            "GAN_LEASE_S": "3",
            "GAN_RECONCILE_EVERY_S": "1",
            # One CPU thread a worker: with torch's default (a thread per core) a worker's
            # thread pool spins against every other process on this small machine, and a test's
            # timing swings twentyfold with whatever else runs.
            "OMP_NUM_THREADS": "1",
        },
    )
    yield service
    service.stop()


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    """What a test measured, by name: printed at its end (``pytest -s`` shows it) and appended
    as a JSON line to $GAN_RELIABILITY_FIGURES when that is set (RELIABILITY.md's source)."""
    measured: dict[str, Any] = {}
    yield measured
    if measured:
        line = json.dumps({"test": request.node.name, **measured})
        print(f"\nfigures: {line}")
        if FIGURES:
            with open(FIGURES, "a") as f:
                f.write(line + "\n")
