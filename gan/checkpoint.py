"""Checkpoints: self-describing dicts of plain types and tensors, written atomically.

A checkpoint holds everything needed to resume training or to sample:

    {"format": "gan-checkpoint", "format_version": 2,
     "config": TrainConfig.to_dict(), "step": int, "created_at": ISO-8601 str,
     "data": {"shape": [C, H, W] or [D], "num_classes": int (0: unconditional)},
     "generator": state_dict, "generator_ema": state_dict or None, "discriminator": state_dict,
     "opt_g": state_dict, "opt_d": state_dict, "rng": ByteTensor,
     "metrics": {str: float} (losses and the latest evaluation),
     "monitor": gan.monitor.Monitor.state_dict() (evaluations, best, warnings, rollbacks)}

``step-NNNNNNNN.pt`` files are the newest ``keep_checkpoints`` steps; ``best.pt`` is the
checkpoint of the best evaluation so far.

Only tensors and builtins, so ``torch.load(..., weights_only=True)`` reads it: loading a
checkpoint never unpickles arbitrary objects.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Any

import torch

FORMAT = "gan-checkpoint"
FORMAT_VERSION = 2
_NAME = re.compile(r"^step-(\d{8})\.pt$")
BEST_NAME = "best.pt"  # the best evaluation's checkpoint, beside the step-N ones; never pruned


class CheckpointError(RuntimeError):
    """A file is not a readable checkpoint of a supported format."""


def checkpoint_path(directory: Path, step: int) -> Path:
    return directory / f"step-{step:08d}.pt"


def list_checkpoints(directory: Path) -> list[tuple[int, Path]]:
    """(step, path) of every checkpoint in ``directory``, oldest first."""
    if not directory.is_dir():
        return []
    found = []
    for path in directory.iterdir():
        match = _NAME.match(path.name)
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found)


def best_checkpoint(directory: Path) -> Path | None:
    """``best.pt``: the checkpoint of the best evaluation so far, if the run keeps one."""
    path = directory / BEST_NAME
    return path if path.is_file() else None


def latest_checkpoint(directory: Path) -> Path | None:
    found = list_checkpoints(directory)
    return found[-1][1] if found else None


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    """Write the checkpoint ``state`` to ``path`` atomically, marked with this format."""
    write_atomically({"format": FORMAT, "format_version": FORMAT_VERSION, **state}, path)


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The checkpoint dict at ``path``, loaded with ``weights_only=True``."""
    return read_marked(path, FORMAT, FORMAT_VERSION, map_location)


def write_atomically(state: dict[str, Any], path: Path) -> None:
    """``torch.save`` to ``path`` atomically: readers see the old file or the whole new one.

    The bytes go to a temporary file in the same directory, are flushed to disk, and the file is
    renamed over ``path`` (rename is atomic within one filesystem); then the directory entry is
    synced so the rename survives a crash.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def read_marked(
    path: Path, fmt: str, version: int, map_location: str | torch.device = "cpu"
) -> dict[str, Any]:
    """The dict at ``path`` (loaded with ``weights_only=True``) if its "format" is ``fmt`` and
    its "format_version" is ``version``; CheckpointError otherwise."""
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises several types for corrupt or foreign files
        raise CheckpointError(f"{path.name} is not a readable {fmt} file: {e}") from e
    if not isinstance(state, dict) or state.get("format") != fmt:
        raise CheckpointError(f"{path.name} is not a {fmt} file")
    if state.get("format_version") != version:
        raise CheckpointError(
            f"{path.name} has format version {state.get('format_version')}, "
            f"this code reads {version}"
        )
    return state


def prune_checkpoints(directory: Path, keep: int) -> None:
    """Delete all but the newest ``keep`` checkpoints in ``directory``."""
    for _, path in list_checkpoints(directory)[:-keep]:
        path.unlink(missing_ok=True)
