"""Starting a worker process: one training slot (``worker.slot``), run by `gan worker`'s
supervisor (``worker.supervisor``) or alone (``python -m worker``)."""

from __future__ import annotations

import gc
import logging

from worker.artifacts import check_store
from worker.celery_app import app
from worker.reconcile import Reconciler
from worker.settings import get_settings, lower_priority
from worker.slot import SlotBeat, apply_limits, get_slot_settings
from worker.tasks import worker_id
from worker.webhooks import Dispatcher

log = logging.getLogger(__name__)


def run_worker(loglevel: str = "INFO") -> None:
    """Run a Celery worker in this process, one job at a time, no forking (CUDA-safe), with the
    reconciler, the slot's heartbeat and the webhook dispatcher in threads beside it, all at
    ``worker_nice`` below the priority it was started with."""
    settings, slot = get_settings(), get_slot_settings()
    lower_priority(settings.worker_nice)  # before any thread starts: they all inherit it
    check_store(settings.artifacts(), "worker")
    apply_limits(slot)
    stop = Reconciler(settings, app).start(alone=not slot.worker)
    beat = SlotBeat(settings, slot).start()
    stop_webhooks = Dispatcher(settings).start()
    # What is loaded by now (torch, Celery, SQLAlchemy) lives as long as the process: out of the
    # collector's sight (gc.freeze), the exit has a second less to tear down (1.6 s → 0.6 s here,
    # measured by importing worker.main, building an optimizer and exiting).
    gc.freeze()
    try:
        app.worker_main(
            [
                "worker",
                "--pool=solo",
                "--concurrency=1",
                f"--queues={settings.task_queue}",
                f"--loglevel={loglevel}",
                # A node name of its own, so that `celery inspect` tells the slots apart.
                f"--hostname=slot{slot.index}-{worker_id().rpartition('/')[2]}@%h",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
            ]
        )
    finally:
        beat.stop()
        stop.set()
        stop_webhooks.set()
