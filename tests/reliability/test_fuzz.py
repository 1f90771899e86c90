"""The whole OpenAPI surface fuzzed with Schemathesis: every operation, with data that fits its
schema and data that does not (both generation modes), against the real app in-process on a
real job store with real checkpoints. Every answer must be below 500, have a status code the
operation documents, and match the schema documented for it.

Hypothesis runs derandomized (the same examples every run) with ``FUZZ_EXAMPLES`` examples per
operation and mode; ``GAN_FUZZ_EXAMPLES`` raises it for a longer run.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    response_schema_conformance,
    status_code_conformance,
)

from api.main import app
from api.ratelimit import limiter_for
from gan.config import resolve
from gan.data import Dataset, ring8
from gan.train import train
from tests.conftest import first
from tests.worker.store.helpers import progress
from worker.settings import Settings, get_settings
from worker.store import jobs, keys, leases, series
from worker.store.db import session_scope

FUZZ_EXAMPLES = int(os.environ.get("GAN_FUZZ_EXAMPLES", "25"))
CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance]
KEY = "fuzz-key"


def finished_job(settings: Settings, data: Dataset, preset: str, **overrides: Any) -> str:
    """A succeeded job with real checkpoints (and best.pt where it evaluates)."""
    config = resolve(preset, **overrides)
    with session_scope(settings.database_url) as session:
        owner = keys.key_owner(keys.hash_key(KEY)) if settings.api_keys else ""
        job_id = jobs.create_job(session, preset, config.to_dict(), owner=owner).id
        outcome, claimed = leases.claim(session, job_id, "fuzz", lease_s=60)
        assert outcome == "claimed" and claimed is not None
    train(config, data, settings.checkpoint_dir(job_id))
    with session_scope(settings.database_url) as session:
        trained = jobs.get_job(session, job_id)
        assert trained is not None
        report = progress(config.max_steps, checkpoint_step=config.max_steps)
        series.record_progress(trained, report)
        leases.mark_finished(trained)
    return job_id


# The schema is read from the app once, at collection; the app then serves each operation's
# cases on the settings of ``service`` (open, or with a key), where two finished jobs with real
# checkpoints live: generated job ids are one of them half of the time (else a made-up id: 404).
schema = schemathesis.openapi.from_asgi("/openapi.json", app)
JOBS: list[str] = []


TURNS = itertools.count()  # deterministic, so a derandomized run repeats itself exactly
CHECKPOINTS = (None, "latest", "best", "2", "")  # None: as generated; "": left out


@schemathesis.hook  # before_call hooks are global: this one acts on this schema's cases only
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    """Aim two thirds of the cases at a real job (and cases naming a checkpoint, most of the time
    at one on disk), in every phase: else nearly every case of a job's route is a 404 for an id
    that does not exist. Schemathesis checks the case as changed here."""
    if case.operation.app is not app:
        return
    turn = next(TURNS)
    if case.path_parameters and "job_id" in case.path_parameters and JOBS:
        pick = turn % (len(JOBS) + 1)
        if pick and case.method.upper() != "DELETE":  # a real job deleted is gone for good
            case.path_parameters["job_id"] = JOBS[pick - 1]
    if case.query and "checkpoint" in case.query:
        name = CHECKPOINTS[(turn // 3) % len(CHECKPOINTS)]
        if name == "":
            del case.query["checkpoint"]
        elif name is not None:
            case.query["checkpoint"] = name


def start_service(folder: Path, mnist_dir: Path, mnist: Dataset, api_keys: tuple[str, ...]) -> None:
    """The app on a fresh job store and folders under ``folder``, with two finished jobs."""
    settings = Settings(
        data_dir=mnist_dir,
        database_url=f"sqlite:///{folder / 'gan.db'}",
        broker_url="filesystem://",
        broker_dir=folder / "broker",
        artifacts_dir=folder / "artifacts",
        api_keys=api_keys,
        jobs_per_minute=1_000_000,  # POST /jobs past the limit is a 429 tested elsewhere
    )
    limiter_for.cache_clear()
    app.dependency_overrides[get_settings] = lambda: settings
    JOBS[:] = [
        finished_job(settings, ring8(), "classic", dataset="ring8", max_steps=4,
                     checkpoint_every=2, eval_every=0),
        finished_job(settings, first(mnist, 256), "stable-conditional", width=8, batch_size=16,
                     max_steps=2, checkpoint_every=1, eval_every=0),
    ]  # fmt: skip


@pytest.fixture(scope="module", params=["open", "keyed"])
def service(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    mnist_dir: Path,
    mnist: Dataset,
) -> Iterator[dict[str, str]]:
    """The service without API keys (open, on localhost), then with one; the headers to send."""
    keyed = request.param == "keyed"
    folder = tmp_path_factory.mktemp(f"fuzz-{request.param}")
    start_service(folder, mnist_dir, mnist, (KEY,) if keyed else ())
    try:
        yield {"X-API-Key": KEY} if keyed else {}
    finally:
        app.dependency_overrides.clear()
        limiter_for.cache_clear()


HYPOTHESIS = settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)

# /jobs/{job_id}/events streams until its job finishes. A fuzzed POST /jobs/{id}/resume can put
# a finished job back in the queue, where no worker runs here, so a stream of it would never
# end: it is fuzzed on its own, first (the fixture's jobs are finished then), see below.
EVENTS = "/jobs/{job_id}/events"


def call_and_validate(case: Any, key: dict[str, str]) -> None:
    """Send the case (with the service's key, in place of any the fuzzer made up: a guessed key
    only meets the 401s and 429s that tests/reliability/test_hostile.py checks) and check the
    answer."""
    if key:
        headers = {k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"}
        case.headers = {**headers, **key}
    case.call_and_validate(checks=CHECKS)


@schema.include(path=EVENTS).parametrize()
@HYPOTHESIS
def test_fuzz_the_event_stream_of_finished_jobs(case: Any, service: dict[str, str]) -> None:
    call_and_validate(case, service)


@schema.exclude(path=EVENTS).parametrize()
@HYPOTHESIS
def test_fuzz_every_operation(case: Any, service: dict[str, str]) -> None:
    call_and_validate(case, service)
