"""Sampling: load a generator from a checkpoint and turn noise into images.

Deterministic by construction: z is drawn on the CPU from a generator seeded with ``seed``, so the
same checkpoint and seed give the same images on any device (up to that device's arithmetic).
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
from gan.models import MLPGenerator, build_models


def load_generator(path: Path, device: str = "cpu") -> tuple[MLPGenerator, TrainConfig, int]:
    """(generator in eval mode, its config, its step) from the checkpoint at ``path``."""
    state = load_checkpoint(path, map_location=device)
    cfg = from_dict(state["config"])
    G, _ = build_models(cfg)
    G.load_state_dict(state["generator"])
    return G.to(device).eval(), cfg, int(state["step"])


@torch.inference_mode()
def generate(G: MLPGenerator, n: int, seed: int) -> np.ndarray:
    """``n`` images from ``G`` as a uint8 array (n, H, W) (or (n, C, H, W) for C > 1)."""
    z = torch.randn(n, G.latent_dim, generator=torch.Generator().manual_seed(seed))
    device = next(G.parameters()).device
    images = to_uint8(G(z.to(device))).cpu()
    return (images.squeeze(1) if images.shape[1] == 1 else images).numpy()


def image_grid(images: np.ndarray, nrow: int | None = None, padding: int = 2) -> np.ndarray:
    """Tile uint8 images (n, H, W) into one (rows, cols) image: ``nrow`` per row (default
    ceil(sqrt(n))), ``padding`` black pixels between and around them."""
    n, h, w = images.shape
    nrow = nrow or math.ceil(math.sqrt(n))
    rows = math.ceil(n / nrow)
    grid = np.zeros((padding + rows * (h + padding), padding + nrow * (w + padding)), np.uint8)
    for i, image in enumerate(images):
        top = padding + (i // nrow) * (h + padding)
        left = padding + (i % nrow) * (w + padding)
        grid[top : top + h, left : left + w] = image
    return grid


def png_bytes(image: np.ndarray) -> bytes:
    """A uint8 grayscale image (H, W) as PNG bytes."""
    buffer = io.BytesIO()
    Image.fromarray(image, mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


def npy_bytes(array: np.ndarray) -> bytes:
    """``array`` in NumPy's .npy format (read back with ``np.load(io.BytesIO(data))``)."""
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()
