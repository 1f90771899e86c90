"""The `classic` preset for 2000 steps on the MNIST 10k split, with Adam beta1 = 0.5 (the preset)
and 0.9 (torch's default), on this machine. Reports wall time, training images/s, final losses
and the digit statistics of tests/quality.py, and writes each run's 8x8 sample grid.

    .venv/bin/python -m bench.classic_quality --data ../shared/data/mnist --out bench-out
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import torch

from gan.config import resolve
from gan.data import load_mnist
from gan.sample import generate, image_grid, load_generator, png_bytes
from gan.train import Progress, train
from tests.quality import digit_statistics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    images, _ = load_mnist(args.data, download=False)
    real = images.squeeze(1).numpy().astype(float)
    print(f"# {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}, {len(images)} images, {args.steps} steps")  # fmt: skip
    print("| beta1 | seed | wall s | images/s | D loss | G loss | near-black | mean-image corr |")
    print("|---|---|---|---|---|---|---|---|")
    for beta1 in (0.5, 0.9):
        for seed in args.seeds:
            cfg = resolve(
                "classic", max_steps=args.steps, seed=seed, beta1=beta1,
                log_every=args.steps, checkpoint_every=args.steps,
            )  # fmt: skip
            last: list[Progress] = []
            with tempfile.TemporaryDirectory() as tmp:
                start = time.perf_counter()
                result = train(cfg, images, Path(tmp), progress=last.append)
                wall = time.perf_counter() - start
                G, _, _ = load_generator(result.checkpoint)
            samples = generate(G, 256, seed=0)
            (args.out / f"classic-beta1_{beta1}-seed{seed}.png").write_bytes(
                png_bytes(image_grid(samples[:64]))
            )
            near_black, corr = digit_statistics(samples, real)
            p = last[-1]
            print(f"| {beta1} | {seed} | {wall:.1f} | {args.steps * cfg.batch_size / wall:.0f} | "
                  f"{p.d_loss:.3f} | {p.g_loss:.2f} | {near_black:.2f} | {corr:.2f} |")  # fmt: skip


if __name__ == "__main__":
    main()
