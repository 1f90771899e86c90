"""The FastAPI application: ``uvicorn api.main:app``."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.errors import (
    STORE_ERRORS,
    artifact_store_error_handler,
    http_error_handler,
    store_error_handler,
    validation_error_handler,
)
from api.heap import freeze_long_lived
from api.logcontext import JobLogContext
from api.metricsdir import mark_dead_at_exit
from api.middleware import BodySizeLimit, CurlJSONBodies
from api.prometheus import ApiMetrics, ObserveSamplingLatency
from api.routes import (
    checkpoints,
    dashboard,
    datasets,
    events,
    generator,
    health,
    jobs,
    metrics,
    presets,
    prometheus,
    samples,
    sweeps,
    webhooks,
    workers,
)
from worker.artifacts import ArtifactStoreError

DESCRIPTION = """
Train a GAN without babysitting it: POST a job spec to `/jobs`, follow `GET /jobs/{id}` (or its
Server-Sent Events at `/jobs/{id}/events`), and GET freshly generated images from
`/jobs/{id}/samples`. Cancel, resume and delete jobs; list and download their checkpoints.
POST a base spec and a grid of values to `/sweeps` for one job per point, ranked by quality.

When the service has API keys, send yours as `Authorization: Bearer <key>` or `X-API-Key: <key>`;
each job belongs to the key that created it.
"""


def create_app() -> FastAPI:
    app = FastAPI(title="GAN training service", version="0.1.0", description=DESCRIPTION)
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    app.add_exception_handler(StarletteHTTPException, http_error_handler)
    for store_error in STORE_ERRORS:  # the job store is down: 503, never 500
        app.add_exception_handler(store_error, store_error_handler)
    app.add_exception_handler(ArtifactStoreError, artifact_store_error_handler)
    app.state.metrics = ApiMetrics()  # this app's own Prometheus registry
    mark_dead_at_exit()  # under `gan serve --processes N`, this process's live gauges go at exit
    # Innermost first: the latency observer sees the scope the router fills in.
    app.add_middleware(ObserveSamplingLatency, histogram=app.state.metrics.sampling_latency)
    app.add_middleware(CurlJSONBodies)
    app.add_middleware(BodySizeLimit)
    app.add_middleware(JobLogContext)
    app.include_router(jobs.router)
    app.include_router(sweeps.router)
    app.include_router(events.router)
    app.include_router(webhooks.router)
    app.include_router(samples.router)
    app.include_router(checkpoints.router)
    app.include_router(generator.router)
    app.include_router(metrics.router)
    app.include_router(presets.router)
    app.include_router(datasets.router)
    app.include_router(workers.router)
    app.include_router(health.router)
    app.include_router(prometheus.router)
    app.include_router(dashboard.router)  # the web dashboard at /, its files at /ui
    app.mount("/ui", dashboard.DashboardFiles(), name="ui")
    return app


app = create_app()
freeze_long_lived()  # the modules and the app, out of the garbage collector's way
