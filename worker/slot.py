"""One training slot: a worker process that trains one job at a time on one device, with its
share of the host's CPU threads and of its GPU's memory.

`gan worker` (``worker.supervisor``) starts each slot as a child process and tells it what it
is through ``GAN_SLOT_*`` variables (``SlotSettings``); a worker started alone (`python -m
worker`, the one `gan serve` starts) is slot 0 of itself, with torch's defaults. A slot
writes a heartbeat to the job store (``SlotBeat``, ``worker.store.workers``) for GET /workers
and /metrics, and stops (warmly: its job checkpoints and is requeued) when its supervisor is
gone.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
from functools import lru_cache

import torch
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.exc import SQLAlchemyError

from worker.settings import Settings
from worker.store import workers
from worker.store.db import session_scope
from worker.store.models import utcnow
from worker.tasks import worker_id

log = logging.getLogger(__name__)

# Most seconds between a slot's heartbeats (a third of a lease when that is shorter): a slot
# unseen for a lease is gone.
BEAT_EVERY_S = 5.0


class SlotSettings(BaseSettings):
    """What the supervisor tells a slot (``GAN_SLOT_*``); the defaults are a worker alone."""

    model_config = SettingsConfigDict(env_prefix="GAN_SLOT_", extra="ignore", frozen=True)

    # The `gan worker` this slot belongs to (host/pid); "" for a worker alone (its own id).
    worker: str = ""
    # Its index among the worker's slots.
    index: int = Field(0, ge=0)
    # Its device as people read it ("cuda:1", the GPU's id on the host; "cpu"); "" for torch's
    # choice (CUDA when it sees a GPU, else the CPU).
    device: str = ""
    # CPU threads of its torch ops; 0 for torch's default (every core).
    threads: int = Field(0, ge=0)
    # The share of its GPU's memory it may allocate (torch's per-process memory fraction).
    memory_fraction: float = Field(1.0, gt=0, le=1)
    # The supervisor's process id: the slot stops when its parent is no longer that one.
    parent: int = Field(0, ge=0)


@lru_cache
def get_slot_settings() -> SlotSettings:
    return SlotSettings()


def apply_limits(slot: SlotSettings) -> None:
    """Bound this process to its share: its CPU threads, and its GPU memory share (which
    initialises CUDA here: a slot never forks, so that is safe)."""
    if slot.threads:
        torch.set_num_threads(slot.threads)
    if slot.memory_fraction < 1 and torch.cuda.is_available():
        torch.cuda.set_per_process_memory_fraction(slot.memory_fraction, 0)
    log.info(
        "slot %d of %s: device %s, %d CPU threads, %.0f%% of the GPU's memory",
        slot.index, slot.worker or worker_id(), device_of(slot), torch.get_num_threads(),
        100 * slot.memory_fraction,
    )  # fmt: skip


def device_of(slot: SlotSettings) -> str:
    """The slot's device for people (never initialises CUDA)."""
    if slot.device:
        return slot.device
    return "cuda" if torch.cuda.is_available() else "cpu"


class SlotBeat:
    """Writes the slot's heartbeat every few seconds from a thread, and removes it on ``stop``;
    warm-stops this process (SIGTERM) when its supervisor is gone."""

    def __init__(self, settings: Settings, slot: SlotSettings) -> None:
        me = worker_id()
        self.url, self.parent = settings.database_url, slot.parent
        self.every = min(BEAT_EVERY_S, settings.lease_s / 3)
        self.info = workers.SlotInfo(
            id=me, worker=slot.worker or me, host=socket.gethostname(), slot=slot.index,
            device=device_of(slot), threads=torch.get_num_threads(),
        )  # fmt: skip
        self.started_at = utcnow()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="slot-beat", daemon=True)

    def start(self) -> SlotBeat:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._done.set()
        self._thread.join()
        try:
            with session_scope(self.url) as session:
                workers.remove(session, self.info.id)
        except SQLAlchemyError as e:  # it ages out of GET /workers by itself
            log.warning("could not remove this slot's heartbeat: %s", e)

    def _run(self) -> None:
        failing = False
        while not self._done.is_set():
            if self.parent and os.getppid() != self.parent:
                log.warning("the supervisor (pid %d) is gone: stopping this slot", self.parent)
                os.kill(os.getpid(), signal.SIGTERM)  # warm: its job checkpoints and requeues
                return
            try:
                with session_scope(self.url) as session:
                    workers.beat(session, self.info, self.started_at)
                failing = False
            except SQLAlchemyError as e:
                if not failing:
                    log.warning("could not write this slot's heartbeat: %s", e)
                failing = True
            self._done.wait(self.every)
