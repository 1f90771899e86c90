"""Connections to the job store: one engine per database URL, its schema migrated on first use,
and sessions that commit or roll back as a whole."""

from __future__ import annotations

import contextlib
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from worker import migrate

# The errors of a store that cannot be reached for now (down, restarting, a dropped connection,
# a SQLite file locked too long), as opposed to a statement that is wrong: worth trying again.
UNAVAILABLE = (OperationalError, InterfaceError)


# get_engine's, by URL, the most recently asked for last. A process uses one or two; a test
# session makes one per fresh store, so the least recently asked for are let go past MAX_ENGINES
# (as functools.lru_cache did): unreferenced, an engine's pool and its connections are closed.
_engines: OrderedDict[str, Engine] = OrderedDict()
_making = threading.Lock()  # one thread makes (and migrates) a URL's engine; the others wait
MAX_ENGINES = 128


def get_engine(url: str) -> Engine:
    """One engine per database URL, its schema migrated to the newest revision on first use
    (``worker.migrate.upgrade``; raises ``migrate.SchemaError`` when it cannot be, and the
    next call tries again)."""
    engine = _engines.get(url)
    if engine is None:
        with _making:
            engine = _engines.get(url)
            if engine is None:
                engine = _engines[url] = _make_engine(url)
                while len(_engines) > MAX_ENGINES:
                    _engines.popitem(last=False)
    with contextlib.suppress(KeyError):  # let go meanwhile (another URL's new engine): kept here
        _engines.move_to_end(url)
    return engine


def made_engine(url: str) -> Engine | None:
    """``get_engine(url)`` when it has been made, else None: never blocks (for the event loop,
    which must not wait on a first connection or a migration)."""
    return _engines.get(url)


def _make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            # WAL lets the API read while the worker writes progress.
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.execute("PRAGMA foreign_keys=ON")  # deleting a job deletes its series
            cursor.close()

        _make_sqlite_parent(url)
    else:
        engine = create_engine(url, pool_pre_ping=True)
    try:
        migrate.upgrade(engine)  # the tables, brought up to date (worker/migrations)
    except BaseException:
        engine.dispose()
        raise
    return engine


def _make_sqlite_parent(url: str) -> None:
    database = make_url(url).database
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)


@contextmanager
def session_scope(url: str) -> Iterator[Session]:
    """A session that commits on success and rolls back on error."""
    with sessionmaker(get_engine(url), expire_on_commit=False)() as session, session.begin():
        yield session
