"""A simple check that samples look like MNIST digits rather than noise."""

from __future__ import annotations

import numpy as np


def digit_statistics(images: np.ndarray, real: np.ndarray) -> tuple[float, float]:
    """(share of near-black pixels, correlation of the mean image with the real mean image).

    MNIST digits are white strokes on black: about 84% of pixels are below 32 and the mean image
    is a centred blob. An untrained generator outputs mid-grey noise: ~0% and ~0.
    """
    near_black = float((images < 32).mean())
    correlation = np.corrcoef(images.mean(0).ravel(), real.mean(0).ravel())[0, 1]
    return near_black, float(correlation)


def looks_like_digits(images: np.ndarray, real: np.ndarray) -> bool:
    """Thresholds set from the 10k split. A classic run swings on its way (its G and D chase
    each other): with seed 0 on torch 2.14 with AVX-512 it scores (0.19, 0.58) at step 300 and
    (0.45, 0.68) at 600 with two CPU threads, but (0.41, 0.76) and (0.05, 0.08) with one (the
    API's setting, which a test process importing it keeps). At 1000 steps seeds 0 and 1 pass
    with margin either way, (0.69 to 0.80, 0.77 to 0.79) and (0.46 to 0.59, 0.75 to 0.77), so
    the tests train 1000 (BENCHMARKS.md). An untrained generator fails both
    (tests/gan/test_train.py checks it)."""
    near_black, correlation = digit_statistics(images, real)
    return near_black > 0.2 and correlation > 0.5
