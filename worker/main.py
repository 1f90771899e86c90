"""Starting a worker process: ``gan worker`` or ``python -m worker``."""

from __future__ import annotations

import logging

from celery import Celery
from sqlalchemy import select

from worker import store
from worker.celery_app import TRAIN_TASK, app
from worker.settings import Settings, get_settings

log = logging.getLogger(__name__)


def requeue_orphans(settings: Settings, celery: Celery) -> list[str]:
    """Re-enqueue jobs left ``running`` by a worker that died; they resume from their newest
    checkpoint. Only sound with the embedded filesystem broker, which serves one worker: there a
    running job at start-up has no live worker. (Redis redelivers unacknowledged tasks itself.)"""
    with store.session_scope(settings.database_url) as session:
        query = select(store.Job.id).where(store.Job.state == store.RUNNING)
        orphans = list(session.scalars(query))
    for job_id in orphans:
        celery.send_task(TRAIN_TASK, args=[job_id], queue=settings.task_queue)
        log.warning("job %s was left running by a dead worker: re-enqueued", job_id)
    return orphans


def run_worker(loglevel: str = "INFO") -> None:
    """Run a Celery worker in this process: one job at a time, no forking (CUDA-safe)."""
    settings = get_settings()
    if settings.broker_url.startswith("filesystem://"):
        requeue_orphans(settings, app)
    app.worker_main(
        [
            "worker",
            "--pool=solo",
            "--concurrency=1",
            f"--queues={settings.task_queue}",
            f"--loglevel={loglevel}",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ]
    )
