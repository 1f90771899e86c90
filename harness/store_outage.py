"""The job store down under the API's clients: the scenario of ``python -m bench.store_outage``
(full size) and tests/reliability/test_api_store_outage.py (the size CI affords).

A job is submitted while PostgreSQL is up. Then ``clients`` threads, each with one kept-alive
``httpx.Client``, go round ``ROUTES`` (a short pause between requests) while PostgreSQL is up
for ``before_s``, stopped (a fast shutdown: connections cut) for ``down_s``, and started again
for ``after_s``. Every answer is counted by phase (when its request was sent: up, down, back)
and status, every transport error (a reset connection, say) by its type.

- **recovery**: seconds from PostgreSQL accepting connections again to the first 200 from a
  route that reads the store, for the slowest client (the API is never restarted);
- **audit**: the jobs in the store afterwards are the first one and those whose POST got a
  202: a POST answered 503 made nothing (``jobs_without_202`` counts those that did).
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import Counter
from typing import Any

import httpx

from harness.postgres import PostgresServer
from harness.services import Service

TINY_JOB = {"dataset": "ring8", "max_steps": 5, "checkpoint_every": 5, "eval_every": 0}
# What the clients send, in turn: every read of the store a client polls, a job submission
# (with an Idempotency-Key of its own), and the liveness probe, which needs no store.
ROUTES = [
    ("GET", "/jobs"),
    ("GET", "/jobs/{id}"),
    ("POST", "/jobs"),
    ("GET", "/jobs/{id}/checkpoints"),
    ("GET", "/jobs/{id}/metrics"),
    ("GET", "/datasets"),
    ("GET", "/livez"),
]
PAUSE_S = 0.01  # between a client's requests: the machine is shared, a tight loop would hog it


class _Clients:
    """The clients' threads and what they saw."""

    def __init__(self, service: Service, job_id: str) -> None:
        self.service, self.job_id = service, job_id
        self.phase, self.restarted_at = "up", 0.0
        self.answers: Counter[tuple[str, str]] = Counter()  # (phase, status or error type)
        self.created: set[str] = set()
        self.recovery: list[float] = []
        self.stop = threading.Event()
        self.lock = threading.Lock()

    def run(self, n: int) -> None:
        recovered = False
        with httpx.Client(base_url=self.service.url, timeout=30) as client:
            for i in itertools.count():
                if self.stop.is_set():
                    return
                method, path = ROUTES[i % len(ROUTES)]
                phase, outcome = self.phase, self.send(client, method, path, f"outage-{n}-{i}")
                if phase == "back" and not recovered and path != "/livez" and outcome == "200":
                    recovered = True
                    self.recovery.append(time.monotonic() - self.restarted_at)
                with self.lock:
                    self.answers[(phase, outcome)] += 1
                time.sleep(PAUSE_S)

    def send(self, client: httpx.Client, method: str, path: str, key: str) -> str:
        """The status of the answer, or the type of the transport error."""
        try:
            if method == "POST":
                response = client.post(path, json=TINY_JOB, headers={"Idempotency-Key": key})
            else:
                response = client.get(path.format(id=self.job_id))
        except httpx.TransportError as e:
            return type(e).__name__
        if response.status_code == 202:
            with self.lock:
                self.created.add(response.json()["id"])
        return str(response.status_code)


def outage_scenario(
    service: Service,
    postgres: PostgresServer,
    clients: int = 4,
    before_s: float = 1.0,
    down_s: float = 5.0,
    after_s: float = 2.0,
) -> dict[str, Any]:
    """Run the outage under ``clients`` clients of the running ``service`` (on ``postgres``,
    no worker needed); what they saw (see the module's docstring)."""
    first = service.submit(TINY_JOB)
    run = _Clients(service, first)
    with httpx.Client(base_url=service.url, timeout=60) as client:
        for method, path in ROUTES:  # once each first: the first checkpoints read imports torch
            if method == "GET":
                assert client.get(path.format(id=first)).status_code == 200
    threads = [threading.Thread(target=run.run, args=(n,), daemon=True) for n in range(clients)]
    for thread in threads:
        thread.start()
    time.sleep(before_s)
    run.phase = "down"  # from the moment it begins to stop
    postgres.stop()
    time.sleep(down_s)
    postgres.start()  # returns once it accepts connections
    run.restarted_at, run.phase = time.monotonic(), "back"
    time.sleep(after_s)
    run.stop.set()
    for thread in threads:
        thread.join(timeout=60)
    listed = httpx.get(f"{service.url}/jobs", params={"limit": 500}, timeout=30).json()["jobs"]
    stored = {job["id"] for job in listed}
    by_phase = {p: {o: n for (q, o), n in sorted(run.answers.items()) if q == p} for p in
                ("up", "down", "back")}  # fmt: skip
    server_errors: Counter[str] = Counter()
    for (_, outcome), n in run.answers.items():
        if outcome.startswith("5"):
            server_errors[outcome] += n
    return {
        "clients": clients,
        "down_s": down_s,
        "answers": by_phase,
        "5xx": dict(sorted(server_errors.items())),
        "transport_errors": sum(n for (_, o), n in run.answers.items() if not o.isdigit()),
        "recovery_s": round(max(run.recovery), 3) if len(run.recovery) == clients else None,
        "jobs_created": len(run.created),
        "jobs_without_202": len(stored - run.created - {first}),
        "jobs_missing": len(run.created - stored),
    }
