"""/jobs: submit training jobs, follow them, cancel, resume and delete them."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import shutil
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any

from celery import Celery
from fastapi import APIRouter, Body, Header, HTTPException, Query, Request, Response, status
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api.deps import (
    AUTH_RESPONSES,
    STORE_DOWN,
    STORE_RESPONSES,
    CeleryDep,
    JobDep,
    OwnerDep,
    RateLimitedOwnerDep,
    SessionDep,
    SettingsDep,
)
from api.errors import field_error
from api.routes.datasets import read_meta
from api.schemas import JobList, JobOut, JobSpec, JobState, ResumeIn
from api.webhooks import webhook_secret
from gan.config import DATASETS, ConfigError, TrainConfig, check_data, resolve
from worker.artifacts import ArtifactStoreError, job_key
from worker.celery_app import TRAIN_TASK
from worker.settings import Settings
from worker.store import jobs, leases, series, webhooks
from worker.store.models import Job

log = logging.getLogger(__name__)
router = APIRouter(prefix="/jobs", tags=["jobs"], responses={**AUTH_RESPONSES, **STORE_RESPONSES})

Responses = dict[int | str, dict[str, Any]]
NOT_FOUND: Responses = {404: {"description": "No such job (or it belongs to another API key)."}}
CONFLICT: Responses = {
    409: {"description": "The job's state does not allow it; the message says why."}
}
UNQUEUED: Responses = {
    503: {
        "description": f"The queue is unreachable; the job is recorded as failed. Or: {STORE_DOWN}"
    }
}


def job_out(job: Job, request: Request) -> JobOut:
    def url(name: str) -> str:
        return str(request.url_for(name, job_id=job.id))

    return JobOut(
        id=job.id,
        state=job.state,
        preset=job.preset,
        config=job.config,
        **series.progress_snapshot(job),
        error=job.error,
        attempts=job.attempts,
        worker=job.lease_owner,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        updated_at=job.updated_at,
        sweep_id=job.sweep_id,
        links={
            **sweep_link(job, request),
            "self": url("get_job"),
            "events": url("job_events"),
            "metrics": url("get_metrics"),
            "checkpoints": url("list_checkpoints"),
            "samples": url("get_samples"),
            "interpolation": url("get_interpolation"),
            "cancel": url("cancel_job"),
            "resume": url("resume_job"),
            "webhooks": url("job_webhooks"),
        },
    )


def sweep_link(job: Job, request: Request) -> dict[str, str]:
    """{"sweep": its URL} for a job of a sweep, else {}."""
    if job.sweep_id is None:
        return {}
    return {"sweep": str(request.url_for("get_sweep", sweep_id=job.sweep_id))}


def resolve_config(spec: Any, settings: Settings, owner: str) -> TrainConfig:
    """The spec's config (preset and overrides), checked against its data when the dataset is
    an upload; raises ConfigError naming the field (rules between fields, and between the
    config and its data)."""
    config = resolve(spec.preset, **spec.overrides())
    if config.dataset not in DATASETS:  # an upload: it must exist and fit the config
        meta = read_meta(settings.artifacts(), config.dataset, owner)
        if meta is None:
            raise ConfigError("dataset", f"no uploaded dataset {config.dataset!r}")
        check_data(config, tuple(meta.shape), meta.num_classes)
    return config


def hash_request(asked: dict[str, Any]) -> str:
    """A hash of what a request asked for, to tell a retry with its Idempotency-Key from a
    different request (jobs and sweeps)."""
    return hashlib.sha256(json.dumps(asked, sort_keys=True).encode()).hexdigest()


def _request_hash(spec: Any) -> str:
    asked = {"preset": spec.preset, **spec.overrides()}
    if spec.webhook is not None:
        asked["webhook"] = spec.webhook.model_dump(mode="json")
    return hash_request(asked)


def _replay(job: Job, request_hash: str, request: Request, response: Response) -> JobOut:
    """The job an earlier request with the same Idempotency-Key created."""
    if job.request_hash != request_hash:
        raise field_error(
            ["header", "Idempotency-Key"],
            f"this Idempotency-Key was used for another job spec (job {job.id}); "
            "use a new key for a new job",
        )
    response.headers["Idempotent-Replayed"] = "true"
    response.headers["Location"] = str(request.url_for("get_job", job_id=job.id))
    return job_out(job, request)


def _concurrent_winner(session: Session, owner: str, idempotency_key: str | None) -> Job:
    """The job that a concurrent request with the same Idempotency-Key created, after ours
    failed the unique constraint on (owner, key). Committed before ours failed, so a fresh
    read (after the rollback) sees it; anything else that failed the insert is a bug."""
    earlier = None
    if idempotency_key is not None:
        earlier = jobs.find_idempotent(session, owner, idempotency_key)
    if earlier is None:
        raise RuntimeError("a new job failed a constraint other than its Idempotency-Key's")
    return earlier


def queue_or_fail(job: Job, celery: Celery, queue: str) -> bool:
    """Send the job's task: True when sent; when the broker is unreachable, the job is marked
    failed (a person can resume it; the caller commits) and False."""
    try:
        celery.send_task(TRAIN_TASK, args=[job.id], queue=queue)
    except Exception as e:  # kombu raises OperationalError and friends
        log.exception("could not enqueue job %s", job.id)
        leases.mark_finished(job, error=f"could not be queued: {e}")
        return False
    return True


def _enqueue(job: Job, session: Session, celery: CeleryDep, queue: str) -> None:
    """Send the job's task; when the broker is unreachable, record the job as failed (a
    person can resume it) and answer 503."""
    if not queue_or_fail(job, celery, queue):
        session.commit()
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            f"job {job.id} could not be queued (broker unreachable); it is recorded as failed "
            f"and can be resumed with POST /jobs/{job.id}/resume",
        )


IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        pattern=r"^[\x21-\x7e]+$",
        description="Any unique string (a UUID, say) of printable ASCII: a retry with the same "
        "key and spec returns the job the first request created instead of a second one.",
    ),
]


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobOut,
    responses={
        **UNQUEUED,
        401: {"description": "An API key is needed, or the one sent is unknown."},
        429: {"description": "Too many jobs a minute for this API key; see Retry-After."},
    },
)
def create_job(
    spec: JobSpec,
    request: Request,
    response: Response,
    session: SessionDep,
    celery: CeleryDep,
    settings: SettingsDep,
    owner: RateLimitedOwnerDep,
    idempotency_key: IdempotencyKey = None,
) -> JobOut:
    """Queue a training job. Answers 202 with the job; follow ``links.self`` for its progress,
    or ``links.events`` for a stream of it."""
    request_hash = _request_hash(spec)
    if idempotency_key is not None:
        earlier = jobs.find_idempotent(session, owner, idempotency_key)
        if earlier is not None:
            return _replay(earlier, request_hash, request, response)
    try:
        config = resolve_config(spec, settings, owner)
    except ConfigError as e:  # rules between fields, and between the config and its data
        raise field_error(["body", e.field], str(e)) from e
    hook = spec.webhook
    secret = webhook_secret(hook, request, settings, owner) if hook is not None else ""
    try:  # the unique (owner, key) constraint fails at flush() (in create_job) or at commit
        job = jobs.create_job(
            session,
            spec.preset,
            config.to_dict(),
            owner=owner,
            idempotency_key=idempotency_key,
            request_hash=request_hash,
        )
        if hook is not None:
            webhooks.add_webhook(
                session, job.id, str(hook.url), hook.events, hook.progress_every_s, secret
            )
        session.commit()  # the job exists before its task can reach a worker
    except IntegrityError:
        session.rollback()
        earlier = _concurrent_winner(session, owner, idempotency_key)
        return _replay(earlier, request_hash, request, response)
    _enqueue(job, session, celery, settings.task_queue)
    response.headers["Location"] = str(request.url_for("get_job", job_id=job.id))
    return job_out(job, request)


def _encode_cursor(job: Job) -> str:
    text = f"{job.created_at.isoformat()}|{job.id}"
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created, job_id = text.split("|", 1)
        return datetime.fromisoformat(created).astimezone(UTC), job_id
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise field_error(
            ["query", "cursor"], "not a cursor from this API: pass next_cursor of the previous page"
        ) from None


@router.get("", response_model=JobList)
def list_jobs(
    request: Request,
    session: SessionDep,
    owner: OwnerDep,
    state: Annotated[
        list[JobState] | None, Query(description="Only jobs in these states (repeat for more).")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500, description="Most jobs to return.")] = 100,
    cursor: Annotated[
        str | None, Query(max_length=200, description="next_cursor of the previous page.")
    ] = None,
) -> JobList:
    """Your jobs, newest first, a page at a time."""
    before = _decode_cursor(cursor) if cursor is not None else None
    page = jobs.list_jobs(session, owner=owner, states=state or (), before=before, limit=limit + 1)
    next_cursor = _encode_cursor(page[limit - 1]) if len(page) > limit else None
    links = {}
    if next_cursor is not None:
        links["next"] = str(request.url.include_query_params(cursor=next_cursor))
    return JobList(
        jobs=[job_out(job, request) for job in page[:limit]], next_cursor=next_cursor, links=links
    )


@router.get("/{job_id}", response_model=JobOut, responses=NOT_FOUND)
async def get_job(job: JobDep, request: Request) -> JobOut:
    """A job's state, progress (step, images/s, ETA), latest losses, latest and best quality
    metrics, warnings, timestamps, resolved config and links."""
    # async: the job is read (JobDep) and its view made without I/O, so neither it nor its
    # response's validation takes a thread hop (``api.deps.current_settings`` says why).
    return job_out(job, request)


@router.post("/{job_id}/cancel", response_model=JobOut, responses={**NOT_FOUND, **CONFLICT})
def cancel_job(job: JobDep, request: Request, session: SessionDep) -> JobOut:
    """Stop a job, keeping its checkpoints. A queued job is cancelled at once; a running one
    becomes ``cancelling`` until its worker has checkpointed and stopped, at its next progress
    report (every log_every steps), then ``cancelled``. 409 for a finished job."""
    try:
        jobs.cancel(job)
    except jobs.StateError as e:
        raise HTTPException(status.HTTP_409_CONFLICT, str(e)) from None
    session.commit()
    return job_out(job, request)


@router.post(
    "/{job_id}/resume",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobOut,
    responses={**NOT_FOUND, **CONFLICT, **UNQUEUED},
)
def resume_job(
    job: JobDep,
    request: Request,
    session: SessionDep,
    celery: CeleryDep,
    settings: SettingsDep,
    _: RateLimitedOwnerDep,
    body: Annotated[ResumeIn | None, Body()] = None,
) -> JobOut:
    """Queue a cancelled or failed job again; it goes on from its newest checkpoint (a failed
    run that diverged rolls back to its last good one). With ``max_steps``, to a new total:
    that also trains a succeeded job further. 409 while it is queued, running or cancelling."""
    try:
        jobs.resume(job, body.max_steps if body is not None else None)
    except jobs.StateError as e:
        raise HTTPException(status.HTTP_409_CONFLICT, str(e)) from None
    except ValueError as e:
        raise field_error(["body", "max_steps"], str(e)) from None
    session.commit()
    _enqueue(job, session, celery, settings.task_queue)
    return job_out(job, request)


@router.delete("/{job_id}", status_code=status.HTTP_204_NO_CONTENT, responses=NOT_FOUND)
def delete_job(job: JobDep, session: SessionDep, settings: SettingsDep) -> Response:
    """Remove a job, its metrics, events and files. A running job's worker stops at its next
    progress report and removes anything it wrote since. An artifact store that cannot be
    reached is a 503 before anything is removed (the job stays, to be deleted again)."""
    delete_with_files(settings, [job.id], lambda: jobs.delete_job(session, job), session)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


def delete_with_files(
    settings: Settings, job_ids: Sequence[str], delete_rows: Callable[[], None], session: Session
) -> None:
    """Remove the jobs' objects from the artifact store, then their rows (``delete_rows``,
    committed), then this machine's copies and whatever a worker wrote meanwhile (it removes
    what it writes after this, too). A store that cannot be reached raises before any row is
    removed (a 503: the jobs stay, to be deleted again)."""
    store = settings.artifacts()
    for job_id in job_ids:
        store.delete_prefix(job_key(job_id))
    delete_rows()
    session.commit()
    for job_id in job_ids:
        shutil.rmtree(settings.job_dir(job_id), ignore_errors=True)  # this machine's copies
        try:
            store.delete_prefix(job_key(job_id))
        except ArtifactStoreError as e:
            log.warning("job %s deleted, but not all of its files: %s", job_id, e)
