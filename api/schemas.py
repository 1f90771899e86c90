"""Request and response bodies.

``JobSpec`` has one optional field per ``gan.config.TrainConfig`` field (a test keeps the two in
step); the numeric ranges come from ``gan.config.BOUNDS``, so the API and the trainer accept
exactly the same values.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from gan.config import BOUNDS, PRESETS, Arch, Dataset, Device, Loss


def _bounded(name: str, description: str) -> Any:
    low, high = BOUNDS[name]
    return Field(None, ge=low, le=high, description=f"{description} ({low:g} to {high:g})")


class JobSpec(BaseModel):
    """A training job: a preset plus any fields to override. Unknown fields are rejected."""

    model_config = ConfigDict(
        extra="forbid",
        allow_inf_nan=False,
        json_schema_extra={"examples": [{"preset": "classic", "max_steps": 2000}]},
    )

    preset: str = Field(
        "classic",
        description="Named starting point; the other fields override it.",
        json_schema_extra={"enum": list(PRESETS)},
    )
    dataset: Dataset | None = Field(None, description="Dataset to train on.")
    arch: Arch | None = Field(None, description="Generator and discriminator architecture.")
    latent_dim: int | None = _bounded("latent_dim", "Size of the noise vector z")
    loss: Loss | None = Field(None, description="Adversarial loss.")
    batch_size: int | None = _bounded("batch_size", "Real images per discriminator step")
    lr_g: float | None = _bounded("lr_g", "Adam learning rate of the generator")
    lr_d: float | None = _bounded("lr_d", "Adam learning rate of the discriminator")
    beta1: float | None = _bounded("beta1", "Adam beta1 for both networks")
    beta2: float | None = _bounded("beta2", "Adam beta2 for both networks")
    max_steps: int | None = _bounded("max_steps", "Training budget in generator steps")
    seed: int | None = _bounded("seed", "Seed of weights, noise and data order")
    log_every: int | None = _bounded("log_every", "Steps between progress updates")
    checkpoint_every: int | None = _bounded("checkpoint_every", "Steps between checkpoints")
    keep_checkpoints: int | None = _bounded("keep_checkpoints", "Newest checkpoints kept")
    device: Device | None = Field(None, description="Training device; auto picks a GPU if any.")

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, value: str) -> str:
        if value not in PRESETS:
            raise ValueError(f"unknown preset {value!r}; known presets: {', '.join(PRESETS)}")
        return value

    def overrides(self) -> dict[str, Any]:
        """The fields the request set, apart from the preset."""
        return self.model_dump(exclude={"preset"}, exclude_none=True)


JobState = Literal["queued", "running", "succeeded", "failed"]


class JobOut(BaseModel):
    id: str
    state: JobState
    preset: str
    config: dict[str, Any] = Field(description="The full resolved training config.")
    step: int = Field(description="Generator steps done.")
    total_steps: int = Field(description="The job's max_steps.")
    images_per_sec: float | None = Field(description="Training throughput at the latest report.")
    d_loss: float | None = Field(description="Discriminator loss at the latest report.")
    g_loss: float | None = Field(description="Generator loss at the latest report.")
    checkpoint_step: int | None = Field(description="Step of the newest checkpoint, if any.")
    error: str | None = Field(description="Why the job failed, when it did.")
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime
    links: dict[str, str] = Field(description="URLs of this job and its samples.")


class JobList(BaseModel):
    jobs: list[JobOut] = Field(description="Newest first.")
