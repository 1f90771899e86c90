"""Error responses: every validation problem is a 422 that names its field, never a 500."""

from __future__ import annotations

import math
from typing import Any

from fastapi import Request
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response


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
        problem = {"loc": ["body"], "type": "value_error",
                   "msg": f"the body cannot be parsed: {reason}"}  # fmt: skip
        return JSONResponse(status_code=422, content={"detail": [problem]})
    if exc.status_code == 404 and exc.detail == "Not Found":
        exc = StarletteHTTPException(
            404,
            f"nothing at {request.method} {request.url.path}: no such route (ids and names are "
            "single path segments, without '/')",
        )
    return await http_exception_handler(request, exc)
