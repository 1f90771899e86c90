"""Hostile clients against a real service (API, one worker training an MNIST job, a Redis of its
own, PostgreSQL), with API keys: many event streams, a burst of sampling at the largest n
while they are open, then thousands of idle sockets. Meanwhile a probe GETs /livez and
GET /jobs/{id} one after the other and samples the API's memory (harness/hostile.py).

    python -m bench.hostile --data ../shared/data/mnist       # the full run: 300 streams,
                                                              # 200 samplings at n=1024,
                                                              # 5000 idle sockets
    python -m bench.hostile --data DIR --streams 60 --samplings 40 --idle 500   # a quick one

The sampling burst is sent ``--bursts`` times (5), 2 s apart, with the streams open, so that
the probe sees about 200 requests of each kind meanwhile (one burst lasts about 2.5 s on a
quiet machine, and the probe sends one of each every 0.1 s).

Prints one JSON object (and writes it to ``--json``).
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from bench.load import POSTGRES_URL, own_service
from harness.hostile import (
    Probe,
    closed_by_server,
    open_fds,
    open_streams,
    queued_jobs,
    rss_mb,
    sample_burst,
    sockets,
)
from harness.services import Service, wait_for

KEYS = [f"bench-key-{i}" for i in range(10)]
TRAINER = {"max_steps": 10_000_000, "checkpoint_every": 20, "log_every": 10, "eval_every": 0}
HEADER_TIMEOUT_S = 5


def checkpointed_jobs(service: Service) -> dict[str, str]:
    """A job for each key (key → id): the first key's trains on MNIST for as long as the run
    lasts (its streams get events), the others stay queued behind it with a copy of its first
    checkpoint, so that every key can sample."""
    first = KEYS[0]
    response = httpx.post(f"{service.url}/jobs", json=TRAINER, headers={"X-API-Key": first})
    trainer = response.json()["id"]
    folder = service.tmp_path / "var" / "artifacts" / "jobs"
    wait_for(lambda: sorted((folder / trainer / "checkpoints").glob("step-*.pt")), 600,
             "the trainer's first checkpoint")  # fmt: skip
    step = sorted((folder / trainer / "checkpoints").glob("step-*.pt"))[0]
    others = queued_jobs(service.url, KEYS[1:])
    for job_id in others.values():
        (folder / job_id / "checkpoints").mkdir(parents=True)
        shutil.copy(step, folder / job_id / "checkpoints" / step.name)
    return {first: trainer, **others}


def probed(service: Service, jobs: dict[str, str], seconds: float) -> dict[str, Any]:
    """The probe's figures over ``seconds`` of whatever load is on."""
    probe = Probe(service.url, ["/livez", f"/jobs/{jobs[KEYS[0]]}"], KEYS[0], api_pid(service))
    probe.start()
    time.sleep(seconds)
    return probe.stop()


def api_pid(service: Service) -> int:
    return service.processes[0].pid  # own_service starts the API first


def streams_and_sampling(service: Service, jobs: dict[str, str], args: Any) -> dict[str, Any]:
    """Streams opened (``args.streams``, spread over the keys), then a sampling burst while
    they are open; the probe throughout, and memory before, at peak and after."""
    pid = api_pid(service)
    sample_burst(service.url, jobs, len(KEYS), args.n)  # warm: torch and every generator loaded
    time.sleep(2)
    out: dict[str, Any] = {"idle_rss_mb": rss_mb(pid), "baseline": probed(service, jobs, 5)}
    per_key = max(1, args.streams // len(KEYS))
    streams, statuses = open_streams(service.port, jobs, per_key)
    out["streams"] = {"asked": per_key * len(KEYS), "statuses": dict(statuses)}
    try:
        out["with_streams"] = probed(service, jobs, 10)
        probe = Probe(service.url, ["/livez", f"/jobs/{jobs[KEYS[0]]}"], KEYS[0], pid)
        probe.start()
        sampled: Counter[str] = Counter()
        seconds = []
        for burst in range(args.bursts):
            if burst:
                time.sleep(2)
            started = time.monotonic()
            sampled.update(sample_burst(service.url, jobs, args.samplings, args.n))
            seconds.append(round(time.monotonic() - started, 1))
        out["sampling"] = {
            "asked": args.samplings,
            "n": args.n,
            "bursts": args.bursts,
            "statuses": dict(sampled),
            "seconds": seconds,
        }
        time.sleep(2)
        out["with_streams_and_sampling"] = probe.stop()
        out["peak_rss_mb"] = probe.peak_rss_mb
        past, refused = open_streams(service.port, {KEYS[0]: jobs[KEYS[0]]}, 101)
        out["streams"]["one_more_key_beyond_its_bound"] = dict(refused)
        for s in past:
            s.close()
    finally:
        for s in streams:
            s.close()
    for after_s in (5, 15):  # anyio's idle threads (and their stacks) exit after 10 s
        time.sleep(after_s - (5 if after_s == 15 else 0))
        out[f"rss_mb_{after_s}s_after"] = rss_mb(pid)
        out[f"over_idle_{after_s}s_after"] = round(rss_mb(pid) / out["idle_rss_mb"], 3)
    return out


def idle_sockets(service: Service, jobs: dict[str, str], count: int) -> dict[str, Any]:
    """``count`` connections that send nothing: closed by the API within its header timeout,
    while the probe is served."""
    pid = api_pid(service)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, count + 1024)), hard))
    before = open_fds(pid)
    probe = Probe(service.url, ["/livez", f"/jobs/{jobs[KEYS[0]]}"], KEYS[0], pid)
    probe.start()
    with sockets(service.port, count) as idle:
        opened, during = len(idle), open_fds(pid)
        started = time.monotonic()
        deadline = started + HEADER_TIMEOUT_S + 5
        closed = sum(closed_by_server(s, max(0.01, deadline - time.monotonic())) for s in idle)
        seconds = time.monotonic() - started
    figures = probe.stop()
    time.sleep(1)
    return {
        "opened": opened,
        "closed_by_api": closed,
        "closed_within_s": round(seconds, 1),
        "api_fds": {"before": before, "during": during, "after": open_fds(pid)},
        "probe": figures,
        "out_of_resource_log_lines": service.logs().count("out of system resource"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--data", type=Path, required=True, help="MNIST IDX folder")
    parser.add_argument("--postgres", default=POSTGRES_URL, help="PostgreSQL to make a schema in")
    parser.add_argument("--streams", type=int, default=300)
    parser.add_argument("--samplings", type=int, default=200, help="sample requests at once")
    parser.add_argument("--n", type=int, default=1024, help="samples per request")
    parser.add_argument(
        "--bursts", type=int, default=5,
        help="sampling bursts, 2 s apart (the probe's figures are over all of them: one burst "
        "of 2.5 s gives under 30 probes, too few for a p99)",
    )  # fmt: skip
    parser.add_argument("--idle", type=int, default=5000, help="idle sockets")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--keep", action="store_true", help="keep the service's folder and logs")
    args = parser.parse_args()
    settings = {"GAN_API_KEYS": ",".join(KEYS), "GAN_HEADER_TIMEOUT_S": str(HEADER_TIMEOUT_S)}
    with own_service(args.data, args.postgres, 1, keep=args.keep, settings=settings) as service:
        jobs = checkpointed_jobs(service)
        result = {
            "settings": settings,
            **streams_and_sampling(service, jobs, args),
            "idle_sockets": idle_sockets(service, jobs, args.idle),
        }
    print(json.dumps(result), flush=True)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
