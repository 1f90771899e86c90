"""Starting a worker process: ``gan worker`` or ``python -m worker``."""

from __future__ import annotations

import logging

from worker.celery_app import app
from worker.reconcile import Reconciler
from worker.settings import get_settings
from worker.webhooks import Dispatcher

log = logging.getLogger(__name__)


def run_worker(loglevel: str = "INFO") -> None:
    """Run a Celery worker in this process, one job at a time, no forking (CUDA-safe), with the
    reconciler and the webhook dispatcher in threads beside it."""
    settings = get_settings()
    stop = Reconciler(settings, app).start()
    stop_webhooks = Dispatcher(settings).start()
    try:
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
    finally:
        stop.set()
        stop_webhooks.set()
