import torch
from torch.testing import assert_close

from gan.losses import minimax_d_loss, minimax_g_loss


def bce_reference(real_logits: torch.Tensor, fake_logits: torch.Tensor):
    """The textbook formulas on sigmoid outputs, in float64 where they are still accurate."""
    d_real, d_fake = torch.sigmoid(real_logits.double()), torch.sigmoid(fake_logits.double())
    d = -(torch.log(d_real).mean() + torch.log(1 - d_fake).mean())
    g = -torch.log(d_fake).mean()
    return d, g


def test_minimax_matches_textbook_formula_on_moderate_logits():
    gen = torch.Generator().manual_seed(0)
    real, fake = torch.randn(256, generator=gen) * 4, torch.randn(256, generator=gen) * 4
    d_ref, g_ref = bce_reference(real, fake)
    assert_close(minimax_d_loss(real, fake).double(), d_ref, rtol=1e-5, atol=1e-6)
    assert_close(minimax_g_loss(fake).double(), g_ref, rtol=1e-5, atol=1e-6)


def test_minimax_is_finite_where_logs_of_sigmoids_are_not():
    real = torch.tensor([-200.0, 200.0])
    fake = torch.tensor([200.0, -200.0])
    # log(sigmoid(-200)) is -inf in float32: the textbook code's loss becomes inf here.
    assert torch.isinf(torch.log(torch.sigmoid(real))).any()
    d, g = minimax_d_loss(real, fake), minimax_g_loss(fake)
    assert torch.isfinite(d) and torch.isfinite(g)
    # softplus(200) = 200: mean over [200, 0] for each term.
    assert_close(d, torch.tensor(200.0))
    assert_close(g, torch.tensor(100.0))


def test_minimax_gradients_are_finite_at_saturation():
    fake = torch.tensor([-100.0, 100.0], requires_grad=True)
    minimax_g_loss(fake).backward()
    assert fake.grad is not None and torch.isfinite(fake.grad).all()
    # d/dl softplus(-l) = -sigmoid(-l): -1 where D is sure the fake is fake (not 0: no vanishing).
    assert_close(fake.grad, torch.tensor([-0.5, 0.0]))
