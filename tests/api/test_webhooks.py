"""A job spec's webhook: checked at POST /jobs (a 422 naming the field), shown by
GET /jobs/{id}/webhooks."""

from __future__ import annotations

import pytest

from api.main import app
from worker.settings import Settings, get_settings
from worker.store import webhooks
from worker.store.db import session_scope
from worker.webhooks import key_secret

KEY = "gan_test-key"


def errors(response) -> list[tuple[list, str]]:
    assert response.status_code == 422, response.text
    return [(error["loc"], error["msg"]) for error in response.json()["detail"]]


def use(settings: Settings, **changes) -> Settings:
    changed = settings.model_copy(update=changes)
    app.dependency_overrides[get_settings] = lambda: changed
    return changed


def test_a_webhook_is_stored_with_its_defaults_and_shown(client, settings):
    settings = use(settings, webhook_secret="server-secret")
    hook = {"url": "http://127.0.0.1:9/hook"}
    job = client.post("/jobs", json={"max_steps": 10, "webhook": hook}).json()
    shown = client.get(job["links"]["webhooks"]).json()
    assert shown == {
        "job_id": job["id"],
        "webhook": {
            "url": "http://127.0.0.1:9/hook",
            "events": ["state", "checkpoint", "progress"],
            "progress_every_s": 30.0,
        },
        "deliveries": [],  # a worker makes them
    }
    with session_scope(settings.database_url) as session:
        stored = webhooks.get_webhook(session, job["id"])
        assert stored is not None and stored.secret == "server-secret"
    plain = client.post("/jobs", json={"max_steps": 10}).json()
    assert client.get(f"/jobs/{plain['id']}/webhooks").json()["webhook"] is None
    assert "webhook" not in plain["config"]


URL = "http://example.com"


@pytest.mark.parametrize(
    ("webhook", "loc"),
    [
        ({"url": "ftp://example.com/x"}, ["url"]),
        ({"url": "not a url"}, ["url"]),
        ({"url": URL, "events": ["finished"]}, ["events", 0]),
        ({"url": URL, "events": []}, ["events"]),
        ({"url": URL, "events": ["state", "state"]}, ["events"]),
        ({"url": URL, "progress_every_s": 0}, ["progress_every_s"]),
        ({"url": URL, "secret": "x"}, ["secret"]),
        (URL, []),
    ],
)
def test_a_bad_webhook_is_a_422_naming_its_field(client, settings, webhook, loc):
    use(settings, webhook_secret="server-secret")
    [(where, _)] = errors(client.post("/jobs", json={"max_steps": 10, "webhook": webhook}))
    assert where == ["body", "webhook", *loc]


def test_without_keys_a_webhook_needs_the_servers_secret(client):
    response = client.post("/jobs", json={"webhook": {"url": "http://127.0.0.1:9/"}})
    [(loc, message)] = errors(response)
    assert loc == ["body", "webhook"] and "GAN_WEBHOOK_SECRET" in message


def test_with_keys_private_addresses_are_refused_unless_allowed(client, settings):
    settings = use(settings, api_keys=(KEY,))
    headers = {"X-API-Key": KEY}
    for url in ("http://127.0.0.1:8080/x", "http://localhost/x", "https://10.1.2.3/x",
                "http://[::1]/x", "http://169.254.169.254/latest", "http://0.0.0.0/"):  # fmt: skip
        response = client.post("/jobs", json={"webhook": {"url": url}}, headers=headers)
        [(loc, message)] = errors(response)
        assert loc == ["body", "webhook", "url"] and "GAN_WEBHOOK_ALLOW_PRIVATE" in message, url
    unknown = {"url": "http://no-such-host.invalid/x"}
    [(loc, message)] = errors(client.post("/jobs", json={"webhook": unknown}, headers=headers))
    assert loc == ["body", "webhook", "url"] and "cannot be resolved" in message

    settings = use(settings, webhook_allow_private=True)
    hook = {"url": "http://127.0.0.1:8080/x"}
    created = client.post("/jobs", json={"max_steps": 10, "webhook": hook}, headers=headers)
    assert created.status_code == 202, created.text
    with session_scope(settings.database_url) as session:  # signed with the key's own secret
        stored = webhooks.get_webhook(session, created.json()["id"])
        assert stored is not None and stored.secret == key_secret(KEY)
    bearer = {"Authorization": f"Bearer {KEY}"}
    again = client.post("/jobs", json={"max_steps": 10, "webhook": hook}, headers=bearer)
    assert again.status_code == 202


def test_the_idempotency_key_covers_the_webhook(client, settings):
    use(settings, webhook_secret="server-secret")
    spec = {"max_steps": 10, "webhook": {"url": "http://127.0.0.1:9/a"}}
    headers = {"Idempotency-Key": "hook-1"}
    first = client.post("/jobs", json=spec, headers=headers)
    assert client.post("/jobs", json=spec, headers=headers).json()["id"] == first.json()["id"]
    other = {**spec, "webhook": {"url": "http://127.0.0.1:9/b"}}
    [(loc, _)] = errors(client.post("/jobs", json=other, headers=headers))
    assert loc == ["header", "Idempotency-Key"]


def test_openapi_documents_webhooks(client):
    spec = client.get("/openapi.json").json()
    route = spec["paths"]["/jobs/{job_id}/webhooks"]["get"]
    assert "X-GAN-Signature" in route["description"]
    hook = spec["components"]["schemas"]["WebhookSpec"]
    assert set(hook["properties"]) == {"url", "events", "progress_every_s"}
    generator = spec["paths"]["/jobs/{job_id}/generator"]["get"]
    assert "501" in generator["responses"] and "onnx" in str(generator["parameters"])


def test_a_sweeps_webhook_is_every_one_of_its_jobs(client, settings):
    use(settings, webhook_secret="server-secret")
    hook = {"url": "http://127.0.0.1:9/hook", "events": ["state"]}
    body = {"base": {"max_steps": 10, "webhook": hook}, "grid": {"seed": [0, 1]}}
    sweep = client.post("/sweeps", json=body)
    assert sweep.status_code == 202, sweep.text
    for entry in sweep.json()["jobs"]:
        shown = client.get(entry["job"]["links"]["webhooks"]).json()["webhook"]
        assert shown == {**hook, "progress_every_s": 30.0}
    point = {"base": {"max_steps": 10}, "points": [{"webhook": hook}]}
    assert errors(client.post("/sweeps", json=point))[0][0] == ["body", "points", 0, "webhook"]


def test_a_sweeps_webhook_is_checked_where_it_is(client, settings):
    use(settings, webhook_secret="")
    body = {"base": {"webhook": {"url": URL}}, "grid": {"seed": [0]}}
    assert errors(client.post("/sweeps", json=body))[0][0] == ["body", "base", "webhook"]
