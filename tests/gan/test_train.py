import numpy as np
import pytest
import torch
from torch.testing import assert_close

from gan.checkpoint import list_checkpoints, load_checkpoint, save_checkpoint
from gan.config import resolve
from gan.models import MLPDiscriminator, MLPGenerator, build_models
from gan.sample import generate, load_generator
from gan.train import EpochSampler, Progress, TrainingError, train
from tests.quality import digit_statistics, looks_like_digits


def small(images: torch.Tensor, n: int = 512) -> torch.Tensor:
    return images[:n]


def test_textbook_architecture():
    G, D = build_models(resolve("classic"))
    linear = [m for m in G.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linear] == [
        (100, 256), (256, 512), (512, 1024), (1024, 784),
    ]  # fmt: skip
    linear = [m for m in D.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linear] == [(784, 512), (512, 256), (256, 1)]
    assert isinstance(G.net[-1], torch.nn.Tanh)
    assert not any(isinstance(m, torch.nn.Sigmoid) for m in D.modules())  # D returns logits
    images = G(torch.randn(3, 100))
    assert images.shape == (3, 1, 28, 28) and images.abs().max() <= 1
    assert D(images).shape == (3,)


def test_discriminator_step_does_not_reach_the_generator():
    """The bug of the widely copied code: D's loss backpropagated into G's graph."""
    from gan.losses import minimax_d_loss

    G, D = MLPGenerator(), MLPDiscriminator()
    fake = G(torch.randn(4, 100))
    minimax_d_loss(D(torch.rand(4, 1, 28, 28)), D(fake.detach())).backward()
    assert all(p.grad is None for p in G.parameters())
    assert all(p.grad is not None for p in D.parameters())


def test_epoch_sampler_covers_each_epoch_once_and_is_a_function_of_seed():
    sampler = EpochSampler(100, 10, seed=3, device=torch.device("cpu"))
    epoch = torch.cat([sampler.batch(k) for k in range(10)])
    assert sorted(epoch.tolist()) == list(range(100))
    again = EpochSampler(100, 10, seed=3, device=torch.device("cpu"))
    assert torch.equal(again.batch(13), sampler.batch(13))
    assert not torch.equal(sampler.batch(0), sampler.batch(10))  # a new permutation per epoch


def state_of(path):
    state = load_checkpoint(path)
    return state["generator"], state["discriminator"], state["opt_g"]["state"]


def test_same_seed_same_weights_and_resume_is_exact(tmp_path, mnist_images):
    data = small(mnist_images)
    cfg = resolve("classic", max_steps=20, log_every=5, checkpoint_every=10, seed=1)
    straight = train(cfg, data, tmp_path / "a")
    again = train(cfg, data, tmp_path / "b")
    assert_close(state_of(straight.checkpoint), state_of(again.checkpoint), rtol=0, atol=0)

    half = train(resolve("classic", **{**cfg.to_dict(), "max_steps": 10}), data, tmp_path / "c")
    assert half.step == 10
    resumed = train(cfg, data, tmp_path / "c")  # picks up the step-10 checkpoint
    assert resumed.step == 20
    assert_close(state_of(resumed.checkpoint), state_of(straight.checkpoint), rtol=0, atol=0)
    other_seed = train(resolve("classic", **{**cfg.to_dict(), "seed": 2}), data, tmp_path / "d")
    assert not torch.equal(state_of(other_seed.checkpoint)[0]["net.0.weight"],
                           state_of(straight.checkpoint)[0]["net.0.weight"])  # fmt: skip


def test_progress_should_stop_and_checkpoint_schedule(tmp_path, mnist_images):
    reports: list[Progress] = []
    cfg = resolve("classic", max_steps=100, log_every=10, checkpoint_every=25, keep_checkpoints=2)
    result = train(
        cfg,
        small(mnist_images),
        tmp_path,
        progress=reports.append,
        should_stop=lambda: len(reports) >= 3,  # polled before the 4th report
    )
    assert result.stopped and result.step == 40
    assert [r.step for r in reports] == [10, 20, 30, 40]
    assert reports[2].checkpoint_step == 25 and all(r.total_steps == 100 for r in reports)
    assert reports[-1].checkpoint_step == 40  # the stop's checkpoint is in the last report
    assert all(r.images_per_sec > 0 and np.isfinite(r.d_loss) for r in reports)
    # the stop wrote a checkpoint of step 40; only the newest two are kept
    assert [s for s, _ in list_checkpoints(tmp_path)] == [25, 40]
    assert load_checkpoint(result.checkpoint)["config"] == cfg.to_dict()


def test_non_finite_losses_fail_with_a_reason_and_save_nothing(tmp_path, mnist_images):
    data = small(mnist_images)
    first = train(resolve("classic", max_steps=5, log_every=5), data, tmp_path)
    state = load_checkpoint(first.checkpoint)
    state["discriminator"]["net.0.weight"].fill_(float("nan"))  # as if training had blown up
    save_checkpoint(state, first.checkpoint)

    with pytest.raises(TrainingError, match=r"non-finite at step 6.*lower learning rates"):
        train(resolve("classic", max_steps=20, log_every=5, checkpoint_every=1), data, tmp_path)
    assert [step for step, _ in list_checkpoints(tmp_path)] == [5]  # nothing NaN was saved


def test_batch_larger_than_dataset_is_refused(tmp_path, mnist_images):
    with pytest.raises(TrainingError, match="larger than the dataset"):
        train(resolve("classic", batch_size=1000), small(mnist_images, 100), tmp_path)


def test_short_training_run_produces_digit_like_samples(tmp_path, mnist_images):
    real = mnist_images.squeeze(1).numpy().astype(float)
    cfg = resolve("classic", max_steps=300, log_every=100, checkpoint_every=300, seed=0)
    G_untrained, _ = build_models(cfg)
    untrained = generate(G_untrained.eval(), 256, seed=0)
    result = train(cfg, mnist_images, tmp_path)
    G, _, step = load_generator(result.checkpoint)
    trained = generate(G, 256, seed=0)
    assert step == 300
    assert not looks_like_digits(untrained, real), digit_statistics(untrained, real)
    assert looks_like_digits(trained, real), digit_statistics(trained, real)
