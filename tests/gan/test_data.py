import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from gan.data import DatasetError, load_mnist, read_idx, to_uint8, to_unit_range


def write_idx(path: Path, array: np.ndarray, magic: int) -> None:
    header = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    if path.suffix == ".gz":
        data = gzip.compress(data)
    path.write_bytes(data)


def test_read_idx_plain_and_gzipped(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    for name in ("a-images-idx3-ubyte", "a-images-idx3-ubyte.gz"):
        write_idx(tmp_path / name, images, 2051)
        np.testing.assert_array_equal(read_idx(tmp_path / name), images)


def test_read_idx_rejects_truncated_and_foreign_files(tmp_path):
    images = np.zeros((5, 28, 28), np.uint8)
    write_idx(tmp_path / "t", images, 2051)
    (tmp_path / "t").write_bytes((tmp_path / "t").read_bytes()[:-10])
    with pytest.raises(DatasetError, match="truncated"):
        read_idx(tmp_path / "t")
    (tmp_path / "png").write_bytes(b"\x89PNG\r\n\x1a\n....")
    with pytest.raises(DatasetError, match="not an unsigned-byte IDX"):
        read_idx(tmp_path / "png")


def test_load_mnist_joins_splits_and_pairs_labels(tmp_path):
    rng = np.random.default_rng(1)
    for split, n in (("train", 7), ("t10k", 3)):
        write_idx(tmp_path / f"{split}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)), 2051)
        write_idx(tmp_path / f"{split}-labels-idx1-ubyte.gz", rng.integers(0, 10, (n,)), 2049)
    images, labels = load_mnist(tmp_path, download=False)
    assert images.shape == (10, 1, 28, 28) and images.dtype == torch.uint8
    assert labels.shape == (10,) and labels.dtype == torch.int64


def test_load_mnist_reports_label_mismatch(tmp_path):
    write_idx(tmp_path / "t10k-images-idx3-ubyte", np.zeros((4, 28, 28)), 2051)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros((3,)), 2049)
    with pytest.raises(DatasetError, match="3 labels for 4 images"):
        load_mnist(tmp_path, download=False)


def test_load_mnist_without_files_says_where_it_looked(tmp_path):
    with pytest.raises(DatasetError, match=str(tmp_path)):
        load_mnist(tmp_path, download=False)


def test_official_10k_split(mnist_dir):
    images, labels = load_mnist(mnist_dir, download=False)
    assert images.shape == (10_000, 1, 28, 28)
    assert labels[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert torch.bincount(labels).tolist()[:2] == [980, 1135]


def test_unit_range_round_trip():
    images = torch.arange(256, dtype=torch.uint8)
    scaled = to_unit_range(images)
    assert scaled.min() == -1 and scaled.max() == 1
    assert torch.equal(to_uint8(scaled), images)
