"""What ``precision: auto`` resolves to on a device: bf16 autocast only where it is measured
faster, fp32 everywhere else.

Two gates, cheapest first, and the answer cached per process and device:

1. Capability check: does the device compute bf16 natively? A CUDA GPU that reports bf16
   support (Ampere and later); a CPU whose flags list ``avx512_bf16`` or ``amx_bf16`` (Linux's
   /proc/cpuinfo; other systems are taken as lacking them). Without native bf16, autocast
   emulates it, and that is slower, never faster: on this project's AMD EPYC (AVX2, no
   AVX-512) 50 steps of ``stable`` took 8 minutes in bf16, about 37× fp32 (issue 18). So no
   probe runs there and the answer is fp32.
2. Timing probe, where the check passes: a few forward and backward passes of a small conv and
   linear stack under fp32 and under bf16 autocast, timed after a warm-up; bf16 when it is at
   least ``MIN_SPEEDUP`` faster. Native support alone does not promise a gain for the small
   networks trained here (kernel launch overheads dominate a 28x28 DCGAN on a big GPU), so the
   default rests on a measurement, not an assumption. The probe takes well under a second.

A run resolves once, when its state is built; the resolution is logged and reported with every
progress report (``Progress.precision``).
"""

from __future__ import annotations

import functools
import logging
import time
from pathlib import Path

import torch
from torch import nn

log = logging.getLogger(__name__)

MIN_SPEEDUP = 1.15  # bf16 must be at least this much faster than fp32 to be picked
PROBE_REPEATS = 3
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


def resolve_precision(choice: str, device: torch.device) -> str:
    """``choice`` ("auto", "fp32" or "bf16") as the run will use it on ``device``: "fp32" or
    "bf16"."""
    if choice != "auto":
        return choice
    return _auto(str(device))


@functools.cache
def _auto(device: str) -> str:
    dev = torch.device(device)
    if not native_bf16(dev):
        log.info("precision auto → fp32 on %s: no native bf16 (autocast would emulate it)", dev)
        return "fp32"
    speedup = probe_speedup(dev)
    answer = "bf16" if speedup >= MIN_SPEEDUP else "fp32"
    log.info("precision auto → %s on %s: bf16 measured %.2f× fp32's speed", answer, dev, speedup)
    return answer


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bfloat16 in hardware (see the module docstring)."""
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type == "cpu":
        return bool(cpu_flags() & set(BF16_CPU_FLAGS))
    return False


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    """The CPU's feature flags as Linux lists them; empty where they cannot be read."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


def probe_speedup(device: torch.device) -> float:
    """fp32 time / bf16-autocast time of a small conv + linear training pass on ``device``."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(0)
        net = nn.Sequential(
            nn.Conv2d(3, 64, 4, 2, 1), nn.LeakyReLU(0.2), nn.Conv2d(64, 128, 4, 2, 1),
            nn.LeakyReLU(0.2), nn.Flatten(), nn.Linear(128 * 7 * 7, 256), nn.ReLU(),
            nn.Linear(256, 1),
        ).to(device)  # fmt: skip
        x = torch.randn(32, 3, 28, 28, device=device)
    fp32 = _time(net, x, device, bf16=False)
    bf16 = _time(net, x, device, bf16=True)
    return fp32 / max(bf16, 1e-9)


def _time(net: nn.Module, x: torch.Tensor, device: torch.device, bf16: bool) -> float:
    """Best time of one forward and backward pass of ``net`` on ``x`` over a few repeats."""
    best = float("inf")
    for i in range(PROBE_REPEATS + 1):  # the first is a warm-up
        _sync(device)
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            out = net(x).float().sum()
        out.backward()
        _sync(device)
        if i:
            best = min(best, time.perf_counter() - start)
    net.zero_grad(set_to_none=True)
    return best


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
