"""/metrics: the service's metrics for Prometheus (not /jobs/{id}/metrics, a job's own)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from api.deps import SettingsDep
from api.prometheus import CONTENT_TYPE, ApiMetrics, scrape

router = APIRouter(tags=["operations"])


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {
            "description": "Prometheus's text format (version 0.0.4).",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        }
    },
)
def prometheus_metrics(request: Request, settings: SettingsDep) -> Response:
    """Metrics for Prometheus, read from the job store and the broker at each scrape:
    `gan_jobs{state}`, `gan_job_duration_seconds{state}` (histogram of finished jobs),
    `gan_training_images_per_second` (sum over running jobs), `gan_queue_depth{queue}`,
    `gan_worker_slots` and `gan_worker_slots_busy` (the live workers' training slots); and
    measured by the API processes (summed over `gan serve --processes N`, whichever answers):
    `gan_sampling_latency_seconds{route, status}`."""
    metrics: ApiMetrics = request.app.state.metrics
    return Response(scrape(metrics, settings), media_type=CONTENT_TYPE)
