import copy
import dataclasses
import math

import pytest
import torch
from torch import Tensor

import gan.judge
from gan.data import (
    GRID25_CENTRES,
    GRID25_SIGMA,
    RING8_CENTRES,
    RING8_SIGMA,
    Dataset,
    grid25,
    resize,
    ring8,
    stacked_mnist,
    to_unit_range,
)
from gan.evaluate import Evaluator, make_evaluator, mean_pairwise_distance, metric_kind
from gan.judge import save_judge
from gan.models import Generator
from tests.gan.test_judge import SMALL_N, small_judge

IMAGE_METRICS = {
    "fid", "fid_baseline", "classifier_score", "coverage", "class_kl", "precision", "recall",
    "mean_confidence", "diversity",
}  # fmt: skip


class Replay(Generator):
    """Returns rows of ``bank`` (B, *shape), row ⌊Φ(z₀)·B⌋ (uniform over the bank), plus σ·z₁…
    for points. Conditional (``bank`` (K, M, *shape)): row ⌊Φ(z₀)·M⌋ of class y's bank.
    Records its train/eval mode, the latents and the labels of every call."""

    bank: Tensor

    def __init__(self, bank: Tensor, latent_dim: int = 8, num_classes: int = 0, sigma: float = 0):
        shape = tuple(bank.shape[2:] if num_classes else bank.shape[1:])
        super().__init__(latent_dim, shape, num_classes)
        self.register_buffer("bank", bank)
        self.sigma = sigma
        self.calls: list[tuple[bool, Tensor, Tensor | None]] = []

    def forward(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        self.calls.append((self.training, z.clone(), None if labels is None else labels.clone()))
        rows = self.bank.shape[1] if self.num_classes else self.bank.shape[0]
        idx = (torch.special.ndtr(z[:, 0]) * rows).long().clamp(max=rows - 1)
        x = self.bank[labels, idx] if self.num_classes else self.bank[idx]
        if self.sigma:
            x = x + self.sigma * z[:, 1 : 1 + x.shape[1]]
        return x


@pytest.fixture(scope="module")
def judge(mnist_dir):
    return small_judge(mnist_dir)[0]


@pytest.fixture(scope="module")
def unseen(mnist):
    """Digits (in [−1, 1]) the small judge was not trained on."""
    return to_unit_range(mnist.data[SMALL_N:])


def test_mean_pairwise_distance_by_hand():
    # Distances 5, 4, 3 between (0, 0), (3, 4), (0, 4); images are flattened.
    points = torch.tensor([[0.0, 0.0], [3.0, 4.0], [0.0, 4.0]])
    assert mean_pairwise_distance(points) == pytest.approx(4.0)
    assert mean_pairwise_distance(points.view(3, 1, 1, 2)) == pytest.approx(4.0)
    assert mean_pairwise_distance(torch.ones(5, 1, 28, 28)) == 0.0


def test_real_digits_score_like_the_data_and_collapse_does_not(judge, mnist, unseen):
    evaluator = Evaluator(mnist, judge, samples=1000, seed=0)
    assert evaluator.key == "fid"
    good = evaluator(Replay(unseen))
    assert set(good) == IMAGE_METRICS and all(isinstance(v, float) for v in good.values())
    assert good["fid"] < 2 * good["fid_baseline"]
    assert good["coverage"] == 10 and good["class_kl"] < 0.05
    assert good["diversity"] == pytest.approx(1.0, abs=0.05)

    collapsed = evaluator(Replay(unseen[:1]))
    assert collapsed["diversity"] == 0.0
    assert collapsed["coverage"] == 1
    assert collapsed["fid"] > 20 * good["fid"]
    assert collapsed["fid_baseline"] == good["fid_baseline"]  # the real side does not change
    # Twice as far apart as the data: diversity 2 (up to the sampling of the 256 reals).
    doubled = evaluator(Replay(2 * unseen))
    assert doubled["diversity"] == pytest.approx(2 * good["diversity"], rel=0.05)


def test_latent_batch_is_fixed_batched_and_mode_restored():
    evaluator = Evaluator(ring8(), samples=2500, seed=7)
    G = Replay(RING8_CENTRES, latent_dim=5, sigma=RING8_SIGMA).train()
    first = evaluator(G)
    assert G.training and [training for training, _, _ in G.calls] == [False, False, False]
    assert [len(z) for _, z, _ in G.calls] == [1000, 1000, 500]  # batches of at most 1000
    z = torch.randn(2500, 5, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(torch.cat([z for _, z, _ in G.calls]), z, rtol=0, atol=0)
    assert evaluator(G) == first  # the same latents again
    assert evaluator(G.eval()) == first and not G.training
    other = Evaluator(ring8(), samples=2500, seed=8)(G)
    assert other != first


def test_conditional_generator_gets_balanced_labels(judge, mnist, unseen):
    labels = mnist.labels[SMALL_N:]
    per_class = min(int((labels == k).sum()) for k in range(10))
    bank = torch.stack([unseen[labels == k][:per_class] for k in range(10)])
    G = Replay(bank, num_classes=10)
    metrics = Evaluator(mnist, judge, samples=1000)(G)
    given = torch.cat([y for _, _, y in G.calls if y is not None])
    torch.testing.assert_close(given, torch.arange(1000) % 10, rtol=0, atol=0)
    assert metrics["coverage"] == 10 and metrics["class_kl"] < 0.05
    assert metrics["class_diversity"] == pytest.approx(1.0, abs=0.1)  # each class's real digits
    assert metrics["diversity"] == pytest.approx(1.0, abs=0.05)

    # One image per class, whatever z: the classes still differ, each class has no spread.
    one_each = Replay(bank[:, :1], num_classes=10)
    collapsed = Evaluator(mnist, judge, samples=1000)(one_each)
    assert collapsed["class_diversity"] == 0.0 and collapsed["diversity"] > 0.8


@pytest.mark.parametrize(
    ("dataset", "centres", "sigma"),
    [(ring8(), RING8_CENTRES, RING8_SIGMA), (grid25(), GRID25_CENTRES, GRID25_SIGMA)],
)
def test_mixture_samples_cover_every_mode(dataset, centres, sigma):
    evaluator = Evaluator(dataset, samples=2000)
    assert evaluator.key == "mode_kl"
    good = evaluator(Replay(centres, sigma=sigma))
    assert set(good) == {"modes", "high_quality", "mode_kl", "mode_spread", "diversity"}
    assert good["mode_spread"] > 0.95
    assert good["modes"] == len(centres) and good["high_quality"] > 0.97
    assert good["mode_kl"] < 0.02  # ≈ (K − 1) / 2N from counting 2000 samples
    assert good["diversity"] == pytest.approx(1.0, abs=0.1)
    halved = evaluator(Replay(centres / 2, sigma=sigma / 2))
    assert halved["diversity"] == pytest.approx(good["diversity"] / 2, rel=0.01)
    collapsed = evaluator(Replay(centres[3:4], sigma=sigma))
    assert collapsed["modes"] == 1
    assert collapsed["mode_kl"] == pytest.approx(math.log(len(centres)), abs=1e-3)
    assert collapsed["diversity"] < 0.05
    assert collapsed["mode_spread"] == pytest.approx(1 / len(centres))


def test_stacked_mnist_is_scored_by_modes_and_kl(judge, mnist):
    dataset = stacked_mnist(mnist.data, mnist.labels, n=3000)
    evaluator = Evaluator(dataset, judge, samples=1000)
    assert evaluator.key == "kl"
    bank = to_unit_range(dataset.data)
    good = evaluator(Replay(bank))
    assert set(good) == {"modes", "kl", "digits_kl", "mode_spread", "diversity"}
    assert good["mode_spread"] > 0.7  # the judge's errors and the bank's own draws
    # 1000 uniform draws from 1000 modes hit 1000·(1 − e^−1) ≈ 632 of them.
    assert 450 < good["modes"] < 700
    collapsed = evaluator(Replay(bank[:1]))
    assert collapsed["modes"] == 1 and collapsed["diversity"] == 0.0
    assert collapsed["kl"] == pytest.approx(math.log(1000), abs=1e-3)
    assert collapsed["mode_spread"] < 0.01
    assert good["kl"] < collapsed["kl"] - 2


def test_datasets_without_a_reference_get_only_diversity(mnist):
    g = torch.Generator().manual_seed(0)
    upload = Dataset(
        "ds-" + "0" * 32,
        torch.randint(0, 256, (300, 3, 32, 32), generator=g, dtype=torch.uint8),
        torch.zeros(300, dtype=torch.int64),
        1,
    )
    evaluator = Evaluator(upload, samples=300)
    assert evaluator.key is None
    noise = to_unit_range(torch.randint(0, 256, (300, 3, 32, 32), generator=g, dtype=torch.uint8))
    metrics = evaluator(Replay(noise))
    assert set(metrics) == {"diversity"}
    assert metrics["diversity"] == pytest.approx(1.0, abs=0.05)

    resized = Dataset("mnist", resize(mnist.data[:300], 32), mnist.labels[:300], 10)
    cifar_like = dataclasses.replace(upload, name="cifar10")
    for dataset in (resized, cifar_like):
        assert metric_kind(dataset) is None and Evaluator(dataset, samples=300).key is None
    kinds = {
        "mnist": "images", "fashion-mnist": "images", "kmnist": "images",
        "stacked-mnist": None,  # at 1x28x28 it is not Stacked MNIST
    }  # fmt: skip
    for name, kind in kinds.items():
        assert metric_kind(dataclasses.replace(mnist, name=name)) == kind


def test_bad_arguments_are_rejected(mnist):
    with pytest.raises(ValueError, match="scored by a judge"):
        Evaluator(mnist)
    with pytest.raises(ValueError, match="at least 10 samples"):
        Evaluator(ring8(), samples=5)
    same = Dataset("ds-" + "1" * 32, torch.zeros(20, 1, 8, 8, dtype=torch.uint8),
                   torch.zeros(20, dtype=torch.int64), 1)  # fmt: skip
    with pytest.raises(ValueError, match="all its samples are equal"):
        Evaluator(same)


def test_make_evaluator_loads_a_cached_judge(
    tmp_path, mnist_dir, mnist, judge, unseen, monkeypatch
):
    cached = copy.deepcopy(judge)
    cached.dataset = "mnist"
    save_judge(cached, tmp_path / "judges" / "judge-mnist.pt")

    def no_training(*args, **kwargs):
        raise AssertionError("the cached judge should have been loaded")

    monkeypatch.setattr(gan.judge, "train_judge", no_training)
    evaluator = make_evaluator(
        mnist, data_dir=mnist_dir, cache_dir=tmp_path / "judges", samples=500, seed=3
    )
    assert evaluator.key == "fid"
    G = Replay(unseen)
    assert evaluator(G) == Evaluator(mnist, judge, samples=500, seed=3)(G)
    # Datasets without a judge do not look for one.
    points = make_evaluator(grid25(), data_dir=mnist_dir, cache_dir=tmp_path / "none")
    assert points.key == "mode_kl" and not (tmp_path / "none").exists()
