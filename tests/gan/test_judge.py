import functools
from pathlib import Path

import pytest
import torch

import gan.judge
from gan.checkpoint import save_checkpoint
from gan.judge import Judge, JudgeError, judge_for, load_judge, save_judge, train_judge
from gan.metrics import class_coverage, classifier_score
from tests.conftest import mnist_pair

# A quick judge: 2000 digits, 300 steps. Measured held-out accuracy 0.945 (200 digits, seed 0);
# the full one (python -m bench.judge) reaches 0.984 on the 10k split.
SMALL_N, SMALL_STEPS, SMALL_ACCURACY = 2000, 300, 0.90


@functools.cache
def small_judge(mnist_dir: Path) -> tuple[Judge, float]:
    """Trained once per test session (tests/gan/test_metrics.py uses it too); do not modify."""
    images, labels = mnist_pair(mnist_dir)
    return train_judge(images[:SMALL_N], labels[:SMALL_N], steps=SMALL_STEPS, batch_size=64, seed=0)


@pytest.fixture(scope="module")
def mnist(mnist_dir):
    return mnist_pair(mnist_dir)


def test_shapes():
    judge = Judge()
    x = torch.rand(5, 1, 28, 28) * 2 - 1
    assert judge.features(x).shape == (5, judge.feature_dim) == (5, 128)
    assert judge(x).shape == (5, 10)
    feats, probs = judge.embed(torch.zeros(7, 1, 28, 28, dtype=torch.uint8), batch_size=3)
    assert feats.shape == (7, 128) and probs.shape == (7, 10)
    torch.testing.assert_close(probs.sum(1), torch.ones(7))


def test_trained_judge_labels_held_out_digits(mnist_dir):
    judge, accuracy = small_judge(mnist_dir)
    assert accuracy >= SMALL_ACCURACY
    assert judge.accuracy == accuracy
    assert not judge.training


def test_judge_labels_unseen_digits_and_lumps_noise_together(mnist_dir, mnist):
    judge, _ = small_judge(mnist_dir)
    images, labels = mnist
    unseen, unseen_labels = images[SMALL_N : SMALL_N + 2000], labels[SMALL_N : SMALL_N + 2000]
    _, probs = judge.embed(unseen)
    assert (probs.argmax(1) == unseen_labels).float().mean() >= SMALL_ACCURACY
    assert classifier_score(probs) > 8  # confident and spread over the 10 digits
    # Like any classifier it is confident on noise (0.98 here), but it puts it all in one or two
    # classes, so the classifier score and coverage expose noise where confidence does not.
    noise = torch.randint(0, 256, (2000, 1, 28, 28), generator=torch.Generator().manual_seed(0))
    _, noise_probs = judge.embed(noise.to(torch.uint8))
    assert classifier_score(noise_probs) < 2
    assert class_coverage(noise_probs.argmax(1), 10) <= 3


def test_training_is_deterministic(mnist):
    images, labels = mnist[0][:300], mnist[1][:300]
    a, acc_a = train_judge(images, labels, steps=10, batch_size=16, seed=3)
    b, acc_b = train_judge(images, labels, steps=10, batch_size=16, seed=3)
    c, _ = train_judge(images, labels, steps=10, batch_size=16, seed=4)
    assert acc_a == acc_b
    for key, value in a.state_dict().items():
        torch.testing.assert_close(value, b.state_dict()[key], rtol=0, atol=0)
    assert not torch.equal(a.fc2.weight, c.fc2.weight)


def test_train_judge_rejects_bad_input():
    with pytest.raises(ValueError, match="uint8"):
        train_judge(torch.zeros(100, 1, 28, 28), torch.zeros(100, dtype=torch.long), steps=1)
    with pytest.raises(ValueError, match="labels"):
        train_judge(
            torch.zeros(100, 1, 28, 28, dtype=torch.uint8), torch.zeros(99, dtype=torch.long)
        )


def test_save_load_round_trip(tmp_path, mnist_dir, mnist):
    judge, accuracy = small_judge(mnist_dir)
    judge.dataset = "mnist"
    path = tmp_path / "sub" / "judge.pt"
    save_judge(judge, path)
    loaded = load_judge(path)
    assert loaded.dataset == "mnist" and loaded.accuracy == accuracy and not loaded.training
    x = gan.data.to_unit_range(mnist[0][:64])
    torch.testing.assert_close(loaded(x), judge(x), rtol=0, atol=0)
    state = torch.load(path, weights_only=True)
    assert state["format"] == "gan-judge" and state["format_version"] == 1
    assert [p.name for p in path.parent.iterdir()] == ["judge.pt"]  # no temporary left behind


def test_load_rejects_foreign_files(tmp_path):
    (tmp_path / "garbage.pt").write_bytes(b"not a judge")
    with pytest.raises(JudgeError, match="not a readable gan-judge file"):
        load_judge(tmp_path / "garbage.pt")
    save_checkpoint({"step": 1}, tmp_path / "ckpt.pt")
    with pytest.raises(JudgeError, match="not a gan-judge file"):
        load_judge(tmp_path / "ckpt.pt")


def test_judge_for_trains_once_then_loads_the_cache(tmp_path, mnist_dir, monkeypatch):
    monkeypatch.setattr(gan.judge, "JUDGE_STEPS", 5)
    calls = []
    real_train = gan.judge.train_judge

    def counting_train(*args, **kwargs):
        calls.append(kwargs["steps"])
        return real_train(*args, **kwargs)

    monkeypatch.setattr(gan.judge, "train_judge", counting_train)
    first = judge_for("mnist", mnist_dir, tmp_path)  # mnist_dir is read-only
    assert calls == [5] and (tmp_path / "judge-mnist.pt").is_file()
    assert first.dataset == "mnist" and first.num_classes == 10
    second = judge_for("stacked-mnist", mnist_dir, tmp_path)  # scored with MNIST's judge
    assert calls == [5]
    for key, value in first.state_dict().items():
        torch.testing.assert_close(value, second.state_dict()[key], rtol=0, atol=0)
    with pytest.raises(JudgeError, match="no judge for dataset 'grid25'"):
        judge_for("grid25", mnist_dir, tmp_path)


def test_judge_for_replaces_a_corrupt_cache(tmp_path, mnist_dir, monkeypatch):
    monkeypatch.setattr(gan.judge, "JUDGE_STEPS", 5)
    (tmp_path / "judge-mnist.pt").write_bytes(b"truncated")
    judge = judge_for("mnist", mnist_dir, tmp_path)
    assert load_judge(tmp_path / "judge-mnist.pt").accuracy == judge.accuracy
