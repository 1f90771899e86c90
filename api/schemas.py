"""Request and response bodies.

``JobSpec`` is made from ``gan.config``: one optional field per ``TrainConfig`` field, with its
documentation, its range (``BOUNDS``) or its choices (``CHOICES``), so the API and the trainer
accept exactly the same values, and its form group (``x-group``), which the dashboard's form
follows.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, Strict, create_model, field_validator
from pydantic.config import JsonDict

from gan.config import BOUNDS, CHOICES, DATASETS, FIELD_DOCS, FIELD_GROUPS, FIELD_TYPES, PRESETS
from gan.monitor import WarningCode
from worker.store.states import FINAL_STATES, JobState


class _JobSpecBase(BaseModel):
    """A training job: a preset plus any fields to override. Unknown fields are rejected."""

    model_config = ConfigDict(
        extra="forbid",
        allow_inf_nan=False,
        json_schema_extra={"examples": [{"preset": "stable", "max_steps": 3000}]},
    )

    preset: str = Field(
        "classic",
        description="Named starting point (see GET /presets); the other fields override it.",
        json_schema_extra={"enum": list(PRESETS)},
    )

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, value: str) -> str:
        if value not in PRESETS:
            raise ValueError(f"unknown preset {value!r}; known presets: {', '.join(PRESETS)}")
        return value

    def overrides(self) -> dict[str, Any]:
        """The fields the request set, apart from the preset."""
        return self.model_dump(exclude={"preset"}, exclude_none=True)


def _override_field(name: str) -> tuple[Any, Any]:
    """(type, Field) of the optional override of config field ``name``, with gan's limits and
    its form group (``x-group`` in the schema: where a form shows the field)."""
    doc = FIELD_DOCS[name]
    group: JsonDict = {"x-group": FIELD_GROUPS[name]}
    if name in BOUNDS:
        low, high = BOUNDS[name]
        kind: Any = Annotated[int, Strict()] if FIELD_TYPES[name] is int else float
        doc = f"{doc} ({low:g} to {high:g})"
        return kind | None, Field(None, ge=low, le=high, description=doc, json_schema_extra=group)
    if name in CHOICES:
        return Literal[CHOICES[name]] | None, Field(None, description=doc, json_schema_extra=group)
    assert name == "dataset", name
    doc = f"{doc}: {', '.join(DATASETS)}, or ds-… from POST /datasets"
    return str | None, Field(None, description=doc, json_schema_extra=group)


# One optional field per gan.config.TrainConfig field (a test keeps the two in step).
JobSpec = create_model(  # type: ignore[call-overload]
    "JobSpec", __base__=_JobSpecBase, **{name: _override_field(name) for name in FIELD_DOCS}
)


JOB_STATES_DOC = (
    "queued (waiting for a worker), running, cancelling (asked to stop; its worker checkpoints "
    "and stops at its next progress report), succeeded, failed (error says why), cancelled. "
    "Running jobs whose worker is lost return to queued and resume from their newest checkpoint."
)


class WarningOut(BaseModel):
    code: WarningCode = Field(
        description="What was flagged: diverged (a loss or weight became non-finite and the run "
        "rolled back with lower learning rates), vanishing_gradients (D saturated: D(x) → 1, "
        "D(G(z)) → 0 for a window), mode_collapse (coverage or sample diversity, overall or "
        "within a class, dropped) or "
        "checkpoint_corrupt (the newest checkpoint was truncated or damaged, its checksum did "
        "not match, when the run resumed: it went on from the previous good one, and the step "
        "is that of the corrupt one)."
    )
    step: int = Field(description="The step the condition started.")
    message: str = Field(description="What happened and what to try, for a person.")


class JobOut(BaseModel):
    # Built from the store's progress_snapshot, whose keys must all be fields here (and the
    # required ones all there): a progress field added on one side alone fails, not vanishes.
    model_config = ConfigDict(extra="forbid")

    id: str
    state: JobState = Field(
        description=JOB_STATES_DOC, json_schema_extra={"x-final": list(FINAL_STATES)}
    )
    preset: str
    config: dict[str, Any] = Field(description="The full resolved training config.")
    step: int = Field(description="Generator steps done.")
    total_steps: int = Field(description="The job's max_steps.")
    images_per_sec: float | None = Field(description="Training throughput at the latest report.")
    eta_seconds: float | None = Field(
        description="Seconds to total_steps at the latest throughput, while running."
    )
    d_loss: float | None = Field(description="Discriminator loss at the latest report.")
    g_loss: float | None = Field(description="Generator loss at the latest report.")
    checkpoint_step: int | None = Field(description="Step of the newest checkpoint, if any.")
    metrics: dict[str, float | None] = Field(
        description="The latest quality evaluation (every eval_every steps, on a fixed latent "
        "batch), {} before the first: diversity, plus fid, coverage, … for MNIST-like data, "
        "kl and modes for stacked-mnist, mode_kl and modes for ring8/grid25. null: not finite."
    )
    metrics_step: int | None = Field(description="Step of the latest evaluation, if any.")
    best_metrics: dict[str, float | int | None] | None = Field(
        description="The evaluation of the best checkpoint (the samples' default), with its "
        '"step"; the best has the lowest fid (MNIST-like), kl (stacked-mnist) or mode_kl '
        "(ring8, grid25). null when no best is kept: before the first evaluation, with "
        "eval_every 0, or for datasets without such a metric (cifar10, uploads)."
    )
    warnings: list[WarningOut] = Field(
        description="Every problem flagged so far, oldest first, with the step it started."
    )
    error: str | None = Field(description="Why the job failed, when it did.")
    attempts: int = Field(description="Times a worker has started (or resumed) training it.")
    worker: str | None = Field(description="The worker training it now (host/pid), if any.")
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime
    links: dict[str, str] = Field(
        description="URLs of this job and what goes with it: self, events (Server-Sent Events), "
        "metrics, checkpoints, samples, interpolation, cancel, resume."
    )


class JobList(BaseModel):
    jobs: list[JobOut] = Field(description="Newest first.")
    next_cursor: str | None = Field(
        description="Pass as ?cursor= for the next page; null on the last page."
    )
    links: dict[str, str] = Field(description='"next": the next page\'s URL, when there is one.')


class ResumeIn(BaseModel):
    """What to change when resuming; an empty body (or none) changes nothing."""

    model_config = ConfigDict(extra="forbid")

    max_steps: Annotated[int, Strict()] | None = Field(
        None,
        ge=BOUNDS["max_steps"][0],
        le=BOUNDS["max_steps"][1],
        description="A new total of steps: more than the steps done (needed to train a "
        "succeeded job further).",
    )


class MetricPointOut(BaseModel):
    """One progress report: its step and values, d_loss, g_loss, d_real, d_fake (mean D logits
    on real and fake: D(x) and D(G(z)) before the sigmoid), d_grad_norm and g_grad_norm (L2
    norms of the latest D and G gradients, before clipping) and images_per_sec, and the
    evaluation's metrics (fid, diversity, …) at the steps where one was made. null: not
    finite."""

    model_config = ConfigDict(extra="allow")
    __pydantic_extra__: dict[str, float | None] = Field(init=False)

    step: int


class MetricsOut(BaseModel):
    job_id: str
    total_points: int = Field(
        description="Points after since_step; when more than max_points, the points are picked "
        "evenly from them, the first and the last included."
    )
    points: list[MetricPointOut] = Field(description="Oldest first.")


class PresetOut(BaseModel):
    name: str
    description: str
    config: dict[str, Any] = Field(description="The preset's full training config.")
    by_data_kind: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="What the preset resolves to for each kind of data ('images', 'points'): "
        "a job spec's dataset picks the kind, and the fields it does not set follow it.",
    )
    data_kind_examples: dict[str, str] = Field(
        default_factory=dict,
        description="The dataset each entry of by_data_kind was resolved with.",
    )


class PresetList(BaseModel):
    presets: list[PresetOut]


class CheckpointOut(BaseModel):
    """A checkpoint file of a job."""

    name: str = Field(
        description="What GET /jobs/{id}/checkpoints/{name} and the samples' checkpoint take: "
        'the step number of a step file, or "best" for best.pt.'
    )
    step: int = Field(description="Generator steps done when it was written.")
    created_at: datetime = Field(description="When the file was written (its mtime), UTC.")
    size_bytes: int
    best: bool = Field(
        description="Whether it holds the best evaluation's weights: best.pt itself, or the "
        "step file of best.pt's step."
    )
    metrics: dict[str, float | None] | None = Field(
        description="The quality evaluation made at this step (fid, diversity, …; null: not "
        "finite), from the job's metric time series; null when none was made at this step."
    )
    download: str = Field(description="URL of the file.")


class CheckpointList(BaseModel):
    job_id: str
    checkpoints: list[CheckpointOut] = Field(
        description="Oldest first (by step), best.pt after the step file of its step."
    )
