"""The service's `gan` command: API keys, the guard against serving open to the network, and
`gan worker`'s flags."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from api.cli import build_parser

GAN = str(Path(sys.executable).with_name("gan"))


def gan(settings, *args):
    env = {**os.environ, "GAN_DATABASE_URL": settings.database_url, "GAN_API_KEYS": ""}
    return subprocess.run([GAN, *args], env=env, capture_output=True, text=True, timeout=120)


def test_keys_made_on_the_command_line_guard_the_api(client, settings):
    assert client.get("/jobs").status_code == 200  # no keys yet: open
    created = gan(settings, "keys", "create", "alice")
    assert created.returncode == 0, created.stderr
    secret = created.stdout.split()[0]
    assert secret.startswith("gan_")
    listed = gan(settings, "keys", "list").stdout
    assert "alice" in listed and secret not in listed
    key_id = listed.split()[0]

    assert client.get("/jobs").status_code == 401
    assert client.get("/jobs", headers={"Authorization": f"Bearer {secret}"}).status_code == 200
    assert gan(settings, "keys", "revoke", key_id).returncode == 0
    assert client.get("/jobs").status_code == 200  # the last key is gone: open again
    missing = gan(settings, "keys", "revoke", key_id)
    assert missing.returncode != 0 and "no stored key" in missing.stderr


def test_serving_to_the_network_without_keys_is_refused(settings):
    refused = gan(settings, "serve", "--host", "0.0.0.0", "--port", "1", "--no-worker")
    assert refused.returncode != 0
    assert "without API keys" in refused.stderr and "gan keys create" in refused.stderr


def test_worker_flags_parse_into_slots():
    parse = build_parser().parse_args
    gpus = parse(["worker", "--gpus", "0,1", "--jobs-per-gpu", "4"])
    assert (gpus.gpus, gpus.jobs_per_gpu, gpus.jobs) == (["0", "1"], 4, None)
    assert parse(["worker", "--gpu", "1"]).gpus == ["1"]  # the older flag
    cpu = parse(["worker", "--jobs", "2"])
    assert (cpu.gpus, cpu.jobs) == (None, 2)
    default = parse(["worker"])
    assert (default.gpus, default.jobs_per_gpu, default.jobs) == (None, 1, None)
    for wrong in (["--jobs", "0"], ["--jobs-per-gpu", "x"], ["--gpus", ","],
                  ["--jobs", "2", "--gpus", "0"]):  # fmt: skip
        with pytest.raises(SystemExit):
            parse(["worker", *wrong])
