"""Fixtures of the fault, hostile-input, fuzzing and load tests.

The fault tests run the service as real processes on a Redis of their own (``redis-server`` on a
free port, started and stopped by the test, so that restarting or flushing it touches nothing
else on the machine) and the real PostgreSQL, with short leases so that lost workers and lost
messages are noticed in seconds.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient

from api.main import app
from api.ratelimit import limiter_for
from tests.conftest import REQUIRE_SERVICES
from tests.services import Service, free_port, wait_for
from worker.settings import Settings, get_settings

FIGURES = os.environ.get("GAN_RELIABILITY_FIGURES")  # a JSON-lines file to append figures to


class RedisServer:
    """A ``redis-server`` of the test's own, without persistence (as the machine's own runs), on
    a free port: ``stop`` and ``start`` again is a restart that loses every message."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.port = folder, free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        log = open(self.folder / f"redis-{self.starts}.log", "wb")  # noqa: SIM115
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.folder)],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        wait_for(self.answers, 10, "redis-server to answer")

    def answers(self) -> bool:
        try:
            return bool(redis.Redis.from_url(self.url, socket_timeout=1).ping())
        except redis.RedisError:
            return False

    def stop(self) -> None:
        """Shut it down without saving anything: whatever it held is gone."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()  # SIGTERM: redis-server exits; with --save "" it saves nothing
            self.process.wait(timeout=10)
        self.process = None

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_timeout=5)


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        message = "redis-server is not installed"
        if REQUIRE_SERVICES:
            pytest.fail(message)
        pytest.skip(message)
    folder = tmp_path / "redis"
    folder.mkdir()
    server = RedisServer(folder)
    server.start()
    yield server
    server.stop()


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


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    """The real app in-process on the test's settings (SQLite, filesystem broker, tmp dirs),
    with fresh rate limiters."""
    limiter_for.cache_clear()
    app.dependency_overrides[get_settings] = lambda: settings
    try:
        with TestClient(app) as client:
            yield client
    finally:
        app.dependency_overrides.clear()
        limiter_for.cache_clear()
