import io

import numpy as np
from PIL import Image

from gan.config import resolve
from gan.sample import generate, image_grid, load_generator, npy_bytes, png_bytes
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
