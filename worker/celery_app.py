"""The Celery application. Importing it never imports torch: the API uses it to enqueue.

Tasks are sent by name (``TRAIN_TASK``) so the sender needs none of the task's code.
"""

from __future__ import annotations

from functools import lru_cache

from celery import Celery

# Imported for its receiver of Celery's setup_logging signal: a worker logs as worker.logs says.
from worker import logs  # noqa: F401
from worker.broker import is_embedded
from worker.settings import Settings, get_settings

TRAIN_TASK = "gan.train_job"

# Redis redelivers a task that is unacknowledged after this long. Nothing depends on it: a lost
# worker's job is requeued by the reconciler once its lease expires (worker.reconcile), and a
# late redelivery finds the job taken or done (worker.store.leases.claim). It is long so that Redis
# does not redeliver the task of a job that is still training.
VISIBILITY_TIMEOUT_S = 7 * 24 * 3600


def make_celery(settings: Settings) -> Celery:
    app = Celery("gan", broker=settings.broker_url, include=["worker.tasks"])
    transport_options: dict[str, object] = {"visibility_timeout": VISIBILITY_TIMEOUT_S}
    if is_embedded(settings.broker_url):
        folder = settings.broker_dir.resolve()
        for sub in ("queue", "control"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        transport_options = {
            "data_folder_in": str(folder / "queue"),
            "data_folder_out": str(folder / "queue"),
            "control_folder": str(folder / "control"),
            # A listing of the queue folder every 0.1 s rather than every 1 s (kombu's default):
            # a job starts sooner, and a worker told to stop notices it sooner.
            "polling_interval": 0.1,
        }
    app.conf.update(
        broker_transport_options=transport_options,
        broker_connection_retry_on_startup=True,
        task_default_queue=settings.task_queue,
        task_ignore_result=True,  # results live in the job store, not a result backend
        task_acks_late=True,  # a task is acknowledged when it ends, so a lost worker's job returns
        task_reject_on_worker_lost=True,  # a task whose worker process died goes back
        worker_prefetch_multiplier=1,  # one job per worker process (one per GPU)
        worker_concurrency=1,
        worker_hijack_root_logger=False,  # worker.logs sets up the log lines
    )
    return app


@lru_cache
def celery_for(settings: Settings) -> Celery:
    """One Celery app per settings (the API's dependency; tests run several set-ups)."""
    return make_celery(settings)


app = celery_for(get_settings())
