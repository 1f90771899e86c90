"""Checkpoints: self-describing dicts of plain types and tensors, written atomically, sealed
with a checksum.

A checkpoint holds everything needed to resume training or to sample:

    {"format": "gan-checkpoint", "format_version": 3,
     "config": TrainConfig.to_dict(), "step": int, "created_at": ISO-8601 str,
     "data": {"shape": [C, H, W] or [D], "num_classes": int (0: unconditional)},
     "generator": state_dict, "generator_ema": state_dict or None, "discriminator": state_dict,
     "opt_g": state_dict, "opt_d": state_dict, "rng": ByteTensor,
     "metrics": {str: float} (losses and the latest evaluation),
     "monitor": gan.monitor.Monitor.state_dict() (evaluations, best, warnings, rollbacks),
     "checksum": "sha256:<hex>" (``content_digest`` of everything else in the dict)}

``step-NNNNNNNN.pt`` files are the newest ``keep_checkpoints`` steps; ``best.pt`` is the
checkpoint of the best evaluation so far.

Only tensors and builtins, so ``torch.load(..., weights_only=True)`` reads it: loading a
checkpoint never unpickles arbitrary objects.

The checksum is a SHA-256 of the loaded contents (every key, value, tensor dtype, shape and byte),
not of the file's bytes, so it needs no second file and survives any re-encoding that keeps the
contents: ``load_checkpoint`` recomputes it and refuses a file whose contents changed (a flipped
bit in a tensor, say), as it refuses one that torch cannot parse (truncated). Version 2 files,
written before checksums, still load, unchecked.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import stat
import tempfile
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any, Protocol

import torch

from gan.errors import first_line

FORMAT = "gan-checkpoint"
FORMAT_VERSION = 3  # 3 added the checksum
READABLE_VERSIONS = (2, 3)  # 2: written before checksums, loaded unchecked
CHECKSUM = "checksum"  # the key of the checksum, "sha256:<hex>"
_NAME = re.compile(r"^step-(\d{8})\.pt$")
BEST_NAME = "best.pt"  # the best evaluation's checkpoint, beside the step-N ones; never pruned


class CheckpointError(RuntimeError):
    """A file is not a readable checkpoint of a supported format."""


class CorruptCheckpoint(CheckpointError):
    """A checkpoint file is truncated or damaged: torch cannot read it, or its contents do not
    match its checksum."""


class WriteRefused(CheckpointError):
    """``may_write`` said no just before a checkpoint was published: nothing was written (the
    run's owner, a worker, no longer holds the job)."""


class CheckpointWriteError(CheckpointError):
    """A checkpoint could not be written (disk full, folder not writable); the previous file at
    its path, if any, is untouched and no partial file is left."""


class Mirror(Protocol):
    """A copy of a run's checkpoint folder elsewhere (an object store other machines read),
    kept in step by the trainer: each checkpoint's bytes are ``put`` there in one call, after
    ``may_write`` agreed and before the local file is renamed into place (so the mirror is
    never behind the folder); each pruned or moved-aside one is ``remove``d. Either raises
    CheckpointWriteError (a CheckpointError) saying why it could not."""

    def put(self, name: str, data: bytes) -> None: ...

    def remove(self, name: str) -> None: ...


def checkpoint_path(directory: Path, step: int) -> Path:
    return directory / f"step-{step:08d}.pt"


def step_of(name: str) -> int | None:
    """The step of a checkpoint file's name ``step-NNNNNNNN.pt``; None for any other name."""
    match = _NAME.match(name)
    return int(match.group(1)) if match else None


def list_checkpoints(directory: Path) -> list[tuple[int, Path]]:
    """(step, path) of every checkpoint in ``directory``, oldest first: regular files named
    ``step-NNNNNNNN.pt`` (a folder, link or other thing of that name is not one)."""
    if not directory.is_dir():
        return []
    found = []
    for path in directory.iterdir():
        step = step_of(path.name)
        if step is not None and _is_regular_file(path):
            found.append((step, path))
    return sorted(found)


def best_checkpoint(directory: Path) -> Path | None:
    """``best.pt``: the checkpoint of the best evaluation so far, if the run keeps one."""
    path = directory / BEST_NAME
    return path if _is_regular_file(path) else None


def _is_regular_file(path: Path) -> bool:
    """A regular file itself, not a link to one (nor a folder, socket, …); False once gone."""
    try:
        return stat.S_ISREG(path.lstat().st_mode)
    except OSError:
        return False


def latest_checkpoint(directory: Path) -> Path | None:
    found = list_checkpoints(directory)
    return found[-1][1] if found else None


def save_checkpoint(
    state: dict[str, Any],
    path: Path,
    may_write: Callable[[], bool] | None = None,
    mirror: Mirror | None = None,
) -> None:
    """Write the checkpoint ``state`` to ``path`` atomically, marked with this format and sealed
    with its checksum (a ``state`` that was loaded, with an old checksum, is sealed anew).

    ``may_write``, when given, is asked last, once the file is written aside and just before
    it is renamed into place: False removes it, leaving ``path`` as it was, and raises
    WriteRefused. (A worker checks its lease there: a worker paused past its lease, whose job
    another one took, must not publish into that job's folder.)"""
    fields = {k: v for k, v in state.items() if k not in ("format", "format_version", CHECKSUM)}
    marked = {"format": FORMAT, "format_version": FORMAT_VERSION, **fields}
    sealed = {**marked, CHECKSUM: content_digest(marked)}
    write_atomically(sealed, path, what="checkpoint", may_write=may_write, mirror=mirror)


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The checkpoint dict at ``path``, loaded with ``weights_only=True`` and checked against its
    checksum: CorruptCheckpoint when it is truncated or damaged, CheckpointError when it is not
    a checkpoint of a readable version."""
    state = read_marked(path, FORMAT, READABLE_VERSIONS, map_location)
    if state["format_version"] >= 3:
        verify_checksum(path, state)
    return state


def content_digest(state: Mapping[str, Any]) -> str:
    """The "sha256:<hex>" of everything in ``state``: keys and values in order, with their types,
    and each tensor's dtype, shape and bytes (a tensor on a GPU is hashed from a CPU copy)."""
    digest = hashlib.sha256()
    _feed(digest, state)
    return f"sha256:{digest.hexdigest()}"


def _feed(digest: Any, value: Any) -> None:
    """Add ``value`` to ``digest``, unambiguously (every item is tagged with its type and
    length, so no two different values feed the same bytes)."""
    if isinstance(value, torch.Tensor):
        tensor = value.detach().cpu().contiguous()
        digest.update(f"T{tensor.dtype}{list(tensor.shape)};".encode())
        if tensor.numel():
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    elif isinstance(value, Mapping):
        digest.update(f"D{len(value)};".encode())
        for key, item in value.items():
            _feed(digest, key)
            _feed(digest, item)
    elif isinstance(value, list | tuple):
        digest.update(f"{'L' if isinstance(value, list) else 'U'}{len(value)};".encode())
        for item in value:
            _feed(digest, item)
    elif isinstance(value, str | bytes):
        raw = value.encode() if isinstance(value, str) else value
        digest.update(f"{type(value).__name__[0]}{len(raw)};".encode())
        digest.update(raw)
    else:  # None, bool, int, float (repr is exact), torch.dtype, …
        text = f"{type(value).__name__}:{value!r}"
        digest.update(f"V{len(text)};{text}".encode())


def verify_checksum(path: Path, state: dict[str, Any]) -> None:
    """CorruptCheckpoint unless ``state`` (loaded from ``path``) matches its checksum."""
    recorded = state.get(CHECKSUM)
    if not isinstance(recorded, str):
        raise CorruptCheckpoint(f"{path.name} is corrupt: it has no checksum")
    actual = content_digest({k: v for k, v in state.items() if k != CHECKSUM})
    if actual != recorded:
        raise CorruptCheckpoint(
            f"{path.name} is corrupt: its contents do not match its checksum "
            f"(recorded {recorded[:19]}…, computed {actual[:19]}…)"
        )


def write_atomically(
    state: dict[str, Any],
    path: Path,
    what: str = "file",
    may_write: Callable[[], bool] | None = None,
    mirror: Mirror | None = None,
) -> None:
    """``torch.save`` to ``path`` atomically: readers see the old file or the whole new one.

    The state is serialized in memory first (a state that cannot be saved never touches the
    disk); the bytes go to a temporary file in the same directory, are flushed to disk, and the
    file is renamed over ``path`` (rename is atomic within one filesystem); then the directory
    entry is synced so the rename survives a crash. When the disk refuses (full, read-only,
    not writable, not a folder), the temporary file is removed and CheckpointWriteError says
    which ``what`` could not be written where, and why. ``may_write``, ``mirror``: as
    ``save_checkpoint``'s.
    """
    buffer = io.BytesIO()
    torch.save(state, buffer)
    data = buffer.getvalue()

    def publish() -> bool:
        if may_write is not None and not may_write():
            return False
        if mirror is not None:
            mirror.put(path.name, data)
        return True

    try:
        write_file_atomically(data, path, publish)
    except OSError as e:
        raise CheckpointWriteError(
            f"could not write {what} {path.name} in {path.parent.absolute()}: "
            f"{_reason(e, path)} (free space there or make it writable, then resume)"
        ) from e


def write_file_atomically(
    data: bytes | memoryview, path: Path, may_write: Callable[[], bool] | None
) -> None:
    """``data`` to ``path`` through a synced temporary file and a rename (if ``may_write()``
    still says so then); the temporary file is removed when anything fails."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if may_write is not None and not may_write():
            raise WriteRefused(f"{path.name} was not written: writes to {path.parent} were refused")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _reason(error: OSError, path: Path) -> str:
    """Why the disk refused, for a person: the OS's words, or what is in the way."""
    if isinstance(error, FileExistsError | NotADirectoryError):
        if path.parent.is_file():
            return "that is a file, not a folder"
        blocked = next((p for p in path.parent.parents if p.is_file()), None)
        if blocked is not None:
            return f"{blocked.absolute()} is a file, not a folder"
    return error.strerror or str(error)


def read_marked(
    path: Path,
    fmt: str,
    version: int | Collection[int],
    map_location: str | torch.device = "cpu",
) -> dict[str, Any]:
    """The dict at ``path`` (loaded with ``weights_only=True``) if its "format" is ``fmt`` and
    its "format_version" is ``version`` (or one of them); CorruptCheckpoint when torch cannot
    read it (truncated, damaged, or it holds objects other than tensors and builtins), and
    CheckpointError when it is another kind of file or version."""
    versions = (version,) if isinstance(version, int) else tuple(version)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError as e:
        raise CheckpointError(f"{path.name} is not there (it was removed)") from e
    except Exception as e:  # torch raises several types for corrupt or foreign files
        raise CorruptCheckpoint(
            f"{path.name} is not a readable {fmt} file (truncated, damaged, or not a plain "
            f"file of tensors): {first_line(e)}"
        ) from e
    if not isinstance(state, dict) or state.get("format") != fmt:
        raise CheckpointError(f"{path.name} is not a {fmt} file")
    if state.get("format_version") not in versions:
        readable = " or ".join(str(v) for v in versions)
        raise CheckpointError(
            f"{path.name} has format version {state.get('format_version')}, "
            f"this code reads {readable}"
        )
    return state


def prune_checkpoints(directory: Path, keep: int, mirror: Mirror | None = None) -> None:
    """Delete all but the newest ``keep`` checkpoints in ``directory`` (and in ``mirror``)."""
    for _, path in list_checkpoints(directory)[:-keep]:
        if mirror is not None:
            mirror.remove(path.name)
        path.unlink(missing_ok=True)
