"""The service's `gan` command: API keys and the guard against serving open to the network."""

import os
import subprocess
import sys
from pathlib import Path

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
