"""The ``gan`` command: ``gan serve`` (API plus one worker), ``gan worker`` (training slots),
``gan db`` (the job store's schema migrations), ``gan keys`` (API keys), the local commands of
``gan.cli`` (``gan train``, ``gan sample``) that need no service, and the client commands of
``api.remote`` (``gan submit``, ``jobs``, ``status``, ``watch``, ``cancel``, ``resume``,
``delete``, ``workers``, ``export``, and ``gan sample`` of a job) and of ``api.remote_sweeps``
(``gan sweep …``) that talk to one."""

from __future__ import annotations

import argparse
import logging
import signal
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from api import remote, remote_sweeps
from gan import cli as local_cli
from worker.broker import is_embedded
from worker.logs import setup_logging
from worker.settings import get_settings, usable_cores

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

log = logging.getLogger(__name__)


LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def access(host: str) -> str:
    """How the API guards itself, for the start-up lines; exits when it would be open to the
    network: without API keys, the service only listens on this machine."""
    from worker.store import keys
    from worker.store.db import session_scope

    settings = get_settings()
    with session_scope(settings.database_url) as session:
        stored = len(keys.list_api_keys(session))
    if settings.api_keys or stored:
        return f"API keys required ({len(settings.api_keys)} from settings, {stored} stored)"
    if host not in LOOPBACK_HOSTS:
        sys.exit(
            f"gan: refusing to serve on {host} without API keys: anyone who can reach it could "
            "train and read jobs. Make a key with `gan keys create NAME` (or set GAN_API_KEYS), "
            "or serve on 127.0.0.1."
        )
    return "open: no API keys configured, so anyone on this machine can use it (localhost only)"


def serve(host: str, port: int, with_worker: bool, processes: int = 1) -> None:
    """Run the API (in this process, or ``processes`` processes sharing the port) and, unless
    told not to, one worker beside it."""
    import uvicorn

    from api.metricsdir import shared_metrics_dir
    from api.server import allow_open_files, uvicorn_options

    settings = get_settings()
    guard = access(host)
    allow_open_files(settings.max_connections)  # before the processes start: they inherit it
    print(
        f"GAN service on http://{host}:{port} (dashboard at /, API docs at /docs)\n"
        f"  job store  {settings.database_url}\n"
        f"  broker     {settings.broker_url}"
        + (f" ({settings.broker_dir})" if is_embedded(settings.broker_url) else "")
        + f"\n  data       {settings.data_dir}\n  artifacts  {settings.artifacts_url}"
        + f"\n  access     {guard}",
        flush=True,
    )
    from worker.artifacts import check_store  # not worker.main: the API needs no torch to start

    check_store(settings.artifacts(), "api")  # logs which store, and why it cannot be used
    worker = subprocess.Popen([sys.executable, "-m", "worker"]) if with_worker else None
    # uvicorn shuts down gracefully on SIGTERM, then re-raises it to the handler found before:
    # make that a clean exit, so the `finally` below always stops the worker.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        with shared_metrics_dir(processes):  # /metrics sums the processes' own metrics
            # log_config=None: uvicorn's own loggers propagate to the lines setup_logging set up.
            uvicorn.run(
                "api.main:app",
                host=host,
                port=port,
                log_config=None,
                workers=processes,
                **uvicorn_options(settings),
            )
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


# --- gan db: the job store's schema migrations (worker/migrate.py) ----------------------------


def add_db_commands(commands: Any) -> None:
    """Add ``db upgrade``, ``db current``, ``db stamp`` and ``db revision``."""
    db_cmd = commands.add_parser(
        "db",
        help="migrate the job store's schema",
        description="Schema migrations of the job store at GAN_DATABASE_URL (worker/migrations).",
    )
    actions = db_cmd.add_subparsers(dest="db_command", required=True)
    actions.add_parser(
        "upgrade", help="migrate it to the newest revision (as the service does when it starts)"
    )
    actions.add_parser("current", help="show its revision")
    actions.add_parser(
        "stamp",
        help="adopt a job store made before migrations, if its tables match this version's",
    )
    revision_cmd = actions.add_parser(
        "revision",
        help="write a new migration to worker/migrations/versions, autogenerated from how the "
        "models differ from the job store (for developers: review it before committing)",
    )
    revision_cmd.add_argument("-m", "--message", required=True, help="what it changes")


def db_command(args: argparse.Namespace) -> None:
    """Run ``gan db <args.db_command>`` on the configured job store."""
    from sqlalchemy import create_engine
    from sqlalchemy.exc import OperationalError

    from worker import migrate

    engine = create_engine(get_settings().database_url)
    name = engine.url.render_as_string(hide_password=True)
    try:
        if args.db_command == "upgrade":
            before, head = migrate.upgrade(engine), migrate.head()
            done = "already up to date" if before == head else f"upgraded from {before or 'empty'}"
            print(f"{name}: at revision {head} (head), {done}")
        elif args.db_command == "current":
            print(f"{name}: {describe_revision(engine)}")
        elif args.db_command == "stamp":
            print(f"{name}: adopted, stamped at revision {migrate.adopt(engine)} (head)")
        else:
            print(f"wrote {migrate.revision(engine, args.message)}")
    except migrate.SchemaError as e:
        sys.exit(f"gan: {e}")  # what to do, not a traceback
    except OperationalError as e:
        sys.exit(f"gan: cannot reach the job store {name}: {e.orig}")
    finally:
        engine.dispose()


def describe_revision(engine: Engine) -> str:
    """Where the job store stands, for ``gan db current``."""
    from worker import migrate

    database = engine.url.database
    if engine.dialect.name == "sqlite" and database and not Path(database).exists():
        return "no job store yet (the service or `gan db upgrade` creates it)"
    with engine.connect() as connection:
        revision, unmanaged = migrate.current(connection), migrate.unmanaged_tables(connection)
    head = migrate.head()
    if unmanaged:
        tables = ", ".join(unmanaged)
        return f"made before migrations (tables {tables}, but no revision): see `gan db stamp`"
    if revision is None:
        return "empty (the service or `gan db upgrade` creates its tables)"
    if revision == head:
        return f"at revision {revision} (head)"
    if migrate.is_known(revision):
        return f"at revision {revision}; head is {head}: run `gan db upgrade`"
    return f"at revision {revision}, which this version does not know (made by a newer one)"


def migrate_job_store() -> None:
    """Bring the job store up to date before the API or a worker starts. One that cannot be
    (made before migrations) ends the program with what to do; one that cannot be reached yet
    is left to the first use (the API's /readyz reports it meanwhile)."""
    from sqlalchemy.exc import OperationalError

    from worker import migrate
    from worker.store.db import get_engine

    try:
        get_engine(get_settings().database_url)
    except migrate.SchemaError as e:
        sys.exit(f"gan: {e}")  # what to do, not a traceback
    except OperationalError as e:
        log.warning("job store unreachable at start-up, migrated on first use: %s", e.orig)


# --- gan keys: API keys ------------------------------------------------------------------------


def add_keys_commands(commands: Any) -> None:
    keys_cmd = commands.add_parser(
        "keys",
        help="manage API keys",
        description="API keys of the service, stored hashed in the job store. Once there is "
        "one (here or in GAN_API_KEYS), every request needs one, and each job belongs to the "
        "key that created it.",
    )
    actions = keys_cmd.add_subparsers(dest="keys_command", required=True)
    create = actions.add_parser("create", help="make a key and print it (it is shown only once)")
    create.add_argument("name", help="who or what it is for")
    actions.add_parser("list", help="list the stored keys (ids and names, never the keys)")
    revoke = actions.add_parser("revoke", help="delete a stored key")
    revoke.add_argument("id", help="its id, from `gan keys list`")


def keys_command(args: argparse.Namespace) -> None:
    from worker.store import keys
    from worker.store.db import session_scope

    with session_scope(get_settings().database_url) as session:
        if args.keys_command == "create":
            key, secret = keys.create_api_key(session, args.name)
            print(f"{secret}\n(id {key.id}, {key.name!r}: keep the key; it is not stored)")
        elif args.keys_command == "list":
            for key in keys.list_api_keys(session):
                print(f"{key.id}  {key.created_at:%Y-%m-%d %H:%M}  {key.name}")
        elif not keys.revoke_api_key(session, args.id):
            sys.exit(f"gan: no stored key {args.id!r} (see `gan keys list`)")
        else:
            print(f"revoked {args.id}")


# --- gan worker: training slots (worker/supervisor.py) ----------------------------------------


def add_worker_command(commands: Any) -> None:
    worker_cmd = commands.add_parser(
        "worker",
        help="run a training worker: one or more slots, each training one job at a time",
        description="Train jobs: one slot per visible GPU by default (one CPU slot without "
        "GPUs). Each slot is a process of its own, bound to one GPU with its share of the "
        "GPU's memory and of the CPU's cores; a slot that dies is replaced, SIGTERM or Ctrl-C "
        "checkpoints and requeues every running job.",
    )
    where = worker_cmd.add_mutually_exclusive_group()
    where.add_argument(
        "--gpus",
        type=gpu_list,
        help="the GPUs to train on, e.g. 0,1 (default: every visible GPU)",
    )
    where.add_argument("--gpu", type=gpu_list, dest="gpus", help=argparse.SUPPRESS)  # older
    where.add_argument(
        "--jobs",
        type=positive_int,
        help="train this many jobs at once on the CPU (each with cores/JOBS threads; CUDA is "
        "hidden from them)",
    )
    worker_cmd.add_argument(
        "--jobs-per-gpu",
        type=positive_int,
        default=1,
        help="jobs each GPU trains at once, each with 1/K of its memory (default 1)",
    )


def gpu_list(text: str) -> list[str]:
    gpus = [gpu.strip() for gpu in text.split(",") if gpu.strip()]
    if not gpus:
        raise argparse.ArgumentTypeError("name at least one GPU, e.g. 0 or 0,1")
    return gpus


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def worker_command(args: argparse.Namespace) -> None:
    """`gan worker`: supervise the planned slots until SIGTERM or Ctrl-C."""
    from worker.supervisor import Supervisor, plan_slots, requeue_orphans, visible_gpus

    if args.jobs is not None and args.jobs_per_gpu != 1:
        sys.exit("gan: --jobs-per-gpu is for GPU slots; --jobs K runs K slots on the CPU")
    gpus = [] if args.jobs else args.gpus if args.gpus is not None else visible_gpus()
    plans = plan_slots(gpus, args.jobs_per_gpu, args.jobs, usable_cores())
    if len(plans) == 1 and not plans[0].env:  # no GPU, no --jobs: one slot with torch's
        from worker.main import run_worker  # defaults, in this process, as a worker always was

        run_worker()
        return
    requeue_orphans(get_settings())
    sys.exit(Supervisor(plans).run())


def build_parser() -> argparse.ArgumentParser:
    settings = get_settings()
    parser = argparse.ArgumentParser(prog="gan", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve_cmd = commands.add_parser("serve", help="run the API and one worker")
    serve_cmd.add_argument("--host", default=settings.host)
    serve_cmd.add_argument("--port", type=int, default=settings.port)
    serve_cmd.add_argument("--no-worker", action="store_true", help="run the API alone")
    serve_cmd.add_argument(
        "--processes",
        type=int,
        default=settings.api_processes,
        help="API processes sharing the port (sampling is CPU work: one per core serves the "
        "most; each keeps its own caches and rate limits)",
    )
    add_worker_command(commands)
    add_db_commands(commands)
    add_keys_commands(commands)
    local_cli.add_commands(commands)
    remote.add_commands(commands)  # after gan.cli's: it extends `gan sample`
    remote_sweeps.add_commands(commands)
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)

    setup_logging(get_settings().log_format)
    if args.command == "db":
        db_command(args)
    elif args.command == "keys":
        migrate_job_store()
        keys_command(args)
    elif args.command == "serve":
        migrate_job_store()
        serve(args.host, args.port, with_worker=not args.no_worker, processes=args.processes)
    elif remote.run(args, parser, remote_sweeps.HANDLERS):
        pass
    elif not local_cli.run(args, parser):
        migrate_job_store()
        worker_command(args)


if __name__ == "__main__":
    main()
