"""The artifact store (worker/artifacts.py) on a folder and on a real S3 server (SeaweedFS), and
the worker training through it: resumed on another machine, never restarted from zero, failing
with a reason when the store is gone, carrying on through a restart of the store."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from gan.checkpoint import load_checkpoint
from tests.conftest import cache_judge
from worker.artifacts import ArtifactStore, ArtifactStoreError, checkpoints_key
from worker.store import jobs
from worker.store.db import session_scope
from worker.store.states import FAILED, SUCCEEDED
from worker.tasks import run_job

from .test_tasks import job_row, new_job


@pytest.fixture
def database_url(tmp_path) -> str:
    """These tests are about the artifact store: one kind of job store is enough."""
    return f"sqlite:///{tmp_path / 'gan.db'}"


@pytest.fixture(params=["folder", "s3"])
def store(request, tmp_path) -> ArtifactStore:
    if request.param == "folder":
        return ArtifactStore(str(tmp_path / "store"), tmp_path / "cache")
    return request.getfixturevalue("s3_settings").artifacts()


def test_objects_are_written_whole_listed_versioned_and_removed(store, tmp_path):
    assert store.info("jobs/a/checkpoints/step-00000001.pt") is None
    assert store.listing("jobs/a") == []
    store.write_bytes("jobs/a/checkpoints/step-00000001.pt", b"one")
    store.write_bytes("jobs/a/checkpoints/best.pt", b"best")
    store.write_bytes("jobs/b/checkpoints/best.pt", b"other job")
    first = store.info("jobs/a/checkpoints/best.pt")
    assert first is not None and first.size == 4
    assert [e.key for e in store.listing("jobs/a")] == [
        "jobs/a/checkpoints/best.pt",
        "jobs/a/checkpoints/step-00000001.pt",
    ]
    assert store.local_copy(first).read_bytes() == b"best"
    store.write_bytes("jobs/a/checkpoints/best.pt", b"better")  # replaced: a new version
    second = store.info("jobs/a/checkpoints/best.pt")
    assert second is not None and second.version != first.version
    assert store.local_copy(second).read_bytes() == b"better"
    assert store.read_bytes("jobs/a/checkpoints/step-00000001.pt") == b"one"
    store.delete_prefix("jobs/a")
    assert store.listing("jobs/a") == [] and store.info("jobs/a/checkpoints/best.pt") is None
    assert [e.key for e in store.listing("jobs")] == ["jobs/b/checkpoints/best.pt"]


def test_a_store_that_cannot_be_used_says_which_and_why(seaweedfs, tmp_path, monkeypatch):
    for name, value in seaweedfs.env.items():
        monkeypatch.setenv(name, value)
    ArtifactStore(seaweedfs.url("ok"), tmp_path).check()  # a prefix need not exist
    with pytest.raises(ArtifactStoreError, match=r"s3://no-such-bucket.*bucket.*must exist"):
        ArtifactStore("s3://no-such-bucket/x", tmp_path).check()
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    with pytest.raises(ArtifactStoreError, match=r"GAN_ARTIFACTS_URL.*AWS_SECRET_ACCESS_KEY"):
        ArtifactStore(seaweedfs.url("ok"), tmp_path).check()
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
    with pytest.raises(ArtifactStoreError, match=r"127\.0\.0\.1:9.*AWS_ENDPOINT_URL"):
        ArtifactStore(seaweedfs.url("ok"), tmp_path).check()


def resume(settings, job_id: str, max_steps: int) -> None:
    with session_scope(settings.database_url) as session:
        job = jobs.get_job(session, job_id)
        assert job is not None
        jobs.resume(job, max_steps=max_steps)


def host(settings, name: str, quick_mnist_judge=None):
    """The same settings on another machine: a cache folder of its own (nothing shared but
    the job store and the object store)."""
    other = settings.model_copy(update={"cache_dir": settings.cache_dir.parent / name})
    if quick_mnist_judge is not None:
        cache_judge(quick_mnist_judge, other)
    return other


def test_a_job_goes_on_from_the_object_store_on_another_machine(s3_settings, quick_mnist_judge):
    a = host(s3_settings, "host-a", quick_mnist_judge)
    job_id = new_job(a, max_steps=10, log_every=5, checkpoint_every=5, eval_every=5,
                     eval_samples=200)  # fmt: skip
    run_job(job_id, a)
    store = a.artifacts()
    names = [e.name for e in store.listing(checkpoints_key(job_id))]
    assert names == ["best.pt", "step-00000005.pt", "step-00000010.pt"]
    assert [e.name for e in store.listing("judges")] == [quick_mnist_judge.name]  # shared

    step10 = store.info(f"{checkpoints_key(job_id)}/step-00000010.pt")
    b = host(s3_settings, "host-b")  # no judge, no checkpoint of its own
    resume(b, job_id, 15)
    run_job(job_id, b)
    job = job_row(b, job_id)
    assert job.state == SUCCEEDED and job.step == 15, job.error
    resumed = load_checkpoint(b.checkpoint_dir(job_id) / "step-00000015.pt")
    assert resumed["monitor"]["best_step"] in (5, 10, 15)  # a's evaluations, carried on
    # Went on from a's step 10 (a start from 0 would have written step 10 again):
    assert store.info(f"{checkpoints_key(job_id)}/step-00000010.pt") == step10
    names = [e.name for e in store.listing(checkpoints_key(job_id))]
    assert names == ["best.pt", "step-00000005.pt", "step-00000010.pt", "step-00000015.pt"]


def test_a_job_with_a_checkpoint_the_store_lacks_fails_instead_of_starting_over(
    s3_settings, quick_mnist_judge
):
    job_id = new_job(s3_settings, max_steps=10, checkpoint_every=5, eval_every=0)
    run_job(job_id, s3_settings)
    resume(s3_settings, job_id, 20)
    elsewhere = s3_settings.model_copy(update={"artifacts_url": s3_settings.artifacts_url + "x"})
    run_job(job_id, host(elsewhere, "misconfigured"))
    job = job_row(s3_settings, job_id)
    assert job.state == FAILED and job.step == 10
    assert "checkpoint at step 10" in job.error and "GAN_ARTIFACTS_URL" in job.error
    assert "not starting over" in job.error


def test_a_checkpoint_the_store_refuses_fails_the_job_with_the_reason(
    s3_settings, own_seaweedfs, monkeypatch
):
    for name, value in own_seaweedfs.env.items():
        monkeypatch.setenv(name, value)
    settings = s3_settings.model_copy(
        update={"artifacts_url": own_seaweedfs.url("p"), "artifacts_retry_s": 1.0}
    )
    own_seaweedfs.stop()
    job_id = new_job(settings, max_steps=10, checkpoint_every=5, eval_every=0)
    run_job(job_id, settings)
    job = job_row(settings, job_id)
    assert job.state == FAILED
    assert "artifact store s3://gan/p" in job.error and "AWS_ENDPOINT_URL" in job.error


def test_the_object_store_restarted_mid_training_loses_nothing(
    s3_settings, own_seaweedfs, monkeypatch, caplog
):
    for name, value in own_seaweedfs.env.items():
        monkeypatch.setenv(name, value)
    caplog.set_level(logging.INFO, logger="worker.artifacts")
    settings = s3_settings.model_copy(
        update={"artifacts_url": own_seaweedfs.url("p"), "artifacts_retry_s": 60.0}
    )
    job_id = new_job(settings, dataset="ring8", max_steps=1200, log_every=50,
                     checkpoint_every=50, keep_checkpoints=100, eval_every=0)  # fmt: skip
    worker = threading.Thread(target=run_job, args=(job_id, settings))
    worker.start()
    store = settings.artifacts()
    deadline = time.monotonic() + 60
    while not store.listing(checkpoints_key(job_id)) and time.monotonic() < deadline:
        time.sleep(0.2)
    own_seaweedfs.stop()  # mid-training: the next checkpoints wait for it
    time.sleep(3)
    own_seaweedfs.start()
    worker.join(timeout=120)
    job = job_row(settings, job_id)
    assert job.state == SUCCEEDED and job.step == 1200, job.error
    steps = [e.name for e in store.listing(checkpoints_key(job_id))]
    assert steps == [f"step-{s:08d}.pt" for s in range(50, 1201, 50)]  # every one of them
    waited = [r for r in caplog.records if "retrying" in r.message or "is back" in r.message]
    assert len(waited) >= 2, caplog.text  # a checkpoint did wait for the store, then went in
    print(f"a checkpoint waited {waited[-1].created - waited[0].created:.1f} s for the store")
