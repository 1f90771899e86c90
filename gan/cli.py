"""Local commands that need no service: ``gan train``, ``gan sample`` and ``gan evaluate``.

    gan train --preset stable --steps 3000 --out runs/stable [--set lr_d=3e-4 ...]
    gan sample runs/stable/step-00003000.pt --n 64 --out grid.png
    gan evaluate runs/stable/best.pt --samples 5000

``gan train`` scores the generator every ``eval_every`` steps as the worker does (FID and the rest
of ``gan.evaluate`` for MNIST-like data) and prints each evaluation; ``gan evaluate`` scores any
checkpoint. The judge they score with is trained on first use and cached in ``--judges``.

``python -m gan …`` runs the same commands where only torch is installed (a GPU box); the
service's ``gan`` command adds them beside ``serve`` and ``worker``. torch is imported only when
a command runs, so ``gan serve`` starts without it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from gan.config import FIELD_TYPES, PRESETS, ConfigError, resolve


def _add_data_options(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument(
        "--data-dir",
        type=Path,
        default=Path(os.environ.get("GAN_DATA_DIR", "data")),
        help="folder with the datasets' files (default: $GAN_DATA_DIR or ./data)",
    )
    cmd.add_argument(
        "--judges",
        type=Path,
        default=Path(os.environ.get("GAN_JUDGES_DIR", Path.home() / ".cache/gan/judges")),
        help="where judge networks are cached (default: $GAN_JUDGES_DIR or ~/.cache/gan/judges)",
    )


def add_commands(commands: Any) -> None:
    """Add ``train``, ``sample`` and ``evaluate`` to an argparse sub-parsers object."""
    train_cmd = commands.add_parser("train", help="train a GAN locally, with a progress bar")
    train_cmd.add_argument("--preset", default="stable", choices=list(PRESETS))
    train_cmd.add_argument("--steps", type=int, help="max_steps (default: the preset's)")
    train_cmd.add_argument("--out", type=Path, required=True, help="checkpoint folder")
    _add_data_options(train_cmd)
    train_cmd.add_argument(
        "--images", type=Path, help="train on your images: a folder or a .zip (sub-folders=classes)"
    )
    train_cmd.add_argument("--channels", type=int, choices=(1, 3), default=1, help="of --images")
    train_cmd.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="override a config field, e.g. --set loss=hinge --set lr_d=4e-4 (repeatable)",
    )
    sample_cmd = commands.add_parser("sample", help="write samples of a checkpoint to a file")
    sample_cmd.add_argument("checkpoint", type=Path, help="a checkpoint file (step-*.pt, best.pt)")
    sample_cmd.add_argument("--n", type=int, default=64, help="number of samples")
    sample_cmd.add_argument("--seed", type=int, default=0)
    sample_cmd.add_argument(
        "--label",
        type=class_or_rows,
        help='conditional models: the class of every sample, or "rows" for a row per class',
    )
    sample_cmd.add_argument("--truncation", type=float, help="redraw latents with |z| > this")
    sample_cmd.add_argument("--nrow", type=int, help="images per row of the grid")
    sample_cmd.add_argument("--no-ema", action="store_true", help="use the raw generator")
    sample_cmd.add_argument("--out", type=Path, required=True, help=".png grid or .npy array")
    evaluate_cmd = commands.add_parser(
        "evaluate", help="score a checkpoint: FID, coverage, … (gan.evaluate), as JSON"
    )
    evaluate_cmd.add_argument("checkpoint", type=Path, help="a checkpoint (step-*.pt, best.pt)")
    evaluate_cmd.add_argument("--samples", type=int, default=5000, help="samples to score")
    evaluate_cmd.add_argument("--seed", type=int, default=0, help="of the latents and real halves")
    evaluate_cmd.add_argument("--no-ema", action="store_true", help="use the raw generator")
    _add_data_options(evaluate_cmd)


def class_or_rows(text: str) -> int | str:
    """``--label``: a class number, or "rows"."""
    if text == "rows":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'a class number or "rows", not {text!r}') from None


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """``["lr_d=4e-4", "loss=hinge"]`` → ``{"lr_d": 4e-4, "loss": "hinge"}``, typed by field."""
    overrides: dict[str, Any] = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        if not sep or name not in FIELD_TYPES:
            raise ConfigError(
                name or pair, f"expected FIELD=VALUE with a config field, got {pair!r}"
            )
        kind = FIELD_TYPES[name]
        try:
            overrides[name] = kind(text) if kind is not int else int(float(text))
        except ValueError as e:
            raise ConfigError(name, f"cannot read {text!r} as {kind.__name__}") from e
    return overrides


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> bool:
    """Run ``args.command`` if it is one of these (False when it is not); a bad config field
    ends the program with the parser's usage error naming it."""
    commands = {"train": train_command, "sample": sample_command, "evaluate": evaluate_command}
    if args.command not in commands:
        return False
    try:
        commands[args.command](args)
    except ConfigError as e:
        parser.error(str(e))
    return True


def train_command(args: argparse.Namespace) -> None:
    from gan.data import ingest_images, load_dataset
    from gan.evaluate import make_evaluator
    from gan.train import Progress, pick_device, train

    overrides = parse_overrides(args.set)
    if args.steps is not None:
        overrides["max_steps"] = args.steps
    uploads = args.out / "datasets"
    if args.images is not None:  # the same ingestion as POST /datasets
        dataset_id = f"ds-{uuid.uuid4().hex}"
        size = overrides.get("image_size") or 28
        ingest_images(args.images, uploads / dataset_id, channels=args.channels, image_size=size)
        overrides["dataset"] = dataset_id
    cfg = resolve(args.preset, **overrides)
    dataset = load_dataset(
        cfg.dataset, args.data_dir, uploads_dir=uploads, image_size=cfg.image_size
    )
    evaluator = None
    if cfg.eval_every > 0:  # the judge, where the data has one, is trained on first use
        evaluator = make_evaluator(
            dataset, data_dir=args.data_dir, cache_dir=args.judges, samples=cfg.eval_samples,
            seed=cfg.seed, device=pick_device(cfg.device),
        )  # fmt: skip
    print(f"training {args.preset} on {dataset.name} ({len(dataset.data)} samples) → {args.out}")
    start = time.perf_counter()
    shown: int | None = None  # step of the evaluation printed last

    def bar(p: Progress) -> None:
        nonlocal shown
        if p.metrics_step is not None and p.metrics_step != shown:
            shown = p.metrics_step
            line = {"step": p.metrics_step, "wall_s": round(time.perf_counter() - start, 1)}
            print(f"\r{json.dumps(line | p.metrics)}", file=sys.stderr, flush=True)
        done = p.step / p.total_steps
        filled = int(30 * done)
        elapsed = time.perf_counter() - start
        eta = elapsed / done * (1 - done) if done else 0.0
        print(
            f"\r[{'#' * filled}{'.' * (30 - filled)}] {p.step}/{p.total_steps} "
            f"{p.images_per_sec:,.0f} img/s  D {p.d_loss:.3f}  G {p.g_loss:.3f}  "
            f"ETA {eta:.0f}s ",
            end="",
            file=sys.stderr,
            flush=True,
        )

    result = train(cfg, dataset, args.out, progress=bar, evaluator=evaluator)
    print(f"\ndone: step {result.step} in {time.perf_counter() - start:.1f}s → {result.checkpoint}")


def sample_command(args: argparse.Namespace) -> None:
    import torch

    from gan.sample import generate, generate_class_rows, load_generator, npy_bytes, preview_png

    G, _, step = load_generator(args.checkpoint, ema=not args.no_ema)
    nrow = args.nrow
    if args.label == "rows":  # a row per class, the same latent down each column
        if not G.num_classes:
            raise SystemExit("--label rows needs a class-conditional generator")
        nrow = nrow or math.ceil(math.sqrt(args.n))
        samples = generate_class_rows(G, nrow, args.seed, args.truncation)
    else:
        labels = None if args.label is None else torch.full((args.n,), args.label)
        if labels is not None and not 0 <= args.label < G.num_classes:
            raise SystemExit(f"--label must be a class of this generator (0..{G.num_classes - 1})")
        samples = generate(G, args.n, args.seed, labels, args.truncation)
    data = npy_bytes(samples) if args.out.suffix == ".npy" else preview_png(samples, nrow)
    args.out.write_bytes(data)
    print(f"{len(samples)} samples of step {step} → {args.out}")


def evaluate_command(args: argparse.Namespace) -> None:
    from gan.data import load_dataset
    from gan.evaluate import make_evaluator
    from gan.sample import load_generator
    from gan.train import pick_device

    device = pick_device("auto")
    G, cfg, step = load_generator(args.checkpoint, str(device), ema=not args.no_ema)
    dataset = load_dataset(
        cfg.dataset, args.data_dir, uploads_dir=args.checkpoint.parent / "datasets",
        image_size=cfg.image_size,
    )  # fmt: skip
    evaluator = make_evaluator(
        dataset, data_dir=args.data_dir, cache_dir=args.judges, samples=args.samples,
        seed=args.seed, device=device,
    )  # fmt: skip
    print(json.dumps({"checkpoint": str(args.checkpoint), "step": step, **evaluator(G)}))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m gan", description=__doc__)
    add_commands(parser.add_subparsers(dest="command", required=True))
    run(parser.parse_args(argv), parser)
