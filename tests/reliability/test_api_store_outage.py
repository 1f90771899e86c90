"""The job store (a PostgreSQL of the test's own) stopped and started again under a running API
(`gan serve --no-worker`, real processes): every route that needs the store answers 503 with
Retry-After, never 500; the kept-alive connection stays sound; an event stream waits for the
store; a job POSTed meanwhile is not created; and the API recovers by itself. RELIABILITY.md,
"Store outage: the API", gives the figures."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from harness.postgres import PostgresServer
from harness.services import RedisServer, Service, parse_events, wait_for
from harness.store_outage import TINY_JOB, outage_scenario

pytestmark = pytest.mark.e2e

STORE_DOWN = "the job store is unreachable"


@pytest.fixture
def api(
    tmp_path: Path, mnist_dir: Path, own_postgres: PostgresServer, own_redis: RedisServer
) -> Iterator[Service]:
    """`gan serve --no-worker` on the test's own PostgreSQL and Redis, started."""
    service = Service(
        tmp_path,
        {
            "GAN_DATA_DIR": str(mnist_dir),
            "GAN_DATABASE_URL": own_postgres.url,
            "GAN_BROKER_URL": own_redis.url,
            "GAN_TASK_QUEUE": f"test-{uuid.uuid4().hex[:8]}",
        },
    )
    service.serve("--no-worker")
    yield service
    service.stop()


def local_port(response: httpx.Response) -> int:
    """The client's port of the connection that carried ``response``."""
    port: int = response.extensions["network_stream"].get_extra_info("client_addr")[1]
    return port


def follow(url: str, chunks: list[str]) -> None:
    """Read an event stream to its end into ``chunks`` (in a thread of its own)."""
    with httpx.stream("GET", url, timeout=60) as response:
        assert response.status_code == 200
        for chunk in response.iter_text():
            chunks.append(chunk)


def test_every_route_answers_503_while_the_job_store_is_down(
    api: Service, own_postgres: PostgresServer, figures: dict[str, Any]
) -> None:
    """Each route that needs the store answers 503 with Retry-After and says why, and /livez
    answers 200 right after it on the same kept-alive connection; an event stream stays open
    and carries on; nothing is created; the first requests once the store is back are 200s."""
    client = httpx.Client(base_url=api.url, timeout=30)
    job_id = client.post("/jobs", json=TINY_JOB).json()["id"]  # queued: no worker runs
    assert client.get(f"/jobs/{job_id}").status_code == 200  # a pooled connection, soon dead
    chunks: list[str] = []
    stream = threading.Thread(target=follow, args=(f"{api.url}/jobs/{job_id}/events", chunks))
    stream.start()
    wait_for(lambda: "event: state" in "".join(chunks), 30, "the stream's first event")

    own_postgres.stop()
    upload = {"file": ("digits.zip", b"not a zip", "application/zip")}
    routes: list[tuple[str, str, dict[str, Any]]] = [
        ("GET", "/jobs", {}), ("GET", "/jobs/{id}", {}), ("POST", "/jobs", {"json": TINY_JOB}),
        ("POST", "/jobs/{id}/cancel", {}), ("POST", "/jobs/{id}/resume", {}),
        ("DELETE", "/jobs/{id}", {}), ("GET", "/jobs/{id}/samples", {}),
        ("GET", "/jobs/{id}/interpolation", {}), ("GET", "/jobs/{id}/checkpoints", {}),
        ("GET", "/jobs/{id}/checkpoints/latest", {}), ("GET", "/jobs/{id}/events", {}),
        ("GET", "/jobs/{id}/metrics", {}), ("GET", "/datasets", {}),
        ("GET", "/datasets/nothing", {}), ("POST", "/datasets", {"files": upload}),
        ("GET", "/workers", {}),
    ]  # fmt: skip
    ports = set()
    for method, path, body in routes:
        response = client.request(method, path.format(id=job_id), **body)
        assert response.status_code == 503, (method, path, response.text)
        assert response.headers["Retry-After"] == "5", (method, path)
        assert response.json()["detail"].startswith(STORE_DOWN), (method, path)
        live = client.get("/livez")  # the connection is sound: no reset, no new one
        assert live.status_code == 200
        ports |= {local_port(response), local_port(live)}
    assert len(ports) == 1, ports
    assert client.get("/readyz").status_code == 503
    wait_for(lambda: STORE_DOWN in "".join(chunks), 30, "the stream to say it waits")
    assert stream.is_alive()

    own_postgres.start()
    back_at = time.monotonic()
    listed = client.get("/jobs")  # at once: the pool drops its dead connections by itself
    figures["first_answer_after_restart_s"] = round(time.monotonic() - back_at, 3)
    assert listed.status_code == 200, listed.text
    assert [job["id"] for job in listed.json()["jobs"]] == [job_id]  # the POST made nothing
    assert client.get("/readyz").status_code == 200
    assert client.post(f"/jobs/{job_id}/cancel").json()["state"] == "cancelled"
    stream.join(timeout=30)  # the stream went on where it was, and ended with the job
    assert not stream.is_alive()
    states = [data["state"] for _, kind, data in parse_events("".join(chunks)) if kind == "state"]
    assert states == ["queued", "cancelled"]
    assert len(ports | {local_port(listed)}) == 1
    client.close()


def test_clients_during_an_outage_see_503s_and_no_errors(
    api: Service, own_postgres: PostgresServer, figures: dict[str, Any]
) -> None:
    """Clients polling and submitting through a 3-second outage: no 500, no reset connection,
    no job made by a refused POST, and every client served again soon after the store is back
    (a tenth of a second on an idle machine: the bound leaves room for a busy one)."""
    result = outage_scenario(api, own_postgres, clients=2, before_s=1.0, down_s=3.0, after_s=1.5)
    figures.update(result)
    assert set(result["5xx"]) == {"503"}, result
    assert result["transport_errors"] == 0, result
    assert result["answers"]["down"].get("200", 0) > 0  # /livez, all along
    assert result["jobs_without_202"] == result["jobs_missing"] == 0, result
    assert result["recovery_s"] is not None and result["recovery_s"] < 5.0, result
