"""Mode collapse under the published protocols: ours beside the published tables. The command is
``python -m bench.modes``; its code is here, in harness/, so that tests can test it.

    python -m bench.modes --data ../shared/data/mnist --cache CACHE --bench grid25 ring8 \
        --seeds 5 [--preset stable] [--set pack=2 ...] [--steps N | --at N,N,...] [--json OUT.json]

Each (benchmark, seed) trains the preset from scratch with nothing set but the dataset and the
seed (plus ``--set``/``--steps`` when asked, for ablations), its own evaluations off, and then
scores the final sampling generator (the EMA where the run keeps one); with ``--at 4000,8000,16000``
one run per seed is scored at each of those steps (a table per budget):

- grid25, ring8: PacGAN's protocol (Lin et al. 2018, Table 1): 2,500 samples; high quality when
  within 3σ of the nearest mode; a mode is covered when at least one high-quality sample falls to
  it; reverse KL of the high-quality samples' mode histogram to uniform
  (``gan.metrics.published_mixture_metrics``). Their ring has radius 1 and σ 0.01; ours is the
  same scaled by 2 (radius 2, σ 0.02), which the criterion (3σ) scales with.
- stacked-mnist: VEEGAN's and PacGAN's protocol: 26,000 samples, each channel classified by the
  MNIST judge; modes (of 1000) hit, KL of the mode histogram to uniform. Ours is built from the
  MNIST 10k split (``gan.data.stacked_mnist``), theirs from the 60k training split. Printed with
  the data's own score under the same protocol (``data_floor``: 26,000 fresh triples of the 10k
  split, the same judge: what the trainer draws from), the floor a perfect sampler lands on: its
  KL is not 0 (sampling alone gives about (K − 1)/2N ≈ 0.019, plus MNIST's uneven digit counts
  and the judge's errors).
- mnist: the judge's FID (``gan.evaluate``, 5,000 samples) at the same step budget, beside the
  FID of as many held-out reals (``fid_baseline``); no published table. Run it once per preset
  (``--preset classic``, ``--preset stable``) with the same ``--steps``.

Prints mean ± standard error over the seeds, each seed's figures, whether every seed meets the
targets of issue 18, and the wall time of training (the machine may be shared: compare ratios).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from gan.cli import parse_overrides
from gan.config import resolve
from gan.data import (
    GRID25_CENTRES,
    GRID25_SIGMA,
    RING8_CENTRES,
    RING8_SIGMA,
    load_dataset,
    load_idx,
    stacked_mnist,
)
from gan.evaluate import make_evaluator
from gan.judge import judge_for
from gan.metrics import (
    class_histogram,
    class_kl,
    mode_digits,
    published_mixture_metrics,
    stacked_mnist_mode_metrics,
    stacked_mnist_modes,
)
from gan.sample import generate, load_generator
from gan.train import pick_device, train

SAMPLES = {"grid25": 2500, "ring8": 2500, "stacked-mnist": 26_000, "mnist": 5000}
MIXTURES = {"grid25": (GRID25_CENTRES, GRID25_SIGMA), "ring8": (RING8_CENTRES, RING8_SIGMA)}
# (method, modes, high quality %, reverse KL) from PacGAN Table 1 (grid, ring) and Table 3
# (Stacked MNIST: modes, KL; VEEGAN's DCGAN row, PacDCGAN2, and EnGAN's figure).
PUBLISHED: dict[str, list[tuple[str, float, float | None, float]]] = {
    "grid25": [("GAN", 17.3, 94.8, 0.70), ("PacGAN4", 24.8, 93.6, 0.04)],
    "ring8": [("GAN", 6.3, 98.2, 0.45), ("PacGAN2", 7.9, 95.6, 0.07)],
    "stacked-mnist": [
        ("DCGAN", 99, None, 3.40),
        ("PacDCGAN2", 1000, None, 0.06),
        ("EnGAN", 1000, None, 0.031),
    ],
}
# Issue 18's targets, met on every seed: (modes ≥, high quality % ≥, KL ≤).
TARGETS: dict[str, tuple[float, float | None, float]] = {
    "grid25": (25, 94.0, 0.04),
    "ring8": (8, 98.0, 0.05),
    "stacked-mnist": (1000, None, 0.03),
}


def score(
    bench: str, checkpoint: Path, seed: int, data: Path, cache: Path, device: str = "cpu"
) -> dict[str, Any]:
    """The published protocol's figures of the checkpoint's sampling generator, generated and
    judged on ``device`` (the run's own)."""
    G, _, _ = load_generator(checkpoint, device)
    if bench == "mnist":  # made outside inference mode: it trains the judge when none is cached
        dataset = load_dataset(bench, data, download=False)
        evaluator = make_evaluator(dataset, data_dir=data, cache_dir=cache,
                                   samples=SAMPLES[bench], seed=seed, device=device)  # fmt: skip
        m = evaluator(G)
        return {"fid": m["fid"], "fid_baseline": m["fid_baseline"]}
    with torch.inference_mode():
        if bench in MIXTURES:
            points = torch.from_numpy(generate(G, SAMPLES[bench], seed=10_000 + seed))
            m = published_mixture_metrics(points, *MIXTURES[bench])
            return {"modes": m["modes"], "hq": 100 * m["high_quality"], "kl": m["reverse_kl"]}
        images = torch.cat([
            torch.from_numpy(generate(G, 1000, seed=10_000 + 1000 * seed + i))
            for i in range(SAMPLES[bench] // 1000)
        ])  # fmt: skip
    mode = stacked_mnist_modes(images, judge_for("stacked-mnist", data, cache, device))
    m = stacked_mnist_mode_metrics(mode)
    return {"modes": m["modes"], "kl": m["kl"], "digits_kl": m["digits_kl"],
            "digit_shares": digit_shares(mode)}  # fmt: skip


def run_one(bench: str, seed: int, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Train one seed and score it at each budget of ``args.at`` (the run resumes from its own
    checkpoint for the next, which trains exactly as one uninterrupted run: nothing in a step
    depends on ``max_steps``), or once at ``--steps`` (the preset's budget when 0)."""
    overrides = {**args.overrides, "dataset": bench, "seed": seed, "eval_every": 0}
    budgets = args.at or [args.steps or resolve(args.preset, **overrides).max_steps]
    dataset = load_dataset(bench, args.data, download=False)
    rows, wall = [], 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for steps in budgets:
            cfg = resolve(args.preset, **overrides, max_steps=steps, log_every=steps,
                          checkpoint_every=steps)  # fmt: skip
            start = time.perf_counter()
            result = train(cfg, dataset, Path(tmp))
            wall += time.perf_counter() - start
            device = str(pick_device(cfg.device))
            figures = score(bench, result.checkpoint, seed, args.data, args.cache, device)
            rows.append({"bench": bench, "seed": seed, "steps": steps, "wall_s": wall, **figures})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def data_floor(
    seed: int, data: Path, cache: Path, n: int = SAMPLES["stacked-mnist"], device: str = "cpu"
) -> dict[str, Any]:
    """Stacked MNIST's protocol applied to the data itself: ``n`` fresh triples of the MNIST 10k
    split (drawn with ``seed``), each channel classified by the same judge. The trainer draws
    such fresh triples for every batch (``gan.train.RealBatches``), so this is what a generator
    that learnt its data exactly scores. ``accuracy`` is the share of triples whose mode the
    judge reads right; ``kl_true`` the KL of their true modes to uniform (the floor without the
    judge's errors)."""
    images, labels = load_idx("mnist", data, download=False)
    triples = stacked_mnist(images, labels, n=n, seed=1_000_000 + seed)
    judge = judge_for("stacked-mnist", data, cache, device)  # trained when none is cached: not
    start = time.perf_counter()  # in inference mode, which leaves nothing to backpropagate
    with torch.inference_mode():
        mode = stacked_mnist_modes(triples.data, judge)
    wall = time.perf_counter() - start
    return {"seed": seed, "wall_s": wall, **floor_figures(mode, triples.labels)}


def floor_figures(mode: torch.Tensor, true_mode: torch.Tensor) -> dict[str, Any]:
    """The protocol's figures of modes as the judge read them, beside the true modes' KL."""
    uniform = torch.full((1000,), 1e-3, dtype=torch.float64)
    m = stacked_mnist_mode_metrics(mode)
    return {
        "modes": m["modes"],
        "kl": m["kl"],
        "digits_kl": m["digits_kl"],
        "digit_shares": digit_shares(mode),
        "accuracy": float((mode == true_mode).double().mean()),
        "kl_true": class_kl(class_histogram(true_mode, 1000), uniform),
    }


def digit_shares(mode: torch.Tensor) -> list[float]:
    """Each digit's share (%) of the 3·N digits of Stacked MNIST modes, all channels pooled: which
    digits a generator makes too often or too rarely."""
    return [round(100 * float(h), 2) for h in class_histogram(torch.cat(mode_digits(mode)), 10)]


def mean_se(values: list[float]) -> str:
    if any(not math.isfinite(v) for v in values):
        return "inf"
    mean = statistics.fmean(values)
    se = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else math.nan
    return f"{mean:.4g} ± {se:.2g}"


def report(
    bench: str, rows: list[dict[str, Any]], label: str, floor: list[dict[str, Any]] | None = None
) -> str:
    """The markdown table of ``bench``: ours (mean ± se, then each seed) beside the papers', and
    for Stacked MNIST the data's own score (``floor``, from ``data_floor``)."""
    if bench == "mnist":
        return fid_report(rows, label)
    hq = bench in MIXTURES
    head = "| method | modes | high quality % | KL | wall s |"
    if not hq:
        head = "| method | modes | KL | wall s |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]

    def line(name: str, modes: str, quality: str, kl: str, wall: str) -> str:
        return (
            f"| {name} | {modes} | {quality} | {kl} | {wall} |"
            if hq
            else (f"| {name} | {modes} | {kl} | {wall} |")
        )

    col = {k: [r[k] for r in rows] for k in ("modes", "kl", "wall_s", *(("hq",) if hq else ()))}
    name = f"**ours: {label}** ({len(rows)} seeds, {rows[0]['steps']} steps)"
    quality = mean_se(col["hq"]) if hq else ""
    wall = f"{statistics.fmean(col['wall_s']):.0f}"
    lines.append(line(name, mean_se(col["modes"]), quality, mean_se(col["kl"]), wall))
    for r in rows:
        hq_r = f"{r['hq']:.1f}" if hq else ""
        lines.append(line(f"seed {r['seed']}", f"{r['modes']:g}", hq_r, f"{r['kl']:.3f}",
                          f"{r['wall_s']:.0f}"))  # fmt: skip
    if floor:
        name = f"data: 26,000 triples of the 10k split ({len(floor)} draws)"
        col = {k: [r[k] for r in floor] for k in ("modes", "kl")}
        lines.append(line(name, mean_se(col["modes"]), "", mean_se(col["kl"]), ""))
        lines.append(floor_note(floor))
    if bench == "stacked-mnist":
        ours = mean_se([r["digits_kl"] for r in rows])
        data = f"; the data's {mean_se([r['digits_kl'] for r in floor])}" if floor else ""
        lines.append(f"(of the KL, the digits' own frequencies account for {ours}{data})")
    for paper, modes, published_hq, kl in PUBLISHED[bench]:
        hq_p = f"{published_hq:g}" if published_hq is not None else ""
        lines.append(line(f"{paper} (published)", f"{modes:g}", hq_p, f"{kl:g}", ""))
    lines.append(f"\nevery seed meets the target {TARGETS[bench]}: {meets(bench, rows)}")
    return "\n".join(lines)


def floor_note(floor: list[dict[str, Any]]) -> str:
    """How well the judge reads the data's triples, and the KL of their true modes."""
    accuracy = mean_se([100 * r["accuracy"] for r in floor])
    kl_true = mean_se([r["kl_true"] for r in floor])
    return f"(the judge reads {accuracy}% of the data's triples right; true modes' KL {kl_true})"


def fid_report(rows: list[dict[str, Any]], label: str) -> str:
    """The markdown table of the MNIST runs: the judge's FID, mean ± se and each seed."""
    lines = ["| run | judge's FID | FID of held-out reals | wall s |", "|---|---|---|---|"]
    name = f"**{label}** ({len(rows)} seeds, {rows[0]['steps']} steps)"
    fids, bases = [r["fid"] for r in rows], [r["fid_baseline"] for r in rows]
    wall = statistics.fmean(r["wall_s"] for r in rows)
    lines.append(f"| {name} | {mean_se(fids)} | {mean_se(bases)} | {wall:.0f} |")
    for r in rows:
        lines.append(f"| seed {r['seed']} | {r['fid']:.1f} | {r['fid_baseline']:.2f} | "
                     f"{r['wall_s']:.0f} |")  # fmt: skip
    return "\n".join(lines)


def meets(bench: str, rows: list[dict[str, Any]]) -> bool:
    modes, quality, kl = TARGETS[bench]
    return all(
        r["modes"] >= modes and r["kl"] <= kl and (quality is None or r["hq"] >= quality)
        for r in rows
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, required=True, help="the MNIST IDX files")
    parser.add_argument("--cache", type=Path, required=True, help="where the judge is cached")
    parser.add_argument("--bench", nargs="+", default=["grid25", "ring8"], choices=list(SAMPLES))
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--preset", default="stable")
    parser.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE")
    parser.add_argument("--steps", type=int, default=0, help="max_steps (default: the preset's)")
    parser.add_argument(
        "--at", type=lambda v: sorted({int(x) for x in v.split(",")}), default=[],
        metavar="N,N,...", help="score each seed's run at each of these steps (instead of --steps)",
    )  # fmt: skip
    parser.add_argument("--json", type=Path, help="write every row here")
    parser.add_argument(
        "--data-only", action="store_true", help="Stacked MNIST: score only the data, train nothing"
    )
    args = parser.parse_args()
    args.overrides = parse_overrides(args.set)
    device = pick_device("auto")
    where = torch.cuda.get_device_name() if device.type == "cuda" else platform.processor()
    print(f"# device: {device} ({where or platform.machine()}), torch {torch.__version__}")
    if args.at and args.steps:
        parser.error("--at and --steps are exclusive: --at scores the run at each of its steps")
    label = " ".join([args.preset, *args.set]) + (f" steps={args.steps}" if args.steps else "")
    everything = []
    for bench in args.bench:
        seeds = range(args.first_seed, args.first_seed + args.seeds)
        floor = []
        if bench == "stacked-mnist":
            for seed in seeds:
                figures = data_floor(seed, args.data, args.cache, device=str(device))
                floor.append({"bench": "stacked-mnist data", **figures})
                print(json.dumps(floor[-1]), flush=True)
            everything += floor
        if args.data_only and floor:
            modes, kl = mean_se([r["modes"] for r in floor]), mean_se([r["kl"] for r in floor])
            print(f"\n## {bench}: the data\n\nmodes {modes}, KL {kl}\n{floor_note(floor)}\n")
        if args.data_only:
            continue
        rows = [row for seed in seeds for row in run_one(bench, seed, args)]
        everything += rows
        for steps in dict.fromkeys(r["steps"] for r in rows):
            at = [r for r in rows if r["steps"] == steps]
            print(f"\n## {bench}, {steps} steps\n\n{report(bench, at, label, floor)}\n", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"label": label, "rows": everything}, indent=1))
