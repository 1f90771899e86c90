"""Load on a real service (API, 2 workers, a Redis of its own, PostgreSQL): many jobs submitted
at once, and many sampling clients while a job trains (the scenarios ``jobs`` and ``sampling``
of harness/load.py, which says what each checks).

    python -m bench.load --data ../shared/data/mnist                 # the full run: 500 jobs,
                                                                     # 64 clients for 30 s
    python -m bench.load --data DIR --jobs 60 --clients 16 --seconds 10   # the size CI runs

Prints one JSON object per scenario (and writes them to ``--json``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from harness.load import jobs_scenario, sampling_scenario
from harness.services import RedisServer, Service, postgres_schema

POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@contextmanager
def own_service(
    data_dir: Path,
    postgres: str,
    workers: int,
    threads: int = 1,
    keep: bool = False,
    settings: dict[str, str] | None = None,
) -> Iterator[Service]:
    """API and ``workers`` workers (``threads`` CPU threads each) in a temporary folder, on a
    Redis of their own and a fresh PostgreSQL schema, with ``settings`` (GAN_* variables) on
    top; all removed afterwards (but the folder, with the processes' logs, when ``keep``)."""
    folder = Path(tempfile.mkdtemp(prefix="bench-load-"))
    broker = RedisServer(folder)
    try:
        broker.start()
        with postgres_schema(postgres) as database:
            env = {
                "GAN_DATA_DIR": str(data_dir.resolve()),
                "GAN_DATABASE_URL": database,
                "GAN_BROKER_URL": broker.url,
                "GAN_LEASE_S": "10",
                "GAN_RECONCILE_EVERY_S": "2",
                # Workers on the CPU of one machine: one thread each, else their OpenMP thread
                # pools spin against each other (60 tiny jobs on 2 workers and 2 cores: 133 s
                # with torch's default threads, 6.5 s with one each; RELIABILITY.md).
                "OMP_NUM_THREADS": str(threads),
                **(settings or {}),
            }
            service = Service(folder, env)
            try:
                service.serve("--no-worker")
                for _ in range(workers):
                    service.start("worker")
                yield service
            finally:
                service.stop()
    finally:
        broker.stop()
        if keep:
            print(f"logs kept in {folder}", flush=True)
        else:
            shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--data", type=Path, required=True, help="MNIST IDX folder")
    parser.add_argument("--postgres", default=POSTGRES_URL, help="PostgreSQL to make a schema in")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads of each worker")
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=64, help="POSTs in flight at once")
    parser.add_argument("--clients", type=int, default=64, help="sampling clients")
    parser.add_argument("--seconds", type=float, default=30, help="of sampling")
    parser.add_argument("--timeout", type=float, default=1800, help="for all jobs to finish")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--keep", action="store_true", help="keep the service's folder and logs")
    parser.add_argument("--only", choices=["jobs", "sampling"], help="run one scenario")
    args = parser.parse_args()
    rows = []
    with own_service(args.data, args.postgres, args.workers, args.threads, args.keep) as service:
        if args.only in (None, "jobs"):
            rows.append(jobs_scenario(service.url, args.jobs, args.concurrency, args.timeout))
            print(json.dumps(rows[-1]), flush=True)
        if args.only in (None, "sampling"):
            rows.append(sampling_scenario(service, args.clients, args.seconds))
            print(json.dumps(rows[-1]), flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
