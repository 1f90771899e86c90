"""GAN losses as pure functions of discriminator logits.

With D(x) = σ(l) for a logit l, the logs that textbook code takes of sigmoid outputs are
    log σ(l)     = −softplus(−l)
    log(1 − σ(l)) = −softplus(l)
softplus is finite for every finite l, whereas log(σ(l)) underflows to log(0) = −inf once σ(l)
rounds to 0 (l below about −17 in float32, −88 for the exp itself). All losses return a scalar
to be *minimised* and average over the batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def minimax_d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    # D maximises  E[log D(x)] + E[log(1 − D(G(z)))]
    # ⇔ minimises  E[softplus(−l_real)] + E[softplus(l_fake)]
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def minimax_g_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    # G minimises  E[−log D(G(z))] = E[softplus(−l_fake)]
    # (Goodfellow et al. 2014's practical form of the minimax game, as textbook code trains it:
    #  binary cross-entropy of the fakes against the "real" label.)
    return F.softplus(-fake_logits).mean()
