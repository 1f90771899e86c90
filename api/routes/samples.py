"""/jobs/{id}/samples: generated images from one of a job's checkpoints."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query, Response, status
from pydantic import AfterValidator

from api.deps import SessionDep, SettingsDep
from api.routes.jobs import get_job_or_404

router = APIRouter(prefix="/jobs", tags=["samples"])

NPY_MEDIA_TYPE = "application/octet-stream"
CHECKPOINT_PATTERN = r"^(latest|best|[0-9]+)$"


def _checkpoint_name(value: str | None) -> str | None:
    """``value`` if it names a checkpoint: "latest", "best" or a step (ASCII digits)."""
    if value is None or value in ("latest", "best") or (value.isascii() and value.isdigit()):
        return value
    raise ValueError('checkpoint must be "latest", "best" or a non-negative integer step')


CheckpointQuery = Annotated[
    str | None,
    Query(
        max_length=20,
        description='Which checkpoint: "latest", "best" (that of the best evaluation), or a '
        "step number (GET /jobs/{id} shows checkpoint_step and best_metrics.step; a run keeps "
        "its newest keep_checkpoints steps). Default: best when the run keeps one, else latest.",
        json_schema_extra={"pattern": CHECKPOINT_PATTERN, "examples": ["best", "latest", "3000"]},
    ),
    AfterValidator(_checkpoint_name),
]


@router.get(
    "/{job_id}/samples",
    response_class=Response,
    responses={
        200: {
            "description": "A PNG grid of the images (format=png; a scatter plot for 2D point "
            "datasets), or the raw samples in NumPy .npy format (format=npy): uint8 (n, H, W) "
            "for 1-channel images, (n, C, H, W) for colour, float32 (n, 2) for points.",
            "content": {"image/png": {}, NPY_MEDIA_TYPE: {}},
            "headers": {
                "X-Checkpoint-Step": {
                    "description": "Step of the checkpoint used.",
                    "schema": {"type": "integer"},
                },
                "X-Checkpoint": {
                    "description": "How it was picked: latest, best or step.",
                    "schema": {"type": "string", "enum": ["latest", "best", "step"]},
                },
            },
        },
        404: {
            "description": "No such job, or no such checkpoint on disk (the message lists "
            "those that are)."
        },
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
    checkpoint: CheckpointQuery = None,
) -> Response:
    """Fresh samples from one of the job's checkpoints, while it trains and after: by default
    the best one (lowest fid, kl or mode_kl of the evaluations) when the run keeps one, else the
    newest. From the generator's moving average (EMA) when the run kept one.

    Same job, checkpoint and seed → the same bytes. The PNG is a grid of ceil(sqrt(n)) images per
    row (8x8 for n=64) with 2-pixel borders. A class-conditional generator draws classes
    0, 1, …, K−1 in turn.
    """
    job = get_job_or_404(session, job_id)
    from api import sampling  # imports torch: only on the first sampling request
    from gan.sample import npy_bytes, preview_png

    try:
        result = sampling.sample(settings.checkpoint_dir(job.id), checkpoint, n, seed)
    except sampling.NoCheckpoint:
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            f"job {job.id} has no checkpoint yet (state {job.state}); "
            f"the first is written at step {job.config['checkpoint_every']}",
        ) from None
    except sampling.CheckpointNotFound as e:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"job {job.id} has {e}") from None
    step = result.step
    headers = {
        "X-Checkpoint-Step": str(step),
        "X-Checkpoint": result.checkpoint,
        "Content-Disposition": f'inline; filename="{job.id}-step{step}-seed{seed}.{format}"',
    }
    if format == "npy":
        return Response(npy_bytes(result.samples), media_type=NPY_MEDIA_TYPE, headers=headers)
    return Response(preview_png(result.samples), media_type="image/png", headers=headers)
