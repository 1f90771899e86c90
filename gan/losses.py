"""GAN losses as pure functions of discriminator logits.

With D(x) = σ(l) for a logit l, the logs that textbook code takes of sigmoid outputs are
    log σ(l)     = −softplus(−l)
    log(1 − σ(l)) = −softplus(l)
softplus is finite for every finite l, whereas log(σ(l)) underflows to log(0) = −inf once σ(l)
rounds to 0 (l below about −17 in float32, −88 for the exp itself). All losses return a scalar
to be *minimised* and average over the batch; ``real`` and ``fake`` are D's logits on a batch of
real data and of G's samples. ``d_loss`` and ``g_loss`` pick the pair named by
``TrainConfig.loss``; the penalties take the critic itself, since they differentiate through it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

# --- minimax (Goodfellow et al. 2014) ---


def minimax_d_loss(real: Tensor, fake: Tensor, label_smoothing: float = 0.0) -> Tensor:
    # D maximises  E[log D(x)] + E[log(1 − D(G(z)))], with one-sided smoothing: the target of reals
    # is t = 1 − ε instead of 1 (Salimans et al. 2016), i.e. D minimises the cross-entropy
    #   E[−t·log σ(l_r) − (1 − t)·log(1 − σ(l_r))] + E[−log(1 − σ(l_f))]
    #   = E[t·softplus(−l_r) + ε·softplus(l_r)] + E[softplus(l_f)]
    # whose real term is least at σ(l_r) = t, l_r = log((1 − ε)/ε), not at l_r → +∞.
    t = 1.0 - label_smoothing
    real_term = t * F.softplus(-real) + label_smoothing * F.softplus(real)
    return real_term.mean() + F.softplus(fake).mean()


def minimax_g_loss(fake: Tensor) -> Tensor:
    # The saturating game: G minimises E[log(1 − D(G(z)))] = −E[softplus(l_f)].
    # d/dl_f = −σ(l_f) → 0 when D confidently rejects the fakes (l_f ≪ 0): G learns nothing
    # early in training. Kept to show that; train with non_saturating.
    return -F.softplus(fake).mean()


def non_saturating_g_loss(fake: Tensor) -> Tensor:
    # G minimises −E[log D(G(z))] = E[softplus(−l_f)] (Goodfellow et al. 2014's practical form;
    # BCE of the fakes against the "real" label). d/dl_f = −σ(−l_f) → −1 where D rejects fakes.
    return F.softplus(-fake).mean()


# --- hinge (Lim & Ye 2017; Miyato et al. 2018) ---


def hinge_d_loss(real: Tensor, fake: Tensor) -> Tensor:
    # D minimises E[relu(1 − l_r)] + E[relu(1 + l_f)]: zero once l_r ≥ 1 and l_f ≤ −1.
    return F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean()


def hinge_g_loss(fake: Tensor) -> Tensor:
    # G minimises −E[l_f]
    return -fake.mean()


# --- Wasserstein (Arjovsky et al. 2017; with gradient penalty: Gulrajani et al. 2017) ---


def wasserstein_d_loss(real: Tensor, fake: Tensor) -> Tensor:
    # The critic maximises E[l_r] − E[l_f] ⇔ minimises E[l_f] − E[l_r]
    # (bounded only by a Lipschitz constraint: weight clipping or gradient_penalty).
    return fake.mean() - real.mean()


def wasserstein_g_loss(fake: Tensor) -> Tensor:
    # G minimises −E[l_f]
    return -fake.mean()


# --- least squares (Mao et al. 2017), targets real = 1 − ε, fake = 0, G's target 1 ---


def lsgan_d_loss(real: Tensor, fake: Tensor, label_smoothing: float = 0.0) -> Tensor:
    # D minimises ½E[(l_r − (1 − ε))²] + ½E[l_f²]
    return 0.5 * (real - (1.0 - label_smoothing)).square().mean() + 0.5 * fake.square().mean()


def lsgan_g_loss(fake: Tensor) -> Tensor:
    # G minimises ½E[(l_f − 1)²]
    return 0.5 * (fake - 1.0).square().mean()


# --- relativistic pairing (Jolicoeur-Martineau 2018 RpGAN; Huang et al. 2024 R3GAN) ---


def rpgan_d_loss(real: Tensor, fake: Tensor) -> Tensor:
    # Pairs real i with fake i. D minimises E[f(l_f − l_r)] with f = softplus:
    #   E[−log σ(l_r − l_f)] = E[softplus(l_f − l_r)]
    # D only has to rank each real above its fake, not push every real to one side of a fixed
    # boundary: where G has dropped a mode, the reals there still yield a gradient that moves
    # the fakes paired with them (R3GAN: no mode dropping for a full-support fake distribution).
    return F.softplus(fake - real).mean()


def rpgan_g_loss(fake: Tensor, real: Tensor) -> Tensor:
    # G minimises E[softplus(l_r − l_f)], the same pairs with the roles swapped; l_r is D on a
    # real batch, a constant for G.
    return F.softplus(real - fake).mean()


# --- dispatch on TrainConfig.loss ---

_SMOOTHABLE_D_LOSSES: dict[str, Callable[[Tensor, Tensor, float], Tensor]] = {
    "minimax": minimax_d_loss,
    "non_saturating": minimax_d_loss,
    "lsgan": lsgan_d_loss,
}
_D_LOSSES: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "hinge": hinge_d_loss,
    "wgan": wasserstein_d_loss,
    "wgan_gp": wasserstein_d_loss,
    "rpgan": rpgan_d_loss,
}
RELATIVISTIC = ("rpgan",)  # losses whose G step needs D's logits on real data too
_G_LOSSES: dict[str, Callable[[Tensor], Tensor]] = {
    "minimax": minimax_g_loss,
    "non_saturating": non_saturating_g_loss,
    "hinge": hinge_g_loss,
    "wgan": wasserstein_g_loss,
    "wgan_gp": wasserstein_g_loss,
    "lsgan": lsgan_g_loss,
}


def d_loss(loss: str, real: Tensor, fake: Tensor, label_smoothing: float = 0.0) -> Tensor:
    """D's loss for ``TrainConfig.loss``; label smoothing only where the loss has a real target."""
    if loss in _SMOOTHABLE_D_LOSSES:
        return _SMOOTHABLE_D_LOSSES[loss](real, fake, label_smoothing)
    if loss in _D_LOSSES:
        if label_smoothing:
            raise ValueError(f"label_smoothing does not apply to the {loss!r} loss")
        return _D_LOSSES[loss](real, fake)
    raise ValueError(f"unknown loss {loss!r}; known: {sorted([*_G_LOSSES, *RELATIVISTIC])}")


def g_loss(loss: str, fake: Tensor, real: Tensor | None = None) -> Tensor:
    """G's loss for ``TrainConfig.loss``; a relativistic loss also takes D's logits on reals."""
    if loss in RELATIVISTIC:
        if real is None:
            raise ValueError(f"the {loss!r} loss compares fakes with reals: pass real logits")
        return rpgan_g_loss(fake, real)
    if loss not in _G_LOSSES:
        raise ValueError(f"unknown loss {loss!r}; known: {sorted([*_G_LOSSES, *RELATIVISTIC])}")
    return _G_LOSSES[loss](fake)


# --- gradient penalties ---


def _input_gradient(critic: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    """∇_x Σ_i D(x)_i per sample, flattened to (B, ·), kept in the graph (create_graph=True)."""
    x = x.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(x).sum(), x, create_graph=True)
    return grad.flatten(1)


def gradient_penalty(
    critic: Callable[[Tensor], Tensor], real: Tensor, fake: Tensor, generator: torch.Generator
) -> Tensor:
    """WGAN-GP's penalty at random interpolates of real and fake (both taken as constants)."""
    # E[(‖∇_x̂ D(x̂)‖₂ − 1)²],  x̂ = ε·x + (1 − ε)·x̃,  ε ~ U[0, 1] per sample
    shape = (real.shape[0],) + (1,) * (real.dim() - 1)
    eps = torch.rand(shape, generator=generator, device=real.device, dtype=real.dtype)
    x_hat = eps * real.detach() + (1.0 - eps) * fake.detach()
    norms = torch.linalg.vector_norm(_input_gradient(critic, x_hat), dim=1)
    return (norms - 1.0).square().mean()


def gradient_norm_penalty(critic: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    """E‖∇_x D(x)‖² (R1 on reals, R2 on fakes; the caller scales by γ/2), x taken as constant."""
    # E[‖∇_x D(x)‖₂²]  (Mescheder et al. 2018)
    return _input_gradient(critic, x).square().sum(dim=1).mean()


# --- ACGAN (Odena et al. 2017) ---


def classification_loss(class_logits: Tensor, labels: Tensor) -> Tensor:
    # E[−log softmax(c)_y] = cross-entropy of the class head against the labels
    return F.cross_entropy(class_logits, labels)
