"""Store and broker outages under a real service (API, workers, a PostgreSQL and a Redis of its
own, stopped and started again for real): the scenarios of harness/outage.py, which says what
each checks, at full size.

    python -m bench.outage                                  # 20 queued jobs and a 30 s outage,
                                                            # 3000 steps through a 30 s outage
    python -m bench.outage --jobs 6 --down 10 --steps 600   # about the size CI runs

Prints one JSON object per scenario (and writes them to ``--json``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from harness.outage import (
    queued_through_postgres_outage,
    training_through_postgres_outage,
    worker_lost_while_redis_down,
)
from harness.postgres import PostgresServer
from harness.services import RedisServer, Service


@contextmanager
def own_service(env: dict[str, str], keep: bool) -> Iterator[tuple[Service, PostgresServer,
                                                                   RedisServer]]:  # fmt: skip
    """The API (no worker yet) on a PostgreSQL and a Redis (persistent) of its own, in a
    temporary folder removed afterwards (kept, with the processes' logs, when ``keep``)."""
    folder = Path(tempfile.mkdtemp(prefix="bench-outage-"))
    (folder / "redis").mkdir()
    postgres, redis = PostgresServer(folder), RedisServer(folder / "redis", persistent=True)
    try:
        postgres.start()
        redis.start()
        service = Service(
            folder,
            {
                "GAN_DATABASE_URL": postgres.url,
                "GAN_BROKER_URL": redis.url,
                "GAN_TASK_QUEUE": f"bench-{uuid.uuid4().hex[:8]}",
                "GAN_RECONCILE_EVERY_S": "1",
                "OMP_NUM_THREADS": "1",
                **env,
            },
        )
        try:
            service.serve("--no-worker")
            yield service, postgres, redis
        finally:
            service.stop()
    finally:
        redis.stop()
        postgres.close()
        if keep:
            print(f"logs kept in {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=20, help="jobs queued through the outage")
    parser.add_argument("--down", type=float, default=30.0, help="seconds PostgreSQL is down")
    parser.add_argument("--steps", type=int, default=3000, help="steps of the training job")
    parser.add_argument("--json", type=Path, help="append the figures here, a line each")
    parser.add_argument("--keep", action="store_true", help="keep the processes' logs")
    args = parser.parse_args()

    def queued(service: Service, postgres: PostgresServer, redis: RedisServer) -> dict[str, Any]:
        return queued_through_postgres_outage(
            service, postgres, redis, jobs=args.jobs, down_s=args.down
        )

    def training(service: Service, postgres: PostgresServer, _: RedisServer) -> dict[str, Any]:
        service.start("worker")  # the default lease: 60 s, longer than the outage
        return training_through_postgres_outage(
            service, postgres, max_steps=args.steps, down_s=args.down
        )

    def lost_worker(service: Service, _: PostgresServer, redis: RedisServer) -> dict[str, Any]:
        return worker_lost_while_redis_down(service, redis, max_steps=args.steps // 3)

    runs: list[tuple[Callable[..., dict[str, Any]], dict[str, str]]] = [
        (queued, {}), (training, {}), (lost_worker, {"GAN_LEASE_S": "10"}),
    ]  # fmt: skip
    for scenario, env in runs:
        with own_service(env, args.keep) as (service, postgres, redis):
            figures = {"scenario": scenario.__name__, **scenario(service, postgres, redis)}
        line = json.dumps(figures)
        print(line, flush=True)
        if args.json:
            with open(args.json, "a") as f:
                f.write(line + "\n")


if __name__ == "__main__":
    main()
