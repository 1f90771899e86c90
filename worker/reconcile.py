"""The reconciler: makes the queue agree with the job store, which is the source of truth.

Each worker runs it in a thread, every ``reconcile_every_s`` seconds:

- a job whose worker was lost (killed, out of memory, partitioned: its lease expired) goes back
  to the queue and resumes from its newest checkpoint on the next free worker, or fails once its
  workers have been lost more than ``max_lost`` times (``worker.store.leases.expire_leases``);
- every job the store says is queued gets a message again when none waits for it in the
  broker's queue and none was sent for ``resend_after_s`` seconds (not when it was queued, nor by
  this reconciler since). So a message lost anywhere between the store and the broker (an API
  that died between the two, a claim that failed and was not retried, Redis down or restarted)
  is replaced within ``resend_after_s`` + ``reconcile_every_s``. The wait leaves time for a
  message on its way, or held by a worker that retries its claim while the store is down. The
  queue is read on Redis (its list) and on the embedded broker (its folder); with another
  broker such a job is sent again every ``resend_after_s``;
- when Redis has lost its data (restarted without persistence, or flushed), every queued job is
  enqueued again at once. The sign of that is a sentinel key that the reconciler keeps in Redis:
  when it is missing, whatever was in Redis with it is gone too;
- a send that failed (the broker is down) is tried again at every pass until it goes out.

While the store is unreachable no worker can renew its lease either, and a live one renews it
within a second of the store's return (``worker.tasks.Lease``). So after a pass that could not
reach the store, the reconciler expires no lease for ``lease_s`` seconds: an outage longer than
a lease does not count the workers that trained through it as lost.

Enqueuing a job twice is harmless: the second delivery finds it taken or done and does nothing
(``worker.store.leases.claim``).
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import redis
from celery import Celery

from gan.errors import first_line
from worker.broker import is_embedded, is_redis
from worker.celery_app import TRAIN_TASK
from worker.settings import Settings
from worker.store import leases
from worker.store.db import UNAVAILABLE, session_scope

log = logging.getLogger(__name__)


def sentinel_key(settings: Settings) -> str:
    return f"gan:sentinel:{settings.task_queue}"


@contextmanager
def redis_client(settings: Settings) -> Iterator[redis.Redis]:
    """A connection to the Redis broker, closed afterwards; its commands raise after 5 s."""
    client = redis.Redis.from_url(settings.broker_url, socket_timeout=5, socket_connect_timeout=5)
    try:
        yield client
    finally:
        client.close()


def broker_lost_messages(settings: Settings) -> bool:
    """True when the broker lost its data since the last look (and the first time any
    reconciler looks at a Redis). Only Redis brokers; others keep their messages."""
    if not is_redis(settings.broker_url):
        return False
    with redis_client(settings) as client:
        return bool(client.set(sentinel_key(settings), "1", nx=True))


def waiting_job_ids(settings: Settings) -> set[str] | None:
    """The jobs whose messages wait in the broker's queue (not those a worker has taken), or
    None when this kind of broker cannot be read (neither Redis nor the embedded one)."""
    queue = settings.task_queue
    if is_redis(settings.broker_url):  # kombu keeps a queue as a list under its name
        with redis_client(settings) as client:
            messages: list[bytes] = client.lrange(queue, 0, -1)  # type: ignore[assignment]
    elif is_embedded(settings.broker_url):  # a file a message: <ms>_<uuid>.<queue>.msg
        messages = []
        for path in (settings.broker_dir / "queue").glob(f"*.{queue}.msg"):
            try:
                messages.append(path.read_bytes())
            except FileNotFoundError:  # taken by a worker meanwhile
                continue
    else:
        return None
    return {job_id for job_id in map(job_of_message, messages) if job_id is not None}


def job_of_message(raw: bytes) -> str | None:
    """The job id in a message of ``TRAIN_TASK`` as kombu keeps it: a JSON envelope whose
    ``body`` is Celery's (args, kwargs, embed), base64-encoded; None for anything else."""
    try:
        message = json.loads(raw)
        if message["headers"]["task"] != TRAIN_TASK:
            return None
        body = message["body"]
        if message["properties"].get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args = json.loads(body)[0]
        return str(args[0])
    except (ValueError, KeyError, IndexError, TypeError):
        return None


class Reconciler:
    """One reconciler per worker process; ``run_once`` is one pass."""

    def __init__(self, settings: Settings, celery: Celery) -> None:
        self.settings, self.celery = settings, celery
        self._unsent: set[str] = set()  # jobs to enqueue whose message did not go out
        self._sent_at: dict[str, float] = {}  # queued job → when this reconciler last sent it
        self._no_expiry_until = 0.0  # time.monotonic(): the store was unreachable before

    def run_once(self, *, all_leases_dead: bool = False) -> list[str]:
        """Requeue lost workers' jobs (all leased jobs when ``all_leases_dead``: the embedded
        broker serves a single worker, so at its start-up no other worker lives), and enqueue
        every queued job whose message is missing. Returns the ids enqueued."""
        try:
            lost = self._expire_leases(all_leases_dead)
            with session_scope(self.settings.database_url) as session:
                queued = leases.queued_jobs(session)
        except UNAVAILABLE:
            self._no_expiry_until = time.monotonic() + self.settings.lease_s
            raise
        self._unsent.update(lost)  # kept until sent, whatever fails below
        self._sent_at = {job_id: self._sent_at.get(job_id, 0.0) for job_id, _ in queued}
        try:
            missing = self._missing(queued)
        except Exception as e:  # the broker is down: send what must be sent, or keep it
            log.warning("could not read the broker's queue: %s", e)
            missing = []
        return self._send([*lost, *sorted(self._unsent), *missing])

    def _expire_leases(self, all_leases_dead: bool) -> list[str]:
        if time.monotonic() < self._no_expiry_until:
            return []  # the workers may not have renewed their leases since the store came back
        now = datetime.max.replace(tzinfo=UTC) if all_leases_dead else None
        with session_scope(self.settings.database_url) as session:
            expired = leases.expire_leases(session, max_lost=self.settings.max_lost, now=now)
            lost = [job.id for job in expired]
        for job_id in lost:
            log.warning("job %s: its worker was lost; requeued", job_id)
        return lost

    def _missing(self, queued: list[tuple[str, datetime]]) -> list[str]:
        """The queued jobs that have no message: all of them when Redis lost its data, else
        those absent from the broker's queue and not (re)sent for ``resend_after_s``."""
        if broker_lost_messages(self.settings):
            if queued:
                log.warning("the broker lost its messages: enqueuing %d queued jobs", len(queued))
            return [job_id for job_id, _ in queued]
        waiting = waiting_job_ids(self.settings) or set()
        before = time.time() - self.settings.resend_after_s
        missing = []
        for job_id, since in queued:
            if job_id in waiting or max(since.timestamp(), self._sent_at[job_id]) > before:
                continue
            log.warning("job %s: queued with no message in the broker; enqueuing it", job_id)
            missing.append(job_id)
        return missing

    def _send(self, job_ids: list[str]) -> list[str]:
        sent = []
        for job_id in dict.fromkeys(job_ids):
            try:
                self.celery.send_task(TRAIN_TASK, args=[job_id], queue=self.settings.task_queue)
            except Exception as e:  # the broker is down: the next pass tries again
                log.warning("job %s: could not enqueue it: %s", job_id, e)
                self._unsent.add(job_id)
            else:
                self._unsent.discard(job_id)
                self._sent_at[job_id] = time.time()
                sent.append(job_id)
        return sent

    def run_forever(self, stop: threading.Event) -> None:
        """A pass every ``reconcile_every_s`` seconds until ``stop`` is set; a failed pass is
        logged and retried."""
        while not stop.wait(self.settings.reconcile_every_s):
            self._pass()

    def _pass(self, *, all_leases_dead: bool = False) -> None:
        try:
            self.run_once(all_leases_dead=all_leases_dead)
        except UNAVAILABLE as e:
            log.warning("reconciler pass failed: the job store is unreachable: %s", first_line(e))
        except Exception:
            log.exception("reconciler pass failed")

    def start(self, *, alone: bool = True) -> threading.Event:
        """A first pass now, before this worker takes any task, then ``run_forever`` in a
        daemon thread; set the returned event to stop it. With the embedded filesystem broker,
        which serves one worker, the first pass of a worker ``alone`` takes every leased job
        for lost (a slot of `gan worker` is not alone: its supervisor did that before starting
        the slots, ``worker.supervisor.requeue_orphans``)."""
        self._pass(all_leases_dead=alone and is_embedded(self.settings.broker_url))
        stop = threading.Event()
        thread = threading.Thread(target=self.run_forever, args=(stop,), daemon=True)
        thread.start()
        return stop
