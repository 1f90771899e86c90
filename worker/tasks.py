"""Celery tasks: thin wrappers that take a job id, call ``gan``, and report to the job store.

A task trains its job only while it holds the job's lease (``worker.store.leases.claim``): a
duplicate or stale delivery finds the job taken or finished and does nothing. Every write presents
the lease's fencing token, so a worker that lost its lease can never overwrite the job.
"""

from __future__ import annotations

import gc
import logging
import os
import re
import shutil
import signal
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from types import TracebackType
from typing import Any, TypeVar

import torch
from celery import Task
from celery.exceptions import Reject
from celery.signals import worker_shutting_down
from sqlalchemy.exc import SQLAlchemyError

from gan.checkpoint import CheckpointError, WriteRefused
from gan.config import ConfigError, from_dict
from gan.data import DatasetError, load_dataset
from gan.errors import first_line
from gan.evaluate import make_evaluator
from gan.judge import JudgeError
from gan.progress import Progress
from gan.train import StoppedBeforeFirstStep, TrainingError, train
from worker import staging, tensorboard
from worker.artifacts import ArtifactStoreError, job_key
from worker.celery_app import TRAIN_TASK, app
from worker.logs import job_context
from worker.settings import Settings, get_settings
from worker.store import jobs, leases, series
from worker.store.db import UNAVAILABLE, session_scope
from worker.store.models import Job
from worker.store.states import CANCELLING, LEASED_STATES, RUNNING

log = logging.getLogger(__name__)

# Failures whose message already tells a person what went wrong.
EXPECTED_ERRORS = (
    ConfigError, DatasetError, TrainingError, CheckpointError, JudgeError, OSError,
)  # fmt: skip

# Words of the allocators' errors that mean the memory ran out (torch's CPU allocator raises a
# plain RuntimeError, "DefaultCPUAllocator: can't allocate memory: you tried to allocate …").
OUT_OF_MEMORY_SIGNS = ("out of memory", "can't allocate memory", "not enough memory")
ENFORCE_PREFIX = re.compile(r"^\[enforce fail at [^\]]*\][^.]*\.\s*")  # c10's, before the news

# Seconds before a task retries a job that was resumed while its previous worker still stops.
WAIT_RETRY_S = 5.0
# Most seconds before a task retries a claim that failed on an unreachable store (it waits 1, 2,
# 4, … seconds, up to this): the message goes back to the broker instead of being consumed.
CLAIM_RETRY_MAX_S = 30.0
# Seconds between tries to reach an unreachable store (lease renewals, recording a job's end).
STORE_RETRY_EVERY_S = 1.0
# Seconds between the lease thread's reads of the job's state: a cancel, a delete or a lost
# lease is noticed within this (plus a layer of a slow step, or a step shorter than
# gan.interrupt.SLOW_STEP_S), whatever the job's log_every and step time.
WATCH_EVERY_S = 1.0
# Progress reports kept while the store is unreachable, recorded in order once it is back; past
# this many the oldest leave the time series (the newest report is always kept).
MAX_UNWRITTEN_REPORTS = 10_000

T = TypeVar("T")

# Set when the worker is asked to shut down (SIGTERM, Ctrl-C): the running job stops within its
# step under way (gan.interrupt), checkpoints its last step that ended and goes back on the queue,
# instead of holding the shutdown for hours.
_shutting_down = threading.Event()


@worker_shutting_down.connect
def _on_worker_shutting_down(**_: Any) -> None:
    _shutting_down.set()


def worker_id() -> str:
    """Who holds a lease, for people reading the job store: host and process id."""
    return f"{socket.gethostname()}/{os.getpid()}"


@app.task(name=TRAIN_TASK, bind=True, max_retries=None)
def train_job(self: Task, job_id: str) -> None:
    if _shutting_down.is_set():  # fetched during shutdown: leave it for the next worker
        raise Reject("worker shutting down", requeue=True)
    outcome = run_job(job_id, get_settings())
    if outcome == "wait":
        raise self.retry(countdown=WAIT_RETRY_S)
    if outcome == "unavailable":  # re-sent to the broker, later: the message is not consumed
        raise self.retry(countdown=claim_retry_s(self.request.retries))


def claim_retry_s(retries: int) -> float:
    """Seconds before the next try of a claim that has failed ``retries`` times: 1, 2, 4, …, at
    most ``CLAIM_RETRY_MAX_S``, so that a worker does not spin through its queue while the store
    is down."""
    return min(CLAIM_RETRY_MAX_S, 2.0 ** min(retries, 16))


class Lease:
    """The lease of a job this worker trains: renewed from a thread every third of its length
    (every second while the store is unreachable), and by every write (``write``). ``lost`` is
    set once it is no longer ours: the job was deleted, or another worker took it after
    presuming this one dead. Between renewals the same thread reads the job's state every
    ``WATCH_EVERY_S`` and sets ``leaving`` once it is no longer running (cancelled): the
    trainer's ``should_stop`` reads these flags after every step and inside slow ones (at
    every layer: ``gan.interrupt``), for nothing.

    The store may be unreachable for a while (PostgreSQL restarting): progress reports then
    wait in memory (``report``) and go in, in order, with the next write that succeeds, and
    ``until_stored`` retries what must be recorded (the job's end) until the store is back.
    """

    def __init__(self, settings: Settings, job_id: str, token: int) -> None:
        self.url, self.job_id, self.token = settings.database_url, job_id, token
        self.lease_s, self.store_retry_s = settings.lease_s, settings.store_retry_s
        self.lost = threading.Event()
        self.leaving = threading.Event()  # the job is no longer running (a cancel)
        # When this worker last tried to renew, and whether it has been paused (stopped, or
        # starved) for longer than a lease since it last renewed: see ``may_write``.
        self._tried_at, self._paused = time.monotonic(), False
        self._unwritten: deque[Progress] = deque(maxlen=MAX_UNWRITTEN_REPORTS)
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"lease-{job_id}", daemon=True)

    def __enter__(self) -> Lease:
        self._thread.start()
        return self

    def __exit__(self, *_: type[BaseException] | BaseException | TracebackType | None) -> None:
        self._done.set()
        self._thread.join()

    def _beat(self) -> None:
        every = self.lease_s / 3
        renew_at, failing = time.monotonic() + every, False
        while not self._done.wait(min(WATCH_EVERY_S, every)):
            try:
                if failing or time.monotonic() >= renew_at:
                    if not self._renew():
                        return
                    renew_at = time.monotonic() + every
                if not self._watch():
                    return
            except SQLAlchemyError as e:  # the store is down: keep training, keep trying
                if not failing:
                    log.warning("job %s: could not renew the lease: %s", self.job_id, e)
                failing = True  # renew every second: the lease runs out meanwhile
                continue
            if failing:
                log.info("job %s: lease renewed; the job store is back", self.job_id)
            failing = False

    def _watch(self) -> bool:
        """Read the job's state: set ``lost`` (and return False) when the lease is no longer
        ours, ``leaving`` when the job is no longer running."""
        state = self.state()
        if state is None:
            self.lost.set()
            return False
        if state != RUNNING:
            self.leaving.set()
        return True

    def _renew(self) -> bool:
        """Renew the lease in the store; False (and ``lost`` set) when it is no longer ours."""
        now = time.monotonic()
        if now - self._tried_at > self.lease_s:
            self._paused = True  # long enough for the lease to expire and another to take it
        self._tried_at = now
        with session_scope(self.url) as session:
            renewed = leases.renew(session, self.job_id, self.token, self.lease_s)
        if not renewed:
            self.lost.set()
        self._paused = self._paused and not renewed
        return renewed

    def may_write(self) -> bool:
        """Whether this worker may still publish a file into the job's folder (a checkpoint,
        asked just before its rename): the store renews the lease now. When the store cannot
        be reached, yes unless this worker was paused longer than a lease since its last
        renewal (as a SIGSTOPped or frozen one is): no other worker can have taken the job
        while the store was down for all, but one may have while this one was away."""
        if self.lost.is_set():
            return False
        try:
            return self._renew()
        except SQLAlchemyError as e:
            log.warning("job %s: could not check the lease before a write: %s", self.job_id, e)
            return not self._paused

    def report(self, progress: Progress) -> None:
        """Record a progress report, after those still waiting; while the store is unreachable,
        keep it for the next write (the trainer goes on meanwhile)."""
        self._unwritten.append(progress)
        try:
            self.write(lambda job: None)
        except UNAVAILABLE as e:
            log.warning(
                "job %s: could not record step %d (%d reports wait for the store): %s",
                self.job_id, progress.step, len(self._unwritten), first_line(e),
            )  # fmt: skip

    def write(self, change: Callable[[Job], object]) -> bool:
        """Record the progress reports that wait (``report``), apply ``change`` to the job and
        renew the lease, in one transaction, if the lease is still ours. Raises the store's
        errors (``UNAVAILABLE`` when it cannot be reached)."""
        with session_scope(self.url) as session:
            job = leases.leased_job(session, self.job_id, self.token)
            if job is None:
                self.lost.set()
                return False
            for progress in self._unwritten:
                series.record_progress(job, progress)
            change(job)
            if job.state in LEASED_STATES:
                leases.renew(session, self.job_id, self.token, self.lease_s)
        self._unwritten.clear()
        return True

    def until_stored(self, call: Callable[[], T]) -> T:
        """``call()``, tried again every second while the store is unreachable, for up to
        ``store_retry_s`` seconds (then the store's error is raised)."""
        deadline = time.monotonic() + self.store_retry_s
        failed = False
        while True:
            try:
                result = call()
            except UNAVAILABLE as e:
                if time.monotonic() >= deadline:
                    raise
                if not failed:
                    log.warning("job %s: the job store is unreachable, retrying: %s",
                                self.job_id, first_line(e))  # fmt: skip
                failed = True
                time.sleep(STORE_RETRY_EVERY_S)
                continue
            if failed:
                log.info("job %s: the job store is back", self.job_id)
            return result

    def state(self) -> str | None:
        """The job's state while the lease is ours, else None."""
        with session_scope(self.url) as session:
            job = leases.leased_job(session, self.job_id, self.token)
            return job.state if job is not None else None


def run_job(job_id: str, settings: Settings) -> str:
    """Train job ``job_id`` to the end (resuming from its newest checkpoint) and record the
    outcome, if this worker can claim it. Returns ``leases.claim``'s outcome: "claimed"
    when it trained the job; "gone", "busy" or "wait" when it did nothing; or "unavailable"
    when the store could not be reached to claim it. Every line it logs carries the job id."""
    with job_context(job_id):
        return _claim_and_train(job_id, settings)


def _claim_and_train(job_id: str, settings: Settings) -> str:
    try:
        with session_scope(settings.database_url) as session:
            outcome, job = leases.claim(session, job_id, worker_id(), settings.lease_s)
            if outcome != "claimed" or job is None:
                state = job.state if job is not None else "not found"
                log.warning("job %s: %s (%s), not training it here", job_id, outcome, state)
                return outcome
            token, config, checkpoint_step = job.lease_token, job.config, job.checkpoint_step
    except UNAVAILABLE as e:
        log.warning("job %s: the job store is unreachable; will try again: %s",
                    job_id, first_line(e))  # fmt: skip
        return "unavailable"
    with Lease(settings, job_id, token) as lease:
        _train(job_id, config, settings, lease, checkpoint_step)
    return outcome


def _train(
    job_id: str,
    config: dict[str, Any],
    settings: Settings,
    lease: Lease,
    checkpoint_step: int | None = None,
) -> None:
    def progress(p: Progress) -> None:
        lease.report(p)  # kept for later while the store is unreachable
        log.info(
            "job %s: step %d/%d, %.0f images/s, D %.4f, G %.4f",
            job_id, p.step, p.total_steps, p.images_per_sec, p.d_loss, p.g_loss,
        )  # fmt: skip
        tensorboard.record(settings, job_id, p)  # GAN_TENSORBOARD: event files; never raises

    def should_stop() -> bool:
        """Stop when the worker shuts down, the job is cancelled or deleted, or the lease is
        lost: flags, read after every step and at every layer of a slow one (the lease's
        thread watches the store)."""
        return _shutting_down.is_set() or lease.lost.is_set() or lease.leaving.is_set()

    error: str | None = None
    stopped = broken = False
    try:
        cfg = from_dict(config)
        staging.stage(settings, job_id, cfg, checkpoint_step)  # an object store's files, here
        dataset = load_dataset(
            cfg.dataset,
            settings.data_dir,
            uploads_dir=settings.datasets_dir,
            image_size=cfg.image_size,
        )
        evaluator = None
        if cfg.eval_every > 0:  # the judge is trained once per artifacts folder, then cached
            evaluator = make_evaluator(
                dataset,
                data_dir=settings.data_dir,
                cache_dir=settings.judges_dir,
                samples=cfg.eval_samples,
                seed=cfg.seed,
            )
            staging.publish_judges(settings)
        result = train(
            cfg,
            dataset,
            settings.checkpoint_dir(job_id),
            progress=progress,
            should_stop=should_stop,
            evaluator=evaluator,
            may_write=lease.may_write,
            mirror=staging.mirror(settings, job_id),
        )
        stopped = result.stopped
    except StoppedBeforeFirstStep:  # in the first step of its first run: nothing to keep
        stopped = True
    except WriteRefused as e:  # the lease went to another worker: stop, publish nothing
        log.warning("job %s: %s (its lease is no longer this worker's)", job_id, e)
        stopped = True
    except Exception as e:
        error = failure_reason(e)
        if error.startswith("internal error"):  # a bug: keep the traceback in the worker's log
            log.exception("job %s failed", job_id)
        else:
            log.error("job %s failed: %s", job_id, error)
        broken = is_device_error(e)
    if error is not None:
        release_memory()  # what the failed run held, before the next job
    _record_end(job_id, settings, lease, stopped=stopped, error=error)
    if error is not None and broken:  # the CUDA context may be unusable: a fresh process
        log.error("a device error: stopping this worker (its supervisor starts a new one)")
        os.kill(os.getpid(), signal.SIGTERM)  # a warm stop, once this task has returned


def _record_end(
    job_id: str, settings: Settings, lease: Lease, *, stopped: bool, error: str | None
) -> None:
    """Record how the run ended: finished (succeeded, failed, or cancelled when asked to stop),
    requeued when the worker shuts down, or let go when the lease was lost. Each is retried
    while the store is unreachable (``Lease.until_stored``), so an outage never fails a job."""
    finish = not stopped or lease.until_stored(lease.state) == CANCELLING
    if finish and lease.until_stored(
        lambda: lease.write(lambda job: leases.mark_finished(job, error=error))
    ):
        outcome = "cancelled" if stopped else "failed" if error else "succeeded"
        log.info("job %s %s", job_id, outcome)
        return
    if _shutting_down.is_set() and lease.until_stored(lambda: lease.write(leases.mark_requeued)):
        log.warning("job %s: worker shutting down; checkpointed and requeued", job_id)
        raise Reject("worker shutting down", requeue=True)
    lease.until_stored(lambda: _let_go(job_id, settings))


def failure_reason(error: Exception) -> str:
    """Why a job failed, for a person: the message of an expected error (bad data, config,
    checkpoint, disk), out of memory (with what to change), or an internal error (a bug)."""
    if isinstance(error, EXPECTED_ERRORS):
        return str(error)
    if is_out_of_memory(error):
        what = ENFORCE_PREFIX.sub("", first_line(error))  # "[enforce fail at x.cpp:1] err == 0."
        return (
            f"out of memory: {what}; try a smaller batch_size or width (or image_size, "
            "eval_samples), or a device with more memory"
        )
    return f"internal error: {type(error).__name__}: {error}"


def is_out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` is an allocation that failed: Python's MemoryError, torch's
    OutOfMemoryError (CUDA, MPS), or the CPU allocator's RuntimeError."""
    if isinstance(error, MemoryError | torch.OutOfMemoryError):
        return True
    return isinstance(error, RuntimeError) and any(
        sign in str(error).lower() for sign in OUT_OF_MEMORY_SIGNS
    )


def is_device_error(error: BaseException) -> bool:
    """Whether ``error`` came from the GPU itself (an illegal address, a launch failure): the
    process's CUDA context may be broken for every later job, so the slot is replaced."""
    return isinstance(error, torch.AcceleratorError) or (
        isinstance(error, RuntimeError) and "CUDA error" in str(error)
    )


def release_memory() -> None:
    """Give back what a failed job held: its tensors are garbage once its frames are gone; the
    CUDA caching allocator keeps freed blocks until told (never initialises CUDA itself)."""
    gc.collect()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def _let_go(job_id: str, settings: Settings) -> None:
    """The job was deleted, or another worker took it over: leave it, removing the files of a
    deleted job (this worker may have written a checkpoint after the API removed them)."""
    with session_scope(settings.database_url) as session:
        if jobs.get_job(session, job_id) is not None:
            log.warning("job %s: its lease went to another worker; stopped here", job_id)
            return
    shutil.rmtree(settings.job_dir(job_id), ignore_errors=True)
    try:
        settings.artifacts().delete_prefix(job_key(job_id))
    except ArtifactStoreError as e:
        log.warning("job %s was deleted, but its files could not all be removed: %s", job_id, e)
        return
    log.info("job %s was deleted; stopped and removed its files", job_id)
