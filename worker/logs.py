"""Logging of both processes, the API and the worker: one line per record, as logfmt
(``key=value``) or JSON, with the job id of the job the line is about.

The job id comes from a context variable: code that works on a job wraps that work in
``job_context(job_id)``, and every line logged inside it, by any logger, carries ``job_id``
(``job_id=-`` in logfmt and ``"job_id": null`` in JSON outside one)::

    with job_context(job_id):
        log.info("step %d", step)  # timestamp=… level=info logger=… job_id=… message="step 3"

``setup_logging`` installs the handler on the root logger; the worker calls it through Celery's
``setup_logging`` signal (connected here), so Celery configures nothing of its own.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, Literal

from celery.signals import setup_logging as celery_setup_logging

from worker.settings import get_settings

LogFormat = Literal["text", "json"]

_job_id: ContextVar[str | None] = ContextVar("gan_job_id", default=None)


@contextmanager
def job_context(job_id: str) -> Iterator[None]:
    """Every record logged inside this block (in this thread or task) carries ``job_id``."""
    token = _job_id.set(job_id)
    try:
        yield
    finally:
        _job_id.reset(token)


def current_job_id() -> str | None:
    """The job id of the innermost ``job_context``, or None outside one."""
    return _job_id.get()


def record_fields(record: logging.LogRecord) -> dict[str, Any]:
    """What a line says about ``record``: timestamp (UTC, ISO 8601), level, logger, job_id
    (``extra={"job_id": …}`` wins over the context), message, and the exception if any."""
    timestamp = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
    fields: dict[str, Any] = {
        "timestamp": timestamp.replace("+00:00", "Z"),
        "level": record.levelname.lower(),
        "logger": record.name,
        "job_id": getattr(record, "job_id", None) or current_job_id(),
        "message": record.getMessage(),
    }
    if record.exc_info:
        fields["exception"] = logging.Formatter().formatException(record.exc_info)
    elif record.exc_text:
        fields["exception"] = record.exc_text
    if record.stack_info:
        fields["stack"] = record.stack_info
    return fields


class LogfmtFormatter(logging.Formatter):
    """``key=value`` pairs on one line; values with spaces, quotes or ``=`` are quoted, and
    newlines (tracebacks) are escaped. A missing job id is ``job_id=-``."""

    def format(self, record: logging.LogRecord) -> str:
        fields = record_fields(record)
        fields["job_id"] = fields["job_id"] or "-"
        return " ".join(f"{key}={_logfmt_value(str(value))}" for key, value in fields.items())


def _logfmt_value(value: str) -> str:
    if value and not any(c in value for c in ' ="\\') and value.isprintable():
        return value
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + escaped.replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t") + '"'


class JsonFormatter(logging.Formatter):
    """One JSON object per line; ``job_id`` is null outside a job."""

    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(record_fields(record), ensure_ascii=False, default=str)


FORMATTERS: dict[str, type[logging.Formatter]] = {"text": LogfmtFormatter, "json": JsonFormatter}


class _ServiceHandler(logging.StreamHandler):
    """The handler ``setup_logging`` installs (a class of its own, to find and replace it)."""


def setup_logging(log_format: LogFormat = "text", level: int | str = logging.INFO) -> None:
    """Log every record at ``level`` or above to stderr as ``log_format`` lines. Calling it
    again replaces the handler it installed before; other handlers are left alone."""
    if log_format not in FORMATTERS:
        raise ValueError(f"log format must be one of {sorted(FORMATTERS)}, not {log_format!r}")
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, _ServiceHandler)]:
        root.removeHandler(handler)
    handler = _ServiceHandler(sys.stderr)
    handler.setFormatter(FORMATTERS[log_format]())
    root.addHandler(handler)
    root.setLevel(level)


@celery_setup_logging.connect
def _on_celery_setup_logging(loglevel: int | None = None, **_: Any) -> None:
    """A worker logs through ``setup_logging`` (Celery configures no logging of its own when a
    receiver of this signal exists), at the ``--loglevel`` it was started with."""
    setup_logging(get_settings().log_format, loglevel or logging.INFO)
