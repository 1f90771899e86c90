"""`gan worker`: a small supervisor that runs a worker's training slots as child processes.

Each slot (``worker.slot``) is a `python -m worker` of its own: a Celery worker with the solo
pool that trains one job at a time, bound to one GPU (``CUDA_VISIBLE_DEVICES``) with its share
of that GPU's memory, or to the CPU, with its share of the host's cores. Processes, not Celery
pool workers, because:

- CUDA is never initialised in a process that forks: the supervisor never imports torch, and a
  slot never forks (``subprocess`` execs a fresh interpreter);
- a slot that dies (SIGKILL, the kernel's out-of-memory killer, a CUDA error) takes only its
  own job with it (the lease requeues it, ``worker.reconcile``); the supervisor starts a new
  slot in its place;
- each slot's environment (its GPU, its threads) is set before torch loads, where OpenMP and
  CUDA read it.

SIGTERM or Ctrl-C (SIGINT) is passed on to every slot as SIGTERM: each checkpoints its job and
requeues it (Celery's warm shutdown), then the supervisor exits. A second one kills the slots
(their jobs resume from their newest checkpoints once their leases expire).
"""

from __future__ import annotations

import glob
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from types import FrameType

from worker.broker import is_embedded
from worker.settings import Settings

log = logging.getLogger(__name__)

POLL_S = 0.5  # seconds between looks at the slots
# A slot that dies sooner than this after it started is restarted after a growing pause
# (1, 2, 4, … seconds, at most MAX_RESTART_DELAY_S): one that cannot start must not spin.
STEADY_S = 30.0
MAX_RESTART_DELAY_S = 30.0


@dataclass(frozen=True)
class SlotPlan:
    """One slot to run: its index, its device for people, and its environment."""

    index: int
    device: str
    env: dict[str, str]


# Counts the GPUs in a process of its own, so that CUDA never starts in the supervisor.
TORCH_COUNT = "import torch; print(torch.cuda.device_count())"


def visible_gpus() -> list[str]:
    """The GPUs this process may use, without initialising CUDA here (nor importing torch):
    those ``CUDA_VISIBLE_DEVICES`` names, else those ``nvidia-smi`` lists, else none without
    an NVIDIA device file, else as many as torch counts in a child process (a container may
    have its GPUs without nvidia-smi)."""
    named = os.environ.get("CUDA_VISIBLE_DEVICES")
    if named is not None:
        return [gpu.strip() for gpu in named.split(",") if gpu.strip()]
    smi = shutil.which("nvidia-smi")
    if smi is not None:
        return _lines([smi, "--query-gpu=index", "--format=csv,noheader"])
    if not glob.glob("/dev/nvidia[0-9]*"):
        return []
    counted = _lines([sys.executable, "-c", TORCH_COUNT])
    return [str(i) for i in range(int(counted[0]))] if counted[:1] and counted[0].isdigit() else []


def _lines(command: list[str]) -> list[str]:
    """The lines ``command`` prints, stripped; none when it fails."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in done.stdout.splitlines() if line.strip()]


def plan_slots(
    gpus: list[str], jobs_per_gpu: int, cpu_jobs: int | None, cores: int
) -> list[SlotPlan]:
    """The slots of `gan worker`: ``cpu_jobs`` CPU slots when given (CUDA hidden from them),
    else ``jobs_per_gpu`` slots on each of ``gpus``, else one slot with torch's defaults
    (a worker alone, as before). Each gets an even share of the ``cores``, and a GPU slot
    1/``jobs_per_gpu`` of its GPU's memory."""
    if cpu_jobs is not None:
        threads = max(1, cores // cpu_jobs)
        return [_slot(i, "cpu", threads, 1.0, gpu="") for i in range(cpu_jobs)]
    if not gpus:
        return [SlotPlan(0, "", {})]
    threads = max(1, cores // (len(gpus) * jobs_per_gpu))
    return [
        _slot(i * jobs_per_gpu + k, f"cuda:{gpu}", threads, 1 / jobs_per_gpu, gpu=gpu)
        for i, gpu in enumerate(gpus)
        for k in range(jobs_per_gpu)
    ]


def _slot(index: int, device: str, threads: int, memory: float, *, gpu: str) -> SlotPlan:
    return SlotPlan(
        index,
        device,
        {
            "CUDA_VISIBLE_DEVICES": gpu,  # read when CUDA starts, in the slot
            "OMP_NUM_THREADS": str(threads),  # read when torch loads, before set_num_threads
            "MKL_NUM_THREADS": str(threads),
            "GAN_SLOT_DEVICE": device,
            "GAN_SLOT_THREADS": str(threads),
            "GAN_SLOT_MEMORY_FRACTION": f"{memory:.6f}",
        },
    )


def requeue_orphans(settings: Settings) -> None:
    """With the embedded broker, which serves one `gan worker` (with all its slots), every job
    still leased was its slots' before it stopped: requeue them all before the slots start (a
    slot never does it: it would take its siblings' jobs). Other brokers leave it to the
    reconciler's lease expiry."""
    if not is_embedded(settings.broker_url):
        return
    from worker.celery_app import app  # no torch: the tasks load in the slots only
    from worker.reconcile import Reconciler

    Reconciler(settings, app).run_once(all_leases_dead=True)


class Supervisor:
    """Runs ``plans`` as child processes (``command``), restarting any that dies, until
    SIGTERM or SIGINT, which it passes on to them as SIGTERM."""

    def __init__(self, plans: list[SlotPlan], command: list[str] | None = None) -> None:
        self.plans, self.command = plans, command or [sys.executable, "-m", "worker"]
        self.name = f"{socket.gethostname()}/{os.getpid()}"
        self.children: dict[int, subprocess.Popen[bytes]] = {}
        self.started: dict[int, float] = {}
        self.failures: dict[int, int] = {}
        self.signals = 0

    def run(self) -> int:
        """Supervise until told to stop; returns the exit code (0)."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        log.info("worker %s: %d slot(s): %s", self.name, len(self.plans),
                 ", ".join(p.device or "auto" for p in self.plans))  # fmt: skip
        for plan in self.plans:
            self._start(plan)
        restart_at: dict[int, float] = {}
        while not self.signals:
            time.sleep(POLL_S)
            for plan in self.plans:
                if self.signals:
                    break
                self._look_after(plan, restart_at)
        return self._wait_all()

    def _look_after(self, plan: SlotPlan, restart_at: dict[int, float]) -> None:
        """Restart the slot if it ended (after a pause when it keeps dying young)."""
        child = self.children.get(plan.index)
        now = time.monotonic()
        if child is not None and child.poll() is None:
            return
        if child is not None:
            young = now - self.started[plan.index] < STEADY_S
            self.failures[plan.index] = self.failures.get(plan.index, 0) + 1 if young else 0
            delay = min(MAX_RESTART_DELAY_S, 2.0 ** self.failures[plan.index] / 2)
            log.warning("slot %d (pid %d) ended with code %s; starting a new one in %.0f s",
                        plan.index, child.pid, child.returncode, delay)  # fmt: skip
            del self.children[plan.index]
            restart_at[plan.index] = now + delay
        if now >= restart_at.get(plan.index, 0.0):
            self._start(plan)

    def _start(self, plan: SlotPlan) -> None:
        env = {
            **os.environ,
            **plan.env,
            "GAN_SLOT_WORKER": self.name,
            "GAN_SLOT_INDEX": str(plan.index),
            "GAN_SLOT_PARENT": str(os.getpid()),
        }
        # A session of its own: a terminal's Ctrl-C reaches the supervisor only, which passes
        # it on once, as SIGTERM (a second SIGINT would make Celery stop cold).
        child = subprocess.Popen(self.command, env=env, start_new_session=True)
        self.children[plan.index], self.started[plan.index] = child, time.monotonic()
        log.info("slot %d: pid %d on %s", plan.index, child.pid, plan.device or "auto")

    def _on_signal(self, signum: int, _: FrameType | None) -> None:
        self.signals += 1
        forward = signal.SIGTERM if self.signals == 1 else signal.SIGKILL
        log.warning("worker %s: %s; %s the slots", self.name, signal.Signals(signum).name,
                    "stopping" if forward == signal.SIGTERM else "killing")  # fmt: skip
        for child in self.children.values():
            if child.poll() is None:
                child.send_signal(forward)

    def _wait_all(self) -> int:
        """Wait for every slot to end (each checkpoints and requeues its job)."""
        for index, child in self.children.items():
            code = child.wait()
            log.info("slot %d (pid %d) stopped with code %d", index, child.pid, code)
        return 0
