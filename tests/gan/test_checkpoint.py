import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.testing import assert_close

from gan.checkpoint import (
    FORMAT_VERSION,
    CheckpointError,
    CheckpointWriteError,
    CorruptCheckpoint,
    WriteRefused,
    best_checkpoint,
    checkpoint_path,
    content_digest,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    prune_checkpoints,
    save_checkpoint,
)


class Evil:
    """Any class: a weights_only load must refuse to construct it."""


def test_save_is_atomic_and_loads_with_weights_only(tmp_path):
    path = checkpoint_path(tmp_path, 5)
    weights = torch.randn(3, 4)
    save_checkpoint({"step": 5, "config": {"lr_g": 2e-4}, "w": weights}, path)
    assert [p.name for p in tmp_path.iterdir()] == ["step-00000005.pt"]  # no temp file left
    state = torch.load(path, weights_only=True)
    assert state["format_version"] == FORMAT_VERSION and state["step"] == 5
    assert_close(state["w"], weights)


def test_failed_write_leaves_the_previous_checkpoint(tmp_path):
    path = checkpoint_path(tmp_path, 1)
    save_checkpoint({"step": 1}, path)
    with pytest.raises(Exception, match="pickle"):  # a lambda cannot be pickled
        save_checkpoint({"step": 2, "bad": lambda: None}, path)
    assert load_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_load_rejects_foreign_and_arbitrary_pickles(tmp_path):
    foreign = tmp_path / "foreign.pt"
    torch.save({"some": "dict"}, foreign)
    with pytest.raises(CheckpointError, match="not a gan-checkpoint"):
        load_checkpoint(foreign)
    evil = tmp_path / "evil.pt"
    torch.save({"format": "gan-checkpoint", "format_version": 1, "obj": Evil()}, evil)
    with pytest.raises(CheckpointError, match="not a readable gan-checkpoint file"):
        load_checkpoint(evil)

    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a zip file at all")
    with pytest.raises(CheckpointError):
        load_checkpoint(garbage)


def test_listing_latest_and_pruning(tmp_path):
    for step in (10, 200, 30):
        save_checkpoint({"step": step}, checkpoint_path(tmp_path, step))
    (tmp_path / "notes.txt").write_text("ignored")
    assert [s for s, _ in list_checkpoints(tmp_path)] == [10, 30, 200]
    assert latest_checkpoint(tmp_path) == checkpoint_path(tmp_path, 200)
    prune_checkpoints(tmp_path, keep=2)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [30, 200]
    assert latest_checkpoint(tmp_path / "missing") is None


def test_a_refused_write_leaves_the_previous_file_and_nothing_else(tmp_path):
    path = checkpoint_path(tmp_path, 5)
    save_checkpoint({"step": 5, "w": torch.zeros(3)}, path)
    before = path.read_bytes()
    asked = []

    def no() -> bool:
        asked.append(sorted(p.name for p in tmp_path.iterdir()))  # written aside by now
        return False

    with pytest.raises(WriteRefused, match=r"step-00000005\.pt was not written"):
        save_checkpoint({"step": 5, "w": torch.ones(3)}, path, may_write=no)
    [listing] = asked
    assert len(listing) == 2 and listing[0].startswith(".step-00000005.pt.")  # the temporary
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [path.name]
    save_checkpoint({"step": 5, "w": torch.ones(3)}, path, may_write=lambda: True)
    assert_close(load_checkpoint(path)["w"], torch.ones(3))


def test_only_regular_files_are_checkpoints(tmp_path):
    save_checkpoint({"step": 10}, checkpoint_path(tmp_path, 10))
    (tmp_path / "step-00009999.pt").mkdir()  # a folder of a checkpoint's name
    (tmp_path / "step-00009998.pt").symlink_to(checkpoint_path(tmp_path, 10))
    (tmp_path / "best.pt").mkdir()
    assert [s for s, _ in list_checkpoints(tmp_path)] == [10]
    assert latest_checkpoint(tmp_path) == checkpoint_path(tmp_path, 10)
    assert best_checkpoint(tmp_path) is None
    prune_checkpoints(tmp_path, keep=1)  # the folder is not a checkpoint to prune either
    assert (tmp_path / "step-00009999.pt").is_dir()


# --- Integrity: every checkpoint is sealed with a checksum of its contents --------------------


def flip_a_byte_of(path, tensor_bytes: bytes) -> None:
    """Flip one bit inside the stored bytes of a tensor, as a bad disk would."""
    raw = bytearray(path.read_bytes())
    at = raw.find(tensor_bytes)
    assert at >= 0, "the tensor's bytes are not in the file"
    raw[at + len(tensor_bytes) // 2] ^= 0x01
    path.write_bytes(bytes(raw))


def test_a_damaged_tensor_is_caught_by_the_checksum(tmp_path):
    path = checkpoint_path(tmp_path, 7)
    weights = torch.full((256,), 1.5)
    save_checkpoint({"step": 7, "w": weights}, path)
    state = load_checkpoint(path)
    assert state["checksum"] == content_digest({k: v for k, v in state.items() if k != "checksum"})
    assert state["checksum"].startswith("sha256:") and len(state["checksum"]) == 7 + 64

    flip_a_byte_of(path, weights.numpy().tobytes())
    damaged = torch.load(path, weights_only=True)  # torch itself reads it without a complaint
    assert not torch.equal(damaged["w"], weights)
    with pytest.raises(CorruptCheckpoint, match=r"step-00000007\.pt is corrupt: its contents"):
        load_checkpoint(path)


def test_a_truncated_file_is_corrupt(tmp_path):
    path = checkpoint_path(tmp_path, 3)
    save_checkpoint({"step": 3, "w": torch.randn(1000)}, path)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])  # a crash half-way through a copy, say
    with pytest.raises(CorruptCheckpoint, match=r"step-00000003\.pt is not a readable"):
        load_checkpoint(path)
    path.write_bytes(b"")
    with pytest.raises(CorruptCheckpoint):
        load_checkpoint(path)


def test_a_changed_value_or_a_missing_checksum_is_corrupt(tmp_path):
    path = checkpoint_path(tmp_path, 1)
    save_checkpoint({"step": 1, "config": {"lr_g": 2e-4}}, path)
    state = torch.load(path, weights_only=True)
    torch.save({**state, "step": 2}, path)  # rewritten without sealing it again
    with pytest.raises(CorruptCheckpoint, match="do not match its checksum"):
        load_checkpoint(path)
    del state["checksum"]
    torch.save(state, path)
    with pytest.raises(CorruptCheckpoint, match="has no checksum"):
        load_checkpoint(path)


def test_checkpoints_of_format_version_2_still_load_unchecked(tmp_path):
    old = tmp_path / "old.pt"
    torch.save({"format": "gan-checkpoint", "format_version": 2, "step": 4}, old)
    assert load_checkpoint(old)["step"] == 4
    torch.save({"format": "gan-checkpoint", "format_version": 99, "step": 4}, old)
    with pytest.raises(CheckpointError, match="format version 99, this code reads 2 or 3"):
        load_checkpoint(old)


def test_resealing_a_loaded_checkpoint_gives_a_valid_one(tmp_path):
    path = checkpoint_path(tmp_path, 2)
    save_checkpoint({"step": 2, "w": torch.ones(3)}, path)
    state = load_checkpoint(path)
    state["w"] = torch.zeros(3)
    save_checkpoint(state, path)
    assert torch.equal(load_checkpoint(path)["w"], torch.zeros(3))


def test_the_digest_tells_types_and_structure_apart():
    digests = {
        content_digest(state)
        for state in (
            {"a": 1}, {"a": 1.0}, {"a": True}, {"a": "1"}, {"a": [1]}, {"a": (1,)},
            {"a": torch.tensor([1])}, {"a": torch.tensor([1.0])}, {"a": torch.tensor([[1]])},
            {"a": None}, {"b": 1}, {"a": {"1": 1}}, {"a": ["ab", "c"]}, {"a": ["a", "bc"]},
        )
    }  # fmt: skip
    assert len(digests) == 14


# --- Writes the disk refuses: nothing partial is left, and the error says why -----------------


def test_a_file_in_the_way_of_the_folder_fails_clearly(tmp_path):
    (tmp_path / "checkpoints").write_text("not a folder")  # works as root too, unlike chmod
    path = checkpoint_path(tmp_path / "checkpoints", 10)
    with pytest.raises(CheckpointWriteError) as caught:
        save_checkpoint({"step": 10}, path)
    message = str(caught.value)
    folder = tmp_path / "checkpoints"
    assert message.startswith(f"could not write checkpoint step-00000010.pt in {folder}: ")
    assert "that is a file, not a folder" in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoints"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_folder_without_write_permission_fails_clearly(tmp_path):
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(CheckpointWriteError, match="Permission denied"):
            save_checkpoint({"step": 1}, checkpoint_path(folder, 1))
        assert list(folder.iterdir()) == []
    finally:
        folder.chmod(0o700)


# Run under `unshare --user --map-root-user --mount` (as root or not): a 256 KiB tmpfs, then a
# read-only one, mounted in a mount namespace of its own, so nothing outside sees them.
FULL_DISK_SCRIPT = r"""
import json, os, subprocess, sys
from pathlib import Path
import torch
from gan.checkpoint import CheckpointWriteError, checkpoint_path, save_checkpoint

folder, results = sys.argv[1], {}
for name, options in (("full", "size=256k"), ("read-only", "ro,size=256k")):
    target = Path(folder, name)
    target.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", target], check=True)
    if name == "full":  # a checkpoint that fits, then one that does not
        save_checkpoint({"step": 1, "w": torch.zeros(1000)}, checkpoint_path(target, 1))
    try:
        save_checkpoint({"step": 2, "w": torch.zeros(200_000)}, checkpoint_path(target, 2))
        error = None
    except CheckpointWriteError as e:
        error = str(e)
    results[name] = {"error": error, "files": sorted(os.listdir(target))}
print(json.dumps(results))
"""


def run_in_mount_namespace(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -c script args`` in a user and mount namespace of its own (skips the test where
    the kernel does not allow one)."""
    if shutil.which("unshare") is None:
        pytest.skip("unshare (util-linux) is not installed")
    probe = subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "true"], capture_output=True
    )
    if probe.returncode != 0:
        pytest.skip(f"no user and mount namespaces here: {probe.stderr.decode().strip()}")
    return subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[2],
    )


def test_a_full_or_read_only_disk_fails_clearly_and_leaves_nothing(tmp_path):
    done = run_in_mount_namespace(FULL_DISK_SCRIPT, str(tmp_path))
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)
    full, read_only = results["full"], results["read-only"]
    assert full["error"].startswith("could not write checkpoint step-00000002.pt in ")
    assert "No space left on device" in full["error"]
    assert full["files"] == ["step-00000001.pt"]  # the one that fit; no partial file, no temp
    assert "Read-only file system" in read_only["error"]
    assert read_only["files"] == []
