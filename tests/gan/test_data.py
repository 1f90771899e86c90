import gzip
import io
import json
import stat
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gan.data import (
    DatasetError,
    UploadError,
    UploadLimits,
    UploadTooLarge,
    ingest_images,
    load_dataset,
    read_idx,
    stack_digits,
    to_uint8,
    to_unit_range,
)
from tests.conftest import mnist_pair


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
    images, labels = mnist_pair(tmp_path)
    assert images.shape == (10, 1, 28, 28) and images.dtype == torch.uint8
    assert labels.shape == (10,) and labels.dtype == torch.int64


def test_load_mnist_reports_label_mismatch(tmp_path):
    write_idx(tmp_path / "t10k-images-idx3-ubyte", np.zeros((4, 28, 28)), 2051)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros((3,)), 2049)
    with pytest.raises(DatasetError, match="3 labels for 4 images"):
        mnist_pair(tmp_path)


def test_load_mnist_without_files_says_where_it_looked(tmp_path):
    with pytest.raises(DatasetError, match=str(tmp_path)):
        mnist_pair(tmp_path)


def test_official_10k_split(mnist_dir):
    images, labels = mnist_pair(mnist_dir)
    assert images.shape == (10_000, 1, 28, 28)
    assert labels[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert torch.bincount(labels).tolist()[:2] == [980, 1135]


def test_unit_range_round_trip():
    images = torch.arange(256, dtype=torch.uint8)
    scaled = to_unit_range(images)
    assert scaled.min() == -1 and scaled.max() == 1
    assert torch.equal(to_uint8(scaled), images)


# --- load_dataset ------------------------------------------------------------------------------


def write_idx_dataset(folder: Path, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A tiny two-split IDX dataset in ``folder``; returns (images, labels) in train+t10k order."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    images = rng.integers(0, 256, (n, 28, 28)).astype(np.uint8)
    labels = rng.integers(0, 10, (n,)).astype(np.uint8)
    half = n // 2  # "t10k" sorts before "train"
    write_idx(folder / "t10k-images-idx3-ubyte.gz", images[:half], 2051)
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", labels[:half], 2049)
    write_idx(folder / "train-images-idx3-ubyte", images[half:], 2051)
    write_idx(folder / "train-labels-idx1-ubyte", labels[half:], 2049)
    return images, labels


@pytest.mark.parametrize(
    ("name", "folder"),
    [
        ("mnist", "."),
        ("mnist", "MNIST/raw"),
        ("fashion-mnist", "fashion-mnist"),
        ("fashion-mnist", "FashionMNIST/raw"),
        ("kmnist", "kmnist"),
        ("kmnist", "KMNIST/raw"),
    ],
)
def test_idx_datasets_are_found_in_their_folders(tmp_path, name, folder):
    images, labels = write_idx_dataset(tmp_path / folder, 6, seed=3)
    dataset = load_dataset(name, tmp_path, download=False)
    assert dataset.name == name and dataset.num_classes == 10
    assert dataset.is_image and dataset.shape == (1, 28, 28) and len(dataset) == 6
    assert dataset.data.dtype == torch.uint8 and dataset.labels.dtype == torch.int64
    assert torch.equal(dataset.data[:, 0], torch.from_numpy(images))
    assert dataset.labels.tolist() == labels.tolist()


def test_idx_datasets_do_not_read_each_other(tmp_path):
    write_idx_dataset(tmp_path, 4, seed=0)  # MNIST at the top of data_dir
    with pytest.raises(DatasetError, match="no fashion-mnist IDX files"):
        load_dataset("fashion-mnist", tmp_path, download=False)


@pytest.mark.parametrize(("name", "cls"), [("fashion-mnist", "FashionMNIST"), ("kmnist", "KMNIST")])
def test_failed_download_says_where_to_put_the_files(tmp_path, monkeypatch, name, cls):
    import torchvision.datasets

    # A closed local port: the download fails at once, with or without network.
    monkeypatch.setattr(getattr(torchvision.datasets, cls), "mirrors", ["http://127.0.0.1:9/"])
    with pytest.raises(DatasetError, match="downloading them failed") as info:
        load_dataset(name, tmp_path, download=True)
    assert f"in {tmp_path / name}" in str(info.value)


def test_cifar10_joins_both_splits_channels_first(tmp_path, monkeypatch):
    import torchvision.datasets

    class FakeCIFAR10:  # torchvision's layout: data (N, 32, 32, 3) uint8, targets a list
        def __init__(self, root, train, download):
            assert root == str(tmp_path) and download is False
            n = 3 if train else 2
            values = np.arange(n * 32 * 32 * 3).reshape(n, 32, 32, 3) % 251 + (0 if train else 1)
            self.data = values.astype(np.uint8)
            self.targets = list(range(n)) if train else [9, 8]

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", FakeCIFAR10)
    dataset = load_dataset("cifar10", tmp_path, download=False)
    assert dataset.shape == (3, 32, 32) and len(dataset) == 5 and dataset.num_classes == 10
    assert dataset.labels.tolist() == [0, 1, 2, 9, 8]
    train = FakeCIFAR10(str(tmp_path), True, False).data
    assert dataset.data[1, 2, 5, 7] == train[1, 5, 7, 2]  # (n, c, y, x) ← (n, y, x, c)


def test_cifar10_failure_is_a_dataset_error(tmp_path, monkeypatch):
    import torchvision.datasets

    with pytest.raises(DatasetError, match="cannot load CIFAR-10"):
        load_dataset("cifar10", tmp_path, download=False)
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "url", "http://127.0.0.1:9/cifar.tar.gz")
    with pytest.raises(DatasetError, match="cannot load CIFAR-10"):
        load_dataset("cifar10", tmp_path / "new", download=True)


def test_stacked_mnist_stacks_three_digits(mnist_dir):
    mnist_x, mnist_y = mnist_pair(mnist_dir)
    dataset = load_dataset("stacked-mnist", mnist_dir, download=False)
    assert dataset.shape == (3, 28, 28) and len(dataset) == 50_000
    assert dataset.num_classes == 1000 and dataset.data.dtype == torch.uint8
    # Each channel is one MNIST digit; find it and check the label formula against its label.
    index = {mnist_x[i, 0].numpy().tobytes(): i for i in range(len(mnist_x))}
    for n in (0, 1, 777, 49_999):
        digits = [int(mnist_y[index[dataset.data[n, c].numpy().tobytes()]]) for c in range(3)]
        assert dataset.labels[n] == 100 * digits[0] + 10 * digits[1] + digits[2]
    assert len(torch.unique(dataset.labels)) > 990  # 50k draws cover nearly all 1000 modes
    again = load_dataset("stacked-mnist", mnist_dir, download=False)
    assert torch.equal(again.data, dataset.data) and torch.equal(again.labels, dataset.labels)


@pytest.mark.parametrize(
    "device",
    ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                          reason="needs CUDA"))],
)  # fmt: skip
def test_stack_digits_labels_each_triple_on_the_digits_device(device):
    """The trainer stacks fresh triples on its own device (on CUDA, integer `@` raised
    "addmv_impl_cuda not implemented for 'Long'" and failed every Stacked MNIST job there)."""
    digits = torch.arange(10, dtype=torch.uint8, device=device)
    images = digits.view(10, 1, 1, 1).expand(10, 1, 2, 2)
    labels = torch.arange(10, device=device)  # digit i is an image of value i, labelled i
    triples, stacked = stack_digits(images, labels, 500, torch.Generator().manual_seed(0))
    assert triples.device.type == stacked.device.type == device
    assert triples.shape == (500, 3, 2, 2)
    a, b, c = (triples[:, k, 0, 0].long() for k in range(3))
    assert torch.equal(stacked, 100 * a + 10 * b + c)
    assert len(torch.unique(stacked)) > 300  # drawn at random: 500 draws of 1000 modes


@pytest.mark.parametrize(
    ("name", "centers", "sigma"),
    [
        ("ring8", [(2 * np.cos(k * np.pi / 4), 2 * np.sin(k * np.pi / 4)) for k in range(8)], 0.02),
        ("grid25", [(x, y) for x in (-4, -2, 0, 2, 4) for y in (-4, -2, 0, 2, 4)], 0.05),
    ],
)
def test_gaussian_mixtures(tmp_path, name, centers, sigma):
    dataset = load_dataset(name, tmp_path, image_size=64)  # points ignore image_size
    k = len(centers)
    assert not dataset.is_image and dataset.shape == (2,) and dataset.data.dtype == torch.float32
    assert len(dataset) == 20_000 and dataset.num_classes == k
    assert torch.bincount(dataset.labels).tolist() == [20_000 // k] * k
    centers = torch.tensor(centers, dtype=torch.float32)
    for c in range(k):
        points = dataset.data[dataset.labels == c]
        # The mean of 800+ points has standard error σ/√800 < 0.002.
        torch.testing.assert_close(points.mean(0), centers[c], atol=0.01, rtol=0)
        torch.testing.assert_close(points.std(0), torch.full((2,), sigma), atol=0.1 * sigma, rtol=0)
    assert torch.equal(load_dataset(name, tmp_path).data, dataset.data)


def test_resize_to_image_size(tmp_path):
    write_idx_dataset(tmp_path, 4, seed=5)
    (tmp_path / "t10k-images-idx3-ubyte.gz").unlink()
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    images = np.full((2, 28, 28), 200, np.uint8)
    images[1, :, 14:] = 0  # left half 200, right half 0
    write_idx(tmp_path / "train-images-idx3-ubyte", images, 2051)
    small = load_dataset("mnist", tmp_path, image_size=14, download=False)
    big = load_dataset("mnist", tmp_path, image_size=56, download=False)
    assert small.shape == (1, 14, 14) and big.shape == (1, 56, 56)
    assert small.data.dtype == torch.uint8
    assert (small.data[0] == 200).all() and (big.data[0] == 200).all()  # flat stays flat
    assert (small.data[1, 0, :, :6] == 200).all() and (small.data[1, 0, :, 8:] == 0).all()
    assert torch.equal(load_dataset("mnist", tmp_path, image_size=28, download=False).data[:, 0],
                       torch.from_numpy(images))  # fmt: skip


def test_unknown_dataset_names_the_choices(tmp_path):
    with pytest.raises(DatasetError, match=r"unknown dataset 'svhn'.*mnist"):
        load_dataset("svhn", tmp_path)
    with pytest.raises(DatasetError, match="no uploaded dataset"):
        load_dataset("ds-" + "0" * 32, tmp_path, uploads_dir=tmp_path)


# --- uploads -----------------------------------------------------------------------------------


def png(value: int | tuple[int, int, int], size: tuple[int, int] = (10, 12), mode: str = "L"):
    buffer = io.BytesIO()
    Image.new(mode, size, value).save(buffer, format="PNG")
    return buffer.getvalue()


def make_zip(files: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def test_ingest_labels_from_folders_and_loads_back(tmp_path):
    jpeg = io.BytesIO()
    Image.new("RGB", (40, 30), (255, 255, 255)).save(jpeg, format="JPEG")
    archive = make_zip(
        {
            "zeros/a.png": png(0),
            "zeros/b.bmp": png(0),  # a PNG whatever its name
            "ones/c.jpg": jpeg.getvalue(),
            "ones/sub/d.png": png((255, 255, 255), mode="RGB"),
            "__MACOSX/ones/._c.jpg": b"junk",
            "ones/.DS_Store": b"junk",
        }
    )
    meta = ingest_images(archive, tmp_path / "ds", image_size=16, name="digits")
    assert meta["name"] == "digits" and meta["num_images"] == 4
    assert meta["shape"] == [1, 16, 16] and meta["classes"] == ["ones", "zeros"]
    assert meta["num_classes"] == 2 and "T" in meta["created_at"]
    assert json.loads((tmp_path / "ds" / "meta.json").read_text()) == meta
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]  # no temp folder left

    dataset_id = "ds-" + "a" * 32
    (tmp_path / "ds").rename(tmp_path / dataset_id)
    dataset = load_dataset(dataset_id, tmp_path / "data", uploads_dir=tmp_path)
    assert dataset.shape == (1, 16, 16) and dataset.num_classes == 2
    by_label = {
        int(y): int(x.float().mean()) for x, y in zip(dataset.data, dataset.labels, strict=True)
    }
    assert by_label == {0: 255, 1: 0}  # "ones" (white) is class 0, "zeros" (black) class 1
    assert dataset.data.dtype == torch.uint8 and dataset.labels.dtype == torch.int64
    assert load_dataset(dataset_id, tmp_path, uploads_dir=tmp_path, image_size=8).shape == (1, 8, 8)


def test_ingest_rgb_from_a_folder_at_the_top_level(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    (source / "a.png").write_bytes(png((255, 0, 0), mode="RGB"))
    (source / "b.gif").write_bytes(png(128))
    meta = ingest_images(source, tmp_path / "out", channels=3, image_size=8)
    assert meta["classes"] == ["all"] and meta["shape"] == [3, 8, 8]
    images = np.load(tmp_path / "out" / "images.npy")
    assert images.shape == (2, 3, 8, 8)
    assert images[0, :, 0, 0].tolist() == [255, 0, 0] and images[1, :, 0, 0].tolist() == [128] * 3
    assert np.load(tmp_path / "out" / "labels.npy").tolist() == [0, 0]


def test_ingest_looks_through_one_wrapping_folder(tmp_path):
    archive = make_zip({"set/cats/a.png": png(1), "set/dogs/b.png": png(2)})
    assert ingest_images(archive, tmp_path / "ds")["classes"] == ["cats", "dogs"]


def tiff() -> bytes:  # PIL reads it, but it is not an accepted format
    buffer = io.BytesIO()
    Image.new("L", (8, 8)).save(buffer, format="TIFF")
    return buffer.getvalue()


def corrupt_png() -> bytes:
    data = bytearray(png(0, size=(64, 64)))
    start = data.index(b"IDAT") + 4
    data[start : start + 8] = b"\xff" * 8  # the compressed pixels no longer inflate
    return bytes(data)


def zip_with_info(info: zipfile.ZipInfo, data: bytes = b"x") -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("ok.png", png(0))
        archive.writestr(info, data)
    return buffer.getvalue()


def symlink_info() -> zipfile.ZipInfo:
    info = zipfile.ZipInfo("link.png")
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


@pytest.mark.parametrize(
    ("archive", "error", "message"),
    [
        (zip_with_info(zipfile.ZipInfo("../evil.png")), UploadError, "outside the archive"),
        (zip_with_info(zipfile.ZipInfo("a/../../evil.png")), UploadError, "outside the archive"),
        (zip_with_info(zipfile.ZipInfo("/etc/evil.png")), UploadError, "absolute path"),
        (zip_with_info(zipfile.ZipInfo("C:/evil.png")), UploadError, "absolute path"),
        (zip_with_info(symlink_info(), b"/etc/passwd"), UploadError, "symbolic link"),
        (make_zip({"a.png": png(0), "notes.txt": b"hello"}), UploadError, "notes.txt is not a PNG"),
        (make_zip({"a.png": png(0)[:40]}), UploadError, "a.png is a damaged image"),
        (make_zip({"c.tif": tiff()}), UploadError, "c.tif is not a PNG, JPEG, BMP, GIF or WEBP"),
        (make_zip({"b.png": corrupt_png()}), UploadError, "b.png is a damaged image"),
        (make_zip({"a/x.png": png(0), "y.png": png(0)}), UploadError, "y.png is at the top level"),
        (make_zip({}), UploadError, "no images"),
        (make_zip({"__MACOSX/._a.png": b"x", ".hidden.png": png(0)}), UploadError, "no images"),
        (b"this is not a zip", UploadError, "not a valid zip archive"),
        (make_zip({"big.png": png(0, size=(5000, 4000))}), UploadTooLarge, "5000x4000 pixels"),
        (make_zip({"bomb.png": bytes(5 * 2**20)}), UploadTooLarge, "a zip bomb"),
    ],
)
def test_ingest_rejects(tmp_path, archive, error, message):
    with pytest.raises(error, match=message):
        ingest_images(archive, tmp_path / "ds")
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_ingest_limits_files_and_sizes(tmp_path):
    archive = make_zip({f"{i}.png": png(i) for i in range(5)}, zipfile.ZIP_STORED)
    with pytest.raises(UploadTooLarge, match="holds 5 files, over the limit of 4"):
        ingest_images(archive, tmp_path / "ds", limits=UploadLimits(max_files=4))
    with pytest.raises(UploadTooLarge, match="the archive is"):
        ingest_images(archive, tmp_path / "ds", limits=UploadLimits(max_archive_bytes=100))
    with pytest.raises(UploadTooLarge, match="expands to"):
        ingest_images(archive, tmp_path / "ds", limits=UploadLimits(max_uncompressed_bytes=100))
    with pytest.raises(UploadTooLarge, match="over the limit of 99 pixels"):
        ingest_images(archive, tmp_path / "ds", limits=UploadLimits(max_pixels=99))
    assert not list(tmp_path.iterdir())
    assert ingest_images(archive, tmp_path / "ds")["num_images"] == 5


def test_ingest_reads_no_more_than_the_header_declares(tmp_path):
    # A header that understates an entry's size (a bomb hiding its size) is caught while reading.
    archive = bytearray(make_zip({"a.png": png(0)}, zipfile.ZIP_STORED))
    with zipfile.ZipFile(io.BytesIO(bytes(archive))) as z:
        true_size = z.getinfo("a.png").file_size
    declared = struct.pack("<I", true_size)
    assert archive.count(declared) >= 2  # local header and central directory
    archive = archive.replace(declared, struct.pack("<I", true_size - 10))
    with pytest.raises(UploadError, match=r"a\.png"):
        ingest_images(bytes(archive), tmp_path / "ds")


def test_ingest_refuses_an_existing_folder(tmp_path):
    (tmp_path / "ds").mkdir()
    with pytest.raises(DatasetError, match="exists already"):
        ingest_images(make_zip({"a.png": png(0)}), tmp_path / "ds")
