import pytest
import torch
from torch.testing import assert_close

from gan.checkpoint import (
    FORMAT_VERSION,
    CheckpointError,
    checkpoint_path,
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
