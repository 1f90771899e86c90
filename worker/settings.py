"""Service settings, read from ``GAN_*`` environment variables (and a ``.env`` file).

Shared by the API and the worker, so it lives here: the API may import ``worker``, never the
reverse. Defaults are the embedded set-up that needs no server: a SQLite job store and kombu's
filesystem broker, both under ``var/``.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from functools import lru_cache
from pathlib import Path, PurePath
from typing import Annotated, Literal

from pydantic import AliasChoices, BeforeValidator, Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from worker.artifacts import DATASETS, JUDGES, ArtifactStore, checkpoints_key, job_key, open_store

log = logging.getLogger(__name__)

# Nice levels a worker's training runs below the API by default (``Settings.worker_nice``).
WORKER_NICE = 10


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity, where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def lower_priority(by: int) -> None:
    """Lower the calling thread's CPU priority ``by`` nice levels (Unix nice, 19 at most);
    threads and processes it starts afterwards inherit it. Linux schedules each thread on its
    own, so called first thing in a process it lowers the whole process. Where the OS has no
    nice, or refuses, the thread keeps its priority."""
    if by <= 0 or not hasattr(os, "setpriority"):
        return
    thread = threading.get_native_id()
    try:
        now = os.getpriority(os.PRIO_PROCESS, thread)
        os.setpriority(os.PRIO_PROCESS, thread, min(19, now + by))
    except OSError as e:
        log.warning("keeping the CPU priority: %s", e)


# Sample requests answered at once by default: one per core, at most four. On the 2-core
# development machine four at once held GET /jobs/{id}'s p99 at 177-347 ms during a burst, two
# at 108-136 ms (RELIABILITY.md, "Hostile clients").
DEFAULT_MAX_SAMPLINGS = min(4, usable_cores())


def _as_text(value: object) -> object:
    """A path given for a URL setting, as text."""
    return str(value) if isinstance(value, PurePath) else value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="GAN_", env_file=".env", extra="ignore", frozen=True, populate_by_name=True
    )

    # Folder with the datasets' IDX files (torchvision downloads into it where the network allows).
    data_dir: Path = Path("data")
    # SQLAlchemy URL of the job store: SQLite by default, e.g. postgresql+psycopg://u@host/db.
    database_url: str = "sqlite:///var/gan.db"
    # Celery broker: "filesystem://" (embedded, needs no server) or e.g. redis://127.0.0.1:6379/0.
    broker_url: str = "filesystem://"
    # Folder the filesystem broker keeps its messages in (unused with other brokers).
    broker_dir: Path = Path("var/broker")
    # Celery queue the training tasks go to.
    task_queue: str = "gan-train"
    # Where everything a job writes lives (checkpoints, best.pt, uploaded datasets, judges,
    # TensorBoard files): a local folder, or s3://bucket/prefix for an S3-compatible store
    # shared by machines (endpoint and keys from AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID,
    # AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION). GAN_ARTIFACTS_DIR is an alias.
    artifacts_url: Annotated[str, BeforeValidator(_as_text)] = Field(
        "var/artifacts",
        validation_alias=AliasChoices(
            "artifacts_url", "artifacts_dir", "GAN_ARTIFACTS_URL", "GAN_ARTIFACTS_DIR"
        ),
    )
    # Where this machine keeps its copies of objects of a remote artifact store (the worker
    # trains there and publishes each checkpoint to the store; the API caches what it reads).
    cache_dir: Path = Path("var/cache")
    # Seconds a worker keeps trying to write a checkpoint while the artifact store cannot be
    # reached (restarting, say); past that the job fails, saying why.
    artifacts_retry_s: float = Field(60.0, gt=0)
    # Seconds a worker's lease on its job lasts unless renewed (it renews every third of that):
    # a worker silent for longer is presumed lost, and the reconciler requeues its job.
    lease_s: float = Field(60.0, gt=0)
    # Nice levels a worker lowers its CPU priority by (0 to 19): training is batch work, so on
    # a machine it shares with the API (`gan serve` starts one beside it) the API's requests
    # are served first and training gets every cycle they leave idle. Alone on its machine it
    # makes no difference.
    worker_nice: int = Field(WORKER_NICE, ge=0, le=19)
    # Seconds between the reconciler's passes over lost workers' jobs and a broker's lost data.
    reconcile_every_s: float = Field(15.0, gt=0)
    # Seconds a queued job may go without a message waiting in the broker's queue before the
    # reconciler sends it one again (one may be on its way, or held by a worker that retries it
    # until the store is back). Bounds how long a job whose message was lost stays queued.
    resend_after_s: float = Field(60.0, gt=0)
    # Seconds a worker keeps trying to record a job's end while the job store is unreachable
    # (its progress reports wait meanwhile, and training goes on); past that it gives up and the
    # job goes back to the queue once its lease expires.
    store_retry_s: float = Field(300.0, gt=0)
    # Times a job's worker may be lost (killed, out of memory) before the job fails instead of
    # being requeued: a job that kills its worker must not kill every worker in turn.
    max_lost: int = Field(3, ge=0)
    # API keys that may use the service (a JSON list, or comma-separated); more can be made with
    # `gan keys create`. With none at all, the service runs open, on localhost only.
    api_keys: Annotated[tuple[str, ...], NoDecode] = ()
    # Jobs (created or resumed) each API key may start a minute: across all API processes and
    # hosts when the broker is Redis (the budget is kept there), per API process otherwise.
    jobs_per_minute: int = Field(60, ge=1)
    # Jobs one sweep (POST /sweeps) may make at most; each counts against jobs_per_minute.
    max_sweep_jobs: int = Field(64, ge=1)
    # Unknown API keys one client address may send a minute (in Redis or per process, as
    # jobs_per_minute); past that it gets 429s until its budget refills: keys cannot be guessed
    # quickly.
    bad_keys_per_minute: int = Field(10, ge=1)
    # Addresses of reverse proxies whose X-Forwarded-For / X-Forwarded-Proto are believed (a
    # JSON list or comma-separated; IPs or networks, "*" for any). None by default: the client
    # address is the socket's peer, so no client can pick the address its requests count for.
    trusted_proxies: Annotated[tuple[str, ...], NoDecode] = ()
    # Seconds a connection may take to send a whole request head (on a new connection, or
    # after the previous response): one that sends nothing, or its headers slowly, is closed.
    header_timeout_s: float = Field(10.0, gt=0)
    # Open connections an API process keeps at most; past that, new ones are closed at once,
    # so idle sockets cannot exhaust the process's file descriptors.
    max_connections: int = Field(2000, ge=1)
    # Event streams (GET /jobs/{id}/events) open at once per API key (per client address when
    # the service runs open) and in all, per API process; past that, 429 or 503 with
    # Retry-After.
    streams_per_key: int = Field(100, ge=1)
    max_streams: int = Field(1000, ge=1)
    # Sample and interpolation requests generating at once per API key (per client address when
    # open), and answered at once in all (from their arrival: key and job lookups, generating
    # or the cache), per API process; past that, 429 or 503 with Retry-After. Generating is CPU
    # work: more at once than the cores only adds memory and latency, so the default is the
    # process's cores, at most 4.
    samplings_per_key: int = Field(2, ge=1)
    max_samplings: int = Field(DEFAULT_MAX_SAMPLINGS, ge=1)
    # API processes `gan serve` runs, sharing its port (sampling is CPU work: one per core
    # serves the most). Each keeps its own generator cache and stream and sampling slots; their
    # rate limits are shared through Redis when the broker is Redis, and /metrics sums them all.
    api_processes: int = Field(1, ge=1)
    # Where `gan serve` binds the API.
    host: str = "127.0.0.1"
    port: int = 8000
    # Log lines of the API and the worker: "text" (logfmt, key=value) or "json" (one object a
    # line); both carry timestamp, level, logger, job_id and message.
    log_format: Literal["text", "json"] = "text"
    # The service the client commands (`gan submit`, `gan status`, `gan watch`, …) talk to.
    url: str = "http://127.0.0.1:8000"
    # Whether the worker also writes TensorBoard event files of each job (losses, logits,
    # gradient norms, throughput, evaluations, a sample grid per checkpoint) to
    # <artifacts_dir>/jobs/<id>/tensorboard/; needs the `tensorboard` extra.
    tensorboard: bool = False
    # Webhooks (worker/webhooks.py). The key that signs deliveries when the service runs
    # without API keys (with keys, each key's own, derived from it); a job spec with a webhook
    # is refused without one.
    webhook_secret: str | None = None
    # Whether webhook URLs may name loopback, private, link-local or reserved addresses when
    # the service has API keys (without keys, it serves this machine only: they always may).
    webhook_allow_private: bool = False
    # A failed delivery is tried again after webhook_retry_s, then twice that, and so on (at
    # most an hour apart), webhook_max_attempts times in all before it is recorded as failed.
    webhook_retry_s: float = Field(5.0, gt=0)
    webhook_max_attempts: int = Field(8, ge=1)
    # Seconds a receiver may take to answer one delivery.
    webhook_timeout_s: float = Field(10.0, gt=0)
    # Seconds between the dispatcher's looks for new events and deliveries due, in each worker.
    webhook_poll_s: float = Field(1.0, gt=0)

    @field_validator("api_keys", "trusted_proxies", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        if isinstance(value, str):
            text = value.strip()
            return json.loads(text) if text.startswith("[") else [k for k in text.split(",") if k]
        return value

    @property
    def artifacts_dir(self) -> Path:
        """This machine's folder of the artifact store: the store itself when it is a local
        folder; for an object store, where this machine keeps its copies (under cache_dir)."""
        return self.artifacts().local_path("")

    def artifacts(self) -> ArtifactStore:
        """The artifact store ``artifacts_url`` names (one per process and setting)."""
        return open_store(self.artifacts_url, str(self.cache_dir), self.artifacts_retry_s)

    @property
    def datasets_dir(self) -> Path:
        """Uploaded datasets: <artifacts_dir>/datasets/<id>/{images,labels}.npy, meta.json."""
        return self.artifacts_dir / DATASETS

    @property
    def judges_dir(self) -> Path:
        """Cached judges the evaluations score samples with: <artifacts_dir>/judges/judge-*.pt."""
        return self.artifacts_dir / JUDGES

    def job_dir(self, job_id: str) -> Path:
        return self.artifacts_dir / job_key(job_id)

    def checkpoint_dir(self, job_id: str) -> Path:
        return self.artifacts_dir / checkpoints_key(job_id)


@lru_cache
def get_settings() -> Settings:
    return Settings()
