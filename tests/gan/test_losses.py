import math
from collections.abc import Callable
from typing import get_args

import pytest
import torch
from torch.testing import assert_close

from gan.config import Loss
from gan.losses import (
    classification_loss,
    d_loss,
    g_loss,
    gradient_norm_penalty,
    gradient_penalty,
    hinge_d_loss,
    hinge_g_loss,
    lsgan_d_loss,
    lsgan_g_loss,
    minimax_d_loss,
    minimax_g_loss,
    non_saturating_g_loss,
    rpgan_d_loss,
    rpgan_g_loss,
    wasserstein_d_loss,
    wasserstein_g_loss,
)

# Hand-picked logits for the piecewise-linear and quadratic losses.
REAL = torch.tensor([2.0, 0.5, -1.0])
FAKE = torch.tensor([-2.0, 0.0, 0.5])


def moderate_logits(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(256, generator=gen) * 4, torch.randn(256, generator=gen) * 4


def all_losses(real: torch.Tensor, fake: torch.Tensor) -> dict[str, torch.Tensor]:
    return {
        "minimax_d": minimax_d_loss(real, fake),
        "minimax_d_smoothed": minimax_d_loss(real, fake, label_smoothing=0.1),
        "minimax_g": minimax_g_loss(fake),
        "non_saturating_g": non_saturating_g_loss(fake),
        "hinge_d": hinge_d_loss(real, fake),
        "hinge_g": hinge_g_loss(fake),
        "wasserstein_d": wasserstein_d_loss(real, fake),
        "wasserstein_g": wasserstein_g_loss(fake),
        "lsgan_d": lsgan_d_loss(real, fake, label_smoothing=0.1),
        "lsgan_g": lsgan_g_loss(fake),
        "rpgan_d": rpgan_d_loss(real, fake),
        "rpgan_g": rpgan_g_loss(fake, real),
    }


# --- the formulas ---


def test_sigmoid_losses_match_textbook_formulas_on_moderate_logits():
    real, fake = moderate_logits()
    # The textbook formulas on sigmoid outputs, in float64 where they are still accurate.
    d_real, d_fake = torch.sigmoid(real.double()), torch.sigmoid(fake.double())
    eps = 0.1
    d_ref = -(torch.log(d_real).mean() + torch.log(1 - d_fake).mean())
    d_smoothed_ref = -(
        ((1 - eps) * torch.log(d_real) + eps * torch.log(1 - d_real)).mean()
        + torch.log(1 - d_fake).mean()
    )
    assert_close(minimax_d_loss(real, fake).double(), d_ref, rtol=1e-5, atol=1e-5)
    assert_close(
        minimax_d_loss(real, fake, label_smoothing=eps).double(),
        d_smoothed_ref,
        rtol=1e-5,
        atol=1e-5,
    )
    assert_close(minimax_g_loss(fake).double(), torch.log(1 - d_fake).mean(), rtol=1e-5, atol=1e-5)
    assert_close(
        non_saturating_g_loss(fake).double(), -torch.log(d_fake).mean(), rtol=1e-5, atol=1e-5
    )


def test_hinge_wasserstein_lsgan_match_hand_computed_values():
    # relu(1 − r) = [0, .5, 2], relu(1 + f) = [0, 1, 1.5]: 2.5/3 + 2.5/3
    assert_close(hinge_d_loss(REAL, FAKE), torch.tensor(5 / 3))
    assert_close(hinge_g_loss(FAKE), torch.tensor(0.5))  # −mean(f) = 1.5/3
    assert_close(wasserstein_d_loss(REAL, FAKE), torch.tensor(-1.0))  # −0.5 − 0.5
    assert_close(wasserstein_g_loss(FAKE), torch.tensor(0.5))
    # ½·mean([1, .25, 4]) + ½·mean([4, 0, .25])
    assert_close(lsgan_d_loss(REAL, FAKE), torch.tensor(5.25 / 6 + 4.25 / 6))
    # targets 0.9: ½·mean([1.21, .16, 3.61]) + ½·mean([4, 0, .25])
    assert_close(lsgan_d_loss(REAL, FAKE, label_smoothing=0.1), torch.tensor(4.98 / 6 + 4.25 / 6))
    assert_close(lsgan_g_loss(FAKE), torch.tensor(10.25 / 6))  # ½·mean([9, 1, .25])


def test_rpgan_pairs_each_real_with_its_fake():
    # softplus(l_f − l_r) per pair: pairs (2, −2), (0.5, 0), (−1, 0.5) by hand
    diffs = torch.tensor([-4.0, -0.5, 1.5])
    by_hand = torch.log1p(torch.exp(diffs)).mean()
    assert_close(rpgan_d_loss(REAL, FAKE), by_hand)
    assert_close(rpgan_g_loss(FAKE, REAL), torch.log1p(torch.exp(-diffs)).mean())
    # only differences count: shifting both logits by c changes nothing (unlike minimax)
    assert_close(rpgan_d_loss(REAL + 3.0, FAKE + 3.0), by_hand)
    # the pairing matters: a permutation of the fakes changes the loss
    assert not torch.allclose(rpgan_d_loss(REAL, FAKE.flip(0)), by_hand)


def test_losses_are_scalars_and_average_over_the_batch():
    real, fake = moderate_logits()
    for name, value in all_losses(real, fake).items():
        assert value.shape == (), name
        # Repeating the batch leaves a mean unchanged.
        assert_close(all_losses(real.repeat(3), fake.repeat(3))[name], value, msg=name)


def test_losses_and_gradients_are_finite_at_extreme_logits():
    for sign in (1.0, -1.0):
        real = torch.tensor([1000.0, -1000.0, 3.0]).mul(sign).requires_grad_(True)
        fake = torch.tensor([-1000.0, 1000.0, -3.0]).mul(sign).requires_grad_(True)
        for name, value in all_losses(real, fake).items():
            assert torch.isfinite(value), name
            grads = torch.autograd.grad(value, (real, fake), allow_unused=True)
            assert all(g is None or torch.isfinite(g).all() for g in grads), name
    # And the value is right, not merely finite: softplus(1000) = 1000.
    big = torch.tensor([1000.0])
    assert_close(minimax_d_loss(-big, big), torch.tensor(2000.0))
    assert_close(non_saturating_g_loss(-big), torch.tensor(1000.0))
    assert_close(minimax_g_loss(big), torch.tensor(-1000.0))


# --- the stories the losses are chosen for ---


def test_minimax_g_saturates_where_non_saturating_does_not():
    # D confidently rejects the fakes: σ(−20) ≈ 2e-9.
    rejected = torch.full((4,), -20.0, requires_grad=True)
    (grad_minimax,) = torch.autograd.grad(minimax_g_loss(rejected), rejected)
    (grad_ns,) = torch.autograd.grad(non_saturating_g_loss(rejected), rejected)
    assert grad_minimax.abs().max() < 1e-8  # −σ(l)/B: vanishes
    assert_close(grad_ns, torch.full((4,), -0.25))  # −σ(−l)/B ≈ −1/B: G still learns
    # Both push the fake logits up (towards "real"), with the gradients the formulas give.
    fake = torch.tensor([-2.0, 0.0, 3.0], requires_grad=True)
    (grad_minimax,) = torch.autograd.grad(minimax_g_loss(fake), fake)
    (grad_ns,) = torch.autograd.grad(non_saturating_g_loss(fake), fake)
    assert_close(grad_minimax, -torch.sigmoid(fake.detach()) / 3)
    assert_close(grad_ns, -torch.sigmoid(-fake.detach()) / 3)


def test_hinge_is_zero_with_zero_gradient_once_margins_are_met():
    real = torch.tensor([1.0, 5.0, 100.0], requires_grad=True)
    fake = torch.tensor([-1.0, -7.0, -100.0], requires_grad=True)
    loss = hinge_d_loss(real, fake)
    assert loss.item() == 0.0
    grads = torch.autograd.grad(loss, (real, fake))
    assert all((g == 0).all() for g in grads)
    # Inside the margin it is not.
    assert hinge_d_loss(torch.tensor([0.9]), torch.tensor([-1.0])) > 0
    assert hinge_d_loss(torch.tensor([1.0]), torch.tensor([-0.9])) > 0


@pytest.mark.parametrize("eps", [0.1, 0.2, 0.5])
def test_label_smoothing_moves_the_optimal_real_logit_to_log_odds_of_the_target(eps):
    optimum = math.log((1 - eps) / eps)
    fake = torch.zeros(1)

    def real_term(logit: float) -> torch.Tensor:
        return minimax_d_loss(torch.tensor([logit]), fake, label_smoothing=eps)

    at = torch.tensor([optimum], requires_grad=True)
    (grad,) = torch.autograd.grad(minimax_d_loss(at, fake, label_smoothing=eps), at)
    assert_close(grad, torch.zeros(1), atol=1e-6, rtol=0)
    assert real_term(optimum) < real_term(optimum - 0.1)
    assert real_term(optimum) < real_term(optimum + 0.1)
    # LSGAN's real target moves the same way: to 1 − ε.
    at = torch.tensor([1 - eps], requires_grad=True)
    (grad,) = torch.autograd.grad(lsgan_d_loss(at, fake, label_smoothing=eps), at)
    assert_close(grad, torch.zeros(1))


def test_without_label_smoothing_the_real_term_keeps_pushing_logits_up():
    real = torch.tensor([10.0], requires_grad=True)
    (grad,) = torch.autograd.grad(minimax_d_loss(real, torch.zeros(1)), real)
    assert grad.item() < 0  # −σ(−10): no finite optimum


# --- dispatch ---

EXPECTED: dict[str, tuple[Callable[..., torch.Tensor], Callable[..., torch.Tensor]]] = {
    "minimax": (minimax_d_loss, minimax_g_loss),
    "non_saturating": (minimax_d_loss, non_saturating_g_loss),
    "hinge": (hinge_d_loss, hinge_g_loss),
    "wgan": (wasserstein_d_loss, wasserstein_g_loss),
    "wgan_gp": (wasserstein_d_loss, wasserstein_g_loss),
    "lsgan": (lsgan_d_loss, lsgan_g_loss),
    "rpgan": (rpgan_d_loss, rpgan_g_loss),
}


def test_dispatch_covers_every_configurable_loss():
    assert set(EXPECTED) == set(get_args(Loss))
    real, fake = moderate_logits(1)
    for name in get_args(Loss):
        d_fn, g_fn = EXPECTED[name]
        assert_close(d_loss(name, real, fake), d_fn(real, fake), msg=name)
        if name == "rpgan":  # relativistic: G's loss compares each fake with its real
            assert_close(g_loss(name, fake, real), g_fn(fake, real), msg=name)
            with pytest.raises(ValueError, match="real logits"):
                g_loss(name, fake)
        else:
            assert_close(g_loss(name, fake), g_fn(fake), msg=name)


def test_dispatch_passes_label_smoothing_where_it_applies():
    real, fake = moderate_logits(2)
    for name in ("minimax", "non_saturating", "lsgan"):
        d_fn = EXPECTED[name][0]
        smoothed = d_loss(name, real, fake, label_smoothing=0.2)
        assert_close(smoothed, d_fn(real, fake, label_smoothing=0.2), msg=name)
        assert not torch.equal(smoothed, d_loss(name, real, fake)), name
    for name in ("hinge", "wgan", "wgan_gp", "rpgan"):
        with pytest.raises(ValueError, match="label_smoothing"):
            d_loss(name, real, fake, label_smoothing=0.2)


def test_dispatch_rejects_unknown_losses():
    real, fake = moderate_logits()
    for bad in ("", "bce", "Hinge", "wgan-gp"):
        with pytest.raises(ValueError, match="unknown loss"):
            d_loss(bad, real, fake)
        with pytest.raises(ValueError, match="unknown loss"):
            g_loss(bad, fake)


# --- gradient penalties ---


def linear_critic(w: torch.Tensor):
    """x ↦ ⟨w, x⟩ per sample: its input gradient is w everywhere."""
    return lambda x: x.flatten(1) @ w


def unit(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    w = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    return w / w.norm()


@pytest.mark.parametrize("sample_shape", [(2,), (1, 4, 4), (3, 2, 2)])
def test_gradient_penalty_of_a_linear_critic_is_the_norm_excess_squared(sample_shape):
    dim = math.prod(sample_shape)
    real, fake = torch.randn(5, *sample_shape), torch.randn(5, *sample_shape)
    for norm in (1.0, 3.0, 0.5):
        w = unit((dim,)) * norm
        gen = torch.Generator().manual_seed(0)
        gp = gradient_penalty(linear_critic(w), real, fake, gen)
        assert_close(gp, torch.tensor((norm - 1.0) ** 2), atol=1e-6, rtol=1e-5)


def test_gradient_penalty_backpropagates_into_the_critic():
    w = (unit((6,)) * 3.0).requires_grad_(True)
    real, fake = torch.randn(4, 6), torch.randn(4, 6)
    gp = gradient_penalty(linear_critic(w), real, fake, torch.Generator().manual_seed(0))
    gp.backward()
    # d/dw (‖w‖ − 1)² = 2(‖w‖ − 1)·w/‖w‖ = 2·2·w/3
    assert w.grad is not None
    assert_close(w.grad, 4.0 * w.detach() / 3.0)


def test_gradient_penalty_uses_one_uniform_interpolate_per_sample_from_the_generator():
    # D(x) = ½‖x‖² has input gradient x. With fake = 0, x̂ = ε·real, so ‖∇‖ = ε‖real‖.
    def critic(x: torch.Tensor) -> torch.Tensor:
        return 0.5 * x.flatten(1).square().sum(1)

    real = torch.full((64, 1, 2, 2), 1.5)  # ‖real‖ = 3 per sample
    fake = torch.zeros_like(real)
    state = torch.get_rng_state()
    gp = gradient_penalty(critic, real, fake, torch.Generator().manual_seed(7))
    assert torch.equal(torch.get_rng_state(), state)
    eps = torch.rand(64, generator=torch.Generator().manual_seed(7))
    assert_close(gp, (3.0 * eps - 1.0).square().mean())
    # Another seed, other interpolates.
    other = gradient_penalty(critic, real, fake, torch.Generator().manual_seed(8))
    assert not torch.equal(gp, other)


def test_gradient_norm_penalty_is_the_squared_input_gradient_norm():
    w = (unit((12,), seed=3) * 2.0).requires_grad_(True)
    x = torch.randn(5, 3, 2, 2)
    r1 = gradient_norm_penalty(linear_critic(w), x)
    assert_close(r1, torch.tensor(4.0))  # ‖w‖²
    r1.backward()
    assert w.grad is not None
    assert_close(w.grad, 2.0 * w.detach())  # d/dw ‖w‖²
    # A non-linear critic: D(x) = ½‖x‖² has gradient x, so the penalty is E‖x‖².
    points = torch.tensor([[3.0, 4.0], [0.0, 1.0]])
    penalty = gradient_norm_penalty(lambda x: 0.5 * x.square().sum(1), points)
    assert_close(penalty, torch.tensor((25.0 + 1.0) / 2))


def test_penalties_do_not_backpropagate_into_their_inputs():
    # The penalties regularise D; the data (or G's samples) are constants to them.
    real = torch.randn(3, 4, requires_grad=True)
    fake = torch.randn(3, 4, requires_grad=True)
    w = torch.randn(4, requires_grad=True)
    critic = lambda x: (x @ w).tanh()  # noqa: E731
    gp = gradient_penalty(critic, real, fake, torch.Generator().manual_seed(0))
    (gp + gradient_norm_penalty(critic, real)).backward()
    assert real.grad is None and fake.grad is None
    assert w.grad is not None and w.grad.abs().sum() > 0


# --- ACGAN ---


def test_classification_loss_is_cross_entropy():
    logits = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 3.0]])
    labels = torch.tensor([0, 0, 0])
    # −log softmax: log 2, log(1 + e^−2), log(1 + e^3)
    expected = (math.log(2) + math.log(1 + math.exp(-2)) + math.log(1 + math.exp(3))) / 3
    assert_close(classification_loss(logits, labels), torch.tensor(expected))
