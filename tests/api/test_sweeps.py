"""POST /sweeps and what follows, against the real app and job store, on SQLite and the real
PostgreSQL: a grid or list makes ordinary jobs, all or none; GET ranks them by their best
metric; cancel and delete act on all of them; bad input is a 422 at its place in the request;
a sweep counts as its jobs against the key's limits. (The worker's part is played by
worker.store's own calls; tests/test_e2e_sweeps.py trains one with a real worker.)"""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from sqlalchemy import func, select

from api.main import app
from tests.api.test_jobs import queued_messages
from tests.api.test_lifecycle import as_worker, claim
from tests.worker.store.helpers import progress
from worker.settings import get_settings
from worker.store import leases, series
from worker.store.db import session_scope
from worker.store.models import Job, Sweep


@pytest.fixture
def database_url(sqlite_or_postgres: str) -> str:
    return sqlite_or_postgres


def post_sweep(client, body: dict[str, Any], headers=None) -> dict[str, Any]:
    response = client.post("/sweeps", json=body, headers=headers or {})
    assert response.status_code == 202, response.text
    return response.json()


def evaluated(job, best: dict[str, float], step: int = 50) -> None:
    """Play the worker's report of an evaluation whose best is ``best``."""
    report = progress(step, metrics=best, metrics_step=step, best=best, best_step=step)
    series.record_progress(job, report)


def test_a_grid_makes_one_ordinary_job_per_combination(client, settings):
    body = {
        "base": {"preset": "classic", "max_steps": 50},
        "grid": {"seed": [0, 1], "lr_g": [1e-4, 2e-4, 3e-4]},
    }
    sweep = post_sweep(client, body)
    points = [entry["point"] for entry in sweep["jobs"]]
    assert points == [{"seed": s, "lr_g": lr} for s in (0, 1) for lr in (1e-4, 2e-4, 3e-4)]
    assert sweep["size"] == 6 and sweep["states"] == {"queued": 6} and sweep["best"] is None
    assert sweep["spec"] == body
    for entry in sweep["jobs"]:
        job = client.get(f"/jobs/{entry['job']['id']}").json()
        assert job["config"]["seed"] == entry["point"]["seed"]
        assert job["config"]["lr_g"] == entry["point"]["lr_g"] and job["config"]["max_steps"] == 50
        assert job["sweep_id"] == sweep["id"] and job["links"]["sweep"] == sweep["links"]["self"]
    queued = sorted(m["args"] for m in queued_messages(settings))  # one task each
    assert queued == sorted([e["job"]["id"]] for e in sweep["jobs"])
    assert client.get(f"/sweeps/{sweep['id']}").json() == sweep
    listed = client.get("/sweeps").json()["sweeps"]
    assert [(s["id"], s["size"]) for s in listed] == [(sweep["id"], 6)]
    assert len(client.get("/jobs").json()["jobs"]) == 6  # each is a job like any other


def test_points_override_the_base_one_by_one(client):
    body = {
        "base": {"dataset": "ring8", "arch": "mlp"},
        "points": [
            {"loss": "hinge"},
            {"preset": "stable", "arch": "mlp", "augment": "none", "seed": 3},
        ],
    }
    sweep = post_sweep(client, body)
    first, second = (entry["job"] for entry in sweep["jobs"])
    assert (first["preset"], first["config"]["loss"], first["config"]["dataset"]) == (
        "classic",
        "hinge",
        "ring8",
    )
    assert (second["preset"], second["config"]["seed"], second["config"]["dataset"]) == (
        "stable",
        3,
        "ring8",
    )


def test_jobs_are_ranked_by_their_best_metric(client, settings):
    sweep = post_sweep(client, {"grid": {"seed": [0, 1, 2, 3]}})
    ids = [entry["job"]["id"] for entry in sweep["jobs"]]
    for job_id, fid in ((ids[0], 30.0), (ids[1], 12.5), (ids[3], 20.0)):
        as_worker(
            settings, job_id, claim(settings, job_id), evaluated, best={"fid": fid, "coverage": 9.0}
        )
    ranked = client.get(f"/sweeps/{sweep['id']}").json()
    order = [(e["job"]["id"], e["rank"], e["metric"], e["value"]) for e in ranked["jobs"]]
    assert order == [
        (ids[1], 1, "fid", 12.5),
        (ids[3], 2, "fid", 20.0),
        (ids[0], 3, "fid", 30.0),
        (ids[2], None, None, None),  # no evaluation yet: last
    ]
    assert ranked["best"] == {"job_id": ids[1], "metric": "fid", "value": 12.5}
    assert ranked["states"] == {"running": 3, "queued": 1}
    assert client.get("/sweeps").json()["sweeps"][0]["best"] == ranked["best"]


def test_cancel_acts_on_every_unfinished_job(client, settings):
    sweep = post_sweep(client, {"grid": {"seed": [0, 1, 2]}})
    queued, running, done = (entry["job"]["id"] for entry in sweep["jobs"])
    claim(settings, running)
    as_worker(settings, done, claim(settings, done), leases.mark_finished)
    response = client.post(f"/sweeps/{sweep['id']}/cancel")
    assert response.status_code == 200, response.text
    states = {e["job"]["id"]: e["job"]["state"] for e in response.json()["jobs"]}
    assert states == {queued: "cancelled", running: "cancelling", done: "succeeded"}
    assert client.post(f"/sweeps/{sweep['id']}/cancel").status_code == 200  # again: no change
    resumed = client.post(f"/jobs/{queued}/resume")  # each job stays an ordinary job
    assert resumed.status_code == 202 and resumed.json()["state"] == "queued"


def test_delete_removes_the_sweep_its_jobs_and_their_files(client, settings):
    sweep = post_sweep(client, {"points": [{"seed": 0}, {"seed": 1}]})
    ids = [entry["job"]["id"] for entry in sweep["jobs"]]
    for job_id in ids:
        settings.checkpoint_dir(job_id).mkdir(parents=True)
    claim(settings, ids[1])
    assert client.delete(f"/sweeps/{sweep['id']}").status_code == 204
    assert client.get(f"/sweeps/{sweep['id']}").status_code == 404
    assert all(client.get(f"/jobs/{job_id}").status_code == 404 for job_id in ids)
    assert not any(settings.job_dir(job_id).exists() for job_id in ids)
    assert client.get("/sweeps").json()["sweeps"] == []


def test_a_job_deleted_alone_leaves_the_rest_of_its_sweep(client):
    sweep = post_sweep(client, {"grid": {"seed": [0, 1]}})
    first, second = (entry["job"]["id"] for entry in sweep["jobs"])
    assert client.delete(f"/jobs/{first}").status_code == 204
    left = client.get(f"/sweeps/{sweep['id']}").json()
    assert [e["job"]["id"] for e in left["jobs"]] == [second] and left["size"] == 1


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"grid": {"colour": ["red"]}}, ["body", "grid", "colour"]),
        ({"grid": {"lr_g": [1e-4, 2e-4, 5.0]}}, ["body", "grid", "lr_g", 2]),
        ({"grid": {"loss": ["hinge", "softmax"]}}, ["body", "grid", "loss", 1]),
        ({"grid": {"seed": [0, 1.5]}}, ["body", "grid", "seed", 1]),
        ({"points": [{"seed": 0}, {"max_steps": 0}]}, ["body", "points", 1, "max_steps"]),
        ({"points": [{"seed": 0, "nope": 1}]}, ["body", "points", 0, "nope"]),
        ({"grid": {}}, ["body", "grid"]),
        ({"grid": {"seed": []}}, ["body", "grid", "seed"]),
        ({"points": []}, ["body", "points"]),
        ({}, ["body", "grid"]),
        ({"grid": {"seed": [0]}, "points": [{}]}, ["body", "points"]),
        ({"grid": {"seed": list(range(9)), "lr_g": [1e-4] * 8}}, ["body", "grid"]),  # 72 > 64
        ({"points": [{}] * 65}, ["body", "points"]),
        ({"base": {"lr_g": 7.0}, "grid": {"seed": [0]}}, ["body", "base", "lr_g"]),
        (
            {"base": {"dataset": "ring8"}, "grid": {"arch": ["mlp", "dcgan"]}},
            ["body", "grid", "arch", 1],
        ),
        ({"grid": {"preset": ["stable", "nope"]}}, ["body", "grid", "preset", 1]),
        ({"grid": {"seed": "0,1"}}, ["body", "grid", "seed"]),
    ],
)
def test_bad_sweeps_are_422_at_their_place_and_make_nothing(client, settings, body, loc):
    response = client.post("/sweeps", json=body)
    assert response.status_code == 422, response.text
    locations = [error["loc"] for error in response.json()["detail"]]
    assert loc in locations, locations
    assert client.get("/jobs").json()["jobs"] == [] and client.get("/sweeps").json()["sweeps"] == []
    assert not (settings.broker_dir / "queue").exists() or queued_messages(settings) == []


def test_every_bad_value_is_named_at_once(client):
    response = client.post("/sweeps", json={"grid": {"lr_g": [9.0, 1e-4], "seed": [0, -1]}})
    locations = sorted(str(error["loc"]) for error in response.json()["detail"])
    assert locations == [str(["body", "grid", "lr_g", 0]), str(["body", "grid", "seed", 1])]


def test_an_idempotent_retry_returns_the_same_sweep(client, settings):
    body, key = {"grid": {"seed": [0, 1]}}, {"Idempotency-Key": "sweep-1"}
    first = post_sweep(client, body, key)
    again = client.post("/sweeps", json=body, headers=key)
    assert again.status_code == 202 and again.headers["idempotent-replayed"] == "true"
    assert again.json()["id"] == first["id"] and len(queued_messages(settings)) == 2
    other = client.post("/sweeps", json={"grid": {"seed": [5]}}, headers=key)
    assert other.status_code == 422
    assert other.json()["detail"][0]["loc"] == ["header", "Idempotency-Key"]
    assert client.post("/jobs", json={}, headers=key).status_code == 202  # jobs' keys are apart


def test_concurrent_sweeps_with_one_key_make_one_sweep(client, settings):
    body, requests = {"grid": {"seed": [0, 1, 2]}}, 8
    barrier = threading.Barrier(requests)

    def post(_: int) -> Any:
        barrier.wait()
        return client.post("/sweeps", json=body, headers={"Idempotency-Key": "one-sweep"})

    with ThreadPoolExecutor(requests) as pool:
        answers = list(pool.map(post, range(requests)))
    assert Counter(a.status_code for a in answers) == {202: requests}, [a.text for a in answers]
    assert len({a.json()["id"] for a in answers}) == 1
    with session_scope(settings.database_url) as session:
        assert session.scalar(select(func.count()).select_from(Sweep)) == 1
        assert session.scalar(select(func.count()).select_from(Job)) == 3
    assert len(queued_messages(settings)) == 3


def test_a_sweep_counts_as_its_jobs_against_the_keys_limits(client, settings):
    limited = settings.model_copy(
        update={"api_keys": ("k1", "k2"), "jobs_per_minute": 5, "max_sweep_jobs": 4}
    )
    app.dependency_overrides[get_settings] = lambda: limited
    k1, k2 = {"X-API-Key": "k1"}, {"X-API-Key": "k2"}
    too_big = client.post("/sweeps", json={"grid": {"seed": [0, 1, 2, 3, 4]}}, headers=k1)
    assert too_big.status_code == 422 and "at most 4" in too_big.text
    post_sweep(client, {"grid": {"seed": [0, 1, 2, 3]}}, k1)
    refused = client.post("/sweeps", json={"grid": {"seed": [0, 1]}}, headers=k1)
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
    assert "this sweep has 2" in refused.json()["detail"]
    post_sweep(client, {"points": [{}]}, k1)  # the fifth job still fits
    assert client.post("/jobs", json={}, headers=k1).status_code == 429
    theirs = post_sweep(client, {"grid": {"seed": [0, 1]}}, k2)  # another key: its own budget
    assert client.get(f"/sweeps/{theirs['id']}", headers=k1).status_code == 404
    assert client.post(f"/sweeps/{theirs['id']}/cancel", headers=k1).status_code == 404
    assert client.delete(f"/sweeps/{theirs['id']}", headers=k1).status_code == 404
    assert [s["id"] for s in client.get("/sweeps", headers=k2).json()["sweeps"]] == [theirs["id"]]
    assert len(client.get("/sweeps", headers=k1).json()["sweeps"]) == 2


def test_a_sweep_larger_than_the_keys_budget_is_taken_from_a_full_one(client, settings):
    limited = settings.model_copy(update={"api_keys": ("k1",), "jobs_per_minute": 3})
    app.dependency_overrides[get_settings] = lambda: limited
    k1 = {"X-API-Key": "k1"}
    post_sweep(client, {"grid": {"seed": [0, 1, 2, 3]}}, k1)  # 4 jobs: the budget goes into debt
    refused = client.post("/jobs", json={}, headers=k1)
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 20


def test_the_sweep_and_its_jobs_are_made_together(client, settings):
    sweep = post_sweep(client, {"grid": {"seed": [0, 1, 2]}})
    with session_scope(settings.database_url) as session:
        row = session.get(Sweep, sweep["id"])
        assert row is not None
        assert [p["job_id"] for p in row.points] == [e["job"]["id"] for e in sweep["jobs"]]


def test_an_unreachable_broker_leaves_the_sweep_with_its_jobs_failed(client, settings):
    broken = settings.model_copy(update={"broker_url": "redis://127.0.0.1:9/0"})
    app.dependency_overrides[get_settings] = lambda: broken
    response = client.post("/sweeps", json={"grid": {"seed": [0, 1]}})
    assert response.status_code == 503 and "2 of its 2 jobs" in response.json()["detail"]
    sweep = client.get("/sweeps").json()["sweeps"][0]
    assert sweep["states"] == {"failed": 2}
