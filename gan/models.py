"""Generator and discriminator networks.

The textbook MNIST GAN: two multilayer perceptrons. The discriminator returns logits (no sigmoid):
the losses in ``gan.losses`` work on logits, which is what keeps them finite.
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import nn

from gan.config import TrainConfig

IMAGE_SHAPE = (1, 28, 28)  # channels, height, width of MNIST digits


def _mlp(sizes: list[int], out: nn.Module | None) -> nn.Sequential:
    """Linear layers of the given sizes with LeakyReLU(0.2) between them and ``out`` last."""
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(itertools.pairwise(sizes)):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(nn.LeakyReLU(0.2))
    if out is not None:
        layers.append(out)
    return nn.Sequential(*layers)


class MLPGenerator(nn.Module):
    """z (B, latent_dim) → images (B, 1, 28, 28) in [−1, 1]: 100→256→512→1024→784, Tanh."""

    def __init__(self, latent_dim: int = 100) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.net = _mlp([latent_dim, 256, 512, 1024, math.prod(IMAGE_SHAPE)], nn.Tanh())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).view(-1, *IMAGE_SHAPE)


class MLPDiscriminator(nn.Module):
    """images (B, 1, 28, 28) → logits (B,): 784→512→256→1."""

    def __init__(self) -> None:
        super().__init__()
        self.net = _mlp([math.prod(IMAGE_SHAPE), 512, 256, 1], None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.flatten(1)).squeeze(1)


def build_models(cfg: TrainConfig) -> tuple[MLPGenerator, MLPDiscriminator]:
    """Freshly initialised (G, D) for ``cfg``; seed torch first for reproducible weights."""
    return MLPGenerator(cfg.latent_dim), MLPDiscriminator()
