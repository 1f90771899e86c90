import base64
import json
from typing import get_args

import pytest

from api.main import app
from api.schemas import JobSpec, JobState
from gan.config import FIELD_GROUPS, PRESETS, TrainConfig
from worker.celery_app import TRAIN_TASK
from worker.settings import Settings, get_settings
from worker.store.states import STATES


def queued_messages(settings: Settings) -> list[dict]:
    """The Celery messages waiting in the filesystem broker's folder."""
    messages = []
    for path in sorted((settings.broker_dir / "queue").iterdir()):
        envelope = json.loads(path.read_text())
        body = json.loads(base64.b64decode(envelope["body"]))
        messages.append({"task": envelope["headers"]["task"], "args": body[0]})
    return messages


def test_post_job_queues_a_celery_task(client, settings):
    response = client.post("/jobs", json={"preset": "classic", "max_steps": 2000})
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["state"] == "queued" and job["step"] == 0 and job["total_steps"] == 2000
    assert job["config"]["max_steps"] == 2000 and job["config"]["batch_size"] == 64
    assert response.headers["location"] == job["links"]["self"]
    assert job["links"]["samples"].endswith(f"/jobs/{job['id']}/samples")
    assert job["links"]["metrics"].endswith(f"/jobs/{job['id']}/metrics")
    assert (job["metrics"], job["metrics_step"], job["best_metrics"], job["warnings"]) == (
        {}, None, None, []
    )  # fmt: skip
    assert queued_messages(settings) == [{"task": TRAIN_TASK, "args": [job["id"]]}]
    assert client.get(f"/jobs/{job['id']}").json() == job


def test_empty_spec_is_the_classic_preset(client):
    job = client.post("/jobs", json={}).json()
    assert job["preset"] == "classic" and job["config"] == TrainConfig().to_dict()


def test_jobs_are_listed_newest_first(client):
    ids = [client.post("/jobs", json={"max_steps": n}).json()["id"] for n in (1, 2, 3)]
    listed = [job["id"] for job in client.get("/jobs").json()["jobs"]]
    assert listed == ids[::-1]
    assert [job["id"] for job in client.get("/jobs?limit=2").json()["jobs"]] == ids[::-1][:2]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"preset": "classic", "colour": "red"}, "colour"),
        ({"max_steps": -5}, "max_steps"),
        ({"max_steps": 0}, "max_steps"),
        ({"max_steps": 1.5}, "max_steps"),
        ({"max_steps": "many"}, "max_steps"),
        ({"batch_size": 1_000_000}, "batch_size"),
        ({"preset": "nope"}, "preset"),
        ({"loss": "softmax"}, "loss"),
        ({"dataset": "imagenet"}, "dataset"),
        ({"dataset": "ds-" + "0" * 32}, "dataset"),  # a well-formed id that was never uploaded
        ({"dataset": "../../etc"}, "dataset"),
        ({"preset": "stable", "image_size": 30}, "image_size"),  # dcgan needs a multiple of 4
        ({"dataset": "ring8", "arch": "dcgan"}, "arch"),
        ({"loss": "hinge", "label_smoothing": 0.1}, "label_smoothing"),
        ({"d_steps": 2.5}, "d_steps"),
        ({"lr_g": 1e9}, "lr_g"),
        ({"device": "tpu"}, "device"),
    ],
)
def test_invalid_specs_get_422_naming_the_field(client, settings, body, field):
    response = client.post("/jobs", json=body)
    assert response.status_code == 422, response.text
    locations = [error["loc"] for error in response.json()["detail"]]
    assert ["body", field] in locations, locations
    assert client.get("/jobs").json()["jobs"] == []  # nothing was stored or queued
    assert list((settings.broker_dir / "queue").iterdir()) == []


def test_nan_and_infinity_are_rejected(client):
    """Python's JSON parser accepts NaN and Infinity literals: the model must refuse them."""
    for value in ("NaN", "Infinity"):
        raw = f'{{"lr_d": {value}}}'
        response = client.post("/jobs", content=raw, headers={"content-type": "application/json"})
        assert response.status_code == 422
        assert ["body", "lr_d"] in [e["loc"] for e in response.json()["detail"]]


def test_malformed_json_is_422(client):
    response = client.post("/jobs", content="{", headers={"content-type": "application/json"})
    assert response.status_code == 422


def test_unknown_job_is_404(client):
    for path in ("/jobs/nope", "/jobs/00000000-0000-0000-0000-000000000000/samples"):
        response = client.get(path)
        assert response.status_code == 404 and "no job" in response.json()["detail"]


def test_unreachable_broker_answers_503_and_records_the_job(client, settings):
    nothing_listens = settings.model_copy(update={"broker_url": "redis://127.0.0.1:9/0"})
    app.dependency_overrides[get_settings] = lambda: nothing_listens
    response = client.post("/jobs", json={"max_steps": 10})
    assert response.status_code == 503 and "recorded as failed" in response.json()["detail"]
    [job] = client.get("/jobs").json()["jobs"]
    assert job["state"] == "failed" and "could not be queued" in job["error"]


def test_job_spec_has_a_field_for_every_config_field():
    overrides = set(JobSpec.model_fields) - {"preset", "webhook"}
    assert overrides == set(TrainConfig.__dataclass_fields__)


def test_openapi_documents_the_png_samples_and_the_spec(client):
    spec = client.get("/openapi.json").json()
    content = spec["paths"]["/jobs/{job_id}/samples"]["get"]["responses"]["200"]["content"]
    assert "image/png" in content
    body = spec["components"]["schemas"]["JobSpec"]
    assert body["additionalProperties"] is False
    assert body["properties"]["preset"]["enum"] == list(PRESETS)
    assert "hinge" in str(body["properties"]["loss"])  # choices come from gan.config
    assert body["properties"]["lr_d"]["description"].startswith("Adam learning rate")


def test_openapi_gives_each_spec_field_its_form_group(client):
    properties = client.get("/openapi.json").json()["components"]["schemas"]["JobSpec"][
        "properties"
    ]
    groups = {
        name: p["x-group"] for name, p in properties.items() if name not in ("preset", "webhook")
    }
    assert groups == FIELD_GROUPS


def test_documented_states_are_the_stores():
    assert get_args(JobState) == STATES


def test_curl_dash_d_bodies_are_read_as_json(client):
    """`curl -X POST :8000/jobs -d '{...}'` sends application/x-www-form-urlencoded."""
    form = {"content-type": "application/x-www-form-urlencoded"}
    body = '{"preset": "classic", "max_steps": 7}'
    response = client.post("/jobs", content=body, headers=form)
    assert response.status_code == 202, response.text
    assert response.json()["total_steps"] == 7


def test_browsers_cannot_post_form_encoded_jobs(client):
    """A cross-site form POST carries Origin: it must not queue a job (CSRF)."""
    headers = {"content-type": "application/x-www-form-urlencoded", "origin": "http://evil.test"}
    response = client.post("/jobs", content='{"max_steps": 7}', headers=headers)
    assert response.status_code == 422
    assert client.get("/jobs").json()["jobs"] == []
