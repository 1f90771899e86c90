"""Datasets: every dataset the trainer knows, read into one tensor.

A dataset is one tensor: uint8 (N, C, H, W) images or float32 (N, D) points. The trainer moves it
to the training device once and indexes batches from it, so no per-image transform or DataLoader
runs in the hot loop.

Sources (``gan.config.DATASETS`` names them):
- mnist, fashion-mnist, kmnist: IDX files (http://yann.lecun.com/exdb/mnist/): a big-endian header
  of a magic number (0x0000080N: unsigned bytes, N dimensions) and N dimension sizes, then the data
  row-major. Images are 2051 (3 dimensions), labels 2049 (1 dimension); files may be gzipped.
  Fetched by torchvision where they are missing and the network allows.
- cifar10: torchvision's CIFAR10, both splits.
- stacked-mnist: three random MNIST digits in the R, G, B channels (1000 modes). Its tensor is a
  fixed sample of 50,000 triples (for evaluation and export); training draws fresh triples of the
  digits for every batch (``Dataset.digits``, ``stack_digits``).
- ring8, grid25: 2D Gaussian mixtures, the classic mode-collapse benchmarks.
- an uploaded dataset's id: images.npy/labels.npy/meta.json written by ``ingest_images``.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import io
import json
import logging
import math
import os
import re
import shutil
import stat
import struct
import uuid
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from gan.config import DATASETS, UPLOAD_ID

log = logging.getLogger(__name__)

IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049

# IDX datasets: name → (folders under data_dir searched, in order; torchvision class fetching them).
IDX_SOURCES: dict[str, tuple[tuple[str, ...], str]] = {
    "mnist": ((".", "MNIST/raw"), "MNIST"),
    "fashion-mnist": (("fashion-mnist", "FashionMNIST/raw"), "FashionMNIST"),
    "kmnist": (("kmnist", "KMNIST/raw"), "KMNIST"),
}
STACKED_MNIST_SIZE = 50_000
POINTS_SIZE = 20_000
SEED = 0  # of every generated dataset: the same name gives the same data everywhere


class DatasetError(RuntimeError):
    """The dataset cannot be read or fetched; the message says what to do."""


@dataclass(frozen=True, eq=False)
class Dataset:
    name: str
    data: torch.Tensor  # uint8 (N, C, H, W) images, or float32 (N, D) points
    labels: torch.Tensor  # int64 (N,), 0..num_classes−1
    num_classes: int
    # Stacked MNIST only: the single-channel digits (uint8 (M, 1, H, W) images, int64 (M,) labels)
    # that its samples stack. The trainer draws fresh triples of them for every batch, so it learns
    # the distribution itself rather than ``data``'s 50,000 draws from it, whose own uneven mode
    # counts would put a floor under the KL a faithful generator can reach (BENCHMARKS.md).
    digits: tuple[torch.Tensor, torch.Tensor] | None = None

    def __post_init__(self) -> None:
        if self.labels.shape != (self.data.shape[0],):
            raise DatasetError(
                f"{self.name}: {tuple(self.labels.shape)} labels for {self.data.shape[0]} samples"
            )

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of one sample: (C, H, W) or (D,)."""
        return tuple(self.data.shape[1:])

    @property
    def is_image(self) -> bool:
        return self.data.ndim == 4

    def __len__(self) -> int:
        return self.data.shape[0]

    def resized(self, size: int) -> Dataset:
        """The same images at ``size`` squared (bilinear with antialiasing), digits included."""
        digits = None if self.digits is None else (resize(self.digits[0], size), self.digits[1])
        return Dataset(self.name, resize(self.data, size), self.labels, self.num_classes, digits)


def load_dataset(
    name: str,
    data_dir: str | Path,
    *,
    uploads_dir: str | Path | None = None,
    image_size: int = 0,
    download: bool = True,
) -> Dataset:
    """The dataset ``name`` (a ``gan.config.DATASETS`` key or an uploaded dataset's id).

    ``data_dir`` holds the downloadable datasets, ``uploads_dir`` the uploaded ones. Images are
    resized to ``image_size`` squared when it is set and differs; points ignore it. With
    ``download`` set, torchvision fetches missing files into ``data_dir`` (this needs network).
    """
    root = Path(data_dir)
    if name in IDX_SOURCES:
        images, labels = load_idx(name, root, download=download)
        dataset = Dataset(name, images, labels, DATASETS[name].num_classes)
    elif name == "cifar10":
        dataset = _load_cifar10(root, download)
    elif name == "stacked-mnist":
        dataset = stacked_mnist(*load_idx("mnist", root, download=download))
    elif name == "ring8":
        return ring8()
    elif name == "grid25":
        return grid25()
    elif UPLOAD_ID.fullmatch(name):
        if uploads_dir is None:
            raise DatasetError(f"{name} is an uploaded dataset's id, but no uploads folder is set")
        dataset = load_upload(name, Path(uploads_dir))
    else:
        raise DatasetError(
            f"unknown dataset {name!r}: use one of {list(DATASETS)} or an uploaded dataset's id"
        )
    if image_size and image_size != dataset.data.shape[-1]:
        dataset = dataset.resized(image_size)
    return dataset


# --- IDX files ---------------------------------------------------------------------------------


def read_idx(path: Path) -> np.ndarray:
    """The array stored in one IDX file (optionally .gz)."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise DatasetError(f"cannot read {path}: {e}") from e
    if len(raw) < 4:
        raise DatasetError(f"{path} is not an IDX file: {len(raw)} bytes")
    zero, dtype_code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype_code != 0x08 or not 1 <= ndim <= 3:
        raise DatasetError(f"{path} is not an unsigned-byte IDX file (magic {raw[:4].hex()})")
    header = 4 + 4 * ndim
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    expected = int(np.prod(shape))
    if len(raw) - header != expected:
        raise DatasetError(
            f"{path} is truncated or padded: header says {shape} = {expected} bytes, "
            f"file holds {len(raw) - header}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def _image_files(folders: list[Path]) -> list[Path]:
    """IDX image files in the first of ``folders`` that has any, one per split."""
    for folder in folders:
        found: dict[str, Path] = {}
        for path in sorted(folder.glob("*-images-idx3-ubyte*")):
            split = path.name.split("-images-")[0]  # "train" or "t10k"
            if path.suffix in ("", ".gz"):
                found.setdefault(split, path)
        if found:
            return [found[k] for k in sorted(found)]
    return []


def _labels_for(image_path: Path) -> Path:
    """The labels file beside an images file, gzipped or not."""
    name = image_path.name.removesuffix(".gz").replace("-images-idx3-", "-labels-idx1-")
    for candidate in (name, name + ".gz"):
        if (image_path.parent / candidate).is_file():
            return image_path.parent / candidate
    raise DatasetError(f"{image_path.name} has no labels file {name}[.gz] beside it")


def load_idx(
    name: str, data_dir: Path, *, download: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """(images uint8 (N, 1, 28, 28), labels int64 (N,)) of every split of an IDX dataset.

    Reads ``train-*`` and ``t10k-*`` files, plain or gzipped, from the first folder of
    ``IDX_SOURCES[name]`` (under ``data_dir``) that has them. With none there and ``download``
    set, torchvision fetches them into ``data_dir/<Class>/raw`` first.
    """
    subdirs, _ = IDX_SOURCES[name]
    folders = [data_dir / sub if sub != "." else data_dir for sub in subdirs]
    files = _image_files(folders)
    if not files and download:
        _download_idx(name, data_dir, folders)
        files = _image_files(folders)
    if not files:
        raise DatasetError(
            f"no {name} IDX files (*-images-idx3-ubyte[.gz]) in "
            + " or ".join(str(f) for f in folders)
        )

    images, labels = [], []
    for image_path in files:
        label_path = _labels_for(image_path)
        x, y = read_idx(image_path), read_idx(label_path)
        if x.ndim != 3 or x.shape[1:] != (28, 28):
            raise DatasetError(f"{image_path}: expected 28x28 images, got shape {x.shape}")
        if y.shape != (x.shape[0],):
            raise DatasetError(f"{label_path}: {y.shape[0]} labels for {x.shape[0]} images")
        images.append(torch.from_numpy(x.copy()))
        labels.append(torch.from_numpy(y.astype(np.int64)))
        log.info("read %d images from %s", x.shape[0], image_path)
    return torch.cat(images).unsqueeze(1), torch.cat(labels)


def _download_idx(name: str, root: Path, folders: list[Path]) -> None:
    import torchvision.datasets  # imported here: only the download path needs it

    cls_name = IDX_SOURCES[name][1]
    try:
        root.mkdir(parents=True, exist_ok=True)
        getattr(torchvision.datasets, cls_name)(root=str(root), download=True)
    except Exception as e:  # torchvision raises bare RuntimeError/URLError on no network
        raise DatasetError(
            f"no {name} IDX files in {' or '.join(str(f) for f in folders)}, and downloading "
            f"them failed ({e}). Put the train-/t10k- images and labels IDX files (plain or .gz) "
            f"in {folders[0]}, or set GAN_DATA_DIR to a folder that has them."
        ) from e


# --- CIFAR-10 ----------------------------------------------------------------------------------


def _load_cifar10(root: Path, download: bool) -> Dataset:
    from torchvision.datasets import CIFAR10  # imported here: only this dataset needs it

    images, labels = [], []
    try:
        if download:
            root.mkdir(parents=True, exist_ok=True)
        for train in (True, False):
            split = CIFAR10(root=str(root), train=train, download=download)
            images.append(torch.from_numpy(np.asarray(split.data, dtype=np.uint8)))
            labels.append(torch.as_tensor(split.targets, dtype=torch.int64))
    except Exception as e:  # RuntimeError "not found", URLError, corrupt archives
        raise DatasetError(
            f"cannot load CIFAR-10 from {root} ({e}). Put torchvision's cifar-10-batches-py "
            "folder there, or allow the download."
        ) from e
    data = torch.cat(images).permute(0, 3, 1, 2).contiguous()  # (N, 32, 32, 3) → (N, 3, 32, 32)
    return Dataset("cifar10", data, torch.cat(labels), 10)


# --- generated datasets ------------------------------------------------------------------------


def stacked_mnist(
    images: torch.Tensor, labels: torch.Tensor, n: int = STACKED_MNIST_SIZE, seed: int = SEED
) -> Dataset:
    """Stacked MNIST (Metz et al. 2017): ``n`` samples of three MNIST digits a, b, c drawn at
    random into the R, G, B channels; label 100·a + 10·b + c, so 1000 modes. The digits come
    along (``Dataset.digits``) for the trainer to draw fresh triples from."""
    data, stacked_labels = stack_digits(images, labels, n, torch.Generator().manual_seed(seed))
    return Dataset("stacked-mnist", data, stacked_labels, 1000, digits=(images, labels))


def stack_digits(
    images: torch.Tensor, labels: torch.Tensor, n: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` triples of digits drawn uniformly with replacement by ``generator`` from ``images``
    (M, 1, H, W), on their device: images (n, 3, H, W) whose channel k is the k-th digit, and
    labels 100·a + 10·b + c."""
    idx = torch.randint(images.shape[0], (n, 3), generator=generator).to(images.device)
    place = torch.tensor([100, 10, 1], device=labels.device)
    return images[idx, 0], (labels[idx] * place).sum(1)  # not `@`: CUDA has no integer matmul


def gaussian_mixture(
    name: str, centers: torch.Tensor, sigma: float, n: int = POINTS_SIZE, seed: int = SEED
) -> Dataset:
    """``n`` float32 points, the same number from each component (label = its index) in shuffled
    order: centers[k] + σ·N(0, I)."""
    g = torch.Generator().manual_seed(seed)
    k = centers.shape[0]
    labels = (torch.arange(n) % k)[torch.randperm(n, generator=g)]
    data = centers[labels] + sigma * torch.randn(n, centers.shape[1], generator=g)
    return Dataset(name, data.float(), labels, k)


# The 2D benchmarks (gan.metrics scores samples against the same centres): 8 Gaussians at angles
# 2πk/8 on a circle of radius 2 with σ = 0.02 (Metz et al. 2017, VEEGAN), and 25 at
# {−4, −2, 0, 2, 4}² with σ = 0.05 (Dumoulin et al. 2017, PacGAN); label 5i + j is (v[i], v[j]).
_ANGLES = torch.arange(8, dtype=torch.float64) * (2 * math.pi / 8)
RING8_CENTRES = 2 * torch.stack([_ANGLES.cos(), _ANGLES.sin()], dim=1)
RING8_SIGMA = 0.02
_GRID = torch.tensor([-4.0, -2.0, 0.0, 2.0, 4.0], dtype=torch.float64)
GRID25_CENTRES = torch.cartesian_prod(_GRID, _GRID)
GRID25_SIGMA = 0.05


def ring8() -> Dataset:
    """The 8-Gaussian ring (label k: the centre at angle 2πk/8)."""
    return gaussian_mixture("ring8", RING8_CENTRES, RING8_SIGMA)


def grid25() -> Dataset:
    """The 25-Gaussian grid (label 5i + j: the centre (v[i], v[j]))."""
    return gaussian_mixture("grid25", GRID25_CENTRES, GRID25_SIGMA)


# --- conversions -------------------------------------------------------------------------------


def resize(images: torch.Tensor, size: int, chunk: int = 4096) -> torch.Tensor:
    """uint8 (N, C, H, W) → uint8 (N, C, size, size): bilinear with antialiasing, in chunks."""
    out = torch.empty((*images.shape[:2], size, size), dtype=torch.uint8)
    for i in range(0, images.shape[0], chunk):
        x = images[i : i + chunk].float()
        y = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True)
        out[i : i + chunk] = y.round_().clamp_(0, 255).to(torch.uint8)
    return out


def to_unit_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] → float32 [−1, 1], the Tanh generator's range."""
    return images.float().div_(127.5).sub_(1.0)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """float [−1, 1] → uint8 [0, 255] (inverse of ``to_unit_range``, clamped and rounded)."""
    return images.add(1.0).mul_(127.5).round_().clamp_(0, 255).to(torch.uint8)


# --- uploaded datasets -------------------------------------------------------------------------


def load_upload(dataset_id: str, uploads_dir: Path) -> Dataset:
    """An uploaded dataset: ``uploads_dir/<id>/{images,labels}.npy`` and ``meta.json``."""
    if not UPLOAD_ID.fullmatch(dataset_id):
        raise DatasetError(f"{dataset_id!r} is not an uploaded dataset's id")
    folder = uploads_dir / dataset_id
    try:
        meta = json.loads((folder / "meta.json").read_text())
        images = np.load(folder / "images.npy", allow_pickle=False)
        labels = np.load(folder / "labels.npy", allow_pickle=False)
    except FileNotFoundError as e:
        raise DatasetError(f"no uploaded dataset {dataset_id} in {uploads_dir}") from e
    except (OSError, ValueError) as e:
        raise DatasetError(f"uploaded dataset {dataset_id} is unreadable: {e}") from e
    if images.dtype != np.uint8 or images.ndim != 4 or labels.shape != (images.shape[0],):
        raise DatasetError(
            f"uploaded dataset {dataset_id} is malformed: images {images.dtype} {images.shape}, "
            f"labels {labels.shape}"
        )
    return Dataset(
        dataset_id,
        torch.from_numpy(images),
        torch.from_numpy(labels.astype(np.int64)),
        int(meta["num_classes"]),
    )


class UploadError(DatasetError):
    """An uploaded archive is invalid; the message names the problem (and the file)."""


class UploadTooLarge(UploadError):
    """An uploaded archive exceeds one of the ``UploadLimits``."""


@dataclass(frozen=True)
class UploadLimits:
    max_archive_bytes: int = 100 * 2**20  # the zip as uploaded
    max_uncompressed_bytes: int = 500 * 2**20  # all its files together
    max_ratio: float = 100.0  # uncompressed / compressed, of a file and of the whole archive
    max_files: int = 100_000
    max_pixels: int = 4096 * 4096  # per image, checked from its header before decoding


IMAGE_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "WEBP")
IMAGE_SIGNATURES = (b"\x89PNG", b"\xff\xd8\xff", b"BM", b"GIF8")  # WEBP: RIFF....WEBP
RATIO_FLOOR = 2**20  # sizes below this are not checked for their compression ratio
_SKIPPED = {"__MACOSX", "Thumbs.db", "desktop.ini"}


@dataclass(frozen=True)
class _Member:
    parts: tuple[str, ...]  # path inside the archive or folder
    size: int
    read: Callable[[], bytes]


def ingest_images(
    source: bytes | str | Path | IO[bytes],
    out_dir: str | Path,
    *,
    channels: int = 1,
    image_size: int = 28,
    limits: UploadLimits = UploadLimits(),
    name: str | None = None,
) -> dict[str, Any]:
    """Decode a zip archive (bytes, a path or a binary file) or a folder of images into the
    uploaded dataset ``out_dir`` (which must not exist); returns its meta.

    Labels come from the top-level sub-folders (sorted names → 0..K−1); images all at the top
    level are one class, and one folder wrapping everything is looked through. Each image is
    converted to L or RGB and resized (stretched) to ``image_size`` squared. Hidden files and
    ``__MACOSX`` are skipped; anything else that is not a PNG, JPEG, BMP, GIF or WEBP image
    fails the upload. The folder appears complete or not at all (written aside, then renamed).
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    if not 1 <= image_size <= 4096:
        raise ValueError(f"image_size must be between 1 and 4096, got {image_size}")
    out = Path(out_dir)
    if out.exists():
        raise DatasetError(f"{out} exists already")

    with contextlib.ExitStack() as stack:
        if isinstance(source, str | Path) and Path(source).is_dir():
            members = _folder_members(Path(source), limits)
        else:
            members = _zip_members(source, limits, stack)
        members = [m for m in members if not _hidden(m.parts)]
        if not members:
            raise UploadError("the archive holds no images")
        labels, classes = _classify([m.parts for m in members])
        meta = _write(out, members, labels, classes, channels, image_size, limits, name)
    log.info("ingested %d images in %d classes into %s", len(members), len(classes), out)
    return meta


def _write(
    out: Path,
    members: list[_Member],
    labels: list[int],
    classes: list[str],
    channels: int,
    image_size: int,
    limits: UploadLimits,
    name: str | None,
) -> dict[str, Any]:
    """Decode ``members`` into a folder beside ``out``, then rename it to ``out``."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        shape = (channels, image_size, image_size)
        images = np.lib.format.open_memmap(
            tmp / "images.npy", mode="w+", dtype=np.uint8, shape=(len(members), *shape)
        )
        _reserve(tmp / "images.npy")
        mode = "L" if channels == 1 else "RGB"
        for i, member in enumerate(members):
            images[i] = _decode(member.read(), "/".join(member.parts), mode, image_size, limits)
        images.flush()
        del images
        np.save(tmp / "labels.npy", np.asarray(labels, dtype=np.int64), allow_pickle=False)
        meta = {
            "name": name if name is not None else out.name,
            "num_images": len(members),
            "shape": list(shape),
            "classes": classes,
            "num_classes": len(classes),
            "created_at": datetime.now(UTC).isoformat(),
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
        os.rename(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return meta


def _reserve(path: Path) -> None:
    """Allocate the disk blocks of the (sparse) file ``path`` now: a full disk is then an
    OSError (ENOSPC) here, not a SIGBUS when a write to the memory map finds no room."""
    with open(path, "r+b") as f:
        os.posix_fallocate(f.fileno(), 0, os.fstat(f.fileno()).st_size)


def _hidden(parts: tuple[str, ...]) -> bool:
    return any(p.startswith(".") or p in _SKIPPED for p in parts)


def _classify(paths: list[tuple[str, ...]]) -> tuple[list[int], list[str]]:
    """(label of each path, class names): labels from the top-level folders."""
    tops = {p[0] for p in paths}
    if len(tops) == 1 and all(len(p) >= 2 for p in paths) and any(len(p) >= 3 for p in paths):
        paths = [p[1:] for p in paths]  # one folder wraps it all (e.g. a zipped folder)
    at_top = [p for p in paths if len(p) == 1]
    if not at_top:
        classes = sorted({p[0] for p in paths})
        index = {c: i for i, c in enumerate(classes)}
        return [index[p[0]] for p in paths], classes
    if len(at_top) != len(paths):
        raise UploadError(
            f"{'/'.join(at_top[0])} is at the top level but other images are in folders: put "
            "every image in a class folder, or all of them at the top level"
        )
    return [0] * len(paths), ["all"]


def _split(name: str) -> tuple[str, ...]:
    return tuple(p for p in re.split(r"[/\\]", name) if p not in ("", "."))


def _zip_members(
    source: bytes | str | Path | IO[bytes], limits: UploadLimits, stack: contextlib.ExitStack
) -> list[_Member]:
    """The files of a zip archive, after checking its headers against ``limits``."""
    fileobj: str | Path | IO[bytes]
    if isinstance(source, str | Path):
        try:
            fileobj, size = source, Path(source).stat().st_size  # ZipFile opens (and closes) it
        except OSError as e:
            raise UploadError(f"cannot read {source}: {e}") from e
    else:
        fileobj = io.BytesIO(source) if isinstance(source, bytes) else source
        size = fileobj.seek(0, io.SEEK_END)
        fileobj.seek(0)
    if size > limits.max_archive_bytes:
        raise UploadTooLarge(
            f"the archive is {size / 2**20:.1f} MiB, over the limit of "
            f"{limits.max_archive_bytes / 2**20:.0f} MiB"
        )
    try:
        archive = stack.enter_context(zipfile.ZipFile(fileobj))
        infos = archive.infolist()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
        raise UploadError(f"not a valid zip archive ({e})") from e

    files = []
    for info in infos:
        name = info.filename
        if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
            raise UploadError(f"{name!r} has an absolute path; archive paths must be relative")
        if ".." in re.split(r"[/\\]", name):
            raise UploadError(f"{name!r} points outside the archive ('..' in its path)")
        if stat.S_ISLNK(info.external_attr >> 16):
            raise UploadError(f"{name!r} is a symbolic link; only regular files are accepted")
        if not info.is_dir() and _split(name):
            files.append(info)
    if len(files) > limits.max_files:
        raise UploadTooLarge(
            f"the archive holds {len(files)} files, over the limit of {limits.max_files}"
        )
    total = sum(i.file_size for i in files)
    if total > limits.max_uncompressed_bytes:
        raise UploadTooLarge(
            f"the archive expands to {total / 2**20:.1f} MiB, over the limit of "
            f"{limits.max_uncompressed_bytes / 2**20:.0f} MiB"
        )
    packed = sum(i.compress_size for i in files)
    for what, big, small in [("the archive", total, packed)] + [
        (repr(i.filename), i.file_size, i.compress_size) for i in files
    ]:
        if big > RATIO_FLOOR and big > limits.max_ratio * max(small, 1):
            raise UploadTooLarge(
                f"{what} expands {big / max(small, 1):.0f}-fold, over the limit of "
                f"{limits.max_ratio:.0f} (a zip bomb?)"
            )

    def reader(info: zipfile.ZipInfo) -> Callable[[], bytes]:
        def read() -> bytes:
            try:
                with archive.open(info) as f:
                    data = f.read(info.file_size + 1)  # never more than its header declares
            except (zipfile.BadZipFile, OSError, EOFError, RuntimeError, NotImplementedError,
                    ValueError) as e:  # fmt: skip
                raise UploadError(f"{info.filename!r} cannot be extracted ({e})") from e
            if len(data) != info.file_size:
                raise UploadError(f"{info.filename!r} does not match its size in the zip header")
            return data

        return read

    return [_Member(_split(i.filename), i.file_size, reader(i)) for i in files]


def _folder_members(root: Path, limits: UploadLimits) -> list[_Member]:
    """The files under a folder, after checking them against ``limits``."""
    paths: list[Path] = []
    for path in sorted(_walk(root)):
        if path.is_symlink():
            raise UploadError(f"{path.relative_to(root)} is a symbolic link")
        if path.is_file():
            paths.append(path)
        if len(paths) > limits.max_files:
            raise UploadTooLarge(f"{root} holds over {limits.max_files} files")
    sizes = [p.stat().st_size for p in paths]
    if sum(sizes) > limits.max_uncompressed_bytes:
        raise UploadTooLarge(
            f"{root} holds {sum(sizes) / 2**20:.1f} MiB, over the limit of "
            f"{limits.max_uncompressed_bytes / 2**20:.0f} MiB"
        )
    return [
        _Member(p.relative_to(root).parts, s, functools.partial(_read_at_most, p, s))
        for p, s in zip(paths, sizes, strict=True)
    ]


def _walk(root: Path) -> Iterator[Path]:
    for folder, dirs, files in os.walk(root):  # does not follow symlinked folders
        for name in dirs + files:
            yield Path(folder) / name


def _read_at_most(path: Path, size: int) -> bytes:
    with path.open("rb") as f:
        data = f.read(size + 1)
    if len(data) != size:
        raise UploadError(f"{path} changed while it was read")
    return data


def _decode(data: bytes, where: str, mode: str, size: int, limits: UploadLimits) -> np.ndarray:
    """One image file → uint8 (C, size, size)."""
    try:
        with Image.open(io.BytesIO(data), formats=IMAGE_FORMATS) as img:
            width, height = img.size
            if width * height > limits.max_pixels:
                raise UploadTooLarge(
                    f"{where} is {width}x{height} pixels, over the limit of "
                    f"{limits.max_pixels} pixels per image"
                )
            img.draft(mode, (size, size))  # JPEG: decode at a reduced scale where it can
            small = img.convert(mode).resize((size, size), Image.Resampling.LANCZOS)
    except UnidentifiedImageError as e:
        if data.startswith(IMAGE_SIGNATURES) or data[8:12] == b"WEBP":
            raise UploadError(f"{where} is a damaged image (its header cannot be read)") from e
        raise UploadError(f"{where} is not a PNG, JPEG, BMP, GIF or WEBP image") from e
    except Image.DecompressionBombError as e:
        raise UploadTooLarge(f"{where} is too large to decode ({e})") from e
    except (OSError, SyntaxError, ValueError, EOFError, struct.error) as e:
        raise UploadError(f"{where} is a damaged image ({e})") from e
    array = np.asarray(small, dtype=np.uint8)
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
