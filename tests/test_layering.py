"""Imports flow one way: api → worker → gan, with no cycle inside a package. And the API queues
jobs without importing torch."""

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


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(package: str) -> dict[str, set[str]]:
    """{module: the modules of ``package`` it imports}, read from every import statement in it
    (those inside functions too: they run as well). Importing ``a.b.c`` first runs ``a`` and
    ``a.b``, so those count too; so does ``c`` of ``from a.b import c`` when it is a module."""
    paths = {module_name(path): path for path in (ROOT / package).rglob("*.py")}
    graph = {}
    for name, path in paths.items():
        here = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        named = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                named |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                # A relative import starts from this module's package, level - 1 packages up.
                parent = here[: len(here) + 1 - node.level] if node.level else []
                base = ".".join([*parent, *([node.module] if node.module else [])])
                named |= {base} | {f"{base}.{alias.name}" for alias in node.names}
        parts = [module.split(".") for module in named]
        run = {".".join(p[:n]) for p in parts for n in range(1, len(p) + 1)}
        graph[name] = {module for module in run if module in paths and module != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One cycle of ``graph``, as its modules in order and the first again at the end; empty
    when there is none."""
    done: set[str] = set()
    path: list[str] = []

    def visit(module: str) -> list[str]:
        if module in path:
            return [*path[path.index(module) :], module]
        if module in done:
            return []
        path.append(module)
        for imported in sorted(graph[module]):
            if cycle := visit(imported):
                return cycle
        path.pop()
        done.add(module)
        return []

    return next((cycle for module in sorted(graph) if (cycle := visit(module))), [])


@pytest.mark.parametrize("package", ["api", "worker", "gan"])
def test_no_import_cycle_inside_a_package(package):
    graph = import_graph(package)
    assert any(graph.values()), "no imports between its modules found: the scan is broken"
    assert find_cycle(graph) == []


def test_the_cycle_check_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) == []


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
