"""Schema migrations of the job store (Alembic), on SQLite and PostgreSQL.

The migrations live in ``worker/migrations`` and ship with the package; Alembic is configured
here, in code, so no ``alembic.ini`` is needed. ``worker.store.db.get_engine`` calls ``upgrade``
on first use, so the API and every worker bring the job store up to date when they start;
``gan db …`` (``api/cli.py``) runs the same functions by hand.

Several processes may start at once (the API and workers): each upgrade runs under a lock that
only one of them holds at a time, a PostgreSQL advisory lock (per database and schema, released
with the upgrade's transaction) or, on SQLite, an exclusive ``flock`` on ``<db file>.lock``. The
first does the work; the others then find the schema at head and do nothing.

A job store made before there were migrations (by ``create_all``: our tables, but no
``alembic_version``) is never touched: ``upgrade`` raises ``SchemaError`` saying what to do,
which is either to start afresh or to adopt it with ``gan db stamp`` (``adopt``), which stamps it
at head only when its tables match the models exactly.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import logging
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection, Engine

from worker.store.models import Base

log = logging.getLogger(__name__)
# Alembic says a dozen things at INFO on every start; ``upgrade`` logs what it does itself.
logging.getLogger("alembic").setLevel(logging.WARNING)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
VERSION_TABLE = "alembic_version"


class SchemaError(RuntimeError):
    """The job store's schema cannot be brought up to date; the message says why and what to do,
    for a person."""


def alembic_config(connection: Connection | None = None) -> Config:
    """Alembic's configuration, without an ini file: our migrations folder and, when given, the
    connection that ``env.py`` migrates (it holds the migration lock)."""
    config = Config()
    # ConfigParser interpolates "%": a path that contains one must double it.
    config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    config.attributes["connection"] = connection
    return config


def script_directory() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


def head() -> str:
    """The newest revision this code knows."""
    heads = script_directory().get_heads()
    if len(heads) != 1:
        raise SchemaError(f"the migrations have {len(heads)} heads ({heads}); merge them")
    return heads[0]


@contextmanager
def locked(engine: Engine) -> Iterator[Connection]:
    """A connection, inside a transaction, that alone may migrate ``engine``'s job store until
    the block ends (see the module's docstring); other callers wait for it."""
    if engine.dialect.name == "postgresql":
        with engine.begin() as connection:
            # The schema the tables go to (the first of the URL's search_path), so that job
            # stores in different schemas of one database do not wait for each other.
            schema = connection.scalar(text("SELECT current_schema()")) or ""
            key = _lock_key(f"{engine.url.database}/{schema}")
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})
            yield connection
    elif engine.dialect.name == "sqlite" and engine.url.database not in (None, "", ":memory:"):
        lock = Path(f"{engine.url.database}.lock")
        with _file_lock(lock), _sqlite_transaction(engine) as connection:
            yield connection
    elif engine.dialect.name == "sqlite":  # in memory: no other process can see it
        with _sqlite_transaction(engine) as connection:
            yield connection
    else:
        with engine.begin() as connection:
            yield connection


@contextmanager
def _sqlite_transaction(engine: Engine) -> Iterator[Connection]:
    """A SQLite connection in one real transaction, with foreign keys off until it ends.

    Off, because a batch migration rebuilds a table (copy, DROP, rename), and dropping ``jobs``
    with them on would delete every row that references it (ON DELETE CASCADE); they are checked
    before the commit instead. One transaction (``BEGIN IMMEDIATE``, which Python's sqlite3 would
    not emit before DDL), so that a migration that fails leaves nothing half done.
    """
    with engine.connect() as connection:
        connection.exec_driver_sql("PRAGMA foreign_keys=OFF")  # a no-op inside a transaction
        try:
            connection.exec_driver_sql("BEGIN IMMEDIATE")
            yield connection
            broken = connection.exec_driver_sql("PRAGMA foreign_key_check").all()
            if broken:
                raise SchemaError(f"the migration broke foreign keys (table, rowid, …): {broken}")
            connection.commit()
        except BaseException:
            connection.rollback()
            raise
        finally:
            connection.exec_driver_sql("PRAGMA foreign_keys=ON")
            connection.commit()


def _lock_key(name: str) -> int:
    """A signed 64-bit advisory lock key for ``name``."""
    digest = hashlib.sha256(f"gan-service migrations {name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (made if missing, and left in place: removing it
    would let two processes lock two different files)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as file:
        fcntl.flock(file, fcntl.LOCK_EX)  # released when the file closes, or the process dies
        try:
            yield
        finally:
            fcntl.flock(file, fcntl.LOCK_UN)


def current(connection: Connection) -> str | None:
    """The job store's revision (None: not managed by migrations, or empty)."""
    return MigrationContext.configure(connection).get_current_revision()


def upgrade(engine: Engine) -> str | None:
    """Bring the job store to the newest revision, creating its tables when it has none. Safe
    to call from several processes at once; a no-op when it is there already. Returns the
    revision it was at before (None: it was empty)."""
    with locked(engine) as connection:
        _check_managed(connection, engine)
        before = current(connection)
        if before != head():
            log.info("migrating the job store %s from %s to %s", _name(engine), before, head())
            command.upgrade(alembic_config(connection), "head")
        return before


def unmanaged_tables(connection: Connection) -> list[str]:
    """Our tables, when the job store has them but no ``alembic_version``: it was made before
    migrations (by ``create_all``). Empty otherwise."""
    tables = set(inspect(connection).get_table_names())
    return [] if VERSION_TABLE in tables else sorted(tables & set(Base.metadata.tables))


def is_known(revision: str) -> bool:
    """Whether this code has the migration ``revision`` (one made by a newer version has not)."""
    return any(script.revision == revision for script in script_directory().walk_revisions())


def _check_managed(connection: Connection, engine: Engine) -> None:
    """Raise ``SchemaError`` for a job store this code must not migrate: one made before
    migrations, or one at a revision this code does not know (made by a newer version)."""
    ours = unmanaged_tables(connection)
    if ours:
        raise SchemaError(
            f"the job store {_name(engine)} was made by a version of gan-service from before "
            f"schema migrations: it has tables ({', '.join(ours)}) but no {VERSION_TABLE} table, "
            f"so it cannot be upgraded. Either start afresh, losing its jobs: "
            f"{_start_afresh(engine)}; or, if its tables are already those of this version, "
            "adopt it with `gan db stamp` (which checks that first), then start the service again."
        )
    revision = current(connection)
    if revision is not None and not is_known(revision):
        raise SchemaError(
            f"the job store {_name(engine)} is at schema revision {revision}, which this "
            "version of gan-service does not know: it was migrated by a newer version. Run "
            "that version (or a database backup from before it)."
        )


def _name(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=True)


def _start_afresh(engine: Engine) -> str:
    if engine.dialect.name == "sqlite":
        database = engine.url.database
        return f"stop the service and remove {database}* (the database and the files beside it)"
    return "stop the service and drop those tables"


def differences(connection: Connection) -> list[Any]:
    """How the job store's tables differ from the models (Alembic's autogenerate diffs; empty
    when they match)."""
    return list(compare_metadata(MigrationContext.configure(connection), Base.metadata))


def adopt(engine: Engine) -> str:
    """Stamp a job store made before migrations at head, without changing its tables, when they
    match the models exactly (``gan db stamp``); returns the revision. Raises ``SchemaError``
    when they do not (then it must be started afresh or migrated by hand)."""
    with locked(engine) as connection:
        revision = current(connection)
        if revision is not None:
            raise SchemaError(
                f"the job store {_name(engine)} is already managed by migrations (at revision "
                f"{revision}); run `gan db upgrade` instead"
            )
        found = differences(connection)
        if found:
            listed = "\n".join(f"  {diff}" for diff in found)
            raise SchemaError(
                f"the tables of the job store {_name(engine)} are not those of this version, "
                f"so it cannot be adopted as it is:\n{listed}\nStart afresh "
                f"({_start_afresh(engine)}) or change the tables by hand until they match."
            )
        command.stamp(alembic_config(connection), "head")
        return head()


def revision(engine: Engine, message: str) -> Path:
    """Write a new migration, autogenerated from how the models differ from ``engine``'s job
    store (brought to head first), to ``worker/migrations/versions``; returns its path. Review
    it before committing: autogenerate misses renames and some type changes."""
    upgrade(engine)
    number = 1 + len(list(script_directory().walk_revisions()))  # ids 0001, 0002, …
    with locked(engine) as connection:
        written = command.revision(
            alembic_config(connection), message, autogenerate=True, rev_id=f"{number:04d}"
        )
    assert written is not None and not isinstance(written, list)
    path = Path(written.path)
    if importlib.util.find_spec("ruff") is not None:  # a dev install: format it like our code
        for args in (["check", "--fix", "--quiet"], ["format", "--quiet"]):
            subprocess.run([sys.executable, "-m", "ruff", *args, str(path)], check=False)
    return path
