"""The web dashboard's files: served by the app itself, without a key, with nothing from elsewhere,
and shipped in the package. (tests/test_browser.py drives it in a real browser.)"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from api.routes.dashboard import DASHBOARD_DIR
from worker.settings import get_settings

ROOT = Path(__file__).resolve().parents[2]
SVG_NAMESPACE = "http://www.w3.org/2000/svg"  # a name, not something fetched
URL = re.compile(r"(?:https?:)?//[\w-]+(?:\.[\w-]+)+[^\s'\"`)]*")


def assets() -> list[Path]:
    return sorted(p for p in DASHBOARD_DIR.iterdir() if p.is_file())


def scripts() -> list[Path]:
    return [p for p in assets() if p.suffix == ".js"]


def imports(script: Path) -> list[str]:
    """The modules a script imports (all relative: ./name.js)."""
    return re.findall(r'^import .* from "\./([\w-]+\.js)";$', script.read_text(), re.M)


def test_the_page_and_its_assets_are_served_without_a_key(client, settings) -> None:
    keyed = settings.model_copy(update={"api_keys": ("secret",)})
    client.app.dependency_overrides[get_settings] = lambda: keyed
    assert client.get("/jobs").status_code == 401  # the API needs the key …
    page = client.get("/")  # … its dashboard does not
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert page.headers["cache-control"] == "no-cache"
    referenced = re.findall(r'(?:src|href)="(/ui/[^"]+)"', page.text)
    assert {"/ui/app.js", "/ui/style.css"} <= set(referenced)
    types = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
    for path in referenced:
        response = client.get(path)
        assert response.status_code == 200, path
        assert response.headers["content-type"].startswith(types[Path(path).suffix]), path
        assert response.content == (DASHBOARD_DIR / Path(path).name).read_bytes()
    for path in scripts():  # and the modules the page's script imports
        response = client.get(f"/ui/{path.name}")
        assert response.status_code == 200, path.name
        assert response.headers["content-type"].startswith("text/javascript"), path.name
        assert response.headers["cache-control"] == "no-cache", path.name
    assert client.get("/ui/no-such-file.js").status_code == 404
    assert client.get("/ui/../main.py").status_code == 404
    assert client.get("/docs").status_code == 200  # the API docs stay where they were
    assert "/" not in client.get("/openapi.json").json()["paths"]


def test_nothing_comes_from_another_host() -> None:
    for path in assets():
        text = path.read_text()
        found = [url for url in URL.findall(text) if url != SVG_NAMESPACE]
        assert not found, f"{path.name} refers to other hosts: {found}"
    page = (DASHBOARD_DIR / "index.html").read_text()
    assert "default-src 'self'" in page  # and the browser is told to refuse anything else


def test_no_api_text_is_inserted_as_html() -> None:
    for path in scripts():
        script = path.read_text()
        for unsafe in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
            assert unsafe not in script, f"{path.name}: {unsafe}"


def test_the_script_is_small_modules_the_page_loads() -> None:
    """index.html loads app.js as a module, which imports the others (no build step): every
    script is reached from it, and none is long."""
    page = (DASHBOARD_DIR / "index.html").read_text()
    assert '<script type="module" src="/ui/app.js"></script>' in page
    reached, todo = set(), ["app.js"]
    while todo:
        name = todo.pop()
        if name not in reached:
            reached.add(name)
            todo += imports(DASHBOARD_DIR / name)
    assert reached == {p.name for p in scripts()}
    for path in scripts():
        assert len(path.read_text().splitlines()) <= 400, path.name


def test_the_assets_ship_in_the_package(tmp_path: Path) -> None:
    """`pip install .` (the Dockerfile's) installs every file of the dashboard."""
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    for package in ("api", "worker", "gan"):
        caches = shutil.ignore_patterns("__pycache__")
        shutil.copytree(ROOT / package, source / package, ignore=caches)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path / "dist"), str(source)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    shipped = set(zipfile.ZipFile(wheel).namelist())
    for path in assets():
        assert f"api/dashboard/{path.name}" in shipped, f"{path.name} is not in the wheel"
