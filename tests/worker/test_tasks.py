"""The task body run in-process against a real job store (no broker involved)."""

from pathlib import Path

from gan.checkpoint import list_checkpoints
from gan.config import resolve
from worker.celery_app import celery_for
from worker.reconcile import Reconciler
from worker.store import jobs, leases, series
from worker.store.db import session_scope
from worker.store.states import FAILED, QUEUED, SUCCEEDED
from worker.tasks import run_job


def new_job(settings, **overrides) -> str:
    config = resolve("classic", **overrides).to_dict()
    with session_scope(settings.database_url) as session:
        return jobs.create_job(session, "classic", config).id


def job_row(settings, job_id):
    with session_scope(settings.database_url) as session:
        return jobs.get_job(session, job_id)


def test_run_job_trains_and_records_progress(settings):
    job_id = new_job(settings, max_steps=20, log_every=5, checkpoint_every=10, eval_samples=200)
    run_job(job_id, settings)
    job = job_row(settings, job_id)
    assert job.state == SUCCEEDED and job.error is None
    assert (job.step, job.checkpoint_step) == (20, 20)
    assert job.images_per_sec > 0 and job.d_loss is not None and job.g_loss is not None
    assert job.started_at <= job.finished_at
    steps = [step for step, _ in list_checkpoints(settings.checkpoint_dir(job_id))]
    assert steps == [10, 20]


def test_finished_job_is_not_run_again(settings):
    job_id = new_job(settings, max_steps=5, eval_every=0)
    run_job(job_id, settings)
    finished_at = job_row(settings, job_id).finished_at
    run_job(job_id, settings)  # a redelivered task
    assert job_row(settings, job_id).finished_at == finished_at


def test_missing_data_fails_the_job_with_a_reason(settings, tmp_path: Path):
    empty = tmp_path / "no-data"
    empty.mkdir()
    job_id = new_job(settings, max_steps=5)
    run_job(job_id, settings.model_copy(update={"data_dir": empty}))
    job = job_row(settings, job_id)
    assert job.state == FAILED
    assert "no mnist IDX files" in job.error and "GAN_DATA_DIR" in job.error


def test_unknown_job_is_ignored(settings):
    run_job("00000000-0000-0000-0000-000000000000", settings)  # no exception, nothing created
    with session_scope(settings.database_url) as session:
        assert jobs.list_jobs(session) == []


def test_lost_workers_jobs_are_requeued_at_embedded_start_up(settings):
    running, queued = new_job(settings), new_job(settings)
    with session_scope(settings.database_url) as session:
        assert leases.claim(session, running, "dead-worker", lease_s=3600)[0] == "claimed"
    # the embedded broker serves one worker: at its start-up every lease is a dead worker's
    assert Reconciler(settings, celery_for(settings)).run_once(all_leases_dead=True) == [running]
    assert len(list((settings.broker_dir / "queue").iterdir())) == 1
    job = job_row(settings, running)
    assert (job.state, job.lost, job.lease_owner) == (QUEUED, 1, None)
    assert job_row(settings, queued).state == QUEUED


def test_evaluations_best_and_warnings_are_recorded(settings):
    job_id = new_job(settings, dataset="ring8", max_steps=30, log_every=5, checkpoint_every=10,
                     eval_every=10, eval_samples=200)  # fmt: skip
    run_job(job_id, settings)
    job = job_row(settings, job_id)
    assert job.state == SUCCEEDED, job.error
    assert job.metrics["step"] == 30 and {"mode_kl", "diversity"} <= set(job.metrics)
    with session_scope(settings.database_url) as session:
        total, points = series.metric_points(session, job_id)
    assert [p.step for p in points] == [5, 10, 15, 20, 25, 30] and total == 6
    evaluated: dict[int, dict] = {p.step: p.data for p in points if "mode_kl" in p.data}
    assert sorted(evaluated) == [10, 20, 30]
    latest = {k: v for k, v in job.metrics.items() if k != "step"}
    assert {k: evaluated[30][k] for k in latest} == latest
    # The best is the evaluation with the lowest mode_kl.
    best_step = job.best_metrics["step"]
    assert job.best_metrics["mode_kl"] == min(data["mode_kl"] for data in evaluated.values())
    assert evaluated[best_step]["mode_kl"] == job.best_metrics["mode_kl"]
    assert (settings.checkpoint_dir(job_id) / "best.pt").is_file()
    for warning in job.warnings:
        assert set(warning) == {"code", "step", "message"} and 0 < warning["step"] <= 30


def test_mnist_evaluations_use_the_cached_judge(settings):
    judge = settings.judges_dir / "judge-mnist.pt"
    cached = judge.stat().st_mtime_ns
    job_id = new_job(settings, max_steps=10, log_every=5, eval_every=10, eval_samples=200)
    run_job(job_id, settings)
    job = job_row(settings, job_id)
    assert job.state == SUCCEEDED, job.error
    assert {"fid", "diversity", "coverage"} <= set(job.metrics) and job.metrics["step"] == 10
    assert job.best_metrics == job.metrics  # the only evaluation is the best
    assert list(settings.judges_dir.iterdir()) == [judge] and judge.stat().st_mtime_ns == cached


def test_no_evaluations_when_eval_every_is_0(settings):
    job_id = new_job(settings, dataset="ring8", max_steps=10, log_every=5, eval_every=0)
    run_job(job_id, settings)
    job = job_row(settings, job_id)
    assert job.state == SUCCEEDED
    assert (job.metrics, job.best_metrics, job.warnings) == (None, None, [])
    assert not (settings.checkpoint_dir(job_id) / "best.pt").exists()


def test_failures_are_told_apart_for_a_person():
    import torch

    from gan.checkpoint import CheckpointWriteError
    from worker.tasks import failure_reason

    cpu = RuntimeError(
        "[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate "
        "memory: you tried to allocate 1644167168 bytes. Error code 12 (Cannot allocate memory)"
    )
    assert failure_reason(cpu) == (
        "out of memory: DefaultCPUAllocator: can't allocate memory: you tried to allocate "
        "1644167168 bytes. Error code 12 (Cannot allocate memory); try a smaller batch_size or "
        "width (or image_size, eval_samples), or a device with more memory"
    )
    cuda = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB.\nmore")
    assert failure_reason(cuda).startswith("out of memory: CUDA out of memory. Tried to alloc")
    assert failure_reason(MemoryError()).startswith("out of memory: MemoryError; try a smaller")
    disk = CheckpointWriteError("could not write checkpoint step-00000010.pt in /x: No space")
    assert failure_reason(disk) == str(disk)
    full = OSError(28, "No space left on device")
    assert failure_reason(full).endswith("No space left on device")
    assert failure_reason(KeyError("x")) == "internal error: KeyError: 'x'"
    assert failure_reason(RuntimeError("shapes do not match")).startswith("internal error")
