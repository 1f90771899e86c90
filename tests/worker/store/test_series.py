"""worker.store.series: progress reports and their time series, on SQLite and the real
PostgreSQL."""

import math

from tests.worker.store.helpers import new_job, progress
from worker.store import jobs, series
from worker.store.db import session_scope


def report(database_url, job_id, step, **fields):
    """A progress report of ``step`` with made-up losses (d_loss = step / 100)."""
    losses = {"images_per_sec": 1e3, "d_loss": step / 100, "g_loss": 0.5, "d_real": 1.0,
              "d_fake": -1.0, "d_grad_norm": 2.0, "g_grad_norm": 3.0,
              "checkpoint_step": None}  # fmt: skip
    with session_scope(database_url) as session:
        job = jobs.get_job(session, job_id)
        assert job is not None
        series.record_progress(job, progress(step, **{**losses, **fields}))


def read_series(database_url, job_id, **query) -> tuple[int, list[tuple[int, dict]]]:
    with session_scope(database_url) as session:
        total, points = series.metric_points(session, job_id, **query)
        return total, [(p.step, p.data) for p in points]


def test_progress_records_evaluations_best_and_warnings(database_url):
    job_id = new_job(database_url)
    report(database_url, job_id, 10)
    report(database_url, job_id, 20, metrics={"fid": 30.0, "diversity": 0.9}, metrics_step=20,
           best={"fid": 30.0, "diversity": 0.9}, best_step=20)  # fmt: skip
    warning = {"code": "mode_collapse", "step": 25, "message": "diversity fell to 0.1"}
    report(database_url, job_id, 30, metrics={"fid": 30.0, "diversity": 0.9}, metrics_step=20,
           best={"fid": 30.0, "diversity": 0.9}, best_step=20, warnings=[warning])  # fmt: skip
    report(database_url, job_id, 40, metrics={"fid": 45.0, "diversity": 0.1}, metrics_step=40,
           best={"fid": 30.0, "diversity": 0.9}, best_step=20, warnings=[warning])  # fmt: skip
    with session_scope(database_url) as session:
        job = jobs.get_job(session, job_id)
        assert job is not None
        assert job.metrics == {"fid": 45.0, "diversity": 0.1, "step": 40}
        assert job.best_metrics == {"fid": 30.0, "diversity": 0.9, "step": 20}
        assert job.warnings == [warning]
    losses = {"images_per_sec": 1e3, "g_loss": 0.5, "d_real": 1.0, "d_fake": -1.0,
              "d_grad_norm": 2.0, "g_grad_norm": 3.0, "bf16": 0.0}  # fmt: skip
    # One point per report; the evaluation only in the report that brought it.
    assert read_series(database_url, job_id) == (4, [
        (10, {"d_loss": 0.1, **losses}),
        (20, {"d_loss": 0.2, **losses, "fid": 30.0, "diversity": 0.9}),
        (30, {"d_loss": 0.3, **losses}),
        (40, {"d_loss": 0.4, **losses, "fid": 45.0, "diversity": 0.1}),
    ])  # fmt: skip


def test_an_evaluation_between_reports_gets_its_own_point(database_url):
    job_id = new_job(database_url)
    report(database_url, job_id, 10)
    report(database_url, job_id, 20, metrics={"mode_kl": 0.5}, metrics_step=15)
    progress = ["bf16", "d_fake", "d_grad_norm", "d_loss", "d_real", "g_grad_norm", "g_loss",
                "images_per_sec"]  # fmt: skip
    assert [(step, sorted(data)) for step, data in read_series(database_url, job_id)[1]] == [
        (10, progress),
        (15, ["mode_kl"]),
        (20, progress),
    ]


def test_repeated_steps_replace_the_abandoned_points(database_url):
    """A requeued job resumes from its newest checkpoint (step 20 here) and reports steps 30 and
    40 again: the series follows the run that went on, once per step."""
    job_id = new_job(database_url)
    for step in (10, 20, 30, 40):
        report(database_url, job_id, step, images_per_sec=1.0)
    for step in (30, 40, 50):
        report(database_url, job_id, step, images_per_sec=2.0)
    points = read_series(database_url, job_id)[1]
    assert [(step, data["images_per_sec"]) for step, data in points] == [
        (10, 1.0), (20, 1.0), (30, 2.0), (40, 2.0), (50, 2.0),
    ]  # fmt: skip


def test_non_finite_values_are_stored_as_null(database_url):
    """JSON has no NaN or Infinity (PostgreSQL's json type refuses them)."""
    job_id = new_job(database_url)
    report(database_url, job_id, 10, d_real=math.nan,
           metrics={"fid": math.inf, "diversity": 1.0}, metrics_step=10)  # fmt: skip
    with session_scope(database_url) as session:
        job = jobs.get_job(session, job_id)
        assert job is not None and job.metrics == {"fid": None, "diversity": 1.0, "step": 10}
    [(_, data)] = read_series(database_url, job_id)[1]
    assert data["d_real"] is None and data["fid"] is None and data["d_fake"] == -1.0


def test_series_are_per_job_filtered_and_downsampled_evenly(database_url):
    job_id, other = new_job(database_url), new_job(database_url)
    for step in range(1, 11):  # steps 1 … 10
        report(database_url, job_id, step)
    report(database_url, other, 1)

    def steps(**query):
        return [step for step, _ in read_series(database_url, job_id, **query)[1]]

    assert steps() == list(range(1, 11))
    assert read_series(database_url, job_id, max_points=4)[0] == 10
    # n = 10 points to m: ranks ceil(j·9/(m−1)), j = 0 … m−1 (worked out by hand)
    assert steps(max_points=4) == [1, 4, 7, 10]  # ranks 0, 3, 6, 9
    assert steps(max_points=3) == [1, 6, 10]  # ranks 0, ceil(4.5) = 5, 9
    assert steps(max_points=9) == [1, 3, 4, 5, 6, 7, 8, 9, 10]  # ranks 0, ceil(9/8) = 2, …
    assert steps(max_points=1) == [10]  # the newest
    assert steps(since_step=7) == [8, 9, 10]
    assert steps(since_step=7, max_points=2) == [8, 10]
    assert read_series(database_url, job_id, since_step=10) == (0, [])
    assert read_series(database_url, "missing") == (0, [])


def test_the_resolved_precision_is_a_series(database_url):
    job_id = new_job(database_url)
    report(database_url, job_id, 10, precision="bf16")
    report(database_url, job_id, 20)  # fp32, the default of a report
    assert [(step, data["bf16"]) for step, data in read_series(database_url, job_id)[1]] == [
        (10, 1.0),
        (20, 0.0),
    ]
