"""Differentiable augmentation of D's inputs, and instance noise.

DiffAugment (Zhao et al. 2020): the trainer applies the same kind of random transforms to real
images and to G's samples, in D's steps and G's alike, before D sees them. They are
differentiable functions of the pixels, so G's gradients flow through them, and since D sees
only augmented images of both kinds, G is not pushed to produce the augmentations. Every random
draw comes from the ``generator`` argument (on the images' device), so a run stays a pure
function of (config, seed).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def augment(x: Tensor, policy: str, generator: torch.Generator) -> Tensor:
    """``x`` (B, C, H, W) with the comma-separated transforms of ``policy`` applied in order."""
    if policy == "none":
        return x
    for name in policy.split(","):
        if name == "translation":
            x = translation(x, generator)
        elif name == "cutout":
            x = cutout(x, generator)
        else:
            raise ValueError(f"unknown augmentation {name!r} in policy {policy!r}")
    return x


def translation(x: Tensor, generator: torch.Generator, ratio: float = 0.125) -> Tensor:
    """Shift each image by its own integer (dy, dx), |dy| ≤ ratio·H, |dx| ≤ ratio·W, zero-padded."""
    b, _, h, w = x.shape
    sh, sw = int(h * ratio), int(w * ratio)
    dy = torch.randint(-sh, sh + 1, (b, 1, 1), generator=generator, device=x.device)
    dx = torch.randint(-sw, sw + 1, (b, 1, 1), generator=generator, device=x.device)
    # out[i, j] = x[i − dy, j − dx]; indices that fall outside read the 1-pixel zero border.
    rows = (torch.arange(h, device=x.device).view(1, h, 1) - dy + 1).clamp(0, h + 1)
    cols = (torch.arange(w, device=x.device).view(1, 1, w) - dx + 1).clamp(0, w + 1)
    batch = torch.arange(b, device=x.device).view(b, 1, 1)
    padded = F.pad(x, (1, 1, 1, 1)).permute(0, 2, 3, 1)  # (B, H+2, W+2, C)
    return padded[batch, rows, cols].permute(0, 3, 1, 2)


def cutout(x: Tensor, generator: torch.Generator, ratio: float = 0.5) -> Tensor:
    """Zero a (ratio·H × ratio·W) box per image, at a random position wholly inside the image."""
    b, _, h, w = x.shape
    kh, kw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    top = torch.randint(0, h - kh + 1, (b, 1), generator=generator, device=x.device)
    left = torch.randint(0, w - kw + 1, (b, 1), generator=generator, device=x.device)
    i = torch.arange(h, device=x.device).view(1, h)
    j = torch.arange(w, device=x.device).view(1, w)
    in_rows = (i >= top) & (i < top + kh)  # (B, H)
    in_cols = (j >= left) & (j < left + kw)  # (B, W)
    keep = ~(in_rows[:, :, None] & in_cols[:, None, :])  # (B, H, W)
    return x * keep.unsqueeze(1).to(x.dtype)


def instance_noise(x: Tensor, sigma: float, generator: torch.Generator) -> Tensor:
    """x + σ·N(0, I) (Sønderby et al. 2017); ``x`` itself, with no draw, when σ = 0."""
    if sigma == 0:
        return x
    noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return x + sigma * noise
