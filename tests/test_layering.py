"""Imports flow one way: api → worker → gan. And the API queues jobs without importing torch."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def imported_packages(package: str) -> set[tuple[str, str]]:
    """(file, top-level package) for every import in ``package``."""
    found = set()
    for path in (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {(path.name, alias.name.split(".")[0]) for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add((path.name, node.module.split(".")[0]))
    return found


@pytest.mark.parametrize(
    ("package", "forbidden"), [("gan", {"api", "worker"}), ("worker", {"api"})]
)
def test_imports_flow_one_way(package, forbidden):
    imports = imported_packages(package)
    assert imports, "no imports found: the scan is broken"
    assert {(f, p) for f, p in imports if p in forbidden} == set()


def test_gan_needs_only_torch_numpy_and_pillow():
    """gan/ must run on the GPU machine, which has torch but no fastapi, celery or pydantic."""
    third_party = {p for _, p in imported_packages("gan")} - set(sys.stdlib_module_names)
    assert third_party <= {"gan", "torch", "torchvision", "numpy", "PIL"}, third_party


def test_api_queues_a_job_without_importing_torch(tmp_path):
    script = """
import sys
from fastapi.testclient import TestClient
from api.main import app
response = TestClient(app).post("/jobs", json={"max_steps": 5})
assert response.status_code == 202, response.text
assert "torch" not in sys.modules, "the API imported torch to queue a job"
"""
    env = {
        "PATH": "/usr/bin:/bin",
        "GAN_DATABASE_URL": f"sqlite:///{tmp_path / 'gan.db'}",
        "GAN_BROKER_DIR": str(tmp_path / "broker"),
        "GAN_ARTIFACTS_DIR": str(tmp_path / "artifacts"),
    }
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
