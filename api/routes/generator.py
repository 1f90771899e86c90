"""/jobs/{id}/generator: a checkpoint's generator alone, exported to run without this project
(safetensors, ONNX, TorchScript: ``gan.export``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal

from fastapi import APIRouter, HTTPException, Query, Response, status

from api.deps import AUTH_RESPONSES, STORE_RESPONSES, ClientKeyDep, JobDep, SettingsDep
from api.routes.samples import (
    COMMON_HEADERS,
    ERROR_RESPONSES,
    CheckpointQuery,
    EmaQuery,
    IfNoneMatchHeader,
    RoomDep,
    respond,
)

if TYPE_CHECKING:
    from gan.sample import LoadedGenerator

router = APIRouter(
    prefix="/jobs", tags=["generator"], responses={**AUTH_RESPONSES, **STORE_RESPONSES}
)

# gan.export's formats and file extensions (it imports torch: the route imports it lazily).
Format = Literal["safetensors", "onnx", "torchscript"]
EXTENSIONS = {"safetensors": "safetensors", "onnx": "onnx", "torchscript": "pt"}
MEDIA_TYPE = "application/octet-stream"
MISSING_PACKAGE = "The server lacks the package the format needs (the message names both)."
FORMAT_DOCS = (
    "safetensors: the weights, with the description and the network as a list of functional "
    "ops in the header's __metadata__ (README's loader runs it with torch alone); onnx: inputs "
    "z (B, latent_dim) float32 and, for a conditional generator, y (B,) int64, output "
    "samples, any batch size (onnxruntime runs it); torchscript: torch.jit.load(file)(z) or "
    "(z, y), the description in the extra file gan.json. Each needs its package on the server "
    "(safetensors, onnx: the `export` extra): a 501 naming the format otherwise."
)


@router.get(
    "/{job_id}/generator",
    response_class=Response,
    responses={
        200: {
            "description": "The generator file. Every format maps z (and y, conditional) to "
            "the samples the service draws for the same latents: images (B, C, H, W) float32 "
            "in [-1, 1] (pixels: round((x + 1) * 127.5)), or points (B, D). Its metadata: "
            "format (gan-generator), format_version, latent_dim, num_classes, shape (JSON), "
            "output, step, weights (ema or raw) and config (the job's full config, JSON).",
            "content": {MEDIA_TYPE: {}},
            "headers": COMMON_HEADERS,
        },
        **ERROR_RESPONSES,
        501: {"description": MISSING_PACKAGE},
    },
)
def export_generator(
    _: RoomDep,
    job: JobDep,
    settings: SettingsDep,
    client: ClientKeyDep,
    format: Annotated[Format, Query(description=FORMAT_DOCS)] = "safetensors",
    checkpoint: CheckpointQuery = None,
    ema: EmaQuery = True,
    if_none_match: IfNoneMatchHeader = None,
) -> Response:
    """Download the generator of one of the job's checkpoints (by default its best, else its
    newest), alone, in a format that runs without this project: its EMA weights when the run
    kept them, unless ema=false (X-Generator says which), with its config and latent size in
    the file's metadata. A damaged checkpoint is a 409 naming it, as for samples; the same
    checkpoint file and parameters give the same bytes and ETag (If-None-Match: 304)."""
    from gan.export import MissingPackage, export

    parameters = {"endpoint": "generator", "format": format}

    def render(loaded: LoadedGenerator) -> tuple[bytes, str, str]:
        try:
            body = export(loaded.generator, loaded.config, loaded.step, loaded.ema, format)
        except MissingPackage as e:
            raise HTTPException(status.HTTP_501_NOT_IMPLEMENTED, str(e)) from None
        weights = "ema" if loaded.ema else "raw"
        filename = f"{job.id}-step{loaded.step}-{weights}.{EXTENSIONS[format]}"
        return body, MEDIA_TYPE, filename

    return respond(job, settings, client, checkpoint, ema, if_none_match, parameters, render)
