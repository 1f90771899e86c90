"""The job store: SQLAlchemy 2 tables of jobs and their metric time series, on SQLite or
PostgreSQL.

The API creates and reads jobs; the worker moves them through their states and records progress.
Both go through the functions here so that state changes happen in one place; the functions
that change a job mutate it inside the caller's ``session_scope``, which commits.

States: queued → running → succeeded | failed, and running → queued when a worker shuts down
and requeues its job. A job is never deleted by these functions.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    create_engine,
    delete,
    event,
    func,
    literal,
    or_,
    select,
)
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    Session,
    WriteOnlyMapped,
    mapped_column,
    object_session,
    relationship,
    sessionmaker,
)
from sqlalchemy.types import TypeDecorator

QUEUED, RUNNING, SUCCEEDED, FAILED = "queued", "running", "succeeded", "failed"
STATES = (QUEUED, RUNNING, SUCCEEDED, FAILED)
FINAL_STATES = (SUCCEEDED, FAILED)


def _now() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on every database (SQLite stores it naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    pass


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    state: Mapped[str] = mapped_column(String(16), index=True)
    preset: Mapped[str] = mapped_column(String(64))
    config: Mapped[dict[str, Any]] = mapped_column(JSON)  # the resolved TrainConfig.to_dict()
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    step: Mapped[int] = mapped_column(Integer, default=0)
    total_steps: Mapped[int] = mapped_column(Integer)
    images_per_sec: Mapped[float | None] = mapped_column(Float)
    d_loss: Mapped[float | None] = mapped_column(Float)
    g_loss: Mapped[float | None] = mapped_column(Float)
    checkpoint_step: Mapped[int | None] = mapped_column(Integer)  # newest checkpoint on disk
    error: Mapped[str | None] = mapped_column(Text)  # why a failed job failed, for a person
    # The latest evaluation {name: value, "step": int}, and that of the best checkpoint; None
    # before the first (or, for best_metrics, when the run keeps no best checkpoint).
    metrics: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    best_metrics: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # Every warning of the run so far: [{"code": str, "step": int, "message": str}].
    warnings: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    points: WriteOnlyMapped[MetricPoint] = relationship(passive_deletes=True)


class MetricPoint(Base):
    """One progress report of a job: {d_loss, g_loss, d_real, d_fake, images_per_sec}, plus the
    evaluation's metrics when one was made at this step. Non-finite values are stored as None."""

    __tablename__ = "metric_points"
    __table_args__ = (Index("ix_metric_points_job_step", "job_id", "step"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(String(36), ForeignKey("jobs.id", ondelete="CASCADE"))
    step: Mapped[int] = mapped_column(Integer)
    data: Mapped[dict[str, float | None]] = mapped_column(JSON)


@lru_cache
def get_engine(url: str) -> Engine:
    """One engine per database URL, with the tables created."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            # WAL lets the API read while the worker writes progress.
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        _make_sqlite_parent(url)
    else:
        engine = create_engine(url, pool_pre_ping=True)
    Base.metadata.create_all(engine)
    return engine


def _make_sqlite_parent(url: str) -> None:
    database = make_url(url).database
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)


@contextmanager
def session_scope(url: str) -> Iterator[Session]:
    """A session that commits on success and rolls back on error."""
    with sessionmaker(get_engine(url), expire_on_commit=False)() as session, session.begin():
        yield session


def create_job(session: Session, preset: str, config: dict[str, Any]) -> Job:
    now = _now()
    job = Job(
        id=str(uuid.uuid4()),
        state=QUEUED,
        preset=preset,
        config=config,
        created_at=now,
        updated_at=now,
        step=0,
        total_steps=config["max_steps"],
        warnings=[],
    )
    session.add(job)
    session.flush()
    return job


def get_job(session: Session, job_id: str) -> Job | None:
    return session.get(Job, job_id)


def list_jobs(session: Session, limit: int = 100) -> list[Job]:
    """Newest first."""
    query = select(Job).order_by(Job.created_at.desc(), Job.id.desc()).limit(limit)
    return list(session.scalars(query))


def mark_running(job: Job) -> None:
    job.state = RUNNING
    job.started_at = job.started_at or _now()
    job.updated_at = _now()
    job.error = None


def mark_requeued(job: Job) -> None:
    """Back to queued, progress kept: its worker stopped and put its task back on the queue."""
    job.state = QUEUED
    job.updated_at = _now()


def record_progress(
    job: Job,
    *,
    step: int,
    images_per_sec: float,
    d_loss: float,
    g_loss: float,
    d_real: float,
    d_fake: float,
    checkpoint_step: int | None,
    metrics: Mapping[str, float] | None = None,
    metrics_step: int | None = None,
    best: Mapping[str, float] | None = None,
    best_step: int | None = None,
    warnings: Sequence[Mapping[str, Any]] = (),
) -> None:
    """Record a progress report (``gan.train.Progress``'s fields) on ``job``, which must belong
    to a session, and append it to the job's metric time series.

    ``metrics`` is the latest evaluation (made at ``metrics_step``), ``best`` that of the best
    checkpoint; its values go into the time series only when it is new, at its own step. Points
    at or after ``step`` are replaced: a job that resumes from an older checkpoint, or rolls back
    after diverging, repeats those steps, and the time series follows the run that went on.
    """
    session = object_session(job)
    if session is None:
        raise ValueError(f"job {job.id} is not in a session")
    evaluation = _with_step(metrics, metrics_step) if metrics else None
    new_evaluation = evaluation is not None and evaluation != job.metrics
    job.step = step
    job.images_per_sec = images_per_sec
    job.d_loss = d_loss
    job.g_loss = g_loss
    job.checkpoint_step = checkpoint_step
    job.metrics = evaluation if evaluation is not None else job.metrics
    job.best_metrics = _with_step(best, best_step) if best is not None else job.best_metrics
    job.warnings = [
        {"code": str(w["code"]), "step": int(w["step"]), "message": str(w["message"])}
        for w in warnings
    ]
    job.updated_at = _now()

    first = step if not new_evaluation or metrics_step is None else min(step, metrics_step)
    session.execute(
        delete(MetricPoint).where(MetricPoint.job_id == job.id, MetricPoint.step >= first)
    )
    data = _finite(
        {"d_loss": d_loss, "g_loss": g_loss, "d_real": d_real, "d_fake": d_fake,
         "images_per_sec": images_per_sec}
    )  # fmt: skip
    if new_evaluation and metrics is not None:
        if metrics_step is None or metrics_step == step:
            data |= _finite(metrics)
        else:  # evaluated between two reports: a point of its own, at its own step
            job.points.add(MetricPoint(step=metrics_step, data=_finite(metrics)))
    job.points.add(MetricPoint(step=step, data=data))


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


def mark_finished(job: Job, *, error: str | None = None) -> None:
    """Succeeded when ``error`` is None, else failed with that reason."""
    job.state = SUCCEEDED if error is None else FAILED
    job.error = error
    job.finished_at = job.updated_at = _now()
