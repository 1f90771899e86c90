"""Cancel, resume, delete, idempotent creation, paging, events, API keys and the rate limit,
against the real app and job store (the worker's part is played by worker.store's own calls)."""

import pytest

from api.main import app
from harness.services import parse_events
from tests.api.test_jobs import queued_messages
from tests.worker.store.helpers import progress
from worker.settings import get_settings
from worker.store import keys, leases, series
from worker.store.db import session_scope


def post(client, headers=None, **spec):
    response = client.post("/jobs", json={"max_steps": 100, **spec}, headers=headers or {})
    assert response.status_code == 202, response.text
    return response.json()


def claim(settings, job_id, worker="w1"):
    """Play the worker: take the job's lease; returns its token."""
    with session_scope(settings.database_url) as session:
        outcome, job = leases.claim(session, job_id, worker, lease_s=60)
        assert outcome == "claimed" and job is not None
        return job.lease_token


def as_worker(settings, job_id, token, action, **kwargs):
    with session_scope(settings.database_url) as session:
        job = leases.leased_job(session, job_id, token)
        assert job is not None
        action(job, **kwargs)


def report(job, step, checkpoint_step=None):
    report = progress(step, g_loss=2.0, d_real=0.5, d_fake=-0.5, checkpoint_step=checkpoint_step)
    series.record_progress(job, report)


def test_cancel_a_queued_job(client):
    job = post(client)
    cancelled = client.post(f"/jobs/{job['id']}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"
    assert client.post(f"/jobs/{job['id']}/cancel").json()["state"] == "cancelled"


def test_cancel_a_running_job_waits_for_its_worker(client, settings):
    job = post(client)
    token = claim(settings, job["id"])
    assert client.post(f"/jobs/{job['id']}/cancel").json()["state"] == "cancelling"
    as_worker(settings, job["id"], token, leases.mark_finished)
    assert client.get(f"/jobs/{job['id']}").json()["state"] == "cancelled"


def test_finished_jobs_cannot_be_cancelled(client, settings):
    job = post(client)
    as_worker(settings, job["id"], claim(settings, job["id"]), leases.mark_finished)
    response = client.post(f"/jobs/{job['id']}/cancel")
    assert response.status_code == 409 and "already succeeded" in response.json()["detail"]


def test_resume_requeues_a_cancelled_job_with_more_steps(client, settings):
    job = post(client)
    token = claim(settings, job["id"])
    as_worker(settings, job["id"], token, report, step=40, checkpoint_step=40)
    client.post(f"/jobs/{job['id']}/cancel")
    early = client.post(f"/jobs/{job['id']}/resume")
    assert early.status_code == 409 and "stopping" in early.json()["detail"]
    as_worker(settings, job["id"], token, leases.mark_finished)

    too_few = client.post(f"/jobs/{job['id']}/resume", json={"max_steps": 30})
    assert too_few.status_code == 422
    assert too_few.json()["detail"][0]["loc"] == ["body", "max_steps"]
    unknown = client.post(f"/jobs/{job['id']}/resume", json={"steps": 300})
    assert unknown.status_code == 422 and unknown.json()["detail"][0]["loc"][-1] == "steps"

    resumed = client.post(f"/jobs/{job['id']}/resume", json={"max_steps": 300})
    assert resumed.status_code == 202, resumed.text
    body = resumed.json()
    assert (body["state"], body["total_steps"], body["config"]["max_steps"]) == ("queued", 300, 300)
    assert (body["step"], body["checkpoint_step"]) == (40, 40)
    assert [m["args"] for m in queued_messages(settings)] == [[job["id"]], [job["id"]]]


def test_resume_without_a_body_and_conflicts(client, settings):
    job = post(client)
    assert client.post(f"/jobs/{job['id']}/resume").status_code == 409  # still queued
    client.post(f"/jobs/{job['id']}/cancel")
    assert client.post(f"/jobs/{job['id']}/resume").json()["state"] == "queued"


def test_delete_removes_the_job_and_its_files(client, settings):
    job = post(client)
    folder = settings.checkpoint_dir(job["id"])
    folder.mkdir(parents=True)
    (folder / "step-00000010.pt").write_bytes(b"x")
    assert client.delete(f"/jobs/{job['id']}").status_code == 204
    assert client.get(f"/jobs/{job['id']}").status_code == 404
    assert not settings.job_dir(job["id"]).exists()
    assert client.delete(f"/jobs/{job['id']}").status_code == 404


def test_idempotency_key_returns_the_same_job(client, settings):
    key = {"Idempotency-Key": "4b1d7c1e-retry-me"}
    first = client.post("/jobs", json={"max_steps": 10}, headers=key)
    again = client.post("/jobs", json={"max_steps": 10}, headers=key)
    assert first.status_code == again.status_code == 202
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["idempotent-replayed"] == "true"
    assert len(queued_messages(settings)) == 1  # one job, one task
    other = client.post("/jobs", json={"max_steps": 11}, headers=key)
    assert other.status_code == 422
    assert other.json()["detail"][0]["loc"] == ["header", "Idempotency-Key"]
    bad = client.post("/jobs", json={}, headers={"Idempotency-Key": "x" * 256})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"][-1] == "Idempotency-Key"


def test_jobs_page_with_a_cursor_and_filter_by_state(client):
    ids = [post(client)["id"] for _ in range(5)]
    client.post(f"/jobs/{ids[0]}/cancel")
    seen, url = [], "/jobs?limit=2"
    while url:
        page = client.get(url).json()
        assert len(page["jobs"]) <= 2
        seen += [job["id"] for job in page["jobs"]]
        url = page["links"].get("next")
        assert (url is None) == (page["next_cursor"] is None)
    assert seen == ids[::-1]
    cancelled = client.get("/jobs?state=cancelled").json()["jobs"]
    assert [job["id"] for job in cancelled] == [ids[0]]
    both = client.get("/jobs?state=cancelled&state=queued").json()["jobs"]
    assert len(both) == 5
    bad = client.get("/jobs?cursor=not-a-cursor")
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["query", "cursor"]
    assert client.get("/jobs?state=sleeping").json()["detail"][0]["loc"][-2:] == ["state", 0]


def read_events(client, url, headers=None):
    """(id, event, data) of every event of a stream that ends (the job has finished)."""
    with client.stream("GET", url, headers=headers or {}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        return parse_events("".join(response.iter_text()))


def test_events_replay_the_history_and_resume_after_last_event_id(client, settings):
    job = post(client)
    token = claim(settings, job["id"])
    for step, ckpt in ((10, None), (20, 20)):
        as_worker(settings, job["id"], token, report, step=step, checkpoint_step=ckpt)
    as_worker(settings, job["id"], token, leases.mark_finished)
    events = read_events(client, f"/jobs/{job['id']}/events")
    kinds = [kind for _, kind, _ in events]
    assert kinds == ["state", "state", "progress", "checkpoint", "progress", "state"]
    assert [d["state"] for _, k, d in events if k == "state"] == ["queued", "running", "succeeded"]
    ids = [event_id for event_id, _, _ in events]
    assert ids == sorted(ids)
    # polling shows what the last progress event showed
    last_progress = [d for _, k, d in events if k == "progress"][-1]
    polled = client.get(f"/jobs/{job['id']}").json()
    assert {k: polled[k] for k in last_progress if k != "eta_seconds"} == {
        k: v for k, v in last_progress.items() if k != "eta_seconds"
    }
    after = read_events(client, f"/jobs/{job['id']}/events", {"Last-Event-ID": str(ids[2])})
    assert after == events[3:]
    assert read_events(client, f"/jobs/{job['id']}/events?after={ids[4]}") == events[5:]


def test_openapi_documents_the_lifecycle(client):
    paths = client.get("/openapi.json").json()["paths"]
    assert {"post"} <= set(paths["/jobs/{job_id}/cancel"])
    assert {"post"} <= set(paths["/jobs/{job_id}/resume"])
    assert {"get", "delete"} <= set(paths["/jobs/{job_id}"])
    assert (
        "text/event-stream" in paths["/jobs/{job_id}/events"]["get"]["responses"]["200"]["content"]
    )
    params = {p["name"] for p in paths["/jobs"]["get"]["parameters"]}
    assert {"state", "limit", "cursor"} <= params
    headers = {p["name"] for p in paths["/jobs"]["post"]["parameters"]}
    assert "Idempotency-Key" in headers


@pytest.fixture
def keyed(client, settings):
    """The service with one key in its settings and one made with `gan keys create`."""
    with session_scope(settings.database_url) as session:
        _, stored = keys.create_api_key(session, "alice")
    keyed_settings = settings.model_copy(update={"api_keys": ("configured-key",)})
    app.dependency_overrides[get_settings] = lambda: keyed_settings
    return {"configured": "configured-key", "stored": stored}


def test_api_keys_guard_jobs_and_each_key_sees_its_own(client, keyed):
    assert client.get("/jobs").status_code == 401
    assert client.get("/jobs").headers["www-authenticate"] == "Bearer"
    assert client.get("/jobs", headers={"X-API-Key": "wrong"}).status_code == 401
    mine = post(client, {"Authorization": f"Bearer {keyed['stored']}"})
    theirs = post(client, {"X-API-Key": keyed["configured"]})
    as_alice = {"X-API-Key": keyed["stored"]}
    assert [j["id"] for j in client.get("/jobs", headers=as_alice).json()["jobs"]] == [mine["id"]]
    for path in (f"/jobs/{theirs['id']}", f"/jobs/{theirs['id']}/metrics"):
        assert client.get(path, headers=as_alice).status_code == 404
    assert client.post(f"/jobs/{theirs['id']}/cancel", headers=as_alice).status_code == 404
    assert client.delete(f"/jobs/{theirs['id']}", headers=as_alice).status_code == 404
    assert client.get(f"/jobs/{mine['id']}", headers=as_alice).status_code == 200
    assert client.get("/livez").status_code == 200  # health stays open
    spec = client.get("/openapi.json").json()["components"]["securitySchemes"]
    assert {scheme["type"] for scheme in spec.values()} == {"http", "apiKey"}


def test_job_creation_is_rate_limited_per_key(client, settings, keyed):
    limited = settings.model_copy(update={"api_keys": ("k1", "k2"), "jobs_per_minute": 2})
    app.dependency_overrides[get_settings] = lambda: limited
    for _ in range(2):
        post(client, {"X-API-Key": "k1"})
    refused = client.post("/jobs", json={}, headers={"X-API-Key": "k1"})
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
    post(client, {"X-API-Key": "k2"})  # another key has its own budget
