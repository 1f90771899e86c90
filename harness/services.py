"""Real processes of the service, for the end-to-end, fault and load tests and the benchmarks:
``Service`` starts `gan serve` and `gan worker` with their logs in files, ``RedisServer`` a
Redis of a test's own, and ``postgres_schema`` a fresh schema in PostgreSQL; helpers wait for
conditions and read SSE streams."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import redis

GAN = str(Path(sys.executable).with_name("gan"))  # the console script of this environment


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(condition: Callable[[], Any], timeout: float, what: str, every: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


class Service:
    """Processes of the service in one environment, with their logs in files."""

    def __init__(self, tmp_path: Path, env: dict[str, str]) -> None:
        self.tmp_path, self.port = tmp_path, free_port()
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **env}
        self.url = f"http://127.0.0.1:{self.port}"
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(
        self,
        *args: str,
        env: dict[str, str] | None = None,
        prefix: Sequence[str] = (),
        preexec_fn: Callable[[], None] | None = None,
    ) -> subprocess.Popen[bytes]:
        """`gan ARGS` (after the command ``prefix``, such as `unshare …`), with ``env`` on top of
        the service's environment, and ``preexec_fn`` run in the child before it starts (to set
        resource limits, say)."""
        log = open(self.tmp_path / f"{args[0]}-{len(self.processes)}.log", "wb")  # noqa: SIM115
        process = subprocess.Popen(
            [*prefix, GAN, *args],
            cwd=self.tmp_path,
            env={**self.env, **(env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=preexec_fn,
        )
        self.processes.append(process)
        return process

    def serve(self, *flags: str) -> subprocess.Popen[bytes]:
        process = self.start("serve", "--port", str(self.port), *flags)
        wait_for(self.live, 60, "the API to answer /livez")
        return process

    def live(self) -> bool:
        try:
            return httpx.get(f"{self.url}/livez", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.tmp_path.glob("*.log")))

    def get(self, job_id: str) -> dict[str, Any]:
        """The job as GET /jobs/{id} shows it, whatever its state."""
        response = httpx.get(f"{self.url}/jobs/{job_id}", timeout=10)
        assert response.status_code == 200, response.text
        job: dict[str, Any] = response.json()
        return job

    def job(self, job_id: str) -> dict[str, Any]:
        """The job, which must not have failed (the assertion shows why it did, and the logs)."""
        job = self.get(job_id)
        assert job["state"] != "failed", f"job failed: {job['error']}\n{self.logs()}"
        return job

    def submit(self, spec: dict[str, Any]) -> str:
        response = httpx.post(f"{self.url}/jobs", json=spec, timeout=10)
        assert response.status_code == 202, response.text
        job_id: str = response.json()["id"]
        return job_id

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()


def parse_events(text: str) -> list[tuple[int, str, dict[str, Any]]]:
    """(id, type, data) of every complete event in a piece of an SSE stream."""
    events = []
    for block in text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "event" in fields:
            events.append((int(fields["id"]), fields["event"], json.loads(fields["data"])))
    return events


def events_of(
    service: Service, job_id: str, headers: dict[str, str] | None = None
) -> list[tuple[str, dict[str, Any]]]:
    """(type, data) of every event of a finished job, from its SSE stream."""
    response = httpx.get(f"{service.url}/jobs/{job_id}/events", headers=headers, timeout=30)
    assert response.status_code == 200
    return [(kind, data) for _, kind, data in parse_events(response.text)]


class RedisServer:
    """A ``redis-server`` of the test's own, without persistence (as the machine's own runs), on
    a free port: ``stop`` and ``start`` again is a restart that loses every message. A
    ``persistent`` one keeps its data across a restart (in an append-only file), as a production
    Redis set up for it does."""

    def __init__(self, folder: Path, *, persistent: bool = False) -> None:
        self.folder, self.port, self.persistent = folder, free_port(), persistent
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        log = open(self.folder / f"redis-{self.starts}.log", "wb")  # noqa: SIM115
        appendonly = ["yes", "--appendfsync", "always"] if self.persistent else ["no"]
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", *appendonly, "--dir", str(self.folder)],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        wait_for(self.answers, 10, "redis-server to answer")

    def answers(self) -> bool:
        try:
            return bool(redis.Redis.from_url(self.url, socket_timeout=1).ping())
        except redis.RedisError:
            return False

    def stop(self) -> None:
        """Shut it down: without persistence, whatever it held is gone."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()  # SIGTERM: redis-server exits; with --save "" it saves nothing
            self.process.wait(timeout=10)
        self.process = None

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_timeout=5)


@contextmanager
def postgres_schema(url: str) -> Iterator[str]:
    """A fresh schema in the PostgreSQL of ``url``, dropped afterwards; a URL whose search_path
    is that schema."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    schema = f"test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(url)
    with admin.begin() as connection:
        connection.execute(text(f"CREATE SCHEMA {schema}"))
    try:
        scoped = make_url(url).update_query_dict({"options": f"-csearch_path={schema}"})
        yield scoped.render_as_string(hide_password=False)
    finally:
        with admin.begin() as connection:
            connection.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()
