"""Sampling: load a generator from a checkpoint and turn noise into images (or points).

Deterministic by construction: z is drawn on the CPU from a generator seeded with ``seed``, so the
same checkpoint and seed give the same images on any device (up to that device's arithmetic).
A conditional generator gets labels 0, 1, …, K−1, 0, 1, … unless told otherwise, so a grid with
K images per row shows one class per column.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from gan.checkpoint import load_checkpoint
from gan.config import TrainConfig, from_dict
from gan.data import to_uint8
from gan.models import Generator, build_models


def load_generator(
    path: Path, device: str = "cpu", ema: bool = True
) -> tuple[Generator, TrainConfig, int]:
    """(generator in eval mode, its config, its step) from the checkpoint at ``path``.

    ``ema`` picks the exponential moving average of the generator's weights when the run kept
    one (``cfg.ema_decay > 0``); it is the better sampler, so it is the default.
    """
    state = load_checkpoint(path, map_location=device)
    cfg = from_dict(state["config"])
    data = state["data"]
    G, _ = build_models(cfg, tuple(data["shape"]), data["num_classes"])
    weights = state["generator_ema"] if ema and state["generator_ema"] is not None else None
    G.load_state_dict(weights or state["generator"])
    return G.to(device).eval(), cfg, int(state["step"])


@torch.inference_mode()
def generate(G: Generator, n: int, seed: int, labels: torch.Tensor | None = None) -> np.ndarray:
    """``n`` samples from ``G``: uint8 images (n, H, W), or (n, C, H, W) for C > 1, or float32
    points (n, D). ``labels`` (n,) picks the classes of a conditional generator."""
    z = torch.randn(n, G.latent_dim, generator=torch.Generator().manual_seed(seed))
    if G.num_classes and labels is None:
        labels = torch.arange(n) % G.num_classes
    device = next(G.parameters()).device
    out = G(z.to(device), labels.to(device) if G.num_classes and labels is not None else None)
    if len(G.shape) == 1:  # points
        return out.float().cpu().numpy()
    images = to_uint8(out.float()).cpu()
    return (images.squeeze(1) if images.shape[1] == 1 else images).numpy()


def image_grid(images: np.ndarray, nrow: int | None = None, padding: int = 2) -> np.ndarray:
    """Tile uint8 images (n, H, W) or (n, C, H, W) into one image, (rows, cols) or
    (rows, cols, C): ``nrow`` per row (default ceil(sqrt(n))), ``padding`` black pixels between
    and around them."""
    if images.ndim == 4:
        images = images.transpose(0, 2, 3, 1)  # (n, H, W, C)
    n, h, w = images.shape[:3]
    nrow = nrow or math.ceil(math.sqrt(n))
    rows = math.ceil(n / nrow)
    shape = (padding + rows * (h + padding), padding + nrow * (w + padding), *images.shape[3:])
    grid = np.zeros(shape, np.uint8)
    for i, image in enumerate(images):
        top = padding + (i // nrow) * (h + padding)
        left = padding + (i % nrow) * (w + padding)
        grid[top : top + h, left : left + w] = image
    return grid


def scatter_image(points: np.ndarray, size: int = 256, extent: float | None = None) -> np.ndarray:
    """2D points as a uint8 (size, size) picture: white dots on black, the origin in the centre,
    ±``extent`` at the edges (default: just beyond the farthest point)."""
    extent = extent or float(max(np.abs(points).max() * 1.1, 1e-6))
    pixels = np.round((points[:, :2] / extent + 1) / 2 * (size - 1)).astype(int)
    inside = ((pixels >= 0) & (pixels < size)).all(axis=1)
    picture = np.zeros((size, size), np.uint8)
    picture[size - 1 - pixels[inside, 1], pixels[inside, 0]] = 255  # y grows upwards
    return picture


def png_bytes(image: np.ndarray) -> bytes:
    """A uint8 grayscale (H, W) or RGB (H, W, 3) image as PNG bytes."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def npy_bytes(array: np.ndarray) -> bytes:
    """``array`` in NumPy's .npy format (read back with ``np.load(io.BytesIO(data))``)."""
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def preview_png(samples: np.ndarray, nrow: int | None = None) -> bytes:
    """PNG of ``generate``'s output: a grid of images, or a scatter plot of points."""
    if samples.dtype != np.uint8:
        return png_bytes(scatter_image(samples))
    return png_bytes(image_grid(samples, nrow))
