"""The ``gan`` command: ``gan serve`` (API plus one worker), ``gan worker``, and the local
commands of ``gan.cli`` (``gan train``, ``gan sample``) that need no service."""

from __future__ import annotations

import argparse
import logging
import signal
import subprocess
import sys

from gan import cli as local_cli
from worker.settings import get_settings


def serve(host: str, port: int, with_worker: bool) -> None:
    """Run the API in this process and, unless told not to, one worker beside it."""
    import uvicorn

    settings = get_settings()
    print(
        f"GAN service on http://{host}:{port} (API docs at /docs)\n"
        f"  job store  {settings.database_url}\n"
        f"  broker     {settings.broker_url}"
        + (f" ({settings.broker_dir})" if settings.broker_url.startswith("filesystem") else "")
        + f"\n  data       {settings.data_dir}\n  artifacts  {settings.artifacts_dir}",
        flush=True,
    )
    worker = subprocess.Popen([sys.executable, "-m", "worker"]) if with_worker else None
    # uvicorn shuts down gracefully on SIGTERM, then re-raises it to the handler found before:
    # make that a clean exit, so the `finally` below always stops the worker.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        uvicorn.run("api.main:app", host=host, port=port)
    except KeyboardInterrupt:  # Ctrl-C: uvicorn re-raises SIGINT the same way
        pass
    finally:
        if worker is not None:
            stop_worker(worker)


def stop_worker(worker: subprocess.Popen[bytes]) -> None:
    """Warm shutdown: the worker checkpoints its running job and requeues it, then exits."""
    worker.send_signal(signal.SIGTERM)
    try:
        worker.wait(timeout=60)
    except subprocess.TimeoutExpired:
        worker.kill()  # the job resumes from its last checkpoint on the next start
    print(f"worker stopped (exit code {worker.wait()})", flush=True)


def build_parser() -> argparse.ArgumentParser:
    settings = get_settings()
    parser = argparse.ArgumentParser(prog="gan", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve_cmd = commands.add_parser("serve", help="run the API and one worker")
    serve_cmd.add_argument("--host", default=settings.host)
    serve_cmd.add_argument("--port", type=int, default=settings.port)
    serve_cmd.add_argument("--no-worker", action="store_true", help="run the API alone")
    commands.add_parser("worker", help="run one training worker")
    local_cli.add_commands(commands)
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    if args.command == "serve":
        serve(args.host, args.port, with_worker=not args.no_worker)
    elif not local_cli.run(args, parser):
        from worker.main import run_worker

        run_worker()


if __name__ == "__main__":
    main()
