"""The FastAPI application: ``uvicorn api.main:app``."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError

from api.errors import validation_error_handler
from api.middleware import BodySizeLimit, CurlJSONBodies
from api.routes import datasets, health, jobs, metrics, presets, samples

DESCRIPTION = """
Train a GAN without babysitting it: POST a job spec to `/jobs`, follow `GET /jobs/{id}`, and GET
freshly generated images from `/jobs/{id}/samples`.
"""


def create_app() -> FastAPI:
    app = FastAPI(title="GAN training service", version="0.1.0", description=DESCRIPTION)
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    app.add_middleware(CurlJSONBodies)
    app.add_middleware(BodySizeLimit)
    app.include_router(jobs.router)
    app.include_router(samples.router)
    app.include_router(metrics.router)
    app.include_router(presets.router)
    app.include_router(datasets.router)
    app.include_router(health.router)
    return app


app = create_app()
