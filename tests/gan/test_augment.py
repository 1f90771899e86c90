from typing import get_args

import pytest
import torch
from torch.testing import assert_close

from gan.augment import augment, instance_noise
from gan.config import Augment


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def marked_images(b: int, c: int, h: int, w: int) -> torch.Tensor:
    """Random images whose channel 0 is a single 1 at the centre: it shows each image's shift."""
    x = torch.rand(b, c, h, w, generator=gen(123)) + 1.0  # ≥ 1: never 0 by chance
    x[:, 0] = 0.0
    x[:, 0, h // 2, w // 2] = 1.0
    return x


def shifted(img: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """img (C, H, W) moved down by dy and right by dx, zero-filled: out[i, j] = img[i−dy, j−dx]."""
    _, h, w = img.shape
    out = torch.zeros_like(img)
    out[:, max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = img[
        :, max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)
    ]
    return out


def test_none_returns_the_input_and_draws_nothing():
    x = torch.rand(2, 1, 8, 8)
    g = gen()
    state = g.get_state()
    assert augment(x, "none", g) is x
    assert torch.equal(g.get_state(), state)


def test_every_configurable_policy_keeps_shape_and_dtype():
    x = torch.rand(3, 2, 12, 12)
    for policy in get_args(Augment):
        out = augment(x, policy, gen())
        assert out.shape == x.shape and out.dtype == x.dtype, policy


@pytest.mark.parametrize("h,w", [(16, 16), (28, 28), (8, 12)])
def test_translation_is_an_integer_shift_of_at_most_an_eighth_with_zero_padding(h, w):
    b = 200
    x = marked_images(b, 3, h, w)
    out = augment(x, "translation", gen(1))
    assert out.shape == x.shape
    shifts = []
    for i in range(b):
        # The centre marker moves by at most H/8, W/8, so it is still in the image.
        (pos,) = (out[i, 0] == 1.0).nonzero().tolist()
        dy, dx = pos[0] - h // 2, pos[1] - w // 2
        assert abs(dy) <= h / 8 and abs(dx) <= w / 8
        assert out[i, 0].sum() == 1.0  # the marker is moved, not spread
        # Every channel moves by the same shift; what comes in from outside is 0.
        assert torch.equal(out[i], shifted(x[i], dy, dx))
        shifts.append((dy, dx))
    # Independent draws per sample, over the whole range in both directions.
    assert {dy for dy, _ in shifts} == set(range(-(h // 8), h // 8 + 1))
    assert {dx for _, dx in shifts} == set(range(-(w // 8), w // 8 + 1))


@pytest.mark.parametrize("policy", ["translation", "cutout", "translation,cutout"])
def test_same_seed_same_augmentation_other_seed_another(policy):
    x = torch.rand(16, 1, 16, 16, generator=gen(5))
    a, b, c = (augment(x, policy, gen(s)) for s in (3, 3, 4))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


@pytest.mark.parametrize("h,w", [(16, 16), (28, 28), (9, 9)])
def test_cutout_zeroes_exactly_one_half_size_square_per_sample(h, w):
    b = 100
    x = torch.rand(b, 2, h, w, generator=gen(9)) + 1.0  # ≥ 1: a 0 in the output is the cutout
    out = augment(x, "cutout", gen(2))
    side = (h + 1) // 2  # half the size, rounded up (9 → 5)
    corners = set()
    for i in range(b):
        zero = out[i] == 0
        assert torch.equal(zero[0], zero[1])  # the same box in every channel
        rows = zero[0].any(dim=1).nonzero().flatten()
        cols = zero[0].any(dim=0).nonzero().flatten()
        top, left = rows.min().item(), cols.min().item()
        assert len(rows) == side and len(cols) == side
        assert rows.max() - top == side - 1 and cols.max() - left == side - 1  # contiguous
        assert zero[0].sum() == side * side  # and filled: a square
        # Outside the square, the pixels are untouched.
        assert torch.equal(out[i][~zero], x[i][~zero])
        corners.add((top, left))
    assert len(corners) > 10  # a random position per sample


def test_translation_then_cutout():
    x = torch.ones(50, 1, 16, 16)
    out = augment(x, "translation,cutout", gen(0))
    zeros = (out == 0).flatten(1).sum(1)
    assert (zeros >= 8 * 8).all()  # the cutout square, at least
    assert (zeros > 8 * 8).any()  # plus translation's zero padding
    assert (zeros <= 16 * 16 - 14 * 14 + 8 * 8).all()  # at most 2 pixels each way, plus the square


@pytest.mark.parametrize("policy", ["translation", "cutout", "translation,cutout"])
def test_gradients_flow_to_the_input(policy):
    x = (torch.rand(4, 2, 16, 16) + 1.0).requires_grad_(True)
    out = augment(x, policy, gen(0))
    out.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    # Each non-zero output pixel is a copy of its own input pixel: the gradient of the sum is 1
    # at the pixels that were kept and 0 at those shifted out or cut out.
    assert set(x.grad.unique().tolist()) <= {0.0, 1.0}
    assert (x.grad == 1.0).sum() == (out != 0).sum()


def test_augment_rejects_unknown_policies():
    x = torch.rand(2, 1, 8, 8)
    for bad in ("flip", "translation,flip", "", "Translation"):
        with pytest.raises(ValueError, match="unknown augmentation"):
            augment(x, bad, gen())


def test_randomness_comes_only_from_the_generator():
    x = torch.rand(4, 1, 16, 16)
    state = torch.get_rng_state()
    for policy in get_args(Augment):
        augment(x, policy, gen())
    instance_noise(x, 0.5, gen())
    assert torch.equal(torch.get_rng_state(), state)


def test_instance_noise_adds_sigma_times_standard_normal():
    x = torch.rand(3, 1, 8, 8)
    expected = x + 0.3 * torch.randn(x.shape, generator=gen(4))
    assert_close(instance_noise(x, 0.3, gen(4)), expected)
    assert instance_noise(x, 0.0, gen(4)) is x
    big = instance_noise(torch.zeros(100_000), 2.0, gen(0))
    assert abs(big.mean().item()) < 0.05 and abs(big.std().item() - 2.0) < 0.05


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_runs_on_cuda_with_a_cuda_generator():
    x = torch.rand(4, 3, 16, 16, device="cuda", requires_grad=True)
    g = torch.Generator(device="cuda").manual_seed(0)
    out = augment(instance_noise(x, 0.1, g), "translation,cutout", g)
    out.sum().backward()
    assert out.device == x.device and x.grad is not None
