"""The trainer against the textbook loop (bench/reference.py), side by side in one process.

    python -m bench.speed --data ../shared/data/mnist --steps 600 --reps 5

Each repetition trains the reference loop, then the trainer's ``classic`` preset under each
variant, ``--steps`` steps after a warm-up, on the same device; the figures are medians over the
repetitions, and the ratio is of the medians. Then one profiled run of each splits a step into
data, forward, backward, optimizer and the rest (Python and framework overhead):
torch.profiler's top-level events are sorted by what emitted them (the DataLoader and the
optimizers record their own; autograd's backward runs as ``autograd::engine::evaluate_function``
events; tensors made for a batch, noise included, count as data).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from bench import reference
from gan.config import resolve
from gan.data import load_dataset
from gan.train import Progress, pick_device, train

VARIANTS = {"fp32": {}, "compile": {"compile": "default"}, "bf16": {"precision": "bf16"}}
WARMUP = 50
DATA_OPS = ("aten::randn", "aten::randperm", "aten::index", "aten::to", "aten::ones",
            "aten::zeros", "aten::normal_", "aten::view")  # fmt: skip


def trainer(data_dir: Path, steps: int, device: str, variant: str) -> float:
    """``classic`` through gan.train.train: real images through D per second over ``steps``
    steps after ``WARMUP`` (timed between two progress reports; the checkpoint comes later)."""
    if steps % WARMUP:
        raise ValueError(f"--steps must be a multiple of {WARMUP}")
    cfg = resolve(
        "classic", **VARIANTS[variant], max_steps=2 * WARMUP + steps, log_every=WARMUP,
        checkpoint_every=2 * WARMUP + steps, eval_every=0, device=device,
    )  # fmt: skip
    dataset = load_dataset("mnist", data_dir, download=False)
    clock: dict[int, float] = {}

    def progress(p: Progress) -> None:
        clock[p.step] = time.perf_counter()

    with tempfile.TemporaryDirectory() as out:
        train(cfg, dataset, Path(out), progress=progress)
    seconds = clock[WARMUP + steps] - clock[WARMUP]
    return steps * cfg.batch_size * cfg.d_steps / seconds


def shares(run: Callable[[], object]) -> dict[str, float]:
    """Share of the wall time of ``run`` in data, forward, backward, optimizer and other."""
    start = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        run()
    wall_us = (time.perf_counter() - start) * 1e6
    spent: dict[str, float] = defaultdict(float)
    for event in prof.events():
        if event.cpu_parent is not None:
            continue  # counted in its top-level event
        name = event.name
        if name.startswith("enumerate(DataLoader)") or name in DATA_OPS:
            kind = "data"
        elif name.startswith("Optimizer."):
            kind = "optimizer"
        elif name.startswith("autograd::engine::evaluate_function"):
            kind = "backward"
        elif name.startswith("aten::") or name.startswith("Compiled") or "Torch-Compiled" in name:
            kind = "forward"
        else:
            continue  # the profiler's own and Python-level spans
        spent[kind] += event.cpu_time_total
    spent["other"] = max(0.0, wall_us - sum(spent.values()))
    return {k: spent[k] / wall_us for k in ("data", "forward", "backward", "optimizer", "other")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, required=True, help="folder with the MNIST IDX files")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--variants", nargs="+", default=["fp32"], choices=list(VARIANTS))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    device = str(pick_device(args.device))
    name = (
        torch.cuda.get_device_name()
        if device == "cuda"
        else f"cpu, {torch.get_num_threads()} threads"
    )
    print(f"device: {name}; torch {torch.__version__}", flush=True)

    root = reference.prepare(args.data, Path(tempfile.mkdtemp()) / "torchvision")
    rates: dict[str, list[float]] = defaultdict(list)
    for rep in range(args.reps):
        rates["reference"].append(reference.train(root, args.steps, device, WARMUP))
        for variant in args.variants:
            rates[variant].append(trainer(args.data, args.steps, device, variant))
        print(f"rep {rep + 1}: " + ", ".join(f"{k} {v[-1]:,.0f}" for k, v in rates.items()),
              flush=True)  # fmt: skip
    medians = {k: statistics.median(v) for k, v in rates.items()}
    result: dict[str, object] = {"device": name, "steps": args.steps, "reps": args.reps,
                                 "images_per_sec": rates, "median": medians}  # fmt: skip
    print("\n| loop | images/s (median) | min–max | × reference |\n|---|---|---|---|")
    for k, v in rates.items():
        ratio = medians[k] / medians["reference"]
        print(f"| {k} | {medians[k]:,.0f} | {min(v):,.0f}–{max(v):,.0f} | {ratio:.2f} |")

    if not args.no_profile and device == "cpu":
        split = {
            "reference": shares(lambda: reference.train(root, args.steps, device, 0)),
            "trainer": shares(lambda: trainer(args.data, args.steps, device, "fp32")),
        }
        result["shares"] = split
        print(
            "\n| loop | data | forward | backward | optimizer | other |\n|---|---|---|---|---|---|"
        )
        for k, s in split.items():
            print(f"| {k} | " + " | ".join(f"{s[p]:.0%}" for p in s) + " |")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
