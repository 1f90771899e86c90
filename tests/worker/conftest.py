from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from worker.settings import Settings


@pytest.fixture
def database_url(sqlite_or_postgres: str) -> str:
    """Every worker test runs on both kinds of job store."""
    return sqlite_or_postgres


@pytest.fixture
def settings(settings: Settings, quick_mnist_judge: Path) -> Settings:
    """The shared settings, with the quick MNIST judge in the worker's judge cache."""
    settings.judges_dir.mkdir(parents=True)
    shutil.copy2(quick_mnist_judge, settings.judges_dir / quick_mnist_judge.name)
    return settings
