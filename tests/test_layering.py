"""Imports flow one way: api → worker → gan, and the API queues jobs without importing torch.
And the code stays readable: no function over 80 lines, no import cycle inside a package, no
script of the dashboard over 400 lines; tests/ and bench/ share harness/, not each other."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("api", "worker", "gan")
MAX_FUNCTION_LINES = 80
MAX_SCRIPT_LINES = 400


def imported_packages(package: str) -> set[tuple[str, str]]:
    """(file, top-level package) for every import in ``package``."""
    found = set()
    for path in (ROOT / package).rglob("*.py"):
        file = path.relative_to(ROOT).as_posix()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {(file, alias.name.split(".")[0]) for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add((file, node.module.split(".")[0]))
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


@pytest.mark.parametrize(("package", "forbidden"), [("bench", "tests"), ("tests", "bench")])
def test_tests_and_bench_do_not_import_each_other(package, forbidden):
    """What both need (the service as processes, the load scenarios) lives in harness/."""
    imports = imported_packages(package)
    assert imports, "no imports found: the scan is broken"
    offenders = sorted(file for file, imported in imports if imported == forbidden)
    assert not offenders, (
        f"{package}/ imports {forbidden}/ in {', '.join(offenders)}: move what both need to "
        "harness/ and import it from there"
    )


@pytest.mark.parametrize("package", PACKAGES)
def test_no_function_is_over_80_lines(package):
    """Counted from the ``def`` line to the function's last line, decorators excluded; a nested
    function counts on its own too (its lines also count for the function around it)."""
    too_long = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    where = f"{path.relative_to(ROOT)}:{node.lineno}"
                    too_long.append(f"{where} {node.name}(): {lines} lines")
    assert not too_long, (
        f"functions over {MAX_FUNCTION_LINES} lines; split each into named steps:\n  "
        + "\n  ".join(too_long)
    )


def module_name(path: Path) -> str:
    """``api/routes/jobs.py`` → ``api.routes.jobs``; ``api/routes/__init__.py`` → ``api.routes``."""
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_within(package: str) -> dict[str, set[str]]:
    """Each module of ``package`` → the modules of the same package it imports.

    Every import counts wherever it is: at the top, inside a function (it runs later, but the
    two modules still depend on each other) and under ``if TYPE_CHECKING:`` (a type from a
    module is a dependency on it; hiding one there must not hide a cycle). ``from a.b import c``
    is an import of the module ``a.b.c`` when there is one, else of ``a.b``. Importing a
    submodule also runs its package's ``__init__``; that is not counted, else every module
    imported by its own package's ``__init__`` would be in a cycle."""
    modules = {module_name(path): path for path in (ROOT / package).rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        here = name if path.name == "__init__.py" else name.rpartition(".")[0]
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from the module's package, one level up per extra dot
                    parent = here.rsplit(".", node.level - 1)[0]
                    base = f"{parent}.{base}" if base else parent
                for alias in node.names:
                    submodule = f"{base}.{alias.name}"
                    imported.add(submodule if submodule in modules else base)
        graph[name] = {module for module in imported if module in modules and module != name}
    return graph


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    """The modules ``start`` imports, directly or through others."""
    seen, todo = set(), list(graph[start])
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo.extend(graph[module])
    return seen


@pytest.mark.parametrize("package", PACKAGES)
def test_no_import_cycle_inside_a_package(package):
    graph = imports_within(package)
    assert len(graph) > 1, "no modules found: the scan is broken"
    reach = {module: reachable(graph, module) for module in graph}
    cycles = {  # the modules that reach each other: one strongly connected group per cycle
        frozenset({module} | {other for other in reach[module] if module in reach[other]})
        for module in graph
        if module in reach[module]
    }
    found = [
        "; ".join(f"{a} imports {b}" for a in sorted(cycle) for b in sorted(graph[a] & cycle))
        for cycle in cycles
    ]
    assert not found, (
        f"import cycles in {package}/; break each (move what both sides need into a module "
        "of its own that imports neither, or pass it in):\n  " + "\n  ".join(sorted(found))
    )


def test_no_script_under_api_is_over_400_lines():
    scripts = sorted((ROOT / "api").rglob("*.js"))
    assert scripts, "no scripts found: the scan is broken"
    too_long = [
        f"{path.relative_to(ROOT)}: {lines} lines"
        for path in scripts
        if (lines := len(path.read_text().splitlines())) > MAX_SCRIPT_LINES
    ]
    assert not too_long, (
        f"scripts over {MAX_SCRIPT_LINES} lines; split each into modules of one concern "
        "each:\n  " + "\n  ".join(too_long)
    )
