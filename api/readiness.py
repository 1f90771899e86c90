"""The checks behind ``/readyz``: can this API reach its job store, its broker and its artifact
store?

Each check runs in a daemon thread of its own and gets ``CHECK_TIMEOUT_S``: a server that
never answers makes its check fail, never the request hang (the thread is left to finish or
fail on its own, and never keeps the process from exiting).
"""

from __future__ import annotations

import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from sqlalchemy import text

from api.deps import get_celery
from worker.broker import is_embedded, is_redis
from worker.settings import Settings
from worker.store.db import get_engine

CHECK_TIMEOUT_S = 2.0
OK = "ok"


def check_database(settings: Settings) -> None:
    """``SELECT 1`` through the engine the routes use."""
    with get_engine(settings.database_url).connect() as connection:
        connection.execute(text("SELECT 1"))


def check_broker(settings: Settings, timeout: float = CHECK_TIMEOUT_S) -> None:
    """Connect to the broker of the API's Celery app; for the filesystem broker, write (and
    remove) a file in its queue folder instead."""
    celery = get_celery(settings)
    if is_embedded(settings.broker_url):
        folder = Path(celery.conf.broker_transport_options["data_folder_in"])
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".readyz-"):  # never a *.msg
            return
    options = {}
    if is_redis(settings.broker_url):
        options = {"socket_connect_timeout": timeout, "socket_timeout": timeout}
    with celery.connection_for_write(connect_timeout=timeout, transport_options=options) as conn:
        conn.ensure_connection(max_retries=1, interval_start=0, timeout=timeout)


def check_artifacts(settings: Settings) -> None:
    """List the artifact store's root (``GAN_ARTIFACTS_URL``): the endpoint answers, the
    credentials are accepted and the bucket exists (a folder that does not exist yet is made
    on the first write)."""
    settings.artifacts().check()


def run_checks(
    checks: Mapping[str, Callable[[], None]], timeout: float = CHECK_TIMEOUT_S
) -> dict[str, str]:
    """Run the checks at once: {name: "ok", or why it failed}, within ``timeout`` seconds."""
    results: dict[str, str] = {}
    threads = [
        threading.Thread(target=_run, args=(check, name, results), daemon=True)
        for name, check in checks.items()
    ]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    late = f"no answer within {timeout:g} s"
    return {name: results.get(name, late) for name in checks}


def _run(check: Callable[[], None], name: str, results: dict[str, str]) -> None:
    try:
        check()
    except Exception as e:
        results[name] = describe(e)
    else:
        results[name] = OK


def describe(error: BaseException, limit: int = 300) -> str:
    """The error on one line, of at most ``limit`` characters: its type and message (that of
    the driver's own error for SQLAlchemy's wrappers, without the SQL and the link)."""
    cause = getattr(error, "orig", None) or error
    message = " ".join(f"{type(cause).__name__}: {cause}".split()).removesuffix(":")
    return message if len(message) <= limit else message[: limit - 1] + "…"
