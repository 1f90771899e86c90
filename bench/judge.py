"""Train (or load) the MNIST judge and print the figures a user compares a generator against.

Prints the judge's held-out accuracy and training time, then gan.metrics.evaluate_images against
the real data of: real digits (a perfect generator, whose fid equals fid_baseline), real digits
shifted 3 pixels (a slightly-off generator), uniform noise, and one digit repeated (collapse).

    .venv/bin/python -m bench.judge --data ../shared/data/mnist --cache DIR
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import torch

from gan.data import load_dataset
from gan.judge import judge_for
from gan.metrics import evaluate_images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--cache", type=Path, required=True)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    cached = (args.cache / "judge-mnist.pt").is_file()
    start = time.perf_counter()
    judge = judge_for("mnist", args.data, args.cache, device=args.device)
    seconds = time.perf_counter() - start
    print(f"# {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}, device {args.device}")  # fmt: skip
    print(f"judge: {'loaded' if cached else 'trained'} in {seconds:.1f}s, "
          f"held-out accuracy {judge.accuracy:.4f}")  # fmt: skip

    mnist = load_dataset("mnist", args.data, download=False)
    images, labels = mnist.data, mnist.labels
    # evaluate_images(seed=0) compares fakes with a random half B of the reals; the other half A
    # is therefore what a perfect generator of that many samples would produce.
    perm = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))
    half_a = images[perm[: len(perm) // 2]]
    noise = torch.randint(0, 256, half_a.shape, generator=torch.Generator().manual_seed(2))
    rows = {
        "real half A (a perfect generator)": half_a,
        "real half A shifted 3 px right": torch.roll(half_a, 3, dims=3),
        "uniform noise": noise.to(torch.uint8),
        "one real digit repeated (collapse)": images[:1].expand(len(half_a), -1, -1, -1),
    }
    names = None
    for title, fake in rows.items():
        metrics = evaluate_images(fake, images, labels, judge, num_classes=10, seed=0)
        if names is None:
            names = list(metrics)
            print(f"| {len(half_a)} fakes vs {len(images)} reals | " + " | ".join(names) + " |")
            print("|---" * (len(names) + 1) + "|")
        print(f"| {title} | " + " | ".join(f"{metrics[n]:.4g}" for n in names) + " |")


if __name__ == "__main__":
    main()
