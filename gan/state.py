"""The state of a training run: everything its future depends on, and how to save and load it.

``TrainState`` holds the networks (G, D and G's EMA), their optimizers, the noise generator, the
monitor's record and the step. Its ``snapshot`` is the part of a checkpoint that a resumed run
needs (``gan.checkpoint`` documents the whole format); ``restore`` loads a snapshot or a
checkpoint back; ``checkpoint`` builds the checkpoint dict of the current step. The state also
carries how the steps run the networks (``G_fwd``, ``D_fwd``, ``autocast``): derived from the
config, never saved.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import torch

from gan.config import TrainConfig
from gan.models import Discriminator, Generator, build_models
from gan.monitor import Monitor
from gan.precision import resolve_precision

PENALISED_LOSSES = ("wgan_gp",)  # losses whose D step takes second derivatives

GForward = Callable[..., torch.Tensor]
DForward = Callable[..., tuple[torch.Tensor, torch.Tensor | None]]


@dataclass
class TrainState:
    """A run's networks, optimizers, noise and record at ``step``; the steps of ``gan.steps``
    change it in place. Same config and seed, same state after the same steps: nothing random
    is drawn but from ``rng`` (and the data order, a function of the seed and the step)."""

    G: Generator
    D: Discriminator
    G_ema: Generator | None  # the running average of G that samples (None: cfg.ema_decay 0)
    opt_g: torch.optim.Adam
    opt_d: torch.optim.Adam
    rng: torch.Generator  # every random draw of training (z, labels, augmentation, noise, GP)
    monitor: Monitor
    shape: tuple[int, ...]  # of one sample of the data: (C, H, W) or (D,)
    num_classes: int  # 0: unconditional
    device: torch.device
    G_fwd: GForward  # G's forward, through torch.compile when asked (not saved)
    D_fwd: DForward  # D's forward, likewise
    autocast: contextlib.AbstractContextManager[None]  # around G and D forwards (not saved)
    step: int = 0  # generator steps done
    precision: str = "fp32"  # what cfg.precision resolved to here: "fp32" or "bf16" (not saved)

    @classmethod
    def new(
        cls,
        cfg: TrainConfig,
        shape: tuple[int, ...],
        num_classes: int,
        device: torch.device,
        key: str | None = None,
    ) -> TrainState:
        """The state at step 0: weights and noise seeded by ``cfg.seed`` (the global RNG is left
        as it was); ``key`` is the metric the monitor picks the best evaluation by."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            G, D = build_models(cfg, shape, num_classes)
        G, D = G.to(device), D.to(device)
        G_ema = copy.deepcopy(G).requires_grad_(False) if cfg.ema_decay > 0 else None
        fused = device.type in ("cuda", "cpu")  # one kernel for the whole Adam update
        opt_g = torch.optim.Adam(
            G.parameters(), lr=cfg.lr_g, betas=(cfg.beta1_g, cfg.beta2_g), fused=fused or None
        )
        opt_d = torch.optim.Adam(
            D.parameters(), lr=cfg.lr_d, betas=(cfg.beta1_d, cfg.beta2_d), fused=fused or None
        )
        G_fwd, D_fwd = compiled(cfg, G, D)
        precision = resolve_precision(cfg.precision, device)
        return cls(
            G=G, D=D, G_ema=G_ema, opt_g=opt_g, opt_d=opt_d,
            rng=torch.Generator(device).manual_seed(cfg.seed), monitor=Monitor(key=key),
            shape=tuple(shape), num_classes=num_classes, device=device,
            G_fwd=G_fwd, D_fwd=D_fwd, autocast=autocast_for(precision, device),
            precision=precision,
        )  # fmt: skip

    def snapshot(self) -> dict[str, Any]:
        """Everything the run's future depends on (with the monitor: its record so far). The
        tensors are the live ones: deep-copy the snapshot to keep it while training goes on."""
        return {
            "step": self.step,
            "generator": self.G.state_dict(),
            "generator_ema": self.G_ema.state_dict() if self.G_ema is not None else None,
            "discriminator": self.D.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "rng": self.rng.get_state(),
            "monitor": self.monitor.state_dict(),
        }

    def restore(self, saved: dict[str, Any], cfg: TrainConfig) -> None:
        """Load a snapshot's or a checkpoint's networks, optimizers, noise and step. The monitor
        is kept (a rollback adds to its record); the learning rates are the config's times its
        ``lr_scale``, so a rollback's lower rates outlive the restore. RuntimeError when the
        networks have another layout.

        The optimizers keep ``saved``'s moment tensors rather than copies (torch's
        ``load_state_dict`` copies only what it must move), so training on changes ``saved``:
        restore from a copy of a dict that must stay as it is. (The trainer restores a fresh
        load of a checkpoint, or its initial snapshot, whose optimizers have no moments yet.)"""
        self.G.load_state_dict(saved["generator"])
        self.D.load_state_dict(saved["discriminator"])
        if self.G_ema is not None:
            self.G_ema.load_state_dict(saved["generator_ema"] or saved["generator"])
        self.opt_g.load_state_dict(saved["opt_g"])
        self.opt_d.load_state_dict(saved["opt_d"])
        self.rng.set_state(saved["rng"].cpu())
        for group in self.opt_g.param_groups:
            group["lr"] = cfg.lr_g * self.monitor.lr_scale
        for group in self.opt_d.param_groups:
            group["lr"] = cfg.lr_d * self.monitor.lr_scale
        self.step = int(saved["step"])

    def checkpoint(self, cfg: TrainConfig, d_loss: float, g_loss: float) -> dict[str, Any]:
        """The checkpoint dict of the current step (``gan.checkpoint``'s format), whose metrics
        are the latest losses and evaluation."""
        return {
            "config": cfg.to_dict(),
            "created_at": datetime.now(UTC).isoformat(),
            "data": {"shape": list(self.shape), "num_classes": self.num_classes},
            **self.snapshot(),
            "metrics": {"d_loss": d_loss, "g_loss": g_loss, **self.monitor.metrics},
        }

    def weights_finite(self) -> bool:
        """Whether every parameter of G and D is finite (a checkpoint must be)."""
        return all(torch.isfinite(t).all() for t in (*self.G.parameters(), *self.D.parameters()))


def autocast_for(precision: str, device: torch.device) -> contextlib.AbstractContextManager[None]:
    """bf16 autocast around G and D forward passes for a resolved ``precision`` of "bf16"
    (``gan.precision.resolve_precision``); losses stay in float32."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def compiled(cfg: TrainConfig, G: Generator, D: Discriminator) -> tuple[GForward, DForward]:
    """G's and D's forward functions, through torch.compile when ``cfg.compile`` asks.

    D stays eager when its loss takes second derivatives (gradient penalty, R1, R2), which
    compiled graphs do not support. "reduce-overhead" records CUDA graphs of the compiled code.
    """
    if cfg.compile == "none":
        return G, D
    mode = None if cfg.compile == "default" else cfg.compile
    G_fwd = torch.compile(G, mode=mode)
    double_backward = cfg.loss in PENALISED_LOSSES or cfg.r1_gamma > 0 or cfg.r2_gamma > 0
    D_fwd = D if double_backward else torch.compile(D, mode=mode)
    return G_fwd, D_fwd
