"""The job store's tables (a job's states are ``worker.store.states``).

The schema these classes describe is made and changed only by the migrations in
``worker/migrations``: a change here needs a new migration (``gan db revision``), which
``tests/worker/test_migrations.py`` checks.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, WriteOnlyMapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator


def utcnow() -> datetime:
    """The time every timestamp of the store is taken from."""
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


# Event ids and steps: 64-bit on PostgreSQL (an event id up to 2**63 - 1, as the API's
# Last-Event-ID allows). SQLite's INTEGER is 64-bit already, and only an INTEGER PRIMARY KEY is
# an alias of the rowid that autoincrements: a BIGINT primary key there would not be.
BigInt = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    pass


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        UniqueConstraint("owner", "idempotency_key", name="uq_jobs_owner_idempotency_key"),
        Index("ix_jobs_owner_created", "owner", "created_at", "id"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    state: Mapped[str] = mapped_column(String(16), index=True)
    # The API key the job belongs to ("" when the service runs without keys).
    owner: Mapped[str] = mapped_column(String(64), default="")
    # The client's Idempotency-Key of the POST that created it, and a hash of that request's
    # body: a retry with the same key and body gets this job back instead of a new one.
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    request_hash: Mapped[str | None] = mapped_column(String(64))
    preset: Mapped[str] = mapped_column(String(64))
    config: Mapped[dict[str, Any]] = mapped_column(JSON)  # the resolved TrainConfig.to_dict()
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    step: Mapped[int] = mapped_column(BigInt, default=0)
    total_steps: Mapped[int] = mapped_column(BigInt)
    images_per_sec: Mapped[float | None] = mapped_column(Float)
    d_loss: Mapped[float | None] = mapped_column(Float)
    g_loss: Mapped[float | None] = mapped_column(Float)
    checkpoint_step: Mapped[int | None] = mapped_column(BigInt)  # newest checkpoint on disk
    error: Mapped[str | None] = mapped_column(Text)  # why a failed job failed, for a person
    # The latest evaluation {name: value, "step": int}, and that of the best checkpoint; None
    # before the first (or, for best_metrics, when the run keeps no best checkpoint).
    metrics: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    best_metrics: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # Every warning of the run so far: [{"code": str, "step": int, "message": str}].
    warnings: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    # The lease of the worker training it (see ``worker.store.leases``): who, until when, and
    # the fencing token that every write of that worker must present.
    lease_owner: Mapped[str | None] = mapped_column(String(255))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), index=True)
    lease_token: Mapped[int] = mapped_column(Integer, default=0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # times a worker claimed it
    lost: Mapped[int] = mapped_column(Integer, default=0)  # times its worker was lost
    # The sweep that made it (``worker.store.sweeps``), if any; a job of a sweep is an ordinary
    # job otherwise.
    sweep_id: Mapped[str | None] = mapped_column(
        String(36), ForeignKey("sweeps.id", ondelete="SET NULL"), index=True
    )
    points: WriteOnlyMapped[MetricPoint] = relationship(passive_deletes=True)
    events: WriteOnlyMapped[JobEvent] = relationship(passive_deletes=True)


class Sweep(Base):
    """A set of jobs made by one request: a base spec and a grid (or list) of points over
    fields, one job per point (``Job.sweep_id``). The sweep keeps what was asked for; each job
    keeps its own resolved config."""

    __tablename__ = "sweeps"
    __table_args__ = (
        UniqueConstraint("owner", "idempotency_key", name="uq_sweeps_owner_idempotency_key"),
        Index("ix_sweeps_owner_created", "owner", "created_at", "id"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    owner: Mapped[str] = mapped_column(String(64), default="")
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    request_hash: Mapped[str | None] = mapped_column(String(64))
    # The request: {"base": {preset, overrides…}, "grid": {field: [values]} | None,
    # "points": [{field: value}] | None}.
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    # Its jobs in the order of its points: [{"job_id": str, "point": {field: value}}] (a job
    # deleted on its own stays listed here, and is skipped).
    points: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class MetricPoint(Base):
    """One progress report of a job: {d_loss, g_loss, d_real, d_fake, d_grad_norm, g_grad_norm,
    images_per_sec}, plus the evaluation's metrics when one was made at this step. Non-finite
    values are stored as None."""

    __tablename__ = "metric_points"
    __table_args__ = (Index("ix_metric_points_job_step", "job_id", "step"),)

    id: Mapped[int] = mapped_column(BigInt, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(String(36), ForeignKey("jobs.id", ondelete="CASCADE"))
    step: Mapped[int] = mapped_column(BigInt)
    data: Mapped[dict[str, float | None]] = mapped_column(JSON)


class JobEvent(Base):
    """Something a client following the job wants to hear about, in order (``id`` grows):

    - ``state``: {"state", "error"} when the job changes state;
    - ``progress``: ``series.progress_snapshot`` of the job after a report: the progress
      fields of ``GET /jobs/{id}``, under the same names;
    - ``checkpoint``: {"step"} when a new checkpoint is on disk.
    """

    __tablename__ = "job_events"
    __table_args__ = (Index("ix_job_events_job_id", "job_id", "id"),)

    id: Mapped[int] = mapped_column(BigInt, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(String(36), ForeignKey("jobs.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))
    data: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class ApiKey(Base):
    """An API key made with ``gan keys create``. Only a SHA-256 of the key is stored: keys are
    32 random bytes, so a fast hash is as good as a slow one and costs nothing per request."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # the jobs' owner
    name: Mapped[str] = mapped_column(String(255))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class WorkerSlot(Base):
    """A training slot's heartbeat: one process that trains one job at a time, written every
    few seconds while it runs (``worker.store.workers``). A slot unseen for longer than a lease
    is gone. The job it trains is the one whose lease it holds (``Job.lease_owner == id``)."""

    __tablename__ = "worker_slots"

    id: Mapped[str] = mapped_column(String(255), primary_key=True)  # host/pid, as in leases
    worker: Mapped[str] = mapped_column(String(255), index=True)  # its `gan worker`: host/pid
    host: Mapped[str] = mapped_column(String(255))
    slot: Mapped[int] = mapped_column(Integer)  # its index among the worker's slots
    device: Mapped[str] = mapped_column(String(64))  # "cuda:1", "cpu", or "auto"
    threads: Mapped[int] = mapped_column(Integer)  # its CPU threads (torch.get_num_threads)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    seen_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


class Webhook(Base):
    """A job's webhook (``worker.store.webhooks``): where its events go, which ones, and how
    far the dispatcher has read the job's events (``cursor``, an event id: those up to it have
    their deliveries made)."""

    __tablename__ = "webhooks"

    job_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True
    )
    url: Mapped[str] = mapped_column(Text)
    events: Mapped[list[str]] = mapped_column(JSON)  # of "state", "checkpoint", "progress"
    progress_every_s: Mapped[float] = mapped_column(Float)
    # The HMAC-SHA256 key of its signatures: derived from the API key that made the job, or
    # the service's GAN_WEBHOOK_SECRET when it runs without keys.
    secret: Mapped[str] = mapped_column(String(128))
    cursor: Mapped[int] = mapped_column(BigInt, default=0)
    # When the progress event last delivered was made: the next waits progress_every_s.
    progress_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class WebhookDelivery(Base):
    """One event to POST to a job's webhook, and how that went: ``state`` pending (to send at
    ``next_attempt_at``; an attempt in flight holds it until then), delivered or failed (after
    its last attempt). ``status_codes`` has each finished attempt's HTTP status (null: no
    answer); an attempt whose worker died before it finished has none."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        UniqueConstraint("job_id", "event_id", name="uq_webhook_deliveries_job_event"),
        Index("ix_webhook_deliveries_due", "state", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(BigInt, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(String(36), ForeignKey("jobs.id", ondelete="CASCADE"))
    event_id: Mapped[int] = mapped_column(BigInt)
    kind: Mapped[str] = mapped_column(String(16))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)  # the POST's body
    state: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    status_codes: Mapped[list[int | None]] = mapped_column(JSON, default=list)
    last_error: Mapped[str | None] = mapped_column(Text)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
