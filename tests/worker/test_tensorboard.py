"""GAN_TENSORBOARD: the worker's TensorBoard event files, read with TensorBoard's own reader."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator

import pytest

from gan.config import resolve
from worker import tensorboard
from worker.settings import Settings
from worker.store import jobs
from worker.store.db import session_scope
from worker.store.states import SUCCEEDED
from worker.tasks import run_job


@pytest.fixture(autouse=True)
def closed_writer() -> Iterator[None]:
    yield
    tensorboard.close()  # as the next job's first report would


def new_job(settings: Settings, **overrides: object) -> str:
    config = resolve("classic", **overrides).to_dict()
    with session_scope(settings.database_url) as session:
        return jobs.create_job(session, "classic", config).id


def state_of(settings: Settings, job_id: str) -> str:
    with session_scope(settings.database_url) as session:
        job = jobs.get_job(session, job_id)
        assert job is not None
        return job.state


def test_the_worker_writes_scalars_evaluations_and_sample_grids(settings: Settings) -> None:
    pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    settings = settings.model_copy(update={"tensorboard": True})
    job_id = new_job(
        settings, max_steps=20, log_every=5, checkpoint_every=10, eval_every=10, eval_samples=200
    )
    run_job(job_id, settings)
    assert state_of(settings, job_id) == SUCCEEDED

    events = EventAccumulator(str(tensorboard.log_dir(settings, job_id)), {"images": 0})
    events.Reload()
    tags = events.Tags()
    for tag in ("loss/d", "loss/g", "logits/d_real", "logits/d_fake", "grad_norm/d",
                "grad_norm/g", "speed/images_per_sec"):  # fmt: skip
        assert [s.step for s in events.Scalars(tag)] == [5, 10, 15, 20], tag
    assert [s.step for s in events.Scalars("eval/fid")] == [10, 20]
    assert {"eval/coverage", "eval/diversity"} <= set(tags["scalars"])
    images = events.Images("samples")
    assert [i.step for i in images] == [10, 20]
    assert (images[0].width, images[0].height) == (242, 242)  # 8x8 digits


def test_without_the_package_training_goes_on_and_the_log_says_why(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    settings = settings.model_copy(update={"tensorboard": True})
    job_id = new_job(settings, max_steps=10, log_every=5, eval_every=0)
    with caplog.at_level(logging.WARNING, logger="worker.tensorboard"):
        run_job(job_id, settings)
    assert state_of(settings, job_id) == SUCCEEDED
    warnings = [r.getMessage() for r in caplog.records if r.name == "worker.tensorboard"]
    assert len(warnings) == 1  # once, not at every report
    assert "tensorboard package is not installed" in warnings[0] and "pip install" in warnings[0]
    assert not tensorboard.log_dir(settings, job_id).exists()


def test_off_by_default(settings: Settings) -> None:
    assert Settings.model_fields["tensorboard"].default is False
    job_id = new_job(settings, max_steps=5, log_every=5, eval_every=0)
    run_job(job_id, settings)
    assert not tensorboard.log_dir(settings, job_id).exists()


def test_on_an_object_store_the_event_files_are_put_there_whole(
    s3_settings: Settings, tmp_path
) -> None:
    pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    settings = s3_settings.model_copy(update={"tensorboard": True})
    job_id = new_job(settings, dataset="ring8", max_steps=20, log_every=5, checkpoint_every=10,
                     eval_every=0)  # fmt: skip
    run_job(job_id, settings)
    assert state_of(settings, job_id) == SUCCEEDED
    store = settings.artifacts()
    [event_file] = store.listing(f"jobs/{job_id}/tensorboard")
    copy = tmp_path / "from-the-store" / event_file.name
    copy.parent.mkdir()
    copy.write_bytes(store.read_bytes(event_file.key))
    events = EventAccumulator(str(copy.parent))
    events.Reload()
    assert [s.step for s in events.Scalars("loss/d")] == [5, 10, 15, 20]  # the whole run
