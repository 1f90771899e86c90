"""Leases: only the worker holding a job's lease trains it and writes to it.

``claim`` takes the lease (and bumps the fencing token ``Job.lease_token``), ``renew`` extends it,
and every write a worker makes names its token (``leased_job``), so a worker that lost its lease
(it stalled, or was presumed dead) cannot overwrite the job. A worker done with a job releases it
(``mark_finished``, ``mark_requeued``); ``expire_leases`` (the reconciler) returns the jobs of
lost workers to the queue.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from worker.store.events import add_state_event
from worker.store.models import Job, utcnow
from worker.store.states import (
    CANCELLED,
    CANCELLING,
    FAILED,
    FINAL_STATES,
    LEASED_STATES,
    QUEUED,
    RUNNING,
    SUCCEEDED,
)


def claim(session: Session, job_id: str, worker: str, lease_s: float) -> tuple[str, Job | None]:
    """Take the lease of a queued job for ``worker``, for ``lease_s`` seconds: the job becomes
    running with a new fencing token (``job.lease_token``) that the worker's writes present.

    Returns (outcome, job), the outcome one of

    - "claimed": train it;
    - "gone": unknown, finished or cancelled: nothing to do (a stale or duplicate delivery);
    - "busy": another worker holds it (a duplicate delivery), or its worker was lost and the
      reconciler has yet to requeue it;
    - "wait": queued again (resumed) while its previous worker still holds the lease as it stops.
    """
    now = utcnow()
    taken = session.execute(
        update(Job)
        .where(
            Job.id == job_id,
            Job.state == QUEUED,
            or_(Job.lease_expires_at.is_(None), Job.lease_expires_at < now),
        )
        .values(
            state=RUNNING,
            lease_owner=worker,
            lease_expires_at=now + timedelta(seconds=lease_s),
            lease_token=Job.lease_token + 1,
            attempts=Job.attempts + 1,
            started_at=func.coalesce(Job.started_at, now),
            updated_at=now,
            error=None,
        )
        .execution_options(synchronize_session=False)
    )
    job = session.get(Job, job_id, populate_existing=True)
    if taken.rowcount == 1 and job is not None:  # type: ignore[attr-defined]
        add_state_event(job)
        return "claimed", job
    if job is None or job.state in FINAL_STATES:
        return "gone", job
    return ("wait" if job.state == QUEUED else "busy"), job


def renew(session: Session, job_id: str, token: int, lease_s: float) -> bool:
    """Extend the lease that ``token`` names; False when it is no longer this worker's."""
    renewed = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.lease_token == token, Job.state.in_(LEASED_STATES))
        .values(lease_expires_at=utcnow() + timedelta(seconds=lease_s))
        .execution_options(synchronize_session=False)
    )
    return bool(renewed.rowcount == 1)  # type: ignore[attr-defined]


def leased_job(session: Session, job_id: str, token: int) -> Job | None:
    """The job, while the lease that ``token`` names still holds it (else None: the worker must
    stop writing to it)."""
    job = session.get(Job, job_id)
    if job is None or job.lease_token != token or job.state not in LEASED_STATES:
        return None
    return job


def release(job: Job, state: str, error: str | None = None) -> None:
    """Move the job to ``state`` and end its lease, if a worker held one; stamp ``finished_at``
    when ``state`` is final, and log the change (``events``)."""
    now = utcnow()
    job.state, job.error = state, error
    job.lease_owner = job.lease_expires_at = None
    job.updated_at = now
    if state in FINAL_STATES:
        job.finished_at = now
    add_state_event(job)


def mark_requeued(job: Job) -> None:
    """Back to queued, progress kept: its worker stopped and put its task back on the queue
    (a cancel that arrived meanwhile wins: the job is then cancelled)."""
    release(job, CANCELLED if job.state == CANCELLING else QUEUED)


def mark_finished(job: Job, *, error: str | None = None) -> None:
    """The worker is done with it: succeeded when ``error`` is None, else failed with that
    reason; cancelled when a cancel asked it to stop."""
    if job.state == CANCELLING:
        release(job, CANCELLED)
    else:
        release(job, SUCCEEDED if error is None else FAILED, error)


def expire_leases(session: Session, *, max_lost: int, now: datetime | None = None) -> list[Job]:
    """The reconciler's pass over jobs whose worker was lost (lease expired by ``now``): a
    cancelling job becomes cancelled; a running one goes back to the queue, or fails once its
    worker has been lost more than ``max_lost`` times. Returns the jobs to enqueue again."""
    now = now or utcnow()
    stale = select(Job).where(
        Job.state.in_(LEASED_STATES),
        or_(Job.lease_expires_at.is_(None), Job.lease_expires_at < now),
    )
    requeued = []
    for job in session.scalars(stale.with_for_update(skip_locked=True)):
        if job.state == CANCELLING:
            release(job, CANCELLED)
            continue
        job.lost += 1
        if job.lost > max_lost:
            release(
                job,
                FAILED,
                f"its worker was lost {job.lost} times (killed, out of memory or unreachable; "
                f"last seen at step {job.step}, newest checkpoint at step "
                f"{job.checkpoint_step or 0}); fix the workers, then POST /jobs/{job.id}/resume",
            )
        else:
            release(job, QUEUED)
            requeued.append(job)
    return requeued


def queued_jobs(session: Session) -> list[tuple[str, datetime]]:
    """(id, when it was queued) of every queued job, oldest first: the reconciler sends a job
    again when its message has been missing from the broker's queue for a while. A queued job's
    ``updated_at`` is when it was queued (created, resumed, requeued: nothing else changes it)."""
    query = select(Job.id, Job.updated_at).where(Job.state == QUEUED)
    rows = session.execute(query.order_by(Job.created_at, Job.id))
    return [(job_id, since) for job_id, since in rows]
