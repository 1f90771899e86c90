"""A job's progress: the latest report on the job's row (``record_progress``, read back by
``progress_snapshot``), and the time series of every report (``models.MetricPoint``), read
back whole or downsampled (``metric_points``) or at given steps (``points_at_steps``)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Integer, delete, func, literal, or_, select
from sqlalchemy.orm import Session, object_session

from gan.progress import Progress
from worker.store.models import Job, JobEvent, MetricPoint, utcnow
from worker.store.states import RUNNING


def record_progress(job: Job, report: Progress) -> None:
    """Record the trainer's progress ``report`` on ``job``, which must belong to a session, and
    append it to the job's metric time series (``report.total_steps`` is the job's own).

    ``report.metrics`` is the latest evaluation (made at ``metrics_step``), ``best`` that of the
    best checkpoint; its values go into the time series only when it is new, at its own step. Points
    at or after ``step`` are replaced: a job that resumes from an older checkpoint, or rolls back
    after diverging, repeats those steps, and the time series follows the run that went on.
    """
    session = object_session(job)
    if session is None:
        raise ValueError(f"job {job.id} is not in a session")
    r = report
    evaluation = _with_step(r.metrics, r.metrics_step) if r.metrics else None
    new_evaluation = evaluation is not None and evaluation != job.metrics
    new_checkpoint = r.checkpoint_step is not None and r.checkpoint_step != job.checkpoint_step
    job.step = r.step
    job.images_per_sec = r.images_per_sec
    job.d_loss = r.d_loss
    job.g_loss = r.g_loss
    job.checkpoint_step = r.checkpoint_step
    job.metrics = evaluation if evaluation is not None else job.metrics
    job.best_metrics = _with_step(r.best, r.best_step) if r.best is not None else job.best_metrics
    job.warnings = [w.to_dict() for w in r.warnings]
    job.updated_at = utcnow()

    first = r.step if not new_evaluation or r.metrics_step is None else min(r.step, r.metrics_step)
    session.execute(
        delete(MetricPoint).where(MetricPoint.job_id == job.id, MetricPoint.step >= first)
    )
    data = _finite(r.scalars())
    if new_evaluation:
        if r.metrics_step is None or r.metrics_step == r.step:
            data |= _finite(r.metrics)
        else:  # evaluated between two reports: a point of its own, at its own step
            job.points.add(MetricPoint(step=r.metrics_step, data=_finite(r.metrics)))
    job.points.add(MetricPoint(step=r.step, data=data))
    now = utcnow()
    if new_checkpoint:
        checkpoint = {"step": r.checkpoint_step}
        job.events.add(JobEvent(kind="checkpoint", data=checkpoint, created_at=now))
    job.events.add(JobEvent(kind="progress", data=progress_snapshot(job), created_at=now))


def progress_snapshot(job: Job) -> dict[str, Any]:
    """The job's progress, as ``GET /jobs/{id}`` and its ``progress`` events show it."""
    latest = dict(job.metrics or {})
    metrics_step = latest.pop("step", None)
    return {
        "step": job.step,
        "total_steps": job.total_steps,
        "images_per_sec": _finite_or_none(job.images_per_sec),
        "eta_seconds": eta_seconds(job),
        "d_loss": _finite_or_none(job.d_loss),
        "g_loss": _finite_or_none(job.g_loss),
        "checkpoint_step": job.checkpoint_step,
        "metrics": latest,
        "metrics_step": metrics_step,
        "best_metrics": job.best_metrics,
        "warnings": list(job.warnings or []),
    }


def eta_seconds(job: Job) -> float | None:
    """Seconds until the job reaches total_steps at its latest throughput, while it runs."""
    per_step = job.config.get("batch_size", 0) * job.config.get("d_steps", 1)
    if job.state != RUNNING or not job.images_per_sec or per_step <= 0:
        return None
    if not math.isfinite(job.images_per_sec):
        return None
    return max(job.total_steps - job.step, 0) * per_step / job.images_per_sec


def _finite_or_none(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _finite(values: Mapping[str, float]) -> dict[str, float | None]:
    """``values`` as JSON-safe floats: NaN and infinities become None (JSON has neither)."""
    return {k: float(v) if math.isfinite(v) else None for k, v in values.items()}


def _with_step(values: Mapping[str, float], step: int | None) -> dict[str, Any]:
    return {**_finite(values), "step": step}


def metric_points(
    session: Session, job_id: str, *, since_step: int | None = None, max_points: int = 1000
) -> tuple[int, list[MetricPoint]]:
    """(how many points the job has after ``since_step``, up to ``max_points`` of them).

    Oldest first. When there are more than ``max_points``, they are picked evenly across the
    range, first and last included (by rank, in the database: a long run's series never has to
    be loaded whole).
    """
    if max_points < 1:
        raise ValueError(f"max_points must be at least 1, not {max_points}")
    where = [MetricPoint.job_id == job_id]
    if since_step is not None:
        where.append(MetricPoint.step > since_step)
    order = (MetricPoint.step, MetricPoint.id)
    total = session.scalar(select(func.count()).select_from(MetricPoint).where(*where)) or 0
    if total <= max_points:
        return total, list(session.scalars(select(MetricPoint).where(*where).order_by(*order)))
    if max_points == 1:  # the newest
        newest = select(MetricPoint).where(*where).order_by(*[c.desc() for c in order]).limit(1)
        return total, list(session.scalars(newest))
    # Rank i (0-based) is kept when floor(i·(m−1)/(n−1)) steps past floor((i−1)·(m−1)/(n−1)):
    # the first rank of each of m − 1 equal buckets, plus rank 0. That is exactly m ranks,
    # i = ceil(j·(n−1)/(m−1)) for j = 0 … m−1, so the last point is always among them.
    ranked = (
        select(MetricPoint.id, (func.row_number().over(order_by=order) - 1).label("rank"))
        .where(*where)
        .subquery()
    )
    m1, n1 = literal(max_points - 1, Integer), literal(total - 1, Integer)
    rank = ranked.c.rank
    kept = select(ranked.c.id).where(or_(rank == 0, rank * m1 // n1 > (rank - 1) * m1 // n1))
    query = select(MetricPoint).where(MetricPoint.id.in_(kept)).order_by(*order)
    return total, list(session.scalars(query))


def points_at_steps(
    session: Session, job_id: str, steps: Sequence[int]
) -> dict[int, dict[str, float | None]]:
    """{step: MetricPoint.data} of the job's points at ``steps`` (those it has a point at); two
    points at one step are merged, the later one's values winning."""
    if not steps:
        return {}
    query = (
        select(MetricPoint)
        .where(MetricPoint.job_id == job_id, MetricPoint.step.in_(set(steps)))
        .order_by(MetricPoint.step, MetricPoint.id)
    )
    found: dict[int, dict[str, float | None]] = {}
    for point in session.scalars(query):
        found.setdefault(point.step, {}).update(point.data)
    return found
