"""The training loop.

One step = ``cfg.d_steps`` discriminator updates, then one generator update:

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
noise. ``train`` resumes from the newest checkpoint in ``out_dir`` when there is one. Everything
random is a function of ``cfg.seed``: the initial weights, one noise generator on the training
device (z, labels, augmentation, instance noise, penalty interpolation; its state is
checkpointed) and the data order (a permutation per epoch drawn from ``(seed, epoch)``). So the
same spec and seed give the same weights, and a resumed run continues the same sequence exactly.

Every ``eval_every`` steps an evaluator scores the sampling generator; ``gan.monitor.Monitor``
keeps the latest and best evaluations and the warnings (divergence, vanishing gradients,
collapse), and is saved in each checkpoint with the rest.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from gan import checkpoint as ckpt
from gan import losses
from gan.augment import augment, instance_noise
from gan.config import ConfigError, TrainConfig, check_data
from gan.data import Dataset, to_unit_range
from gan.errors import first_line
from gan.models import Discriminator, Generator, build_models
from gan.monitor import Monitor, TrainWarning

log = logging.getLogger(__name__)

PENALISED_LOSSES = ("wgan_gp",)  # losses whose D step takes second derivatives


@dataclass(frozen=True)
class Progress:
    step: int  # generator steps done
    total_steps: int  # cfg.max_steps
    images_per_sec: float  # real images through D per second since the previous report
    d_loss: float  # discriminator loss of the latest step (penalties included)
    g_loss: float  # generator loss of the latest step
    d_real: float  # mean D logit on the latest real batch
    d_fake: float  # mean D logit on the latest fake batch
    d_grad_norm: float  # L2 norm of D's gradients in the latest D step (before clipping)
    g_grad_norm: float  # L2 norm of G's gradients in the latest G step (before clipping)
    checkpoint_step: int | None  # step of the newest checkpoint on disk, if any
    metrics: dict[str, float]  # the latest evaluation ({} before the first)
    metrics_step: int | None  # step of that evaluation
    best: dict[str, float] | None  # the best evaluation so far (its checkpoint is best.pt)
    best_step: int | None
    warnings: tuple[TrainWarning, ...]  # every warning of the run so far


@dataclass(frozen=True)
class TrainResult:
    step: int  # generator steps done
    stopped: bool  # True when should_stop ended training before max_steps
    checkpoint: Path  # the checkpoint written last
    early_stopped: bool = False  # True when the best metric stopped improving (early_stop_evals)


class TrainingError(RuntimeError):
    """Training cannot go on; the message says why, for a person to act on."""


class Diverged(Exception):
    """A loss or weight became non-finite at ``step``."""

    def __init__(self, step: int, d_loss: float, g_loss: float) -> None:
        super().__init__(f"non-finite at step {step}")
        self.step, self.d_loss, self.g_loss = step, d_loss, g_loss


class Evaluator(Protocol):
    """Scores a generator (``gan.evaluate.make_evaluator`` builds one per dataset)."""

    key: str | None  # the metric that picks the best checkpoint (lower is better), if any

    def __call__(self, G: Generator) -> dict[str, float]: ...


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


def check_compatible(cfg: TrainConfig, dataset: Dataset) -> None:
    """Refuse a config the data cannot train (an upload's shape is only known here)."""
    try:
        check_data(cfg, dataset.shape, dataset.num_classes)
    except ConfigError as e:
        raise TrainingError(str(e)) from e


def train(
    cfg: TrainConfig,
    dataset: Dataset,
    out_dir: Path,
    *,
    progress: Callable[[Progress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    evaluator: Evaluator | None = None,
) -> TrainResult:
    """Train a GAN on ``dataset`` and write checkpoints to ``out_dir``.

    ``progress`` is called every ``cfg.log_every`` steps and at the end; ``should_stop`` is
    polled at the same points, and a True answer checkpoints and returns early. ``evaluator``
    scores the generator (its EMA when kept) every ``cfg.eval_every`` steps and at the end; the
    best evaluation's checkpoint is kept as ``best.pt``. A non-finite loss or weight rolls the run
    back to its newest finite checkpoint (or its initial state) with halved learning rates, up to
    ``cfg.max_rollbacks`` times; then TrainingError says why.
    """
    check_compatible(cfg, dataset)
    device = pick_device(cfg.device)
    num_classes = dataset.num_classes if cfg.conditional != "none" else 0
    with torch.random.fork_rng(devices=[]):  # seed the initial weights without touching callers
        torch.manual_seed(cfg.seed)
        G, D = build_models(cfg, dataset.shape, num_classes)
    G, D = G.to(device), D.to(device)
    G_ema = copy.deepcopy(G).requires_grad_(False) if cfg.ema_decay > 0 else None
    fused = device.type in ("cuda", "cpu")  # one kernel for the whole Adam update
    opt_g = torch.optim.Adam(
        G.parameters(), lr=cfg.lr_g, betas=(cfg.beta1_g, cfg.beta2_g), fused=fused or None
    )
    opt_d = torch.optim.Adam(
        D.parameters(), lr=cfg.lr_d, betas=(cfg.beta1_d, cfg.beta2_d), fused=fused or None
    )
    rng = torch.Generator(device).manual_seed(cfg.seed)
    monitor = Monitor(key=evaluator.key if evaluator is not None else None)
    step = 0

    def snapshot() -> dict[str, Any]:
        """Everything the run's future depends on (with the monitor: its record so far)."""
        return {
            "step": step,
            "generator": G.state_dict(),
            "generator_ema": G_ema.state_dict() if G_ema is not None else None,
            "discriminator": D.state_dict(),
            "opt_g": opt_g.state_dict(),
            "opt_d": opt_d.state_dict(),
            "rng": rng.get_state(),
            "monitor": monitor.state_dict(),
        }

    def restore(state: dict[str, Any]) -> int:
        """Load a snapshot or checkpoint's networks, optimizers and noise; return its step."""
        G.load_state_dict(state["generator"])
        D.load_state_dict(state["discriminator"])
        if G_ema is not None:
            G_ema.load_state_dict(state["generator_ema"] or state["generator"])
        opt_g.load_state_dict(state["opt_g"])
        opt_d.load_state_dict(state["opt_d"])
        rng.set_state(state["rng"].cpu())
        for group in opt_g.param_groups:  # a rollback's lower rates outlive the restore
            group["lr"] = cfg.lr_g * monitor.lr_scale
        for group in opt_d.param_groups:
            group["lr"] = cfg.lr_d * monitor.lr_scale
        return int(state["step"])

    initial = copy.deepcopy(snapshot())  # where a divergence returns when no checkpoint is good
    latest, state, corrupt = newest_readable_checkpoint(out_dir, device)
    if latest is not None and state is not None:
        monitor = Monitor.from_state_dict(state["monitor"])
        try:
            step = restore(state)
        except RuntimeError as e:  # shapes of another network layout (an older version's)
            raise TrainingError(
                f"{latest.name} holds networks of a different layout than this version builds "
                f"for this config, so the run cannot resume from it (its generator still "
                f"samples); start a new job to train further. {first_line(e)}"
            ) from None
        log.info("resumed from %s at step %d", latest.name, step)
    for bad_step, problem in corrupt:  # newer checkpoints that could not be read, moved aside
        monitor.checkpoint_corrupt(bad_step, problem, step)

    def last_good() -> dict[str, Any]:
        """The newest checkpoint on disk that reads back intact and whose weights are all
        finite, else the initial state."""
        for _, path in reversed(ckpt.list_checkpoints(out_dir)):
            try:
                state = ckpt.load_checkpoint(path, map_location=device)
            except ckpt.CheckpointError as e:
                log.warning("rollback: skipping %s: %s", path.name, e)
                continue
            weights = [*state["generator"].values(), *state["discriminator"].values()]
            if all(torch.isfinite(t).all() for t in weights if t.is_floating_point()):
                return state
        return initial

    data = to_unit_range(dataset.data) if dataset.is_image else dataset.data.float()
    data, labels = data.to(device), dataset.labels.to(device)
    sampler = EpochSampler(len(data), cfg.batch_size, cfg.seed, device)
    G_fwd, D_fwd = _compiled(cfg, G, D)
    autocast = _autocast(cfg, device)

    def draw_fake_labels() -> torch.Tensor | None:
        if not num_classes:
            return None
        return torch.randint(num_classes, (cfg.batch_size,), device=device, generator=rng)

    def d_input(x: torch.Tensor, step: int) -> torch.Tensor:
        """What D sees of a batch: augmented, plus instance noise annealed over the run."""
        if cfg.augment != "none":
            x = augment(x, cfg.augment, rng)
        sigma = cfg.instance_noise * max(0.0, 1.0 - step / cfg.instance_noise_steps)
        return instance_noise(x, sigma, rng) if sigma > 0 else x

    def discriminate(
        x: torch.Tensor, y: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        with autocast:
            logits, class_logits = D_fwd(x, y)
        return logits.float(), (class_logits.float() if class_logits is not None else None)

    def d_step(k: int, real: torch.Tensor, y_real: torch.Tensor | None, fake: torch.Tensor,
               y_fake: torch.Tensor | None) -> tuple[torch.Tensor, ...]:  # fmt: skip
        """One discriminator update; ``k`` counts D steps over the whole run."""
        real_in, fake_in = d_input(real, step), d_input(fake.detach(), step)
        reg = k % cfg.reg_every == 0  # lazy regularisation: penalties every reg_every D steps
        real_logits, real_classes = discriminate(real_in, y_real)
        fake_logits, fake_classes = discriminate(fake_in, y_fake)
        loss = losses.d_loss(cfg.loss, real_logits, fake_logits, cfg.label_smoothing)
        if real_classes is not None and fake_classes is not None and y_real is not None:
            assert y_fake is not None
            loss = loss + cfg.acgan_weight * (
                losses.classification_loss(real_classes, y_real)
                + losses.classification_loss(fake_classes, y_fake)
            )
        if reg and cfg.loss == "wgan_gp":
            gp = losses.gradient_penalty(
                lambda x: discriminate(x, y_real)[0], real_in, fake_in, generator=rng
            )
            loss = loss + cfg.gp_weight * cfg.reg_every * gp
        if reg and cfg.r1_gamma > 0:
            r1 = losses.gradient_norm_penalty(lambda x: discriminate(x, y_real)[0], real_in)
            loss = loss + cfg.r1_gamma / 2 * cfg.reg_every * r1
        if reg and cfg.r2_gamma > 0:
            r2 = losses.gradient_norm_penalty(lambda x: discriminate(x, y_fake)[0], fake_in)
            loss = loss + cfg.r2_gamma / 2 * cfg.reg_every * r2
        opt_d.zero_grad(set_to_none=True)
        loss.backward()
        measure_grads(D, "d")
        opt_d.step()
        if cfg.loss == "wgan":  # WGAN's Lipschitz constraint by weight clipping
            with torch.no_grad():
                for p in D.parameters():
                    p.clamp_(-cfg.clip_value, cfg.clip_value)
        return loss.detach(), real_logits.detach().mean(), fake_logits.detach().mean()

    grad_norms = {"d": torch.tensor(math.nan), "g": torch.tensor(math.nan)}

    def measure_grads(net: nn.Module, name: str) -> None:
        """Clip the gradients when asked; keep their norm on the steps that report it (the
        next step is a logging step), without a device sync."""
        if cfg.grad_clip > 0:
            grad_norms[name] = nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
        elif (step + 1) % cfg.log_every == 0 or step + 1 == cfg.max_steps:
            grads = [p.grad for p in net.parameters() if p.grad is not None]
            grad_norms[name] = nn.utils.get_total_norm(grads)

    def g_step(fake: torch.Tensor, y_fake: torch.Tensor | None) -> torch.Tensor:
        """One generator update. D is frozen meanwhile: the backward pass goes through D to G
        without computing gradients for D's weights, which the next D step would discard."""
        D.requires_grad_(False)
        fake_logits, fake_classes = discriminate(d_input(fake, step), y_fake)
        loss = losses.g_loss(cfg.loss, fake_logits)
        if fake_classes is not None and y_fake is not None:
            loss = loss + cfg.acgan_weight * losses.classification_loss(fake_classes, y_fake)
        opt_g.zero_grad(set_to_none=True)
        loss.backward()
        D.requires_grad_(True)
        measure_grads(G, "g")
        opt_g.step()
        return loss.detach()

    checkpoint_step: int | None = step if latest is not None else None
    last_path = latest
    nan = torch.tensor(math.nan)
    d_loss = g_loss = d_real = d_fake = nan
    clock, clock_step = time.perf_counter(), step

    def healthy_losses() -> tuple[float, float]:
        """The latest (D, G) losses; Diverged when one of them is not finite."""
        d, g = d_loss.item(), g_loss.item()
        if not (math.isfinite(d) and math.isfinite(g)):
            raise Diverged(step, d, g)
        return d, g

    def checkpoint_state() -> dict[str, Any]:
        """The checkpoint dict of the current step; Diverged rather than save a non-finite one."""
        d, g = healthy_losses()
        if not all(torch.isfinite(t).all() for t in (*G.parameters(), *D.parameters())):
            raise Diverged(step, d, g)
        return {
            "config": cfg.to_dict(),
            "created_at": datetime.now(UTC).isoformat(),
            "data": {"shape": list(dataset.shape), "num_classes": num_classes},
            **snapshot(),
            "metrics": {"d_loss": d, "g_loss": g, **monitor.metrics},
        }

    def checkpoint() -> Path:
        """The checkpoint of the current step, written unless it already is."""
        nonlocal last_path, checkpoint_step
        if last_path is not None and checkpoint_step == step:
            return last_path
        path = ckpt.checkpoint_path(out_dir, step)
        ckpt.save_checkpoint(checkpoint_state(), path)
        ckpt.prune_checkpoints(out_dir, cfg.keep_checkpoints)
        last_path, checkpoint_step = path, step
        return path

    def evaluate() -> None:
        """Score the sampling generator; keep its checkpoint as best.pt when it is the best."""
        assert evaluator is not None
        metrics = evaluator(G_ema if G_ema is not None else G)
        if monitor.observe_evaluation(step, metrics):
            ckpt.save_checkpoint(checkpoint_state(), out_dir / ckpt.BEST_NAME)
        log.info("step %d: %s", step, ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()))

    def report(rate: float, d: float, g: float) -> None:
        if progress is not None:
            progress(
                Progress(
                    step, cfg.max_steps, rate, d, g, d_real.item(), d_fake.item(),
                    grad_norms["d"].item(), grad_norms["g"].item(), checkpoint_step,
                    dict(monitor.metrics), monitor.metrics_step,
                    dict(monitor.best) if monitor.best is not None else None, monitor.best_step,
                    tuple(monitor.warnings),
                )
            )  # fmt: skip

    def run() -> TrainResult:
        """Train from ``step`` to the end (or a stop); Diverged when the run blows up."""
        nonlocal step, d_loss, g_loss, d_real, d_fake, clock, clock_step
        G.train()
        D.train()
        while step < cfg.max_steps:
            if cfg.compile == "reduce-overhead":  # a new step: older CUDA-graph outputs are dead
                torch.compiler.cudagraph_mark_step_begin()
            for i in range(cfg.d_steps):
                k = step * cfg.d_steps + i  # D steps so far: the data batch is pure in (seed, k)
                index = sampler.batch(k)
                real, y_real = data[index], (labels[index] if num_classes else None)
                z = torch.randn(cfg.batch_size, G.latent_dim, device=device, generator=rng)
                y_fake = draw_fake_labels()
                last = i == cfg.d_steps - 1
                with autocast, contextlib.nullcontext() if last else torch.no_grad():
                    fake = G_fwd(z, y_fake).float()
                d_loss, d_real, d_fake = d_step(k, real, y_real, fake, y_fake)
            g_loss = g_step(fake, y_fake)
            step += 1
            if G_ema is not None:
                update_ema(G_ema, G, ema_decay_at(cfg, step))

            end = step == cfg.max_steps
            early_stop = False
            if evaluator is not None and cfg.eval_every and (step % cfg.eval_every == 0 or end):
                evaluate()
                early_stop = bool(cfg.early_stop_evals) and (
                    monitor.since_best >= cfg.early_stop_evals
                )
            if step % cfg.checkpoint_every == 0 or end or early_stop:
                checkpoint()
            if step % cfg.log_every == 0 or end or early_stop:
                d, g = healthy_losses()
                monitor.observe_losses(step, cfg.loss, d)
                now = time.perf_counter()
                seen = (step - clock_step) * cfg.batch_size * cfg.d_steps
                rate = seen / max(now - clock, 1e-9)
                clock, clock_step = now, step
                stop = should_stop is not None and not end and not early_stop and should_stop()
                if stop:
                    checkpoint()  # before the report, so the report names it
                report(rate, d, g)
                if stop:
                    log.info("stopped at step %d on request", step)
                    return TrainResult(step, True, checkpoint())
                if early_stop:
                    log.info("early stop at step %d: no better %s in %d evaluations",
                             step, monitor.key, monitor.since_best)  # fmt: skip
                    return TrainResult(step, False, checkpoint(), early_stopped=True)
        return TrainResult(step, False, checkpoint())

    while True:
        try:
            return run()
        except Diverged as e:
            if monitor.rollbacks >= cfg.max_rollbacks:
                raise TrainingError(
                    f"losses or weights became non-finite at step {e.step} (D {e.d_loss}, "
                    f"G {e.g_loss}) after {monitor.rollbacks} rollbacks with learning rates "
                    f"down to ×{monitor.lr_scale:g}: training diverged; try lower learning "
                    "rates, spectral_norm or grad_clip"
                ) from None
            back = last_good()
            monitor.rolled_back(e.step, int(back["step"]), e.d_loss, e.g_loss)
            step = restore(back)
            last_path = ckpt.checkpoint_path(out_dir, step) if back is not initial else None
            checkpoint_step = step if last_path is not None else None


def newest_readable_checkpoint(
    out_dir: Path, device: torch.device
) -> tuple[Path | None, dict[str, Any] | None, list[tuple[int, str]]]:
    """(path, state) of the newest checkpoint in ``out_dir`` that reads back intact, or
    (None, None) when there is none, and (step, problem) of each newer one that did not.

    A truncated or damaged file (``gan.checkpoint.CorruptCheckpoint``: torch cannot parse it, or
    its checksum does not match) is renamed to ``<name>.corrupt``, out of the way of listing,
    pruning and sampling, and kept for a person to look at. Other errors (a checkpoint of an
    unreadable format version) are raised: going on from an older file would be wrong then.
    """
    corrupt: list[tuple[int, str]] = []
    for found_step, path in reversed(ckpt.list_checkpoints(out_dir)):
        try:
            return path, ckpt.load_checkpoint(path, map_location=device), corrupt
        except ckpt.CorruptCheckpoint as e:
            log.warning("%s; trying the previous checkpoint", e)
            corrupt.append((found_step, f"{e}; {_move_aside(path)}"))
    return None, None, corrupt


def _move_aside(path: Path) -> str:
    """Rename a corrupt checkpoint to ``<name>.corrupt``; says what was done, for a person."""
    aside = path.with_name(path.name + ".corrupt")
    try:
        path.replace(aside)
    except OSError as e:
        return f"it could not be moved aside ({e.strerror or e})"
    return f"moved aside as {aside.name}"


def _autocast(cfg: TrainConfig, device: torch.device) -> contextlib.AbstractContextManager[None]:
    """bf16 autocast around G and D forward passes when asked for; losses stay in float32."""
    if cfg.precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


GForward = Callable[..., torch.Tensor]
DForward = Callable[..., tuple[torch.Tensor, torch.Tensor | None]]


def _compiled(cfg: TrainConfig, G: Generator, D: Discriminator) -> tuple[GForward, DForward]:
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
