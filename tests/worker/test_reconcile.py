"""The reconciler's comparison of the job store with the broker's queue, on the embedded
filesystem broker and a Redis of the test's own (real sends, real queues; no worker)."""

from __future__ import annotations

import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from gan.config import resolve
from harness.services import RedisServer
from tests.conftest import REQUIRE_SERVICES
from worker.celery_app import make_celery
from worker.reconcile import Reconciler, waiting_job_ids
from worker.settings import Settings
from worker.store import jobs
from worker.store.db import session_scope


@pytest.fixture(params=["filesystem", "redis"])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Settings]:
    """A SQLite store, and the embedded broker or a Redis of the test's own; a queued job is
    sent again after 0.2 s without a message."""
    embedded = Settings(
        database_url=f"sqlite:///{tmp_path / 'gan.db'}",
        broker_url="filesystem://",
        broker_dir=tmp_path / "broker",
        task_queue=f"test-{uuid.uuid4().hex[:8]}",
        resend_after_s=0.2,
    )
    if request.param == "filesystem":
        yield embedded
        return
    if shutil.which("redis-server") is None:
        if REQUIRE_SERVICES:
            pytest.fail("redis-server is not installed")
        pytest.skip("redis-server is not installed")
    (tmp_path / "redis").mkdir()
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        yield embedded.model_copy(update={"broker_url": server.url})
    finally:
        server.stop()


def queued_job(settings: Settings) -> str:
    config = resolve("classic", max_steps=5).to_dict()
    with session_scope(settings.database_url) as session:
        return jobs.create_job(session, "classic", config).id


def test_a_queued_job_without_a_message_is_sent_again_once(settings: Settings) -> None:
    """A job queued in the store whose message never reached the broker (the API died between
    the two, or a worker consumed it and failed) gets one after ``resend_after_s``, and only
    one while that message waits."""
    reconciler = Reconciler(settings, make_celery(settings))
    reconciler.run_once()  # Redis: the first look at it sends every queued job (none yet)
    job_id = queued_job(settings)
    assert reconciler.run_once() == []  # queued just now: its message may be on its way
    time.sleep(0.3)
    assert reconciler.run_once() == [job_id]
    assert waiting_job_ids(settings) == {job_id}
    time.sleep(0.3)
    assert reconciler.run_once() == []  # its message waits in the queue
    assert Reconciler(settings, make_celery(settings)).run_once() == []  # another worker's too
