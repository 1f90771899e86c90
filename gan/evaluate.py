"""Quality measurement during training: an ``Evaluator`` scores a generator on a fixed latent batch.

Every dataset gets ``diversity``: the mean pairwise L2 distance of the first 256 samples (as G
outputs them: images in [−1, 1], points as they are) divided by the same for 256 real samples;
≈ 1 when G spreads like the data, → 0 as it collapses. A class-conditional G also gets
``class_diversity``: the same ratio within each class (up to 64 samples of it against 64 reals of
it), averaged over the classes. A conditional G that ignores z draws one image per class: its
``diversity`` stays high (the classes differ) while its ``class_diversity`` falls towards 0.

What else a dataset gets (``gan.metrics``) depends on what it can be compared with; ``key``
names the metric the best checkpoint is chosen by (lower is better):

- mnist, fashion-mnist, kmnist at 1x28x28: the judge's ``score_images`` (fid, fid_baseline,
  classifier_score, coverage, class_kl, precision, recall, mean_confidence); key "fid".
- stacked-mnist at 3x28x28: modes (of 1000) and kl, each channel classified by MNIST's judge;
  key "kl".
- ring8, grid25: modes, high_quality and mode_kl against the known centres; key "mode_kl".
- anything else (cifar10, uploads, images resized away from 28x28): diversity only; key None.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

from gan.data import Dataset, to_uint8, to_unit_range
from gan.judge import JUDGE_DATASETS, Judge, judge_for
from gan.metrics import (
    grid25_metrics,
    image_reference,
    ring8_metrics,
    score_images,
    stacked_mnist_metrics,
)
from gan.models import Generator

BATCH_SIZE = 1000  # samples generated per forward pass
DIVERSITY_SAMPLES = 256
CLASS_DIVERSITY_SAMPLES = 64  # per class
MIN_SAMPLES = 10
# Kind of dataset (metric_kind) → the metric the best checkpoint is chosen by (lower is better).
KEYS: dict[str | None, str | None] = {
    "images": "fid",
    "stacked-mnist": "kl",
    "ring8": "mode_kl",
    "grid25": "mode_kl",
    None: None,
}
JUDGED = ("images", "stacked-mnist")  # the kinds scored by a judge
MIXTURES = {"ring8": ring8_metrics, "grid25": grid25_metrics}


def metric_kind(dataset: Dataset) -> str | None:
    """Which metrics ``dataset`` gets besides diversity: "images" (a judge dataset at 1x28x28),
    "stacked-mnist" (at 3x28x28), "ring8", "grid25", or None."""
    if dataset.name in JUDGE_DATASETS and dataset.shape == (1, 28, 28):
        return "images"
    if dataset.name == "stacked-mnist" and dataset.shape == (3, 28, 28):
        return "stacked-mnist"
    if dataset.name in ("ring8", "grid25") and dataset.shape == (2,):
        return dataset.name
    return None


def mean_pairwise_distance(x: Tensor) -> float:
    """Mean L2 distance over the distinct pairs of rows of ``x`` flattened to (N, D)."""
    # 2 / (N(N − 1)) · Σ_{i<j} ‖x_i − x_j‖₂
    return float(torch.pdist(x.flatten(1).float()).mean())


def _device_of(module: nn.Module) -> torch.device:
    """Where a module's first parameter or buffer lives (the CPU for a module with neither)."""
    tensor = next(itertools.chain(module.parameters(), module.buffers()), None)
    return tensor.device if tensor is not None else torch.device("cpu")


class Evaluator:
    """``evaluator(G)`` → metrics of ``samples`` samples of G (see the module docstring).

    The real side is computed once here: the diversity scale, and for judged images the judge's
    features of up to 2·``samples`` reals (``gan.metrics.image_reference``). Reals are picked by
    a permutation seeded with ``seed``. ``judge`` is required for the judged kinds and ignored
    otherwise; ``make_evaluator`` finds it, tests may pass a small one.
    """

    key: str | None

    def __init__(
        self, dataset: Dataset, judge: Judge | None = None, *, samples: int = 2000, seed: int = 0
    ) -> None:
        if samples < MIN_SAMPLES:
            raise ValueError(f"evaluation needs at least {MIN_SAMPLES} samples, got {samples}")
        self.kind = metric_kind(dataset)
        self.key = KEYS[self.kind]
        self.samples, self.seed = samples, seed

        perm = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))

        def spread(index: Tensor) -> float:
            """The spread of the reals at ``index``, as G outputs them."""
            real = dataset.data[index]
            return mean_pairwise_distance(to_unit_range(real) if dataset.is_image else real)

        self.real_spread = spread(perm[:DIVERSITY_SAMPLES])
        if not self.real_spread > 0:
            raise ValueError(f"{dataset.name}: all its samples are equal, diversity is undefined")
        # The spread of each class's reals (NaN where a class has fewer than 2 or no spread).
        self.class_spread = torch.full((dataset.num_classes,), math.nan)
        labels = dataset.labels[perm]
        for c in labels.unique().tolist():
            members = perm[labels == c][:CLASS_DIVERSITY_SAMPLES]
            if len(members) >= 2 and (class_spread := spread(members)) > 0:
                self.class_spread[c] = class_spread

        # What the kind adds to diversity: a function of G's float samples (on the CPU).
        self._metrics: Callable[[Tensor], dict[str, float]] = lambda fake: {}
        if self.kind in MIXTURES:
            self._metrics = MIXTURES[self.kind]
        elif self.kind in JUDGED:
            if judge is None:
                raise ValueError(f"{dataset.name} is scored by a judge; pass one")
            if self.kind == "stacked-mnist":
                self._metrics = lambda fake: stacked_mnist_metrics(to_uint8(fake), judge)
            else:
                if judge.num_classes != dataset.num_classes:
                    raise ValueError(f"a judge of {judge.num_classes} classes for {dataset.name}")
                idx = perm[: 2 * samples]
                reference = image_reference(
                    dataset.data[idx], dataset.labels[idx], judge, dataset.num_classes, seed
                )
                self._metrics = lambda fake: score_images(to_uint8(fake), reference, judge)
        self._z: Tensor | None = None

    def latents(self, latent_dim: int) -> Tensor:
        """The fixed latent batch (samples, latent_dim): N(0, I) drawn on the CPU from ``seed``
        on first use and kept (a pure function of seed, samples and latent_dim)."""
        if self._z is None or self._z.shape[1] != latent_dim:
            g = torch.Generator().manual_seed(self.seed)
            self._z = torch.randn(self.samples, latent_dim, generator=g)
        return self._z

    @torch.inference_mode()
    def generate(self, G: Generator) -> Tensor:
        """G's float32 samples (samples, *shape) of the fixed latents, on the CPU; generated in
        eval mode on G's device, in batches; a conditional G gets labels i % num_classes. G's
        train/eval mode is restored afterwards."""
        z = self.latents(G.latent_dim)
        labels = torch.arange(len(z)) % G.num_classes if G.num_classes else None
        device, was_training = _device_of(G), G.training
        G.eval()
        try:
            out = []
            for start in range(0, len(z), BATCH_SIZE):
                y = labels[start : start + BATCH_SIZE].to(device) if labels is not None else None
                out.append(G(z[start : start + BATCH_SIZE].to(device), y).float().cpu())
        finally:
            G.train(was_training)
        return torch.cat(out)

    def __call__(self, G: Generator) -> dict[str, float]:
        fake = self.generate(G)
        metrics = self._metrics(fake)
        metrics["diversity"] = mean_pairwise_distance(fake[:DIVERSITY_SAMPLES]) / self.real_spread
        if G.num_classes and G.num_classes == len(self.class_spread):
            metrics["class_diversity"] = self.class_diversity(fake, G.num_classes)
        return metrics

    def class_diversity(self, fake: Tensor, num_classes: int) -> float:
        """Mean over classes of (spread of the fakes of class c) / (spread of the reals of c);
        ``fake`` as ``generate`` makes them, sample i of class i % num_classes."""
        ratios = []
        for c in range(num_classes):
            mine = fake[c::num_classes][:CLASS_DIVERSITY_SAMPLES]
            if len(mine) >= 2 and math.isfinite(self.class_spread[c]):
                ratios.append(mean_pairwise_distance(mine) / float(self.class_spread[c]))
        return sum(ratios) / len(ratios) if ratios else math.nan


def make_evaluator(
    dataset: Dataset,
    *,
    data_dir: Path,
    cache_dir: Path,
    samples: int = 2000,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> Evaluator:
    """The ``Evaluator`` of ``dataset``. Its judge, where its kind has one, comes from
    ``gan.judge.judge_for``: loaded from ``cache_dir``, or trained on ``device`` from the data in
    ``data_dir`` and cached there (about a minute on a CPU, once per cache)."""
    judge = None
    if metric_kind(dataset) in JUDGED:
        judge = judge_for(dataset.name, data_dir, cache_dir, device)
    return Evaluator(dataset, judge, samples=samples, seed=seed)
