"""worker.store.events: each job's log of state changes, progress and checkpoints, on SQLite
and the real PostgreSQL."""

import pytest

from tests.worker.store.helpers import claim, leased, new_job, progress
from worker.store import events, leases, series
from worker.store.db import session_scope


def event_log(url, job_id, after=0):
    with session_scope(url) as session:
        return [(e.kind, e.data) for e in events.events_after(session, job_id, after)]


def test_events_follow_states_progress_and_checkpoints(database_url):
    job_id = new_job(database_url)
    _, token = claim(database_url, job_id)
    with session_scope(database_url) as session:
        job = leased(session, job_id, token)
        for step, ckpt in ((10, None), (20, 20), (30, 20)):
            report = progress(step, g_loss=2.0, d_real=0.5, d_fake=-0.5, checkpoint_step=ckpt)
            series.record_progress(job, report)
        leases.mark_finished(job)
    seen = event_log(database_url, job_id)
    assert [kind for kind, _ in seen] == [
        "state", "state", "progress", "checkpoint", "progress", "progress", "state",
    ]  # fmt: skip
    assert [d["state"] for k, d in seen if k == "state"] == ["queued", "running", "succeeded"]
    last = [d for k, d in seen if k == "progress"][-1]
    assert last["step"] == 30 and last["total_steps"] == 100
    assert last["eta_seconds"] == pytest.approx(70 * 64 / 640.0)
    assert ("checkpoint", {"step": 20}) in seen
    with session_scope(database_url) as session:
        newest = events.last_event_id(session, job_id)
        assert events.events_after(session, job_id, newest) == []
        assert len(events.events_after(session, job_id, newest - 2)) == 2
