"""Concurrent POST /jobs with one Idempotency-Key, on SQLite and the real PostgreSQL: the real
app in-process, its requests served concurrently by its thread pool against one job store.
Whichever request inserts first wins; the others fail the unique (owner, key) constraint and
answer as a retry would: the winner's job (same spec) or 422 naming the header (another spec).
Never a 500, never a second job."""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from tests.api.test_jobs import queued_messages
from worker.settings import Settings
from worker.store.db import session_scope
from worker.store.models import Job

REQUESTS = 20


@pytest.fixture
def database_url(sqlite_or_postgres: str) -> str:
    return sqlite_or_postgres


def post_at_once(client: TestClient, bodies: list[dict[str, Any]], key: str) -> list[Any]:
    """POST /jobs with each body, all released at the same moment from threads of their own."""
    barrier = threading.Barrier(len(bodies))

    def post(body: dict[str, Any]) -> Any:
        barrier.wait()
        return client.post("/jobs", json=body, headers={"Idempotency-Key": key})

    with ThreadPoolExecutor(len(bodies)) as pool:
        return list(pool.map(post, bodies))


def jobs_in_store(settings: Settings) -> int:
    with session_scope(settings.database_url) as session:
        return int(session.scalar(select(func.count()).select_from(Job)) or 0)


def test_concurrent_creates_with_one_key_make_one_job(client, settings):
    body = {"preset": "classic", "max_steps": 10, "eval_every": 0}
    for burst in range(1, 4):  # a few bursts: the race is not met every time
        answers = post_at_once(client, [body] * REQUESTS, f"same-key-same-spec-{burst}")
        statuses = Counter(a.status_code for a in answers)
        assert statuses == {202: REQUESTS}, [a.text for a in answers if a.status_code != 202]
        assert len({a.json()["id"] for a in answers}) == 1
        replayed = [a for a in answers if a.headers.get("idempotent-replayed") == "true"]
        assert len(replayed) == REQUESTS - 1
        assert jobs_in_store(settings) == burst
        assert len(queued_messages(settings)) == burst  # one job, one task


def test_concurrent_creates_with_one_key_and_other_specs_make_one_job(client, settings):
    bodies = [{"preset": "classic", "max_steps": 10 + i, "eval_every": 0} for i in range(10)]
    answers = post_at_once(client, bodies, "same-key-ten-specs")
    statuses = Counter(a.status_code for a in answers)
    assert statuses == {202: 1, 422: 9}, [a.text for a in answers]
    [winner] = [a.json() for a in answers if a.status_code == 202]
    for refused in (a for a in answers if a.status_code == 422):
        [detail] = refused.json()["detail"]
        assert detail["loc"] == ["header", "Idempotency-Key"]
        assert f"used for another job spec (job {winner['id']})" in detail["msg"]
    assert jobs_in_store(settings) == 1
