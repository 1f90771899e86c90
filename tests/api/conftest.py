from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.main import app
from worker.settings import Settings, get_settings


@pytest.fixture
def settings(tmp_path: Path, mnist_dir: Path) -> Settings:
    """Embedded defaults in a fresh folder: SQLite store and filesystem broker."""
    return Settings(
        data_dir=mnist_dir,
        database_url=f"sqlite:///{tmp_path / 'gan.db'}",
        broker_url="filesystem://",
        broker_dir=tmp_path / "broker",
        artifacts_dir=tmp_path / "artifacts",
    )


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    app.dependency_overrides[get_settings] = lambda: settings
    try:
        with TestClient(app) as client:
            yield client
    finally:
        app.dependency_overrides.clear()
