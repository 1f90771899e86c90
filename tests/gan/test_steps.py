import math

import pytest
import torch
from torch.testing import assert_close

from gan import losses
from gan.config import TrainConfig, resolve
from gan.state import TrainState
from gan.steps import (
    StepStats,
    clip_and_measure,
    d_input,
    d_step,
    discriminate,
    fake_batch,
    g_step,
    train_step,
)

CPU = torch.device("cpu")
MNIST_SHAPE = (1, 28, 28)


def state_for(preset: str = "classic", **overrides) -> tuple[TrainConfig, TrainState]:
    """A small run's config and its state at step 0 (10 classes when it is conditional)."""
    cfg = resolve(preset, **{"width": 8, "batch_size": 8, "device": "cpu", **overrides})
    num_classes = 10 if cfg.conditional != "none" else 0
    return cfg, TrainState.new(cfg, MNIST_SHAPE, num_classes, CPU)


def real_batch_of(cfg: TrainConfig, s: TrainState):
    """Batch k: images in [−1, 1] (and labels, conditional) drawn from a generator seeded by k."""

    def real_batch(k: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        g = torch.Generator().manual_seed(k)
        x = torch.rand((cfg.batch_size, *MNIST_SHAPE), generator=g) * 2 - 1
        y = torch.randint(s.num_classes, (cfg.batch_size,), generator=g) if s.num_classes else None
        return x, y

    return real_batch


def weights(net: torch.nn.Module | None) -> dict[str, torch.Tensor]:
    assert net is not None
    return {name: p.detach().clone() for name, p in net.named_parameters()}


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a)


D_STEP_CASES = {
    "classic": ("classic", {}),
    "acgan-r1-r2": ("dcgan", {"conditional": "acgan", "r1_gamma": 1.0, "r2_gamma": 1.0}),
    "wgan-gp": ("wgan-gp", {"augment": "translation", "instance_noise": 0.1}),
    "wgan-clip": ("dcgan", {"loss": "wgan", "grad_clip": 1.0}),
}


@pytest.mark.parametrize("case", list(D_STEP_CASES))
def test_a_d_step_changes_only_d_weights(case):
    preset, overrides = D_STEP_CASES[case]
    cfg, s = state_for(preset, ema_decay=0.9, **overrides)
    real, y_real = real_batch_of(cfg, s)(0)
    fake, y_fake = fake_batch(cfg, s, grad=True)
    G0, G_ema0, D0 = weights(s.G), weights(s.G_ema), weights(s.D)
    out = d_step(cfg, s, 0, real, y_real, fake, y_fake)
    assert same(weights(s.G), G0) and same(weights(s.G_ema), G_ema0)
    assert not same(weights(s.D), D0)
    assert all(p.grad is None for p in s.G.parameters())
    assert math.isfinite(out.loss.item()) and not out.loss.requires_grad
    if cfg.loss == "wgan":  # the critic's weights are clipped after its update
        assert max(p.abs().max().item() for p in s.D.parameters()) <= cfg.clip_value


def test_a_g_step_changes_only_g_weights_and_leaves_d_as_it_was():
    cfg, s = state_for("dcgan", conditional="acgan", augment="translation")
    fake, y_fake = fake_batch(cfg, s, grad=True)
    G0, D0 = weights(s.G), weights(s.D)
    out = g_step(cfg, s, fake, y_fake)
    assert not same(weights(s.G), G0) and same(weights(s.D), D0)
    assert all(p.grad is None for p in s.D.parameters())  # D was frozen: no gradients computed
    assert all(p.requires_grad for p in s.D.parameters())  # ... and is trainable again
    assert all(p.grad is not None for p in s.G.parameters())
    assert math.isfinite(out.loss.item())


def test_penalties_run_every_reg_every_d_steps_scaled_by_it():
    """Lazy R1: nothing on D steps k % reg_every != 0, reg_every·γ/2·R1 on the others."""
    cfg, s = state_for("classic", r1_gamma=10.0, reg_every=2)
    plain_cfg, plain = state_for("classic")  # the same seed: the same networks and noise
    real, _ = real_batch_of(cfg, s)(0)
    fake = torch.rand(cfg.batch_size, *MNIST_SHAPE) * 2 - 1
    skipped, reference = (
        d_step(cfg, s, 1, real, None, fake, None),
        d_step(plain_cfg, plain, 1, real, None, fake, None),
    )
    assert torch.equal(skipped.loss, reference.loss) and same(weights(s.D), weights(plain.D))

    r1 = losses.gradient_norm_penalty(lambda x: discriminate(s, x, None)[0], real).detach()
    penalised = d_step(cfg, s, 2, real, None, fake, None)
    reference = d_step(plain_cfg, plain, 2, real, None, fake, None)
    assert_close(penalised.loss, reference.loss + 10.0 / 2 * 2 * r1)


def test_d_input_is_the_batch_itself_without_augmentation_or_noise():
    cfg, s = state_for("classic")
    x = torch.rand(4, *MNIST_SHAPE)
    before = s.rng.get_state()
    assert d_input(cfg, s, x) is x
    assert torch.equal(s.rng.get_state(), before)  # nothing drawn


def test_instance_noise_anneals_to_zero_over_its_steps():
    cfg, s = state_for("classic", instance_noise=0.5, instance_noise_steps=10)
    x = torch.zeros(64, *MNIST_SHAPE)
    assert_close(d_input(cfg, s, x).std(), torch.tensor(0.5), rtol=0.02, atol=0)
    s.step = 5
    assert_close(d_input(cfg, s, x).std(), torch.tensor(0.25), rtol=0.02, atol=0)
    s.step = 10
    assert d_input(cfg, s, x) is x


def test_d_input_augments_from_the_state_noise_alone():
    cfg, s = state_for("dcgan", augment="translation,cutout")
    _, again = state_for("dcgan", augment="translation,cutout")
    x = torch.rand(8, *MNIST_SHAPE)
    augmented = d_input(cfg, s, x)
    assert not torch.equal(augmented, x)
    assert torch.equal(d_input(cfg, again, x), augmented)  # same seed, same draws


def test_gradient_norms_are_measured_before_reports_and_clipped_when_asked():
    cfg, s = state_for("classic", log_every=5, max_steps=100)
    for p in s.D.parameters():
        p.grad = torch.ones_like(p)
    norm = math.sqrt(sum(p.numel() for p in s.D.parameters()))
    assert clip_and_measure(cfg, s.D, step=0) is None  # step 1 does not report
    assert_close(clip_and_measure(cfg, s.D, step=4), torch.tensor(norm))  # step 5 does
    assert_close(clip_and_measure(cfg, s.D, step=99), torch.tensor(norm))  # the last step
    clipping = resolve("classic", grad_clip=1.0)
    assert_close(clip_and_measure(clipping, s.D, step=0), torch.tensor(norm))  # before clipping
    after = torch.linalg.vector_norm(
        torch.cat([p.grad.flatten() for p in s.D.parameters() if p.grad is not None])
    )
    assert_close(after, torch.tensor(1.0), rtol=1e-3, atol=0)  # float32 sums of 1.5M terms


def test_a_train_step_makes_d_steps_d_updates_then_one_g_update_and_the_ema():
    cfg, s = state_for("wgan-gp", d_steps=3, ema_decay=0.9, log_every=2, max_steps=10)
    asked: list[int] = []
    real_batch = real_batch_of(cfg, s)

    def recorded(k: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        asked.append(k)
        return real_batch(k)

    previous = StepStats(d_grad_norm=torch.tensor(7.0), g_grad_norm=torch.tensor(8.0))
    stats = train_step(cfg, s, recorded, previous)
    assert s.step == 1 and asked == [0, 1, 2]
    assert {int(v["step"]) for v in s.opt_d.state.values()} == {3}
    assert {int(v["step"]) for v in s.opt_g.state.values()} == {1}
    # step 1 does not report: the norms of the latest step that measured them are kept
    assert stats.d_grad_norm is previous.d_grad_norm and stats.g_grad_norm is previous.g_grad_norm

    G_ema0, G0 = weights(s.G_ema), weights(s.G)
    stats = train_step(cfg, s, recorded, stats)
    assert s.step == 2 and asked == [0, 1, 2, 3, 4, 5]
    assert math.isfinite(stats.d_grad_norm.item()) and math.isfinite(stats.g_grad_norm.item())
    decay = min(0.9, 3 / 12)  # the EMA's warm-up at step 2
    name = next(iter(G0))
    assert s.G_ema is not None
    assert_close(
        s.G_ema.state_dict()[name], decay * G_ema0[name] + (1 - decay) * s.G.state_dict()[name]
    )
    assert not torch.equal(s.G.state_dict()[name], G0[name])
