"""/datasets: upload image datasets as zip archives, list them (with the datasets known by name),
and train on them by id."""

from __future__ import annotations

import errno
import logging
import shutil
import uuid
from datetime import datetime
from pathlib import PurePosixPath
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from fastapi import APIRouter, File, Form, HTTPException, Request, Response, UploadFile, status
from pydantic import BaseModel, BeforeValidator, Field

from api.deps import AUTH_RESPONSES, STORE_DOWN, STORE_RESPONSES, OwnerDep, SettingsDep
from api.errors import field_error
from gan.config import DATASETS, UPLOAD_ID
from worker.artifacts import DATASETS as DATASETS_KEY
from worker.artifacts import ArtifactStore, ArtifactStoreError
from worker.settings import Settings

log = logging.getLogger(__name__)
router = APIRouter(
    prefix="/datasets", tags=["datasets"], responses={**AUTH_RESPONSES, **STORE_RESPONSES}
)


class DatasetMeta(BaseModel):
    """meta.json, as ``gan.data.ingest_images`` writes it."""

    name: str
    num_images: int
    shape: list[int] = Field(description="(C, H, W) of every image.")
    classes: list[str] = Field(description="Class names: label k is classes[k].")
    num_classes: int
    created_at: datetime


class DatasetOut(DatasetMeta):
    id: str = Field(description="Train on it with the job field `dataset` set to this id.")
    links: dict[str, str] = Field(description="URL of this dataset.")


class BuiltinDatasetOut(BaseModel):
    """A dataset known by name (``gan.config.DATASETS``), there for every API key."""

    name: str = Field(description="Train on it with the job field `dataset` set to this name.")
    description: str
    shape: list[int] = Field(description="(C, H, W) of an image, or (D,) of a point.")
    num_classes: int


class DatasetList(BaseModel):
    datasets: list[DatasetOut] = Field(description="Your uploads, newest first.")
    builtin: list[BuiltinDatasetOut] = Field(
        description="The datasets known by name, which need no upload."
    )


BUILTIN = [
    BuiltinDatasetOut(
        name=name,
        description=info.description,
        shape=list(info.shape),
        num_classes=info.num_classes,
    )
    for name, info in DATASETS.items()
]


def dataset_out(dataset_id: str, meta: DatasetMeta, request: Request) -> DatasetOut:
    self_url = str(request.url_for("get_dataset", dataset_id=dataset_id))
    return DatasetOut(**meta.model_dump(), id=dataset_id, links={"self": self_url})


OWNER_FILE = "owner"  # beside meta.json: the API key the dataset belongs to ("" for none)


def read_meta(store: ArtifactStore, dataset_id: str, owner: str) -> DatasetMeta | None:
    """An uploaded dataset's meta.json, or None where there is none (or it is unreadable, or
    it belongs to another owner than ``owner``: other keys' datasets are not there for it).
    The artifact store's errors (ArtifactStoreError: unreachable) are raised."""
    folder = f"{DATASETS_KEY}/{dataset_id}"
    try:
        text = store.read_bytes(f"{folder}/meta.json").decode()
        owned_by = _read_text(store, f"{folder}/{OWNER_FILE}")
    except ArtifactStoreError:
        raise
    except (OSError, UnicodeDecodeError):
        return None
    if owned_by != owner:
        return None
    try:
        return DatasetMeta.model_validate_json(text)
    except ValueError:  # pydantic's ValidationError
        log.warning("%s/meta.json is unreadable; dataset skipped", folder)
        return None


def _read_text(store: ArtifactStore, key: str) -> str:
    """The text of ``key``, "" when there is none."""
    try:
        return store.read_bytes(key).decode()
    except FileNotFoundError:
        return ""
    except IsADirectoryError:
        return ""


def _int(value: Any) -> Any:
    """Form fields arrive as text, and a ``Literal[1, 3]`` does not parse "3" by itself."""
    return int(value) if isinstance(value, str) and value.strip().isdigit() else value


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=DatasetOut,
    responses={
        403: {"description": "A browser page of another origin sent the upload."},
        413: {"description": "The archive, its contents or an image exceeds a size limit."},
        422: {"description": "The archive is invalid; the message names the problem."},
        503: {
            "description": f"The server could not store it; the message says why. Or: {STORE_DOWN}"
        },
        507: {"description": "The server's disk is full; nothing was kept."},
    },
)
def upload_dataset(
    file: Annotated[
        UploadFile,
        File(
            description="A zip archive of PNG, JPEG, BMP, GIF or WEBP images: one top-level "
            "folder per class (sorted names are labels 0, 1, ...), or all at the top level."
        ),
    ],
    request: Request,
    response: Response,
    settings: SettingsDep,
    owner: OwnerDep,
    name: Annotated[
        str | None, Form(min_length=1, max_length=100, description="Defaults to the file name.")
    ] = None,
    channels: Annotated[
        Literal[1, 3], BeforeValidator(_int), Form(description="1: greyscale, 3: RGB.")
    ] = 1,
    image_size: Annotated[
        int, Form(ge=8, le=128, description="Images are resized to this square size.")
    ] = 28,
) -> DatasetOut:
    """Decode and store an image dataset. Answers 201 with it; train on it by its ``id``."""
    origin = request.headers.get("origin")
    if origin is not None and urlsplit(origin).netloc != request.url.netloc:
        # multipart/form-data is a "simple" CORS request: any web page could post one (CSRF).
        raise HTTPException(status.HTTP_403_FORBIDDEN, f"cross-origin upload from {origin}")
    from gan.data import UploadError, UploadLimits, UploadTooLarge, ingest_images  # imports torch

    dataset_id = f"ds-{uuid.uuid4().hex}"
    default_name = PurePosixPath(file.filename or "upload").name.removesuffix(".zip")
    try:
        meta = ingest_images(
            file.file,
            settings.datasets_dir / dataset_id,
            channels=channels,
            image_size=image_size,
            limits=UploadLimits(),  # the archive's size is checked first
            name=name or default_name[:100] or "upload",
        )
    except UploadTooLarge as e:
        raise field_error(["body", "file"], str(e), status.HTTP_413_CONTENT_TOO_LARGE) from e
    except UploadError as e:
        raise field_error(["body", "file"], str(e)) from e
    except OSError as e:  # the server's disk, not the archive: nothing was left behind
        raise _not_stored(e) from e
    try:
        _publish(settings, dataset_id, owner)
    except OSError as e:  # a dataset without its owner file would be everyone's: remove it
        shutil.rmtree(settings.datasets_dir / dataset_id, ignore_errors=True)
        settings.artifacts().delete_prefix(f"{DATASETS_KEY}/{dataset_id}")
        raise _not_stored(e) from e
    log.info("dataset %s: %d images in %d classes", dataset_id, meta["num_images"],
             meta["num_classes"])  # fmt: skip
    response.headers["Location"] = str(request.url_for("get_dataset", dataset_id=dataset_id))
    return dataset_out(dataset_id, DatasetMeta.model_validate(meta), request)


def _publish(settings: Settings, dataset_id: str, owner: str) -> None:
    """Write the owner file beside the dataset ingested in this machine's folder; in an object
    store, put its files there too (meta.json last: a dataset is listed once it is whole)."""
    folder = settings.datasets_dir / dataset_id
    (folder / OWNER_FILE).write_text(owner)
    store = settings.artifacts()
    if store.remote:
        for name in ("images.npy", "labels.npy", OWNER_FILE, "meta.json"):
            store.write_bytes(f"{DATASETS_KEY}/{dataset_id}/{name}", (folder / name).read_bytes())


def _not_stored(error: OSError) -> HTTPException:
    """507 when the server's disk is full (or the quota spent), else 503: the dataset could
    not be stored, for a reason of the server's, which the message gives."""
    log.error("could not store an uploaded dataset: %s", error)
    full = error.errno in (errno.ENOSPC, errno.EDQUOT)
    where = "the artifact store" if isinstance(error, ArtifactStoreError) else "the server's disk"
    return HTTPException(
        status.HTTP_507_INSUFFICIENT_STORAGE if full else status.HTTP_503_SERVICE_UNAVAILABLE,
        f"the dataset could not be stored: {error.strerror or error} ({where}, not "
        "your archive; nothing was kept); try again later",
    )


@router.get("", response_model=DatasetList)
def list_datasets(request: Request, settings: SettingsDep, owner: OwnerDep) -> DatasetList:
    """Your uploaded datasets, newest first, and the datasets known by name: what a job's
    `dataset` field takes."""
    found = []
    store = settings.artifacts()
    for entry in store.listing(DATASETS_KEY):
        parts = entry.key.split("/")
        if len(parts) != 3 or parts[2] != "meta.json" or not UPLOAD_ID.fullmatch(parts[1]):
            continue
        if (meta := read_meta(store, parts[1], owner)) is not None:
            found.append(dataset_out(parts[1], meta, request))
    newest_first = sorted(found, key=lambda d: d.created_at, reverse=True)
    return DatasetList(datasets=newest_first, builtin=BUILTIN)


@router.get(
    "/{dataset_id}", response_model=DatasetOut, responses={404: {"description": "No such dataset."}}
)
def get_dataset(
    dataset_id: str, request: Request, settings: SettingsDep, owner: OwnerDep
) -> DatasetOut:
    """An uploaded dataset's size, image shape and classes."""
    meta = (
        read_meta(settings.artifacts(), dataset_id, owner)
        if UPLOAD_ID.fullmatch(dataset_id)
        else None
    )
    if meta is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no dataset with id {dataset_id!r}")
    return dataset_out(dataset_id, meta, request)
