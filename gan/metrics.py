"""Sample-quality metrics: pure functions on features, probabilities, labels and points.

Image metrics use the judge (gan.judge): its penultimate features for the Fréchet distance and
precision/recall, its softmax for the classifier score, class coverage and class KL. The 2D
mixtures are scored against their known centres, Stacked MNIST by classifying each channel.
Everything is computed on the CPU; values come back as Python floats.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from gan.data import GRID25_CENTRES, GRID25_SIGMA, RING8_CENTRES, RING8_SIGMA
from gan.judge import Judge


def frechet_distance(feats_a: Tensor, feats_b: Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (N, F) (FID's formula)."""
    # d² = ‖μa − μb‖² + tr(Σa + Σb − 2(ΣaΣb)^{1/2}), in float64. ΣaΣb is not symmetric, but
    # (ΣaΣb)^{1/2} is similar to (Σa^{1/2} Σb Σa^{1/2})^{1/2}, which is symmetric PSD, so
    # tr (ΣaΣb)^{1/2} = Σ_i √λ_i with λ_i the eigenvalues of Σa^{1/2} Σb Σa^{1/2} (clamped at 0).
    a, b = feats_a.double(), feats_b.double()
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"need at least 2 samples per set, got {len(a)} and {len(b)}")
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = torch.cov(a.T).reshape(a.shape[1], -1), torch.cov(b.T).reshape(b.shape[1], -1)
    eigval, eigvec = torch.linalg.eigh(cov_a)
    sqrt_a = eigvec @ torch.diag(eigval.clamp(min=0).sqrt()) @ eigvec.T
    m = sqrt_a @ cov_b @ sqrt_a
    tr_sqrt = torch.linalg.eigvalsh((m + m.T) / 2).clamp(min=0).sqrt().sum()
    d2 = (mu_a - mu_b).square().sum() + cov_a.trace() + cov_b.trace() - 2 * tr_sqrt
    return max(0.0, float(d2))  # round-off can give −1e−6 for identical sets


def classifier_score(probs: Tensor) -> float:
    """The Inception Score's analogue on the judge's class probabilities (N, K)."""
    # exp(E_x KL(p(y|x) ‖ p(y))), p(y) = E_x p(y|x): 1 when every sample gets the same class
    # distribution, K when each is confidently one class and the classes are balanced.
    p = probs.double()
    p_y = p.mean(0, keepdim=True)
    kl = (torch.xlogy(p, p) - torch.xlogy(p, p_y)).sum(1)
    return float(kl.mean().exp())


def class_histogram(pred: Tensor, num_classes: int) -> Tensor:
    """Share of samples in each class (num_classes,), float64, summing to 1."""
    # h_k = #{i : pred_i = k} / N
    counts = torch.bincount(pred.flatten().long(), minlength=num_classes)[:num_classes]
    return counts.double() / max(1, pred.numel())


def class_coverage(pred: Tensor, num_classes: int, min_share: float = 0.1) -> int:
    """How many classes receive at least ``min_share`` of the uniform share 1/K of samples."""
    # #{k : h_k ≥ min_share / K}
    return int((class_histogram(pred, num_classes) >= min_share / num_classes).sum())


def class_kl(gen_hist: Tensor, data_hist: Tensor, eps: float = 1e-6) -> float:
    """KL(gen ‖ data) of two class histograms; 0 when they match, large when gen drops modes."""
    # KL(p ‖ q) = Σ_k p_k log(p_k / q_k), p and q normalised, 0·log 0 = 0: exact where data has
    # mass; where it has none q_k is taken as ε, so the KL stays finite. (ε added to every q_k
    # would bias it by about −log(1 + Kε): −0.001 to uniform over Stacked MNIST's 1000 modes, 3%
    # of issue 18's target.) Clamped at 0 against rounding.
    p = gen_hist.double() / gen_hist.double().sum()
    q = data_hist.double() / data_hist.double().sum()
    q = torch.where(q > 0, q, torch.full_like(q, eps))
    return max(0.0, float((torch.xlogy(p, p) - torch.xlogy(p, q)).sum()))


def mean_confidence(probs: Tensor) -> float:
    """Mean over samples of the judge's top class probability."""
    # E_x max_y p(y|x)
    return float(probs.double().max(1).values.mean())


def _kth_neighbour_distance(feats: Tensor, k: int, chunk: int) -> Tensor:
    """Distance (N,) of each row to its k-th nearest other row."""
    radii = []
    for start in range(0, len(feats), chunk):
        d = torch.cdist(feats[start : start + chunk], feats)
        radii.append(d.kthvalue(k + 1, dim=1).values)  # the smallest, 0, is the point itself
    return torch.cat(radii)


def _inside_any_ball(query: Tensor, centres: Tensor, radii: Tensor, chunk: int) -> Tensor:
    """Whether each query row lies within radii[j] of some centre j (bool (M,))."""
    inside = []
    for start in range(0, len(query), chunk):
        d = torch.cdist(query[start : start + chunk], centres)
        inside.append((d <= radii[None, :]).any(1))
    return torch.cat(inside)


def precision_recall(
    real_feats: Tensor, fake_feats: Tensor, k: int = 3, chunk: int = 1024
) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019) of fakes against reals."""
    # The manifold of a set is the union of balls around its points, each of radius the distance
    # to the point's k-th nearest neighbour in the set.
    #   precision = share of fakes inside the real manifold (quality),
    #   recall    = share of reals inside the fake manifold (diversity).
    # Both depend on the set sizes: compare runs at equal sizes.
    real, fake = real_feats.float(), fake_feats.float()
    if not (k < len(real) and k < len(fake)):
        raise ValueError(f"k = {k} needs more than k samples per set: {len(real)}, {len(fake)}")
    real_radii = _kth_neighbour_distance(real, k, chunk)
    fake_radii = _kth_neighbour_distance(fake, k, chunk)
    precision = _inside_any_ball(fake, real, real_radii, chunk).double().mean()
    recall = _inside_any_ball(real, fake, fake_radii, chunk).double().mean()
    return float(precision), float(recall)


def mode_spread(mode: Tensor, num_modes: int) -> float:
    """How evenly samples spread over the modes, as a share of what N independent draws from
    the data would show: ≈ 1 for a faithful sampler, → 1/K as it collapses onto one mode."""
    # The effective number of modes exp(H(h)), h the histogram of the samples' modes, over the
    # modes that N uniform draws hit on average, K·(1 − (1 − 1/K)^N) (fewer than K when N is
    # not much larger than K: 865 of 1000 for N = 2000). Quality plays no part, so a blurry
    # early generator that spreads its mass is not taken for a collapsed one.
    h = class_histogram(mode, num_modes)
    entropy = -float(torch.xlogy(h, h).sum())
    hit = num_modes * (1.0 - (1.0 - 1.0 / num_modes) ** max(1, mode.numel()))
    return min(1.0, math.exp(entropy) / hit)


def mixture_metrics(
    points: Tensor, centres: Tensor, sigma: float, min_share: float = 0.2
) -> dict[str, float]:
    """modes covered, share of high-quality samples, and KL(modes ‖ uniform) of 2D points."""
    # A sample is high quality when within 3σ of its nearest centre. A mode is covered when it
    # gets at least min_share · N/K of the high-quality samples (PacGAN: 20 of 2500 samples on 25
    # modes). mode_kl = KL(h ‖ uniform), h the share of samples nearest each centre.
    pts = torch.as_tensor(points).double()
    d = torch.cdist(pts, centres.double())
    nearest, mode = d.min(1)
    high_quality = nearest <= 3 * sigma
    k = len(centres)
    counts = torch.bincount(mode[high_quality], minlength=k)
    covered = counts >= max(1.0, min_share * len(pts) / k)
    uniform = torch.full((k,), 1.0 / k, dtype=torch.float64)
    return {
        "modes": float(covered.sum()),
        "high_quality": float(high_quality.double().mean()),
        "mode_kl": class_kl(class_histogram(mode, k), uniform),
        "mode_spread": mode_spread(mode, k),
    }


def published_mixture_metrics(points: Tensor, centres: Tensor, sigma: float) -> dict[str, float]:
    """PacGAN's protocol (Lin et al. 2018, Table 1) on 2D points: modes covered, share of
    high-quality samples, and the reverse KL of the high-quality samples' modes to uniform."""
    # High quality: within 3σ of the nearest centre. A mode is covered when at least one
    # high-quality sample is nearest to it (``mixture_metrics`` asks for a share instead).
    # reverse_kl = KL(h ‖ uniform) = Σ_k h_k log(K h_k), h the histogram over modes of the
    # high-quality samples only (0 when they spread evenly, log K when all fall on one mode).
    pts = torch.as_tensor(points).double()
    nearest, mode = torch.cdist(pts, centres.double()).min(1)
    high_quality = nearest <= 3 * sigma
    k = len(centres)
    counts = torch.bincount(mode[high_quality], minlength=k)
    uniform = torch.full((k,), 1.0 / k, dtype=torch.float64)
    hq = int(high_quality.sum())
    return {
        "modes": float((counts > 0).sum()),
        "high_quality": float(high_quality.double().mean()),
        "reverse_kl": class_kl(class_histogram(mode[high_quality], k), uniform) if hq else math.inf,
    }


def grid25_metrics(points: Tensor) -> dict[str, float]:
    """mixture_metrics for the 25-Gaussian grid ({−4, −2, 0, 2, 4}², σ = 0.05)."""
    return mixture_metrics(points, GRID25_CENTRES, GRID25_SIGMA)


def ring8_metrics(points: Tensor) -> dict[str, float]:
    """mixture_metrics for the 8-Gaussian ring (radius 2, σ = 0.02)."""
    return mixture_metrics(points, RING8_CENTRES, RING8_SIGMA)


def _as_images(images: Tensor | np.ndarray) -> Tensor:
    """uint8 (N, C, 28, 28) from a tensor or array, adding C = 1 to (N, 28, 28)."""
    x = torch.as_tensor(images)
    if x.dtype != torch.uint8:
        raise ValueError(f"expected uint8 images, got {x.dtype}")
    return x.unsqueeze(1) if x.ndim == 3 else x


def stacked_mnist_modes(images: Tensor | np.ndarray, judge: Judge) -> Tensor:
    """The mode (0..999) of each Stacked MNIST image (N, 3, 28, 28), as the judge reads it."""
    # Each channel is classified by the MNIST judge: mode = 100·a + 10·b + c.
    x = _as_images(images)
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"expected (N, 3, 28, 28) images, got {tuple(x.shape)}")
    digits = [judge.embed(x[:, c : c + 1])[1].argmax(1) for c in range(3)]
    return 100 * digits[0] + 10 * digits[1] + digits[2]


def stacked_mnist_metrics(images: Tensor | np.ndarray, judge: Judge) -> dict[str, float]:
    """Modes covered (of 1000) and KL(modes ‖ uniform) of Stacked MNIST images (N, 3, 28, 28),
    with the part of that KL that the digits' own frequencies account for (``digits_kl``)."""
    # A mode is covered when at least one sample lands in it (Metz et al. 2017, VEEGAN, PacGAN:
    # 26k samples).
    return stacked_mnist_mode_metrics(stacked_mnist_modes(images, judge))


def stacked_mnist_mode_metrics(mode: Tensor) -> dict[str, float]:
    """``stacked_mnist_metrics`` of modes already read (0..999)."""
    hist = class_histogram(mode, 1000)
    return {
        "modes": float((hist > 0).sum()),
        "kl": class_kl(hist, torch.full((1000,), 1e-3, dtype=torch.float64)),
        "digits_kl": digits_kl(mode),
        "mode_spread": mode_spread(mode, 1000),
    }


def digits_kl(mode: Tensor) -> float:
    """Σ over the three channels of KL(that channel's digit histogram ‖ uniform over 10), of
    Stacked MNIST modes 100·a + 10·b + c: the part of KL(modes ‖ uniform) that uneven digit
    frequencies account for."""
    # KL(p ‖ U₁₀₀₀) = log 1000 − H(a, b, c) and Σ_c KL(p_c ‖ U₁₀) = 3 log 10 − Σ_c H(p_c), so
    # KL(p ‖ U₁₀₀₀) = Σ_c KL(p_c ‖ U₁₀) + [Σ_c H(p_c) − H(a, b, c)]: the bracket (total
    # correlation, ≥ 0) is what the channels' dependence adds, finite-sample noise included
    # (≈ (1000 − 1 − 27)/2N of it for N independent uniform draws).
    uniform = torch.full((10,), 0.1, dtype=torch.float64)
    return sum(class_kl(class_histogram(d, 10), uniform) for d in mode_digits(mode))


def mode_digits(mode: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The three digits (a, b, c) of Stacked MNIST modes 100·a + 10·b + c, one per channel."""
    mode = mode.long()
    return mode // 100, mode // 10 % 10, mode % 10


@dataclass(frozen=True)
class ImageReference:
    """The real side of ``evaluate_images``, computed once by ``image_reference``."""

    features: Tensor  # judge features (M, F) of half B of the reals: what fakes are compared with
    baseline: Tensor  # judge features of the other half A, disjoint from B
    class_hist: Tensor  # class histogram (K,) of all the reals' labels


def image_reference(
    real: Tensor | np.ndarray, real_labels: Tensor, judge: Judge, num_classes: int, seed: int = 0
) -> ImageReference:
    """Judge features of uint8 reals (N, 1, 28, 28), split at random (``seed``) into disjoint
    halves A (baseline) and B (reference), and the histogram of their labels."""
    real_feats, _ = judge.embed(_as_images(real))
    perm = torch.randperm(len(real_feats), generator=torch.Generator().manual_seed(seed))
    half = len(perm) // 2
    return ImageReference(
        features=real_feats[perm[half:]],
        baseline=real_feats[perm[:half]],
        class_hist=class_histogram(real_labels, num_classes),
    )


def score_images(
    fake: Tensor | np.ndarray, reference: ImageReference, judge: Judge
) -> dict[str, float]:
    """The judge's metrics of uint8 fakes (N, 1, 28, 28) against a precomputed real reference.

    fid, precision and recall compare the fakes with half B of the reals; fid_baseline compares
    half A (at most as many as the fakes) with B: what a generator indistinguishable from the
    data scores with this many samples (FID is biased upwards for small sets, so compare fid with
    it rather than with 0). classifier_score is exp E KL(p(y|x) ‖ p(y)) (1 to K); coverage counts
    classes with ≥ 10% of the uniform share of the judge's predictions; class_kl is KL(predicted
    classes ‖ real labels); mean_confidence is the judge's mean top probability.
    """
    fake_feats, fake_probs = judge.embed(_as_images(fake))
    num_classes = len(reference.class_hist)
    baseline = reference.baseline[: len(fake_feats)]
    precision, recall = precision_recall(reference.features, fake_feats)
    pred = fake_probs.argmax(1)
    return {
        "fid": frechet_distance(fake_feats, reference.features),
        "fid_baseline": frechet_distance(baseline, reference.features),
        "classifier_score": classifier_score(fake_probs),
        "coverage": float(class_coverage(pred, num_classes)),
        "class_kl": class_kl(class_histogram(pred, num_classes), reference.class_hist),
        "precision": precision,
        "recall": recall,
        "mean_confidence": mean_confidence(fake_probs),
    }


def evaluate_images(
    fake: Tensor | np.ndarray,
    real: Tensor | np.ndarray,
    real_labels: Tensor,
    judge: Judge,
    num_classes: int,
    seed: int = 0,
) -> dict[str, float]:
    """``score_images`` of uint8 fakes against ``image_reference(real, real_labels, ...)``.

    Computes the real side afresh: to score many fake sets against the same reals, build the
    reference once and call ``score_images``.
    """
    return score_images(fake, image_reference(real, real_labels, judge, num_classes, seed), judge)
