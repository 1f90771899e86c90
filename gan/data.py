"""Datasets: MNIST-format IDX files read into one tensor.

The whole dataset is one uint8 tensor (N, 1, 28, 28); the trainer moves it to the training device
once and indexes batches from it, so no per-image transform or DataLoader runs in the hot loop.

IDX layout (http://yann.lecun.com/exdb/mnist/): a big-endian header of a magic number
(0x0000080N: unsigned bytes, N dimensions) and N dimension sizes, then the data row-major.
Images are 2051 (3 dimensions), labels 2049 (1 dimension). Files may be gzip-compressed.
"""

from __future__ import annotations

import gzip
import logging
import struct
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger(__name__)

IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049


class DatasetError(RuntimeError):
    """The dataset cannot be read or fetched; the message says what to do."""


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


def _image_files(root: Path) -> list[Path]:
    """IDX image files under ``root`` (and torchvision's ``MNIST/raw`` layout), one per split."""
    found: dict[str, Path] = {}
    for folder in (root, root / "MNIST" / "raw"):
        for path in sorted(folder.glob("*-images-idx3-ubyte*")):
            split = path.name.split("-images-")[0]  # "train" or "t10k"
            if path.suffix in ("", ".gz"):
                found.setdefault(split, path)
    return [found[k] for k in sorted(found)]


def _labels_for(image_path: Path) -> Path:
    """The labels file beside an images file, gzipped or not."""
    name = image_path.name.removesuffix(".gz").replace("-images-idx3-", "-labels-idx1-")
    for candidate in (name, name + ".gz"):
        if (image_path.parent / candidate).is_file():
            return image_path.parent / candidate
    raise DatasetError(f"{image_path.name} has no labels file {name}[.gz] beside it")


def load_mnist(data_dir: str | Path, download: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(images uint8 (N, 1, 28, 28), labels int64 (N,)) from every MNIST split in ``data_dir``.

    Reads ``train-*`` and ``t10k-*`` IDX files, plain or gzipped, in ``data_dir`` or in
    ``data_dir/MNIST/raw``. With none there and ``download`` set, torchvision fetches MNIST into
    ``data_dir`` first (this needs network access).
    """
    root = Path(data_dir)
    files = _image_files(root)
    if not files and download:
        _download_mnist(root)
        files = _image_files(root)
    if not files:
        raise DatasetError(f"no MNIST IDX files (*-images-idx3-ubyte[.gz]) in {root}")

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


def _download_mnist(root: Path) -> None:
    from torchvision.datasets import MNIST  # imported here: only the download path needs it

    try:
        root.mkdir(parents=True, exist_ok=True)
        MNIST(root=str(root), download=True)  # fetches both splits into root/MNIST/raw
    except Exception as e:  # torchvision raises bare RuntimeError/URLError on no network
        raise DatasetError(
            f"no MNIST IDX files in {root}, and downloading them failed ({e}). "
            "Put the IDX files there or set GAN_DATA_DIR to a folder that has them."
        ) from e


def to_unit_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] → float32 [−1, 1], the Tanh generator's range."""
    return images.float().div_(127.5).sub_(1.0)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """float [−1, 1] → uint8 [0, 255] (inverse of ``to_unit_range``, clamped and rounded)."""
    return images.add(1.0).mul_(127.5).round_().clamp_(0, 255).to(torch.uint8)
