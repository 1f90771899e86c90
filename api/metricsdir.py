"""The metrics an API process measures itself, summed over `gan serve --processes N`.

prometheus_client's multiprocess mode: with ``PROMETHEUS_MULTIPROC_DIR`` in the environment
(before prometheus_client is imported), every process writes its counters and histograms to
files of its own in that folder, and a scrape, whichever process answers it, reads them all
(``scrape_registry``). A dead process's files stay and are summed: a counter never goes
backwards when a process is replaced. A gauge measured in the process (none yet) must choose a
``multiprocess_mode`` ("livesum" and the like drop a process's files at its exit:
``mark_dead_at_exit``).

`gan serve --processes N` (N > 1) makes the folder (``shared_metrics_dir``) and empties it at
start, so that the counts of an earlier run are not added in; one API process alone (or each
API host: Prometheus scrapes each and ``sum()`` adds them up) keeps its metrics in memory.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

ENV = "PROMETHEUS_MULTIPROC_DIR"


def multiprocess_dir() -> str | None:
    """The folder of the processes' metric files, when this process runs among several."""
    return os.environ.get(ENV) or None


def scrape_registry(own: CollectorRegistry) -> CollectorRegistry:
    """What a scrape reports of the API processes' own metrics: ``own`` (this process's
    registry), or, among several processes, every process's values summed."""
    folder = multiprocess_dir()
    if folder is None:
        return own
    registry = CollectorRegistry()
    MultiProcessCollector(registry, folder)
    return registry


@lru_cache
def mark_dead_at_exit() -> None:
    """Among several processes: drop this process's live-gauge files when it exits (once per
    process; no-op otherwise)."""
    if multiprocess_dir() is not None:
        atexit.register(mark_process_dead, os.getpid())


@contextmanager
def shared_metrics_dir(processes: int) -> Iterator[Path | None]:
    """For ``processes`` > 1: the folder the processes about to start share their metrics in,
    set as ``PROMETHEUS_MULTIPROC_DIR`` in this process's environment (which they inherit) and
    emptied of an earlier run's files. The operator's own folder when the variable is set,
    else a temporary one, removed at the end. None for one process (and nothing is set)."""
    if processes <= 1:
        yield None
        return
    given = multiprocess_dir()
    folder = Path(given) if given else Path(tempfile.mkdtemp(prefix="gan-metrics-"))
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.db"):
        stale.unlink()
    os.environ[ENV] = str(folder)
    try:
        yield folder
    finally:
        if not given:
            os.environ.pop(ENV, None)
            shutil.rmtree(folder, ignore_errors=True)
