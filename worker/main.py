"""Starting a worker process: ``gan worker`` or ``python -m worker``."""

from __future__ import annotations

import logging

from worker.artifacts import ArtifactStoreError
from worker.celery_app import app
from worker.reconcile import Reconciler
from worker.settings import Settings, get_settings

log = logging.getLogger(__name__)


def check_artifacts(settings: Settings, who: str) -> bool:
    """Log, at start-up, the artifact store and whether it can be used (the job it cannot
    write to fails with the same reason, and /readyz says it too)."""
    store = settings.artifacts()
    try:
        store.check()
    except ArtifactStoreError as e:
        log.error("%s: the artifact store cannot be used: %s", who, e)
        return False
    log.info("%s: artifacts in %s", who, store.url if store.remote else store.folder.absolute())
    return True


def run_worker(loglevel: str = "INFO") -> None:
    """Run a Celery worker in this process, one job at a time, no forking (CUDA-safe), with the
    reconciler in a thread beside it."""
    settings = get_settings()
    check_artifacts(settings, "worker")
    stop = Reconciler(settings, app).start()
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
