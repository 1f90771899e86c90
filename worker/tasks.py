"""Celery tasks: thin wrappers that take a job id, call ``gan``, and report to the job store."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from celery.exceptions import Reject
from celery.signals import worker_shutting_down

from gan.checkpoint import CheckpointError
from gan.config import ConfigError, from_dict
from gan.data import DatasetError, load_dataset
from gan.evaluate import make_evaluator
from gan.judge import JudgeError
from gan.train import Progress, TrainingError, train
from worker import store
from worker.celery_app import TRAIN_TASK, app
from worker.settings import Settings, get_settings

log = logging.getLogger(__name__)

# Failures whose message already tells a person what went wrong.
EXPECTED_ERRORS = (
    ConfigError, DatasetError, TrainingError, CheckpointError, JudgeError, OSError,
)  # fmt: skip


# Set when the worker is asked to shut down (SIGTERM, Ctrl-C): the running job checkpoints at its
# next progress report and goes back on the queue, instead of holding the shutdown for hours.
_shutting_down = threading.Event()


@worker_shutting_down.connect
def _on_worker_shutting_down(**_: Any) -> None:
    _shutting_down.set()


@app.task(name=TRAIN_TASK)
def train_job(job_id: str) -> None:
    if _shutting_down.is_set():  # fetched during shutdown: leave it for the next worker
        raise Reject("worker shutting down", requeue=True)
    run_job(job_id, get_settings())


def run_job(job_id: str, settings: Settings) -> None:
    """Train job ``job_id`` to the end (resuming from its newest checkpoint) and record the
    outcome. A job that is unknown or already finished is left alone, so a redelivered task
    does no harm."""
    url = settings.database_url
    with store.session_scope(url) as session:
        job = store.get_job(session, job_id)
        if job is None or job.state in store.FINAL_STATES:
            log.warning("job %s: %s, nothing to do", job_id, job.state if job else "not found")
            return
        store.mark_running(job)
        config = job.config

    def progress(p: Progress) -> None:
        _update(
            url,
            job_id,
            lambda job: store.record_progress(
                job,
                step=p.step,
                images_per_sec=p.images_per_sec,
                d_loss=p.d_loss,
                g_loss=p.g_loss,
                d_real=p.d_real,
                d_fake=p.d_fake,
                checkpoint_step=p.checkpoint_step,
                metrics=p.metrics,
                metrics_step=p.metrics_step,
                best=p.best,
                best_step=p.best_step,
                warnings=[w.to_dict() for w in p.warnings],
            ),
        )
        log.info(
            "job %s: step %d/%d, %.0f images/s, D %.4f, G %.4f",
            job_id, p.step, p.total_steps, p.images_per_sec, p.d_loss, p.g_loss,
        )  # fmt: skip

    def should_stop() -> bool:
        """Stop when the worker shuts down, or the job is gone or finished by someone else."""
        if _shutting_down.is_set():
            return True
        with store.session_scope(url) as session:
            job = store.get_job(session, job_id)
            return job is None or job.state != store.RUNNING

    error: str | None = None
    stopped_at: int | None = None
    try:
        cfg = from_dict(config)
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
        result = train(
            cfg,
            dataset,
            settings.checkpoint_dir(job_id),
            progress=progress,
            should_stop=should_stop,
            evaluator=evaluator,
        )
        stopped_at = result.step if result.stopped else None
    except EXPECTED_ERRORS as e:
        error = str(e)
        log.error("job %s failed: %s", job_id, error)
    except Exception as e:  # anything else is a bug: keep the traceback in the worker's log
        error = f"internal error: {type(e).__name__}: {e}"
        log.exception("job %s failed", job_id)

    if stopped_at is not None:
        if _shutting_down.is_set():  # back on the queue; the next worker resumes it
            _update(url, job_id, store.mark_requeued)
            log.warning("job %s: worker shutting down at step %d; requeued", job_id, stopped_at)
            raise Reject("worker shutting down", requeue=True)
        return

    _update(url, job_id, lambda job: store.mark_finished(job, error=error))
    log.info("job %s %s", job_id, "failed" if error else "succeeded")


def _update(url: str, job_id: str, change: Callable[[store.Job], None]) -> None:
    """Apply ``change`` to the job's row, if it still exists, and commit."""
    with store.session_scope(url) as session:
        job = store.get_job(session, job_id)
        if job is not None:
            change(job)
