"""worker.store.leases: claims, fencing and the reconciler's pass, on SQLite and the real
PostgreSQL."""

from datetime import UTC, datetime, timedelta

from tests.worker.store.helpers import change, claim, new_job, row
from worker.store import jobs, leases
from worker.store.db import session_scope
from worker.store.states import CANCELLED, FAILED, RUNNING


def test_one_worker_claims_a_job_and_duplicates_do_nothing(database_url):
    job_id = new_job(database_url)
    assert claim(database_url, job_id, "w1") == ("claimed", 1)
    assert claim(database_url, job_id, "w2")[0] == "busy"  # a duplicate delivery
    job = row(database_url, job_id)
    assert (job.state, job.lease_owner, job.attempts) == (RUNNING, "w1", 1)
    assert job.started_at is not None and job.lease_expires_at is not None
    assert job.lease_expires_at > datetime.now(UTC)
    change(database_url, job_id, leases.mark_finished)
    assert claim(database_url, job_id, "w2")[0] == "gone"
    assert claim(database_url, "no-such-job")[0] == "gone"
    assert row(database_url, job_id).lease_owner is None


def test_a_lost_lease_fences_off_its_old_worker(database_url):
    job_id = new_job(database_url)
    _, old_token = claim(database_url, job_id, "w1", lease_s=0.001)
    with session_scope(database_url) as session:  # w1 is presumed lost
        assert [j.id for j in leases.expire_leases(session, max_lost=3)] == [job_id]
    _, new_token = claim(database_url, job_id, "w2")
    assert new_token == old_token + 1
    with session_scope(database_url) as session:
        assert not leases.renew(session, job_id, old_token, 60)
        assert leases.leased_job(session, job_id, old_token) is None
        assert leases.renew(session, job_id, new_token, 60)
        assert leases.leased_job(session, job_id, new_token) is not None
    job = row(database_url, job_id)
    assert (job.lease_owner, job.attempts, job.lost) == ("w2", 2, 1)


def test_expired_leases_requeue_until_the_cap_then_fail(database_url):
    job_id = new_job(database_url)
    for lost in range(1, 4):
        claim(database_url, job_id, lease_s=0.001)
        with session_scope(database_url) as session:
            requeued = leases.expire_leases(session, max_lost=2)
        assert [j.id for j in requeued] == ([job_id] if lost <= 2 else [])
    job = row(database_url, job_id)
    assert job.state == FAILED and job.lost == 3
    assert job.error is not None and "worker was lost 3 times" in job.error
    assert f"/jobs/{job_id}/resume" in job.error


def test_live_leases_are_left_alone(database_url):
    job_id = new_job(database_url)
    claim(database_url, job_id, lease_s=3600)
    with session_scope(database_url) as session:
        assert leases.expire_leases(session, max_lost=3) == []
        far = datetime.now(UTC) + timedelta(days=365)
        assert [j.id for j in leases.expire_leases(session, max_lost=3, now=far)] == [job_id]


def test_a_lost_cancelling_job_ends_cancelled(database_url):
    job_id = new_job(database_url)
    claim(database_url, job_id, lease_s=0.001)
    change(database_url, job_id, jobs.cancel)
    with session_scope(database_url) as session:
        assert leases.expire_leases(session, max_lost=3) == []
    assert row(database_url, job_id).state == CANCELLED


def test_resumed_while_the_old_worker_holds_the_lease_waits(database_url):
    job_id = new_job(database_url)
    _, token = claim(database_url, job_id, "w1")
    change(database_url, job_id, jobs.cancel)
    change(database_url, job_id, leases.mark_finished)
    change(database_url, job_id, jobs.resume)
    with session_scope(database_url) as session:  # released: a new claim may go ahead
        assert leases.leased_job(session, job_id, token) is None
    assert claim(database_url, job_id, "w2")[0] == "claimed"
