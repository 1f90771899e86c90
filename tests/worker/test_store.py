from datetime import UTC

from worker import store


def test_job_lifecycle_round_trips(database_url):
    with store.session_scope(database_url) as session:
        job = store.create_job(session, "classic", {"max_steps": 50, "lr_g": 2e-4})
        job_id = job.id
    with store.session_scope(database_url) as session:
        job = store.get_job(session, job_id)
        assert job is not None and job.state == store.QUEUED and job.total_steps == 50
        assert job.created_at.tzinfo == UTC  # timestamps come back aware on every database
        store.mark_running(job)
        store.record_progress(
            job, step=10, images_per_sec=1e3, d_loss=1.2, g_loss=0.8, checkpoint_step=None
        )
    with store.session_scope(database_url) as session:
        job = store.get_job(session, job_id)
        assert job is not None
        assert (job.state, job.step, job.d_loss) == (store.RUNNING, 10, 1.2)
        assert job.config == {"max_steps": 50, "lr_g": 2e-4}
        store.mark_finished(job, error="disk full")
    with store.session_scope(database_url) as session:
        job = store.get_job(session, job_id)
        assert job is not None and job.state == store.FAILED and job.error == "disk full"
        assert job.finished_at is not None and job.finished_at >= job.created_at


def test_list_is_newest_first(database_url):
    ids = []
    for n in range(3):
        with store.session_scope(database_url) as session:
            ids.append(store.create_job(session, "classic", {"max_steps": n + 1}).id)
    with store.session_scope(database_url) as session:
        assert [job.id for job in store.list_jobs(session)] == ids[::-1]
        assert store.get_job(session, "missing") is None
