from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import cache_judge
from worker.settings import Settings


@pytest.fixture
def database_url(sqlite_or_postgres: str) -> str:
    """Every worker test runs on both kinds of job store."""
    return sqlite_or_postgres


@pytest.fixture
def settings(settings: Settings, quick_mnist_judge: Path) -> Settings:
    """The shared settings, with the quick MNIST judge in the worker's judge cache."""
    cache_judge(quick_mnist_judge, settings)
    return settings
