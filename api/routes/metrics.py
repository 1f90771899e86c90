"""/jobs/{id}/metrics: a job's time series of losses and quality metrics."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from api.deps import AUTH_RESPONSES, STORE_RESPONSES, JobDep, SessionDep
from api.schemas import MetricPointOut, MetricsOut
from gan.config import BOUNDS
from worker.store import series

router = APIRouter(
    prefix="/jobs", tags=["metrics"], responses={**AUTH_RESPONSES, **STORE_RESPONSES}
)


@router.get(
    "/{job_id}/metrics", response_model=MetricsOut, responses={404: {"description": "No such job."}}
)
def get_metrics(
    job: JobDep,
    session: SessionDep,
    since_step: Annotated[
        int | None,
        Query(
            ge=0,
            le=BOUNDS["max_steps"][1],
            description="Only points after this step (to poll: the last step you have).",
        ),
    ] = None,
    max_points: Annotated[
        int, Query(ge=1, le=10_000, description="Most points to return, picked evenly.")
    ] = 1000,
) -> MetricsOut:
    """The job's metrics over training: one point per progress report (every log_every steps)
    with the losses, the mean D logits and the throughput, and the quality evaluation's metrics
    at the steps one was made (every eval_every steps). A resumed or rolled-back job's points
    follow the run that went on."""
    total, points = series.metric_points(
        session, job.id, since_step=since_step, max_points=max_points
    )
    return MetricsOut(
        job_id=job.id,
        total_points=total,
        points=[MetricPointOut(step=p.step, **p.data) for p in points],
    )
