"""The web dashboard in a real browser: headless Chromium (Debian's `chromium`), driven by
Playwright, against real `gan serve` processes with a worker.

Skipped without /usr/bin/chromium or the playwright package, except under `.ci/run`
(GAN_REQUIRE_SERVICES=1), which installs both and makes their absence a failure.
"""

from __future__ import annotations

import io
import re
import subprocess
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_args

import httpx
import pytest
from PIL import Image

from api.routes.dashboard import DASHBOARD_DIR
from api.schemas import JobState
from gan.config import DATASETS, GROUPS
from harness.services import Service
from tests.conftest import REQUIRE_SERVICES

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

pytestmark = pytest.mark.e2e
CHROMIUM = Path("/usr/bin/chromium")
# As root, without a display, on a machine whose network reaches nothing but this one.
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
JOB_PAGE = re.compile(r"#/jobs/[0-9a-f-]{36}$")
TRAINING_S = 240
# One CPU thread a worker: with torch's default (a thread per core) its thread pool spins against
# the browser, the API and the test on a small machine, and a job's time swings manyfold.
ONE_THREAD = {"OMP_NUM_THREADS": "1"}


def require_browser() -> None:
    missing = []
    if not CHROMIUM.is_file():
        missing.append(f"{CHROMIUM} (apt-get install chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("the playwright package (pip install playwright)")
    if missing:
        message = "the browser test needs " + " and ".join(missing)
        if REQUIRE_SERVICES:
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    context.close()
    assert not errors, f"the page raised: {errors}"


def submit_through_the_form(page: Page, fields: dict[str, Any]) -> str:
    """Fill the New job form (preset classic) and submit it; the job's id, from the job page
    the dashboard goes to."""
    page.locator("a[data-nav=new]").click()
    page.select_option("#field-preset", "classic")
    for name, value in fields.items():
        page.fill(f"#field-{name}", str(value))
    page.locator("#job-form button[type=submit]").click()
    page.wait_for_url(JOB_PAGE)
    return page.url.rsplit("/", 1)[1]


def wait_until_succeeded(page: Page) -> None:
    from playwright.sync_api import expect

    state = page.locator(".page-head .badge")
    expect(state).to_have_attribute("data-state", re.compile("queued|running"))
    expect(state).to_have_attribute("data-state", "succeeded", timeout=TRAINING_S * 1000)


def resume_and_reload(
    page: Page, service: Service, worker: subprocess.Popen[bytes], steps: int
) -> None:
    """Stop the worker, resume the job of this page to ``steps``, open the page anew while the
    job waits in the queue (its history ends with the first run's end), then start a worker and
    follow the job there until it succeeds."""
    from playwright.sync_api import expect

    worker.terminate()
    assert worker.wait(timeout=60) == 0
    page.fill(".steps-input", str(steps))
    page.locator("button[data-action=resume]").click()
    expect(page.locator(".page-head .badge")).to_have_attribute("data-state", "queued")
    page.reload()
    expect(page.locator(".page-head .badge")).to_have_attribute("data-state", "queued")
    service.start("worker")
    wait_until_succeeded(page)
    expect(page.locator("[data-field=step]")).to_have_text(f"{steps} / {steps} steps")


def sample_grid_width(page: Page) -> int:
    """naturalWidth of the sample grid, once an image is shown."""
    page.wait_for_function(
        "() => { const img = document.getElementById('sample-grid');"
        " return img && !img.hidden && img.complete && img.naturalWidth > 0 }"
    )
    width: int = page.eval_on_selector("#sample-grid", "img => img.naturalWidth")
    return width


def screenshot(page: Page, path: Path) -> None:
    """The whole page, from the top (the sticky header stays where it belongs)."""
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(path), full_page=True)


def test_submit_and_follow_a_job(tmp_path: Path, mnist_dir: Path, page: Page) -> None:
    from playwright.sync_api import expect

    service = Service(tmp_path, {"GAN_DATA_DIR": str(mnist_dir), **ONE_THREAD})
    try:
        service.serve("--no-worker")
        worker = service.start("worker")
        page.goto(f"{service.url}/")
        expect(page.get_by_text("No jobs yet.")).to_be_visible()

        # A bad value is refused by the service; its message appears beside the field.
        page.locator("a[data-nav=new]").click()
        page.fill("#field-max_steps", "-1")
        page.locator("#job-form button[type=submit]").click()
        expect(page.locator("#error-max_steps")).to_contain_text("greater than or equal to 1")
        expect(page.locator("#field-max_steps")).to_have_attribute("aria-invalid", "true")
        assert page.url.endswith("#/new")

        spec = {"max_steps": 100, "checkpoint_every": 25, "keep_checkpoints": 10,
                "log_every": 5, "eval_every": 0}  # fmt: skip
        job_id = submit_through_the_form(page, spec)
        wait_until_succeeded(page)  # followed live, without reloading
        seen = page.locator(".mode").get_attribute("data-seen") or ""
        assert "live" in seen and "polling" not in seen, seen  # EventSource, no fallback

        page.wait_for_function(  # the loss chart: a line of the 20 reports of each loss
            "() => [...document.querySelectorAll('svg[data-chart=\"losses\"] path.series')]"
            ".filter(p => (p.getAttribute('d').match(/L/g) || []).length >= 10).length === 2"
        )
        expect(page.locator(".slider-label")).to_have_text("step 100")
        assert sample_grid_width(page) == 242  # 8x8 digits of 28 pixels, 2-pixel borders
        expect(page.locator(".slider")).to_have_attribute("max", "3")  # steps 25 … 100
        newest = page.eval_on_selector("#sample-grid", "img => img.src")
        page.locator(".slider").fill("0")  # back to the first checkpoint
        expect(page.locator(".slider-label")).to_have_text("step 25")
        page.wait_for_function(f"() => document.getElementById('sample-grid').src !== '{newest}'")
        assert sample_grid_width(page) == 242
        expect(page.locator(".spec summary")).to_contain_text("5 fields overridden")
        screenshot(page, tmp_path / "dashboard-job.png")

        # Train it further, on a page that cannot get the event stream: it polls instead.
        page.route(re.compile(r"/events"), lambda route: route.abort())
        resume_and_reload(page, service, worker, 130)
        seen = page.locator(".mode").get_attribute("data-seen") or ""
        assert "polling" in seen, seen
        expect(page.locator(".slider-label")).to_have_text("step 130")

        page.locator("a[data-nav=jobs]").click()
        row = page.locator(f"tr[data-job='{job_id}']")
        expect(row.locator(".badge")).to_have_text("succeeded")
        expect(row).to_contain_text("130 / 130")
        screenshot(page, tmp_path / "dashboard-jobs.png")
    finally:
        service.stop()


def test_the_dashboard_with_an_api_key(tmp_path: Path, mnist_dir: Path, page: Page) -> None:
    from playwright.sync_api import expect

    env = {"GAN_DATA_DIR": str(mnist_dir), "GAN_API_KEYS": "browser-key", **ONE_THREAD}
    service = Service(tmp_path, env)
    try:
        service.serve("--no-worker")
        worker = service.start("worker")
        page.goto(f"{service.url}/#/jobs")
        expect(page.locator("#banner")).to_contain_text("needs an API key")
        page.fill("#apikey", "browser-key")
        page.locator("#keyform button").click()
        expect(page.get_by_text("No jobs yet.")).to_be_visible()
        assert page.evaluate("localStorage.getItem('gan.apiKey')") == "browser-key"

        spec = {"max_steps": 60, "checkpoint_every": 20, "log_every": 10, "eval_every": 0}
        submit_through_the_form(page, spec)
        wait_until_succeeded(page)
        seen = page.locator(".mode").get_attribute("data-seen") or ""
        assert "live" in seen and "polling" not in seen, seen  # the stream read with the key
        assert sample_grid_width(page) == 242  # fetched with the key, shown from a blob
        assert page.eval_on_selector("#sample-grid", "img => img.src").startswith("blob:")
        screenshot(page, tmp_path / "dashboard-keyed.png")

        # Train it further; the page opened meanwhile replays the first run's end, and goes on.
        resume_and_reload(page, service, worker, 100)
        seen = page.locator(".mode").get_attribute("data-seen") or ""
        assert "live" in seen and "polling" not in seen, seen

        # The capacity: the second worker's one slot (the first one's left with it), idle now.
        page.locator("a[data-nav=workers]").click()
        expect(page.locator("[data-field=slots]")).to_have_text("0 of 1 slots busy")
        expect(page.locator("tr.slot-row")).to_have_count(1)
        expect(page.locator("tr.slot-row")).to_contain_text("idle")
        expect(page.locator("tr.slot-row")).to_contain_text("cpu")
    finally:
        service.stop()


def digits_zip() -> bytes:
    """A zip of two classes of tiny greyscale images, for POST /datasets."""
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        for name, shade in (("zero/a.png", 0), ("one/b.png", 255)):
            image = io.BytesIO()
            Image.new("L", (20, 20), shade).save(image, format="PNG")
            z.writestr(name, image.getvalue())
    return archive.getvalue()


def test_what_the_dashboard_offers_comes_from_the_service(tmp_path: Path, page: Page) -> None:
    """The job states to filter by, the form's groups of fields and the datasets to train on
    (an upload included) are the API's; the page's modules load without a console error."""
    from playwright.sync_api import expect

    console_errors: list[str] = []
    page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
    service = Service(tmp_path, {})
    try:
        service.serve("--no-worker")
        files = {"file": ("digits.zip", digits_zip(), "application/zip")}
        upload = httpx.post(f"{service.url}/datasets", files=files, data={"name": "my digits"})
        assert upload.status_code == 201, upload.text
        page.goto(f"{service.url}/")
        expect(page.locator(".filters .chip")).to_have_text(["all", *get_args(JobState)])

        page.locator("a[data-nav=new]").click()
        expect(page.locator("details.group > summary")).to_have_text(list(GROUPS[1:]))
        depth = page.locator("details[data-group=Model] #field-depth")
        expect(depth).to_be_hidden()  # in the folded Model group
        page.locator("details[data-group=Model] > summary").click()
        expect(depth).to_be_visible()
        expect(page.locator("#field-max_steps")).to_be_visible()  # an essential: never folded
        suggested = page.eval_on_selector_all("#datasets option", "os => os.map(o => o.value)")
        assert suggested == [*DATASETS, upload.json()["id"]]

        loaded = page.evaluate("performance.getEntriesByType('resource').map(e => e.name)")
        modules = {url.rsplit("/", 1)[1] for url in loaded if re.search(r"/ui/[\w-]+\.js$", url)}
        assert modules == {p.name for p in DASHBOARD_DIR.glob("*.js")}
        screenshot(page, tmp_path / "dashboard-form.png")
    finally:
        service.stop()
    assert not console_errors, console_errors


def test_a_sweep_ranked_with_its_sample_grids(tmp_path: Path, mnist_dir: Path, page: Page) -> None:
    from playwright.sync_api import expect

    env = {"GAN_DATA_DIR": str(mnist_dir), **ONE_THREAD}
    service = Service(tmp_path, env)
    try:
        service.serve()
        base = {
            "dataset": "ring8",
            "arch": "mlp",
            "max_steps": 40,
            "batch_size": 32,
            "log_every": 20,
            "checkpoint_every": 20,
            "eval_every": 20,
            "eval_samples": 200,
        }
        body = {"base": base, "grid": {"lr_g": [1e-3, 1e-6]}}
        sweep = httpx.post(f"{service.url}/sweeps", json=body, timeout=30).json()
        page.goto(f"{service.url}/#/sweeps")
        page.locator(f"tr[data-sweep='{sweep['id']}'] a").click()
        rows = page.locator("tr.sweep-row")
        expect(rows).to_have_count(2)
        expect(page.locator(".summary-line")).to_contain_text(
            "succeeded 2", timeout=TRAINING_S * 1000
        )
        expect(rows.nth(0)).to_have_attribute("data-rank", "1")
        expect(rows.nth(1)).to_have_attribute("data-rank", "2")
        ranked = httpx.get(f"{service.url}/sweeps/{sweep['id']}", timeout=30).json()["jobs"]
        for row, entry in zip([rows.nth(0), rows.nth(1)], ranked, strict=True):
            expect(row).to_have_attribute("data-job", entry["job"]["id"])
            expect(row.locator(".metric-cell")).to_contain_text("mode_kl")
            # The API's first samples import torch: seconds on a loaded machine.
            expect(row.locator(".sweep-grid-cell")).to_contain_text("best, step", timeout=60_000)
        page.wait_for_function(
            "() => [...document.querySelectorAll('img.sweep-grid')]"
            ".every(img => !img.hidden && img.complete && img.naturalWidth > 0)"
        )
        screenshot(page, tmp_path / "dashboard-sweep.png")

        page.once("dialog", lambda dialog: dialog.accept())
        page.locator("button[data-action=delete]").click()
        page.wait_for_url(re.compile(r"#/sweeps$"))
        expect(page.get_by_text("No sweeps yet.")).to_be_visible()
        assert httpx.get(f"{service.url}/jobs", timeout=30).json()["jobs"] == []
    finally:
        service.stop()
