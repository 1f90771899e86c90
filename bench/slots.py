"""Slots: jobs per hour and aggregate throughput of one `gan worker` with 1, 2, … slots.

    nice -n 10 python -m bench.slots --data ../shared/data/mnist --slots 1,2 --jobs 6
    # on a GPU box (the rows of BENCHMARKS.md still to be measured):
    python -m bench.slots --data DATA --gpu 0 --slots 1,2,4,8,16 --jobs 16 --preset stable \\
        --set max_steps=500 [--mps]

For each slot count K, in turn: starts the API and one `gan worker --jobs K` (CPU slots, each
with cores/K threads) or `gan worker --gpus G --jobs-per-gpu K` (``--gpu``), on a Redis of its
own (or the embedded filesystem broker: ``--broker filesystem``, where no redis-server is
installed) and a job store (a SQLite file unless ``--database-url``), waits for its K slots
to be live (GET /workers), submits ``--jobs`` identical small jobs at once and waits for all.
Reports, from the job store's own timestamps:

- ``jobs_per_hour``: jobs / (last finished_at − first created_at);
- ``images_per_s``: real images through D of all jobs (steps × batch_size × d_steps) / that
  span: the aggregate throughput;
- ``job_s``: the mean of each job's own finished_at − started_at (how much one job slows among
  K: its time to the same steps, so to the same quality).

``--mps`` starts the CUDA MPS daemon (``nvidia-cuda-mps-control -d``) first and stops it after.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

SPEC = {"preset": "classic", "max_steps": 200, "eval_every": 0, "checkpoint_every": 100}


def seconds(later: str, earlier: str) -> float:
    return (datetime.fromisoformat(later) - datetime.fromisoformat(earlier)).total_seconds()


def measure(
    service: Any, slots: int, spec: dict[str, Any], jobs: int, gpu: str | None
) -> dict[str, Any]:
    """One `gan worker` with ``slots`` slots trains ``jobs`` copies of ``spec``."""
    from harness.services import wait_for

    flags = ["--gpus", gpu, "--jobs-per-gpu", str(slots)] if gpu else ["--jobs", str(slots)]
    worker = service.start("worker", *flags)

    def live_slots() -> int:
        answer = httpx.get(f"{service.url}/workers", timeout=10).json()
        return int(answer["slots_total"])

    try:
        wait_for(lambda: live_slots() == slots, 300, f"{slots} live slots", every=0.5)
        ids = [service.submit(spec) for _ in range(jobs)]
        done = [finished(service, job_id) for job_id in ids]
    finally:
        worker.terminate()
        worker.wait(timeout=120)
    own = [seconds(j["finished_at"], j["started_at"]) for j in done]
    span = seconds(max(j["finished_at"] for j in done), min(j["created_at"] for j in done))
    images = sum(j["total_steps"] * j["config"]["batch_size"] * j["config"]["d_steps"]
                 for j in done)  # fmt: skip
    return {
        "slots": slots,
        "jobs": jobs,
        "span_s": round(span, 1),
        "jobs_per_hour": round(jobs / span * 3600, 1),
        "images_per_s": round(images / span, 1),
        "job_s": round(statistics.mean(own), 1),
    }


def finished(service: Any, job_id: str) -> dict[str, Any]:
    """The job, once it has succeeded."""
    from harness.services import wait_for

    def succeeded() -> dict[str, Any] | None:
        job: dict[str, Any] = service.job(job_id)
        return job if job["state"] == "succeeded" else None

    found: dict[str, Any] = wait_for(succeeded, 7200, f"job {job_id}", every=0.5)
    return found


def main() -> None:
    from harness.services import RedisServer, Service

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--slots", default="1,2", help="slot counts to compare, in this order")
    parser.add_argument("--jobs", type=int, default=6, help="jobs per slot count")
    parser.add_argument("--gpu", help="one GPU's id: GPU slots (--jobs-per-gpu) instead of CPU")
    parser.add_argument("--preset", default=SPEC["preset"])
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE")
    parser.add_argument("--mps", action="store_true", help="run with CUDA MPS")
    parser.add_argument("--database-url")
    parser.add_argument(
        "--broker",
        choices=["redis", "filesystem"],
        default="redis" if shutil.which("redis-server") else "filesystem",
    )
    parser.add_argument("--json", type=Path, help="append the rows here, one JSON line each")
    args = parser.parse_args()
    spec: dict[str, Any] = {**SPEC, "preset": args.preset}
    for item in args.set:
        name, _, value = item.partition("=")
        spec[name] = json.loads(value) if value[:1].isdigit() else value
    folder = Path(tempfile.mkdtemp(prefix="bench-slots-"))
    redis_server = RedisServer(folder) if args.broker == "redis" else None
    if redis_server is not None:
        redis_server.start()
    service = Service(folder, {
        "GAN_DATA_DIR": str(args.data.resolve()),
        "GAN_BROKER_URL": redis_server.url if redis_server else "filesystem://",
        "GAN_DATABASE_URL": args.database_url or f"sqlite:///{folder / 'gan.db'}",
    })  # fmt: skip
    if args.mps:
        subprocess.run(["nvidia-cuda-mps-control", "-d"], check=True)
    try:
        service.serve("--no-worker")
        for slots in (int(k) for k in args.slots.split(",")):
            row = {**measure(service, slots, spec, args.jobs, args.gpu), "mps": args.mps,
                   "device": f"cuda:{args.gpu}" if args.gpu else "cpu", "spec": spec}  # fmt: skip
            print(json.dumps(row), flush=True)
            if args.json:
                with args.json.open("a") as f:
                    f.write(json.dumps(row) + "\n")
    finally:
        service.stop()
        if redis_server is not None:
            redis_server.stop()
        if args.mps:
            subprocess.run(["nvidia-cuda-mps-control"], input="quit\n", text=True, check=False)


if __name__ == "__main__":
    main()
