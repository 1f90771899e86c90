from __future__ import annotations

import shutil
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
def settings(settings: Settings, quick_mnist_judge: Path) -> Settings:
    """The shared settings, with the quick MNIST judge in the worker's judge cache."""
    settings.judges_dir.mkdir(parents=True)
    shutil.copy2(quick_mnist_judge, settings.judges_dir / quick_mnist_judge.name)
    return settings
