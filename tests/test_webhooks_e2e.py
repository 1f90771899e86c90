"""Webhooks from a real job run: `gan serve` and workers as processes, a receiver on 127.0.0.1
in the test. Signed deliveries of the event stream's events, retried after a failure, and made
again after the worker that was sending one is killed; training never waits for them."""

from __future__ import annotations

import json
import signal
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from harness.services import Service, parse_events, wait_for
from tests.worker.test_webhooks import readme_verifier

pytestmark = pytest.mark.e2e
SECRET = "e2e-secret"


class Receiver:
    """Records every POST; holds the first until ``release`` is set, answers the second 500,
    the rest 200."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], bytes, int]] = []
        self.first_arrived, self.release = threading.Event(), threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                number = len(receiver.received)
                code = 500 if number == 1 else 200
                receiver.received.append((dict(self.headers), body, code))
                if number == 0:
                    receiver.first_arrived.set()
                    receiver.release.wait(60)
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def delivered(self) -> list[dict[str, Any]]:
        """The bodies answered 2xx, in order."""
        return [json.loads(body) for _, body, code in self.received if code == 200]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.release.set()
    server.server.shutdown()
    server.server.server_close()


def test_a_job_runs_webhook_gets_every_event_signed_despite_failures(
    tmp_path: Path, mnist_dir: Path, receiver: Receiver
) -> None:
    env = {
        "GAN_DATA_DIR": str(mnist_dir), "GAN_WEBHOOK_SECRET": SECRET, "OMP_NUM_THREADS": "1",
        "GAN_RESEND_AFTER_S": "2", "GAN_RECONCILE_EVERY_S": "1",  # the killed worker's message
        "GAN_WEBHOOK_RETRY_S": "0.2", "GAN_WEBHOOK_POLL_S": "0.2", "GAN_WEBHOOK_TIMEOUT_S": "2",
    }  # fmt: skip
    service = Service(tmp_path, env)
    try:
        service.serve("--no-worker")
        hook = {"url": receiver.url, "events": ["state", "checkpoint", "progress"],
                "progress_every_s": 1}  # fmt: skip
        job_id = service.submit({"max_steps": 30, "checkpoint_every": 10, "log_every": 5,
                                 "eval_every": 0, "webhook": hook})  # fmt: skip
        worker = service.start("worker")
        assert receiver.first_arrived.wait(120), service.logs()
        worker.send_signal(signal.SIGKILL)  # with the first delivery in flight
        worker.wait(timeout=10)
        receiver.release.set()
        service.start("worker")
        wait_for(lambda: succeeded(receiver), 180, "the succeeded state delivered", every=0.5)
        # Deliveries go by due time: one retried after a failure may still be on its way.
        wait_for(lambda: all_delivered(service, job_id), 60, "every delivery made", every=0.5)
        check_deliveries(service, job_id, receiver)
    finally:
        service.stop()


def all_delivered(service: Service, job_id: str) -> bool:
    record = httpx.get(f"{service.url}/jobs/{job_id}/webhooks", timeout=10).json()
    return all(d["state"] == "delivered" for d in record["deliveries"])


def succeeded(receiver: Receiver) -> bool:
    return any(body["data"].get("state") == "succeeded" for body in receiver.delivered())


def check_deliveries(service: Service, job_id: str, receiver: Receiver) -> None:
    verify = readme_verifier()["verify"]
    for headers, body, _ in receiver.received:
        assert verify(SECRET, body, headers["X-GAN-Signature"]), headers
    response = httpx.get(f"{service.url}/jobs/{job_id}/events", timeout=30)
    streamed = parse_events(response.text)  # (id, type, data): the job has finished
    record = httpx.get(f"{service.url}/jobs/{job_id}/webhooks", timeout=10).json()
    delivered = receiver.delivered()
    wanted = {i: (kind, data) for i, kind, data in streamed if kind != "progress"}
    got = {b["id"]: (b["event"], b["data"]) for b in delivered if b["event"] != "progress"}
    assert got == wanted  # every state and checkpoint event, as the event stream has it
    progress = {i: data for i, kind, data in streamed if kind == "progress"}
    assert all(progress[b["id"]] == b["data"] for b in delivered if b["event"] == "progress")
    assert all(b["job_id"] == job_id for b in delivered)
    first = record["deliveries"][0]  # the queued state, in flight when its worker was killed
    assert first["event"] == "state"
    assert first["attempts"] == len(first["status_codes"]) + 1  # the lost attempt has no status
    retried = [d for d in record["deliveries"] if 500 in d["status_codes"]]  # whichever came next
    assert len(retried) == 1 and retried[0]["status_codes"][-2:] == [500, 200]
    assert all(d["state"] == "delivered" for d in record["deliveries"])
    assert all(d["status_codes"][-1] == 200 for d in record["deliveries"])
    assert any(d["event"] == "progress" for d in record["deliveries"]), record
