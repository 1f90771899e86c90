from __future__ import annotations

from pathlib import Path

import pytest

from worker.settings import Settings


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty job store: a SQLite file, or a new schema in the real PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'gan.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def settings(tmp_path: Path, mnist_dir: Path, database_url: str) -> Settings:
    return Settings(
        data_dir=mnist_dir,
        database_url=database_url,
        broker_url="filesystem://",
        broker_dir=tmp_path / "broker",
        artifacts_dir=tmp_path / "artifacts",
    )
