from datetime import UTC

from worker import store


def test_job_lifecycle_round_trips(database_url):
    with store.session_scope(database_url) as session:
        job_id = store.create_job(session, "classic", {"max_steps": 50, "lr_g": 2e-4}).id
    with store.session_scope(database_url) as session:
        queued = store.get_job(session, job_id)
        assert queued is not None and queued.state == store.QUEUED
        assert queued.total_steps == 50
        assert queued.created_at.tzinfo == UTC  # timestamps come back aware on every database
        store.mark_running(queued)
        store.record_progress(
            queued, step=10, images_per_sec=1e3, d_loss=1.2, g_loss=0.8, checkpoint_step=None
        )
    with store.session_scope(database_url) as session:
        running = store.get_job(session, job_id)
        assert running is not None
        assert (running.state, running.step, running.d_loss) == (store.RUNNING, 10, 1.2)
        assert running.config == {"max_steps": 50, "lr_g": 2e-4}
        store.mark_finished(running, error="disk full")
    with store.session_scope(database_url) as session:
        failed = store.get_job(session, job_id)
        assert failed is not None and failed.state == store.FAILED and failed.error == "disk full"
        assert failed.finished_at is not None and failed.finished_at >= failed.created_at


def test_list_is_newest_first(database_url):
    ids = []
    for n in range(3):
        with store.session_scope(database_url) as session:
            ids.append(store.create_job(session, "classic", {"max_steps": n + 1}).id)
    with store.session_scope(database_url) as session:
        assert [job.id for job in store.list_jobs(session)] == ids[::-1]
        assert store.get_job(session, "missing") is None
