from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.services import Service


@pytest.fixture(scope="session")
def live_service(tmp_path_factory: pytest.TempPathFactory, mnist_dir: Path) -> Iterator[Service]:
    """A real `gan serve` (API and one worker, the embedded defaults) in a folder of its own,
    shared by the tests of the Python client and the client commands."""
    service = Service(tmp_path_factory.mktemp("live-service"), {"GAN_DATA_DIR": str(mnist_dir)})
    service.serve()
    yield service
    service.stop()
