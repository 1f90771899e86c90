"""A training run's progress report: the one definition of a job's progress.

``gan.train.train`` makes one every ``log_every`` steps; the worker records it as it is
(``worker.store.series.record_progress``), and the API shows what a client needs of it (the
progress fields of ``GET /jobs/{id}`` and of its ``progress`` events: ``progress_snapshot``).
Free of torch, so that the API's process can import it.
"""

from __future__ import annotations

from dataclasses import dataclass

from gan.monitor import TrainWarning


@dataclass(frozen=True)
class Progress:
    """What the trainer reports every ``log_every`` steps and at the end."""

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
    precision: str = "fp32"  # what the config's precision resolved to: "fp32" or "bf16"

    def scalars(self) -> dict[str, float]:
        """The numbers of every report, charted as time series (``GET /jobs/{id}/metrics``)."""
        return {
            "d_loss": self.d_loss,
            "g_loss": self.g_loss,
            "d_real": self.d_real,
            "d_fake": self.d_fake,
            "d_grad_norm": self.d_grad_norm,
            "g_grad_norm": self.g_grad_norm,
            "images_per_sec": self.images_per_sec,
            "bf16": 1.0 if self.precision == "bf16" else 0.0,  # precision "auto" resolved to
        }
