import io
import math

import numpy as np
import pytest
import torch
from PIL import Image
from torch.testing import assert_close

from gan.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from gan.config import resolve
from gan.sample import (
    generate,
    generate_class_rows,
    image_grid,
    interpolate,
    latent,
    load_generator,
    npy_bytes,
    png_bytes,
    read_generator,
    slerp,
    truncate,
    walk_latents,
)
from gan.train import train
from tests.conftest import first


def test_grid_layout():
    images = np.stack([np.full((28, 28), i, np.uint8) for i in range(1, 65)])
    grid = image_grid(images)
    assert grid.shape == (2 + 8 * 30, 2 + 8 * 30)
    assert grid[2, 2] == 1 and grid[2 + 30, 2 + 30] == 10 and grid[-3, -3] == 64
    assert grid[0].max() == 0 and grid[:, 30:32].max() == 0  # borders are black
    assert image_grid(images[:5]).shape == (2 + 2 * 30, 2 + 3 * 30)  # 3 per row, 2 rows


def test_samples_are_deterministic_per_seed(tmp_path, mnist):
    cfg = resolve("classic", max_steps=2, log_every=1)
    G, _, _ = load_generator(train(cfg, first(mnist, 128), tmp_path).checkpoint)
    a, b, c = generate(G, 16, 0), generate(G, 16, 0), generate(G, 16, 1)
    assert a.shape == (16, 28, 28) and a.dtype == np.uint8
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert png_bytes(image_grid(a)) == png_bytes(image_grid(b))
    assert np.array_equal(np.load(io.BytesIO(npy_bytes(a))), a)
    assert Image.open(io.BytesIO(png_bytes(image_grid(a)))).size == (122, 122)


def test_truncation_bounds_the_latent_and_keeps_what_is_inside():
    z = latent(64, 100, seed=0)
    for t in (0.25, 0.5, 1.0, 2.0):
        truncated = latent(64, 100, seed=0, truncation=t)
        assert truncated.abs().max() <= t
        inside = z.abs() <= t
        assert_close(truncated[inside], z[inside], rtol=0, atol=0)
        assert not torch.equal(truncated, z)
        assert_close(latent(64, 100, seed=0, truncation=t), truncated, rtol=0, atol=0)
    assert not torch.equal(latent(64, 100, 1, 0.5), latent(64, 100, 0, 0.5))
    above = z.abs().max().item() + 0.1  # nothing to redraw
    assert_close(latent(64, 100, seed=0, truncation=above), z, rtol=0, atol=0)


def test_truncation_draws_the_truncated_normal():
    # N(0, 1) restricted to [−1, 1] has variance 1 − 2φ(1) / (2Φ(1) − 1) ≈ 0.2911.
    variance = 1 - 2 * math.exp(-0.5) / math.sqrt(2 * math.pi) / math.erf(1 / math.sqrt(2))
    z = latent(1000, 100, seed=3, truncation=1.0)
    assert_close(z.var().item(), variance, rtol=0, atol=0.005)
    assert_close(z.mean().item(), 0.0, rtol=0, atol=0.005)
    for t in (0.0, -1.0, math.nan, math.inf):
        with pytest.raises(ValueError, match="positive finite"):
            truncate(torch.zeros(2, 2), t, torch.zeros(2, 2))


def test_slerp_goes_from_end_to_end_along_the_sphere():
    z0, z1 = latent(3, 100, seed=0), latent(3, 100, seed=1)
    t = torch.tensor([i / 6 for i in range(7)])
    path = slerp(z0, z1, t)
    assert path.shape == (3, 7, 100)
    assert torch.equal(path[:, 0], z0) and torch.equal(path[:, -1], z1)
    # Between unit vectors: unit norm all the way, the angle from z0 growing linearly in t.
    a, b = z0 / z0.norm(dim=1, keepdim=True), z1 / z1.norm(dim=1, keepdim=True)
    unit = slerp(a, b, t)
    assert_close(unit.norm(dim=-1), torch.ones(3, 7))
    omega = torch.arccos((a * b).sum(dim=1))
    angles = torch.arccos((unit * a[:, None]).sum(dim=-1).clamp(-1, 1))
    assert_close(angles, omega[:, None] * t, atol=1e-3, rtol=0)
    # Parallel ends: the straight line.
    assert_close(slerp(z0, 2 * z0, t), z0[:, None] * (1 + t[None, :, None]))


def test_walks_end_at_the_latents_of_their_seeds():
    walks = walk_latents(100, seed_from=3, seed_to=8, steps=5, rows=2, truncation=1.0)
    assert walks.shape == (2, 5, 100)
    for r in range(2):
        assert torch.equal(walks[r, 0], latent(1, 100, 3 + r, truncation=1.0)[0])
        assert torch.equal(walks[r, -1], latent(1, 100, 8 + r, truncation=1.0)[0])
    with pytest.raises(ValueError, match="2 steps"):
        walk_latents(100, 0, 1, steps=1)


def as_int(samples: np.ndarray) -> torch.Tensor:
    """uint8 samples as ints, to compare with a tolerance of one grey level (a batch of another
    size may take other kernels, rounding the last bit differently)."""
    return torch.from_numpy(samples).int()


def test_truncated_samples_and_interpolations(tmp_path, mnist):
    cfg = resolve("classic", max_steps=2, log_every=1)
    G, _, _ = load_generator(train(cfg, first(mnist, 128), tmp_path).checkpoint)
    plain, truncated = generate(G, 16, 0), generate(G, 16, 0, truncation=0.5)
    assert not np.array_equal(plain, truncated)
    assert np.array_equal(truncated, generate(G, 16, 0, truncation=0.5))

    walks = interpolate(G, seed_from=3, seed_to=8, steps=5, rows=2)
    assert walks.shape == (2, 5, 28, 28) and walks.dtype == np.uint8
    for r in range(2):
        assert_close(as_int(walks[r, 0]), as_int(generate(G, 1, 3 + r)[0]), rtol=0, atol=1)
        assert_close(as_int(walks[r, -1]), as_int(generate(G, 1, 8 + r)[0]), rtol=0, atol=1)
    assert np.array_equal(walks, interpolate(G, 3, 8, 5, 2))


def test_ema_and_raw_weights(tmp_path, mnist):
    cfg = resolve("stable", max_steps=2, log_every=1)
    path = train(cfg, first(mnist, 128), tmp_path).checkpoint
    ema, raw = read_generator(path), read_generator(path, ema=False)
    assert ema.ema and not raw.ema and ema.step == raw.step == 2
    assert not np.array_equal(generate(ema.generator, 8, 0), generate(raw.generator, 8, 0))
    classic = resolve("classic", max_steps=2, log_every=1)
    path = train(classic, first(mnist, 128), tmp_path / "classic").checkpoint
    assert not read_generator(path).ema  # the run kept no EMA: the raw generator


def test_class_rows_of_a_conditional_generator(tmp_path, mnist):
    cfg = resolve("stable-conditional", max_steps=2, log_every=1)
    G, _, _ = load_generator(train(cfg, first(mnist, 128), tmp_path).checkpoint)
    rows = generate_class_rows(G, nrow=3, seed=5)
    assert rows.shape == (30, 28, 28)
    for k in range(10):  # row k: class k, with the latents of generate's first 3 samples
        one_class = generate(G, 3, 5, labels=torch.full((3,), k))
        assert_close(as_int(rows[3 * k : 3 * k + 3]), as_int(one_class), rtol=0, atol=1)
    sevens = interpolate(G, seed_from=0, seed_to=1, steps=3, label=7)
    assert_close(
        as_int(sevens[0, 0]), as_int(generate(G, 1, 0, torch.full((1,), 7))[0]), rtol=0, atol=1
    )
    unconditional, _, _ = load_generator(
        train(resolve("classic", max_steps=1), first(mnist, 128), tmp_path / "u").checkpoint
    )
    with pytest.raises(ValueError, match="not class-conditional"):
        generate_class_rows(unconditional, 3, 0)


def test_a_generator_of_another_layout_is_a_checkpoint_error(tmp_path, mnist):
    # An older version's conditional DCGAN G took the label concatenated to z.
    cfg = resolve("stable-conditional", max_steps=1, width=8, batch_size=16, log_every=1)
    path = train(cfg, first(mnist, 128), tmp_path).checkpoint
    state = load_checkpoint(path)
    state["generator_ema"]["embed.weight"] = torch.zeros(10, 100)
    save_checkpoint(state, path)
    with pytest.raises(CheckpointError, match="different layout"):
        read_generator(path)
    assert read_generator(path, ema=False).step == 1  # the raw generator still loads
