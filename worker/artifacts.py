"""The artifact store: where everything a job writes lives (checkpoints, ``best.pt``, uploaded
datasets, judges, TensorBoard files), named by one setting, ``GAN_ARTIFACTS_URL``.

A local path (the default, ``var/artifacts``) is a folder; ``s3://bucket/prefix`` is any
S3-compatible object store, reached with the standard variables (``AWS_ENDPOINT_URL``,
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION``), so the API and
workers on several machines share it. Both go through fsspec (``s3fs`` for S3), under one
interface keyed by ``/``-separated names relative to the store's root
(``jobs/<id>/checkpoints/step-NNNNNNNN.pt``, ``datasets/<id>/meta.json``, ``judges/…``):

- writes are atomic: bytes already serialized go in one PUT on an object store (an object
  appears whole or not at all, no rename), through a temporary file and a rename in a folder;
- every object has a ``version`` that changes whenever it is replaced: its ETag on an object
  store, its inode, size and mtime in a folder; caches key on it (never on a local mtime);
- ``local_copy`` gives a file with an object's bytes: the file itself in a folder, else a copy
  in ``GAN_CACHE_DIR`` named by the object's version (workers and the API cache reads there).

Errors of the store (unreachable, refused credentials, no such bucket) are
``ArtifactStoreError``: an OSError whose message names the store and the setting to check.

Free of torch at import (the settings import it, and the API enqueues jobs without torch): the
atomic file write of ``gan.checkpoint`` is imported where it is used.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import fsspec

from gan.errors import first_line

log = logging.getLogger(__name__)

SETTING = "GAN_ARTIFACTS_URL"
DATASETS = "datasets"  # datasets/<id>/{images,labels}.npy, meta.json, owner
JUDGES = "judges"  # judges/judge-<name>.pt
CONNECT_TIMEOUT_S = 5.0
RETRY_EVERY_S = 1.0
MAX_COPIES = 32  # an API's cached copies of an object store's checkpoints


class ArtifactStoreError(OSError):
    """The artifact store could not be reached or refused a request; the message says which
    store, why, and which settings name it."""


@dataclass(frozen=True)
class Entry:
    """An object in the store: its name (relative to the root), size, version (ETag, or inode,
    size and mtime of a file) and modification time (seconds since the epoch)."""

    key: str
    size: int
    version: str
    modified: float

    @property
    def name(self) -> str:
        return self.key.rsplit("/", 1)[-1]


def job_key(job_id: str) -> str:
    return f"jobs/{job_id}"


def checkpoints_key(job_id: str) -> str:
    """The folder of a job's checkpoints: step-NNNNNNNN.pt and best.pt."""
    return f"jobs/{job_id}/checkpoints"


def is_remote(url: str) -> bool:
    """Whether ``url`` names an object store rather than a local folder."""
    return "://" in url and not url.startswith("file://")


class ArtifactStore:
    """Objects under the root ``url``, by name; see the module's docstring."""

    def __init__(self, url: str, cache_dir: Path, retry_s: float = 60.0) -> None:
        self.url, self.remote, self.retry_s = url, is_remote(url), retry_s
        self.cache_dir = Path(cache_dir)
        if self.remote:
            protocol, _, root = url.partition("://")
            self.fs: Any = fsspec.filesystem(protocol, **_remote_options(protocol))
            self.fs.retries = 2  # s3fs's own, besides botocore's: callers retry outages
            self._root = root.strip("/")
        else:
            self.fs = fsspec.filesystem("file")
            self.folder = Path(url.removeprefix("file://"))

    @property
    def root(self) -> str:
        """The store's root as its filesystem names it (a local folder's, from the current
        working folder)."""
        return self._root if self.remote else self.folder.absolute().as_posix()

    def __repr__(self) -> str:
        return f"ArtifactStore({self.url!r})"

    def path(self, key: str) -> str:
        return f"{self.root}/{key.strip('/')}" if key else self.root

    def local_path(self, key: str) -> Path:
        """The local file of ``key``: itself in a folder store; in an object store, where this
        machine keeps its copy (under ``GAN_CACHE_DIR``)."""
        base = self.folder if not self.remote else self.cache_dir / "artifacts"
        return base / key if key else base

    def describe(self, error: BaseException) -> str:
        """What went wrong, for a person: the store, the reason, the settings to check."""
        where = self.url
        if self.remote and (endpoint := os.environ.get("AWS_ENDPOINT_URL")):
            where += f" at {endpoint}"
        if isinstance(error, PermissionError):
            hint = "check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
        elif isinstance(error, FileNotFoundError) and self.remote:
            hint = f"check the bucket in {SETTING}: it must exist"
        else:
            hint = f"check {SETTING}" + (" and AWS_ENDPOINT_URL" if self.remote else "")
        return f"artifact store {where} ({SETTING}): {first_line(error)}; {hint}"

    def _call(self, action: Callable[[], Any]) -> Any:
        """``action()``, with the store's errors raised as ArtifactStoreError."""
        try:
            return action()
        except ArtifactStoreError:
            raise
        except FileNotFoundError:
            raise
        except Exception as e:  # botocore and aiohttp raise many types of their own
            raise ArtifactStoreError(self.describe(e)) from e

    def check(self) -> None:
        """ArtifactStoreError unless the store can be listed (for /readyz and start-up): the
        endpoint answers, the credentials are accepted and the bucket exists."""
        bucket = self.root.split("/", 1)[0] if self.remote else self.root  # a prefix may not be
        try:
            self._call(lambda: self.fs.ls(bucket, detail=False))
        except FileNotFoundError as e:
            if self.remote:
                raise ArtifactStoreError(self.describe(e)) from e
            # a folder that does not exist yet is made on the first write

    def info(self, key: str) -> Entry | None:
        """The object ``key``, or None when there is none."""
        try:
            info = self._call(lambda: self.fs.info(self.path(key)))
        except FileNotFoundError:
            return None
        return None if info.get("type") != "file" else self._entry(key, info)

    def _entry(self, key: str, info: dict[str, Any]) -> Entry:
        if self.remote:
            version = str(info.get("ETag") or info.get("VersionId") or "").strip('"')
            modified = info.get("LastModified")
            when = modified.timestamp() if modified is not None else 0.0
        else:
            when = float(info.get("mtime", 0.0))
            version = _local_version(info.get("ino"), int(info["size"]), when)
        return Entry(key, int(info["size"]), version, when)

    def listing(self, prefix: str) -> list[Entry]:
        """Every object under ``prefix`` (a folder's name, recursively), sorted by name."""
        base = self.path(prefix)
        try:
            found = self._call(lambda: self.fs.find(base, detail=True))
        except FileNotFoundError:
            return []
        entries = []
        for path, info in found.items():
            if info.get("type") != "file" or (not self.remote and info.get("islink")):
                continue
            relative = path.removeprefix(self.root).strip("/")
            entries.append(self._entry(relative, info))
        return sorted(entries, key=lambda e: e.key)

    def read_bytes(self, key: str) -> bytes:
        """The bytes of ``key``; FileNotFoundError when there is none."""
        data: bytes = self._call(lambda: self.fs.cat_file(self.path(key)))
        return data

    def write_bytes(
        self, key: str, data: bytes | memoryview, may_write: Callable[[], bool] | None = None
    ) -> None:
        """Write ``data`` to ``key`` atomically: one PUT on an object store, a temporary file
        and a rename in a folder. ``may_write`` is asked last, just before (see
        ``gan.checkpoint.save_checkpoint``)."""
        from gan.checkpoint import WriteRefused, write_file_atomically

        if not self.remote:
            write_file_atomically(data, Path(self.path(key)), may_write)
            return
        if may_write is not None and not may_write():
            raise WriteRefused(f"{key} was not written: writes to {self.url} were refused")
        self._call(lambda: self.fs.pipe_file(self.path(key), bytes(data)))

    def write_retrying(self, key: str, data: bytes, may_write: Callable[[], bool] | None) -> None:
        """``write_bytes``, tried again every second for ``retry_s`` seconds while the store
        cannot be reached (restarting, say); then its error."""
        deadline = time.monotonic() + self.retry_s
        failed = False
        while True:
            try:
                self.write_bytes(key, data, may_write)
            except ArtifactStoreError as e:
                if time.monotonic() >= deadline:
                    raise
                if not failed:
                    log.warning("could not write %s, retrying for %.0f s: %s", key,
                                self.retry_s, e)  # fmt: skip
                failed = True
                time.sleep(RETRY_EVERY_S)
                continue
            if failed:
                log.info("wrote %s: the artifact store is back", key)
            return

    def delete(self, key: str) -> None:
        """Remove ``key`` (nothing when there is none)."""
        with contextlib.suppress(FileNotFoundError):
            self._call(lambda: self.fs.rm_file(self.path(key)))

    def delete_prefix(self, prefix: str) -> None:
        """Remove everything under ``prefix`` (and the local copies of it)."""
        try:
            if self.remote:
                keys = [self.path(e.key) for e in self.listing(prefix)]
                if keys:
                    self._call(lambda: self.fs.rm(keys))
            else:
                self._call(lambda: self.fs.rm(self.path(prefix), recursive=True))
        except FileNotFoundError:
            pass
        if self.remote:
            shutil.rmtree(self.local_path(prefix), ignore_errors=True)

    def local_copy(self, entry: Entry) -> Path:
        """A local file with the bytes of ``entry``: the file itself in a folder store; else a
        copy cached by its version (downloaded once; the ``MAX_COPIES`` used last are kept).
        FileNotFoundError when it is gone, or was replaced while it was read."""
        if not self.remote:
            return Path(self.path(entry.key))
        tag = hashlib.sha256(f"{entry.key}\0{entry.version}".encode()).hexdigest()[:32]
        copy = self.cache_dir / "objects" / f"{tag}-{entry.name}"
        try:
            os.utime(copy)  # used now: kept longest
            return copy
        except FileNotFoundError:
            pass
        from gan.checkpoint import write_file_atomically

        data = self.read_bytes(entry.key)
        if len(entry.version) == 32 and _md5(data) != entry.version:
            raise FileNotFoundError(f"{entry.key} was replaced while it was read")
        write_file_atomically(data, copy, None)
        _keep_newest(copy.parent, MAX_COPIES)
        return copy

    def download(self, prefix: str, folder: Path) -> list[Entry]:
        """Make ``folder`` hold exactly the objects under ``prefix`` (relative names kept):
        those missing or of another size are fetched, files the store lacks are removed. For a
        folder store, ``folder`` is the store's own folder: nothing to do."""
        from gan.checkpoint import write_file_atomically

        entries = self.listing(prefix)
        if not self.remote:
            return entries
        wanted = {e.key.removeprefix(prefix).strip("/"): e for e in entries}
        for name, entry in wanted.items():
            local = folder / name
            if not local.is_file() or local.stat().st_size != entry.size or not _same(local, entry):
                write_file_atomically(self.read_bytes(entry.key), local, None)
        if folder.is_dir():
            for path in folder.rglob("*"):
                if path.is_file() and path.relative_to(folder).as_posix() not in wanted:
                    path.unlink(missing_ok=True)
        return entries


def _same(local: Path, entry: Entry) -> bool:
    """Whether the local file has the object's bytes: an ETag of a single PUT is their MD5."""
    if len(entry.version) != 32:  # a multipart ETag ("<md5>-<parts>"): fetch it again
        return False
    return _md5(local.read_bytes()) == entry.version


def _md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def _local_version(inode: object, size: int, mtime: float) -> str:
    """A file's version: a rename over it (an atomic write) gives it another inode."""
    return f"{inode}-{size}-{mtime!r}"


def local_version(stat: os.stat_result) -> str:
    """The version of an open file (as ``ArtifactStore.info`` gives it for a folder store)."""
    return _local_version(stat.st_ino, stat.st_size, stat.st_mtime)


def _keep_newest(folder: Path, keep: int) -> None:
    """Remove all but the ``keep`` files of ``folder`` used last (open ones stay readable)."""
    used = []
    for path in folder.iterdir():
        with contextlib.suppress(FileNotFoundError):  # removed by another thread meanwhile
            used.append((path.stat().st_mtime, path))
    for _, path in sorted(used, reverse=True)[keep:]:
        path.unlink(missing_ok=True)


def _remote_options(protocol: str) -> dict[str, Any]:
    """fsspec options of an object store: no listing cache (other machines write), short
    connect timeouts and few retries (an unreachable store is said at once), and the
    endpoint and region from the standard variables."""
    if protocol not in ("s3", "s3a"):
        return {}
    client: dict[str, Any] = {}
    if endpoint := os.environ.get("AWS_ENDPOINT_URL"):
        client["endpoint_url"] = endpoint
    if region := os.environ.get("AWS_DEFAULT_REGION"):
        client["region_name"] = region
    return {
        "use_listings_cache": False,
        "skip_instance_cache": True,
        "client_kwargs": client,
        "config_kwargs": {
            "connect_timeout": CONNECT_TIMEOUT_S,
            "read_timeout": 60,
            "retries": {"max_attempts": 1, "mode": "standard"},
        },
    }


def check_store(store: ArtifactStore, who: str) -> bool:
    """Log, at start-up, the artifact store and whether it can be used (the job it cannot
    write to fails with the same reason, and /readyz says it too)."""
    try:
        store.check()
    except ArtifactStoreError as e:
        log.error("%s: the artifact store cannot be used: %s", who, e)
        return False
    log.info("%s: artifacts in %s", who, store.url if store.remote else store.folder.absolute())
    return True


@lru_cache
def open_store(url: str, cache_dir: str, retry_s: float) -> ArtifactStore:
    return ArtifactStore(url, Path(cache_dir), retry_s)
