"""Training throughput of presets under each speed option, measured side by side in one process.

    python -m bench.throughput --data ../shared/data/mnist --presets classic stable \
        --variants fp32 bf16 compile --steps 400

Each variant trains ``--steps`` steps from scratch through ``gan.train.train`` (checkpoints only
at the end) and reports every ``--report`` steps. The first report includes warm-up (cuDNN
autotuning, torch.compile, CUDA-graph capture) and is dropped; the figure is the median of the
rest, in real images through D per second. Needs only torch, so it runs on a bare GPU machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from gan.config import resolve
from gan.data import load_dataset
from gan.train import Progress, pick_device, train

VARIANTS = {
    "fp32": {},
    "bf16": {"precision": "bf16"},
    "compile": {"compile": "default"},
    "bf16+compile": {"precision": "bf16", "compile": "default"},
    "cudagraphs": {"compile": "reduce-overhead"},
    "bf16+cudagraphs": {"precision": "bf16", "compile": "reduce-overhead"},
}


def measure(preset: str, variant: str, steps: int, report: int, batch: int, data_dir: Path) -> dict:
    cfg = resolve(
        preset, **VARIANTS[variant], max_steps=steps, log_every=report,
        checkpoint_every=steps, batch_size=batch,
    )  # fmt: skip
    dataset = load_dataset(cfg.dataset, data_dir, download=False)
    rates: list[float] = []

    def progress(p: Progress) -> None:
        rates.append(p.images_per_sec)

    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        train(cfg, dataset, Path(out), progress=progress)
    wall = time.perf_counter() - start
    steady = rates[1:] or rates
    return {
        "preset": preset,
        "variant": variant,
        "batch": batch,
        "images_per_sec": statistics.median(steady),
        "spread": (min(steady), max(steady)),
        "wall_s": wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--presets", nargs="+", default=["classic", "stable"])
    parser.add_argument("--variants", nargs="+", default=["fp32"], choices=list(VARIANTS))
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--report", type=int, default=50)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    device = pick_device("auto")
    name = (
        torch.cuda.get_device_name() if device.type == "cuda" else f"cpu x{torch.get_num_threads()}"
    )
    print(f"device: {name}, torch {torch.__version__}")
    rows = []
    for preset in args.presets:
        for variant in args.variants:
            try:
                row = measure(preset, variant, args.steps, args.report, args.batch, args.data)
            except Exception as e:  # one failing option must not hide the other figures
                row = {"preset": preset, "variant": variant, "error": f"{type(e).__name__}: {e}"}
            rows.append(row)
            print(json.dumps(row), flush=True)
    print("\n| preset | variant | batch | images/s (median) | min–max | wall s |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['preset']} | {r['variant']} | | failed: {r['error'][:80]} | | |")
        else:
            lo, hi = r["spread"]
            print(
                f"| {r['preset']} | {r['variant']} | {r['batch']} | {r['images_per_sec']:,.0f} "
                f"| {lo:,.0f}–{hi:,.0f} | {r['wall_s']:.1f} |"
            )
    if args.json:
        args.json.write_text(json.dumps({"device": name, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
