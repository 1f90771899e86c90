import dataclasses
import itertools
import time

import numpy as np
import pytest
import torch
from torch.testing import assert_close

from gan.checkpoint import list_checkpoints, load_checkpoint, save_checkpoint
from gan.config import PRESETS, resolve
from gan.data import Dataset, grid25, load_dataset, stacked_mnist, to_uint8
from gan.interrupt import SLOW_STEP_S
from gan.models import build_models
from gan.sample import generate, load_generator
from gan.state import TrainState
from gan.steps import d_step, fake_batch
from gan.train import (
    EpochSampler,
    Progress,
    RealBatches,
    StoppedBeforeFirstStep,
    TrainingError,
    train,
)
from tests.conftest import first
from tests.quality import digit_statistics, looks_like_digits

# Small networks and data keep each run to a fraction of a second.
TINY = {"width": 8, "batch_size": 16, "log_every": 2, "checkpoint_every": 3}


def small(dataset: Dataset, n: int = 256) -> Dataset:
    return first(dataset, n)


def test_discriminator_step_does_not_reach_the_generator():
    """The bug of the widely copied code: D's loss backpropagated into G's graph."""
    cfg = resolve("classic", batch_size=4, device="cpu")
    s = TrainState.new(cfg, (1, 28, 28), 0, torch.device("cpu"))
    fake, _ = fake_batch(cfg, s, grad=True)  # carries G's graph, as the last D step's fake does
    d_step(cfg, s, 0, torch.rand(4, 1, 28, 28) * 2 - 1, None, fake, None)
    assert all(p.grad is None for p in s.G.parameters())
    assert all(p.grad is not None for p in s.D.parameters())


def test_epoch_sampler_covers_each_epoch_once_and_is_a_function_of_seed():
    sampler = EpochSampler(100, 10, seed=3, device=torch.device("cpu"))
    epoch = torch.cat([sampler.batch(k) for k in range(10)])
    assert sorted(epoch.tolist()) == list(range(100))
    again = EpochSampler(100, 10, seed=3, device=torch.device("cpu"))
    assert torch.equal(again.batch(13), sampler.batch(13))
    assert not torch.equal(sampler.batch(0), sampler.batch(10))  # a new permutation per epoch


def test_stacked_mnist_trains_on_fresh_triples_that_are_a_function_of_seed_and_batch(mnist):
    data = stacked_mnist(mnist.data, mnist.labels, n=1000)
    cfg = resolve("stable-conditional", dataset="stacked-mnist", batch_size=64, seed=1)
    s = TrainState.new(cfg, data.shape, data.num_classes, torch.device("cpu"))
    images, labels = RealBatches(cfg, data, s)(5)
    assert images.shape == (64, 3, 28, 28) and labels is not None
    again, _ = RealBatches(cfg, data, s)(5)
    assert_close(again, images, rtol=0, atol=0)  # what a resumed run draws for batch 5
    assert not torch.equal(RealBatches(cfg, data, s)(6)[0], images)
    assert not torch.equal(RealBatches(dataclasses.replace(cfg, seed=2), data, s)(5)[0], images)

    # Each channel is one of the digits, the label reads them, and the triples are fresh ones, not
    # the dataset's fixed sample of 1000 (one in 10¹² triples of 10,000 digits).
    index = {mnist.data[i, 0].numpy().tobytes(): i for i in range(len(mnist))}
    fixed = {row.numpy().tobytes() for row in data.data}
    for image, label in zip(to_uint8(images), labels, strict=True):
        digits = [int(mnist.labels[index[image[c].numpy().tobytes()]]) for c in range(3)]
        assert label == 100 * digits[0] + 10 * digits[1] + digits[2]
        assert image.numpy().tobytes() not in fixed


def weights(path):
    """Everything a run's future depends on, from its checkpoint."""
    return weights_of(load_checkpoint(path))


def weights_of(state):
    keys = ("generator", "generator_ema", "discriminator", "opt_g", "opt_d", "rng")
    return {key: state[key] for key in keys}


# Between them these configs select every technique of the trainer.
EXACT_CASES: dict[str, tuple[str, dict]] = {
    "classic": ("classic", {}),
    "stable": ("stable", {"augment": "translation"}),  # dcgan, SN, hinge, TTUR, EMA
    "stable-conditional": ("stable-conditional", {}),  # conditional BN in G + projection D
    "wgan-gp": ("wgan-gp", {"d_steps": 2, "reg_every": 2, "instance_noise": 0.1}),
    "wgan-clip": ("dcgan", {"loss": "wgan", "augment": "translation,cutout", "grad_clip": 1.0}),
    "acgan-lsgan": (
        "dcgan",
        {
            "conditional": "acgan",
            "loss": "lsgan",
            "label_smoothing": 0.1,
            "r1_gamma": 1.0,
            "r2_gamma": 0.5,
            "spectral_norm": "both",
            "ema_decay": 0.9,
        },
    ),
    "minimax-r1-lazy": ("classic", {"loss": "minimax", "r1_gamma": 10.0, "reg_every": 2}),
    "bf16": ("stable", {"precision": "bf16"}),
    "rpgan-r1-r2": ("stable", {"loss": "rpgan", "r1_gamma": 0.5, "r2_gamma": 0.5}),
    "pack": ("dcgan", {"pack": 2}),
    "minibatch-std": ("classic", {"minibatch_std": 4}),
    "stable-points": ("stable", {"dataset": "grid25"}),  # the point defaults of stable
    "stacked-mnist": ("classic", {"dataset": "stacked-mnist"}),  # fresh triples every batch
}


def case_data(dataset: str | None, mnist: Dataset) -> Dataset:
    if dataset == "grid25":
        return small(grid25())
    if dataset == "stacked-mnist":
        return small(stacked_mnist(mnist.data[:256], mnist.labels[:256], n=256))
    return small(mnist)


@pytest.mark.parametrize("case", list(EXACT_CASES))
def test_same_seed_same_weights_and_resume_is_exact(tmp_path, mnist, case):
    preset, overrides = EXACT_CASES[case]
    data = case_data(overrides.get("dataset"), mnist)
    cfg = resolve(preset, **{**TINY, **overrides, "max_steps": 6, "seed": 1})
    straight = train(cfg, data, tmp_path / "a")
    again = train(cfg, data, tmp_path / "b")
    assert_close(weights(straight.checkpoint), weights(again.checkpoint), rtol=0, atol=0)

    half = train(dataclasses.replace(cfg, max_steps=3), data, tmp_path / "c")
    assert half.step == 3
    resumed = train(cfg, data, tmp_path / "c")  # picks up the step-3 checkpoint
    assert resumed.step == 6
    assert_close(weights(resumed.checkpoint), weights(straight.checkpoint), rtol=0, atol=0)

    other = train(dataclasses.replace(cfg, seed=2), data, tmp_path / "d")
    g_other, g_straight = (
        weights(other.checkpoint)["generator"],
        weights(straight.checkpoint)["generator"],
    )
    first = next(iter(g_straight))
    assert not torch.equal(g_other[first], g_straight[first])


def test_a_corrupt_newest_checkpoint_resumes_exactly_from_the_previous_one(tmp_path, mnist):
    """Truncated step 6 and a damaged step 4: the run goes on from step 2, says so in a warning
    per file, moves them aside, and still ends with the weights of an uninterrupted run."""
    data = small(mnist)
    cfg = resolve("classic", **{**TINY, "max_steps": 8, "checkpoint_every": 2, "seed": 1,
                                "keep_checkpoints": 5, "eval_every": 0})  # fmt: skip
    straight = train(cfg, data, tmp_path / "a")
    train(dataclasses.replace(cfg, max_steps=6), data, tmp_path / "b")
    newest = tmp_path / "b" / "step-00000006.pt"
    newest.write_bytes(newest.read_bytes()[:1000])  # truncated
    damaged = load_checkpoint(tmp_path / "b" / "step-00000004.pt")
    torch.save({**damaged, "step": 5}, tmp_path / "b" / "step-00000004.pt")  # checksum mismatch

    reports: list[Progress] = []
    resumed = train(cfg, data, tmp_path / "b", progress=reports.append)
    assert resumed.step == 8
    assert_close(weights(resumed.checkpoint), weights(straight.checkpoint), rtol=0, atol=0)
    codes = [(w.code, w.step) for w in reports[-1].warnings]
    assert codes == [("checkpoint_corrupt", 6), ("checkpoint_corrupt", 4)]
    truncated, mismatched = reports[-1].warnings
    assert "step-00000006.pt is not a readable gan-checkpoint file" in truncated.message
    assert "moved aside as step-00000006.pt.corrupt" in truncated.message
    assert "went on from the checkpoint of step 2, repeating 4 steps" in truncated.message
    assert "do not match its checksum" in mismatched.message
    assert sorted(p.name for p in (tmp_path / "b").glob("*.corrupt")) == [
        "step-00000004.pt.corrupt", "step-00000006.pt.corrupt"
    ]  # fmt: skip
    # the warnings are part of the run's record from now on
    assert len(load_checkpoint(resumed.checkpoint)["monitor"]["warnings"]) == 2


def test_a_run_whose_every_checkpoint_is_corrupt_starts_over(tmp_path, mnist):
    cfg = resolve("classic", **{**TINY, "max_steps": 4, "checkpoint_every": 4, "eval_every": 0})
    train(dataclasses.replace(cfg, max_steps=4), small(mnist), tmp_path)
    (tmp_path / "step-00000004.pt").write_bytes(b"PK\x03\x04 and then nothing")
    reports: list[Progress] = []
    result = train(dataclasses.replace(cfg, max_steps=6), small(mnist), tmp_path,
                   progress=reports.append)  # fmt: skip
    assert result.step == 6
    [warning] = reports[-1].warnings
    assert warning.step == 4 and "went on from the start, repeating 4 steps" in warning.message


def test_a_checkpoint_of_another_network_layout_fails_with_a_reason(tmp_path, mnist):
    # An older version's projection D embedded the flattened 7x7 map (K, 2w·49): not resumable.
    cfg = resolve("stable-conditional", **TINY, max_steps=3)
    train(cfg, small(mnist), tmp_path)
    [(step, path)] = list_checkpoints(tmp_path)
    state = load_checkpoint(path)
    state["discriminator"]["embed.weight"] = torch.zeros(10, 16 * 49)
    save_checkpoint(state, path)
    with pytest.raises(TrainingError, match=r"different layout.*start a new job"):
        train(dataclasses.replace(cfg, max_steps=6), small(mnist), tmp_path)
    assert load_generator(path)[2] == step  # its generator still samples


def test_d_steps_update_the_discriminator_k_times_per_generator_step(tmp_path, mnist):
    cfg = resolve("wgan-gp", **{**TINY, "max_steps": 3, "d_steps": 4})
    state = load_checkpoint(train(cfg, small(mnist), tmp_path).checkpoint)
    d_counts = {int(s["step"]) for s in state["opt_d"]["state"].values()}
    g_counts = {int(s["step"]) for s in state["opt_g"]["state"].values()}
    assert (d_counts, g_counts) == ({12}, {3})


def test_wgan_clips_the_critic_weights(tmp_path, mnist):
    cfg = resolve("dcgan", **{**TINY, "max_steps": 3, "loss": "wgan", "clip_value": 0.005})
    state = load_checkpoint(train(cfg, small(mnist), tmp_path).checkpoint)
    assert max(t.abs().max().item() for t in state["discriminator"].values()) <= 0.005


def test_ema_generator_is_the_running_average(tmp_path, mnist):
    """With decay β and its warm-up min(β, (1+t)/(10+t)), one step from the initial weights
    gives ema = d·w0 + (1 − d)·w1, d = min(β, 2/11)."""
    cfg = resolve("stable", **{**TINY, "max_steps": 1, "ema_decay": 0.5, "augment": "none"})
    state = load_checkpoint(train(cfg, small(mnist), tmp_path).checkpoint)
    torch.manual_seed(cfg.seed)
    G0, _ = build_models(cfg, (1, 28, 28), 0)
    d = min(0.5, 2 / 11)
    name = next(k for k, v in state["generator"].items() if v.is_floating_point() and v.ndim == 2)
    w0, w1 = G0.state_dict()[name], state["generator"][name]
    assert_close(state["generator_ema"][name], d * w0 + (1 - d) * w1)
    assert not torch.equal(w0, w1)


def test_points_train_and_sample(tmp_path, mnist_dir):
    ring = load_dataset("ring8", mnist_dir)
    cfg = resolve("classic", **{**TINY, "dataset": "ring8", "max_steps": 5})
    result = train(cfg, ring, tmp_path)
    G, _, step = load_generator(result.checkpoint)
    points = generate(G, 32, seed=0)
    assert step == 5 and points.shape == (32, 2) and points.dtype == np.float32


def test_conditional_samples_follow_the_requested_labels(tmp_path, mnist):
    cfg = resolve("stable-conditional", **{**TINY, "max_steps": 2})
    G, _, _ = load_generator(train(cfg, small(mnist), tmp_path).checkpoint)
    assert G.num_classes == 10
    sevens = generate(G, 4, seed=0, labels=torch.full((4,), 7))
    threes = generate(G, 4, seed=0, labels=torch.full((4,), 3))
    assert sevens.shape == (4, 28, 28) and not np.array_equal(sevens, threes)


def test_incompatible_data_is_refused_with_a_reason(tmp_path, mnist):
    one_class = dataclasses.replace(small(mnist), num_classes=1)
    with pytest.raises(TrainingError, match="conditional"):
        train(resolve("stable-conditional", **TINY), one_class, tmp_path)
    with pytest.raises(TrainingError, match="larger than the dataset"):
        train(resolve("classic", batch_size=1000), small(mnist, 100), tmp_path)


def test_progress_should_stop_and_checkpoint_schedule(tmp_path, mnist):
    reports: list[Progress] = []
    cfg = resolve("classic", max_steps=100, log_every=10, checkpoint_every=25, keep_checkpoints=2)
    result = train(
        cfg,
        small(mnist, 512),
        tmp_path,
        progress=reports.append,
        should_stop=lambda: len(reports) >= 3,  # polled after every step: true after step 30
    )
    # Noticed after step 31, not at the next report; or inside step 31, which is then undone,
    # when the loaded machine made step 30 take SLOW_STEP_S (gan.interrupt)
    assert result.stopped and result.step in (30, 31)
    assert [r.step for r in reports] == [10, 20, 30, result.step]
    assert reports[2].checkpoint_step == 25 and all(r.total_steps == 100 for r in reports)
    assert reports[-1].checkpoint_step == result.step  # the stop's checkpoint is in the last report
    assert all(r.images_per_sec > 0 and np.isfinite(r.d_loss) for r in reports)
    assert all(np.isfinite(r.d_real) and np.isfinite(r.d_fake) for r in reports)
    # the stop wrote a checkpoint of its step; only the newest two are kept
    assert [s for s, _ in list_checkpoints(tmp_path)] == [25, result.step]
    assert load_checkpoint(result.checkpoint)["config"] == cfg.to_dict()


def test_non_finite_losses_fail_with_a_reason_and_save_nothing(tmp_path, mnist):
    data = small(mnist)
    first = train(resolve("classic", max_steps=5, log_every=5), data, tmp_path)
    state = load_checkpoint(first.checkpoint)
    for tensor in state["discriminator"].values():
        tensor.fill_(float("nan"))  # as if training had blown up
    save_checkpoint(state, first.checkpoint)

    no_rollbacks = resolve(
        "classic", max_steps=20, log_every=5, checkpoint_every=1, max_rollbacks=0
    )
    with pytest.raises(TrainingError, match=r"non-finite at step 6.*lower learning rates"):
        train(no_rollbacks, data, tmp_path)
    assert [step for step, _ in list_checkpoints(tmp_path)] == [5]  # nothing NaN was saved


def test_every_preset_trains_a_step(tmp_path, mnist):
    for name in PRESETS:
        result = train(resolve(name, **{**TINY, "max_steps": 1}), small(mnist), tmp_path / name)
        assert result.step == 1


def test_every_preset_trains_points_with_nothing_else_set(tmp_path, mnist_dir):
    """The architecture and the other point defaults follow the data (gan.config.data_kind)."""
    for dataset in ("grid25", "ring8"):
        data = load_dataset(dataset, mnist_dir)
        for name in PRESETS:
            cfg = resolve(name, dataset=dataset, max_steps=3)
            assert cfg.arch == "mlp"
            assert train(cfg, data, tmp_path / dataset / name).step == 3


def test_short_training_run_produces_digit_like_samples(tmp_path, mnist):
    real = mnist.data.squeeze(1).numpy().astype(float)
    cfg = resolve("classic", max_steps=1000, log_every=100, checkpoint_every=1000, seed=0)
    torch.manual_seed(cfg.seed)
    G_untrained, _ = build_models(cfg, (1, 28, 28), 0)
    untrained = generate(G_untrained.eval(), 256, seed=0)
    result = train(cfg, mnist, tmp_path)
    G, _, step = load_generator(result.checkpoint)
    trained = generate(G, 256, seed=0)
    assert step == 1000
    assert not looks_like_digits(untrained, real), digit_statistics(untrained, real)
    assert looks_like_digits(trained, real), digit_statistics(trained, real)


def test_compiled_training_computes_what_eager_training_does(tmp_path, mnist):
    """torch.compile (inductor's C++ backend here) trains the same function as eager mode."""
    cfg = resolve("classic", **{**TINY, "max_steps": 3})
    eager = weights(train(cfg, small(mnist), tmp_path / "eager").checkpoint)
    compiled_cfg = dataclasses.replace(cfg, compile="default")
    compiled = weights(train(compiled_cfg, small(mnist), tmp_path / "compiled").checkpoint)
    assert_close(compiled["generator"], eager["generator"], rtol=1e-4, atol=1e-5)
    assert_close(compiled["discriminator"], eager["discriminator"], rtol=1e-4, atol=1e-5)


class Scripted:
    """An evaluator whose "fid" follows a script: drives the trainer's bookkeeping exactly."""

    key: str | None = "fid"

    def __init__(self, values: list[float]) -> None:
        self.values, self.calls = list(values), 0

    def __call__(self, G) -> dict[str, float]:
        self.calls += 1
        return {"fid": self.values.pop(0), "diversity": 1.0}


def test_evaluations_keep_the_best_checkpoint_and_stop_on_a_plateau(tmp_path, mnist):
    reports: list[Progress] = []
    cfg = resolve("classic", **{**TINY, "max_steps": 12, "eval_every": 2, "early_stop_evals": 2})
    scripted = Scripted([5.0, 3.0, 4.0, 6.0, 1.0, 0.5])
    result = train(cfg, small(mnist), tmp_path, progress=reports.append, evaluator=scripted)
    assert result.early_stopped and result.step == 8 and scripted.calls == 4
    best = load_checkpoint(tmp_path / "best.pt")
    assert best["step"] == 4 and best["metrics"]["fid"] == 3.0
    assert reports[-1].best == {"fid": 3.0, "diversity": 1.0} and reports[-1].best_step == 4
    assert reports[-1].metrics["fid"] == 6.0 and reports[-1].metrics_step == 8
    assert load_checkpoint(result.checkpoint)["monitor"]["best_step"] == 4


def test_a_real_evaluator_scores_the_ema_generator(tmp_path, mnist_dir):
    from gan.evaluate import make_evaluator

    ring = load_dataset("ring8", mnist_dir)
    cfg = resolve("classic", **{**TINY, "dataset": "ring8", "max_steps": 4, "eval_every": 2,
                                "ema_decay": 0.9, "eval_samples": 200})  # fmt: skip
    evaluator = make_evaluator(ring, data_dir=mnist_dir, cache_dir=tmp_path, samples=200)
    reports: list[Progress] = []
    train(cfg, ring, tmp_path / "run", progress=reports.append, evaluator=evaluator)
    assert set(reports[-1].metrics) >= {"modes", "high_quality", "mode_kl", "diversity"}
    best = load_checkpoint(tmp_path / "run" / "best.pt")
    G, _, _ = load_generator(tmp_path / "run" / "best.pt")  # its EMA generator, as sampled
    assert evaluator(G) == best["monitor"]["best"]  # the fixed latent batch: same score again


def test_divergence_rolls_back_to_the_last_good_checkpoint_with_lower_rates(tmp_path, mnist):
    data = small(mnist)
    cfg = resolve("classic", max_steps=10, log_every=1, checkpoint_every=5, eval_every=0)
    train(cfg, data, tmp_path)
    bad = load_checkpoint(tmp_path / "step-00000010.pt")
    for tensor in bad["discriminator"].values():
        tensor.fill_(float("nan"))  # as if step 10 had blown up
    save_checkpoint(bad, tmp_path / "step-00000010.pt")

    reports: list[Progress] = []
    result = train(dataclasses.replace(cfg, max_steps=20), data, tmp_path, progress=reports.append)
    assert result.step == 20
    [warning] = reports[-1].warnings
    assert (warning.code, warning.step) == ("diverged", 11)
    assert "rolled back to step 5" in warning.message and "×0.5" in warning.message
    state = load_checkpoint(result.checkpoint)
    assert state["opt_d"]["param_groups"][0]["lr"] == cfg.lr_d / 2
    assert state["monitor"]["rollbacks"] == 1
    assert all(torch.isfinite(t).all() for t in state["discriminator"].values())


def test_data_of_absurd_scale_fails_after_bounded_rollbacks(tmp_path, mnist_dir):
    ring = load_dataset("ring8", mnist_dir)
    huge = dataclasses.replace(ring, data=ring.data * 1e30)  # D's logits ~1e30: squares overflow
    cfg = resolve("classic", **{**TINY, "dataset": "ring8", "loss": "lsgan", "max_steps": 20,
                                "max_rollbacks": 2, "eval_every": 0})  # fmt: skip
    with pytest.raises(TrainingError, match=r"non-finite at step 2 .*after 2 rollbacks"):
        train(cfg, huge, tmp_path)
    assert list_checkpoints(tmp_path) == []  # nothing non-finite was saved


def test_a_discriminator_that_wins_outright_is_flagged(tmp_path, mnist):
    """G barely learns (lr_g 1e-7) while D does: D's loss → 0, G's gradients vanish."""
    reports: list[Progress] = []
    cfg = resolve("classic", max_steps=100, log_every=10, lr_g=1e-7, lr_d=1e-3, eval_every=0)
    train(cfg, small(mnist, 512), tmp_path, progress=reports.append)
    flagged = [(w.code, w.step) for w in reports[-1].warnings]
    assert len(flagged) == 1 and flagged[0][0] == "vanishing_gradients"
    assert reports[-1].d_loss < 0.01


COLLAPSING = {"beta1_g": 0.9, "beta1_d": 0.9}  # classic with torch's default β1: it collapses


def collapse_run(tmp_path, preset, data, evaluator, steps, **overrides):
    """The last progress report of ``steps`` steps of ``preset`` on ``data``, evaluated twice."""
    reports: list[Progress] = []
    cfg = resolve(preset, dataset=data.name, max_steps=steps, eval_every=steps // 2,
                  log_every=steps // 2, eval_samples=500, **overrides)  # fmt: skip
    train(cfg, data, tmp_path / preset, evaluator=evaluator, progress=reports.append)
    return reports[-1]


def test_collapse_on_grid25_is_flagged_and_stable_is_not(tmp_path, mnist_dir):
    from gan.evaluate import Evaluator
    from gan.monitor import COLLAPSE_DIVERSITY

    data = load_dataset("grid25", mnist_dir)
    evaluator = Evaluator(data, samples=500)
    collapsed = collapse_run(tmp_path, "classic", data, evaluator, 300, **COLLAPSING)
    assert "mode_collapse" in [w.code for w in collapsed.warnings]
    assert collapsed.metrics["mode_spread"] < COLLAPSE_DIVERSITY
    healthy = collapse_run(tmp_path, "stable", data, evaluator, 300)
    assert healthy.metrics["mode_spread"] >= COLLAPSE_DIVERSITY  # spread over the grid already


def test_collapse_on_stacked_mnist_is_flagged(tmp_path, mnist, mnist_dir):
    from gan.data import stacked_mnist
    from gan.evaluate import Evaluator
    from gan.monitor import COLLAPSE_DIVERSITY
    from tests.gan.test_judge import small_judge

    data = stacked_mnist(mnist.data, mnist.labels, n=2000)
    evaluator = Evaluator(data, small_judge(mnist_dir)[0], samples=500)  # cached per session
    collapsed = collapse_run(tmp_path, "classic", data, evaluator, 100, **COLLAPSING)
    assert [w.code for w in collapsed.warnings] == ["mode_collapse"]
    assert collapsed.metrics["mode_spread"] < COLLAPSE_DIVERSITY
    # the data itself is far from the flag: tests/gan/test_evaluate.py (mode_spread > 0.7)


def test_a_slow_step_is_interrupted_mid_way_and_the_run_resumes_exactly(tmp_path, mnist):
    """A step of seconds (a batch of 1024 on the CPU): a stop that comes nine tenths into step 2,
    after D's update, is noticed at the next layer; the step is undone, so that the stop's
    checkpoint is exactly step 1 and the resumed run ends as an uninterrupted one does."""
    data = small(mnist, 2048)
    cfg = resolve("dcgan", width=64, batch_size=1024, max_steps=2, log_every=1, eval_every=0,
                  checkpoint_every=2, seed=1, device="cpu")  # fmt: skip
    straight = train(dataclasses.replace(cfg, checkpoint_every=1), data, tmp_path / "a")

    asked: list[float] = []  # when should_stop was asked (at every layer of a slow step)
    reports: list[tuple[int, int, float]] = []  # (step, questions so far, when)
    stopped_at: list[float] = []

    def should_stop() -> bool:  # the flag a worker's thread sets, set here 9/10 into step 2
        asked.append(time.perf_counter())
        if reports and not stopped_at and len(asked) - reports[0][1] >= 0.9 * reports[0][1]:
            stopped_at.append(time.perf_counter())
        return bool(stopped_at)

    result = train(
        cfg,
        data,
        tmp_path / "b",
        progress=lambda p: reports.append((p.step, len(asked), time.perf_counter())),
        should_stop=should_stop,
    )
    returned = time.perf_counter()
    assert result.stopped and result.step == 1  # step 2 did not end: it was interrupted
    assert [step for step, _, _ in reports] == [1, 1]  # step 1's report, then the stop's
    step_1 = load_checkpoint(tmp_path / "a" / "step-00000001.pt")
    assert_close(weights(result.checkpoint), weights_of(step_1), rtol=0, atol=0)

    step_s = reports[0][2] - asked[0]  # from step 1's first layer to its report
    in_step_1 = asked[: reports[0][1]]
    longest = max(b - a for a, b in itertools.pairwise(in_step_1))
    print(f"step {step_s:.2f} s; longest between two checks {longest:.3f} s; "
          f"stop to return {returned - stopped_at[0]:.2f} s")  # fmt: skip
    assert step_s >= SLOW_STEP_S  # so step 2 ran interruptibly (else it ran bare, and ended)

    resumed = train(cfg, data, tmp_path / "b")
    assert resumed.step == 2
    assert_close(weights(resumed.checkpoint), weights(straight.checkpoint), rtol=0, atol=0)


class Stepwise:
    """An evaluator that runs G (where a stop can interrupt it) and scores step k of its
    schedule 100 − k, so that each evaluation is the best so far; ``stopping`` turns True
    during the evaluation of ``stop_at``."""

    key: str | None = "fid"

    def __init__(self, first: int, every: int, stop_at: int | None = None) -> None:
        self.step, self.every, self.stop_at, self.stopping = first - every, every, stop_at, False

    def __call__(self, G) -> dict[str, float]:
        self.step += self.every
        self.stopping = self.step == self.stop_at
        G.eval()
        with torch.no_grad():
            G(torch.zeros(4, G.latent_dim))
        G.train()
        return {"fid": 100.0 - self.step, "diversity": 1.0}


def test_an_interrupted_evaluation_is_abandoned_and_made_when_the_run_resumes(tmp_path, mnist):
    data = small(mnist)
    cfg = resolve("classic", **{**TINY, "max_steps": 6, "eval_every": 2, "seed": 1})
    straight = train(cfg, data, tmp_path / "a", evaluator=Stepwise(2, 2))

    stopping = Stepwise(2, 2, stop_at=4)
    result = train(cfg, data, tmp_path / "b", evaluator=stopping,
                   should_stop=lambda: stopping.stopping)  # fmt: skip
    assert result.stopped and result.step == 4  # step 4 ended; its evaluation did not
    assert load_checkpoint(tmp_path / "b" / "best.pt")["step"] == 2  # not 4's, half-way
    assert load_checkpoint(result.checkpoint)["monitor"]["metrics_step"] == 2

    resumed = train(cfg, data, tmp_path / "b", evaluator=Stepwise(4, 2))  # 4's first
    assert resumed.step == 6
    assert_close(weights(resumed.checkpoint), weights(straight.checkpoint), rtol=0, atol=0)
    for name in (resumed.checkpoint.name, "best.pt"):
        mine, theirs = (load_checkpoint(p / name) for p in (tmp_path / "b", tmp_path / "a"))
        assert mine["monitor"] == theirs["monitor"] and mine["step"] == theirs["step"]


def test_a_stop_in_the_first_step_saves_nothing_new(tmp_path, mnist):
    data = small(mnist)
    cfg = resolve("classic", **{**TINY, "max_steps": 4})
    with pytest.raises(StoppedBeforeFirstStep):  # a new run: nothing to save
        train(cfg, data, tmp_path, should_stop=lambda: True)
    assert list_checkpoints(tmp_path) == []
    train(dataclasses.replace(cfg, max_steps=3), data, tmp_path)
    reports: list[Progress] = []
    result = train(cfg, data, tmp_path, progress=reports.append, should_stop=lambda: True)
    assert (result.stopped, result.step, result.checkpoint.name) == (True, 3, "step-00000003.pt")
    assert reports == []  # nothing new to report
