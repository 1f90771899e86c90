"""Quality of presets over training: the evaluator's metrics at every checkpoint.

    python -m bench.quality --data ../shared/data/mnist --cache CACHE --out OUT \
        --steps 3000 --eval-every 500 --runs stable classic "classic:beta1_g=0.9,beta1_d=0.9"

A run is a preset, optionally with overrides after a colon (``FIELD=VALUE`` separated by commas,
``dataset=grid25`` included). Each trains from scratch, writing a checkpoint every
``--eval-every`` steps and noting the wall time when it was written (the trainer's own
evaluations are off, so the wall time is training alone); afterwards every checkpoint's generator
(its EMA when the run keeps one) is scored by ``gan.evaluate.make_evaluator`` for its dataset on
``--samples`` samples of a fixed latent batch: the judge's FID, coverage, … for MNIST-like data,
modes and KL for Stacked MNIST, modes and high-quality share for the 2D mixtures. "Time to
quality" (MNIST-like data) is the wall time of the first checkpoint with every class covered and
FID within 3x the real-vs-real baseline. OUT gets a 10x10 grid of each run's last checkpoint and
a JSON file of every row. Needs only torch, so it runs on a bare GPU machine too.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import time
from pathlib import Path

import torch

from gan.checkpoint import list_checkpoints
from gan.cli import parse_overrides
from gan.config import resolve
from gan.data import load_dataset
from gan.evaluate import make_evaluator
from gan.sample import generate, load_generator, preview_png
from gan.train import Progress, pick_device, train

GOOD_FID_RATIO = 3.0  # "good": FID within this multiple of the real-vs-real baseline


def parse_run(text: str) -> tuple[str, dict]:
    preset, _, rest = text.partition(":")
    return preset, parse_overrides([p for p in rest.split(",") if p])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--cache", type=Path, required=True, help="where the judge is cached")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--runs", nargs="+", default=["stable", "classic"])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--eval-every", type=int, default=500)
    parser.add_argument("--samples", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--raw", action="store_true", help="also score the raw G beside its EMA")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    device = pick_device("auto")
    where = torch.cuda.get_device_name() if device.type == "cuda" else platform.machine()
    print(f"# {where}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    rows = []
    for run in args.runs:
        preset, overrides = parse_run(run)
        cfg = resolve(preset, **{
            "max_steps": args.steps, **overrides, "seed": args.seed, "log_every": args.eval_every,
            "checkpoint_every": args.eval_every, "keep_checkpoints": 1000, "eval_every": 0,
        })  # fmt: skip
        dataset = load_dataset(cfg.dataset, args.data, download=False)
        evaluator = make_evaluator(
            dataset, data_dir=args.data, cache_dir=args.cache, samples=args.samples, seed=1
        )
        folder = args.out / re.sub(r"[^A-Za-z0-9_.=-]+", "_", run)
        wall: dict[int, float] = {}
        start = time.perf_counter()

        def progress(p: Progress, wall: dict[int, float] = wall, start: float = start) -> None:
            wall[p.step] = time.perf_counter() - start

        train(cfg, dataset, folder, progress=progress)
        reached = None
        for step, path in list_checkpoints(folder):
            for ema in (True, False) if args.raw and cfg.ema_decay else (True,):
                G, _, _ = load_generator(path, ema=ema)
                metrics = evaluator(G)
                good = (
                    evaluator.key == "fid"
                    and metrics["coverage"] == dataset.num_classes
                    and (metrics["fid"] <= GOOD_FID_RATIO * metrics["fid_baseline"])
                )
                if good and ema and reached is None:
                    reached = wall[step]
                name = run if ema else f"{run} (raw G)"
                rows.append({"run": name, "step": step, "wall_s": wall[step], **metrics})
                print(json.dumps(rows[-1]), flush=True)
                (args.out / "quality.json").write_text(json.dumps(rows, indent=1))
        G, _, _ = load_generator(path)
        (args.out / f"{folder.name}.png").write_bytes(preview_png(generate(G, 100, seed=0), 10))
        if evaluator.key == "fid":
            print(
                f"{run}: time to quality {'not reached' if reached is None else f'{reached:.0f}s'}"
            )

    names = sorted({k for r in rows for k in r} - {"run", "step", "wall_s"})
    print("\n| run | step | wall s | " + " | ".join(names) + " |")
    print("|---" * (len(names) + 3) + "|")
    for r in rows:
        cells: list[str] = [str(r["run"]), str(r["step"]), f"{r['wall_s']:.0f}"]
        cells += [f"{r[n]:.4g}" if n in r else "" for n in names]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
