"""The job store: SQLAlchemy 2 tables of jobs and their metric time series, on SQLite or
PostgreSQL.

The API creates and reads jobs; the worker moves them through their states and records progress.
Both go through the functions here so that state changes happen in one place; the functions
that change a job mutate it inside the caller's ``session_scope``, which commits.

States (``STATES``)::

    queued ──claim──▶ running ──▶ succeeded | failed
      │                 │  └──cancel──▶ cancelling ──(worker stops)──▶ cancelled
      └──cancel──────────────────────────────────────────────────────▶ cancelled
    running ──▶ queued   its worker shut down, or was lost (lease expired), and requeued it
    cancelled | failed | succeeded ──resume──▶ queued

A worker trains a job only while it holds the job's *lease*: ``claim`` takes it (and bumps the
fencing token ``lease_token``), ``renew`` extends it, and every write a worker makes names its
token, so a worker that lost its lease (it stalled, or was presumed dead) cannot overwrite the
job. ``expire_leases`` (the reconciler) returns the jobs of lost workers to the queue.

Every change a client may want to follow is also appended to ``job_events`` (state changes,
progress reports, new checkpoints): the API streams them as Server-Sent Events.
"""

from __future__ import annotations

import hashlib
import math
import secrets
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
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
    UniqueConstraint,
    and_,
    create_engine,
    delete,
    event,
    func,
    literal,
    or_,
    select,
    update,
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

from worker import migrate

QUEUED, RUNNING, CANCELLING = "queued", "running", "cancelling"
SUCCEEDED, FAILED, CANCELLED = "succeeded", "failed", "cancelled"
STATES = (QUEUED, RUNNING, CANCELLING, SUCCEEDED, FAILED, CANCELLED)
FINAL_STATES = (SUCCEEDED, FAILED, CANCELLED)
LEASED_STATES = (RUNNING, CANCELLING)  # a worker holds the lease


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
    # The lease of the worker training it (see the module's docstring): who, until when, and the
    # fencing token that every write of that worker must present.
    lease_owner: Mapped[str | None] = mapped_column(String(255))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), index=True)
    lease_token: Mapped[int] = mapped_column(Integer, default=0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # times a worker claimed it
    lost: Mapped[int] = mapped_column(Integer, default=0)  # times its worker was lost
    points: WriteOnlyMapped[MetricPoint] = relationship(passive_deletes=True)
    events: WriteOnlyMapped[JobEvent] = relationship(passive_deletes=True)


class MetricPoint(Base):
    """One progress report of a job: {d_loss, g_loss, d_real, d_fake, d_grad_norm, g_grad_norm,
    images_per_sec}, plus the evaluation's metrics when one was made at this step. Non-finite
    values are stored as None."""

    __tablename__ = "metric_points"
    __table_args__ = (Index("ix_metric_points_job_step", "job_id", "step"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(String(36), ForeignKey("jobs.id", ondelete="CASCADE"))
    step: Mapped[int] = mapped_column(Integer)
    data: Mapped[dict[str, float | None]] = mapped_column(JSON)


class JobEvent(Base):
    """Something a client following the job wants to hear about, in order (``id`` grows):

    - ``state``: {"state", "error"} when the job changes state;
    - ``progress``: a progress report, with the same field names as the job's own
      (step, total_steps, images_per_sec, eta_seconds, d_loss, g_loss, d_real, d_fake,
      checkpoint_step, metrics, metrics_step);
    - ``checkpoint``: {"step"} when a new checkpoint is on disk.
    """

    __tablename__ = "job_events"
    __table_args__ = (Index("ix_job_events_job_id", "job_id", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
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


@lru_cache
def get_engine(url: str) -> Engine:
    """One engine per database URL, its schema migrated to the newest revision on first use
    (``worker.migrate.upgrade``; raises ``migrate.SchemaError`` when it cannot be)."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            # WAL lets the API read while the worker writes progress.
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.execute("PRAGMA foreign_keys=ON")  # deleting a job deletes its series
            cursor.close()

        _make_sqlite_parent(url)
    else:
        engine = create_engine(url, pool_pre_ping=True)
    try:
        migrate.upgrade(engine)  # the tables, brought up to date (worker/migrations)
    except BaseException:
        engine.dispose()
        raise
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
) -> Job:
    now = _now()
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
    )
    session.add(job)
    session.flush()
    _state_event(job)
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


def eta_seconds(job: Job) -> float | None:
    """Seconds until the job reaches total_steps at its latest throughput, while it runs."""
    per_step = job.config.get("batch_size", 0) * job.config.get("d_steps", 1)
    if job.state != RUNNING or not job.images_per_sec or per_step <= 0:
        return None
    if not math.isfinite(job.images_per_sec):
        return None
    return max(job.total_steps - job.step, 0) * per_step / job.images_per_sec


# --- Leases: only the worker holding a job's lease trains it and writes to it ------------------


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
    now = _now()
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
        _state_event(job)
        return "claimed", job
    if job is None or job.state in FINAL_STATES:
        return "gone", job
    return ("wait" if job.state == QUEUED else "busy"), job


def renew(session: Session, job_id: str, token: int, lease_s: float) -> bool:
    """Extend the lease that ``token`` names; False when it is no longer this worker's."""
    renewed = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.lease_token == token, Job.state.in_(LEASED_STATES))
        .values(lease_expires_at=_now() + timedelta(seconds=lease_s))
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


def _release(job: Job, state: str, error: str | None = None) -> None:
    now = _now()
    job.state, job.error = state, error
    job.lease_owner = job.lease_expires_at = None
    job.updated_at = now
    if state in FINAL_STATES:
        job.finished_at = now
    _state_event(job)


def mark_requeued(job: Job) -> None:
    """Back to queued, progress kept: its worker stopped and put its task back on the queue
    (a cancel that arrived meanwhile wins: the job is then cancelled)."""
    _release(job, CANCELLED if job.state == CANCELLING else QUEUED)


def mark_finished(job: Job, *, error: str | None = None) -> None:
    """The worker is done with it: succeeded when ``error`` is None, else failed with that
    reason; cancelled when a cancel asked it to stop."""
    if job.state == CANCELLING:
        _release(job, CANCELLED)
    else:
        _release(job, SUCCEEDED if error is None else FAILED, error)


def expire_leases(session: Session, *, max_lost: int, now: datetime | None = None) -> list[Job]:
    """The reconciler's pass over jobs whose worker was lost (lease expired by ``now``): a
    cancelling job becomes cancelled; a running one goes back to the queue, or fails once its
    worker has been lost more than ``max_lost`` times. Returns the jobs to enqueue again."""
    now = now or _now()
    stale = select(Job).where(
        Job.state.in_(LEASED_STATES),
        or_(Job.lease_expires_at.is_(None), Job.lease_expires_at < now),
    )
    requeued = []
    for job in session.scalars(stale.with_for_update(skip_locked=True)):
        if job.state == CANCELLING:
            _release(job, CANCELLED)
            continue
        job.lost += 1
        if job.lost > max_lost:
            _release(
                job,
                FAILED,
                f"its worker was lost {job.lost} times (killed, out of memory or unreachable; "
                f"last seen at step {job.step}, newest checkpoint at step "
                f"{job.checkpoint_step or 0}); fix the workers, then POST /jobs/{job.id}/resume",
            )
        else:
            _release(job, QUEUED)
            requeued.append(job)
    return requeued


def queued_job_ids(session: Session) -> list[str]:
    """Every queued job, oldest first (to enqueue again after the broker lost its messages)."""
    query = select(Job.id).where(Job.state == QUEUED).order_by(Job.created_at, Job.id)
    return list(session.scalars(query))


# --- What clients do to a job ------------------------------------------------------------------


def cancel(job: Job) -> None:
    """Queued → cancelled at once; running → cancelling, until its worker has stopped and
    checkpointed (then cancelled). Cancelling a cancelled or cancelling job changes nothing."""
    if job.state in (CANCELLED, CANCELLING):
        return
    if job.state in (SUCCEEDED, FAILED):
        raise StateError(f"job {job.id} has already {job.state}; there is nothing to cancel")
    if job.state == QUEUED:
        _release(job, CANCELLED)
    else:
        job.state, job.updated_at = CANCELLING, _now()
        _state_event(job)


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
    _release(job, QUEUED)


def delete_job(session: Session, job: Job) -> None:
    """Remove the job, its time series and its events (its files are the caller's)."""
    session.delete(job)
    session.flush()


# --- Events ------------------------------------------------------------------------------------


def _state_event(job: Job) -> None:
    job.events.add(
        JobEvent(kind="state", data={"state": job.state, "error": job.error}, created_at=_now())
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


# --- API keys ----------------------------------------------------------------------------------


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def key_owner(key_hash: str) -> str:
    """The owner id of a key: the same whether the key is in the settings or the database."""
    return f"key-{key_hash[:16]}"


def create_api_key(session: Session, name: str) -> tuple[ApiKey, str]:
    """A new key named ``name``: (its row, the secret, which is shown once and never stored)."""
    secret = "gan_" + secrets.token_urlsafe(32)
    key_hash = hash_key(secret)
    key = ApiKey(id=key_owner(key_hash), name=name, key_hash=key_hash, created_at=_now())
    session.add(key)
    session.flush()
    return key, secret


def list_api_keys(session: Session) -> list[ApiKey]:
    return list(session.scalars(select(ApiKey).order_by(ApiKey.created_at)))


def revoke_api_key(session: Session, key_id: str) -> bool:
    """Delete the key; its jobs stay (with nobody left to read them but the database)."""
    deleted = session.execute(delete(ApiKey).where(ApiKey.id == key_id))
    return bool(deleted.rowcount)  # type: ignore[attr-defined]


def stored_key_owner(session: Session, key_hash: str) -> str | None:
    """The owner of the stored key with this hash, if there is one."""
    return session.scalar(select(ApiKey.id).where(ApiKey.key_hash == key_hash))


def has_stored_keys(session: Session) -> bool:
    return session.scalar(select(ApiKey.id).limit(1)) is not None


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
    d_grad_norm: float = math.nan,
    g_grad_norm: float = math.nan,
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
    new_checkpoint = checkpoint_step is not None and checkpoint_step != job.checkpoint_step
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
         "d_grad_norm": d_grad_norm, "g_grad_norm": g_grad_norm,
         "images_per_sec": images_per_sec}
    )  # fmt: skip
    if new_evaluation and metrics is not None:
        if metrics_step is None or metrics_step == step:
            data |= _finite(metrics)
        else:  # evaluated between two reports: a point of its own, at its own step
            job.points.add(MetricPoint(step=metrics_step, data=_finite(metrics)))
    job.points.add(MetricPoint(step=step, data=data))
    now = _now()
    if new_checkpoint:
        job.events.add(JobEvent(kind="checkpoint", data={"step": checkpoint_step}, created_at=now))
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
