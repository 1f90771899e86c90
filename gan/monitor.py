"""The health and quality record of a training run: evaluations, the best one, and warnings.

The trainer feeds it the losses of each report and the metrics of each evaluation; it keeps the
latest and best evaluation (by the evaluator's key, lower is better) and raises the flags users
ask about in every GAN tracker:

- ``vanishing_gradients``: D's loss stays near 0 for ``SATURATION_REPORTS`` reports in a row,
  i.e. D(x) → 1 and D(G(z)) → 0 (or the hinge margins are all met), so G's gradients vanish;
- ``mode_collapse``: the samples' diversity (or, for a conditional G, their diversity within a
  class) falls below ``COLLAPSE_DIVERSITY`` of the data's, or, on data with known modes (2D
  mixtures, Stacked MNIST), their spread over the modes (``gan.metrics.mode_spread``) does, or
  the classes covered drop by ``COVERAGE_DROP`` or more from the best seen;
- ``diverged``: a loss or weight became non-finite and the run rolled back (``rolled_back``);
- ``checkpoint_corrupt``: the newest checkpoint was truncated or damaged when the run resumed,
  so it went on from an older one (``checkpoint_corrupt``).

A flag is raised once when its condition starts, and logged then; it may be raised again after
it clears. The record is plain data (``state_dict``), stored in every checkpoint, so a resumed
run keeps it.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass, field
from typing import Any, Literal

SATURATED_D_LOSS = 0.01  # D's loss below this: D separates real from fake almost perfectly
SATURATION_REPORTS = 5  # ... for this many progress reports in a row
COLLAPSE_DIVERSITY = 0.5  # sample diversity (1 ≈ the data's) below this: collapsed
COVERAGE_DROP = 3  # classes (or modes) covered falling this far below the best seen
UNBOUNDED_LOSSES = ("wgan", "wgan_gp")  # critic losses with no "near 0" saturation point

log = logging.getLogger(__name__)


# What a warning flags: the one list, which the API's schema and the client take.
WarningCode = Literal["diverged", "vanishing_gradients", "mode_collapse", "checkpoint_corrupt"]


@dataclass(frozen=True)
class TrainWarning:
    code: WarningCode
    step: int  # the step the condition started
    message: str  # what happened and what to try, for a person

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class Monitor:
    key: str | None  # metric the best evaluation is chosen by (lower is better); None: no best
    metrics: dict[str, float] = field(default_factory=dict)  # the latest evaluation
    metrics_step: int | None = None
    best: dict[str, float] | None = None  # the best evaluation so far
    best_step: int | None = None
    since_best: int = 0  # evaluations since the best one
    warnings: list[TrainWarning] = field(default_factory=list)
    rollbacks: int = 0  # divergences recovered from by rolling back
    lr_scale: float = 1.0  # learning rates are the config's times this (halved per rollback)
    most_covered: float = 0.0  # most classes or modes covered by any evaluation
    saturated_since: int | None = None  # first step of the current run of saturated reports
    saturated_reports: int = 0
    flagged: list[WarningCode] = field(
        default_factory=list
    )  # codes whose condition holds right now

    def observe_losses(self, step: int, loss: str, d_loss: float) -> None:
        """Note one progress report's D loss; flag vanishing gradients after a saturated run."""
        if loss in UNBOUNDED_LOSSES or d_loss >= SATURATED_D_LOSS:
            self.saturated_since, self.saturated_reports = None, 0
            self._clear("vanishing_gradients")
            return
        if self.saturated_since is None:
            self.saturated_since = step
        self.saturated_reports += 1
        if self.saturated_reports >= SATURATION_REPORTS:
            self._raise(
                "vanishing_gradients",
                self.saturated_since,
                f"D's loss has stayed below {SATURATED_D_LOSS} since step "
                f"{self.saturated_since} ({d_loss:.2g} now): D tells real from fake almost "
                "perfectly, so G's gradients vanish. Try spectral_norm, label_smoothing, "
                "instance_noise, a lower lr_d, or the stable preset.",
            )

    def observe_evaluation(self, step: int, metrics: dict[str, float]) -> bool:
        """Record an evaluation; True when it is the best so far (by ``key``)."""
        self.metrics, self.metrics_step = dict(metrics), step
        covered = metrics.get("coverage", metrics.get("modes"))
        within = metrics.get("class_diversity", 1.0)  # NaN compares False: no flag
        spread = metrics.get("mode_spread", 1.0)
        collapsed = (
            metrics.get("diversity", 1.0) < COLLAPSE_DIVERSITY
            or within < COLLAPSE_DIVERSITY
            or spread < COLLAPSE_DIVERSITY
            or (covered is not None and covered <= self.most_covered - COVERAGE_DROP)
        )
        if covered is not None:
            self.most_covered = max(self.most_covered, covered)
        if collapsed:
            self._raise(
                "mode_collapse",
                step,
                f"at step {step} the samples cover {covered if covered is not None else '?'} "
                f"classes (best {self.most_covered:g}) with diversity "
                f"{metrics.get('diversity', math.nan):.2f} of the data's"
                + (f" ({within:.2f} within a class)" if "class_diversity" in metrics else "")
                + (f", spread over the modes {spread:.2f}" if "mode_spread" in metrics else "")
                + ": the generator is collapsing onto a few modes. Try the stable preset, "
                "spectral_norm, a lower lr_g, or resume from the best checkpoint.",
            )
        else:
            self._clear("mode_collapse")
        if self.key is None or not math.isfinite(metrics.get(self.key, math.nan)):
            return False
        if self.best is None or metrics[self.key] < self.best[self.key]:
            self.best, self.best_step, self.since_best = dict(metrics), step, 0
            return True
        self.since_best += 1
        return False

    def rolled_back(self, step: int, to_step: int, d_loss: float, g_loss: float) -> None:
        """Training diverged at ``step`` and went back to ``to_step`` with halved learning rates."""
        self.rollbacks += 1
        self.lr_scale *= 0.5
        self._warn(
            TrainWarning(
                "diverged",
                step,
                f"losses or weights became non-finite at step {step} (D {d_loss}, G {g_loss}); "
                f"rolled back to step {to_step} with learning rates ×{self.lr_scale:g} "
                f"(rollback {self.rollbacks}).",
            )
        )

    def checkpoint_corrupt(self, step: int, problem: str, resumed_from: int) -> None:
        """The checkpoint of ``step`` could not be read when the run resumed (``problem`` says
        why and what became of the file); it went on from step ``resumed_from``."""
        origin = f"the checkpoint of step {resumed_from}" if resumed_from else "the start"
        self._warn(
            TrainWarning(
                "checkpoint_corrupt",
                step,
                f"the checkpoint of step {step} was unreadable when the run resumed: {problem}; "
                f"went on from {origin}, repeating {step - resumed_from} steps.",
            )
        )

    def _raise(self, code: WarningCode, step: int, message: str) -> None:
        if code not in self.flagged:
            self.flagged.append(code)
            self._warn(TrainWarning(code, step, message))

    def _warn(self, warning: TrainWarning) -> None:
        self.warnings.append(warning)
        log.warning("%s from step %d: %s", warning.code, warning.step, warning.message)

    def _clear(self, code: WarningCode) -> None:
        if code in self.flagged:
            self.flagged.remove(code)

    def state_dict(self) -> dict[str, Any]:
        """Plain data for a checkpoint (``torch.load(weights_only=True)`` reads it back)."""
        state = dataclasses.asdict(self)
        state["warnings"] = [w.to_dict() for w in self.warnings]
        return state

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> Monitor:
        return cls(**{**state, "warnings": [TrainWarning(**w) for w in state["warnings"]]})
