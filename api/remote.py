"""The ``gan`` commands that talk to a running service over HTTP, through ``api.client``:

    gan submit --preset stable --steps 5000 [--set lr_d=4e-4 ...] [--watch]
    gan jobs [--state running]            gan status ID [--json]
    gan watch ID                          (a live progress bar; exit 0 when it succeeds)
    gan sample ID --n 64 --label 7 --out x.png    (or x.npy)
    gan export ID --format onnx -o g.onnx         (or safetensors, torchscript)
    gan cancel ID      gan resume ID [--steps N]      gan delete ID

The service is ``--url`` (default ``GAN_URL``, http://127.0.0.1:8000), with the API key of
``--api-key`` (default ``GAN_API_KEY``) when it needs one. ``gan sample`` is shared with the
local command of ``gan.cli``: an argument that is an existing file, ends in ``.pt`` or has a
``/`` is a checkpoint file sampled here; anything else is the id of a job of the service.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

import httpx

from api.client import ApiError, Client, Event, Job
from gan.cli import parse_overrides
from gan.config import PRESETS, ConfigError
from worker.settings import get_settings
from worker.store.states import FINAL_STATES, STATES

COMMANDS = ("submit", "jobs", "status", "watch", "cancel", "resume", "delete", "workers", "export")
EXPORT_FORMATS = ("safetensors", "onnx", "torchscript")
BAR_WIDTH = 24
LINE_EVERY_S = 2.0  # a watch writing to a file or pipe prints a progress line this often


def add_service_options(parser: argparse.ArgumentParser) -> None:
    """``--url`` and ``--api-key``."""
    group = parser.add_argument_group("service")
    group.add_argument(
        "--url",
        default=get_settings().url,
        help="the service (default: $GAN_URL or http://127.0.0.1:8000)",
    )
    group.add_argument(
        "--api-key",
        default=os.environ.get("GAN_API_KEY"),
        help="API key, when the service needs one (default: $GAN_API_KEY)",
    )


def add_commands(commands: Any) -> None:
    """Add the client commands to ``gan``'s sub-parsers, and the service options to the
    ``sample`` command that ``gan.cli`` added (which must come first)."""
    submit = commands.add_parser("submit", help="queue a training job")
    submit.add_argument("--preset", default="classic", choices=list(PRESETS))
    submit.add_argument("--steps", type=int, help="max_steps (default: the preset's)")
    submit.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="override a config field, e.g. --set loss=hinge --set lr_d=4e-4 (repeatable)",
    )
    submit.add_argument("--idempotency-key", help="a unique string: a retry makes no second job")
    submit.add_argument(
        "--webhook", metavar="URL", help="POST the job's events there, signed (README: Webhooks)"
    )
    submit.add_argument("--watch", action="store_true", help="then follow it, as `gan watch`")
    add_service_options(submit)

    jobs = commands.add_parser("jobs", help="list your jobs, newest first")
    jobs.add_argument("--state", action="append", choices=STATES, help="only these states")
    jobs.add_argument("--limit", type=int, default=20, help="at most this many (default 20)")
    add_service_options(jobs)

    for name, text in (
        ("status", "a job's state, progress, metrics and warnings"),
        ("watch", "follow a job live until it finishes (exit code 0 when it succeeds)"),
        ("cancel", "stop a job, keeping its checkpoints"),
        ("resume", "queue a cancelled or failed job again, from its newest checkpoint"),
        ("delete", "remove a job and its files"),
    ):
        command = commands.add_parser(name, help=text)
        command.add_argument("id", help="the job's id")
        if name == "status":
            command.add_argument("--json", action="store_true", help="print the job as JSON")
        if name == "resume":
            command.add_argument("--steps", type=int, help="train to this new total of steps")
        add_service_options(command)

    workers = commands.add_parser(
        "workers", help="list the live workers, their slots and the jobs they train"
    )
    add_service_options(workers)
    export = commands.add_parser(
        "export", help="download a job's generator alone (safetensors, ONNX, TorchScript)"
    )
    export.add_argument("id", help="the job's id")
    export.add_argument("--format", choices=EXPORT_FORMATS, default="safetensors")
    export.add_argument("-o", "--out", type=Path, help="the file (default: the service's name)")
    export.add_argument(
        "--checkpoint", metavar="STEP|latest|best", help="default: best, else latest"
    )
    export.add_argument("--no-ema", action="store_true", help="the raw generator, not its EMA")
    add_service_options(export)

    sample = commands.choices["sample"]
    for action in sample._actions:  # the positional argument of gan.cli's command
        if action.dest == "checkpoint":
            action.metavar, action.help = "CHECKPOINT|JOB_ID", "a checkpoint file, or a job id"
    sample.description = (
        "Write samples to a .png grid or .npy array: of a checkpoint file (an existing file, a "
        "name ending in .pt, or a path with a /), or of a job of the service (any other "
        "argument is a job id)."
    )
    sample.add_argument(
        "--checkpoint",
        dest="job_checkpoint",
        metavar="STEP|latest|best",
        help="of a job: which checkpoint, latest, best or a step (default: best, else latest)",
    )
    add_service_options(sample)


def is_job_id(target: str | Path) -> bool:
    """Whether ``gan sample``'s argument names a job of the service rather than a local
    checkpoint file."""
    text = str(target)
    return not (Path(text).exists() or text.endswith(".pt") or "/" in text or os.sep in text)


Handler = Callable[[Client, argparse.Namespace], int]


def run(
    args: argparse.Namespace,
    parser: argparse.ArgumentParser,
    more: Mapping[str, Handler] | None = None,
) -> bool:
    """Run ``args.command`` if it is a client command, or one of ``more`` (command → handler:
    ``gan sweep``); False when it is not. Errors of the service end the program with its
    message; a service that cannot be reached, with how to start or point at one."""
    more = more or {}
    handlers = {**HANDLERS, **more}
    remote_sample = args.command == "sample" and is_job_id(args.checkpoint)
    if args.command not in COMMANDS and args.command not in more and not remote_sample:
        return False
    logging.getLogger("httpx").setLevel(logging.WARNING)  # no line per request
    try:
        with Client(args.url, api_key=args.api_key) as client:
            code = handlers["sample" if remote_sample else args.command](client, args)
    except ConfigError as e:
        parser.error(str(e))
    except ApiError as e:
        sys.exit(f"gan: the service answered {e}")
    except httpx.TransportError as e:
        sys.exit(
            f"gan: cannot reach the service at {args.url} ({e}): start it with `gan serve`, "
            "or point at it with --url or GAN_URL"
        )
    except KeyboardInterrupt:
        sys.exit(130)
    if code:
        sys.exit(code)
    return True


# --- the commands ------------------------------------------------------------------------------


def submit_command(client: Client, args: argparse.Namespace) -> int:
    overrides = parse_overrides(args.set)
    if args.steps is not None:
        overrides["max_steps"] = args.steps
    if args.webhook:
        overrides["webhook"] = {"url": args.webhook}
    job = client.submit(args.preset, idempotency_key=args.idempotency_key, **overrides)
    print(job["id"], flush=True)  # alone on stdout: ID=$(gan submit …)
    print(
        f"queued job {job['id']} ({job['preset']}, {job['total_steps']:,} steps); "
        f"follow it with `gan watch {job['id']}`",
        file=sys.stderr,
    )
    return watch(client, job["id"], sys.stderr) if args.watch else 0


def jobs_command(client: Client, args: argparse.Namespace) -> int:
    rows = [
        (
            job["id"],
            job["state"],
            job["preset"],
            f"{job['step']:,}/{job['total_steps']:,}",
            _number(job["images_per_sec"], "{:,.0f}"),
            _metric((job["best_metrics"] or {}).get("fid")),
            str(len(job["warnings"])) if job["warnings"] else "",
            job["created_at"][:16].replace("T", " "),
        )
        for job in client.jobs(state=args.state, limit=args.limit)
    ]
    if not rows:
        print("no jobs" + (f" in state {', '.join(args.state)}" if args.state else ""))
        return 0
    header = ("ID", "STATE", "PRESET", "STEP", "IMG/S", "BEST FID", "WARNINGS", "CREATED (UTC)")
    print_table(header, rows)
    return 0


def print_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Rows under a header, in columns as wide as their widest cell."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        print("  ".join(cells).rstrip())


def workers_command(client: Client, args: argparse.Namespace) -> int:
    listing = client.workers()
    rows = [
        (
            worker["name"],
            str(slot["slot"]),
            slot["device"],
            str(slot["threads"]),
            slot["job_id"] or ("(another key's job)" if slot["busy"] else "idle"),
        )
        for worker in listing["workers"]
        for slot in worker["slots"]
    ]
    if rows:
        print_table(("WORKER", "SLOT", "DEVICE", "THREADS", "JOB"), rows)
    print(f"{listing['slots_busy']} of {listing['slots_total']} slots busy")
    return 0


def status_command(client: Client, args: argparse.Namespace) -> int:
    job = client.job(args.id)
    if args.json:
        print(json.dumps(job, indent=2))
    else:
        print(describe(job))
    return 0


def watch_command(client: Client, args: argparse.Namespace) -> int:
    return watch(client, args.id, sys.stdout)


def cancel_command(client: Client, args: argparse.Namespace) -> int:
    job = client.cancel(args.id)
    more = " (its worker checkpoints and stops at its next report)"
    print(f"job {job['id']}: {job['state']}{more if job['state'] == 'cancelling' else ''}")
    return 0


def resume_command(client: Client, args: argparse.Namespace) -> int:
    job = client.resume(args.id, max_steps=args.steps)
    print(f"job {job['id']}: {job['state']}, from step {job['step']:,} to {job['total_steps']:,}")
    return 0


def delete_command(client: Client, args: argparse.Namespace) -> int:
    client.delete(args.id)
    print(f"job {args.id}: deleted")
    return 0


def sample_command(client: Client, args: argparse.Namespace) -> int:
    job_id, out = str(args.checkpoint), Path(args.out)
    data = client.sample(
        job_id,
        n=args.n,
        seed=args.seed,
        label=args.label,
        checkpoint=args.job_checkpoint,
        ema=not args.no_ema,
        truncation=args.truncation,
        nrow=args.nrow,
        format="npy" if out.suffix == ".npy" else "png",
    )
    out.write_bytes(data)
    what = "one row per class" if args.label == "rows" else f"{args.n} samples"
    print(f"{what} of job {job_id} → {out}")
    return 0


def export_command(client: Client, args: argparse.Namespace) -> int:
    data = client.export_generator(
        args.id, format=args.format, checkpoint=args.checkpoint, ema=not args.no_ema
    )
    suffix = {"safetensors": ".safetensors", "onnx": ".onnx", "torchscript": ".pt"}[args.format]
    out = args.out or Path(f"{args.id}-generator{suffix}")
    out.write_bytes(data)
    print(f"the generator of job {args.id} ({args.format}, {len(data)} bytes) → {out}")
    return 0


HANDLERS: dict[str, Handler] = {
    "submit": submit_command,
    "jobs": jobs_command,
    "status": status_command,
    "watch": watch_command,
    "cancel": cancel_command,
    "resume": resume_command,
    "delete": delete_command,
    "sample": sample_command,
    "workers": workers_command,
    "export": export_command,
}


# --- following a job ---------------------------------------------------------------------------


def watch(client: Client, job_id: str, out: TextIO) -> int:
    """Follow the job's events with a progress bar until it finishes: 0 when it succeeded, 1
    when it failed, was cancelled or deleted."""
    job = client.job(job_id)
    if job["state"] in FINAL_STATES:
        print(describe(job), file=out)
        return outcome(job, out)
    view = WatchView(job, out)
    with view.drawing():
        for event in client.events(job_id):
            view.update(event)
    try:
        job = client.job(job_id)
    except ApiError as e:
        if e.status != 404:
            raise
        print(f"job {job_id} was deleted", file=out)
        return 1
    return outcome(job, out)


def outcome(job: Job, out: TextIO) -> int:
    """The last line of a watch, and its exit code."""
    if job["state"] == "succeeded":
        best = job["best_metrics"] or {}
        fid = f"; best fid {best['fid']:.2f} at step {best['step']:,}" if best.get("fid") else ""
        print(f"job {job['id']} succeeded at step {job['step']:,}{fid}", file=out)
        return 0
    reason = f": {job['error']}" if job["error"] else ""
    print(f"job {job['id']} {job['state']} at step {job['step']:,}{reason}", file=out)
    return 1


class WatchView:
    """What ``gan watch`` shows: state changes and warnings as lines, and a progress bar that is
    redrawn in place on a terminal, or printed every couple of seconds elsewhere."""

    def __init__(self, job: Job, out: TextIO) -> None:
        self.job: dict[str, Any] = dict(job)
        self.out, self.tty = out, out.isatty()
        self.warned = {(w["code"], w["step"]) for w in job["warnings"]}
        self.state = job["state"]
        self.last_line, self.pending = 0.0, False
        print(f"job {job['id']} ({job['preset']}): {job['state']}", file=out, flush=True)

    @contextmanager
    def drawing(self) -> Iterator[None]:
        try:
            yield
        finally:
            self._flush()
            if self.tty:
                print(file=self.out)

    def update(self, event: Event) -> None:
        if event.type == "state":
            self.job.update(state=event.data["state"], error=event.data.get("error"))
            if event.data["state"] != self.state:
                self.state = event.data["state"]
                self._flush()
                self._line(f"state: {self.state}")
        elif event.type == "progress":
            self.job.update(event.data)
            for w in event.data.get("warnings", []):
                if (w["code"], w["step"]) not in self.warned:
                    self.warned.add((w["code"], w["step"]))
                    self._line(f"warning at step {w['step']:,}: {w['code']}: {w['message']}")
            self.pending = True
            if self.tty or time.monotonic() - self.last_line >= LINE_EVERY_S:
                self._flush()

    def _flush(self) -> None:
        """Show the progress bar, if there is news."""
        if not self.pending:
            return
        self.pending, self.last_line = False, time.monotonic()
        if self.tty:
            print(f"\r{progress_line(self.job)}\x1b[K", end="", file=self.out, flush=True)
        else:
            print(progress_line(self.job), file=self.out, flush=True)

    def _line(self, text: str) -> None:
        """A line of its own, above the progress bar on a terminal."""
        print(f"\r\x1b[K{text}" if self.tty else text, file=self.out, flush=True)
        if self.tty and self.job.get("step"):
            self.pending = True
            self._flush()


# --- formatting ----------------------------------------------------------------------------------


def _number(value: float | int | None, spec: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return spec.format(value)


def _metric(value: float | int | None) -> str:
    """A metric for reading: 2,140 or 23.4 or 0.0896."""
    if value is not None and abs(value) >= 100:
        return _number(value, "{:,.0f}")
    return _number(value, "{:.3g}")


def duration(seconds: float | None) -> str:
    """3725 → "1h 02m", 200 → "3m 20s", 45 → "45s"."""
    if seconds is None:
        return "–"
    seconds = max(0, round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m {seconds % 60:02d}s"
    return f"{seconds}s"


def bar(step: int, total: int) -> str:
    done = min(1.0, step / total) if total else 0.0
    filled = int(BAR_WIDTH * done)
    return f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {100 * done:3.0f}%"


def metrics_text(job: dict[str, Any] | Job) -> str:
    """The latest evaluation and the best, shortly: "fid 23.41 (best 21.02 @ 1,500)"."""
    latest = job.get("metrics") or {}
    best = job.get("best_metrics") or {}
    name = "fid" if "fid" in latest else next(iter(latest), None)
    if name is None:
        return ""
    text = f"{name} {_metric(latest[name])}"
    if name in best and best.get("step") is not None:
        text += f" (best {_metric(best[name])} @ {best['step']:,})"
    return text


def progress_line(job: dict[str, Any] | Job) -> str:
    """One line of progress: bar, steps, throughput, ETA, losses, latest quality."""
    parts = [
        bar(job["step"], job["total_steps"]),
        f"{job['step']:,}/{job['total_steps']:,}",
        f"{_number(job.get('images_per_sec'), '{:,.0f}')} img/s",
        f"ETA {duration(job.get('eta_seconds'))}",
        f"D {_number(job.get('d_loss'), '{:.3f}')}",
        f"G {_number(job.get('g_loss'), '{:.3f}')}",
    ]
    quality = metrics_text(job)
    return "  ".join([*parts, quality] if quality else parts)


def describe(job: Job) -> str:
    """``gan status``: the job for a person, a field a line."""
    lines = [
        ("job", job["id"]),
        ("state", job["state"] + (f" on {job['worker']}" if job["worker"] else "")),
        ("preset", f"{job['preset']} ({job['config'].get('dataset', '?')})"),
        ("progress", progress_line(job)),
        ("checkpoint", f"step {job['checkpoint_step']:,}" if job["checkpoint_step"] else "none"),
    ]
    if job["metrics"]:
        values = ", ".join(f"{k} {_metric(v)}" for k, v in job["metrics"].items())
        lines.append(("metrics", f"{values} (step {job['metrics_step']:,})"))
    if job["best_metrics"]:
        best = {k: v for k, v in job["best_metrics"].items() if k != "step"}
        values = ", ".join(f"{k} {_metric(v)}" for k, v in best.items())
        lines.append(("best", f"{values} (step {job['best_metrics'].get('step')})"))
    lines += [
        ("warning", f"step {w['step']:,}: {w['code']}: {w['message']}") for w in job["warnings"]
    ]
    if job["error"]:
        lines.append(("error", job["error"]))
    lines.append(("created", job["created_at"]))
    if job["finished_at"]:
        lines.append(("finished", job["finished_at"]))
    return "\n".join(f"{name:<11}{value}" for name, value in lines)
