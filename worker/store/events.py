"""Each job's log of the changes a client may want to follow (``models.JobEvent``): state
changes, progress reports and new checkpoints, in order. The API streams them as Server-Sent
Events (``api/routes/events.py``).

State events are added here, by every change of state (``jobs``, ``leases``); progress and
checkpoint events by ``series.record_progress``.
"""

from __future__ import annotations

from collections.abc import Collection

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from worker.store.models import Job, JobEvent, utcnow


def add_state_event(job: Job) -> None:
    """Log the job's state (and error), which has just changed."""
    job.events.add(
        JobEvent(kind="state", data={"state": job.state, "error": job.error}, created_at=utcnow())
    )


def events_after(session: Session, job_id: str, after: int, limit: int = 500) -> list[JobEvent]:
    """The job's events with ids above ``after``, oldest first."""
    query = (
        select(JobEvent)
        .where(JobEvent.job_id == job_id, JobEvent.id > after)
        .order_by(JobEvent.id)
        .limit(limit)
    )
    return list(session.scalars(query))


def last_event_id(session: Session, job_id: str) -> int:
    return session.scalar(select(func.max(JobEvent.id)).where(JobEvent.job_id == job_id)) or 0


def newest(session: Session, job_ids: Collection[str]) -> dict[str, tuple[str, int]]:
    """(state, newest event id or 0) of each of the jobs that exists, in one query: what an
    event stream needs to know whether it has anything new to read."""
    query = (
        select(Job.id, Job.state, func.max(JobEvent.id))
        .outerjoin(JobEvent, JobEvent.job_id == Job.id)
        .where(Job.id.in_(job_ids))
        .group_by(Job.id, Job.state)
    )
    return {job_id: (state, last or 0) for job_id, state, last in session.execute(query)}
