"""Sweeps: the jobs one request made, one per point of a grid or a list over config fields.

A sweep's jobs are ordinary jobs (``worker.store.jobs``) that name it (``Job.sweep_id``); the
sweep row keeps the request and its points in order. A sweep is read back with its jobs ranked
by their best evaluation: the lowest ``fid``, ``kl`` or ``mode_kl``, whichever the job's
dataset has (``RANK_METRICS``).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from worker.store import jobs
from worker.store.models import Job, Sweep, utcnow
from worker.store.states import FINAL_STATES

# The metrics a best evaluation is chosen by, lower being better: the values of
# ``gan.evaluate.KEYS`` (a test ties the two; this module must not import torch). A dataset
# has at most one of them.
RANK_METRICS = ("fid", "kl", "mode_kl")


@dataclass(frozen=True)
class Entry:
    """A job of a sweep, where it ranks: ``rank`` 1 is the best; None without a best yet."""

    job: Job
    point: dict[str, Any]
    rank: int | None
    metric: str | None
    value: float | None


def create_sweep(
    session: Session,
    spec: dict[str, Any],
    points: Sequence[tuple[dict[str, Any], str, dict[str, Any]]],
    *,
    owner: str = "",
    idempotency_key: str | None = None,
    request_hash: str | None = None,
) -> tuple[Sweep, list[Job]]:
    """The sweep and its jobs, one per (point, preset, resolved config) of ``points``, in the
    caller's transaction: they are committed together, or not at all."""
    sweep = Sweep(
        id=str(uuid.uuid4()),
        owner=owner,
        idempotency_key=idempotency_key,
        request_hash=request_hash,
        spec=spec,
        points=[],
        created_at=utcnow(),
    )
    session.add(sweep)
    session.flush()  # the unique (owner, key) constraint fails here, before any job is made
    made = [
        jobs.create_job(session, preset, config, owner=owner, sweep_id=sweep.id)
        for _, preset, config in points
    ]
    sweep.points = [
        {"job_id": job.id, "point": point} for job, (point, _, _) in zip(made, points, strict=True)
    ]
    session.flush()
    return sweep, made


def get_sweep(session: Session, sweep_id: str, owner: str | None = None) -> Sweep | None:
    """The sweep, or None when there is none or it belongs to another owner than ``owner``."""
    sweep = session.get(Sweep, sweep_id)
    return sweep if sweep is not None and (owner is None or sweep.owner == owner) else None


def find_idempotent(session: Session, owner: str, idempotency_key: str) -> Sweep | None:
    """The sweep ``owner`` created with this Idempotency-Key, if any."""
    query = select(Sweep).where(Sweep.owner == owner, Sweep.idempotency_key == idempotency_key)
    return session.scalars(query).one_or_none()


def list_sweeps(session: Session, owner: str | None = None, limit: int = 100) -> list[Sweep]:
    """``owner``'s sweeps (None: everyone's), newest first."""
    query = select(Sweep).order_by(Sweep.created_at.desc(), Sweep.id.desc()).limit(limit)
    if owner is not None:
        query = query.where(Sweep.owner == owner)
    return list(session.scalars(query))


def sweep_jobs(session: Session, sweeps: Sequence[Sweep]) -> dict[str, list[Job]]:
    """{sweep id: its jobs that still exist, in the order of its points}."""
    ids = [s.id for s in sweeps]
    found = {job.id: job for job in session.scalars(select(Job).where(Job.sweep_id.in_(ids)))}
    return {s.id: [found[p["job_id"]] for p in s.points if p["job_id"] in found] for s in sweeps}


def best_value(job: Job) -> tuple[str, float] | None:
    """(metric, value) of the job's best evaluation, by ``RANK_METRICS``; None before one."""
    best = job.best_metrics or {}
    for metric in RANK_METRICS:
        value = best.get(metric)
        if isinstance(value, int | float):
            return metric, float(value)
    return None


def ranked(sweep: Sweep, members: Sequence[Job]) -> list[Entry]:
    """The sweep's jobs, best first: those with a best evaluation by its value (lower is
    better; a sweep over datasets with different metrics ranks by metric, then value), then
    the others in the order of their points."""
    points = {p["job_id"]: p["point"] for p in sweep.points}
    scored = [(best_value(job), i, job) for i, job in enumerate(members)]
    with_value = sorted(
        ((RANK_METRICS.index(b[0]), b[1], i, job, b) for b, i, job in scored if b is not None),
        key=lambda t: t[:3],
    )
    entries = [
        Entry(job, points.get(job.id, {}), rank, b[0], b[1])
        for rank, (_, _, _, job, b) in enumerate(with_value, start=1)
    ]
    entries += [
        Entry(job, points.get(job.id, {}), None, None, None) for b, _, job in scored if b is None
    ]
    return entries


def cancel_sweep(members: Sequence[Job]) -> None:
    """Cancel every job of the sweep that has not finished (``jobs.cancel``); finished ones
    stay as they are."""
    for job in members:
        if job.state not in FINAL_STATES:
            jobs.cancel(job)


def delete_sweep(session: Session, sweep: Sweep, members: Sequence[Job]) -> None:
    """Remove the sweep and its jobs (``jobs.delete_job``; their files are the caller's)."""
    for job in members:
        jobs.delete_job(session, job)
    session.delete(sweep)
    session.flush()
