"""Finding a job's checkpoints in the artifact store and loading their generators, for the
samples, interpolation and checkpoints endpoints. Imports torch: routes import this lazily, so
the API starts and enqueues jobs without loading torch.

Training writes and prunes checkpoints while the API reads them: an object can vanish (pruned)
or be replaced (best.pt, atomically) between finding it and reading it. Every read checks that
it read the version that was found (in a folder: same inode, size and mtime; an object store's
copy is downloaded into GAN_CACHE_DIR under its ETag and checked against it), else raises
CheckpointChanged, and ``retry_on_change`` finds the checkpoint again.
"""

from __future__ import annotations

import contextvars
import ctypes
import ctypes.util
import hashlib
import json
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, BinaryIO, Literal, TypeVar

import numpy as np
import torch

from api.heap import freeze_long_lived
from api.slots import sampling_slots
from gan.checkpoint import BEST_NAME, CheckpointError, load_checkpoint, step_of
from gan.models import Generator
from gan.sample import LoadedGenerator, generate, generate_class_rows, read_generator
from worker.artifacts import ArtifactStore, Entry, checkpoints_key, local_version
from worker.settings import Settings, lower_priority

log = logging.getLogger(__name__)
T = TypeVar("T")
Kind = Literal["latest", "best", "step"]

ATTEMPTS = 3  # finding a checkpoint again after training pruned or replaced it
_CACHE_SIZE = 8
# Generators by (store, name, size, version, ema); best.pt's step by (store, name, size, version).
_generators: OrderedDict[Hashable, LoadedGenerator] = OrderedDict()
_best_steps: OrderedDict[Hashable, int] = OrderedDict()
# Checkpoints whose checksum was verified, by (store, name, size, version).
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
# How much lower the CPU priority of the threads that generate is than the API's (Unix nice:
# 0 to 19, higher yields more): a burst of sampling then takes the cores only while the event
# loop and the other routes' threads leave them idle (RELIABILITY.md, "Hostile clients").
GENERATION_NICE = 10
freeze_long_lived()  # torch's modules too, now that they are loaded


def _load_libc() -> Any:
    """The C library, if it has glibc's malloc_trim (musl and macOS have not)."""
    name = ctypes.util.find_library("c")
    libc = ctypes.CDLL(name) if name else None
    return libc if libc is not None and hasattr(libc, "malloc_trim") else None


_libc = _load_libc()


class NoCheckpoint(LookupError):
    """The job has written no checkpoint yet (none is in the artifact store)."""


class CheckpointNotFound(LookupError):
    """The checkpoint asked for is not in the store; the message lists those that are."""


class CheckpointChanged(LookupError):
    """Training pruned or replaced a checkpoint between finding and reading it."""


@dataclass(frozen=True)
class Checkpoints:
    """A job's checkpoint folder in the artifact store (``worker.artifacts``)."""

    store: ArtifactStore
    prefix: str  # jobs/<id>/checkpoints

    @classmethod
    def of(cls, settings: Settings, job_id: str) -> Checkpoints:
        return cls(settings.artifacts(), checkpoints_key(job_id))

    def entries(self) -> tuple[list[tuple[int, Entry]], Entry | None]:
        """(step, object) of every step file, oldest first, and best.pt's object, if any: one
        listing of the folder."""
        steps, best = [], None
        for entry in self.store.listing(self.prefix):
            if entry.key != f"{self.prefix}/{entry.name}":
                continue  # deeper down: not a checkpoint of this folder
            if entry.name == BEST_NAME:
                best = entry
            elif (step := step_of(entry.name)) is not None:
                steps.append((step, entry))
        return sorted(steps, key=lambda s: s[0]), best


@dataclass(frozen=True)
class Found:
    """A checkpoint as found in the store: how it was picked, its step, and its object (name,
    size, version: an object store's ETag, a file's inode, size and mtime), whose version
    changes whenever training replaces it."""

    store: ArtifactStore
    entry: Entry
    kind: Kind  # "latest", "best" (best.pt) or "step"
    step: int

    @property
    def identity(self) -> tuple[str, str, int, str]:
        return self.store.url, self.entry.key, self.entry.size, self.entry.version

    @property
    def size(self) -> int:
        return self.entry.size


def retry_on_change(action: Callable[[], T]) -> T:
    """``action()``, again (``ATTEMPTS`` times in all) while it raises CheckpointChanged."""
    for attempt in range(ATTEMPTS):
        try:
            return action()
        except CheckpointChanged:
            if attempt == ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")


def find(folder: Checkpoints, checkpoint: str | None) -> Found:
    """The checkpoint ``checkpoint`` names: "latest", "best", a step number, or None for best
    when the run keeps one, else latest. A step that training pruned but kept as best.pt is
    found there.

    NoCheckpoint when the job has none yet, CheckpointNotFound when the named one is not there.
    """
    return retry_on_change(lambda: _find(folder, checkpoint))


def _find(folder: Checkpoints, checkpoint: str | None) -> Found:
    steps, best = folder.entries()
    if checkpoint is None and best is not None:
        try:
            return _stat(folder.store, best, "best")
        except CheckpointError as e:  # unreadable: the default falls back to the newest
            log.warning("%s: %s; sampling from the newest checkpoint", best.key, e)
    if checkpoint in (None, "latest"):
        if not steps:
            raise NoCheckpoint(folder.store.url)
        return _stat(folder.store, steps[-1][1], "latest")
    if checkpoint == "best":
        if best is None:
            raise CheckpointNotFound(
                "no best checkpoint (one is kept from the first evaluation on, when eval_every "
                f"> 0 and the dataset has a quality metric); {_kept(folder.store, steps, best)}"
            )
        return _stat(folder.store, best, "best")
    assert checkpoint is not None and checkpoint.isdigit(), checkpoint
    step = int(checkpoint)
    for found, entry in steps:
        if found == step:
            return _stat(folder.store, entry, "step")
    if best is not None and (kept := _stat(folder.store, best, "step")).step == step:
        return kept  # pruned, kept as best
    raise CheckpointNotFound(f"no checkpoint at step {step}; {_kept(folder.store, steps, best)}")


def listing(folder: Checkpoints) -> list[Found]:
    """Every checkpoint in the store: the step files (kind "step"), oldest first, with best.pt
    (kind "best") after the step file of its step. Files pruned while listing are left out."""
    steps, best = folder.entries()
    found = []
    for _, entry in steps:
        try:  # pruned since the listing: left out
            found.append(_stat(folder.store, _again(folder, entry), "step"))
        except CheckpointChanged:
            continue
    if best is not None:
        try:
            found.append(retry_on_change(lambda: _stat(folder.store, _again(folder, best))))
        except CheckpointError as e:  # its step cannot be read: it cannot be listed
            log.warning("%s: %s; not listed", best.key, e)
        except CheckpointChanged:  # removed meanwhile (the job deleted)
            pass
    return sorted(found, key=lambda f: (f.step, f.kind == "best"))


def _again(folder: Checkpoints, entry: Entry) -> Entry:
    """The object ``entry`` names as it is now (it may have been replaced since it was listed);
    CheckpointChanged when it is gone."""
    now = folder.store.info(entry.key)
    if now is None:
        raise CheckpointChanged(entry.key)
    return now


def on_disk(folder: Checkpoints) -> str:
    """The checkpoints that can be asked for, for a person."""
    steps, best = folder.entries()
    return _kept(folder.store, steps, best)


def _kept(store: ArtifactStore, steps: list[tuple[int, Entry]], best: Entry | None) -> str:
    kept = [f"steps {', '.join(str(s) for s, _ in steps)}" if steps else "no step checkpoints"]
    if best is not None:
        try:
            kept.append(f"best (step {_stat(store, best).step})")
        except (CheckpointError, CheckpointChanged):
            kept.append("best (unreadable)")
    return f"on disk: {' and '.join(kept)}"


def load(found: Found, ema: bool) -> LoadedGenerator:
    """The generator of the checkpoint ``found`` (its EMA when ``ema`` and the run kept one),
    from a small LRU cache keyed by the object's name, size and version and ``ema``.

    CheckpointChanged when the object is no longer the one found.
    """
    key = (*found.identity, ema)
    cached = _cached(_generators, key)
    if cached is not None:
        return cached
    loaded = _read(found.store, found.entry, lambda path: read_generator(path, ema=ema))
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
    """CorruptCheckpoint (a CheckpointError, with the reason) unless the object ``found`` reads
    back whole and matches its checksum: a damaged file is never served. Remembered by the
    object's identity, so each version is read once. CheckpointChanged when the object is no
    longer the one found."""
    if _cached(_verified, found.identity) is None:
        _read(found.store, found.entry, load_checkpoint)
        _store(_verified, found.identity, True)


def open_file(found: Found) -> BinaryIO:
    """The checkpoint ``found``, open for reading: its bytes stay readable even when training
    prunes it afterwards. CheckpointChanged when the object is no longer the one found."""
    try:
        file = found.store.local_copy(found.entry).open("rb")
    except FileNotFoundError as e:
        raise CheckpointChanged(found.entry.key) from e
    if not found.store.remote and local_version(os.fstat(file.fileno())) != found.entry.version:
        file.close()
        raise CheckpointChanged(found.entry.key)
    return file


def etag(found: Found, **parameters: Any) -> str:
    """A strong ETag of a response made from the checkpoint ``found`` with ``parameters``
    (JSON values): a hash of both (the object's version among them: its ETag in an object
    store), of SAMPLES_VERSION and of the torch version."""
    key = {
        "checkpoint": [*found.identity, found.kind, found.step],
        "parameters": parameters,
        "version": [SAMPLES_VERSION, torch.__version__],
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
    return f'"{digest[:32]}"'


def _stat(store: ArtifactStore, entry: Entry, kind: Kind | None = None) -> Found:
    """The object ``entry`` found as ``kind`` (by default "best" for best.pt, else "step"),
    with its step: from the name of a step file, from the file itself for best.pt."""
    if kind is None:
        kind = "best" if entry.name == BEST_NAME else "step"
    identity = (store.url, entry.key, entry.size, entry.version)
    if (step := step_of(entry.name)) is None:
        if (cached := _cached(_best_steps, identity)) is not None:
            step = cached
        else:
            read = _read(store, entry, lambda p: int(load_checkpoint(p)["step"]))
            step = _store(_best_steps, identity, read)
    return Found(store, entry, kind, step)


def _read(store: ArtifactStore, entry: Entry, read: Callable[[Path], T]) -> T:
    """``read(path)`` of a local file with the bytes of ``entry``, checked to have read that
    version: CheckpointChanged when training pruned or replaced it before or while it was read.
    An object that is still the same but unreadable raises CheckpointError."""

    def same() -> bool:
        now = store.info(entry.key)
        return now is not None and now.version == entry.version

    try:
        path = store.local_copy(entry)
    except FileNotFoundError:
        raise CheckpointChanged(entry.key) from None
    if not store.remote and not same():  # an object store's copies are immutable
        raise CheckpointChanged(entry.key)
    try:
        value = read(path)
    except (FileNotFoundError, CheckpointError):
        if same():
            raise
        raise CheckpointChanged(entry.key) from None
    if not store.remote and not same():
        raise CheckpointChanged(entry.key)
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


def generating(settings: Settings, work: Callable[[], T]) -> T:
    """``work()``, run in one of the process's generation threads and waited for. Those threads
    run at ``GENERATION_NICE`` below the API's priority: with one torch thread each, the whole
    of a generation's CPU time is spent in them, so that on a busy machine the event loop
    (``/livez``, streams) and the threads of the other routes (``GET /jobs/{id}``) are scheduled
    first, while the generation gets every idle cycle. As many threads as ``max_samplings``,
    which bounds how many generate at once."""
    context = contextvars.copy_context()  # the request's log context goes along
    return _generation_threads(settings.max_samplings).submit(context.run, work).result()


@lru_cache
def _generation_threads(size: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(
        size, "generate", initializer=lower_priority, initargs=(GENERATION_NICE,)
    )


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
