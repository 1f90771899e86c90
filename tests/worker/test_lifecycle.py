"""The job store's lifecycle: leases and fencing, the reconciler's pass, cancel, resume, delete,
events, paging and API keys, on SQLite and the real PostgreSQL."""

from datetime import UTC, datetime, timedelta

import pytest

from worker import store


def new_job(url, **fields) -> str:
    config = {"max_steps": 100, "batch_size": 64, "d_steps": 1, **fields}
    with store.session_scope(url) as session:
        return store.create_job(session, "classic", config).id


def claim(url, job_id, worker="w1", lease_s=60.0):
    with store.session_scope(url) as session:
        outcome, job = store.claim(session, job_id, worker, lease_s)
        return outcome, job.lease_token if job is not None else None


def row(url, job_id) -> store.Job:
    with store.session_scope(url) as session:
        job = store.get_job(session, job_id)
        assert job is not None
        return job


def change(url, job_id, action, *args):
    with store.session_scope(url) as session:
        job = store.get_job(session, job_id)
        assert job is not None
        action(job, *args)


def leased(session, job_id, token) -> store.Job:
    job = store.leased_job(session, job_id, token)
    assert job is not None
    return job


def found(session, job_id, owner=None) -> store.Job:
    job = store.get_job(session, job_id, owner)
    assert job is not None
    return job


def events(url, job_id, after=0):
    with store.session_scope(url) as session:
        return [(e.kind, e.data) for e in store.events_after(session, job_id, after)]


def test_one_worker_claims_a_job_and_duplicates_do_nothing(database_url):
    job_id = new_job(database_url)
    assert claim(database_url, job_id, "w1") == ("claimed", 1)
    assert claim(database_url, job_id, "w2")[0] == "busy"  # a duplicate delivery
    job = row(database_url, job_id)
    assert (job.state, job.lease_owner, job.attempts) == (store.RUNNING, "w1", 1)
    assert job.started_at is not None and job.lease_expires_at is not None
    assert job.lease_expires_at > datetime.now(UTC)
    change(database_url, job_id, store.mark_finished)
    assert claim(database_url, job_id, "w2")[0] == "gone"
    assert claim(database_url, "no-such-job")[0] == "gone"
    assert row(database_url, job_id).lease_owner is None


def test_a_lost_lease_fences_off_its_old_worker(database_url):
    job_id = new_job(database_url)
    _, old_token = claim(database_url, job_id, "w1", lease_s=0.001)
    with store.session_scope(database_url) as session:  # w1 is presumed lost
        assert [j.id for j in store.expire_leases(session, max_lost=3)] == [job_id]
    _, new_token = claim(database_url, job_id, "w2")
    assert new_token == old_token + 1
    with store.session_scope(database_url) as session:
        assert not store.renew(session, job_id, old_token, 60)
        assert store.leased_job(session, job_id, old_token) is None
        assert store.renew(session, job_id, new_token, 60)
        assert store.leased_job(session, job_id, new_token) is not None
    job = row(database_url, job_id)
    assert (job.lease_owner, job.attempts, job.lost) == ("w2", 2, 1)


def test_expired_leases_requeue_until_the_cap_then_fail(database_url):
    job_id = new_job(database_url)
    for lost in range(1, 4):
        claim(database_url, job_id, lease_s=0.001)
        with store.session_scope(database_url) as session:
            requeued = store.expire_leases(session, max_lost=2)
        assert [j.id for j in requeued] == ([job_id] if lost <= 2 else [])
    job = row(database_url, job_id)
    assert job.state == store.FAILED and job.lost == 3
    assert job.error is not None and "worker was lost 3 times" in job.error
    assert f"/jobs/{job_id}/resume" in job.error


def test_live_leases_are_left_alone(database_url):
    job_id = new_job(database_url)
    claim(database_url, job_id, lease_s=3600)
    with store.session_scope(database_url) as session:
        assert store.expire_leases(session, max_lost=3) == []
        far = datetime.now(UTC) + timedelta(days=365)
        assert [j.id for j in store.expire_leases(session, max_lost=3, now=far)] == [job_id]


def test_cancel_a_queued_job_at_once_and_a_running_one_through_its_worker(database_url):
    queued, running = new_job(database_url), new_job(database_url)
    change(database_url, queued, store.cancel)
    assert row(database_url, queued).state == store.CANCELLED
    assert claim(database_url, queued)[0] == "gone"  # its message is dropped

    claim(database_url, running)
    change(database_url, running, store.cancel)
    assert row(database_url, running).state == store.CANCELLING
    change(database_url, running, store.cancel)  # again: no change
    change(database_url, running, store.mark_finished)  # the worker stopped
    job = row(database_url, running)
    assert (job.state, job.error, job.lease_owner) == (store.CANCELLED, None, None)


def test_finished_jobs_cannot_be_cancelled(database_url):
    job_id = new_job(database_url)
    claim(database_url, job_id)
    change(database_url, job_id, store.mark_finished)
    with pytest.raises(store.StateError, match="already succeeded"):
        change(database_url, job_id, store.cancel)


def test_a_lost_cancelling_job_ends_cancelled(database_url):
    job_id = new_job(database_url)
    claim(database_url, job_id, lease_s=0.001)
    change(database_url, job_id, store.cancel)
    with store.session_scope(database_url) as session:
        assert store.expire_leases(session, max_lost=3) == []
    assert row(database_url, job_id).state == store.CANCELLED


def test_resume_requeues_with_more_steps(database_url):
    job_id = new_job(database_url)
    claim(database_url, job_id)
    with store.session_scope(database_url) as session:
        job = found(session, job_id)
        store.record_progress(job, step=40, images_per_sec=640.0, d_loss=1.0, g_loss=1.0,
                              d_real=0.0, d_fake=0.0, checkpoint_step=40)  # fmt: skip
    with pytest.raises(store.StateError, match="has not ended"):
        change(database_url, job_id, store.resume)
    change(database_url, job_id, store.cancel)
    with pytest.raises(store.StateError, match="is stopping"):
        change(database_url, job_id, store.resume)
    change(database_url, job_id, store.mark_finished)
    with pytest.raises(ValueError, match="more than the 40 steps"):
        change(database_url, job_id, store.resume, 40)
    change(database_url, job_id, store.resume, 500)
    job = row(database_url, job_id)
    assert (job.state, job.total_steps, job.config["max_steps"]) == (store.QUEUED, 500, 500)
    assert (job.step, job.checkpoint_step, job.finished_at) == (40, 40, None)
    assert claim(database_url, job_id)[0] == "claimed"


def test_succeeded_jobs_resume_only_with_more_steps(database_url):
    job_id = new_job(database_url)
    claim(database_url, job_id)
    change(database_url, job_id, store.mark_finished)
    with pytest.raises(store.StateError, match="give a max_steps above 100"):
        change(database_url, job_id, store.resume)
    change(database_url, job_id, store.resume, 200)
    assert row(database_url, job_id).state == store.QUEUED


def test_resumed_while_the_old_worker_holds_the_lease_waits(database_url):
    job_id = new_job(database_url)
    _, token = claim(database_url, job_id, "w1")
    change(database_url, job_id, store.cancel)
    change(database_url, job_id, store.mark_finished)
    change(database_url, job_id, store.resume)
    with store.session_scope(database_url) as session:  # released: a new claim may go ahead
        assert store.leased_job(session, job_id, token) is None
    assert claim(database_url, job_id, "w2")[0] == "claimed"


def test_events_follow_states_progress_and_checkpoints(database_url):
    job_id = new_job(database_url)
    _, token = claim(database_url, job_id)
    with store.session_scope(database_url) as session:
        job = leased(session, job_id, token)
        for step, ckpt in ((10, None), (20, 20), (30, 20)):
            store.record_progress(job, step=step, images_per_sec=640.0, d_loss=1.0,
                                  g_loss=2.0, d_real=0.5, d_fake=-0.5,
                                  checkpoint_step=ckpt)  # fmt: skip
        store.mark_finished(job)
    seen = events(database_url, job_id)
    assert [kind for kind, _ in seen] == [
        "state", "state", "progress", "checkpoint", "progress", "progress", "state",
    ]  # fmt: skip
    assert [d["state"] for k, d in seen if k == "state"] == ["queued", "running", "succeeded"]
    progress = [d for k, d in seen if k == "progress"][-1]
    assert progress["step"] == 30 and progress["total_steps"] == 100
    assert progress["eta_seconds"] == pytest.approx(70 * 64 / 640.0)
    assert ("checkpoint", {"step": 20}) in seen
    with store.session_scope(database_url) as session:
        newest = store.last_event_id(session, job_id)
        assert store.events_after(session, job_id, newest) == []
        assert len(store.events_after(session, job_id, newest - 2)) == 2


def test_delete_removes_the_job_its_series_and_events(database_url):
    job_id, other = new_job(database_url), new_job(database_url)
    _, token = claim(database_url, job_id)
    with store.session_scope(database_url) as session:
        store.record_progress(leased(session, job_id, token), step=5,
                              images_per_sec=1.0, d_loss=1.0, g_loss=1.0, d_real=0.0,
                              d_fake=0.0, checkpoint_step=None)  # fmt: skip
    with store.session_scope(database_url) as session:
        store.delete_job(session, found(session, job_id))
    with store.session_scope(database_url) as session:
        assert store.get_job(session, job_id) is None
        assert store.events_after(session, job_id, 0) == []
        assert store.metric_points(session, job_id) == (0, [])
        assert len(store.events_after(session, other, 0)) == 1


def test_jobs_page_by_cursor_filter_by_state_and_owner(database_url):
    ids = [new_job(database_url) for _ in range(5)]
    change(database_url, ids[1], store.cancel)
    with store.session_scope(database_url) as session:
        mine = store.create_job(session, "classic", {"max_steps": 1}, owner="key-a").id
    with store.session_scope(database_url) as session:
        page = store.list_jobs(session, owner="", limit=2)
        assert [j.id for j in page] == [ids[4], ids[3]]
        last = page[-1]
        page = store.list_jobs(session, owner="", limit=2, before=(last.created_at, last.id))
        assert [j.id for j in page] == [ids[2], ids[1]]
        cancelled = store.list_jobs(session, owner="", states=[store.CANCELLED])
        assert [j.id for j in cancelled] == [ids[1]]
        assert [j.id for j in store.list_jobs(session, owner="key-a")] == [mine]
        assert store.get_job(session, mine, owner="") is None
        assert store.get_job(session, mine, owner="key-a") is not None


def test_idempotency_keys_are_per_owner(database_url):
    with store.session_scope(database_url) as session:
        a = store.create_job(session, "classic", {"max_steps": 1}, owner="key-a",
                             idempotency_key="k1", request_hash="h")  # fmt: skip
        b = store.create_job(session, "classic", {"max_steps": 1}, owner="key-b",
                             idempotency_key="k1", request_hash="h")  # fmt: skip
    with store.session_scope(database_url) as session:
        assert store.find_idempotent(session, "key-a", "k1") == found(session, a.id)
        assert store.find_idempotent(session, "key-b", "k1") == found(session, b.id)
        assert store.find_idempotent(session, "key-a", "k2") is None


def test_api_keys_are_stored_hashed(database_url):
    with store.session_scope(database_url) as session:
        assert not store.has_stored_keys(session)
        key, secret = store.create_api_key(session, "ci")
    with store.session_scope(database_url) as session:
        assert store.has_stored_keys(session)
        stored = store.list_api_keys(session)
        assert [k.name for k in stored] == ["ci"] and secret not in stored[0].key_hash
        assert store.stored_key_owner(session, store.hash_key(secret)) == key.id
        assert key.id == store.key_owner(store.hash_key(secret))
        assert store.stored_key_owner(session, store.hash_key(secret + "x")) is None
        assert store.revoke_api_key(session, key.id)
        assert not store.has_stored_keys(session)
