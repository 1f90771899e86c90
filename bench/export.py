"""How long GET /jobs/{id}/generator spends exporting (CPU, one torch thread as the API runs):

    python -m bench.export [--repeats 5]

For the generators of the `classic` preset (MLP, 1.5M parameters) and of `stable-conditional`
(DCGAN depth 1 with conditional batch norm), each format's export (``gan.export.export``: the
plain copy, tracing and serialising) side by side in one process, the median of ``--repeats``
runs, with the file's size and, for comparison, one 64-sample draw of the same generator (what
a samples request computes before its PNG).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from gan.config import resolve
from gan.export import FORMATS, export
from gan.models import build_models
from gan.sample import generate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print("| generator | parameters | format | export ms (median) | file MB |")
    print("|---|---|---|---|---|")
    for preset, classes in (("classic", 0), ("stable-conditional", 10)):
        config = resolve(preset)
        torch.manual_seed(0)
        G = build_models(config, (1, 28, 28), classes)[0].eval()
        params = sum(p.numel() for p in G.parameters())
        rows = []
        for format in FORMATS:
            export(G, config, 0, True, format)  # warm up (imports, first trace)
            times, size = [], 0
            for _ in range(args.repeats):
                start = time.perf_counter()
                size = len(export(G, config, 0, True, format))
                times.append(time.perf_counter() - start)
            rows.append((format, statistics.median(times) * 1e3, size / 2**20))
        start = time.perf_counter()
        for _ in range(args.repeats):
            generate(G, 64, 0)
        draw_ms = (time.perf_counter() - start) / args.repeats * 1e3
        for format, ms, mb in rows:
            print(f"| {preset} | {params / 1e6:.2f}M | {format} | {ms:.0f} | {mb:.1f} |")
        print(f"| {preset} | | (64 samples drawn) | {draw_ms:.0f} | |")


if __name__ == "__main__":
    main()
