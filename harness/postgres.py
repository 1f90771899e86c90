"""A PostgreSQL of a test's own: ``initdb`` in a temporary folder, on a free port, started,
stopped and restarted for real (the store outages of the fault tests and ``bench.outage``).

PostgreSQL refuses to run as root (as tests do in CI): when this process is root, the server
runs as the ``postgres`` system user, in a folder of its own under the system's temporary folder
(a test's ``tmp_path`` is not open to other users).
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from harness.services import free_port, wait_for

# Durability is not what the tests measure: skip the disk flushes.
FAST = ("-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off")


def postgres_bin() -> Path | None:
    """The folder of the newest PostgreSQL's server binaries (Debian's layout), if any."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=_version)
    if found:
        return found[-1].parent
    on_path = shutil.which("postgres")
    return Path(on_path).parent if on_path else None


def _version(path: Path) -> float:
    try:
        return float(path.parts[-3])
    except ValueError:
        return 0.0


class PostgresServer:
    """A PostgreSQL server on 127.0.0.1 at a free port, trusting local connections as user
    ``postgres``: ``start``, ``stop`` (a fast shutdown: clients' connections are cut), and
    ``start`` again is a restart with its data kept. ``close`` stops it and removes its data."""

    def __init__(self, log_folder: Path | None = None) -> None:
        """Its logs go to ``log_folder`` (by default its own folder, removed by ``close``)."""
        bin_dir = postgres_bin()
        if bin_dir is None:
            raise FileNotFoundError("no PostgreSQL server binaries (postgres, initdb) found")
        self.folder = Path(tempfile.mkdtemp(prefix="gan-postgres-"))
        self.bin, self.port = bin_dir, free_port()
        self.log_folder = log_folder if log_folder is not None else self.folder
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"
        self.data, self.sockets = self.folder / "data", self.folder / "sockets"
        self.sockets.mkdir()
        self._as: dict[str, Any] = {}
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            self._as = {"user": user.pw_uid, "group": user.pw_gid}
            for path in (self.folder, self.sockets):
                os.chown(path, user.pw_uid, user.pw_gid)
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self._run(
            [str(self.bin / "initdb"), "-D", str(self.data), "--auth=trust", "-U", "postgres",
             "-E", "UTF8", "--no-sync"],
        )  # fmt: skip

    def _run(self, command: list[str]) -> None:
        log = self.log_folder / "initdb.log"
        with open(log, "wb") as out:
            done = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, **self._as)
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed: {log.read_text(errors='replace')}")

    def start(self) -> None:
        """Start the server and wait until it takes connections."""
        self.starts += 1
        log = open(self.log_folder / f"postgres-{self.starts}.log", "wb")  # noqa: SIM115
        self.process = subprocess.Popen(
            [str(self.bin / "postgres"), "-D", str(self.data), "-p", str(self.port),
             "-k", str(self.sockets), "-c", "listen_addresses=127.0.0.1", *FAST],
            stdout=log, stderr=subprocess.STDOUT, **self._as,
        )  # fmt: skip
        wait_for(self.answers, 30, "PostgreSQL to take connections")

    def answers(self) -> bool:
        import psycopg

        try:
            with psycopg.connect(f"postgresql://postgres@127.0.0.1:{self.port}/postgres",
                                 connect_timeout=1):  # fmt: skip
                return True
        except psycopg.OperationalError:
            return False

    def stop(self) -> None:
        """A fast shutdown (SIGINT): open transactions are rolled back, connections are cut."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            self.process.wait(timeout=30)
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)
