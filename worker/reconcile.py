"""The reconciler: makes the queue agree with the job store, which is the source of truth.

Each worker runs it in a thread, every ``reconcile_every_s`` seconds:

- a job whose worker was lost (killed, out of memory, partitioned: its lease expired) goes back
  to the queue and resumes from its newest checkpoint on the next free worker, or fails once its
  workers have been lost more than ``max_lost`` times (``worker.store.leases.expire_leases``);
- when the broker has lost its messages (Redis restarted without persistence, or flushed), every
  queued job is enqueued again. The sign of that is a sentinel key that the reconciler keeps in
  Redis: when it is missing, whatever was in Redis with it is gone too.

Enqueuing a job twice is harmless: the second delivery finds it taken or done and does nothing
(``worker.store.leases.claim``).
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime

import redis
from celery import Celery

from worker.broker import is_embedded, is_redis
from worker.celery_app import TRAIN_TASK
from worker.settings import Settings
from worker.store import leases
from worker.store.db import session_scope

log = logging.getLogger(__name__)


def sentinel_key(settings: Settings) -> str:
    return f"gan:sentinel:{settings.task_queue}"


def broker_lost_messages(settings: Settings) -> bool:
    """True when the broker lost its data since the last look (and the first time any
    reconciler looks at a Redis). Only Redis brokers; others keep their messages."""
    if not is_redis(settings.broker_url):
        return False
    client = redis.Redis.from_url(settings.broker_url, socket_timeout=5, socket_connect_timeout=5)
    try:
        return bool(client.set(sentinel_key(settings), "1", nx=True))
    finally:
        client.close()


class Reconciler:
    """One reconciler per worker process; ``run_once`` is one pass."""

    def __init__(self, settings: Settings, celery: Celery) -> None:
        self.settings, self.celery = settings, celery
        self._unsent: set[str] = set()  # jobs requeued in the store whose message did not go out

    def run_once(self, *, all_leases_dead: bool = False) -> list[str]:
        """Requeue lost workers' jobs (all leased jobs when ``all_leases_dead``: the embedded
        broker serves a single worker, so at its start-up no other worker lives), and every
        queued job when the broker lost its data. Returns the ids enqueued."""
        url = self.settings.database_url
        now = datetime.max.replace(tzinfo=UTC) if all_leases_dead else None
        with session_scope(url) as session:
            expired = leases.expire_leases(session, max_lost=self.settings.max_lost, now=now)
            lost = [job.id for job in expired]
        for job_id in lost:
            log.warning("job %s: its worker was lost; requeued", job_id)
        pending = lost + sorted(self._unsent)
        if broker_lost_messages(self.settings):
            with session_scope(url) as session:
                queued = leases.queued_job_ids(session)
            if queued:
                log.warning("the broker lost its messages: enqueuing %d queued jobs", len(queued))
            pending += queued
        sent = []
        for job_id in dict.fromkeys(pending):
            try:
                self.celery.send_task(TRAIN_TASK, args=[job_id], queue=self.settings.task_queue)
            except Exception as e:  # the broker is down: the next pass tries again
                log.warning("job %s: could not enqueue it: %s", job_id, e)
                self._unsent.add(job_id)
            else:
                self._unsent.discard(job_id)
                sent.append(job_id)
        return sent

    def run_forever(self, stop: threading.Event) -> None:
        """A pass every ``reconcile_every_s`` seconds until ``stop`` is set; a failed pass is
        logged and retried."""
        while not stop.wait(self.settings.reconcile_every_s):
            try:
                self.run_once()
            except Exception:
                log.exception("reconciler pass failed")

    def start(self) -> threading.Event:
        """A first pass now, before this worker takes any task, then ``run_forever`` in a
        daemon thread; set the returned event to stop it. With the embedded filesystem broker,
        which serves one worker, the first pass takes every leased job for lost."""
        try:
            self.run_once(all_leases_dead=is_embedded(self.settings.broker_url))
        except Exception:
            log.exception("reconciler pass failed")
        stop = threading.Event()
        thread = threading.Thread(target=self.run_forever, args=(stop,), daemon=True)
        thread.start()
        return stop
