"""/jobs/{id}/samples: generated images from a job's newest checkpoint."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query, Response, status

from api.deps import SessionDep, SettingsDep
from api.routes.jobs import get_job_or_404

router = APIRouter(prefix="/jobs", tags=["samples"])

NPY_MEDIA_TYPE = "application/octet-stream"


@router.get(
    "/{job_id}/samples",
    response_class=Response,
    responses={
        200: {
            "description": "A PNG grid of the images (format=png; a scatter plot for 2D point "
            "datasets), or the raw samples in NumPy .npy format (format=npy): uint8 (n, H, W) "
            "for 1-channel images, (n, C, H, W) for colour, float32 (n, 2) for points.",
            "content": {"image/png": {}, NPY_MEDIA_TYPE: {}},
            "headers": {"X-Checkpoint-Step": {"description": "Step of the checkpoint used."}},
        },
        404: {"description": "No such job."},
        409: {"description": "The job has no checkpoint yet."},
    },
)
def get_samples(
    job_id: str,
    session: SessionDep,
    settings: SettingsDep,
    n: Annotated[int, Query(ge=1, le=1024, description="Number of images.")] = 64,
    seed: Annotated[int, Query(ge=0, le=2**31 - 1, description="Noise seed.")] = 0,
    format: Annotated[Literal["png", "npy"], Query(description="Response format.")] = "png",
) -> Response:
    """Fresh samples from the job's newest checkpoint, while it trains and after; from the
    generator's moving average (EMA) when the run kept one.

    Same job, checkpoint and seed → the same bytes. The PNG is a grid of ceil(sqrt(n)) images per
    row (8x8 for n=64) with 2-pixel borders. A class-conditional generator draws classes
    0, 1, …, K−1 in turn.
    """
    job = get_job_or_404(session, job_id)
    from api import sampling  # imports torch: only on the first sampling request
    from gan.sample import npy_bytes, preview_png

    result = sampling.sample_latest(settings.checkpoint_dir(job.id), n, seed)
    if result is None:
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            f"job {job.id} has no checkpoint yet (state {job.state}); "
            f"the first is written at step {job.config['checkpoint_every']}",
        )
    images, step = result
    headers = {
        "X-Checkpoint-Step": str(step),
        "Content-Disposition": f'inline; filename="{job.id}-step{step}-seed{seed}.{format}"',
    }
    if format == "npy":
        return Response(npy_bytes(images), media_type=NPY_MEDIA_TYPE, headers=headers)
    return Response(preview_png(images), media_type="image/png", headers=headers)
