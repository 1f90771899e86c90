"""A worker's local copy of what a job needs from the artifact store, and what it publishes.

With a local folder as the artifact store (``GAN_ARTIFACTS_URL``'s default) the trainer works in
the store's folder itself and nothing here copies anything. With an object store, the worker
trains in its own folder (``GAN_CACHE_DIR/artifacts/…``, the same layout) and:

- before training, ``stage`` makes the job's checkpoint folder a copy of the store's (the
  newest checkpoint may have been written by a worker on another machine), fetches the uploaded
  dataset and any cached judge;
- while training, ``StoreMirror`` puts every checkpoint in the store (one PUT of its bytes,
  after the lease check, before the local rename) and removes those pruned; a PUT that fails
  is tried again for ``GAN_ARTIFACTS_RETRY_S`` seconds (the store restarting), then the job
  fails with the reason;
- after the judge is trained, ``publish_judges`` puts it in the store for the other workers.

``stage`` also refuses to start a job over silently: a job whose row records a checkpoint at
step N, when the store has none, fails naming ``GAN_ARTIFACTS_URL`` (every worker must share the
store: training from step 0 would throw N steps away and overwrite the job's metrics). Failing
beats waiting: the cause is a misconfigured machine, which waiting does not fix, and the job
can be resumed once it is fixed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from gan.checkpoint import CheckpointError, CheckpointWriteError, write_file_atomically
from gan.config import UPLOAD_ID, TrainConfig
from worker.artifacts import (
    DATASETS,
    JUDGES,
    RETRY_EVERY_S,
    SETTING,
    ArtifactStore,
    ArtifactStoreError,
    checkpoints_key,
    job_key,
)
from worker.settings import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")


class StoreMirror:
    """``gan.checkpoint.Mirror`` over a job's checkpoint folder in an object store."""

    def __init__(self, store: ArtifactStore, prefix: str) -> None:
        self.store, self.prefix = store, prefix

    def put(self, name: str, data: bytes) -> None:
        try:
            self.store.write_retrying(f"{self.prefix}/{name}", data, None)
        except ArtifactStoreError as e:
            raise CheckpointWriteError(
                f"could not write checkpoint {name} to the artifact store for "
                f"{self.store.retry_s:g} s: {e} (then resume the job)"
            ) from e

    def remove(self, name: str) -> None:
        try:
            retrying(self.store, lambda: self.store.delete(f"{self.prefix}/{name}"))
        except ArtifactStoreError as e:  # an old checkpoint left behind: never worth a failure
            log.warning("could not remove %s/%s: %s", self.prefix, name, e)


def retrying(store: ArtifactStore, call: Callable[[], T]) -> T:
    """``call()``, again every second for ``store.retry_s`` seconds while the store cannot be
    reached; then its error."""
    deadline = time.monotonic() + store.retry_s
    while True:
        try:
            return call()
        except ArtifactStoreError as e:
            if time.monotonic() >= deadline:
                raise
            log.warning("the artifact store is unreachable, retrying: %s", e)
            time.sleep(RETRY_EVERY_S)


def mirror(settings: Settings, job_id: str) -> StoreMirror | None:
    """Where the trainer publishes the job's checkpoints besides its folder: the object store,
    or None when the store is the folder itself."""
    store = settings.artifacts()
    return StoreMirror(store, checkpoints_key(job_id)) if store.remote else None


def stage(settings: Settings, job_id: str, cfg: TrainConfig, checkpoint_step: int | None) -> None:
    """Fetch what job ``job_id`` needs from an object store into this worker's folders; then
    CheckpointError when its row records a checkpoint at ``checkpoint_step`` and none is
    there (see the module's docstring)."""
    store = settings.artifacts()
    folder = settings.checkpoint_dir(job_id)
    if store.remote:
        retrying(store, lambda: store.download(checkpoints_key(job_id), folder))
        board = f"{job_key(job_id)}/tensorboard"  # event files go on where the last run left them
        retrying(store, lambda: store.download(board, settings.job_dir(job_id) / "tensorboard"))
        if UPLOAD_ID.fullmatch(cfg.dataset):
            key = f"{DATASETS}/{cfg.dataset}"
            retrying(store, lambda: store.download(key, settings.datasets_dir / cfg.dataset))
        for entry in retrying(store, lambda: store.listing(JUDGES)):
            local = settings.judges_dir / entry.name
            if not local.is_file():  # a judge never changes once written
                write_file_atomically(store.read_bytes(entry.key), local, None)
    if checkpoint_step is not None and not _has_checkpoint(folder):
        raise CheckpointError(
            f"the job has a checkpoint at step {checkpoint_step}, but this worker finds none in "
            f"the artifact store {store.url} ({SETTING}): every worker and the API must share "
            "one store (an s3:// URL when they run on several machines); not starting over "
            "from step 0. Fix the setting, then resume the job."
        )


def _has_checkpoint(folder: Path) -> bool:
    return folder.is_dir() and any(
        p.name == "best.pt" or (p.name.startswith("step-") and p.suffix == ".pt")
        for p in folder.iterdir()
    )


def publish_judges(settings: Settings) -> None:
    """Put the judges this worker trained in an object store, for the other workers."""
    store = settings.artifacts()
    if not store.remote or not settings.judges_dir.is_dir():
        return
    stored = {e.name for e in retrying(store, lambda: store.listing(JUDGES))}
    for path in settings.judges_dir.glob("judge-*.pt"):
        if path.name not in stored:
            data = path.read_bytes()
            retrying(store, lambda: store.write_bytes(f"{JUDGES}/{path.name}", data))  # noqa: B023
