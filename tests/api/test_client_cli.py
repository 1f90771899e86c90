"""The client commands of `gan` (api.remote), run as a user runs them, against a real service."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import httpx
import numpy as np
import onnxruntime
import pytest
from PIL import Image

from api.client import Client
from harness.services import GAN, Service, free_port, wait_for

pytestmark = pytest.mark.e2e
QUICK = ["--set", "checkpoint_every=40", "--set", "log_every=10", "--set", "eval_every=0"]


def gan(service: Service | None, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`gan ARGS` talking to ``service`` through GAN_URL (like a user's environment), with the
    environment variables ``env``."""
    environment = {k: v for k, v in os.environ.items() if k != "GAN_API_KEY"} | env
    if service is not None:
        environment["GAN_URL"] = service.url
    return subprocess.run(
        [GAN, *args], env=environment, capture_output=True, text=True, timeout=300
    )


def test_submit_watch_list_status_sample_resume(live_service: Service, tmp_path: Path) -> None:
    submitted = gan(live_service, "submit", "--preset", "classic", "--steps", "120", *QUICK,
                    "--watch")  # fmt: skip
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip()  # only the id on stdout, for ID=$(gan submit …)
    assert len(job_id) == 36, submitted.stdout
    watched = submitted.stderr
    assert "state: running" in watched and "120/120" in watched and "img/s" in watched
    assert f"job {job_id} succeeded at step 120" in watched

    listed = gan(live_service, "jobs")
    assert listed.returncode == 0 and job_id in listed.stdout
    row = next(line for line in listed.stdout.splitlines() if job_id in line)
    assert "succeeded" in row and "classic" in row and "120/120" in row
    assert job_id not in gan(live_service, "jobs", "--state", "running").stdout

    status = gan(live_service, "status", job_id)
    assert status.returncode == 0 and "succeeded" in status.stdout and "120/120" in status.stdout
    as_json = json.loads(gan(live_service, "status", job_id, "--json").stdout)
    assert (as_json["id"], as_json["step"]) == (job_id, 120)

    grid = tmp_path / "x.png"
    sampled = gan(live_service, "sample", job_id, "--n", "64", "--seed", "3", "--out", str(grid))
    assert sampled.returncode == 0, sampled.stderr
    assert Image.open(grid).size == (242, 242)
    array = tmp_path / "x.npy"
    assert gan(live_service, "sample", job_id, "--n", "5", "--checkpoint", "80",
               "--out", str(array)).returncode == 0  # fmt: skip
    assert np.load(array).shape == (5, 28, 28)
    unconditional = gan(live_service, "sample", job_id, "--label", "7", "--out", str(grid))
    assert unconditional.returncode == 1 and "label" in unconditional.stderr
    exported = tmp_path / "g.onnx"
    done = gan(live_service, "export", job_id, "--format", "onnx", "-o", str(exported))
    assert done.returncode == 0 and str(exported) in done.stdout, done.stderr
    session = onnxruntime.InferenceSession(str(exported), providers=["CPUExecutionProvider"])
    [drawn] = session.run(None, {"z": np.zeros((2, 100), np.float32)})
    assert drawn.shape == (2, 1, 28, 28)

    resumed = gan(live_service, "resume", job_id, "--steps", "160")
    assert resumed.returncode == 0 and "queued" in resumed.stdout, resumed.stderr
    watched_again = gan(live_service, "watch", job_id)
    assert watched_again.returncode == 0, watched_again.stdout
    assert f"job {job_id} succeeded at step 160" in watched_again.stdout

    # A checkpoint file, downloaded here, is still sampled locally by the same command.
    with Client(live_service.url) as client:
        newest = client.checkpoints(job_id)[-1]
    checkpoint = tmp_path / "mine.pt"
    checkpoint.write_bytes(httpx.get(newest["download"], timeout=30).content)
    nowhere = f"http://127.0.0.1:{free_port()}"  # no service there: it is not asked
    local = gan(None, "sample", str(checkpoint), "--n", "4", "--out", str(tmp_path / "l.png"),
                GAN_URL=nowhere)  # fmt: skip
    assert local.returncode == 0 and "samples of step 160" in local.stdout, local.stderr


def test_cancel_a_running_job_then_delete_it(live_service: Service) -> None:
    submitted = gan(live_service, "submit", "--steps", "100000", *QUICK)
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip()
    assert f"gan watch {job_id}" in submitted.stderr

    def running() -> bool:
        return "state      running" in gan(live_service, "status", job_id).stdout

    wait_for(running, 120, "the job to run", every=1)
    cancelled = gan(live_service, "cancel", job_id)
    assert cancelled.returncode == 0 and "cancel" in cancelled.stdout, cancelled.stderr
    watched = gan(live_service, "watch", job_id)
    assert watched.returncode == 1  # it did not succeed
    assert f"job {job_id} cancelled at step" in watched.stdout

    assert gan(live_service, "delete", job_id).stdout.strip() == f"job {job_id}: deleted"
    gone = gan(live_service, "status", job_id)
    assert gone.returncode == 1 and "404" in gone.stderr and job_id in gone.stderr


def test_errors_are_readable(live_service: Service) -> None:
    bad = gan(live_service, "submit", "--steps", "-1")
    assert bad.returncode == 1 and "422" in bad.stderr and "max_steps" in bad.stderr
    unknown = gan(live_service, "submit", "--set", "speed=11")
    assert unknown.returncode == 2 and "speed" in unknown.stderr  # refused before sending
    nowhere = gan(None, "jobs", "--url", f"http://127.0.0.1:{free_port()}")
    assert nowhere.returncode == 1 and "cannot reach the service" in nowhere.stderr
    assert "gan serve" in nowhere.stderr


def test_an_api_key_from_the_flag_or_the_environment(tmp_path: Path, mnist_dir: Path) -> None:
    service = Service(tmp_path, {"GAN_DATA_DIR": str(mnist_dir), "GAN_API_KEYS": "cli-key"})
    try:
        service.serve("--no-worker")  # nothing trains: the jobs only wait in the queue
        refused = gan(service, "jobs")
        assert refused.returncode == 1 and "401" in refused.stderr and "API key" in refused.stderr
        assert gan(service, "jobs", "--api-key", "cli-key").stdout.strip() == "no jobs"
        submitted = gan(service, "submit", "--steps", "10", GAN_API_KEY="cli-key")
        assert submitted.returncode == 0, submitted.stderr
        job_id = submitted.stdout.strip()
        listed = gan(service, "jobs", "--state", "queued", GAN_API_KEY="cli-key")
        assert job_id in listed.stdout and "queued" in listed.stdout
        cancelled = gan(service, "cancel", job_id, "--api-key", "cli-key")
        assert cancelled.stdout.strip() == f"job {job_id}: cancelled"  # it had not started
    finally:
        service.stop()
