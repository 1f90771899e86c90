"""The job store: one SQLAlchemy 2 table of jobs, on SQLite or PostgreSQL.

The API creates and reads jobs; the worker moves them through their states and records progress.
Both go through the functions here so that state changes happen in one place; the functions
that change a job mutate it inside the caller's ``session_scope``, which commits.

States: queued → running → succeeded | failed, and running → queued when a worker shuts down
and requeues its job. A job is never deleted by these functions.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
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
    Integer,
    String,
    Text,
    create_engine,
    event,
    select,
)
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker
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
    checkpoint_step: int | None,
) -> None:
    job.step = step
    job.images_per_sec = images_per_sec
    job.d_loss = d_loss
    job.g_loss = g_loss
    job.checkpoint_step = checkpoint_step
    job.updated_at = _now()


def mark_finished(job: Job, *, error: str | None = None) -> None:
    """Succeeded when ``error`` is None, else failed with that reason."""
    job.state = SUCCEEDED if error is None else FAILED
    job.error = error
    job.finished_at = job.updated_at = _now()
