import math

import pytest
import torch
from torch.testing import assert_close

from gan.data import GRID25_CENTRES, RING8_CENTRES
from gan.metrics import (
    class_coverage,
    class_histogram,
    class_kl,
    classifier_score,
    digits_kl,
    evaluate_images,
    frechet_distance,
    grid25_metrics,
    image_reference,
    mean_confidence,
    precision_recall,
    ring8_metrics,
    score_images,
    stacked_mnist_metrics,
)
from tests.conftest import mnist_pair
from tests.gan.test_judge import SMALL_ACCURACY, SMALL_N, small_judge


def exact_moments(n: int, d: int, seed: int) -> torch.Tensor:
    """n samples in d dimensions whose sample mean is exactly 0 and sample covariance exactly I."""
    z = torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    z = z - z.mean(0)
    chol = torch.linalg.cholesky(torch.cov(z.T))
    return z @ torch.linalg.inv(chol).T


def test_frechet_distance_of_diagonal_gaussians():
    # Commuting (diagonal) covariances: d² = ‖Δμ‖² + Σ_i (σa_i − σb_i)².
    mu_a, mu_b = torch.tensor([0.0, 1.0, -2.0]), torch.tensor([0.5, 1.0, 0.0])
    sd_a, sd_b = torch.tensor([1.0, 2.0, 0.5]), torch.tensor([3.0, 2.0, 0.1])
    a = mu_a + exact_moments(500, 3, 0) * sd_a
    b = mu_b + exact_moments(700, 3, 1) * sd_b
    expected = (0.25 + 0 + 4) + (4 + 0 + 0.16)
    assert_close(frechet_distance(a, b), expected, rtol=1e-9, atol=1e-9)
    assert_close(frechet_distance(b, a), expected, rtol=1e-9, atol=1e-9)


def test_frechet_distance_of_non_commuting_gaussians():
    # For 2×2 PSD M, tr √M = √(tr M + 2√det M); with M ~ ΣaΣb: tr (ΣaΣb)^{1/2} =
    # √(tr(ΣaΣb) + 2√(det Σa det Σb)).
    A = torch.tensor([[2.0, 0.0], [1.0, 0.5]], dtype=torch.float64)
    B = torch.tensor([[0.3, -1.0], [0.0, 1.5]], dtype=torch.float64)
    cov_a, cov_b = A @ A.T, B @ B.T
    assert not torch.allclose(cov_a @ cov_b, cov_b @ cov_a)
    a = exact_moments(400, 2, 2) @ A.T
    b = exact_moments(400, 2, 3) @ B.T + torch.tensor([1.0, -1.0], dtype=torch.float64)
    tr_sqrt = math.sqrt(
        float((cov_a @ cov_b).trace()) + 2 * math.sqrt(float(cov_a.det() * cov_b.det()))
    )
    expected = 2.0 + float(cov_a.trace() + cov_b.trace()) - 2 * tr_sqrt
    assert_close(frechet_distance(a, b), expected, rtol=1e-9, atol=1e-9)


def test_frechet_distance_of_identical_sets_is_zero():
    x = torch.randn(300, 64, generator=torch.Generator().manual_seed(0))
    assert frechet_distance(x, x.clone()) == pytest.approx(0.0, abs=1e-6)
    # Fewer samples than dimensions: singular covariances still give a finite, non-negative value.
    assert frechet_distance(x[:20], x[20:40]) > 0


def test_classifier_score():
    one_class = torch.zeros(50, 10)
    one_class[:, 3] = 1.0
    assert_close(classifier_score(one_class), 1.0)
    assert_close(classifier_score(torch.full((40, 10), 0.1)), 1.0)  # all unsure: also 1
    confident = torch.eye(10).repeat(7, 1)  # each class confidently, 7 times
    assert_close(classifier_score(confident), 10.0)
    # Hand-computed: p(y) = (0.75, 0.25); KL_1 = log(1/0.75); KL_2 = ½log(0.5/0.75) + ½log(2).
    probs = torch.tensor([[1.0, 0.0], [0.5, 0.5]])
    kl1, kl2 = math.log(1 / 0.75), 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(2)
    assert_close(classifier_score(probs), math.exp((kl1 + kl2) / 2))


def test_class_histogram_and_coverage():
    pred = torch.tensor([0] * 50 + [1] * 45 + [2] * 5)
    assert_close(
        class_histogram(pred, 4), torch.tensor([0.5, 0.45, 0.05, 0.0], dtype=torch.float64)
    )
    assert class_coverage(pred, 4) == 3  # shares ≥ 0.1 · 1/4 = 0.025
    assert class_coverage(pred, 4, min_share=0.5) == 2  # shares ≥ 0.125
    assert class_coverage(torch.arange(10).repeat(3), 10) == 10


def test_class_kl():
    uniform = torch.full((4,), 0.25)
    assert class_kl(uniform, uniform) == pytest.approx(0.0, abs=1e-12)
    p, q = torch.tensor([0.5, 0.5]), torch.tensor([0.25, 0.75])
    expected = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    assert class_kl(p, q) == pytest.approx(expected, abs=1e-5)
    # Dropping half the modes: KL(gen ‖ uniform) = log 2; an empty data class stays finite.
    assert class_kl(torch.tensor([0.5, 0.5, 0.0, 0.0]), uniform) == pytest.approx(
        math.log(2), abs=1e-5
    )
    assert math.isfinite(class_kl(uniform, torch.tensor([1.0, 0.0, 0.0, 0.0])))
    # Exact where the data has mass, however many classes: one mode of Stacked MNIST's 1000.
    one = torch.zeros(1000, dtype=torch.float64)
    one[7] = 1.0
    assert_close(class_kl(one, torch.full((1000,), 1e-3)), math.log(1000), rtol=0, atol=1e-9)


def test_digits_kl_is_the_share_of_the_stacked_kl_that_digit_frequencies_explain():
    uniform = torch.full((1000,), 1e-3, dtype=torch.float64)
    # Every mode once: no digit is favoured, and nothing is left to the channels' dependence.
    every = torch.arange(1000)
    assert_close(digits_kl(every), 0.0, rtol=0, atol=1e-12)
    # Only modes whose first digit is 0 or 1, evenly: the whole KL, log 5, is the first digit's.
    low = torch.arange(200)
    assert_close(digits_kl(low), math.log(5), rtol=0, atol=1e-12)
    assert_close(class_kl(class_histogram(low, 1000), uniform), math.log(5), rtol=0, atol=1e-12)
    # Only triples of one repeated digit (000, 111, ..., 999): every digit evenly, so all of
    # KL = log 100 is the channels' dependence and none the digits'.
    same = torch.arange(10) * 111
    assert_close(digits_kl(same), 0.0, rtol=0, atol=1e-12)
    assert_close(class_kl(class_histogram(same, 1000), uniform), math.log(100), rtol=0, atol=1e-12)
    # One mode: each channel's KL is log 10, and so is their sum's share of KL = log 1000.
    assert_close(digits_kl(torch.full((50,), 427)), 3 * math.log(10), rtol=0, atol=1e-12)


def test_mean_confidence():
    probs = torch.tensor([[0.9, 0.1], [0.3, 0.7], [0.5, 0.5]])
    assert_close(mean_confidence(probs), (0.9 + 0.7 + 0.5) / 3)


def test_precision_recall_by_hand():
    # k = 1: every real's radius is 1; the two fakes' radii are both 9.5.
    real = torch.tensor([[0.0], [1.0], [2.0], [3.0]])
    fake = torch.tensor([[0.5], [10.0]])
    assert precision_recall(real, fake, k=1) == (0.5, 1.0)  # 10 is outside every real ball
    assert precision_recall(fake, real, k=1) == (1.0, 0.5)


def test_precision_recall_identical_and_far_apart():
    x = torch.randn(500, 16, generator=torch.Generator().manual_seed(0))
    assert precision_recall(x, x.clone()) == (1.0, 1.0)
    assert precision_recall(x, x + 100.0) == (0.0, 0.0)
    # Chunking does not change the answer.
    y = torch.randn(300, 16, generator=torch.Generator().manual_seed(1)) * 1.5
    assert precision_recall(x, y, chunk=7) == precision_recall(x, y)
    with pytest.raises(ValueError, match="more than k samples"):
        precision_recall(x[:3], y)


def mixture_sample(centres, sigma, n, modes=None, seed=0):
    modes = torch.arange(len(centres)) if modes is None else torch.tensor(modes)
    g = torch.Generator().manual_seed(seed)
    which = modes[torch.arange(n) % len(modes)]
    return centres[which] + sigma * torch.randn(n, 2, generator=g)


def test_grid25_metrics():
    # A 2D Gaussian sample lies within 3σ of its mean with probability 1 − e^{−9/2} ≈ 0.989.
    true = grid25_metrics(mixture_sample(GRID25_CENTRES, 0.05, 2500))
    assert true["modes"] == 25
    assert true["high_quality"] == pytest.approx(1 - math.exp(-4.5), abs=0.01)
    assert true["mode_kl"] < 1e-4
    collapsed = grid25_metrics(GRID25_CENTRES[7].repeat(2500, 1))
    expected = {"modes": 1, "high_quality": 1.0, "mode_kl": math.log(25), "mode_spread": 1 / 25}
    assert collapsed == pytest.approx(expected, abs=1e-9)
    assert true["mode_spread"] > 0.95
    half = grid25_metrics(mixture_sample(GRID25_CENTRES, 0.05, 2500, modes=list(range(0, 25, 2))))
    assert half["modes"] == 13
    # Uniform noise over [−5, 5]²: the 3σ discs cover 25·π·0.15² / 100 ≈ 1.8% of the square.
    g = torch.Generator().manual_seed(0)
    noise = grid25_metrics(torch.rand(10000, 2, generator=g) * 10 - 5)
    assert noise["high_quality"] == pytest.approx(25 * math.pi * 0.15**2 / 100, abs=0.01)


def test_ring8_metrics():
    true = ring8_metrics(mixture_sample(RING8_CENTRES, 0.02, 800))
    assert true["modes"] == 8
    assert true["high_quality"] > 0.97
    assert_close(RING8_CENTRES.norm(dim=1), torch.full((8,), 2.0, dtype=torch.float64))
    collapsed = ring8_metrics(mixture_sample(RING8_CENTRES, 0.0, 800, modes=[3]))
    expected = {"modes": 1, "high_quality": 1.0, "mode_kl": math.log(8), "mode_spread": 1 / 8}
    assert collapsed == pytest.approx(expected, abs=1e-4)
    # Points on the circle between the centres are low quality.
    angles = (torch.arange(8) + 0.5) * 2 * math.pi / 8
    between = 2 * torch.stack([angles.cos(), angles.sin()], 1).repeat(10, 1)
    assert ring8_metrics(between)["high_quality"] == 0.0


@pytest.fixture(scope="module")
def judge(mnist_dir):
    return small_judge(mnist_dir)[0]


@pytest.fixture(scope="module")
def mnist(mnist_dir):
    return mnist_pair(mnist_dir)


def test_stacked_mnist_metrics_count_distinct_triples(judge, mnist):
    # Digits the judge has not seen and labels correctly, stacked into 37 distinct triples
    # (including permutations of one another), each 4 times from different images.
    images, labels = mnist[0][SMALL_N:], mnist[1][SMALL_N:]
    _, probs = judge.embed(images)
    ok = probs.argmax(1) == labels
    by_digit = [images[ok & (labels == d)] for d in range(10)]
    g = torch.Generator().manual_seed(0)
    triples = [*torch.randperm(1000, generator=g)[:35].tolist(), 123, 321]
    triples = sorted(set(triples))
    stacked, used = [], [0] * 10
    for mode in triples:
        for _ in range(4):
            channels = []
            for d in (mode // 100, mode // 10 % 10, mode % 10):
                channels.append(by_digit[d][used[d]])
                used[d] += 1
            stacked.append(torch.cat(channels))
    x = torch.stack(stacked)
    assert x.shape == (4 * len(triples), 3, 28, 28)
    metrics = stacked_mnist_metrics(x, judge)
    assert metrics["modes"] == len(triples)
    # KL(uniform on m modes ‖ uniform on 1000) = log(1000 / m)
    assert metrics["kl"] == pytest.approx(math.log(1000 / len(triples)), abs=1e-3)
    # 37 modes, evenly: exp(H) = 37 of the 1000·(1 − 0.999^148) ≈ 138 modes 148 draws hit
    assert metrics["mode_spread"] == pytest.approx(37 / (1000 * (1 - 0.999**148)), rel=1e-6)
    one = stacked_mnist_metrics(x[:4], judge)
    assert one["modes"] == 1 and one["kl"] == pytest.approx(math.log(1000), abs=1e-3)


def test_evaluate_images_tells_real_from_noise_and_collapse(judge, mnist):
    # Random subsets of the digits the judge was not trained on (the 10k split's first half is
    # written more neatly than its second: contiguous slices differ, FID ≈ 30 between them).
    unseen = SMALL_N + torch.randperm(10000 - SMALL_N, generator=torch.Generator().manual_seed(0))
    real, real_labels = mnist[0][unseen[:3000]], mnist[1][unseen[:3000]]
    good = mnist[0][unseen[3000:4000]]  # a perfect generator
    noise = torch.randint(0, 256, good.shape, generator=torch.Generator().manual_seed(0))
    collapsed = good[:1].expand(len(good), -1, -1, -1)

    perfect = evaluate_images(good, real, real_labels, judge, num_classes=10)
    assert set(perfect) == {
        "fid", "fid_baseline", "classifier_score", "coverage", "class_kl",
        "precision", "recall", "mean_confidence",
    }  # fmt: skip
    assert all(isinstance(v, float) for v in perfect.values())
    assert perfect["fid_baseline"] > 0
    assert perfect["fid"] < 2 * perfect["fid_baseline"]
    assert perfect["coverage"] == 10 and perfect["class_kl"] < 0.05
    assert perfect["classifier_score"] > 8 and perfect["mean_confidence"] > SMALL_ACCURACY
    assert perfect["precision"] > 0.7 and perfect["recall"] > 0.7

    bad = evaluate_images(noise.to(torch.uint8), real, real_labels, judge, num_classes=10)
    assert bad["fid_baseline"] == perfect["fid_baseline"]
    assert bad["fid"] > 20 * perfect["fid"]
    assert bad["precision"] < 0.3 and bad["recall"] < 0.05
    assert bad["classifier_score"] < 0.5 * perfect["classifier_score"]
    assert bad["coverage"] <= 3  # (the judge is confident on noise: it lumps it into one class)

    mode = evaluate_images(collapsed, real, real_labels, judge, num_classes=10)
    assert mode["coverage"] == 1 and mode["class_kl"] > 2.0  # ≈ log 10
    assert_close(mode["classifier_score"], 1.0)
    assert mode["recall"] < 0.01 and mode["fid"] > 20 * perfect["fid"]
    # (N, 28, 28) arrays, as gan.sample.generate returns them, are accepted too.
    assert evaluate_images(good.squeeze(1).numpy(), real, real_labels, judge, 10) == perfect


def test_image_reference_is_computed_once_and_reused(judge, mnist):
    real, labels = mnist[0][SMALL_N : SMALL_N + 301], mnist[1][SMALL_N : SMALL_N + 301]
    reference = image_reference(real, labels, judge, num_classes=10, seed=1)
    # Disjoint halves that together hold every real's features exactly once.
    feats, _ = judge.embed(real)
    assert len(reference.baseline) == 150 and len(reference.features) == 151
    halves = torch.cat([reference.baseline, reference.features])
    rows = torch.cdist(halves, feats).argmin(1)
    assert sorted(rows.tolist()) == list(range(301))
    assert_close(reference.class_hist.sum().item(), 1.0)
    assert_close(reference.class_hist[3].item(), (labels == 3).sum().item() / 301)
    # Scoring against the stored reference is scoring against the reals.
    fake = mnist[0][SMALL_N + 301 : SMALL_N + 401]
    expected = evaluate_images(fake, real, labels, judge, num_classes=10, seed=1)
    assert score_images(fake, reference, judge) == expected


def test_published_mixture_metrics_count_one_sample_as_a_mode():
    from gan.metrics import published_mixture_metrics

    true = published_mixture_metrics(
        mixture_sample(GRID25_CENTRES, 0.05, 2500), GRID25_CENTRES, 0.05
    )
    assert true["modes"] == 25 and true["reverse_kl"] < 0.01
    assert true["high_quality"] == pytest.approx(1 - math.exp(-4.5), abs=0.01)
    # one high-quality sample covers a mode (mixture_metrics wants 20 of 2500)
    points = torch.cat([GRID25_CENTRES[:1].repeat(2499, 1), GRID25_CENTRES[1:2]])
    m = published_mixture_metrics(points, GRID25_CENTRES, 0.05)
    assert m["modes"] == 2 and grid25_metrics(points)["modes"] == 1
    # the KL is of the high-quality samples only: far-off samples do not count
    half = torch.cat([mixture_sample(GRID25_CENTRES, 0.0, 1250), torch.full((1250, 2), 1.0)])
    m = published_mixture_metrics(half, GRID25_CENTRES, 0.05)
    assert m["high_quality"] == 0.5 and m["modes"] == 25 and m["reverse_kl"] < 1e-4
    collapsed = published_mixture_metrics(GRID25_CENTRES[3].repeat(100, 1), GRID25_CENTRES, 0.05)
    assert collapsed["reverse_kl"] == pytest.approx(math.log(25), abs=1e-4)
