"""``gan sweep``: sweeps of a running service, through ``api.client``:

    gan sweep submit --preset stable --steps 3000 --grid seed=0,1,2 --grid lr_g=1e-4,2e-4
    gan sweep submit --set dataset=ring8 --set arch=mlp --points points.json   (a JSON list)
    gan sweep list                gan sweep status ID [--json]     (its jobs, best first)
    gan sweep cancel ID           gan sweep delete ID

Run by ``api.remote.run`` (the service options, errors and exit codes of the other client
commands)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from api.client import Client, Sweep
from api.remote import add_service_options
from gan.cli import parse_overrides
from gan.config import PRESETS, ConfigError


def add_commands(commands: Any) -> None:
    """Add ``gan sweep`` and its sub-commands to ``gan``'s sub-parsers."""
    sweep = commands.add_parser(
        "sweep",
        help="many jobs from one spec: a grid or list over its fields, ranked by quality",
        description="Sweeps: one job per point of a grid (every combination) or of a list, "
        "each an ordinary job (gan status, sample, cancel, … work on it).",
    )
    actions = sweep.add_subparsers(dest="sweep_command", required=True)
    submit = actions.add_parser("submit", help="queue a sweep; prints its id")
    submit.add_argument("--preset", default="classic", choices=list(PRESETS))
    submit.add_argument("--steps", type=int, help="max_steps of every job")
    submit.add_argument(
        "--set", action="append", default=[], metavar="FIELD=VALUE", help="a base field"
    )
    submit.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="FIELD=V1,V2,…",
        help="values of a field to try (repeatable: every combination)",
    )
    submit.add_argument(
        "--points", metavar="FILE", help="instead of --grid: a JSON list of overrides (- stdin)"
    )
    submit.add_argument("--idempotency-key", help="a unique string: a retry makes no second one")
    add_service_options(submit)
    listing = actions.add_parser("list", help="your sweeps, newest first")
    listing.add_argument("--limit", type=int, default=20)
    add_service_options(listing)
    for name, text in (
        ("status", "a sweep's jobs, best first, with their state and metric"),
        ("cancel", "cancel every unfinished job of a sweep"),
        ("delete", "remove a sweep and all its jobs"),
    ):
        command = actions.add_parser(name, help=text)
        command.add_argument("id", help="the sweep's id")
        if name == "status":
            command.add_argument("--json", action="store_true", help="print it as JSON")
        add_service_options(command)


def parse_grid(pairs: list[str]) -> dict[str, list[Any]]:
    """``["seed=0,1", "lr_g=1e-4,2e-4"]`` → ``{"seed": [0, 1], "lr_g": [1e-4, 2e-4]}``, each
    value typed by its field (``preset`` takes preset names)."""
    grid: dict[str, list[Any]] = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        if not sep or not text:
            raise ConfigError(name or pair, f"expected FIELD=V1,V2,… got {pair!r}")
        values = text.split(",")
        if name == "preset":
            grid[name] = values
        else:
            grid[name] = [parse_overrides([f"{name}={value}"])[name] for value in values]
    return grid


def submit(client: Client, args: argparse.Namespace) -> int:
    base = parse_overrides(args.set)
    if args.steps is not None:
        base["max_steps"] = args.steps
    points = None
    if args.points is not None:
        text = sys.stdin.read() if args.points == "-" else Path(args.points).read_text()
        points = json.loads(text)
    grid = parse_grid(args.grid) if args.grid or points is None else None
    made = client.submit_sweep(
        args.preset, grid=grid, points=points, idempotency_key=args.idempotency_key, **base
    )
    print(made["id"], flush=True)  # alone on stdout: ID=$(gan sweep submit …)
    print(
        f"queued sweep {made['id']}: {made['size']} jobs; follow it with "
        f"`gan sweep status {made['id']}`",
        file=sys.stderr,
    )
    return 0


def _metric(value: float | None) -> str:
    return "–" if value is None else f"{value:.4g}"


def table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    )


def describe(sweep: Sweep) -> str:
    """``gan sweep status``: a line per job, best first."""
    rows: list[tuple[str, ...]] = [("RANK", "JOB", "STATE", "STEP", "METRIC", "POINT")]
    for entry in sweep["jobs"]:
        job = entry["job"]
        metric = f"{entry['metric']} {_metric(entry['value'])}" if entry["metric"] else "–"
        point = " ".join(f"{k}={v}" for k, v in entry["point"].items())
        rank = str(entry["rank"]) if entry["rank"] is not None else "–"
        step = f"{job['step']:,}/{job['total_steps']:,}"
        rows.append((rank, job["id"], job["state"], step, metric, point))
    states = ", ".join(f"{n} {state}" for state, n in sweep["states"].items())
    return f"sweep {sweep['id']}: {sweep['size']} jobs ({states})\n{table(rows)}"


def status(client: Client, args: argparse.Namespace) -> int:
    sweep = client.sweep(args.id)
    print(json.dumps(sweep, indent=2) if args.json else describe(sweep))
    return 0


def list_command(client: Client, args: argparse.Namespace) -> int:
    found = client.sweeps(limit=args.limit)
    if not found:
        print("no sweeps")
        return 0
    rows: list[tuple[str, ...]] = [("ID", "JOBS", "STATES", "BEST", "CREATED (UTC)")]
    for sweep in found:
        best = sweep["best"]
        rows.append(
            (
                sweep["id"],
                str(sweep["size"]),
                ", ".join(f"{n} {state}" for state, n in sweep["states"].items()),
                f"{best['metric']} {_metric(best['value'])}" if best else "–",
                sweep["created_at"][:16].replace("T", " "),
            )
        )
    print(table(rows))
    return 0


def cancel(client: Client, args: argparse.Namespace) -> int:
    sweep = client.cancel_sweep(args.id)
    states = ", ".join(f"{n} {state}" for state, n in sweep["states"].items())
    print(f"sweep {sweep['id']}: {states}")
    return 0


def delete(client: Client, args: argparse.Namespace) -> int:
    client.delete_sweep(args.id)
    print(f"sweep {args.id}: deleted, with its jobs")
    return 0


SUBCOMMANDS: dict[str, Callable[[Client, argparse.Namespace], int]] = {
    "submit": submit,
    "list": list_command,
    "status": status,
    "cancel": cancel,
    "delete": delete,
}


def sweep_command(client: Client, args: argparse.Namespace) -> int:
    return SUBCOMMANDS[args.sweep_command](client, args)


HANDLERS = {"sweep": sweep_command}
