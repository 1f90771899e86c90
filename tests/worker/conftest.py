from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from worker.settings import Settings

if TYPE_CHECKING:
    from gan.data import Dataset


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty job store: a SQLite file, or a new schema in the real PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'gan.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture(scope="session")
def quick_mnist_judge(tmp_path_factory: pytest.TempPathFactory, mnist: Dataset) -> Path:
    """A real MNIST judge trained for a few steps (the worker's own takes a minute): good enough
    to score samples, so evaluations run their whole course quickly."""
    from gan.judge import save_judge, train_judge

    judge, _ = train_judge(mnist.data[:2000], mnist.labels[:2000], steps=20, num_classes=10)
    judge.dataset = "mnist"
    path = tmp_path_factory.mktemp("judges") / "judge-mnist.pt"
    save_judge(judge, path)
    return path


@pytest.fixture
def settings(settings: Settings, quick_mnist_judge: Path) -> Settings:
    """The shared settings, with the quick MNIST judge in the worker's judge cache."""
    settings.judges_dir.mkdir(parents=True)
    shutil.copy2(quick_mnist_judge, settings.judges_dir / quick_mnist_judge.name)
    return settings
