"""The training loop: train steps (``gan.steps``), evaluations, checkpoints and reports, with
rollback when the run diverges.

``train`` builds the run's state (``gan.state.TrainState``) or resumes it from the newest
checkpoint in ``out_dir``, then loops over named phases until ``cfg.max_steps``:

    train step   d_steps D updates, one G update, the EMA              (gan.steps.train_step)
    evaluate     every eval_every steps: score the sampling generator, keep best.pt
    checkpoint   every checkpoint_every steps, at the end and on an early stop
    report       every log_every steps: check the losses, report progress
    stop         when should_stop says so (polled after every step, and inside slow steps and
                 evaluations): checkpoint the last step that ended, report, return

A stop is noticed within moments whatever a step takes (``gan.interrupt``): while steps take
``SLOW_STEP_S`` or more, each runs interruptibly, from a copy of the state made at its start
(so does a run's first step), and a stop inside it (at any layer's forward or backward)
restores that copy, so that the stop's checkpoint is exactly the last step that ended. An
evaluation is always interruptible; an interrupted one is abandoned (best.pt untouched) and
made first when the run resumes at that step (``evaluation_owed``). Shorter steps run bare, and
a stop waits for their end.

A non-finite loss or weight (``Diverged``, found where the loop reads the losses: at reports and
checkpoints) rolls the state back to the newest finite checkpoint, or to the initial state, with
halved learning rates. Everything random is a function of ``cfg.seed``: the initial weights, one
noise generator on the training device (z, labels, augmentation, instance noise, penalty
interpolation; its state is checkpointed) and the data order (a permutation per epoch drawn from
``(seed, epoch)``). So the same spec and seed give the same weights, and a resumed run continues
the same sequence exactly.

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
from pathlib import Path
from typing import Any, Protocol

import torch

from gan import checkpoint as ckpt
from gan.config import ConfigError, TrainConfig, check_data
from gan.data import Dataset, stack_digits, to_unit_range
from gan.errors import first_line
from gan.interrupt import StepGuard, StepInterrupted, interruptible
from gan.models import Generator
from gan.monitor import Monitor
from gan.progress import Progress
from gan.state import TrainState
from gan.steps import StepStats, train_step

log = logging.getLogger(__name__)

Saved = tuple[int, Path]  # (step, path) of the newest checkpoint the run wrote or resumed from


@dataclass(frozen=True)
class TrainResult:
    step: int  # generator steps done
    stopped: bool  # True when should_stop ended training before max_steps
    checkpoint: Path  # the checkpoint written last
    early_stopped: bool = False  # True when the best metric stopped improving (early_stop_evals)


class TrainingError(RuntimeError):
    """Training cannot go on; the message says why, for a person to act on."""


class StoppedBeforeFirstStep(Exception):
    """``should_stop`` interrupted the first step of a new run: there is no checkpoint to name
    (nor to write: nothing was done). A caller treats it as a stop."""


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


class RealBatches:
    """Batch number k of the data, as D takes it, on the device: (images in [−1, 1] or points,
    labels when the run is conditional, else None); ``gan.steps.RealBatch``.

    A dataset that stacks digits (Stacked MNIST) gets fresh triples for every batch, drawn by a
    generator seeded with (seed, k): like ``EpochSampler``'s order, a pure function of (seed, k).
    """

    def __init__(self, cfg: TrainConfig, dataset: Dataset, s: TrainState) -> None:
        self.conditional, self.seed, self.batch_size = s.num_classes > 0, cfg.seed, cfg.batch_size
        self.digits: tuple[torch.Tensor, torch.Tensor] | None = None
        if dataset.digits is not None:  # on the device: 10,000 digits rather than 50,000 triples
            images, labels = dataset.digits
            self.digits = (to_unit_range(images).to(s.device), labels.to(s.device))
        else:
            data = to_unit_range(dataset.data) if dataset.is_image else dataset.data.float()
            self.data, self.labels = data.to(s.device), dataset.labels.to(s.device)
            self.sampler = EpochSampler(len(data), cfg.batch_size, cfg.seed, s.device)

    def __call__(self, k: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.digits is not None:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + k)
            images, labels = stack_digits(*self.digits, self.batch_size, g)
        else:
            index = self.sampler.batch(k)
            images, labels = self.data[index], self.labels[index]
        return images, (labels if self.conditional else None)


class Throughput:
    """Real images through D per second between readings."""

    def __init__(self, step: int, images_per_step: int) -> None:
        self.time, self.step, self.images_per_step = time.perf_counter(), step, images_per_step

    def read(self, step: int) -> float:
        """The rate since the previous reading (or since ``step`` of the start)."""
        now = time.perf_counter()
        rate = (step - self.step) * self.images_per_step / max(now - self.time, 1e-9)
        self.time, self.step = now, step
        return rate


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
    may_write: Callable[[], bool] | None = None,
    mirror: ckpt.Mirror | None = None,
) -> TrainResult:
    """Train a GAN on ``dataset`` and write checkpoints to ``out_dir``.

    ``progress`` is called every ``cfg.log_every`` steps and at the end; ``should_stop`` is
    polled after every step and, in a step or an evaluation that takes seconds, at every layer
    (``gan.interrupt``: so it must be cheap, a flag that another thread sets). A True answer
    checkpoints the last step that ended, reports and returns early; an interrupted step is
    undone, an interrupted evaluation abandoned (and made when the run resumes); a new run's
    first step interrupted raises StoppedBeforeFirstStep. ``evaluator`` scores the generator
    (its EMA when kept) every ``cfg.eval_every`` steps and at the end; the best evaluation's
    checkpoint is kept as ``best.pt``. A non-finite loss or weight rolls the run back to its
    newest finite checkpoint (or its initial state) with halved learning rates, up to
    ``cfg.max_rollbacks`` times; then TrainingError says why. ``may_write`` is asked before each
    checkpoint is published (``gan.checkpoint.save_checkpoint``): False ends the run with
    WriteRefused, that checkpoint unwritten. ``mirror`` gets a copy of every checkpoint written,
    pruned or moved aside (``gan.checkpoint.Mirror``): a worker's object store.
    """
    check_compatible(cfg, dataset)
    device = pick_device(cfg.device)
    num_classes = dataset.num_classes if cfg.conditional != "none" else 0
    key = evaluator.key if evaluator is not None else None
    s = TrainState.new(cfg, dataset.shape, num_classes, device, key)
    initial = copy.deepcopy(s.snapshot())  # where a divergence returns when no checkpoint is good
    saved, stats = resume(cfg, s, out_dir, mirror)
    real_batch = RealBatches(cfg, dataset, s)
    steps = StepGuard(cfg, s, should_stop)  # runs the slow steps so that a stop interrupts them
    stepped = False  # whether a step ended since the state was loaded (stats are then its own)
    throughput = Throughput(s.step, cfg.batch_size * cfg.d_steps)
    owed = evaluate_owed(cfg, s, stats, evaluator, out_dir, saved, may_write, mirror, should_stop)
    if owed is not None:
        return owed
    while True:
        try:
            s.G.train()
            s.D.train()
            while s.step < cfg.max_steps:
                try:
                    stats = steps.run(train_step, cfg, s, real_batch, stats)
                    stepped = True
                    end = s.step == cfg.max_steps

                    early_stop = False
                    due = cfg.eval_every and (s.step % cfg.eval_every == 0 or end)
                    if evaluator is not None and due:  # abandoned when a stop interrupts it
                        early_stop = evaluate(
                            cfg, s, stats, evaluator, out_dir, may_write, mirror, should_stop
                        )

                    if s.step % cfg.checkpoint_every == 0 or end or early_stop:
                        saved = checkpoint(cfg, s, stats, out_dir, saved, may_write, mirror)

                    # Polled after every step (it must be cheap: a flag), so that a stop is
                    # noticed within one step whatever log_every is; a stop reports at once.
                    stop = should_stop is not None and not end and not early_stop and should_stop()
                except StepInterrupted:  # s is at the last step that ended (or its evaluation)
                    stop, end, early_stop = True, False, False
                if stop and not stepped:  # no step ended since s was loaded: nothing new
                    return stopped_before_a_step(s, saved)
                if s.step % cfg.log_every == 0 or end or early_stop or stop:
                    saved, ended = report(
                        cfg, s, stats, throughput, out_dir, saved, progress, may_write, mirror,
                        stop=stop, early_stop=early_stop,
                    )  # fmt: skip
                    if ended is not None:
                        return ended
            saved = checkpoint(cfg, s, stats, out_dir, saved, may_write, mirror)
            return TrainResult(s.step, False, saved[1])
        except Diverged as e:
            saved = roll_back(cfg, s, e, initial, out_dir)
            stepped = False


def stopped_before_a_step(s: TrainState, saved: Saved | None) -> TrainResult:
    """A stop that came before any step ended since the state was loaded: the checkpoint it was
    loaded from is the run's last; StoppedBeforeFirstStep when there is none (a new run)."""
    log.info("stopped at step %d on request, before a step ended", s.step)
    if saved is None:
        raise StoppedBeforeFirstStep(f"stopped at step {s.step}: nothing saved")
    return TrainResult(s.step, True, saved[1])


def evaluate_owed(
    cfg: TrainConfig,
    s: TrainState,
    stats: StepStats,
    evaluator: Evaluator | None,
    out_dir: Path,
    saved: Saved | None,
    may_write: Callable[[], bool] | None,
    mirror: ckpt.Mirror | None,
    should_stop: Callable[[], bool] | None,
) -> TrainResult | None:
    """The resumed step's evaluation, which a stop interrupted (``evaluation_owed``), made
    before the first step: the run's result when it ends the run (an early stop, or a stop
    interrupting it again), else None."""
    if evaluator is None or saved is None or not evaluation_owed(cfg, s):
        return None
    try:
        if evaluate(cfg, s, stats, evaluator, out_dir, may_write, mirror, should_stop):
            return TrainResult(s.step, False, saved[1], early_stopped=True)
    except StepInterrupted:
        return TrainResult(s.step, True, saved[1])
    return None


def report(
    cfg: TrainConfig,
    s: TrainState,
    stats: StepStats,
    throughput: Throughput,
    out_dir: Path,
    saved: Saved | None,
    progress: Callable[[Progress], None] | None,
    may_write: Callable[[], bool] | None,
    mirror: ckpt.Mirror | None,
    *,
    stop: bool,
    early_stop: bool,
) -> tuple[Saved | None, TrainResult | None]:
    """The report phase: check the losses (Diverged when not finite), checkpoint first on a
    stop (so that the report names it), report progress. Returns the newest checkpoint and the
    run's result when a stop or an early stop ends the run (else None)."""
    d, g = healthy_losses(s, stats)
    s.monitor.observe_losses(s.step, cfg.loss, d)
    rate = throughput.read(s.step)
    if stop:
        saved = checkpoint(cfg, s, stats, out_dir, saved, may_write, mirror)
    if progress is not None:
        progress(progress_of(cfg, s, stats, rate, d, g, saved))
    if stop:
        log.info("stopped at step %d on request", s.step)
        saved = checkpoint(cfg, s, stats, out_dir, saved)  # written above
        return saved, TrainResult(s.step, True, saved[1])
    if early_stop:
        log.info("early stop at step %d: no better %s in %d evaluations",
                 s.step, s.monitor.key, s.monitor.since_best)  # fmt: skip
        saved = checkpoint(cfg, s, stats, out_dir, saved)  # written above
        return saved, TrainResult(s.step, False, saved[1], early_stopped=True)
    return saved, None


def resume(
    cfg: TrainConfig, s: TrainState, out_dir: Path, mirror: ckpt.Mirror | None = None
) -> tuple[Saved | None, StepStats]:
    """Load the newest readable checkpoint in ``out_dir`` into ``s``, monitor included, and
    record each newer unreadable one in the monitor. The checkpoint resumed from, if any, and
    the stats of its step as far as it recorded them (its losses; no stats when none)."""
    latest, state, corrupt = newest_readable_checkpoint(out_dir, s.device, mirror)
    stats = StepStats()
    if latest is not None and state is not None:
        s.monitor = Monitor.from_state_dict(state["monitor"])
        try:
            s.restore(state, cfg)
        except RuntimeError as e:  # shapes of another network layout (an older version's)
            raise TrainingError(
                f"{latest.name} holds networks of a different layout than this version builds "
                f"for this config, so the run cannot resume from it (its generator still "
                f"samples); start a new job to train further. {first_line(e)}"
            ) from None
        metrics = state["metrics"]
        stats = StepStats(d_loss=torch.tensor(metrics["d_loss"]),
                          g_loss=torch.tensor(metrics["g_loss"]))  # fmt: skip
        log.info("resumed from %s at step %d", latest.name, s.step)
    for bad_step, problem in corrupt:  # newer checkpoints that could not be read, moved aside
        s.monitor.checkpoint_corrupt(bad_step, problem, s.step)
    return ((s.step, latest) if latest is not None else None), stats


def evaluation_owed(cfg: TrainConfig, s: TrainState) -> bool:
    """Whether the evaluation due at the resumed step is missing from the monitor's record: a
    stop interrupted it, and the stop's checkpoint is of that step."""
    if not cfg.eval_every or s.step == 0 or s.monitor.metrics_step == s.step:
        return False
    return s.step % cfg.eval_every == 0 or s.step == cfg.max_steps


def healthy_losses(s: TrainState, stats: StepStats) -> tuple[float, float]:
    """The latest (D, G) losses; Diverged when one of them is not finite."""
    d, g = stats.d_loss.item(), stats.g_loss.item()
    if not (math.isfinite(d) and math.isfinite(g)):
        raise Diverged(s.step, d, g)
    return d, g


def checkpoint_state(cfg: TrainConfig, s: TrainState, stats: StepStats) -> dict[str, Any]:
    """The checkpoint dict of the current step; Diverged rather than save a non-finite one."""
    d, g = healthy_losses(s, stats)
    if not s.weights_finite():
        raise Diverged(s.step, d, g)
    return s.checkpoint(cfg, d, g)


def checkpoint(
    cfg: TrainConfig,
    s: TrainState,
    stats: StepStats,
    out_dir: Path,
    saved: Saved | None,
    may_write: Callable[[], bool] | None = None,
    mirror: ckpt.Mirror | None = None,
) -> Saved:
    """The checkpoint of the current step: ``saved`` when it is that one, else written now (and
    the older ones pruned to ``cfg.keep_checkpoints``)."""
    if saved is not None and saved[0] == s.step:
        return saved
    path = ckpt.checkpoint_path(out_dir, s.step)
    ckpt.save_checkpoint(checkpoint_state(cfg, s, stats), path, may_write, mirror)
    ckpt.prune_checkpoints(out_dir, cfg.keep_checkpoints, mirror)
    return s.step, path


def evaluate(
    cfg: TrainConfig,
    s: TrainState,
    stats: StepStats,
    evaluator: Evaluator,
    out_dir: Path,
    may_write: Callable[[], bool] | None = None,
    mirror: ckpt.Mirror | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> bool:
    """Score the sampling generator; keep its checkpoint as best.pt when it is the best. Whether
    to stop early: ``cfg.early_stop_evals`` evaluations in a row brought no new best.
    StepInterrupted when ``should_stop`` says to stop meanwhile: nothing is recorded then."""
    with interruptible(should_stop) if should_stop is not None else contextlib.nullcontext():
        metrics = evaluator(s.G_ema if s.G_ema is not None else s.G)
    if s.monitor.observe_evaluation(s.step, metrics):
        best = out_dir / ckpt.BEST_NAME
        ckpt.save_checkpoint(checkpoint_state(cfg, s, stats), best, may_write, mirror)
    log.info("step %d: %s", s.step, ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()))
    return bool(cfg.early_stop_evals) and s.monitor.since_best >= cfg.early_stop_evals


def progress_of(cfg: TrainConfig, s: TrainState, stats: StepStats, rate: float, d_loss: float,
                g_loss: float, saved: Saved | None) -> Progress:  # fmt: skip
    """The progress report of the current step (``d_loss``, ``g_loss``: the healthy losses)."""
    m = s.monitor
    return Progress(
        step=s.step,
        total_steps=cfg.max_steps,
        images_per_sec=rate,
        d_loss=d_loss,
        g_loss=g_loss,
        d_real=stats.d_real.item(),
        d_fake=stats.d_fake.item(),
        d_grad_norm=stats.d_grad_norm.item(),
        g_grad_norm=stats.g_grad_norm.item(),
        checkpoint_step=saved[0] if saved is not None else None,
        metrics=dict(m.metrics),
        metrics_step=m.metrics_step,
        best=dict(m.best) if m.best is not None else None,
        best_step=m.best_step,
        warnings=tuple(m.warnings),
        precision=s.precision,
    )


def roll_back(
    cfg: TrainConfig, s: TrainState, e: Diverged, initial: dict[str, Any], out_dir: Path
) -> Saved | None:
    """Restore ``s`` to the newest good checkpoint (or ``initial``) after the divergence ``e``,
    with the learning rates halved once more; TrainingError once ``cfg.max_rollbacks`` are
    spent. The checkpoint rolled back to, if any."""
    if s.monitor.rollbacks >= cfg.max_rollbacks:
        raise TrainingError(
            f"losses or weights became non-finite at step {e.step} (D {e.d_loss}, "
            f"G {e.g_loss}) after {s.monitor.rollbacks} rollbacks with learning rates "
            f"down to ×{s.monitor.lr_scale:g}: training diverged; try lower learning "
            "rates, spectral_norm or grad_clip"
        ) from None
    back = last_good(out_dir, s.device, initial)
    s.monitor.rolled_back(e.step, int(back["step"]), e.d_loss, e.g_loss)
    s.restore(back, cfg)
    return (s.step, ckpt.checkpoint_path(out_dir, s.step)) if back is not initial else None


def last_good(out_dir: Path, device: torch.device, initial: dict[str, Any]) -> dict[str, Any]:
    """The newest checkpoint in ``out_dir`` that reads back intact and whose weights are all
    finite, else ``initial``."""
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


def newest_readable_checkpoint(
    out_dir: Path, device: torch.device, mirror: ckpt.Mirror | None = None
) -> tuple[Path | None, dict[str, Any] | None, list[tuple[int, str]]]:
    """(path, state) of the newest checkpoint in ``out_dir`` that reads back intact, or
    (None, None) when there is none, and (step, problem) of each newer one that did not.

    A truncated or damaged file (``gan.checkpoint.CorruptCheckpoint``: torch cannot parse it, or
    its checksum does not match) is renamed to ``<name>.corrupt``, out of the way of listing,
    pruning and sampling, and kept for a person to look at. Other errors (a checkpoint of an
    unreadable format version) are raised: going on from an older file would be wrong then.
    In ``mirror`` it is moved aside too.
    """
    corrupt: list[tuple[int, str]] = []
    for found_step, path in reversed(ckpt.list_checkpoints(out_dir)):
        try:
            return path, ckpt.load_checkpoint(path, map_location=device), corrupt
        except ckpt.CorruptCheckpoint as e:
            log.warning("%s; trying the previous checkpoint", e)
            corrupt.append((found_step, f"{e}; {_move_aside(path, mirror)}"))
    return None, None, corrupt


def _move_aside(path: Path, mirror: ckpt.Mirror | None = None) -> str:
    """Rename a corrupt checkpoint to ``<name>.corrupt``; says what was done, for a person."""
    aside = path.with_name(path.name + ".corrupt")
    try:
        if mirror is not None:
            mirror.put(aside.name, path.read_bytes())
            mirror.remove(path.name)
        path.replace(aside)
    except OSError as e:
        return f"it could not be moved aside ({e.strerror or e})"
    return f"moved aside as {aside.name}"
