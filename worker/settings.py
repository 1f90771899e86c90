"""Service settings, read from ``GAN_*`` environment variables (and a ``.env`` file).

Shared by the API and the worker, so it lives here: the API may import ``worker``, never the
reverse. Defaults are the embedded set-up that needs no server: a SQLite job store and kombu's
filesystem broker, both under ``var/``.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="GAN_", env_file=".env", extra="ignore", frozen=True
    )

    # Folder with the datasets' IDX files (torchvision downloads into it where the network allows).
    data_dir: Path = Path("data")
    # SQLAlchemy URL of the job store: SQLite by default, e.g. postgresql+psycopg://u@host/db.
    database_url: str = "sqlite:///var/gan.db"
    # Celery broker: "filesystem://" (embedded, needs no server) or e.g. redis://127.0.0.1:6379/0.
    broker_url: str = "filesystem://"
    # Folder the filesystem broker keeps its messages in (unused with other brokers).
    broker_dir: Path = Path("var/broker")
    # Celery queue the training tasks go to.
    task_queue: str = "gan-train"
    # Root of everything a job writes: <artifacts_dir>/jobs/<id>/checkpoints/step-*.pt.
    artifacts_dir: Path = Path("var/artifacts")
    # Where `gan serve` binds the API.
    host: str = "127.0.0.1"
    port: int = 8000

    @property
    def datasets_dir(self) -> Path:
        """Uploaded datasets: <artifacts_dir>/datasets/<id>/{images,labels}.npy, meta.json."""
        return self.artifacts_dir / "datasets"

    @property
    def judges_dir(self) -> Path:
        """Cached judges the evaluations score samples with: <artifacts_dir>/judges/judge-*.pt."""
        return self.artifacts_dir / "judges"

    def job_dir(self, job_id: str) -> Path:
        return self.artifacts_dir / "jobs" / job_id

    def checkpoint_dir(self, job_id: str) -> Path:
        return self.job_dir(job_id) / "checkpoints"


@lru_cache
def get_settings() -> Settings:
    return Settings()
