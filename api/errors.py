"""Error responses: every validation problem is a 422 that names its field, and a job store
that cannot be reached is a 503 to retry, never a 500.

One helper per kind of error body the routes build themselves: ``field_error`` (a problem with
one field, shaped like FastAPI's own validation errors), ``too_many_requests`` (a 429 with
its Retry-After: the client asks too much) and ``unavailable`` (a 503 with its Retry-After:
the service is short of something, or its job store is unreachable)."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

from fastapi import HTTPException, Request, status
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

log = logging.getLogger(__name__)

# What the job store raises when it cannot answer now, rather than because a request or the code
# is wrong: the server is down, restarting or unreachable, the connection was lost (Operational-,
# InterfaceError; SQLite's "database is locked" and "unable to open database file" too), or no
# pooled connection came free in time (TimeoutError). Each is a 503 to retry, never a 500.
STORE_ERRORS = (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError)
STORE_RETRY_S = 5.0  # the Retry-After of those 503s: a PostgreSQL restart takes a few seconds


def field_error(
    loc: Sequence[str | int], message: str, code: int = status.HTTP_422_UNPROCESSABLE_CONTENT
) -> HTTPException:
    """An error about one field, in the shape of FastAPI's validation errors, so that clients
    read every 422 alike: ``{"detail": [{"loc": [...], "msg": ..., "type": "value_error"}]}``.
    ``loc`` is where the field is ("body", "query", "header", "path") then its name. ``code``
    is 422 but for problems of the field that are not about validity (413: too large)."""
    return HTTPException(code, [{"loc": list(loc), "msg": message, "type": "value_error"}])


def too_many_requests(reason: str, wait: float) -> HTTPException:
    """A 429 for ``reason``, to retry after ``wait`` seconds: rounded up to whole seconds, at
    least 1 (Retry-After counts whole seconds, and a client that waits what it says must not be
    refused again for lack of a fraction), the same number in the header and the message."""
    return _retry_later(status.HTTP_429_TOO_MANY_REQUESTS, reason, wait)


def unavailable(reason: str, wait: float) -> HTTPException:
    """A 503 for ``reason``, to retry after ``wait`` seconds, rounded like ``too_many_requests``."""
    return _retry_later(status.HTTP_503_SERVICE_UNAVAILABLE, reason, wait)


def _retry_later(code: int, reason: str, wait: float) -> HTTPException:
    seconds = max(1, math.ceil(wait))
    return HTTPException(
        code, f"{reason}; retry in {seconds} s", headers={"Retry-After": str(seconds)}
    )


def _json_safe(value: Any) -> Any:
    """``value`` with non-finite floats as strings: FastAPI echoes the offending input back, and
    JSON has no NaN or Infinity (encoding one would turn the 422 into a 500)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


async def validation_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = _json_safe(jsonable_encoder(exc.errors()))
    return JSONResponse(status_code=422, content={"detail": errors})


FASTAPI_PARSE_ERROR = "There was an error parsing the body"


async def http_error_handler(request: Request, exc: Exception) -> Response:
    """FastAPI's own answer to HTTP errors, except that "no route matches" says which path did
    not match (an id with a "/" in it, say ``..%2F..``), instead of a bare "Not Found", and a
    body that cannot even be parsed (bytes that are not UTF-8, broken multipart: a 400 from
    FastAPI or Starlette) is a 422 naming the body, like any other body that is not valid."""
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 400:  # only ever the frameworks', about a body they cannot parse
        reason = "not JSON, or not UTF-8" if exc.detail == FASTAPI_PARSE_ERROR else exc.detail
        exc = field_error(["body"], f"the body cannot be parsed: {reason}")
    if exc.status_code == 404 and exc.detail == "Not Found":
        exc = StarletteHTTPException(
            404,
            f"nothing at {request.method} {request.url.path}: no such route (ids and names are "
            "single path segments, without '/')",
        )
    return await http_exception_handler(request, exc)


async def store_error_handler(request: Request, exc: Exception) -> Response:
    """A 503 with Retry-After for any of ``STORE_ERRORS`` a route or dependency raised: the
    request's transaction did not commit (a job POSTed meanwhile was not created), and a retry
    may succeed once the store is back. Handled here, the error never reaches uvicorn, which
    would answer 500 and then close the kept-alive connection."""
    assert isinstance(exc, STORE_ERRORS)
    log.warning(
        "%s %s: the job store is unreachable: %s",
        request.method,
        request.url.path,
        str(exc).splitlines()[0],  # the driver's message, without SQLAlchemy's background
    )
    reason = "the job store is unreachable"
    if isinstance(exc, sa_exc.TimeoutError):
        reason = "the job store is busy (no database connection came free in time)"
    return await http_exception_handler(request, unavailable(reason, STORE_RETRY_S))


ARTIFACTS_RETRY_S = 5.0  # Retry-After of a 503 for an artifact store that cannot be reached


async def artifact_store_error_handler(request: Request, exc: Exception) -> Response:
    """A 503 with Retry-After, naming the artifact store and the settings to check, for an
    ``worker.artifacts.ArtifactStoreError`` (unreachable, credentials or bucket refused)."""
    log.warning("%s %s: %s", request.method, request.url.path, exc)
    return await http_exception_handler(request, unavailable(str(exc), ARTIFACTS_RETRY_S))
