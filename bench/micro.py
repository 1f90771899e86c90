"""The small timings behind BENCHMARKS.md's explanations, each on its own (CPU):

    python -m bench.micro --data ../shared/data/mnist

- Adam updates of both `classic` networks: torch's default (foreach) kernels against fused;
- the matrix products of the `classic` MLPs (batch 64, and D's real+fake batch of 128) in fp32
  and bf16, in GFLOP/s;
- what one 64-digit samples response computes: G on 64 latents (one torch thread, as the API
  runs it) and the PNG of the grid at zlib levels 6 (PIL's default) and 1 (what the API uses).
"""

from __future__ import annotations

import argparse
import functools
import io
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from bench.reference import models
from gan.data import load_dataset
from gan.sample import image_grid


def per_call_ms(f: Callable[[], object], n: int = 200) -> float:
    for _ in range(10):
        f()
    start = time.perf_counter()
    for _ in range(n):
        f()
    return (time.perf_counter() - start) / n * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, required=True)
    args = parser.parse_args()

    G, D = models()
    params = [*G.parameters(), *D.parameters()]
    for p in params:
        p.grad = torch.randn_like(p)
    for name in ("foreach", "fused"):
        opt = torch.optim.Adam(params, lr=2e-4, foreach=name == "foreach", fused=name == "fused")
        print(f"Adam, both networks, {name}: {per_call_ms(opt.step):.2f} ms")

    for m, k, n in ((64, 1024, 784), (64, 784, 512), (128, 784, 512)):
        a, b = torch.randn(m, k), torch.randn(k, n)
        for dtype in (torch.float32, torch.bfloat16):
            x, y = a.to(dtype), b.to(dtype)
            ms = per_call_ms(functools.partial(torch.matmul, x, y))
            print(f"GEMM {m}x{k} @ {k}x{n} {dtype}: {2 * m * k * n / ms / 1e6:.0f} GFLOP/s")

    torch.set_num_threads(1)
    z = torch.randn(64, 100)
    with torch.inference_mode():
        print(f"G on 64 latents, 1 thread: {per_call_ms(lambda: G(z)):.2f} ms")
    mnist = load_dataset("mnist", args.data, download=False)
    digits = mnist.data[:64].squeeze(1).numpy()  # uint8 (64, 28, 28)
    grid = image_grid(np.ascontiguousarray(digits))
    for level in (6, 1):

        def png(level: int = level) -> bytes:
            buffer = io.BytesIO()
            Image.fromarray(grid).save(buffer, format="PNG", compress_level=level)
            return buffer.getvalue()

        print(f"PNG of 64 digits, zlib level {level}: {per_call_ms(png):.2f} ms, {len(png())} B")


if __name__ == "__main__":
    main()
