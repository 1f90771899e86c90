"""GET /jobs/{id} metrics and warnings, and GET /jobs/{id}/metrics, over progress the way the
worker records it."""

from typing import Any

from tests.worker.store.helpers import progress
from worker.store import jobs, series
from worker.store.db import session_scope

LOSSES: dict[str, Any] = {"images_per_sec": 500.0, "g_loss": 0.7, "d_real": 1.5, "d_fake": -1.5,
                         "d_grad_norm": 4.0, "g_grad_norm": 0.5}  # fmt: skip
COLLAPSE = {"code": "mode_collapse", "step": 150, "message": "diversity fell to 0.2: try …"}


def report(settings, job_id, step, **fields):
    """A progress report of ``step`` with d_loss = step / 1000."""
    with session_scope(settings.database_url) as session:
        job = jobs.get_job(session, job_id)
        assert job is not None
        series.record_progress(job, progress(step, d_loss=step / 1000, **LOSSES, **fields))


def trained_job(client, settings) -> str:
    """A job with reports every 50 steps to 300 and evaluations at 100, 200 and 300."""
    job_id = client.post("/jobs", json={"max_steps": 300}).json()["id"]
    fids = {100: 40.0, 200: 25.0, 300: 31.0}
    for step in range(50, 301, 50):
        evaluated = max((s for s in fids if s <= step), default=None)
        report(
            settings, job_id, step,
            metrics={"fid": fids[evaluated], "diversity": 1.0} if evaluated else {},
            metrics_step=evaluated,
            best={"fid": 25.0, "diversity": 1.0} if step >= 200 else
            ({"fid": 40.0, "diversity": 1.0} if step >= 100 else None),
            best_step=200 if step >= 200 else (100 if step >= 100 else None),
            warnings=[COLLAPSE] if step >= 150 else [],
        )  # fmt: skip
    return job_id


def test_a_new_job_has_no_metrics_or_warnings(client):
    job = client.post("/jobs", json={"max_steps": 300}).json()
    assert (job["metrics"], job["metrics_step"], job["best_metrics"], job["warnings"]) == (
        {}, None, None, []
    )  # fmt: skip
    assert job["links"]["metrics"].endswith(f"/jobs/{job['id']}/metrics")
    assert client.get(job["links"]["metrics"]).json() == {
        "job_id": job["id"],
        "total_points": 0,
        "points": [],
    }


def test_job_shows_the_latest_and_best_metrics_and_warnings(client, settings):
    job = client.get(f"/jobs/{trained_job(client, settings)}").json()
    assert job["metrics"] == {"fid": 31.0, "diversity": 1.0} and job["metrics_step"] == 300
    assert job["best_metrics"] == {"fid": 25.0, "diversity": 1.0, "step": 200}
    assert job["warnings"] == [COLLAPSE]
    assert client.get("/jobs").json()["jobs"] == [job]


def test_metrics_are_the_time_series(client, settings):
    job_id = trained_job(client, settings)
    body = client.get(f"/jobs/{job_id}/metrics").json()
    assert body["job_id"] == job_id and body["total_points"] == 6
    evaluation = {100: {"fid": 40.0, "diversity": 1.0}, 200: {"fid": 25.0, "diversity": 1.0},
                  300: {"fid": 31.0, "diversity": 1.0}}  # fmt: skip
    assert body["points"] == [
        # bf16: what precision "auto" resolved to (progress() reports fp32: 0)
        {"step": step, "d_loss": step / 1000, **LOSSES, "bf16": 0.0, **evaluation.get(step, {})}
        for step in range(50, 301, 50)
    ]


def test_metrics_since_a_step_and_downsampled(client, settings):
    job_id = trained_job(client, settings)

    def steps(query: str) -> tuple[int, list[int]]:
        body = client.get(f"/jobs/{job_id}/metrics?{query}").json()
        return body["total_points"], [point["step"] for point in body["points"]]

    assert steps("since_step=200") == (2, [250, 300])
    assert steps("since_step=300") == (0, [])
    assert steps("max_points=3") == (6, [50, 200, 300])  # ranks 0, ceil(2.5) = 3, 5
    assert steps("max_points=2") == (6, [50, 300])
    assert steps("max_points=1") == (6, [300])
    assert steps("since_step=60&max_points=2") == (5, [100, 300])


def test_metrics_parameters_are_validated(client, settings):
    job_id = client.post("/jobs", json={"max_steps": 300}).json()["id"]
    for query, field in (
        ("max_points=0", "max_points"),
        ("max_points=10001", "max_points"),
        ("since_step=-1", "since_step"),
        ("since_step=ten", "since_step"),
    ):
        response = client.get(f"/jobs/{job_id}/metrics?{query}")
        assert response.status_code == 422, query
        assert ["query", field] in [e["loc"] for e in response.json()["detail"]]
    response = client.get("/jobs/nope/metrics")
    assert response.status_code == 404 and "no job" in response.json()["detail"]


def test_openapi_documents_metrics_warnings_and_checkpoints(client):
    spec = client.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    job = schemas["JobOut"]["properties"]
    assert {"metrics", "metrics_step", "best_metrics", "warnings"} <= set(job)
    assert "fid" in job["metrics"]["description"]
    assert set(schemas["WarningOut"]["properties"]) == {"code", "step", "message"}
    assert "vanishing_gradients" in schemas["WarningOut"]["properties"]["code"]["description"]
    metrics = spec["paths"]["/jobs/{job_id}/metrics"]["get"]
    assert {p["name"] for p in metrics["parameters"]} == {"job_id", "since_step", "max_points"}
    assert metrics["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/MetricsOut"
    }
    samples = spec["paths"]["/jobs/{job_id}/samples"]["get"]
    [checkpoint] = [p for p in samples["parameters"] if p["name"] == "checkpoint"]
    assert "best" in checkpoint["description"] and "pattern" in str(checkpoint["schema"])
    headers = samples["responses"]["200"]["headers"]
    assert {"X-Checkpoint", "X-Checkpoint-Step"} <= set(headers)
