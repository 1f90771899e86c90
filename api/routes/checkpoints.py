"""/jobs/{id}/checkpoints: a job's checkpoint files, listed and downloaded."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, BinaryIO

from fastapi import APIRouter, Path, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import AfterValidator

from api.deps import AUTH_RESPONSES, STORE_DOWN, STORE_RESPONSES, JobDep, SessionDep, SettingsDep
from api.routes.samples import (
    CHECKPOINT_HEADERS,
    CHECKPOINT_PATTERN,
    checkpoint_errors,
    checkpoint_name,
)
from api.schemas import CheckpointList, CheckpointOut
from worker.store import series

if TYPE_CHECKING:
    from api.sampling import Found

router = APIRouter(
    prefix="/jobs", tags=["checkpoints"], responses={**AUTH_RESPONSES, **STORE_RESPONSES}
)

CHECKPOINT_MEDIA_TYPE = "application/octet-stream"
CHUNK_SIZE = 1 << 20

NamePath = Annotated[
    str,
    Path(
        max_length=20,
        description='A step number (see GET /jobs/{id}/checkpoints), "latest" or "best".',
        json_schema_extra={"pattern": CHECKPOINT_PATTERN, "examples": ["best", "latest", "3000"]},
    ),
    AfterValidator(checkpoint_name),
]


@router.get(
    "/{job_id}/checkpoints",
    response_model=CheckpointList,
    responses={404: {"description": "No such job."}},
)
def list_checkpoints(
    job: JobDep, request: Request, session: SessionDep, settings: SettingsDep
) -> CheckpointList:
    """The job's checkpoint files on disk, oldest first: its newest keep_checkpoints steps and,
    when the run keeps one, best.pt (the best evaluation's), each with its step, time, size, the
    evaluation made at its step and a download URL."""
    from api import sampling  # imports torch (best.pt's step is read from the file)

    with checkpoint_errors(job):
        found = sampling.listing(sampling.Checkpoints.of(settings, job.id))
    best_step = next((f.step for f in found if f.kind == "best"), None)
    points = series.points_at_steps(session, job.id, [f.step for f in found])
    # The evaluation's metrics are those of the job's latest one (the same every evaluation);
    # a point has them only at the steps where one was made, beside the progress report's.
    names = [name for name in job.metrics or {} if name != "step"]
    return CheckpointList(
        job_id=job.id,
        checkpoints=[
            _checkpoint_out(
                request, job.id, f, f.step == best_step, _evaluation(points.get(f.step), names)
            )
            for f in found
        ],
    )


def _evaluation(
    point: dict[str, float | None] | None, names: list[str]
) -> dict[str, float | None] | None:
    """The values of the metrics ``names`` in a metric point, None when it has none."""
    values = {name: point[name] for name in names if point is not None and name in point}
    return values or None


def _checkpoint_out(
    request: Request,
    job_id: str,
    found: Found,
    best: bool,
    evaluation: dict[str, float | None] | None,
) -> CheckpointOut:
    name = "best" if found.kind == "best" else str(found.step)
    return CheckpointOut(
        name=name,
        step=found.step,
        created_at=datetime.fromtimestamp(found.entry.modified, UTC),
        size_bytes=found.size,
        best=best,
        metrics=evaluation,
        download=str(request.url_for("download_checkpoint", job_id=job_id, name=name)),
    )


@router.get(
    "/{job_id}/checkpoints/{name:path}",
    response_class=Response,
    responses={
        200: {
            "description": "The checkpoint file (torch.save of plain types and tensors; load "
            "it with torch.load(..., weights_only=True) or `gan sample`).",
            "content": {CHECKPOINT_MEDIA_TYPE: {}},
            "headers": {
                "Content-Disposition": {
                    "description": 'attachment; filename="<job>-step-NNNNNNNN.pt" (or '
                    "<job>-best-step-NNNNNNNN.pt for best).",
                    "schema": {"type": "string"},
                },
                **CHECKPOINT_HEADERS,
            },
        },
        404: {
            "description": "No such job, or no such checkpoint on disk (the message lists "
            "those that are)."
        },
        409: {
            "description": "The job has no checkpoint yet (name=latest), or the file named is "
            "damaged (it fails its checksum): the message says which."
        },
        503: {
            "description": "Training replaced the checkpoint while it was read, again and "
            f"again. Or: {STORE_DOWN}"
        },
    },
)
def download_checkpoint(job: JobDep, settings: SettingsDep, name: NamePath) -> Response:
    """Download one of the job's checkpoint files: a step, the latest or best.pt. The file is
    checked against its checksum (a damaged one is a 409 saying so, ``latest`` included: ask
    for an older step) and opened before the response starts, so training pruning it meanwhile
    does no harm."""
    from api import sampling

    def open_named() -> tuple[Found, BinaryIO]:
        found = sampling.find(sampling.Checkpoints.of(settings, job.id), name)
        sampling.verify(found)  # a file that fails its checksum is a 409, never a download
        return found, sampling.open_file(found)

    with checkpoint_errors(job):
        found, file = sampling.retry_on_change(open_named)
    prefix = "best-" if found.kind == "best" else ""
    headers = {
        "Content-Length": str(found.size),
        "Content-Disposition": f'attachment; filename="{job.id}-{prefix}step-{found.step:08d}.pt"',
        "X-Checkpoint-Step": str(found.step),
        "X-Checkpoint": found.kind,
    }
    return StreamingResponse(_chunks(file), media_type=CHECKPOINT_MEDIA_TYPE, headers=headers)


def _chunks(file: BinaryIO) -> Iterator[bytes]:
    """The bytes of an open file, in chunks; closes it at the end."""
    with file:
        while chunk := file.read(CHUNK_SIZE):
            yield chunk
