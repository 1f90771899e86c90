"""/jobs: submit training jobs and follow them."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request, Response, status

from api.deps import CeleryDep, SessionDep, SettingsDep
from api.routes.datasets import read_meta
from api.schemas import JobList, JobOut, JobSpec, WarningOut
from gan.config import DATASETS, ConfigError, check_data, resolve
from worker import store
from worker.celery_app import TRAIN_TASK

log = logging.getLogger(__name__)
router = APIRouter(prefix="/jobs", tags=["jobs"])


def job_out(job: store.Job, request: Request) -> JobOut:
    self_url = str(request.url_for("get_job", job_id=job.id))
    latest = dict(job.metrics or {})
    metrics_step = latest.pop("step", None)
    return JobOut(
        id=job.id,
        state=job.state,
        preset=job.preset,
        config=job.config,
        step=job.step,
        total_steps=job.total_steps,
        images_per_sec=job.images_per_sec,
        d_loss=job.d_loss,
        g_loss=job.g_loss,
        checkpoint_step=job.checkpoint_step,
        metrics=latest,
        metrics_step=metrics_step,
        best_metrics=job.best_metrics,
        warnings=[WarningOut(**w) for w in job.warnings or []],
        error=job.error,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        updated_at=job.updated_at,
        links={
            "self": self_url,
            "samples": str(request.url_for("get_samples", job_id=job.id)),
            "metrics": str(request.url_for("get_metrics", job_id=job.id)),
        },
    )


def get_job_or_404(session: SessionDep, job_id: str) -> store.Job:
    job = store.get_job(session, job_id)
    if job is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no job with id {job_id!r}")
    return job


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobOut,
    responses={503: {"description": "The queue is unreachable; the job is recorded as failed."}},
)
def create_job(
    spec: JobSpec,
    request: Request,
    response: Response,
    session: SessionDep,
    celery: CeleryDep,
    settings: SettingsDep,
) -> JobOut:
    """Queue a training job. Answers 202 with the job; follow ``links.self`` for its progress."""
    try:
        config = resolve(spec.preset, **spec.overrides())
        if config.dataset not in DATASETS:  # an upload: it must exist and fit the config
            meta = read_meta(settings.datasets_dir / config.dataset)
            if meta is None:
                raise ConfigError("dataset", f"no uploaded dataset {config.dataset!r}")
            check_data(config, tuple(meta.shape), meta.num_classes)
    except ConfigError as e:  # rules between fields, and between the config and its data
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            [{"loc": ["body", e.field], "msg": str(e), "type": "value_error"}],
        ) from e
    job = store.create_job(session, spec.preset, config.to_dict())
    session.commit()  # the job exists before its task can reach a worker
    try:
        celery.send_task(TRAIN_TASK, args=[job.id], queue=settings.task_queue)
    except Exception as e:  # kombu raises OperationalError and friends
        log.exception("could not enqueue job %s", job.id)
        store.mark_finished(job, error=f"could not be queued: {e}")
        session.commit()
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            f"job {job.id} could not be queued (broker unreachable); it is recorded as failed",
        ) from e
    response.headers["Location"] = str(request.url_for("get_job", job_id=job.id))
    return job_out(job, request)


@router.get("", response_model=JobList)
def list_jobs(
    request: Request,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=500, description="Most jobs to return.")] = 100,
) -> JobList:
    """Jobs, newest first."""
    return JobList(jobs=[job_out(job, request) for job in store.list_jobs(session, limit)])


@router.get("/{job_id}", response_model=JobOut, responses={404: {"description": "No such job."}})
def get_job(job_id: str, request: Request, session: SessionDep) -> JobOut:
    """A job's state, progress, latest losses, latest and best quality metrics, warnings and
    resolved config."""
    return job_out(get_job_or_404(session, job_id), request)
