"""Dispatch: how long a job waits between ``POST /jobs`` and a worker starting it, on Redis.

    python -m bench.dispatch --data ../shared/data/mnist [--jobs 20] [--queued 100]

Starts the API and one worker (``gan serve --no-worker`` + ``gan worker``) on Redis (a database
of its own, flushed) and a job store (a temporary SQLite file unless ``--database-url``). The
dispatch time of a job is its ``started_at`` (when a worker claimed it: before any data is
loaded) minus its ``created_at`` (when the API stored it), both server-side clocks.

- idle worker: ``--jobs`` one-step jobs, one after another: the median dispatch time;
- ``--queued`` jobs posted while no worker runs, then a worker started: how long each job waits
  for those before it, and the gap between one job finishing and the next starting (the
  per-job cost of the queue itself).
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import statistics
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

import redis

SPEC = {"preset": "classic", "max_steps": 1, "checkpoint_every": 1, "eval_every": 0}


def seconds(later: str, earlier: str) -> float:
    return (datetime.fromisoformat(later) - datetime.fromisoformat(earlier)).total_seconds()


def main() -> None:
    from harness.services import Service, wait_for

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--queued", type=int, default=100)
    parser.add_argument("--broker", default="redis://127.0.0.1:6379/8")
    parser.add_argument("--database-url")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-dispatch-"))
    redis.Redis.from_url(args.broker).flushdb()
    env = {
        "GAN_DATA_DIR": str(args.data.resolve()),
        "GAN_BROKER_URL": args.broker,
        "GAN_DATABASE_URL": args.database_url or f"sqlite:///{folder / 'gan.db'}",
    }
    service = Service(folder, env)
    result: dict[str, Any] = {}
    try:
        service.serve("--no-worker")
        worker = service.start("worker")

        def finished(job_id: str) -> dict[str, Any] | None:
            job = service.job(job_id)
            return job if job["state"] == "succeeded" else None

        def run_one() -> dict[str, Any]:
            job_id = service.submit(SPEC)
            job: dict[str, Any] = wait_for(lambda: finished(job_id), 120, "a job", every=0.02)
            return job

        waits = []
        for _ in range(args.jobs + 1):  # the first one warms the worker up (imports, data)
            job = run_one()
            waits.append(seconds(job["started_at"], job["created_at"]))
        idle = waits[1:]
        result["idle"] = {"jobs": len(idle), "median_s": statistics.median(idle),
                          "max_s": max(idle)}  # fmt: skip
        print(json.dumps(result), flush=True)

        worker.terminate()
        worker.wait(timeout=60)
        ids = [service.submit(SPEC) for _ in range(args.queued)]
        service.start("worker")
        jobs = [wait_for(functools.partial(finished, i), 600, "the queue", every=0.2) for i in ids]
        jobs.sort(key=lambda j: j["started_at"])
        pairs = itertools.pairwise(jobs)
        gaps = [seconds(b["started_at"], a["finished_at"]) for a, b in pairs]
        result["queued"] = {
            "jobs": len(jobs),
            "first_wait_s": seconds(jobs[0]["started_at"], jobs[0]["created_at"]),
            "last_wait_s": seconds(jobs[-1]["started_at"], jobs[-1]["created_at"]),
            "median_gap_s": statistics.median(gaps),
            "median_run_s": statistics.median(
                seconds(j["finished_at"], j["started_at"]) for j in jobs
            ),
        }
        print(json.dumps(result["queued"]), flush=True)
    finally:
        service.stop()
        redis.Redis.from_url(args.broker).flushdb()
    idle_row = result["idle"]
    queued_row = result["queued"]
    print(f"\nidle worker: median POST→start {idle_row['median_s'] * 1e3:.0f} ms "
          f"(max {idle_row['max_s'] * 1e3:.0f} ms, {idle_row['jobs']} jobs)")  # fmt: skip
    print(f"{queued_row['jobs']} queued: finish→next start median "
          f"{queued_row['median_gap_s'] * 1e3:.0f} ms; the last waited "
          f"{queued_row['last_wait_s']:.1f} s; a job ran "
          f"{queued_row['median_run_s']:.2f} s")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
