"""Event ids and steps are 64-bit on the real PostgreSQL (migration 0002): a job store whose event
ids have passed 2**31, up to 2**63 - 1, streams and resumes cleanly; an id past that is a 422
naming the header or parameter."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from harness.services import parse_events
from worker.store import jobs
from worker.store.db import session_scope

TOP = 2**63 - 1  # the largest event id the API accepts, and a bigint holds


@pytest.fixture
def database_url(postgres_url: str) -> str:
    return postgres_url


def test_event_ids_up_to_2_to_the_63_stream_and_resume(client, settings):
    with session_scope(settings.database_url) as session:
        # The next two event ids are the last two a bigint holds (a 32-bit sequence refuses).
        session.execute(text(f"ALTER SEQUENCE job_events_id_seq RESTART WITH {TOP - 1}"))
        job = jobs.create_job(session, "classic", {"max_steps": 2**40})  # a 64-bit step too
        job.step = 2**33
        jobs.cancel(job)  # queued → cancelled: two events, and the stream ends after them
        job_id = job.id
    assert client.get(f"/jobs/{job_id}").json()["step"] == 2**33

    def stream(**headers: str) -> list[tuple[int, str, dict[str, object]]]:
        with client.stream("GET", f"/jobs/{job_id}/events", headers=headers) as response:
            assert response.status_code == 200
            return parse_events(response.read().decode())

    everything = stream()
    assert [(i, data["state"]) for i, _, data in everything] == [
        (TOP - 1, "queued"),
        (TOP, "cancelled"),
    ]
    assert [i for i, _, _ in stream(**{"Last-Event-ID": str(2**31)})] == [TOP - 1, TOP]
    assert [i for i, _, _ in stream(**{"Last-Event-ID": str(TOP - 1)})] == [TOP]
    assert stream(**{"Last-Event-ID": str(TOP)}) == []  # nothing after the last: a clean end

    past = client.get(f"/jobs/{job_id}/events", headers={"Last-Event-ID": str(TOP + 1)})
    assert past.status_code == 422
    assert past.json()["detail"][0]["loc"] == ["header", "Last-Event-ID"]
    past = client.get(f"/jobs/{job_id}/events", params={"after": str(TOP + 1)})
    assert past.status_code == 422
    assert past.json()["detail"][0]["loc"] == ["query", "after"]
