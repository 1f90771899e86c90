"""The Python client (api.client) against a real service: `gan serve` with its worker, over HTTP."""

from __future__ import annotations

import io
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from api.client import ApiError, Client, Event, parse_sse
from harness.services import Service, free_port

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SMALL: dict[str, Any] = {"max_steps": 200, "checkpoint_every": 50, "log_every": 10, "eval_every": 0}


@pytest.fixture
def gan(live_service: Service) -> Iterator[Client]:
    with Client(live_service.url) as client:
        yield client


def follow(gan: Client, job_id: str, last_event_id: int | None = None) -> list[Event]:
    """Every event of the job until its stream ends (the job has finished)."""
    return list(gan.events(job_id, last_event_id=last_event_id))


@pytest.mark.e2e
def test_a_job_from_submit_to_samples(gan: Client) -> None:
    job = gan.submit("classic", **SMALL)
    assert job["state"] == "queued" and job["total_steps"] == 200 and job["config"]["seed"] == 0

    events = follow(gan, job["id"])
    states = [e.data["state"] for e in events if e.type == "state"]
    assert states == ["queued", "running", "succeeded"]
    ids = [e.id for e in events if e.id is not None]
    assert len(ids) == len(events) and ids == sorted(ids)
    progress = [e.data for e in events if e.type == "progress"]
    assert [p["step"] for p in progress][-1] == 200 and progress[-1]["d_loss"] is not None
    assert [e.data["step"] for e in events if e.type == "checkpoint"] == [50, 100, 150, 200]

    done = gan.job(job["id"])
    assert (done["state"], done["step"], done["checkpoint_step"]) == ("succeeded", 200, 200)
    metrics = gan.metrics(job["id"])
    assert metrics["points"][-1]["step"] == 200 and metrics["points"][-1]["d_grad_norm"]
    later = gan.metrics(job["id"], since_step=150, max_points=2)
    assert [p["step"] for p in later["points"]] == [160, 200] and later["total_points"] == 5
    assert [c["step"] for c in gan.checkpoints(job["id"])] == [100, 150, 200]  # keeps 3

    png = gan.sample(job["id"], n=16, seed=1)
    assert png.startswith(PNG_MAGIC)
    assert Image.open(io.BytesIO(png)).size == (2 + 4 * 30, 2 + 4 * 30)
    older = gan.sample(job["id"], n=16, seed=1, checkpoint=100, ema=False, nrow=8)
    assert older.startswith(PNG_MAGIC) and older != png
    npy = gan.sample(job["id"], n=5, format="npy", truncation=0.5)
    assert np.load(io.BytesIO(npy)).shape == (5, 28, 28)

    # only what came after a given event
    again = follow(gan, job["id"], last_event_id=ids[-2])
    assert [e.id for e in again] == [ids[-1]]

    assert job["id"] in [j["id"] for j in gan.jobs(state="succeeded")]
    assert job["id"] not in [j["id"] for j in gan.jobs(state=["queued", "running"])]


@pytest.mark.e2e
def test_cancel_resume_and_delete(gan: Client) -> None:
    job = gan.submit("classic", max_steps=100_000, checkpoint_every=50, log_every=10, eval_every=0)
    asked = False
    for event in gan.events(job["id"]):  # until the stream ends, with the job cancelled
        if event.type == "checkpoint" and not asked:  # training, with a checkpoint on disk
            asked = True
            assert gan.cancel(job["id"])["state"] in ("cancelling", "cancelled")
    cancelled = gan.job(job["id"])
    assert cancelled["state"] == "cancelled"
    assert cancelled["checkpoint_step"] == cancelled["step"] < 100_000
    assert gan.cancel(job["id"])["state"] == "cancelled"  # again: nothing changes

    target = cancelled["step"] + 30
    assert gan.resume(job["id"], max_steps=target)["state"] == "queued"
    follow(gan, job["id"])
    resumed = gan.job(job["id"])
    assert (resumed["state"], resumed["step"], resumed["attempts"]) == ("succeeded", target, 2)
    with pytest.raises(ApiError) as finished:
        gan.cancel(job["id"])
    assert finished.value.status == 409 and "nothing to cancel" in finished.value.message

    gan.delete(job["id"])
    with pytest.raises(ApiError) as gone:
        gan.job(job["id"])
    assert gone.value.status == 404 and job["id"] in gone.value.message


@pytest.mark.e2e
def test_errors_name_the_field(gan: Client) -> None:
    with pytest.raises(ApiError) as bad:
        gan.submit("classic", max_steps=-1)
    assert bad.value.status == 422 and set(bad.value.fields) == {"max_steps"}
    assert "max_steps" in str(bad.value)
    with pytest.raises(ApiError) as unknown:
        gan.submit("no-such-preset")
    assert "preset" in unknown.value.fields and "unknown preset" in unknown.value.fields["preset"]
    with pytest.raises(ApiError) as missing:
        gan.job("no-such-job")
    assert missing.value.status == 404 and missing.value.fields == {}
    with pytest.raises(ApiError) as events:
        list(gan.events("no-such-job"))
    assert events.value.status == 404


@pytest.mark.e2e
def test_idempotent_submit_and_paging(gan: Client) -> None:
    first = gan.submit("classic", idempotency_key="client-test-1", max_steps=20, eval_every=0)
    again = gan.submit("classic", idempotency_key="client-test-1", max_steps=20, eval_every=0)
    assert again["id"] == first["id"]
    second = gan.submit("classic", max_steps=20, eval_every=0)
    newest = [j["id"] for j in gan.jobs(limit=2, page_size=1)]  # two pages of one
    assert newest == [second["id"], first["id"]]
    everything = [j["id"] for j in gan.jobs(page_size=1)]
    assert everything[:2] == newest and len(everything) == len(set(everything)) >= 2
    for job_id in newest:
        follow(gan, job_id)
    label = gan.sample(first["id"], n=4)  # an unconditional model takes no label
    assert label.startswith(PNG_MAGIC)
    with pytest.raises(ApiError) as conditional:
        gan.sample(first["id"], label=3)
    assert conditional.value.status == 422 and "label" in conditional.value.fields


def test_unreachable_service_raises_a_transport_error() -> None:
    with (
        Client(f"http://127.0.0.1:{free_port()}", timeout=2) as gan,
        pytest.raises(httpx.TransportError),
    ):
        gan.job("x")


def test_sse_parsing_follows_the_spec() -> None:
    lines = [
        "retry: 2000", "", ": keepalive", "",
        "id: 7", "event: state", 'data: {"state":', 'data:  "running"}', "",
        "event: progress", "data: [1, 2]", "",  # no id: the last one stands
        "id: 9", "data: 3", "",  # no event type: "message"
        "id: 10", "event: state", 'data: {"state": "lost"}',  # never dispatched
    ]  # fmt: skip
    assert list(parse_sse(lines)) == [
        Event(7, "state", {"state": "running"}),
        Event(7, "progress", [1, 2]),
        Event(9, "message", 3),
    ]


def test_the_client_imports_neither_torch_nor_fastapi() -> None:
    script = (
        "import sys, api.client\n"
        "assert not {'torch', 'fastapi', 'celery', 'sqlalchemy'} & set(sys.modules), "
        "sorted(sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
