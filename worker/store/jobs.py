"""What clients do to jobs: create, find and list them, cancel, resume and delete them."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from worker.store.events import add_state_event
from worker.store.leases import release
from worker.store.models import Job, utcnow
from worker.store.states import CANCELLED, CANCELLING, FAILED, QUEUED, RUNNING, SUCCEEDED


class StateError(ValueError):
    """The job's state does not allow that change; the message says why, for a person."""


def create_job(
    session: Session,
    preset: str,
    config: dict[str, Any],
    *,
    owner: str = "",
    idempotency_key: str | None = None,
    request_hash: str | None = None,
    sweep_id: str | None = None,
) -> Job:
    now = utcnow()
    job = Job(
        id=str(uuid.uuid4()),
        state=QUEUED,
        owner=owner,
        idempotency_key=idempotency_key,
        request_hash=request_hash,
        preset=preset,
        config=config,
        created_at=now,
        updated_at=now,
        step=0,
        total_steps=config["max_steps"],
        warnings=[],
        lease_token=0,
        attempts=0,
        lost=0,
        sweep_id=sweep_id,
    )
    session.add(job)
    session.flush()
    add_state_event(job)
    return job


def get_job(session: Session, job_id: str, owner: str | None = None) -> Job | None:
    """The job, or None when there is none, or it belongs to another owner than ``owner``
    (None: any owner)."""
    job = session.get(Job, job_id)
    return job if job is not None and (owner is None or job.owner == owner) else None


def find_idempotent(session: Session, owner: str, idempotency_key: str) -> Job | None:
    """The job ``owner`` created with this Idempotency-Key, if any."""
    query = select(Job).where(Job.owner == owner, Job.idempotency_key == idempotency_key)
    return session.scalars(query).one_or_none()


def list_jobs(
    session: Session,
    *,
    owner: str | None = None,
    states: Sequence[str] = (),
    before: tuple[datetime, str] | None = None,
    limit: int = 100,
) -> list[Job]:
    """Newest first: ``owner``'s jobs (None: everyone's) in ``states`` (empty: any), created
    before ``before`` = (created_at, id) of the last job of the previous page, if given."""
    query = select(Job).order_by(Job.created_at.desc(), Job.id.desc()).limit(limit)
    if owner is not None:
        query = query.where(Job.owner == owner)
    if states:
        query = query.where(Job.state.in_(states))
    if before is not None:
        created, job_id = before
        query = query.where(
            or_(Job.created_at < created, and_(Job.created_at == created, Job.id < job_id))
        )
    return list(session.scalars(query))


def cancel(job: Job) -> None:
    """Queued → cancelled at once; running → cancelling, until its worker has stopped and
    checkpointed (then cancelled). Cancelling a cancelled or cancelling job changes nothing."""
    if job.state in (CANCELLED, CANCELLING):
        return
    if job.state in (SUCCEEDED, FAILED):
        raise StateError(f"job {job.id} has already {job.state}; there is nothing to cancel")
    if job.state == QUEUED:
        release(job, CANCELLED)
    else:
        job.state, job.updated_at = CANCELLING, utcnow()
        add_state_event(job)


def resume(job: Job, max_steps: int | None = None) -> None:
    """Queue a cancelled or failed job again, to go on from its newest checkpoint (a succeeded
    one too, when given more steps), optionally with a new ``max_steps``."""
    if job.state in (QUEUED, RUNNING, CANCELLING):
        what = "is stopping; try again in a moment" if job.state == CANCELLING else "has not ended"
        raise StateError(f"job {job.id} {what} (state {job.state})")
    if max_steps is not None and max_steps <= job.step:
        raise ValueError(f"max_steps must be more than the {job.step} steps already done")
    if job.state == SUCCEEDED and (max_steps is None or max_steps <= job.total_steps):
        raise StateError(
            f"job {job.id} has succeeded; to train it further, give a max_steps above "
            f"{job.total_steps}"
        )
    if max_steps is not None:
        job.config = {**job.config, "max_steps": max_steps}
        job.total_steps = max_steps
    job.lost = 0
    job.finished_at = None
    release(job, QUEUED)


def delete_job(session: Session, job: Job) -> None:
    """Remove the job, its time series and its events (its files are the caller's)."""
    session.delete(job)
    session.flush()
