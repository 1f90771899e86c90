"""The webhook dispatcher (worker.webhooks) against real job stores and a real HTTP receiver."""

from __future__ import annotations

import itertools
import json
import re
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from gan.config import resolve
from worker.settings import Settings
from worker.store import events, jobs, webhooks
from worker.store.db import session_scope
from worker.store.models import JobEvent, utcnow
from worker.webhooks import Dispatcher, key_secret, sign

README = Path(__file__).resolve().parents[2] / "README.md"
SECRET = "s3cret"


def readme_verifier() -> dict[str, Any]:
    """``webhook_secret`` and ``verify`` of the README's Webhooks section, run as written."""
    section = README.read_text().split("\n## Webhooks", 1)[1].split("\n## ", 1)[0]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code is not None
    namespace: dict[str, Any] = {}
    exec(code.group(1), namespace)
    return namespace


class Receiver:
    """An HTTP server on 127.0.0.1 that records each POST (headers, body) and answers with the
    next of ``codes`` (200 once they run out)."""

    def __init__(self, codes: list[int] | None = None) -> None:
        self.codes = list(codes or [])
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.times: list[float] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.received.append((dict(self.headers), body))
                receiver.times.append(time.monotonic())
                self.send_response(receiver.codes.pop(0) if receiver.codes else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(body) for _, body in self.received]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    """A job store of each kind (no judge, data or broker: nothing trains here)."""
    return Settings(database_url=database_url, artifacts_dir=tmp_path / "artifacts")


def run_until_final(dispatcher: Dispatcher, settings: Settings, job_id: str) -> list[Any]:
    """Passes of ``dispatcher`` until every delivery of the job is delivered or failed."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        dispatcher.run_once()
        found = deliveries(settings, job_id)
        if found and all(d.state != "pending" for d in found):
            return found
        time.sleep(0.01)
    raise AssertionError(f"still pending: {deliveries(settings, job_id)}")


def quick(settings: Settings, **changes: Any) -> Settings:
    return settings.model_copy(update={"webhook_retry_s": 0.05, **changes})


def job_with_webhook(
    settings: Settings, url: str, kinds=("state", "checkpoint"), every: float = 1.0, owner=""
) -> str:
    """A queued job (its first state event logged) with a webhook for ``kinds``."""
    with session_scope(settings.database_url) as session:
        job = jobs.create_job(session, "classic", resolve("classic").to_dict(), owner=owner)
        webhooks.add_webhook(session, job.id, url, kinds, every, SECRET)
        return job.id


def add_event(settings: Settings, job_id: str, kind: str, data: dict, at=None) -> None:
    with session_scope(settings.database_url) as session:
        job = jobs.get_job(session, job_id)
        assert job is not None
        job.events.add(JobEvent(kind=kind, data=data, created_at=at or utcnow()))


def deliveries(settings: Settings, job_id: str) -> list[Any]:
    with session_scope(settings.database_url) as session:
        return webhooks.deliveries_of(session, job_id)


def test_wanted_events_are_posted_signed_and_recorded(settings, receiver):
    job_id = job_with_webhook(settings, receiver.url)
    add_event(settings, job_id, "progress", {"step": 5})  # not wanted
    add_event(settings, job_id, "checkpoint", {"step": 10})
    assert Dispatcher(settings).run_once() == 2

    bodies = receiver.bodies()
    assert [(b["event"], b["data"]) for b in bodies] == [
        ("state", {"state": "queued", "error": None}),
        ("checkpoint", {"step": 10}),
    ]
    with session_scope(settings.database_url) as session:  # the event stream's ids and data
        streamed = events.events_after(session, job_id, 0)
        assert [(e.id, e.data) for e in streamed if e.kind != "progress"] == [
            (b["id"], b["data"]) for b in bodies
        ]
    readme = readme_verifier()
    for (headers, body), delivery in zip(
        receiver.received, deliveries(settings, job_id), strict=True
    ):
        assert readme["verify"](SECRET, body, headers["X-GAN-Signature"])
        assert not readme["verify"]("other", body, headers["X-GAN-Signature"])
        assert not readme["verify"](SECRET, body + b" ", headers["X-GAN-Signature"])
        assert headers["X-GAN-Delivery"] == str(delivery.id) and headers["X-GAN-Event"]
        assert delivery.state == "delivered" and delivery.status_codes == [200]
    old = sign(SECRET, int(time.time()) - 3600, receiver.received[0][1])  # a replay
    assert not readme["verify"](SECRET, receiver.received[0][1], old)
    assert readme["webhook_secret"]("gan_abc") == key_secret("gan_abc")

    assert Dispatcher(settings).run_once() == 0  # nothing new: nothing sent again
    assert len(receiver.received) == 2


def test_a_failing_receiver_gets_retries_with_backoff(settings, receiver):
    receiver.codes = [500, 503]
    job_id = job_with_webhook(settings, receiver.url, kinds=("state",))
    [delivery] = run_until_final(Dispatcher(quick(settings)), settings, job_id)
    assert delivery.state == "delivered" and delivery.status_codes == [500, 503, 200]
    assert delivery.attempts == 3 and delivery.last_error is None
    gaps = [b - a for a, b in itertools.pairwise(receiver.times)]
    assert gaps[0] >= 0.05 and gaps[1] >= 0.1  # 0.05 s, then twice that


def test_a_delivery_fails_after_its_last_attempt(settings, receiver):
    receiver.codes = [500] * 10
    job_id = job_with_webhook(settings, receiver.url, kinds=("state",))
    dispatcher = Dispatcher(quick(settings, webhook_max_attempts=2))
    [delivery] = run_until_final(dispatcher, settings, job_id)
    dispatcher.run_once()  # a failed delivery is not tried again
    assert delivery.state == "failed" and delivery.status_codes == [500, 500]
    assert delivery.next_attempt_at is None and "answered 500" in (delivery.last_error or "")
    assert len(receiver.received) == 2


def test_an_attempt_whose_worker_died_is_made_again(settings, receiver):
    job_id = job_with_webhook(settings, receiver.url, kinds=("state",))
    dispatcher = Dispatcher(settings)
    with session_scope(settings.database_url) as session:
        webhooks.enqueue(session, job_id)
    [(delivery_id, attempts)] = deliveries_due(settings)
    now = utcnow()
    with session_scope(settings.database_url) as session:  # a worker takes it, then dies
        lost = webhooks.claim(session, delivery_id, attempts, now, now + timedelta(seconds=0.5))
    assert lost is not None
    assert dispatcher.run_once() == 0 and receiver.received == []  # held meanwhile
    time.sleep(0.6)
    assert dispatcher.run_once() == 1
    [delivery] = deliveries(settings, job_id)
    assert delivery.state == "delivered" and delivery.attempts == 2
    assert delivery.status_codes == [200]  # the lost attempt has no status
    with session_scope(settings.database_url) as session:  # the dead one's late word is void
        assert not webhooks.finish(session, lost, 500, "answered 500", None)
    assert deliveries(settings, job_id)[0].state == "delivered"


def deliveries_due(settings: Settings) -> list[tuple[int, int]]:
    with session_scope(settings.database_url) as session:
        return webhooks.due(session, utcnow())


def test_two_dispatchers_send_each_event_once(settings, receiver):
    job_id = job_with_webhook(settings, receiver.url, kinds=("checkpoint",))
    for step in range(10):
        add_event(settings, job_id, "checkpoint", {"step": step})
    both = [Dispatcher(settings), Dispatcher(settings)]
    threads = [threading.Thread(target=d.run_once) for d in both]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for dispatcher in both:  # whatever a lost race left behind
        dispatcher.run_once()
    assert sorted(b["data"]["step"] for b in receiver.bodies()) == list(range(10))
    assert all(d.attempts == 1 for d in deliveries(settings, job_id))


def test_progress_is_sent_at_most_every_progress_every_s(settings, receiver):
    job_id = job_with_webhook(settings, receiver.url, kinds=("progress",), every=3.0)
    start = utcnow()
    for step, after_s in enumerate([0, 1, 2.5, 3.5, 4, 7]):
        add_event(settings, job_id, "progress", {"step": step}, start + timedelta(seconds=after_s))
    Dispatcher(settings).run_once()
    assert [b["data"]["step"] for b in receiver.bodies()] == [0, 3, 5]


def test_a_keys_webhook_to_a_private_address_is_refused_at_delivery(settings, receiver):
    job_id = job_with_webhook(settings, receiver.url, kinds=("state",), owner="key-0123")
    Dispatcher(settings).run_once()
    [delivery] = deliveries(settings, job_id)
    assert delivery.state == "failed" and "127.0.0.1" in (delivery.last_error or "")
    assert receiver.received == []
    allowed = job_with_webhook(settings, receiver.url, kinds=("state",), owner="key-0123")
    Dispatcher(settings.model_copy(update={"webhook_allow_private": True})).run_once()
    assert deliveries(settings, allowed)[0].state == "delivered"
