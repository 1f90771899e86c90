"""Request and response bodies.

``JobSpec`` is made from ``gan.config``: one optional field per ``TrainConfig`` field, with its
documentation, its range (``BOUNDS``) or its choices (``CHOICES``), so the API and the trainer
accept exactly the same values, and its form group (``x-group``), which the dashboard's form
follows.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AnyHttpUrl,
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    create_model,
    field_validator,
)
from pydantic.config import JsonDict

from gan.config import BOUNDS, CHOICES, DATASETS, FIELD_DOCS, FIELD_GROUPS, FIELD_TYPES, PRESETS
from gan.monitor import WarningCode
from worker.store.states import FINAL_STATES, JobState

WebhookEvent = Literal["state", "checkpoint", "progress"]
WEBHOOK_EVENTS: tuple[WebhookEvent, ...] = ("state", "checkpoint", "progress")


class WebhookSpec(BaseModel):
    """Where a job's events are POSTed as they happen, signed (README: Webhooks). A job spec
    (and anything that makes jobs) takes it as ``webhook``."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    url: AnyHttpUrl = Field(
        description="An http or https URL. With API keys, a host that resolves to a loopback, "
        "private, link-local or reserved address is refused unless the service allows them "
        "(GAN_WEBHOOK_ALLOW_PRIVATE).",
        json_schema_extra={"examples": ["https://example.com/gan-hook"]},
    )
    events: list[WebhookEvent] = Field(
        default_factory=lambda: list(WEBHOOK_EVENTS),
        min_length=1,
        max_length=len(WEBHOOK_EVENTS),
        description="The events to send: state (every change of state), checkpoint (each new "
        "checkpoint), progress (progress reports, at most one every progress_every_s). "
        "Default: all three.",
    )
    progress_every_s: float = Field(
        30.0, ge=1, le=86400, description="Least seconds between two progress deliveries."
    )

    @field_validator("url")
    @classmethod
    def _short_url(cls, value: AnyHttpUrl) -> AnyHttpUrl:
        if len(str(value)) > 2000:
            raise ValueError("the URL is longer than 2000 characters")
        return value

    @field_validator("events")
    @classmethod
    def _distinct(cls, value: list[WebhookEvent]) -> list[WebhookEvent]:
        if len(set(value)) != len(value):
            raise ValueError("each event at most once")
        return value


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

    webhook: WebhookSpec | None = Field(
        None,
        description="POST the job's events to this URL as they happen, signed (README: "
        "Webhooks); GET /jobs/{id}/webhooks shows the deliveries.",
    )

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, value: str) -> str:
        if value not in PRESETS:
            raise ValueError(f"unknown preset {value!r}; known presets: {', '.join(PRESETS)}")
        return value

    def overrides(self) -> dict[str, Any]:
        """The config fields the request set (not the preset, nor the webhook)."""
        return self.model_dump(exclude={"preset", "webhook"}, exclude_none=True)


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
    "and stops within a second and a step), succeeded, failed (error says why), cancelled. "
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
    sweep_id: str | None = Field(description="The sweep that made the job (POST /sweeps), if any.")
    links: dict[str, str] = Field(
        description="URLs of this job and what goes with it: self, events (Server-Sent Events), "
        "metrics, checkpoints, samples, interpolation, cancel, resume; sweep, for a job of one."
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


class SlotOut(BaseModel):
    """A training slot: a worker process that trains one job at a time on one device."""

    id: str = Field(description="host/pid: what a job's `worker` field names.")
    slot: int = Field(description="Its index among its worker's slots.")
    device: str = Field(description='"cuda:<GPU id on the host>", "cuda" or "cpu".')
    threads: int = Field(description="Its CPU threads.")
    busy: bool = Field(description="Whether it trains a job now (yours or another key's).")
    job_id: str | None = Field(description="The job it trains, when that job is yours.")
    seen_at: datetime = Field(description="Its latest heartbeat, UTC.")


class WorkerOut(BaseModel):
    """A `gan worker` and its slots."""

    name: str = Field(description="host/pid of the `gan worker` command.")
    host: str
    slots: list[SlotOut] = Field(description="By index.")
    busy: int = Field(description="Its slots that train a job now.")


class WorkerList(BaseModel):
    workers: list[WorkerOut] = Field(
        description="Live workers: those with a slot heard from within a lease (GAN_LEASE_S)."
    )
    slots_total: int
    slots_busy: int


class WebhookDeliveryOut(BaseModel):
    """One event sent, or to send, to a job's webhook."""

    id: int = Field(description="The delivery's id (its X-GAN-Delivery header).")
    event_id: int = Field(description="The event's id (as in GET /jobs/{id}/events).")
    event: WebhookEvent
    state: Literal["pending", "delivered", "failed"] = Field(
        description="pending (to be tried at next_attempt_at), delivered (a 2xx answer) or "
        "failed (its last attempt failed, or its address was refused)."
    )
    attempts: int = Field(description="Attempts made so far.")
    status_codes: list[int | None] = Field(
        description="The HTTP status of each finished attempt, in order (null: no answer). "
        "An attempt whose worker died before it finished has none: it is tried again."
    )
    last_error: str | None = Field(description="Why the latest attempt failed, if it did.")
    next_attempt_at: datetime | None = Field(description="When it is tried next, if pending.")
    created_at: datetime
    delivered_at: datetime | None


class WebhookOut(BaseModel):
    """A job's webhook, as its spec gave it (with the defaults filled in)."""

    url: str
    events: list[WebhookEvent]
    progress_every_s: float


class WebhooksOut(BaseModel):
    """A job's webhook and its deliveries."""

    job_id: str
    webhook: WebhookOut | None = Field(description="The job's webhook; null: it has none.")
    deliveries: list[WebhookDeliveryOut] = Field(
        description="Its newest 1000 deliveries, oldest first."
    )


SWEEP_FIELDS_DOC = (
    "Any field of a job spec (see POST /jobs), preset included; a value must be one the field "
    "takes in POST /jobs."
)


class SweepIn(BaseModel):
    """A sweep: a base job spec and either a grid (every combination of the values given for
    each field) or a list of points (each a set of fields to override); one job per point."""

    model_config = ConfigDict(
        extra="forbid",
        allow_inf_nan=False,
        json_schema_extra={
            "examples": [
                {
                    "base": {"preset": "stable", "max_steps": 3000},
                    "grid": {"seed": [0, 1, 2], "lr_g": [1e-4, 2e-4]},
                },
                {"base": {"dataset": "ring8", "arch": "mlp"}, "points": [{"loss": "hinge"}]},
            ]
        },
    )

    base: JobSpec = Field(
        default_factory=lambda: JobSpec(),
        description="The job spec every point starts from (as POST /jobs takes it); its "
        "`webhook`, if any, gets the events of every job of the sweep.",
    )
    grid: dict[str, list[Any]] | None = Field(
        None,
        description="Field → the values to try: one job per combination (the cartesian "
        f"product), in order, the last field varying fastest. {SWEEP_FIELDS_DOC}",
    )
    points: list[dict[str, Any]] | None = Field(
        None,
        description="Instead of a grid: one job per item, the fields it overrides. "
        + SWEEP_FIELDS_DOC,
    )


class SweepJobOut(BaseModel):
    """A job of a sweep and where it ranks."""

    rank: int | None = Field(
        description="1 for the best job (the lowest best metric), 2 for the next, …; null for "
        "a job without a best evaluation yet (listed after those with one)."
    )
    point: dict[str, Any] = Field(description="The fields this point set over the base.")
    metric: str | None = Field(
        description="The metric it is ranked by: fid (MNIST-like data), kl (stacked-mnist) or "
        "mode_kl (ring8, grid25); null before its first evaluation, or for datasets without one."
    )
    value: float | None = Field(description="The job's best value of that metric.")
    job: JobOut


class SweepBestOut(BaseModel):
    job_id: str
    metric: str
    value: float


class SweepSummaryOut(BaseModel):
    id: str
    created_at: datetime
    spec: dict[str, Any] = Field(description="What was asked for: base, and grid or points.")
    size: int = Field(description="Jobs the sweep has (those deleted alone are not counted).")
    states: dict[str, int] = Field(description="How many of its jobs are in each state.")
    best: SweepBestOut | None = Field(description="Its best job so far, if any has a metric.")
    links: dict[str, str] = Field(description="URLs: self, cancel.")


class SweepOut(SweepSummaryOut):
    jobs: list[SweepJobOut] = Field(
        description="Its jobs, best first (ranked by metric), then those without one in the "
        "order of their points."
    )


class SweepList(BaseModel):
    sweeps: list[SweepSummaryOut] = Field(description="Newest first.")
