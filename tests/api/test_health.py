"""/livez and /readyz: readiness names the dependency that is down, and never hangs."""

import socket
import time

from api.main import app
from tests.conftest import REDIS_URL, require_service
from worker.settings import get_settings

FAST_S = 5.0  # a readiness probe's answer, down dependency or not


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ready(client, settings):
    """(the /readyz response under ``settings``, the seconds it took)."""
    app.dependency_overrides[get_settings] = lambda: settings
    started = time.monotonic()
    response = client.get("/readyz")
    return response, time.monotonic() - started


def test_livez(client):
    assert client.get("/livez").json() == {"status": "ok"}


def test_ready_on_the_embedded_set_up(client, settings):
    response, _ = ready(client, settings)
    assert response.status_code == 200, response.text
    assert response.json() == {
        "status": "ok",
        "checks": {"database": "ok", "broker": "ok", "artifacts": "ok"},
    }


def test_a_database_that_does_not_answer_is_named(client, settings):
    nothing_listens = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/test"
    response, seconds = ready(client, settings.model_copy(update={"database_url": nothing_listens}))
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable" and body["checks"]["broker"] == "ok"
    assert "refused" in body["checks"]["database"] or "failed" in body["checks"]["database"]
    assert seconds < FAST_S


def test_a_broker_that_does_not_answer_is_named(client, settings):
    nothing_listens = f"redis://127.0.0.1:{free_port()}/0"
    response, seconds = ready(client, settings.model_copy(update={"broker_url": nothing_listens}))
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable" and body["checks"]["database"] == "ok"
    assert "Connection refused" in body["checks"]["broker"], body
    assert seconds < FAST_S


def test_an_unwritable_broker_folder_is_named(client, settings, tmp_path):
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    broken = settings.model_copy(update={"broker_dir": not_a_folder / "broker"})
    app.dependency_overrides[get_settings] = lambda: broken
    response = client.get("/readyz")
    assert response.status_code == 503 and response.json()["checks"]["database"] == "ok"
    assert "Error" in response.json()["checks"]["broker"]


def test_a_check_that_hangs_fails_in_time():
    from api.readiness import run_checks

    started = time.monotonic()
    results = run_checks({"slow": lambda: time.sleep(30), "fine": lambda: None}, timeout=0.2)
    assert time.monotonic() - started < 2
    assert results == {"slow": "no answer within 0.2 s", "fine": "ok"}


def test_ready_on_redis_and_postgresql(client, settings, postgres_url):
    require_service("Redis", 6379)
    real = settings.model_copy(update={"broker_url": REDIS_URL, "database_url": postgres_url})
    response, _ = ready(client, real)
    assert response.status_code == 200, response.text
    assert response.json()["checks"] == {"database": "ok", "broker": "ok", "artifacts": "ok"}


def test_openapi_documents_both_probes(client):
    paths = client.get("/openapi.json").json()["paths"]
    assert "200" in paths["/livez"]["get"]["responses"]
    readyz = paths["/readyz"]["get"]["responses"]
    assert {"200", "503"} <= set(readyz)
    assert readyz["503"]["content"]["application/json"]["schema"]["$ref"].endswith("/ReadyOut")


def test_an_artifact_store_that_cannot_be_used_is_named(client, s3_settings, monkeypatch):
    response, _ = ready(client, s3_settings)
    assert response.status_code == 200, response.text
    no_bucket = s3_settings.model_copy(update={"artifacts_url": "s3://no-such-bucket/gan"})
    response, seconds = ready(client, no_bucket)
    assert response.status_code == 503 and seconds < FAST_S
    checks = response.json()["checks"]
    assert checks["database"] == checks["broker"] == "ok"
    assert "artifact store s3://no-such-bucket/gan" in checks["artifacts"]
    assert "bucket" in checks["artifacts"]
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    other = s3_settings.model_copy(update={"artifacts_url": s3_settings.artifacts_url + "-k"})
    response, _ = ready(client, other)  # a new store: it reads the credentials again
    assert response.status_code == 503
    assert "AWS_SECRET_ACCESS_KEY" in response.json()["checks"]["artifacts"]
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    other = s3_settings.model_copy(update={"artifacts_url": s3_settings.artifacts_url + "-e"})
    response, seconds = ready(client, other)
    assert response.status_code == 503 and seconds < FAST_S
    why = response.json()["checks"]["artifacts"]  # a new client's set-up may take the 2 s
    assert ("Could not connect" in why and "AWS_ENDPOINT_URL" in why) or "no answer" in why
