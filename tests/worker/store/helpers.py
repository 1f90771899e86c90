"""Jobs taken through the store's own calls, as the API and the worker take them, and progress
reports as the trainer makes them."""

import math
from typing import Any

from gan.monitor import TrainWarning
from gan.progress import Progress
from worker.store import jobs, leases
from worker.store.db import session_scope
from worker.store.models import Job


def new_job(url, **fields) -> str:
    config = {"max_steps": 100, "batch_size": 64, "d_steps": 1, **fields}
    with session_scope(url) as session:
        return jobs.create_job(session, "classic", config).id


def claim(url, job_id, worker="w1", lease_s=60.0):
    with session_scope(url) as session:
        outcome, job = leases.claim(session, job_id, worker, lease_s)
        return outcome, job.lease_token if job is not None else None


def row(url, job_id) -> Job:
    with session_scope(url) as session:
        job = jobs.get_job(session, job_id)
        assert job is not None
        return job


def change(url, job_id, action, *args):
    with session_scope(url) as session:
        job = jobs.get_job(session, job_id)
        assert job is not None
        action(job, *args)


def leased(session, job_id, token) -> Job:
    job = leases.leased_job(session, job_id, token)
    assert job is not None
    return job


def found(session, job_id, owner=None) -> Job:
    job = jobs.get_job(session, job_id, owner)
    assert job is not None
    return job


def progress(step: int, **fields: Any) -> Progress:
    """The trainer's report of ``step``: ``fields`` over made-up values (warnings may be given as
    their dicts)."""
    made_up: dict[str, Any] = {
        "total_steps": 100, "images_per_sec": 640.0, "d_loss": 1.0, "g_loss": 1.0,
        "d_real": 0.0, "d_fake": 0.0, "d_grad_norm": math.nan, "g_grad_norm": math.nan,
        "checkpoint_step": None, "metrics": {}, "metrics_step": None, "best": None,
        "best_step": None,
    }  # fmt: skip
    warnings = tuple(TrainWarning(**w) for w in fields.pop("warnings", ()))
    return Progress(step=step, **{**made_up, **fields}, warnings=warnings)
