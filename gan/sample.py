"""Sampling: load a generator from a checkpoint and turn noise into images (or points).

Deterministic by construction: z is drawn on the CPU from a generator seeded with ``seed``, so the
same checkpoint and seed give the same images on any device (up to that device's arithmetic).
A conditional generator gets labels 0, 1, …, K−1, 0, 1, … unless told otherwise, so a grid with
K images per row shows one class per column. ``latent`` (with the truncation trick) and ``slerp``
(latent walks) are pure functions of their arguments.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from gan.checkpoint import CheckpointError, load_checkpoint
from gan.config import TrainConfig, from_dict
from gan.data import to_uint8
from gan.errors import first_line
from gan.models import Generator, build_models


@dataclass(frozen=True)
class LoadedGenerator:
    generator: Generator  # in eval mode
    config: TrainConfig
    step: int
    ema: bool  # True: the weights are the EMA's; False: the raw generator's


def read_generator(path: Path, device: str = "cpu", ema: bool = True) -> LoadedGenerator:
    """The generator of the checkpoint at ``path``, in eval mode, with its config and step.

    ``ema`` picks the exponential moving average of the generator's weights when the run kept
    one (``cfg.ema_decay > 0``); it is the better sampler, so it is the default. The result's
    ``ema`` says which weights were loaded.
    """
    state = load_checkpoint(path, map_location=device)
    cfg = from_dict(state["config"])
    data = state["data"]
    G, _ = build_models(cfg, tuple(data["shape"]), data["num_classes"])
    use_ema = ema and state["generator_ema"] is not None
    try:
        G.load_state_dict(state["generator_ema"] if use_ema else state["generator"])
    except RuntimeError as e:  # shapes of another network layout (an older version's)
        raise CheckpointError(
            f"{path.name} holds a generator of a different layout than this version builds for "
            f"its config (an older version's?): {first_line(e)}"
        ) from None
    return LoadedGenerator(G.to(device).eval(), cfg, int(state["step"]), use_ema)


def load_generator(
    path: Path, device: str = "cpu", ema: bool = True
) -> tuple[Generator, TrainConfig, int]:
    """(generator in eval mode, its config, its step) from the checkpoint at ``path``: see
    ``read_generator``."""
    loaded = read_generator(path, device, ema)
    return loaded.generator, loaded.config, loaded.step


def latent(n: int, dim: int, seed: int, truncation: float | None = None) -> torch.Tensor:
    """z (n, dim) for ``seed``: standard normal noise drawn on the CPU from a generator seeded
    with ``seed``. With ``truncation`` t > 0 (the truncation trick), entries with |z| > t are
    redrawn from the normal distribution restricted to [−t, t] (``truncate``), with uniforms
    drawn next from the same generator, so the result is still a function of (n, dim, seed, t):
    a smaller t gives samples nearer the mode, more typical and less varied."""
    rng = torch.Generator().manual_seed(seed)
    z = torch.randn(n, dim, generator=rng)
    if truncation is None:
        return z
    return truncate(z, truncation, torch.rand(n, dim, generator=rng, dtype=torch.float64))


def truncate(z: torch.Tensor, t: float, u: torch.Tensor) -> torch.Tensor:
    """``z`` with every entry outside [−t, t] replaced by a draw of N(0, 1) restricted to
    [−t, t], made from the uniform in [0, 1) at the same place of ``u`` (same shape as ``z``).

    Entries already inside are kept, so a t above max |z| changes nothing.
    """
    if not (math.isfinite(t) and t > 0):
        raise ValueError(f"truncation must be a positive finite number, not {t}")
    # Inverse-CDF sampling of the truncated normal. With Φ the standard normal CDF, Φ(x) is
    # uniform on [Φ(−t), Φ(t)] for x ~ N(0, 1) conditioned on −t ≤ x ≤ t, so for u ~ U(0, 1)
    #     x = Φ⁻¹(Φ(−t) + u · (Φ(t) − Φ(−t)))
    # has exactly that distribution (in float64, then clamped to ±t against rounding).
    low, high = torch.special.ndtr(torch.tensor([-t, t], dtype=torch.float64))
    redrawn = torch.special.ndtri(low + u * (high - low)).clamp_(-t, t).to(z.dtype)
    return torch.where(z.abs() > t, redrawn, z)


def slerp(z0: torch.Tensor, z1: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation from each row of ``z0`` to the same row of ``z1`` (B, D), at the
    fractions ``t`` (S,): (B, S, D); t = 0 gives z0 and t = 1 gives z1 exactly."""
    # With Ω the angle between z0 and z1 (cos Ω = ⟨z0, z1⟩ / (|z0| |z1|)),
    #     slerp(z0, z1; t) = sin((1 − t) Ω) / sin Ω · z0 + sin(t Ω) / sin Ω · z1
    # turns at a constant rate from z0 to z1 in their plane (along a circle when |z0| = |z1|). In
    # high dimensions Gaussian draws lie near the sphere of radius √D, where G was trained; the
    # straight line (1 − t) z0 + t z1 cuts inside it (norm ≈ √D / √2 halfway between two draws).
    # When sin Ω ≈ 0 (z0, z1 parallel or opposite) the formula is 0/0: use the straight line.
    a, b = z0.double()[:, None, :], z1.double()[:, None, :]
    cos = torch.nn.functional.cosine_similarity(a, b, dim=-1).clamp(-1.0, 1.0)  # (B, 1)
    omega = torch.arccos(cos)
    sin = torch.sin(omega)
    s = t.double()[None, :]  # (1, S)
    straight = sin.abs() < 1e-6
    w0 = torch.where(straight, 1.0 - s, torch.sin((1.0 - s) * omega) / sin)
    w1 = torch.where(straight, s, torch.sin(s * omega) / sin)
    return (w0[..., None] * a + w1[..., None] * b).to(z0.dtype)


def walk_latents(
    dim: int,
    seed_from: int,
    seed_to: int,
    steps: int,
    rows: int = 1,
    truncation: float | None = None,
) -> torch.Tensor:
    """z (rows, steps, dim) of ``rows`` latent walks: walk r goes by ``slerp`` in ``steps``
    evenly spaced fractions from ``latent(1, dim, seed_from + r, truncation)`` to that of
    ``seed_to + r``, so its ends are exactly the latents of the one-sample draws of those seeds.
    """
    if steps < 2:
        raise ValueError(f"a walk needs at least 2 steps, not {steps}")
    ends = [
        torch.cat([latent(1, dim, seed + r, truncation) for r in range(rows)])
        for seed in (seed_from, seed_to)
    ]
    fractions = torch.tensor([i / (steps - 1) for i in range(steps)], dtype=torch.float64)
    return slerp(ends[0], ends[1], fractions)


def default_labels(G: Generator, n: int) -> torch.Tensor | None:
    """Classes 0, 1, …, K−1, 0, 1, … for a conditional ``G``; None for an unconditional one."""
    return torch.arange(n) % G.num_classes if G.num_classes else None


@torch.inference_mode()
def decode(G: Generator, z: torch.Tensor, labels: torch.Tensor | None = None) -> np.ndarray:
    """``G``'s samples of the latents ``z`` (n, latent_dim): uint8 images (n, H, W), or
    (n, C, H, W) for C > 1, or float32 points (n, D). ``labels`` (n,) are the classes of a
    conditional generator (required for one, ignored by an unconditional one)."""
    device = next(G.parameters()).device
    out = G(z.to(device), labels.to(device) if G.num_classes and labels is not None else None)
    if len(G.shape) == 1:  # points
        return out.float().cpu().numpy()
    images = to_uint8(out.float()).cpu()
    return (images.squeeze(1) if images.shape[1] == 1 else images).numpy()


def generate(
    G: Generator,
    n: int,
    seed: int,
    labels: torch.Tensor | None = None,
    truncation: float | None = None,
) -> np.ndarray:
    """``n`` samples from ``G`` (see ``decode``) of ``latent(n, G.latent_dim, seed,
    truncation)``. ``labels`` (n,) picks the classes of a conditional generator (default
    0, 1, …, K−1 in turn)."""
    z = latent(n, G.latent_dim, seed, truncation)
    return decode(G, z, default_labels(G, n) if labels is None else labels)


def generate_class_rows(
    G: Generator, nrow: int, seed: int, truncation: float | None = None
) -> np.ndarray:
    """K·``nrow`` samples of a conditional ``G`` with K classes, class k at k·nrow … (k+1)·nrow−1
    (row k of a grid of ``nrow`` per row). Column j has the same latent in every row, that of
    sample j of ``generate(G, nrow, seed, truncation=truncation)``, so a column shows one style
    in every class."""
    if not G.num_classes:
        raise ValueError("this generator is not class-conditional")
    z = latent(nrow, G.latent_dim, seed, truncation).repeat(G.num_classes, 1)
    return decode(G, z, torch.arange(G.num_classes).repeat_interleave(nrow))


def interpolate(
    G: Generator,
    seed_from: int,
    seed_to: int,
    steps: int,
    rows: int = 1,
    label: int | None = None,
    truncation: float | None = None,
) -> np.ndarray:
    """Samples of ``walk_latents``' walks: (rows, steps, *sample shape), walk r in row r. A
    conditional ``G`` draws class ``label`` in every row, or by default class r mod K in row r
    (class 0 in the first, as ``generate`` draws its first sample)."""
    z = walk_latents(G.latent_dim, seed_from, seed_to, steps, rows, truncation)
    labels = None
    if G.num_classes:
        classes = (
            torch.arange(rows) % G.num_classes if label is None else torch.full((rows,), label)
        )
        labels = classes.repeat_interleave(steps)
    samples = decode(G, z.reshape(rows * steps, -1), labels)
    return samples.reshape(rows, steps, *samples.shape[1:])


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
    """A uint8 grayscale (H, W) or RGB (H, W, 3) image as PNG bytes. zlib level 1: a grid of
    digits comes out about 9% larger than at PIL's default level 6, in under half the time."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG", compress_level=1)
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
