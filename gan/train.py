"""The training loop.

One step = one discriminator update on a real and a fake batch, then one generator update:

    z ~ N(0, I);  fake = G(z)
    D step: minimise d_loss(D(real), D(fake.detach()))   # detach: D's loss must not reach G
    G step: minimise g_loss(D(fake))                     # gradients flow through D into G

``train`` resumes from the newest checkpoint in ``out_dir`` when there is one, so a worker that
was killed picks up where the last checkpoint left off. Everything random is seeded from
``cfg.seed``: the initial weights, the noise (a generator whose state is checkpointed) and the
data order (a fresh permutation per epoch drawn from ``(seed, epoch)``), so the same spec and seed
give the same weights, and a resumed run continues the same sequence.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import torch

from gan import checkpoint as ckpt
from gan.config import TrainConfig
from gan.data import to_unit_range
from gan.losses import minimax_d_loss, minimax_g_loss
from gan.models import build_models

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Progress:
    step: int  # generator steps done
    total_steps: int  # cfg.max_steps
    images_per_sec: float  # real images consumed per second since the previous report
    d_loss: float  # discriminator loss of the latest step
    g_loss: float  # generator loss of the latest step
    checkpoint_step: int | None  # step of the newest checkpoint on disk, if any


@dataclass(frozen=True)
class TrainResult:
    step: int  # generator steps done
    stopped: bool  # True when should_stop ended training before max_steps
    checkpoint: Path  # the checkpoint written last


class TrainingError(RuntimeError):
    """Training cannot go on; the message says why, for a person to act on."""


def pick_device(name: str) -> torch.device:
    """The device for ``cfg.device``: "auto" takes cuda, then mps, then cpu."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise TrainingError("device 'cuda' was asked for, but no CUDA GPU is available here")
    if name == "mps" and not torch.backends.mps.is_available():
        raise TrainingError("device 'mps' was asked for, but MPS is not available here")
    return torch.device(name)


class EpochSampler:
    """Batch indices for batch number k: epoch k // per_epoch of a per-epoch permutation.

    Each epoch's permutation is drawn from a generator seeded with (seed, epoch), so the data
    order is a pure function of (seed, k) and needs no state in the checkpoint. The last partial
    batch of an epoch is dropped.
    """

    def __init__(self, n: int, batch_size: int, seed: int, device: torch.device) -> None:
        if batch_size > n:
            raise TrainingError(f"batch_size {batch_size} is larger than the dataset ({n} images)")
        self.n, self.batch_size, self.seed, self.device = n, batch_size, seed, device
        self.per_epoch = n // batch_size
        self._epoch = -1
        self._perm = torch.empty(0, dtype=torch.long)

    def batch(self, k: int) -> torch.Tensor:
        epoch, i = divmod(k, self.per_epoch)
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perm = torch.randperm(self.n, generator=g).to(self.device)
            self._epoch = epoch
        return self._perm[i * self.batch_size : (i + 1) * self.batch_size]


def train(
    cfg: TrainConfig,
    images: torch.Tensor,
    out_dir: Path,
    *,
    progress: Callable[[Progress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> TrainResult:
    """Train a GAN on ``images`` (uint8, (N, C, H, W)) and write checkpoints to ``out_dir``.

    ``progress`` is called every ``cfg.log_every`` steps and at the end; ``should_stop`` is
    polled at the same points, and a True answer checkpoints and returns early.
    """
    device = pick_device(cfg.device)
    with torch.random.fork_rng(devices=[]):  # seed the initial weights without touching callers
        torch.manual_seed(cfg.seed)
        G, D = build_models(cfg)
    G, D = G.to(device), D.to(device)
    opt_g = torch.optim.Adam(G.parameters(), lr=cfg.lr_g, betas=(cfg.beta1, cfg.beta2))
    opt_d = torch.optim.Adam(D.parameters(), lr=cfg.lr_d, betas=(cfg.beta1, cfg.beta2))
    noise = torch.Generator(device).manual_seed(cfg.seed)
    step = 0

    latest = ckpt.latest_checkpoint(out_dir)
    if latest is not None:
        state = ckpt.load_checkpoint(latest, map_location=device)
        G.load_state_dict(state["generator"])
        D.load_state_dict(state["discriminator"])
        opt_g.load_state_dict(state["opt_g"])
        opt_d.load_state_dict(state["opt_d"])
        noise.set_state(state["rng"].cpu())
        step = state["step"]
        log.info("resumed from %s at step %d", latest.name, step)

    data = to_unit_range(images).to(device)
    sampler = EpochSampler(len(data), cfg.batch_size, cfg.seed, device)
    checkpoint_step: int | None = step if latest is not None else None
    last_path = latest
    d_loss = g_loss = torch.tensor(math.nan)
    clock, clock_step = time.perf_counter(), step

    def finite_losses() -> tuple[float, float]:
        """The latest (D, G) losses; a non-finite one ends training before it is saved."""
        d, g = d_loss.item(), g_loss.item()
        if not (math.isfinite(d) and math.isfinite(g)):
            raise TrainingError(
                f"losses became non-finite at step {step} (D {d}, G {g}): training diverged; "
                "try lower learning rates"
            )
        return d, g

    def checkpoint() -> Path:
        """The checkpoint of the current step, written unless it already is."""
        nonlocal last_path, checkpoint_step
        if last_path is not None and checkpoint_step == step:
            return last_path
        d, g = finite_losses()
        path = ckpt.checkpoint_path(out_dir, step)
        ckpt.save_checkpoint(
            {
                "config": cfg.to_dict(),
                "step": step,
                "created_at": datetime.now(UTC).isoformat(),
                "generator": G.state_dict(),
                "discriminator": D.state_dict(),
                "opt_g": opt_g.state_dict(),
                "opt_d": opt_d.state_dict(),
                "rng": noise.get_state(),
                "metrics": {"d_loss": d, "g_loss": g},
            },
            path,
        )
        ckpt.prune_checkpoints(out_dir, cfg.keep_checkpoints)
        last_path, checkpoint_step = path, step
        return path

    G.train()
    D.train()
    while step < cfg.max_steps:
        real = data[sampler.batch(step)]
        z = torch.randn(cfg.batch_size, cfg.latent_dim, device=device, generator=noise)
        fake = G(z)

        d_loss = minimax_d_loss(D(real), D(fake.detach()))
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()

        g_loss = minimax_g_loss(D(fake))
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()
        step += 1

        if step % cfg.checkpoint_every == 0 or step == cfg.max_steps:
            checkpoint()
        if step % cfg.log_every == 0 or step == cfg.max_steps:
            d, g = finite_losses()
            now = time.perf_counter()
            rate = (step - clock_step) * cfg.batch_size / max(now - clock, 1e-9)
            clock, clock_step = now, step
            stop = should_stop is not None and step < cfg.max_steps and should_stop()
            if stop:
                checkpoint()  # before the report, so the report names it
            if progress is not None:
                progress(Progress(step, cfg.max_steps, rate, d, g, checkpoint_step))
            if stop:
                log.info("stopped at step %d on request", step)
                return TrainResult(step, True, checkpoint())

    return TrainResult(step, False, checkpoint())
