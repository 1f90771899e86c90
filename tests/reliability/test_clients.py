"""Hostile clients against a real API process (`gan serve`, PostgreSQL, a Redis of its own):
forged X-Forwarded-For, a guesser behind a tenant's address, idle and slow sockets, many event
streams and bursts of sampling. Each is bounded, and the other clients are served meanwhile.
CI-sized; bench/hostile.py runs them full-sized for RELIABILITY.md."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import httpx

from gan.config import resolve
from gan.data import ring8
from gan.train import train
from harness.hostile import (
    closed_by_server,
    latencies,
    open_fds,
    open_streams,
    queued_jobs,
    raw_request,
    rss_mb,
    sample_burst,
    sockets,
    status_of,
)
from harness.services import Service

KEYS = "k0,k1,k2,k3"


def test_forwarded_for_counts_only_from_trusted_proxies(service: Service):
    service.env.update({"GAN_API_KEYS": KEYS, "GAN_BAD_KEYS_PER_MINUTE": "2"})
    service.serve("--no-worker")
    good, forged = {"X-API-Key": "k0"}, {"X-API-Key": "guess"}
    for address in ("192.0.2.1", "192.0.2.2"):  # a new address each time: not believed
        response = httpx.get(f"{service.url}/jobs", headers={**forged, "X-Forwarded-For": address})
        assert response.status_code == 401
    refused = httpx.get(f"{service.url}/jobs", headers={**forged, "X-Forwarded-For": "192.0.2.3"})
    assert refused.status_code == 429 and "from 127.0.0.1" in refused.json()["detail"]
    # a valid key from the guesser's address still works
    assert httpx.get(f"{service.url}/jobs", headers=good).status_code == 200
    service.stop()

    service.env["GAN_TRUSTED_PROXIES"] = "127.0.0.1"  # now behind a proxy on this machine
    service.serve("--no-worker", "--processes", "2")
    for _ in range(2):
        headers = {**forged, "X-Forwarded-For": "192.0.2.9"}
        assert httpx.get(f"{service.url}/jobs", headers=headers).status_code in (401, 429)
    for address in ("192.0.2.10", "192.0.2.11"):  # each client the proxy names has its budget
        response = httpx.get(f"{service.url}/jobs", headers={**forged, "X-Forwarded-For": address})
        assert response.status_code == 401, response.text


def test_idle_and_slow_connections_are_closed(service: Service):
    service.env.update({"GAN_HEADER_TIMEOUT_S": "1", "GAN_MAX_CONNECTIONS": "150"})
    api = service.serve("--no-worker")
    before = open_fds(api.pid)
    with sockets(service.port, 300) as idle, sockets(service.port, 20, b"GET /livez HT") as slow:
        started = time.monotonic()
        assert httpx.get(f"{service.url}/livez", timeout=5).status_code == 200  # served meanwhile
        assert open_fds(api.pid) < before + 160  # those past GAN_MAX_CONNECTIONS are closed
        assert all(closed_by_server(s, within=4) for s in [*idle, *slow])
        assert time.monotonic() - started < 6
    assert open_fds(api.pid) <= before + 2
    # a kept-alive connection's next request is answered as before
    with sockets(service.port, 1, raw_request("/livez", {})) as (s,):
        assert status_of(s)[0] == 200
        s.sendall(raw_request("/livez", {}))
        assert status_of(s)[0] == 200
    assert "out of system resource" not in service.logs()


def test_event_streams_are_bounded_and_the_api_stays_fast(service: Service):
    service.env.update(
        {"GAN_API_KEYS": KEYS, "GAN_STREAMS_PER_KEY": "40", "GAN_MAX_STREAMS": "100"}
    )
    service.serve("--no-worker")
    jobs = queued_jobs(service.url, ["k0", "k1", "k2", "k3"])  # no worker: streams stay open
    streams, statuses = open_streams(service.port, {k: jobs[k] for k in ("k0", "k1", "k2")}, 41)
    try:
        assert statuses == {200: 100, 429: 2, 503: 21}, statuses
        request = raw_request(f"/jobs/{jobs['k3']}/events", {"X-API-Key": "k3"})
        with sockets(service.port, 1, request) as (s,):
            code, headers = status_of(s)
            assert code == 503 and int(headers["retry-after"]) >= 1
        timed = latencies(service.url, ["/livez", f"/jobs/{jobs['k0']}"], rounds=50, key="k0")
        for name, figures in timed.items():
            assert figures["non_200"] == 0 and figures["p99_ms"] < 500, (name, figures)
    finally:
        for s in streams:
            s.close()
    time.sleep(1)  # closed streams give their slots back
    again, statuses = open_streams(service.port, {"k3": jobs["k3"]}, per_key=1)
    assert statuses == {200: 1}
    again[0].close()


def test_sampling_is_bounded_and_memory_is_given_back(service: Service, tmp_path: Path):
    service.env.update(
        {"GAN_API_KEYS": KEYS, "GAN_SAMPLINGS_PER_KEY": "2", "GAN_MAX_SAMPLINGS": "3"}
    )
    api = service.serve("--no-worker")
    spec = {"dataset": "ring8", "max_steps": 2, "checkpoint_every": 2, "eval_every": 0}
    jobs = queued_jobs(service.url, ["k0", "k1"])
    folders = [
        tmp_path / "var" / "artifacts" / "jobs" / job_id / "checkpoints" for job_id in jobs.values()
    ]
    train(resolve("classic", **spec), ring8(), folders[0])
    shutil.copytree(folders[0], folders[1])
    assert sample_burst(service.url, jobs, 1, 1024) == {"200": 1}  # warm: torch loaded
    idle = rss_mb(api.pid)
    answered = sample_burst(service.url, jobs, 40, 1024)
    assert set(answered) <= {"200", "429+retry-after", "503+retry-after"}, answered
    assert answered.get("200", 0) >= 3 and answered.get("503+retry-after", 0) >= 1, answered
    time.sleep(1)
    assert rss_mb(api.pid) <= idle * 1.2, (idle, rss_mb(api.pid))
