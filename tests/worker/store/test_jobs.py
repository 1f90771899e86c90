"""worker.store.jobs: create, get, list, cancel, resume and delete, on SQLite and the real
PostgreSQL."""

from datetime import UTC

import pytest

from tests.worker.store.helpers import change, claim, found, leased, new_job, progress, row
from worker.store import events, jobs, leases, series
from worker.store.db import session_scope
from worker.store.states import CANCELLED, CANCELLING, FAILED, QUEUED, RUNNING


def test_job_lifecycle_round_trips(database_url):
    with session_scope(database_url) as session:
        job_id = jobs.create_job(session, "classic", {"max_steps": 50, "lr_g": 2e-4}).id
    with session_scope(database_url) as session:
        queued = jobs.get_job(session, job_id)
        assert queued is not None and queued.state == QUEUED
        assert queued.total_steps == 50
        assert queued.created_at.tzinfo == UTC  # timestamps come back aware on every database
        assert (queued.metrics, queued.best_metrics, queued.warnings) == (None, None, [])
    with session_scope(database_url) as session:
        outcome, queued = leases.claim(session, job_id, "w1", lease_s=60)
        assert outcome == "claimed" and queued is not None
        report = progress(10, images_per_sec=1e3, d_loss=1.2, g_loss=0.8, d_real=0.5, d_fake=-0.5)
        series.record_progress(queued, report)
    with session_scope(database_url) as session:
        running = jobs.get_job(session, job_id)
        assert running is not None
        assert (running.state, running.step, running.d_loss) == (RUNNING, 10, 1.2)
        assert running.config == {"max_steps": 50, "lr_g": 2e-4}
        leases.mark_finished(running, error="disk full")
    with session_scope(database_url) as session:
        failed = jobs.get_job(session, job_id)
        assert failed is not None and failed.state == FAILED and failed.error == "disk full"
        assert failed.finished_at is not None and failed.finished_at >= failed.created_at


def test_list_is_newest_first(database_url):
    ids = []
    for n in range(3):
        with session_scope(database_url) as session:
            ids.append(jobs.create_job(session, "classic", {"max_steps": n + 1}).id)
    with session_scope(database_url) as session:
        assert [job.id for job in jobs.list_jobs(session)] == ids[::-1]
        assert jobs.get_job(session, "missing") is None


def test_cancel_a_queued_job_at_once_and_a_running_one_through_its_worker(database_url):
    queued, running = new_job(database_url), new_job(database_url)
    change(database_url, queued, jobs.cancel)
    assert row(database_url, queued).state == CANCELLED
    assert claim(database_url, queued)[0] == "gone"  # its message is dropped

    claim(database_url, running)
    change(database_url, running, jobs.cancel)
    assert row(database_url, running).state == CANCELLING
    change(database_url, running, jobs.cancel)  # again: no change
    change(database_url, running, leases.mark_finished)  # the worker stopped
    job = row(database_url, running)
    assert (job.state, job.error, job.lease_owner) == (CANCELLED, None, None)


def test_finished_jobs_cannot_be_cancelled(database_url):
    job_id = new_job(database_url)
    claim(database_url, job_id)
    change(database_url, job_id, leases.mark_finished)
    with pytest.raises(jobs.StateError, match="already succeeded"):
        change(database_url, job_id, jobs.cancel)


def test_resume_requeues_with_more_steps(database_url):
    job_id = new_job(database_url)
    claim(database_url, job_id)
    with session_scope(database_url) as session:
        job = found(session, job_id)
        series.record_progress(job, progress(40, checkpoint_step=40))
    with pytest.raises(jobs.StateError, match="has not ended"):
        change(database_url, job_id, jobs.resume)
    change(database_url, job_id, jobs.cancel)
    with pytest.raises(jobs.StateError, match="is stopping"):
        change(database_url, job_id, jobs.resume)
    change(database_url, job_id, leases.mark_finished)
    with pytest.raises(ValueError, match="more than the 40 steps"):
        change(database_url, job_id, jobs.resume, 40)
    change(database_url, job_id, jobs.resume, 500)
    job = row(database_url, job_id)
    assert (job.state, job.total_steps, job.config["max_steps"]) == (QUEUED, 500, 500)
    assert (job.step, job.checkpoint_step, job.finished_at) == (40, 40, None)
    assert claim(database_url, job_id)[0] == "claimed"


def test_succeeded_jobs_resume_only_with_more_steps(database_url):
    job_id = new_job(database_url)
    claim(database_url, job_id)
    change(database_url, job_id, leases.mark_finished)
    with pytest.raises(jobs.StateError, match="give a max_steps above 100"):
        change(database_url, job_id, jobs.resume)
    change(database_url, job_id, jobs.resume, 200)
    assert row(database_url, job_id).state == QUEUED


def test_delete_removes_the_job_its_series_and_events(database_url):
    job_id, other = new_job(database_url), new_job(database_url)
    _, token = claim(database_url, job_id)
    with session_scope(database_url) as session:
        series.record_progress(leased(session, job_id, token), progress(5))
    with session_scope(database_url) as session:
        jobs.delete_job(session, found(session, job_id))
    with session_scope(database_url) as session:
        assert jobs.get_job(session, job_id) is None
        assert events.events_after(session, job_id, 0) == []
        assert series.metric_points(session, job_id) == (0, [])
        assert len(events.events_after(session, other, 0)) == 1


def test_jobs_page_by_cursor_filter_by_state_and_owner(database_url):
    ids = [new_job(database_url) for _ in range(5)]
    change(database_url, ids[1], jobs.cancel)
    with session_scope(database_url) as session:
        mine = jobs.create_job(session, "classic", {"max_steps": 1}, owner="key-a").id
    with session_scope(database_url) as session:
        page = jobs.list_jobs(session, owner="", limit=2)
        assert [j.id for j in page] == [ids[4], ids[3]]
        last = page[-1]
        page = jobs.list_jobs(session, owner="", limit=2, before=(last.created_at, last.id))
        assert [j.id for j in page] == [ids[2], ids[1]]
        cancelled = jobs.list_jobs(session, owner="", states=[CANCELLED])
        assert [j.id for j in cancelled] == [ids[1]]
        assert [j.id for j in jobs.list_jobs(session, owner="key-a")] == [mine]
        assert jobs.get_job(session, mine, owner="") is None
        assert jobs.get_job(session, mine, owner="key-a") is not None


def test_idempotency_keys_are_per_owner(database_url):
    with session_scope(database_url) as session:
        a = jobs.create_job(session, "classic", {"max_steps": 1}, owner="key-a",
                            idempotency_key="k1", request_hash="h")  # fmt: skip
        b = jobs.create_job(session, "classic", {"max_steps": 1}, owner="key-b",
                            idempotency_key="k1", request_hash="h")  # fmt: skip
    with session_scope(database_url) as session:
        assert jobs.find_idempotent(session, "key-a", "k1") == found(session, a.id)
        assert jobs.find_idempotent(session, "key-b", "k1") == found(session, b.id)
        assert jobs.find_idempotent(session, "key-a", "k2") is None
