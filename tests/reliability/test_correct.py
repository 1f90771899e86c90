"""Correct answers under faults, with real processes: an upload onto a full disk is a 507 that
leaves nothing behind, and a worker paused past its lease, whose job another worker took, writes
no checkpoint into that job's folder once it runs again. RELIABILITY.md states the figures."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import time
import zipfile
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from harness.services import Service, wait_for
from tests.conftest import REQUIRE_SERVICES
from tests.reliability.test_faults import RING, SLOW, namespaces_available

pytestmark = pytest.mark.e2e


def archive(images: int, size: int) -> bytes:
    """A zip of ``images`` RGB PNGs of ``size`` squared, in two classes."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zipped:
        for i in range(images):
            png = io.BytesIO()
            Image.new("RGB", (size, size), (i % 256, 0, 0)).save(png, format="PNG")
            zipped.writestr(f"{'ab'[i % 2]}/{i}.png", png.getvalue())
    return buffer.getvalue()


def upload(service: Service, data: bytes, image_size: int) -> httpx.Response:
    files = {"file": ("pics.zip", data, "application/zip")}
    form = {"channels": "3", "image_size": str(image_size)}
    return httpx.post(f"{service.url}/datasets", files=files, data=form, timeout=60)


def test_an_upload_onto_a_full_disk_is_a_507_and_leaves_nothing(
    tmp_path: Path, mnist_dir: Path, figures: dict[str, Any]
) -> None:
    """`gan serve` (API only, embedded defaults) in a mount namespace of its own whose datasets
    folder is a 256 KiB tmpfs: a 1.2 MB dataset does not fit (507, the reason given, no folder
    or temporary file left), a small one still does, and the API stays up."""
    if not namespaces_available():
        if REQUIRE_SERVICES:
            pytest.fail("no user and mount namespaces here: cannot fill a disk")
        pytest.skip("no user and mount namespaces here: cannot fill a disk")
    service = Service(tmp_path, {"GAN_DATA_DIR": str(mnist_dir)})
    datasets = tmp_path / "var/artifacts/datasets"
    datasets.mkdir(parents=True)
    mount = 'mount -t tmpfs -o size=256k tmpfs "$0" && exec "$@"'
    prefix = ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", mount, str(datasets)]
    try:
        api = service.start("serve", "--port", str(service.port), "--no-worker", prefix=prefix)
        wait_for(service.live, 60, "the API to answer /livez")
        seen_by_api = Path(f"/proc/{api.pid}/root") / datasets.relative_to("/")

        full = upload(service, archive(100, 64), 64)  # 100 × 3 × 64 × 64 = 1.2 MB of pixels
        assert full.status_code == 507, full.text
        assert "No space left on device" in full.json()["detail"]
        assert list(seen_by_api.iterdir()) == []  # no dataset, no temporary folder

        small = upload(service, archive(4, 8), 8)
        assert small.status_code == 201, small.text
        assert [p.name for p in seen_by_api.iterdir()] == [small.json()["id"]]
        listed = httpx.get(f"{service.url}/datasets", timeout=10).json()["datasets"]
        assert [d["id"] for d in listed] == [small.json()["id"]]
        assert service.live() and api.poll() is None
        figures["full_disk_upload_status"] = full.status_code
        figures["full_disk"] = "tmpfs 256 KiB in the API's mount namespace"
    finally:
        service.stop()


def pause_outside_a_transaction(process: subprocess.Popen[bytes], url: str, job_id: str) -> None:
    """SIGSTOP ``process`` at a moment it holds no lock on the job's row: stopped inside a
    transaction that updated it (a progress write, a renewal), it would keep the reconciler,
    which skips locked rows, from ever requeueing the job."""
    engine = create_engine(url)
    try:
        for _ in range(50):
            process.send_signal(signal.SIGSTOP)
            try:
                with engine.begin() as connection:
                    query = "SELECT id FROM jobs WHERE id = :id FOR UPDATE NOWAIT"
                    connection.execute(text(query), {"id": job_id})
                return
            except OperationalError:  # locked by the stopped worker: let it finish that
                process.send_signal(signal.SIGCONT)
                time.sleep(0.05)
        raise AssertionError("the worker always held the job's row")
    finally:
        engine.dispose()


def snapshot(folder: Path) -> dict[str, tuple[int, int, int]]:
    """Every file in ``folder`` with its inode, size and mtime: what a write would change."""
    found = {}
    for path in folder.iterdir():
        stat = path.stat()
        found[path.name] = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
    return found


def test_a_worker_paused_past_its_lease_writes_no_checkpoint_after_another_took_the_job(
    service: Service, figures: dict[str, Any]
) -> None:
    """SIGSTOP the worker training a job (leases of 3 s); the other worker takes the job over
    and checkpoints it; SIGSTOP that one too (so that any change to the folder is the first
    one's), SIGCONT the first: it finds its lease gone before publishing its next checkpoint,
    removes its temporary file and lets the job go, leaving the folder as it was."""
    service.serve("--no-worker")
    workers = {process.pid: process for process in (service.start("worker") for _ in range(2))}
    job_id = service.submit({**RING, "max_steps": 100_000, "checkpoint_every": 20})
    wait_for(lambda: service.job(job_id)["step"] >= 60, SLOW, "step 60")
    first = workers.pop(int(service.job(job_id)["worker"].rsplit("/", 1)[1]))
    [second] = workers.values()
    pause_outside_a_transaction(first, service.env["GAN_DATABASE_URL"], job_id)
    paused_at = service.job(job_id)["step"]
    try:
        wait_for(lambda: service.job(job_id)["attempts"] == 2, SLOW, "the job to be taken over")
        taken = service.job(job_id)
        wait_for(
            lambda: (service.job(job_id)["checkpoint_step"] or 0) > (taken["step"] or 0) + 20,
            SLOW,
            "the second worker to checkpoint",
        )
        second.send_signal(signal.SIGSTOP)
        folder = service.tmp_path / "var/artifacts/jobs" / job_id / "checkpoints"
        before = snapshot(folder)
        first.send_signal(signal.SIGCONT)
        wait_for(
            lambda: "its lease went to another worker; stopped here" in service.logs(),
            SLOW,
            "the first worker to let the job go",
        )
        assert snapshot(folder) == before  # no new file, none replaced, no temporary left
        assert "was not written: writes to" in service.logs()
        assert service.job(job_id)["attempts"] == 2  # nobody claimed it meanwhile
        figures["files_written_by_the_paused_worker"] = 0
        figures["paused_at_step"] = paused_at
    finally:
        for process in service.processes:
            if process.poll() is None:
                os.kill(process.pid, signal.SIGCONT)
