"""/metrics: the job store's, the broker's and the API's own metrics in Prometheus's format."""

import math
import socket
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import redis
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import event

from api.main import app, create_app
from api.prometheus import JOB_DURATION_BUCKETS
from tests.conftest import REDIS_URL, require_service
from worker.celery_app import TRAIN_TASK, celery_for
from worker.settings import get_settings
from worker.store import jobs, leases
from worker.store.db import get_engine, session_scope
from worker.store.states import (
    CANCELLED,
    CANCELLING,
    FAILED,
    FINAL_STATES,
    QUEUED,
    RUNNING,
    STATES,
    SUCCEEDED,
)

T0 = datetime(2025, 1, 1, tzinfo=UTC)
SAMPLES = "/jobs/{job_id}/samples"


def scrape(client) -> dict[str, list]:
    """{metric family: its samples} of a scrape."""
    response = client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {f.name: f.samples for f in text_string_to_metric_families(response.text)}


def value(families, name: str, **labels) -> float:
    family = name.removesuffix("_bucket").removesuffix("_count").removesuffix("_sum")
    [found] = [s.value for s in families[family] if s.name == name and s.labels == labels]
    return found


def add_job(url: str, state: str, *, seconds: float | None = None, ips: float | None = None):
    """A job taken to ``state`` through the store's own transitions; a finished one ran for
    ``seconds`` (None: it never started)."""
    with session_scope(url) as session:
        job = jobs.create_job(session, "classic", {"max_steps": 10})
        if seconds is not None or state in (RUNNING, CANCELLING):
            outcome, claimed = leases.claim(session, job.id, "test-worker", lease_s=60)
            assert outcome == "claimed" and claimed is not None
            job = claimed
        if state in (CANCELLING, CANCELLED):
            jobs.cancel(job)
        if state in (SUCCEEDED, FAILED) or (state == CANCELLED and seconds):
            leases.mark_finished(job, error="boom" if state == FAILED else None)
        assert job.state == state
        job.images_per_sec = ips
        if seconds is not None:
            job.started_at, job.finished_at = T0, T0 + timedelta(seconds=seconds)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_jobs_by_state_durations_and_throughput(client, settings, backend, request):
    if backend == "postgresql":
        postgres_url = request.getfixturevalue("postgres_url")
        settings = settings.model_copy(update={"database_url": postgres_url})
        app.dependency_overrides[get_settings] = lambda: settings
    url = settings.database_url
    add_job(url, QUEUED, ips=999.0)  # requeued with progress: not training now
    add_job(url, QUEUED)
    add_job(url, RUNNING, ips=100.0)
    add_job(url, RUNNING, ips=250.5)
    add_job(url, RUNNING)  # no progress report yet
    add_job(url, CANCELLING, ips=50.0)
    for seconds in (30, 90, 4000):
        add_job(url, SUCCEEDED, seconds=seconds)
    add_job(url, FAILED, seconds=100)
    add_job(url, FAILED)  # failed before it started: no duration
    add_job(url, CANCELLED)  # cancelled while queued: no duration

    families = scrape(client)

    expected = {QUEUED: 2, RUNNING: 3, CANCELLING: 1, SUCCEEDED: 3, FAILED: 2, CANCELLED: 1}
    for state in STATES:
        assert value(families, "gan_jobs", state=state) == expected.get(state, 0)
    assert value(families, "gan_training_images_per_second") == pytest.approx(350.5)

    duration = "gan_job_duration_seconds"
    assert value(families, f"{duration}_count", state="succeeded") == 3
    assert value(families, f"{duration}_sum", state="succeeded") == pytest.approx(4120, abs=0.01)
    buckets = {b: value(families, f"{duration}_bucket", state="succeeded", le=str(float(b)))
               for b in JOB_DURATION_BUCKETS}  # fmt: skip
    assert buckets[60] == 1 and buckets[300] == 2 and buckets[3600] == 2 and buckets[7200] == 3
    assert value(families, f"{duration}_bucket", state="succeeded", le="+Inf") == 3
    assert value(families, f"{duration}_count", state="failed") == 1
    assert value(families, f"{duration}_sum", state="failed") == pytest.approx(100, abs=0.01)
    assert value(families, f"{duration}_count", state="cancelled") == 0


def test_an_empty_store_has_every_state_at_zero(client):
    families = scrape(client)
    assert {s.labels["state"]: s.value for s in families["gan_jobs"]} == dict.fromkeys(STATES, 0.0)
    assert value(families, "gan_training_images_per_second") == 0
    for state in FINAL_STATES:
        assert value(families, "gan_job_duration_seconds_count", state=state) == 0


def test_a_scrape_makes_three_queries(client, settings):
    client.get("/metrics")  # the engine and its tables exist
    statements: list[str] = []
    engine = get_engine(settings.database_url)

    def count(_conn, _cursor, statement, *_):
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    try:
        client.get("/metrics")
    finally:
        event.remove(engine, "before_cursor_execute", count)
    jobs, slots = statements[:2], statements[2:]
    assert len(jobs) == 2 and all("GROUP BY" in s for s in jobs), statements
    assert len(slots) == 1 and "worker_slots" in slots[0], statements


def test_queue_depth_on_the_filesystem_broker(client, settings):
    assert value(scrape(client), "gan_queue_depth", queue=settings.task_queue) == 0
    celery = celery_for(settings)
    for job_id in ("a", "b"):
        celery.send_task(TRAIN_TASK, args=[job_id], queue=settings.task_queue)
    celery.send_task(TRAIN_TASK, args=["c"], queue="another-queue")
    assert value(scrape(client), "gan_queue_depth", queue=settings.task_queue) == 2


@pytest.fixture
def redis_queue():
    """A queue name of its own in the real Redis; its keys are removed afterwards."""
    require_service("Redis", 6379)
    queue = f"test-{uuid.uuid4().hex[:12]}"
    yield queue
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(f"*{queue}*"))
    if keys:
        client.delete(*keys)
    client.close()


def test_queue_depth_on_redis(client, settings, redis_queue):
    real = settings.model_copy(update={"broker_url": REDIS_URL, "task_queue": redis_queue})
    app.dependency_overrides[get_settings] = lambda: real
    assert value(scrape(client), "gan_queue_depth", queue=redis_queue) == 0
    celery = celery_for(real)
    for job_id in ("a", "b", "c"):
        celery.send_task(TRAIN_TASK, args=[job_id], queue=redis_queue)
    celery.send_task(TRAIN_TASK, args=["d"], queue=redis_queue, priority=9)
    assert value(scrape(client), "gan_queue_depth", queue=redis_queue) == 4


def test_a_broker_that_is_down_leaves_out_the_queue_depth(client, settings):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    down = settings.model_copy(update={"broker_url": f"redis://127.0.0.1:{port}/0"})
    app.dependency_overrides[get_settings] = lambda: down
    started = time.monotonic()
    families = scrape(client)
    assert time.monotonic() - started < 5
    assert families["gan_queue_depth"] == []
    assert value(families, "gan_jobs", state="queued") == 0  # the rest is there


def sampling_count(families, status: str) -> float:
    found = [
        s.value
        for s in families.get("gan_sampling_latency_seconds", [])
        if s.name.endswith("_count") and s.labels == {"route": SAMPLES, "status": status}
    ]
    return found[0] if found else 0.0


def test_sampling_latency_is_labelled_by_route_template(client):
    before = sampling_count(scrape(client), "4xx")
    assert client.get("/jobs/no-such-job/samples").status_code == 404
    client.get("/jobs/no-such-job")  # not a sampling route: not observed
    families = scrape(client)
    assert sampling_count(families, "4xx") == before + 1
    routes = {s.labels["route"] for s in families["gan_sampling_latency_seconds"]}
    assert routes == {SAMPLES}  # the template, never a raw path with a job id
    [total] = [s.value for s in families["gan_sampling_latency_seconds"]
               if s.name.endswith("_sum") and s.labels["status"] == "4xx"]  # fmt: skip
    assert total > 0 and math.isfinite(total)


def test_each_app_has_a_registry_of_its_own(settings):
    apps = [create_app(), create_app()]
    assert apps[0].state.metrics.registry is not apps[1].state.metrics.registry
    apps[0].dependency_overrides[get_settings] = lambda: settings
    apps[1].dependency_overrides[get_settings] = lambda: settings
    with TestClient(apps[0]) as first, TestClient(apps[1]) as second:
        first.get("/jobs/no-such-job/samples")
        assert sampling_count(scrape(first), "4xx") == 1
        assert sampling_count(scrape(second), "4xx") == 0


def test_openapi_documents_metrics_as_text(client):
    paths = client.get("/openapi.json").json()["paths"]
    assert "text/plain" in paths["/metrics"]["get"]["responses"]["200"]["content"]
    assert "/jobs/{job_id}/metrics" in paths  # a job's own metrics, unchanged
