"""Generating images for the samples endpoint. Imports torch: routes import this lazily, so the
API starts and enqueues jobs without loading torch."""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gan.checkpoint import (
    CheckpointError,
    best_checkpoint,
    latest_checkpoint,
    list_checkpoints,
)
from gan.models import Generator
from gan.sample import generate, load_generator

_CACHE_SIZE = 8
_cache: OrderedDict[tuple[str, int], tuple[Generator, int]] = OrderedDict()
_lock = threading.Lock()


class NoCheckpoint(LookupError):
    """The job has written no checkpoint yet."""


class CheckpointNotFound(LookupError):
    """The checkpoint asked for is not on disk; the message lists those that are."""


@dataclass(frozen=True)
class Samples:
    samples: np.ndarray  # gan.sample.generate's: uint8 images, or float32 points
    step: int  # of the checkpoint used
    checkpoint: str  # how it was picked: "latest", "best" or "step"


def _generator(path: Path) -> tuple[Generator, int]:
    """(generator, step) for a checkpoint file, from a small LRU cache keyed by path and mtime."""
    key = (str(path), path.stat().st_mtime_ns)
    with _lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    G, _, step = load_generator(path)
    with _lock:
        _cache[key] = (G, step)
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return G, step


def _pick(checkpoint_dir: Path, checkpoint: str | None) -> tuple[Path, str]:
    """(path, "latest" | "best" | "step") of the checkpoint ``checkpoint`` names: "latest",
    "best", a step number, or None for best when the run keeps one, else latest."""
    best = best_checkpoint(checkpoint_dir)
    if checkpoint is None and best is not None:
        return best, "best"
    if checkpoint in (None, "latest"):
        latest = latest_checkpoint(checkpoint_dir)
        if latest is None:
            raise NoCheckpoint(checkpoint_dir)
        return latest, "latest"
    if checkpoint == "best":
        if best is None:
            raise CheckpointNotFound(
                "no best checkpoint (one is kept from the first evaluation on, when eval_every "
                f"> 0 and the dataset has a quality metric); {_on_disk(checkpoint_dir)}"
            )
        return best, "best"
    assert checkpoint is not None and checkpoint.isdigit(), checkpoint
    step = int(checkpoint)
    for found, path in list_checkpoints(checkpoint_dir):
        if found == step:
            return path, "step"
    if best is not None and _generator(best)[1] == step:  # pruned, but kept as the best
        return best, "step"
    raise CheckpointNotFound(f"no checkpoint at step {step}; {_on_disk(checkpoint_dir)}")


def _on_disk(checkpoint_dir: Path) -> str:
    """The checkpoints that can be asked for, for a person."""
    steps = [str(step) for step, _ in list_checkpoints(checkpoint_dir)]
    kept = [f"steps {', '.join(steps)}" if steps else "no step checkpoints"]
    best = best_checkpoint(checkpoint_dir)
    if best is not None:
        kept.append(f"best (step {_generator(best)[1]})")
    return f"on disk: {' and '.join(kept)}"


def sample(checkpoint_dir: Path, checkpoint: str | None, n: int, seed: int) -> Samples:
    """``n`` samples from the generator (its EMA when the run kept one) of the checkpoint that
    ``checkpoint`` names ("latest", "best", a step; None: best if kept, else latest).

    NoCheckpoint when the job has none yet, CheckpointNotFound when the named one is not on disk.
    """
    attempts = 3
    for attempt in range(attempts):
        path, kind = _pick(checkpoint_dir, checkpoint)
        try:
            G, step = _generator(path)
        except (FileNotFoundError, CheckpointError):
            # Training prunes old step files: this one went between finding and reading it.
            if path.exists() or attempt == attempts - 1:
                raise
            continue
        return Samples(generate(G, n, seed), step, kind)
    raise AssertionError("unreachable")
