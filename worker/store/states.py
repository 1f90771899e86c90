"""A job's states: the one definition, which the store, the API's schema, the Python client and
the dashboard (through the OpenAPI schema) all take. How a job moves between them: the package's
docstring (``worker.store``). Plain strings with no imports beyond typing, so that a client reads
them without loading the store's database code."""

from __future__ import annotations

from typing import Final, Literal, get_args

JobState = Literal["queued", "running", "cancelling", "succeeded", "failed", "cancelled"]
STATES: Final[tuple[JobState, ...]] = get_args(JobState)

QUEUED: Final = "queued"  # waiting for a worker
RUNNING: Final = "running"  # a worker holds its lease and trains it
CANCELLING: Final = "cancelling"  # asked to stop: its worker checkpoints and stops
SUCCEEDED: Final = "succeeded"
FAILED: Final = "failed"  # the job's error says why
CANCELLED: Final = "cancelled"

FINAL_STATES: Final[tuple[JobState, ...]] = (SUCCEEDED, FAILED, CANCELLED)  # no worker holds it
LEASED_STATES: Final[tuple[JobState, ...]] = (RUNNING, CANCELLING)  # a worker holds the lease
