"""Generating images for the samples endpoint. Imports torch: routes import this lazily, so the
API starts and enqueues jobs without loading torch."""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np

from gan.checkpoint import latest_checkpoint
from gan.models import Generator
from gan.sample import generate, load_generator

_CACHE_SIZE = 8
_cache: OrderedDict[tuple[str, int], tuple[Generator, int]] = OrderedDict()
_lock = threading.Lock()


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


def sample_latest(checkpoint_dir: Path, n: int, seed: int) -> tuple[np.ndarray, int] | None:
    """(samples, checkpoint step) from the newest checkpoint's generator (its EMA when the run
    kept one), or None if the job has none yet. Samples are ``gan.sample.generate``'s: uint8
    images, or float32 points."""
    path = latest_checkpoint(checkpoint_dir)
    if path is None:
        return None
    G, step = _generator(path)
    return generate(G, n, seed), step
