"""Load on a running service, measured at the client (httpx, asyncio; percentiles nearest-rank):
the scenarios of ``python -m bench.load`` (full size) and tests/reliability/test_load.py (the
size CI can afford). Every job must be accounted for and trained exactly once; sampling must
answer every request (or ask the client to come back).

Scenario ``jobs``: ``count`` tiny jobs (the 8-Gaussian ring, 5 steps, no evaluation) are
POSTed ``concurrency`` at a time, each with an Idempotency-Key of its own, sent again with it
when a connection fails before the answer (counted as retries); then the run waits until every
job is final and audits them through the API: as many distinct ids as requests, every one
succeeded, each claimed once (``attempts`` 1) with exactly one ``running`` state event, and
nothing else in the store. The jobs are then deleted (DELETE /jobs/{id}, also timed), which
frees their files.

Scenario ``sampling``: a finished job's samples (n=16, a new seed per request, so that every
answer is generated, none a 304) are requested by ``clients`` closed-loop clients for
``seconds`` while another job trains on the workers. A 429 or 503 with Retry-After (the
service's bound on concurrent sampling) is waited out and counted as refused; any other answer
but a 200, and any transport error, is an error.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from harness.services import Service, parse_events, wait_for

TINY_JOB = {"dataset": "ring8", "max_steps": 5, "checkpoint_every": 5, "log_every": 5,
            "eval_every": 0}  # fmt: skip
RETRIES = 3  # a POST whose connection failed is sent again, with the same Idempotency-Key


def percentiles(values: Sequence[float]) -> dict[str, float]:
    """p50, p95, p99 and max of ``values`` (nearest rank), in milliseconds."""
    if not values:
        return {}
    ordered = sorted(values)

    def rank(p: float) -> float:
        return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)] * 1000

    return {"p50_ms": rank(50), "p95_ms": rank(95), "p99_ms": rank(99), "max_ms": rank(100)}


@dataclass
class Timed:
    """Latencies (seconds) of the answers, and what went wrong, by kind."""

    latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)
    refused: int = 0  # 429s and 503s with a Retry-After: a bound of the service, waited out


async def submit_jobs(url: str, count: int, concurrency: int, spec: dict[str, Any]) -> tuple[
    list[str], Timed, float
]:  # fmt: skip
    """POST ``count`` jobs, ``concurrency`` at a time; (their ids, timings, seconds taken).

    Each POST has an Idempotency-Key of its own and is sent again (up to ``RETRIES`` times,
    with the same key) when the connection fails before an answer arrives, as a careful client
    does: the job may or may not exist then, and the key makes the retry return it rather than
    make a second one. Retries are counted in ``errors`` as "retried: <error>"; a POST that
    never got an answer as the error itself."""
    timed, ids = Timed(), []
    gate = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency)

    async def one(client: httpx.AsyncClient) -> None:
        key = {"Idempotency-Key": f"load-{uuid.uuid4()}"}
        async with gate:
            for attempt in range(RETRIES + 1):
                start = time.perf_counter()
                try:
                    response = await client.post(f"{url}/jobs", json=spec, headers=key)
                    break
                except httpx.TransportError as e:
                    timed.errors[f"{'retried: ' if attempt < RETRIES else ''}"
                                 f"{type(e).__name__}"] += 1  # fmt: skip
            else:
                return
            timed.latencies.append(time.perf_counter() - start)
            timed.statuses[response.status_code] += 1
            if response.status_code == 202:
                ids.append(response.json()["id"])
            else:
                timed.errors[f"HTTP {response.status_code}"] += 1

    start = time.perf_counter()
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        await asyncio.gather(*(one(client) for _ in range(count)))
    return ids, timed, time.perf_counter() - start


def job_counts(url: str) -> dict[str, int]:
    """Jobs in each state, from the API's Prometheus metrics (``gan_jobs{state}``)."""
    counts = {}
    for line in httpx.get(f"{url}/metrics", timeout=30).text.splitlines():
        if line.startswith("gan_jobs{"):
            state = line.split('state="')[1].split('"')[0]
            counts[state] = int(float(line.rsplit(" ", 1)[1]))
    return counts


def wait_until_final(url: str, timeout: float) -> float:
    """Seconds until no job is queued, running or cancelling (AssertionError past ``timeout``)."""
    start = time.perf_counter()

    def settled() -> bool:
        counts = job_counts(url)
        return sum(counts.get(state, 0) for state in ("queued", "running", "cancelling")) == 0

    wait_for(settled, timeout, "every job to be final", every=1.0)
    return time.perf_counter() - start


def all_jobs(url: str) -> list[dict[str, Any]]:
    """Every job in the store, page by page."""
    jobs, page = [], f"{url}/jobs?limit=500"
    while page:
        body = httpx.get(page, timeout=60).json()
        jobs += body["jobs"]
        page = body["links"].get("next")
    return jobs


async def running_events(url: str, ids: Sequence[str], concurrency: int = 16) -> dict[str, int]:
    """How many times each job's event stream says it started running."""
    gate, found = asyncio.Semaphore(concurrency), {}

    async def one(client: httpx.AsyncClient, job_id: str) -> None:
        async with gate:
            response = await client.get(f"{url}/jobs/{job_id}/events")
            events = parse_events(response.text)
            found[job_id] = sum(1 for _, kind, data in events
                                if kind == "state" and data["state"] == "running")  # fmt: skip

    async with httpx.AsyncClient(timeout=60) as client:
        await asyncio.gather(*(one(client, job_id) for job_id in ids))
    return found


def audit(url: str, submitted: Sequence[str]) -> dict[str, Any]:
    """What became of the ``submitted`` jobs: every count here but ``succeeded`` must be 0."""
    jobs = all_jobs(url)
    by_id = {job["id"]: job for job in jobs}
    started = asyncio.run(running_events(url, submitted))
    return {
        "succeeded": sum(1 for j in jobs if j["state"] == "succeeded"),
        "not_succeeded": sum(1 for j in jobs if j["state"] != "succeeded"),
        "duplicate_ids": len(submitted) - len(set(submitted)),
        "missing": sum(1 for job_id in submitted if job_id not in by_id),
        "unexpected": len(set(by_id) - set(submitted)),
        "attempts_not_1": sum(1 for j in jobs if j["attempts"] != 1),
        "running_events_not_1": sum(1 for n in started.values() if n != 1),
        "errors": sorted({j["error"] for j in jobs if j["error"]}),
    }


async def delete_jobs(url: str, ids: Sequence[str], concurrency: int) -> Timed:
    timed, gate = Timed(), asyncio.Semaphore(concurrency)

    async def one(client: httpx.AsyncClient, job_id: str) -> None:
        async with gate:
            start = time.perf_counter()
            response = await client.delete(f"{url}/jobs/{job_id}")
            timed.latencies.append(time.perf_counter() - start)
            timed.statuses[response.status_code] += 1
            if response.status_code != 204:
                timed.errors[f"HTTP {response.status_code}"] += 1

    async with httpx.AsyncClient(timeout=60) as client:
        await asyncio.gather(*(one(client, job_id) for job_id in ids))
    return timed


def jobs_scenario(url: str, count: int, concurrency: int, timeout: float) -> dict[str, Any]:
    """Submit ``count`` tiny jobs at once, wait for all of them, audit them, delete them."""
    ids, posted, seconds = asyncio.run(submit_jobs(url, count, concurrency, TINY_JOB))
    to_final = wait_until_final(url, timeout)
    found = audit(url, ids)
    deleted = asyncio.run(delete_jobs(url, ids, concurrency))
    return {
        "scenario": "jobs",
        "jobs": count,
        "concurrency": concurrency,
        "submit_s": round(seconds, 2),
        "submits_per_s": round(count / seconds, 1),
        "submit_errors": {k: v for k, v in posted.errors.items() if not k.startswith("retried")},
        "submit_retries": sum(v for k, v in posted.errors.items() if k.startswith("retried")),
        **{f"submit_{k}": round(v, 1) for k, v in percentiles(posted.latencies).items()},
        "all_final_after_s": round(seconds + to_final, 1),
        "jobs_per_s": round(count / (seconds + to_final), 2),
        **found,
        "delete_errors": dict(deleted.errors),
        **{f"delete_{k}": round(v, 1) for k, v in percentiles(deleted.latencies).items()},
    }


async def sample(url: str, job_id: str, clients: int, seconds: float, n: int = 16) -> Timed:
    """``clients`` closed-loop clients GET the job's samples, each with a new seed every time,
    for ``seconds``. A client refused by the service's bound on concurrent sampling (429 or 503
    with Retry-After) waits as long as it is told, as a careful client does: counted as
    ``refused``, not as an error."""
    timed, seeds = Timed(), itertools.count(1_000_000)
    deadline = time.perf_counter() + seconds

    async def client_loop(client: httpx.AsyncClient) -> None:
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            try:
                response = await client.get(
                    f"{url}/jobs/{job_id}/samples", params={"n": n, "seed": next(seeds)}
                )
            except httpx.HTTPError as e:
                timed.errors[type(e).__name__] += 1
                continue
            retry_after = response.headers.get("retry-after")
            if response.status_code in (429, 503) and retry_after is not None:
                timed.refused += 1  # past the service's bound on sampling: wait as it asks
                await asyncio.sleep(float(retry_after))
                continue
            timed.latencies.append(time.perf_counter() - start)
            timed.statuses[response.status_code] += 1
            if response.status_code != 200:
                timed.errors[f"HTTP {response.status_code}"] += 1

    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        await asyncio.gather(*(client_loop(client) for _ in range(clients)))
    return timed


def sampling_scenario(service: Service, clients: int, seconds: float) -> dict[str, Any]:
    """Train a job to sample from, start another that trains throughout, and load the first's
    samples with ``clients`` clients for ``seconds``."""
    source = service.submit({**TINY_JOB, "max_steps": 50, "checkpoint_every": 50})
    wait_for(lambda: service.job(source)["state"] == "succeeded", 300, "the job to sample")
    asyncio.run(sample(service.url, source, 2, 1.0))  # warm-up: load its generator once
    trainer = service.submit({**TINY_JOB, "max_steps": 10_000_000, "log_every": 50,
                              "checkpoint_every": 1000})  # fmt: skip
    wait_for(lambda: service.job(trainer)["state"] == "running", 120, "the other job to train")
    step_before = service.job(trainer)["step"]
    timed = asyncio.run(sample(service.url, source, clients, seconds))
    trained = service.job(trainer)
    httpx.post(f"{service.url}/jobs/{trainer}/cancel", timeout=30)
    total = (
        sum(timed.statuses.values())
        + sum(v for k, v in timed.errors.items() if not k.startswith("HTTP"))
        + timed.refused
    )
    return {
        "scenario": "sampling",
        "clients": clients,
        "seconds": seconds,
        "requests": total,
        "requests_per_s": round(total / seconds, 1),
        "refused": timed.refused,
        "errors": sum(timed.errors.values()),
        "error_kinds": dict(timed.errors),
        **{k: round(v, 1) for k, v in percentiles(timed.latencies).items()},
        "training_job_state": trained["state"],
        "training_steps_meanwhile": trained["step"] - step_before,
    }
