"""One training step, phase by phase: what D sees, the D updates, the G update, the EMA.

    for each of d_steps:
        x ~ data;  z ~ N(0, I);  y ~ U{classes} (conditional)
        fake = G(z, y)
        D step: minimise d_loss(D(A(x)), D(A(fake.detach())))    # detach: D's loss must not reach G
                + penalties (gradient penalty, R1, R2: every reg_every D steps, scaled by it)
                + ACGAN classification of real and fake labels
    G step: minimise g_loss(D(A(fake))) (+ ACGAN classification of the fake's label)
            with the fake of the last D step (one G forward pass fewer, as textbook code does)
    EMA:    G_ema ← β·G_ema + (1 − β)·G

A(·) is the differentiable augmentation, applied to real and fake alike, plus annealed instance
noise (``d_input``). The losses themselves are pure functions of logits in ``gan.losses``; these
functions run the networks, take the gradients and update a ``gan.state.TrainState`` in place.
Every random draw comes from the state's ``rng``, in a fixed order, so a step is a pure function
of the state, the config and the real batch.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
from torch import Tensor, nn

from gan import losses
from gan.augment import augment, instance_noise
from gan.config import TrainConfig
from gan.state import TrainState

RealBatch = Callable[[int], tuple[Tensor, Tensor | None]]  # k ↦ (images, labels or None)


class DStep(NamedTuple):
    loss: Tensor  # D's loss, penalties included (detached)
    real: Tensor  # mean D logit on the real batch
    fake: Tensor  # mean D logit on the fake batch
    grad_norm: Tensor | None  # of D's gradients before clipping; None where not measured


class GStep(NamedTuple):
    loss: Tensor  # G's loss (detached)
    grad_norm: Tensor | None  # of G's gradients before clipping; None where not measured


def _nan() -> Tensor:
    return torch.tensor(math.nan)


@dataclass(frozen=True)
class StepStats:
    """The latest step's numbers, as tensors on the device: read only at reports, so a step
    needs no device sync. The gradient norms are those of the latest step that measured them."""

    d_loss: Tensor = field(default_factory=_nan)
    g_loss: Tensor = field(default_factory=_nan)
    d_real: Tensor = field(default_factory=_nan)
    d_fake: Tensor = field(default_factory=_nan)
    d_grad_norm: Tensor = field(default_factory=_nan)
    g_grad_norm: Tensor = field(default_factory=_nan)


def train_step(
    cfg: TrainConfig, s: TrainState, real_batch: RealBatch, previous: StepStats
) -> StepStats:
    """``cfg.d_steps`` D updates, one G update on the last D step's fake, then the EMA; advances
    ``s.step`` by one. ``real_batch(k)`` is the real data of the k-th D step of the run."""
    if cfg.compile == "reduce-overhead":  # a new step: older CUDA-graph outputs are dead
        torch.compiler.cudagraph_mark_step_begin()
    for i in range(cfg.d_steps):
        k = s.step * cfg.d_steps + i  # D steps so far: the data batch is pure in (seed, k)
        real, y_real = real_batch(k)
        fake, y_fake = fake_batch(cfg, s, grad=i == cfg.d_steps - 1)  # G's graph: last one only
        d = d_step(cfg, s, k, real, y_real, fake, y_fake)
    g = g_step(cfg, s, fake, y_fake, real, y_real)
    s.step += 1
    if s.G_ema is not None:
        update_ema(s.G_ema, s.G, ema_decay_at(cfg, s.step))
    return StepStats(
        d_loss=d.loss, g_loss=g.loss, d_real=d.real, d_fake=d.fake,
        d_grad_norm=d.grad_norm if d.grad_norm is not None else previous.d_grad_norm,
        g_grad_norm=g.grad_norm if g.grad_norm is not None else previous.g_grad_norm,
    )  # fmt: skip


def fake_batch(cfg: TrainConfig, s: TrainState, grad: bool) -> tuple[Tensor, Tensor | None]:
    """G's samples of a batch of z (and random labels, conditional), with G's graph when
    ``grad``; draws z, then the labels."""
    z = torch.randn(cfg.batch_size, s.G.latent_dim, device=s.device, generator=s.rng)
    y = None
    if s.num_classes:
        y = torch.randint(s.num_classes, (cfg.batch_size,), device=s.device, generator=s.rng)
    with s.autocast, contextlib.nullcontext() if grad else torch.no_grad():
        return s.G_fwd(z, y).float(), y


def d_input(cfg: TrainConfig, s: TrainState, x: Tensor) -> Tensor:
    """What D sees of a batch at ``s.step``: augmented, plus instance noise annealed over the
    run (σ = cfg.instance_noise·max(0, 1 − step/instance_noise_steps))."""
    if cfg.augment != "none":
        x = augment(x, cfg.augment, s.rng)
    sigma = cfg.instance_noise * max(0.0, 1.0 - s.step / cfg.instance_noise_steps)
    return instance_noise(x, sigma, s.rng) if sigma > 0 else x


def discriminate(s: TrainState, x: Tensor, y: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """D's logits (and class logits, ACGAN) on ``x``, in float32 whatever the autocast."""
    with s.autocast:
        logits, class_logits = s.D_fwd(x, y)
    return logits.float(), (class_logits.float() if class_logits is not None else None)


def d_step(cfg: TrainConfig, s: TrainState, k: int, real: Tensor, y_real: Tensor | None,
           fake: Tensor, y_fake: Tensor | None) -> DStep:  # fmt: skip
    """One discriminator update; ``k`` counts D steps over the whole run (the penalties run
    when k % reg_every == 0). ``fake`` is detached: D's loss never reaches G. With the "wgan"
    loss D's weights are clipped to [−clip_value, clip_value] afterwards."""
    real_in, fake_in = d_input(cfg, s, real), d_input(cfg, s, fake.detach())
    real_logits, real_classes = discriminate(s, real_in, y_real)
    fake_logits, fake_classes = discriminate(s, fake_in, y_fake)
    loss = losses.d_loss(cfg.loss, real_logits, fake_logits, cfg.label_smoothing)
    if real_classes is not None and fake_classes is not None and y_real is not None:
        assert y_fake is not None
        loss = loss + cfg.acgan_weight * (
            losses.classification_loss(real_classes, y_real)
            + losses.classification_loss(fake_classes, y_fake)
        )
    if k % cfg.reg_every == 0:  # lazy regularisation: penalties every reg_every D steps
        loss = regularised(cfg, s, loss, real_in, y_real, fake_in, y_fake)
    s.opt_d.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = clip_and_measure(cfg, s.D, s.step)
    s.opt_d.step()
    if cfg.loss == "wgan":  # WGAN's Lipschitz constraint by weight clipping
        with torch.no_grad():
            for p in s.D.parameters():
                p.clamp_(-cfg.clip_value, cfg.clip_value)
    return DStep(loss.detach(), real_logits.detach().mean(), fake_logits.detach().mean(), grad_norm)


def regularised(
    cfg: TrainConfig,
    s: TrainState,
    loss: Tensor,
    real_in: Tensor,
    y_real: Tensor | None,
    fake_in: Tensor,
    y_fake: Tensor | None,
) -> Tensor:
    """``loss`` plus the gradient penalty (wgan_gp), R1 and R2 where the config asks for them,
    each scaled by reg_every (they run once every reg_every D steps)."""
    if cfg.loss == "wgan_gp":
        gp = losses.gradient_penalty(
            lambda x: discriminate(s, x, y_real)[0], real_in, fake_in, generator=s.rng
        )
        loss = loss + cfg.gp_weight * cfg.reg_every * gp
    if cfg.r1_gamma > 0:
        r1 = losses.gradient_norm_penalty(lambda x: discriminate(s, x, y_real)[0], real_in)
        loss = loss + cfg.r1_gamma / 2 * cfg.reg_every * r1
    if cfg.r2_gamma > 0:
        r2 = losses.gradient_norm_penalty(lambda x: discriminate(s, x, y_fake)[0], fake_in)
        loss = loss + cfg.r2_gamma / 2 * cfg.reg_every * r2
    return loss


def g_step(cfg: TrainConfig, s: TrainState, fake: Tensor, y_fake: Tensor | None,
           real: Tensor | None = None, y_real: Tensor | None = None) -> GStep:  # fmt: skip
    """One generator update on ``fake`` (which carries G's graph). D is frozen meanwhile: the
    backward pass goes through D to G without computing gradients for D's weights, which the
    next D step would discard; D's weights require gradients again afterwards. A relativistic
    loss also scores ``real`` (the last D step's batch), a constant for G."""
    s.D.requires_grad_(False)
    try:  # D's weights require gradients again even when the step is interrupted
        fake_logits, fake_classes = discriminate(s, d_input(cfg, s, fake), y_fake)
        real_logits = None
        if cfg.loss in losses.RELATIVISTIC:
            if real is None:
                raise ValueError(f"the {cfg.loss!r} loss needs the real batch in G's step")
            with torch.no_grad():
                real_logits = discriminate(s, d_input(cfg, s, real), y_real)[0]
        loss = losses.g_loss(cfg.loss, fake_logits, real_logits)
        if fake_classes is not None and y_fake is not None:
            loss = loss + cfg.acgan_weight * losses.classification_loss(fake_classes, y_fake)
        s.opt_g.zero_grad(set_to_none=True)
        loss.backward()
    finally:
        s.D.requires_grad_(True)
    grad_norm = clip_and_measure(cfg, s.G, s.step)
    s.opt_g.step()
    return GStep(loss.detach(), grad_norm)


def clip_and_measure(cfg: TrainConfig, net: nn.Module, step: int) -> Tensor | None:
    """Clip ``net``'s gradients when the config asks, returning their norm before clipping;
    else their norm on the steps that report it (the next step is a logging step) and None on
    the others. Either way without a device sync."""
    if cfg.grad_clip > 0:
        return nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
    if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.max_steps:
        grads = [p.grad for p in net.parameters() if p.grad is not None]
        return nn.utils.get_total_norm(grads)
    return None


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """ema ← decay·ema + (1 − decay)·model for parameters; buffers (batch-norm statistics,
    spectral-norm vectors) are copied."""
    torch._foreach_lerp_(
        list(ema.parameters()), [p.detach() for p in model.parameters()], 1.0 - decay
    )
    for b_ema, b in zip(ema.buffers(), model.buffers(), strict=True):
        b_ema.copy_(b)


def ema_decay_at(cfg: TrainConfig, step: int) -> float:
    """The EMA's decay at ``step``: ramps up as (1 + t)/(10 + t) so early weights fade fast."""
    return min(cfg.ema_decay, (1.0 + step) / (10.0 + step))
