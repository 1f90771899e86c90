"""Hostile clients against a real API process, for tests/reliability/test_clients.py (CI-sized)
and bench/hostile.py (full-sized): idle sockets, many event streams, bursts of sampling, and
what the API process's latency and memory do meanwhile."""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import socket
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any

import httpx

from harness.load import percentiles


def rss_mb(pid: int) -> float:
    """The resident memory of process ``pid`` (with its children: `--processes` and the
    multiprocessing helpers), in MB."""
    total = 0.0
    for p in [pid, *children(pid)]:
        with contextlib.suppress(FileNotFoundError), open(f"/proc/{p}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) / 1024
    return round(total, 1)


def children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(c) for c in f.read().split()]
    except FileNotFoundError:
        return []


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def raw_request(path: str, headers: dict[str, str]) -> bytes:
    lines = [f"GET {path} HTTP/1.1", "Host: test", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@contextlib.contextmanager
def sockets(port: int, count: int, send: bytes = b"") -> Iterator[list[socket.socket]]:
    """``count`` connections to the API, each having sent ``send`` (nothing: idle), closed on
    leaving; a connection the API refuses (or the machine cannot open) is left out."""
    opened: list[socket.socket] = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.settimeout(5)
            try:
                s.connect(("127.0.0.1", port))
                if send:
                    s.sendall(send)
            except OSError:
                s.close()
                continue
            opened.append(s)
        yield opened
    finally:
        for s in opened:
            s.close()


def closed_by_server(s: socket.socket, within: float) -> bool:
    """Whether the server closes ``s`` within ``within`` seconds (EOF or a reset)."""
    s.settimeout(within)
    try:
        while s.recv(4096):
            pass
        return True
    except ConnectionError:
        return True
    except TimeoutError:
        return False


def status_of(s: socket.socket) -> tuple[int, dict[str, str]]:
    """The status and headers of the response ``s`` is receiving (read up to its body)."""
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(4096)
        if not chunk:
            break
        head += chunk
    lines = head.split(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}


def open_streams(
    port: int, jobs: dict[str, str], per_key: int
) -> tuple[list[socket.socket], Counter[int]]:
    """``per_key`` event streams for each API key of ``jobs`` (key → a job of that key's):
    the open ones, and how many of each status were answered."""
    streams: list[socket.socket] = []
    statuses: Counter[int] = Counter()
    for key, job_id in jobs.items():
        for _ in range(per_key):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            s.sendall(raw_request(f"/jobs/{job_id}/events", {"X-API-Key": key}))
            code, _ = status_of(s)
            statuses[code] += 1
            if code == 200:
                streams.append(s)
            else:
                s.close()
    return streams, statuses


def queued_jobs(url: str, keys: Sequence[str]) -> dict[str, str]:
    """A job for each of ``keys`` (key → its id): with no worker they stay queued, so their
    event streams stay open."""
    made = {}
    for key in keys:
        response = httpx.post(f"{url}/jobs", json={"max_steps": 5}, headers={"X-API-Key": key})
        assert response.status_code == 202, response.text
        made[key] = response.json()["id"]
    return made


def latencies(url: str, paths: Sequence[str], rounds: int, key: str) -> dict[str, Any]:
    """p50, p99 and max (ms) of GET each of ``paths``, ``rounds`` times each, one at a time."""
    out: dict[str, Any] = {}
    with httpx.Client(headers={"X-API-Key": key}, timeout=60) as client:
        for path in paths:
            taken, bad = [], 0
            for _ in range(rounds):
                started = time.perf_counter()
                response = client.get(f"{url}{path}")
                taken.append(time.perf_counter() - started)
                bad += response.status_code != 200
            name = "job" if path.startswith("/jobs/") else path.strip("/")
            out[name] = {**percentiles(taken), "non_200": bad}
    return out


async def _sample_burst(url: str, jobs: dict[str, str], count: int, n: int) -> Counter[str]:
    pairs = list(jobs.items())
    async with httpx.AsyncClient(timeout=300, limits=httpx.Limits(max_connections=None)) as c:

        async def one(i: int) -> str:
            key, job_id = pairs[i % len(pairs)]
            params: dict[str, str | int] = {"n": n, "seed": i, "format": "npy"}
            response = await c.get(
                f"{url}/jobs/{job_id}/samples", params=params, headers={"X-API-Key": key}
            )
            retry = response.headers.get("retry-after")
            return f"{response.status_code}" + ("" if retry is None else "+retry-after")

        return Counter(await asyncio.gather(*(one(i) for i in range(count))))


def sample_burst(url: str, jobs: dict[str, str], count: int, n: int) -> dict[str, int]:
    """``count`` sample requests at once (n samples each, distinct seeds), of the jobs of
    ``jobs`` (API key → a job of that key's) in turn: how many got each status ("+retry-after"
    when the answer had one)."""
    return dict(asyncio.run(_sample_burst(url, jobs, count, n)))


class Probe:
    """Until stopped, GETs each of ``paths`` in turn (one at a time, as a monitor would), and
    samples the resident memory of process ``pid`` every ``every`` seconds. In a process of its
    own, as a monitor is: in the load's process, a probe's requests wait for the load's own
    Python work (the burst's hundreds of requests hold that process's GIL for a second at a
    time) and that wait would be counted as the API's latency."""

    def __init__(self, url: str, paths: Sequence[str], key: str, pid: int, every: float = 0.1):
        context = multiprocessing.get_context("spawn")
        self._ready, self._done = context.Event(), context.Event()
        self._figures: multiprocessing.Queue[dict[str, Any]] = context.Queue()
        arguments = (url, list(paths), key, pid, every, self._ready, self._done, self._figures)
        self._process = context.Process(target=_probe, args=arguments, daemon=True)
        self.peak_rss_mb = 0.0

    def start(self) -> None:
        """Start probing; returns once the probe's first round is answered."""
        self._process.start()
        if not self._ready.wait(60):
            raise RuntimeError("the probe's first requests went unanswered for 60 s")

    def stop(self) -> dict[str, Any]:
        """Stop; the latencies of each path (ms), their count, and failures."""
        self._done.set()
        figures = self._figures.get(timeout=120)
        self._process.join(10)
        self.peak_rss_mb = figures.pop("peak_rss_mb")
        return figures


def _probe(
    url: str,
    paths: list[str],
    key: str,
    pid: int,
    every: float,
    ready: Any,
    done: Any,
    figures: Any,
) -> None:
    """The probe's process (``Probe``): its figures go to the ``figures`` queue when ``done``."""
    taken: dict[str, list[float]] = {path: [] for path in paths}
    failed: Counter[str] = Counter()
    peak_rss_mb = 0.0
    with httpx.Client(headers={"X-API-Key": key}, timeout=60) as client:
        while not done.is_set():
            for path in paths:
                started = time.perf_counter()
                try:
                    ok = client.get(f"{url}{path}").status_code == 200
                except httpx.HTTPError as e:
                    ok, failed[type(e).__name__] = False, failed[type(e).__name__] + 1
                if ok:
                    taken[path].append(time.perf_counter() - started)
                else:
                    failed[path] += 1
            ready.set()
            peak_rss_mb = max(peak_rss_mb, rss_mb(pid))
            time.sleep(every)
    out: dict[str, Any] = {"peak_rss_mb": peak_rss_mb}
    for path, latencies in taken.items():
        name = "job" if path.startswith("/jobs/") else path.strip("/")
        out[name] = {**percentiles(latencies), "requests": len(latencies)}
    figures.put({**out, "failed": dict(failed)})
