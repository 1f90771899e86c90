"""A PostgreSQL of a test's own, to stop and start for real: ``initdb`` in a temporary folder, a
server on a free port of 127.0.0.1, trust authentication, no fsync (nothing here must survive a
crash of the machine, and it starts in a second instead of several).

PostgreSQL refuses to run as root, and tests run as root in CI: when they do, every command runs
as the ``postgres`` system user, which owns the folder. The folder is a temporary one of its own,
not pytest's ``tmp_path``: that lies under a folder only root may enter."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

from harness.services import free_port

POSTGRES_USER = "postgres"  # the system user that runs the server when the test runs as root


def postgres_bin() -> Path | None:
    """The folder of the newest installed PostgreSQL's programs, or None without one."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    if found:
        return found[-1].parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


class PostgresServer:
    """A PostgreSQL cluster in a temporary folder (made by the first ``start``); ``stop`` is a
    fast shutdown (clients are disconnected at once, as when the server goes away), ``start``
    again brings the same data back on the same port, and ``close`` stops it and removes the
    folder. Its log is ``folder / "server.log"``."""

    def __init__(self) -> None:
        found = postgres_bin()
        if found is None:
            raise FileNotFoundError("PostgreSQL's initdb is not installed")
        folder = Path(tempfile.mkdtemp(prefix="gan-postgres-"))
        self.bin, self.folder, self.port = found, folder, free_port()
        self.data, self.sockets = folder / "data", folder / "sockets"
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        command = [str(self.bin / args[0]), *args[1:]]
        if os.geteuid() == 0:
            command = ["runuser", "-u", POSTGRES_USER, "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        if not self.data.exists():
            self.sockets.mkdir(parents=True, exist_ok=True)
            if os.geteuid() == 0:
                user = pwd.getpwnam(POSTGRES_USER)
                for path in (self.folder, self.sockets):
                    os.chown(path, user.pw_uid, user.pw_gid)
            self._run("initdb", "-D", str(self.data), "--auth=trust", "-U", "postgres",
                      "--no-sync", "-E", "UTF8")  # fmt: skip
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.sockets} -c fsync=off"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.folder / "server.log"),
                  "-o", options, "-w", "-t", "60", "start")  # fmt: skip

    def stop(self) -> None:
        """A fast shutdown: open connections are cut, the server is gone until ``start``."""
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "60", "stop")

    def close(self) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)
