"""/jobs/{id}/samples and /jobs/{id}/interpolation: generated images from one of a job's
checkpoints, with ETags (the same checkpoint file and parameters give the same bytes)."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request, Response, status
from pydantic import AfterValidator, BeforeValidator, Field

from api.deps import (
    AUTH_RESPONSES,
    STORE_DOWN,
    STORE_RESPONSES,
    ClientKeyDep,
    JobDep,
    SettingsDep,
    settings_now,
)
from api.errors import field_error
from api.slots import sampling_admissions
from worker.artifacts import SETTING as ARTIFACTS_SETTING
from worker.settings import Settings
from worker.store.models import Job

if TYPE_CHECKING:
    from gan.sample import LoadedGenerator

router = APIRouter(
    prefix="/jobs", tags=["samples"], responses={**AUTH_RESPONSES, **STORE_RESPONSES}
)

NPY_MEDIA_TYPE = "application/octet-stream"
CHECKPOINT_PATTERN = r"^(latest|best|[0-9]+)$"
MAX_SAMPLES = 1024  # per response


def checkpoint_name(value: str | None) -> str | None:
    """``value`` if it names a checkpoint: "latest", "best" or a step (ASCII digits)."""
    if value is None or value in ("latest", "best") or (value.isascii() and value.isdigit()):
        return value
    raise ValueError('checkpoint must be "latest", "best" or a non-negative integer step')


def _label(value: Any) -> Any:
    """A class number (ASCII digits) as an int, or "rows"; anything else is refused."""
    if value is None or value == "rows" or isinstance(value, int):
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 9:
        return int(value)
    raise ValueError('label must be a class number (0, 1, …) or "rows"')


CHECKPOINT_DESCRIPTION = (
    'Which checkpoint: "latest", "best" (that of the best evaluation), or a step number '
    "(GET /jobs/{id}/checkpoints lists them; a run keeps its newest keep_checkpoints steps). "
    "Default: best when the run keeps one, else latest."
)
CheckpointQuery = Annotated[
    str | None,
    Query(
        max_length=20,
        description=CHECKPOINT_DESCRIPTION,
        json_schema_extra={"pattern": CHECKPOINT_PATTERN, "examples": ["best", "latest", "3000"]},
    ),
    AfterValidator(checkpoint_name),
]
SeedQuery = Annotated[int, Query(ge=0, le=2**31 - 1, description="Noise seed.")]
FormatQuery = Annotated[
    Literal["png", "npy"],
    Query(description="png: a picture; npy: the raw samples as a NumPy array."),
]
EmaQuery = Annotated[
    bool,
    Query(
        description="Sample from the exponential moving average (EMA) of the generator's "
        "weights when the run kept one (ema_decay > 0; the X-Generator header says which were "
        "used); false: the raw generator."
    ),
]
TruncationQuery = Annotated[
    float | None,
    Query(
        gt=0,
        le=4,
        allow_inf_nan=False,
        description="The truncation trick: latent entries with |z| > truncation are redrawn "
        "(deterministically from the seed) from the normal restricted to [−truncation, "
        "truncation], trading diversity for fidelity (smaller: more typical, less varied). "
        "Default: none.",
    ),
]
IfNoneMatchHeader = Annotated[
    str | None,
    Header(
        description="ETags of responses the client has: a 304 without a body when one "
        "matches (the same checkpoint file and parameters give the same bytes)."
    ),
]

CHECKPOINT_HEADERS = {
    "X-Checkpoint-Step": {
        "description": "Step of the checkpoint used.",
        "schema": {"type": "integer"},
    },
    "X-Checkpoint": {
        "description": "How it was picked: latest, best or step.",
        "schema": {"type": "string", "enum": ["latest", "best", "step"]},
    },
}
COMMON_HEADERS = {
    **CHECKPOINT_HEADERS,
    "X-Generator": {
        "description": "Which weights drew the samples: ema (the generator's moving average) "
        "or raw (ema=false, or the run kept no EMA).",
        "schema": {"type": "string", "enum": ["ema", "raw"]},
    },
    "ETag": {
        "description": "Strong validator: a hash of the checkpoint file (path, size, mtime) and "
        "every parameter. Send it back in If-None-Match to get a 304 when nothing changed.",
        "schema": {"type": "string"},
    },
    "Cache-Control": {
        "description": "no-cache: revalidate (latest and best move as training goes on).",
        "schema": {"type": "string"},
    },
}
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    304: {"description": "Not modified: If-None-Match has this response's ETag; no body."},
    404: {
        "description": "No such job, or no such checkpoint on disk (the message lists "
        "those that are)."
    },
    409: {
        "description": "The job has no checkpoint yet, or the one asked for is unreadable "
        "(truncated or damaged: its checksum does not match)."
    },
    422: {"description": "A parameter is out of range, or does not fit the job's model (label)."},
    503: {
        "description": "Training replaced the checkpoint while it was read, again and again; "
        "or the API process is generating its most samples at once (see Retry-After). "
        f"Or: {STORE_DOWN}"
    },
}


@contextmanager
def checkpoint_errors(job: Job) -> Iterator[None]:
    """``api.sampling``'s lookup errors as HTTP errors: 409 (no checkpoint yet, or it is
    unreadable: truncated, damaged, not a checkpoint), 404 (not on disk) and 503 (changed while
    read, every attempt)."""
    from api import sampling

    try:
        yield
    except sampling.CheckpointError as e:
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            f"job {job.id}'s checkpoint cannot be used: {e}; ask for another with ?checkpoint= "
            f"(GET /jobs/{job.id}/checkpoints lists them)",
        ) from None
    except sampling.NoCheckpoint as e:
        if job.checkpoint_step is not None:  # written where this API does not look
            raise HTTPException(
                status.HTTP_409_CONFLICT,
                f"job {job.id} has a checkpoint at step {job.checkpoint_step}, but the API "
                f"finds none in the artifact store {e} "
                f"({ARTIFACTS_SETTING}): the API and the workers must share one store",
            ) from None
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            f"job {job.id} has no checkpoint yet (state {job.state}); "
            f"the first is written at step {job.config['checkpoint_every']}",
        ) from None

    except sampling.CheckpointNotFound as e:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"job {job.id} has {e}") from None
    except sampling.CheckpointChanged:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            f"job {job.id}'s checkpoint changed while it was read (training is writing "
            "checkpoints); try again",
            headers={"Retry-After": "1"},
        ) from None


def not_modified(if_none_match: str | None, etag: str) -> bool:
    """Whether an If-None-Match header matches ``etag`` (weak comparison, as for GET)."""
    if if_none_match is None:
        return False
    tags = [tag.strip().removeprefix("W/") for tag in if_none_match.split(",")]
    return "*" in tags or etag in tags


def check_label(job: Job, num_classes: int, label: int | str | None) -> None:
    """422 naming ``label`` unless it fits the job's generator with ``num_classes`` classes."""
    if label is None:
        return
    if not num_classes:
        raise field_error(
            ["query", "label"],
            f"job {job.id}'s model is not conditional (conditional: "
            f"{job.config.get('conditional', 'none')}): it draws no classes; leave label out",
        )
    if label != "rows" and not (isinstance(label, int) and label < num_classes):
        raise field_error(
            ["query", "label"],
            f'label must be a class from 0 to {num_classes - 1}, or "rows", not {label}',
        )


async def sampling_room(request: Request) -> AsyncIterator[None]:
    """One of the process's ``max_samplings`` places for a sample request, held until the
    route returns; a 503 at once when all are held. First of the routes' dependencies, and on
    the event loop, so that a burst of requests past the bound is refused before it takes a
    thread or a job store connection (its key's and job's lookups) from the requests that are
    served meanwhile: checking only how many generate, as before, let a whole burst's
    lookups through, since none of it generated yet when it arrived."""
    give_back = sampling_admissions(settings_now(request)).admit()
    try:
        yield
    finally:
        give_back()


# scope="function": given back when the route returns, before its response is sent.
RoomDep = Annotated[None, Depends(sampling_room, scope="function")]

Render = Callable[["LoadedGenerator"], tuple[bytes, str, str]]  # → (body, media type, filename)


def respond(
    job: Job,
    settings: Settings,
    client: str,
    checkpoint: str | None,
    ema: bool,
    if_none_match: str | None,
    parameters: dict[str, Any],
    render: Render,
) -> Response:
    """The response ``render`` makes from the generator of the named checkpoint, with its ETag,
    or a 304 when ``if_none_match`` has that ETag (without loading or generating anything).
    Rendering holds one of the sampling slots (``samplings_per_key`` for ``client``): past
    them, a 429; a cached rendering needs none. (The bound in all, ``max_samplings``, is the
    route's ``sampling_room``.)"""
    from api import sampling

    def attempt() -> Response:
        found = sampling.find(sampling.Checkpoints.of(settings, job.id), checkpoint)
        etag = sampling.etag(found, ema=ema, **parameters)
        cache = {"ETag": etag, "Cache-Control": "no-cache"}
        if not_modified(if_none_match, etag):
            return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers=cache)

        def generate() -> tuple[LoadedGenerator, tuple[bytes, str, str]]:
            loaded = sampling.load(found, ema)
            return loaded, render(loaded)

        def make() -> tuple[bytes, tuple[str, dict[str, str]]]:
            with sampling.slot(client, settings):
                loaded, (body, media_type, filename) = sampling.generating(settings, generate)
            return body, (media_type, {
                "X-Checkpoint-Step": str(loaded.step),
                "X-Checkpoint": found.kind,
                "X-Generator": "ema" if loaded.ema else "raw",
                "Content-Disposition": f'inline; filename="{filename}"',
            })  # fmt: skip

        body, (media_type, headers) = sampling.rendered(etag, make)
        return Response(body, media_type=media_type, headers={**cache, **headers})

    with checkpoint_errors(job):
        return sampling.retry_on_change(attempt)


@router.get(
    "/{job_id}/samples",
    response_class=Response,
    responses={
        200: {
            "description": "A PNG grid of the images (format=png; a scatter plot for 2D point "
            "datasets), or the raw samples in NumPy .npy format (format=npy): uint8 (n, H, W) "
            "for 1-channel images, (n, C, H, W) for colour, float32 (n, 2) for points.",
            "content": {"image/png": {}, NPY_MEDIA_TYPE: {}},
            "headers": COMMON_HEADERS,
        },
        **ERROR_RESPONSES,
    },
)
def get_samples(
    _: RoomDep,
    job: JobDep,
    settings: SettingsDep,
    client: ClientKeyDep,
    n: Annotated[
        int,
        Query(
            ge=1,
            le=MAX_SAMPLES,
            description="Number of images (with label=rows: K·nrow, whatever n is).",
        ),
    ] = 64,
    seed: SeedQuery = 0,
    format: FormatQuery = "png",
    checkpoint: CheckpointQuery = None,
    label: Annotated[
        Annotated[int, Field(ge=0)] | Literal["rows"] | None,
        BeforeValidator(_label),
        Query(
            description="Conditional models only (a 422 for others): a class number 0…K−1 "
            'draws every sample of that class; "rows" draws one row per class, nrow samples '
            "each (class k in row k, the same latent down each column), so K·nrow samples "
            "and n only sets nrow's default. Default: classes 0, 1, …, K−1 in turn.",
            json_schema_extra={"examples": [7, "rows"]},
        ),
    ] = None,
    ema: EmaQuery = True,
    truncation: TruncationQuery = None,
    nrow: Annotated[
        int | None,
        Query(
            ge=1,
            le=MAX_SAMPLES,
            description="Images per row of the PNG grid. Default: ceil(sqrt(n)).",
        ),
    ] = None,
    if_none_match: IfNoneMatchHeader = None,
) -> Response:
    """Fresh samples from one of the job's checkpoints, while it trains and after: by default
    the best one (lowest fid, kl or mode_kl of the evaluations) when the run keeps one, else the
    newest. From the generator's moving average (EMA) when the run kept one, unless ema=false.

    The same checkpoint file and parameters give the same bytes, and the same strong ETag:
    If-None-Match with it answers 304. The PNG is a grid of nrow images per row (default
    ceil(sqrt(n)): 8x8 for n=64) with 2-pixel borders. A class-conditional generator draws
    classes 0, 1, …, K−1 in turn, one class (label=k), or one row per class (label=rows).
    """
    from api import sampling
    from gan.sample import npy_bytes, preview_png

    per_row = nrow or math.ceil(math.sqrt(n))
    parameters = {
        "endpoint": "samples",
        "n": None if label == "rows" else n,
        "seed": seed,
        "format": format,
        "label": label,
        "truncation": truncation,
        "nrow": per_row,
    }

    def render(loaded: LoadedGenerator) -> tuple[bytes, str, str]:
        num_classes = loaded.generator.num_classes
        check_label(job, num_classes, label)
        if label == "rows" and num_classes * per_row > MAX_SAMPLES:
            raise field_error(
                ["query", "nrow"],
                f"label=rows draws {num_classes} rows of nrow samples, at most {MAX_SAMPLES} "
                f"in all: nrow must be at most {MAX_SAMPLES // num_classes}",
            )
        samples = sampling.draw(loaded.generator, n, seed, label, truncation, per_row)
        filename = f"{job.id}-step{loaded.step}-seed{seed}.{format}"
        if format == "npy":
            return npy_bytes(samples), NPY_MEDIA_TYPE, filename
        return preview_png(samples, per_row), "image/png", filename

    return respond(job, settings, client, checkpoint, ema, if_none_match, parameters, render)


@router.get(
    "/{job_id}/interpolation",
    response_class=Response,
    responses={
        200: {
            "description": "A PNG grid with one latent walk per row, steps images each "
            "(format=png; a scatter plot of every point for 2D point datasets), or the raw "
            "samples in NumPy .npy format (format=npy): (rows, steps, …), … as for samples.",
            "content": {"image/png": {}, NPY_MEDIA_TYPE: {}},
            "headers": COMMON_HEADERS,
        },
        **ERROR_RESPONSES,
    },
)
def get_interpolation(
    _: RoomDep,
    job: JobDep,
    settings: SettingsDep,
    client: ClientKeyDep,
    seed_from: Annotated[
        int, Query(ge=0, le=2**31 - 1, description="Noise seed of the first column.")
    ] = 0,
    seed_to: Annotated[
        int, Query(ge=0, le=2**31 - 1, description="Noise seed of the last column.")
    ] = 1,
    steps: Annotated[
        int, Query(ge=2, le=64, description="Images per walk, both ends included.")
    ] = 10,
    rows: Annotated[
        int,
        Query(
            ge=1,
            le=32,
            description="Walks, one per row: row r walks from seed seed_from + r to seed_to + r.",
        ),
    ] = 1,
    format: FormatQuery = "png",
    checkpoint: CheckpointQuery = None,
    label: Annotated[
        int | None,
        Query(
            ge=0,
            le=2**31 - 1,
            description="Conditional models only (a 422 for others): the class of every walk. "
            "Default: class r mod K in row r.",
        ),
    ] = None,
    ema: EmaQuery = True,
    truncation: TruncationQuery = None,
    if_none_match: IfNoneMatchHeader = None,
) -> Response:
    """A latent walk: the samples along the spherical interpolation (slerp) of the noise from
    seed seed_from to seed seed_to, one walk per row. The ends of row r are exactly the latents
    of GET samples?n=1 with seed seed_from + r and seed_to + r (and label r mod K, or label).

    Same ETag and 304 behaviour as samples.
    """
    from gan.sample import interpolate, npy_bytes, preview_png

    parameters = {
        "endpoint": "interpolation",
        "seed_from": seed_from,
        "seed_to": seed_to,
        "steps": steps,
        "rows": rows,
        "format": format,
        "label": label,
        "truncation": truncation,
    }

    def render(loaded: LoadedGenerator) -> tuple[bytes, str, str]:
        check_label(job, loaded.generator.num_classes, label)
        walks = interpolate(loaded.generator, seed_from, seed_to, steps, rows, label, truncation)
        filename = f"{job.id}-step{loaded.step}-walk{seed_from}-{seed_to}.{format}"
        if format == "npy":
            return npy_bytes(walks), NPY_MEDIA_TYPE, filename
        flat = walks.reshape(rows * steps, *walks.shape[2:])
        return preview_png(flat, steps), "image/png", filename

    return respond(job, settings, client, checkpoint, ema, if_none_match, parameters, render)
