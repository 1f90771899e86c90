"""Finding a job's checkpoints on disk and loading their generators, for the samples,
interpolation and checkpoints endpoints. Imports torch: routes import this lazily, so the API
starts and enqueues jobs without loading torch.

Training writes and prunes checkpoints while the API reads them: a file can vanish (pruned) or be
replaced (best.pt, atomically) between finding it and reading it. Every read checks that it read
the file that was found (same size and mtime), else raises CheckpointChanged, and
``retry_on_change`` finds the checkpoint again.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import json
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Literal, TypeVar

import numpy as np
import torch

from api.slots import sampling_slots
from gan.checkpoint import (
    BEST_NAME,
    CheckpointError,
    best_checkpoint,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
)
from gan.models import Generator
from gan.sample import LoadedGenerator, generate, generate_class_rows, read_generator
from worker.settings import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")
Kind = Literal["latest", "best", "step"]

ATTEMPTS = 3  # finding a checkpoint again after training pruned or replaced it
_CACHE_SIZE = 8
# Generators by (path, size, mtime_ns, ema); best.pt's step by (path, size, mtime_ns).
_generators: OrderedDict[Hashable, LoadedGenerator] = OrderedDict()
_best_steps: OrderedDict[Hashable, int] = OrderedDict()
# Checkpoint files whose checksum was verified, by (path, size, mtime_ns).
_verified: OrderedDict[Hashable, bool] = OrderedDict()
_lock = threading.Lock()

# Bumped when the same checkpoint and parameters would give other bytes (a part of every ETag).
SAMPLES_VERSION = 2
# Rendered responses by ETag, newest last, up to this many bytes in all: many viewers of one
# grid (a dashboard) cost one rendering.
RENDERED_BYTES = 64 * 2**20
_rendered: OrderedDict[str, tuple[bytes, Any]] = OrderedDict()
_rendered_size = 0

# Requests are served concurrently by the thread pool; one torch thread each keeps the cores
# busy without oversubscribing them (the worker, a process of its own, is not affected).
torch.set_num_threads(1)


def _load_libc() -> Any:
    """The C library, if it has glibc's malloc_trim (musl and macOS have not)."""
    name = ctypes.util.find_library("c")
    libc = ctypes.CDLL(name) if name else None
    return libc if libc is not None and hasattr(libc, "malloc_trim") else None


_libc = _load_libc()


class NoCheckpoint(LookupError):
    """The job has written no checkpoint yet."""


class CheckpointNotFound(LookupError):
    """The checkpoint asked for is not on disk; the message lists those that are."""


class CheckpointChanged(LookupError):
    """Training pruned or replaced a checkpoint between finding and reading it."""


@dataclass(frozen=True)
class Found:
    """A checkpoint file as found on disk: how it was picked, its step, and its identity (path,
    size, mtime), which changes whenever training replaces the file."""

    path: Path
    kind: Kind  # "latest", "best" (best.pt) or "step"
    step: int
    size: int
    mtime_ns: int

    @property
    def identity(self) -> tuple[str, int, int]:
        return str(self.path), self.size, self.mtime_ns


def retry_on_change(action: Callable[[], T]) -> T:
    """``action()``, again (``ATTEMPTS`` times in all) while it raises CheckpointChanged."""
    for attempt in range(ATTEMPTS):
        try:
            return action()
        except CheckpointChanged:
            if attempt == ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")


def find(checkpoint_dir: Path, checkpoint: str | None) -> Found:
    """The checkpoint ``checkpoint`` names: "latest", "best", a step number, or None for best
    when the run keeps one, else latest. A step that training pruned but kept as best.pt is
    found there.

    NoCheckpoint when the job has none yet, CheckpointNotFound when the named one is not on disk.
    """
    return retry_on_change(lambda: _find(checkpoint_dir, checkpoint))


def _find(checkpoint_dir: Path, checkpoint: str | None) -> Found:
    best = best_checkpoint(checkpoint_dir)
    if checkpoint is None and best is not None:
        try:
            return _stat(best, "best")
        except CheckpointError as e:  # unreadable: the default falls back to the newest
            log.warning("%s: %s; sampling from the newest checkpoint", best, e)
    if checkpoint in (None, "latest"):
        latest = latest_checkpoint(checkpoint_dir)
        if latest is None:
            raise NoCheckpoint(checkpoint_dir)
        return _stat(latest, "latest")
    if checkpoint == "best":
        if best is None:
            raise CheckpointNotFound(
                "no best checkpoint (one is kept from the first evaluation on, when eval_every "
                f"> 0 and the dataset has a quality metric); {on_disk(checkpoint_dir)}"
            )
        return _stat(best, "best")
    assert checkpoint is not None and checkpoint.isdigit(), checkpoint
    step = int(checkpoint)
    for found, path in list_checkpoints(checkpoint_dir):
        if found == step:
            return _stat(path, "step")
    if best is not None and (kept := _stat(best, "step")).step == step:  # pruned, kept as best
        return kept
    raise CheckpointNotFound(f"no checkpoint at step {step}; {on_disk(checkpoint_dir)}")


def listing(checkpoint_dir: Path) -> list[Found]:
    """Every checkpoint on disk: the step files (kind "step"), oldest first, with best.pt (kind
    "best") after the step file of its step. Files pruned while listing are left out."""
    found = []
    for _, path in list_checkpoints(checkpoint_dir):
        try:
            found.append(_stat(path, "step"))
        except CheckpointChanged:
            continue
    best = best_checkpoint(checkpoint_dir)
    if best is not None:
        try:
            found.append(retry_on_change(lambda: _stat(best, "best")))
        except CheckpointError as e:  # its step cannot be read: it cannot be listed
            log.warning("%s: %s; not listed", best, e)
    return sorted(found, key=lambda f: (f.step, f.kind == "best"))


def on_disk(checkpoint_dir: Path) -> str:
    """The checkpoints that can be asked for, for a person."""
    steps = [str(step) for step, _ in list_checkpoints(checkpoint_dir)]
    kept = [f"steps {', '.join(steps)}" if steps else "no step checkpoints"]
    best = best_checkpoint(checkpoint_dir)
    if best is not None:
        try:
            kept.append(f"best (step {retry_on_change(lambda: _stat(best, 'best')).step})")
        except CheckpointError:
            kept.append("best (unreadable)")
    return f"on disk: {' and '.join(kept)}"


def load(found: Found, ema: bool) -> LoadedGenerator:
    """The generator of the checkpoint ``found`` (its EMA when ``ema`` and the run kept one),
    from a small LRU cache keyed by the file's path, size and mtime and ``ema``.

    CheckpointChanged when the file is no longer the one found.
    """
    key = (*found.identity, ema)
    cached = _cached(_generators, key)
    if cached is not None:
        return cached
    loaded = _read(found.path, found.identity[1:], lambda path: read_generator(path, ema=ema))
    return _store(_generators, key, loaded)


def draw(
    G: Generator, n: int, seed: int, label: int | str | None, truncation: float | None, nrow: int
) -> np.ndarray:
    """The samples of GET /jobs/{id}/samples: ``n`` of classes 0, 1, … in turn (label None, or
    an unconditional G), ``n`` of class ``label``, or with label "rows" ``nrow`` per class, class
    k in row k."""
    if label == "rows":
        return generate_class_rows(G, nrow, seed, truncation)
    labels = None if label is None else torch.full((n,), int(label))
    return generate(G, n, seed, labels, truncation)


def verify(found: Found) -> None:
    """CorruptCheckpoint (a CheckpointError, with the reason) unless the file ``found`` reads
    back whole and matches its checksum: a damaged file is never served. Remembered by the
    file's identity, so each version of a file is read once. CheckpointChanged when the file
    is no longer the one found."""
    if _cached(_verified, found.identity) is None:
        _read(found.path, found.identity[1:], load_checkpoint)
        _store(_verified, found.identity, True)


def open_file(found: Found) -> BinaryIO:
    """The checkpoint file ``found``, open for reading: its bytes stay readable even when training
    prunes it afterwards. CheckpointChanged when the file is no longer the one found."""
    try:
        file = found.path.open("rb")
    except FileNotFoundError as e:
        raise CheckpointChanged(found.path) from e
    stat = os.fstat(file.fileno())
    if (stat.st_size, stat.st_mtime_ns) != (found.size, found.mtime_ns):
        file.close()
        raise CheckpointChanged(found.path)
    return file


def etag(found: Found, **parameters: Any) -> str:
    """A strong ETag of a response made from the checkpoint ``found`` with ``parameters``
    (JSON values): a hash of both, of SAMPLES_VERSION and of the torch version."""
    key = {
        "checkpoint": [*found.identity, found.kind, found.step],
        "parameters": parameters,
        "version": [SAMPLES_VERSION, torch.__version__],
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
    return f'"{digest[:32]}"'


def _stat(path: Path, kind: Kind) -> Found:
    """``path`` found as ``kind``, with its step: from the name of a step file, from the file
    itself for best.pt. CheckpointChanged when it is gone."""
    try:
        stat = path.stat()
    except FileNotFoundError as e:
        raise CheckpointChanged(path) from e
    identity = (str(path), stat.st_size, stat.st_mtime_ns)
    if path.name != BEST_NAME:
        step = int(path.stem.removeprefix("step-"))
    elif (cached := _cached(_best_steps, identity)) is not None:
        step = cached
    else:
        read = _read(path, identity[1:], lambda p: int(load_checkpoint(p)["step"]))
        step = _store(_best_steps, identity, read)
    return Found(path, kind, step, stat.st_size, stat.st_mtime_ns)


def _read(path: Path, size_mtime: tuple[int, int], read: Callable[[Path], T]) -> T:
    """``read(path)``, checked to have read the file of that size and mtime: CheckpointChanged
    when training pruned or replaced it before or while it was read. A file that is still the
    same but unreadable raises CheckpointError."""

    def same() -> bool:
        try:
            stat = path.stat()
        except FileNotFoundError:
            return False
        return (stat.st_size, stat.st_mtime_ns) == size_mtime

    if not same():
        raise CheckpointChanged(path)
    try:
        value = read(path)
    except (FileNotFoundError, CheckpointError):
        if same():
            raise
        raise CheckpointChanged(path) from None
    if not same():
        raise CheckpointChanged(path)
    return value


def _cached(cache: OrderedDict[Hashable, T], key: Hashable) -> T | None:
    with _lock:
        if key in cache:
            cache.move_to_end(key)
            return cache[key]
    return None


def _store(cache: OrderedDict[Hashable, T], key: Hashable, value: T) -> T:
    with _lock:
        cache[key] = value
        while len(cache) > _CACHE_SIZE:
            cache.popitem(last=False)
    return value


@contextmanager
def slot(client: str, settings: Settings) -> Iterator[None]:
    """Hold one of the process's sampling slots while generating (``api.slots``). When the
    last one is given back, the C heap's free memory goes back to the system: else glibc's
    arenas keep the peak of a burst of large requests (issue 15: 200 at n=1024 took the API
    from 245 MB to 1.8 GB, never given back)."""
    slots = sampling_slots(settings)
    give_back = slots.take(client)
    try:
        yield
    finally:
        give_back()
        if slots.in_use == 0:
            trim_heap()


def trim_heap() -> None:
    """Give the C heap's free pages back to the system (glibc's malloc_trim; elsewhere, no-op)."""
    if _libc is not None:
        _libc.malloc_trim(0)


def rendered(etag: str, render: Callable[[], tuple[bytes, T]]) -> tuple[bytes, T]:
    """``render()``'s (body, extra), made once per ETag while the cache holds it: an ETag names
    the checkpoint file and every parameter, so the same ETag always renders the same bytes."""
    global _rendered_size
    with _lock:
        if etag in _rendered:
            _rendered.move_to_end(etag)
            return _rendered[etag]
    body, extra = render()
    with _lock:
        if etag not in _rendered and len(body) <= RENDERED_BYTES:
            _rendered[etag] = (body, extra)
            _rendered_size += len(body)
            while _rendered_size > RENDERED_BYTES:
                _rendered_size -= len(_rendered.popitem(last=False)[1][0])
    return body, extra
