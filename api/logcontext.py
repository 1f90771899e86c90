"""The job id on the log lines of requests about a job (``/jobs/{job_id}/…``)."""

from __future__ import annotations

import re

from starlette.types import ASGIApp, Receive, Scope, Send

from worker.logs import job_context

# The router has not matched the request yet when this runs, so the id is read from the path.
JOB_PATH = re.compile(r"^/jobs/([^/]{1,64})(?:/|$)")


class JobLogContext:
    """ASGI middleware: every line logged while answering ``/jobs/{job_id}…`` (uvicorn's
    access line included) carries that ``job_id``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = JOB_PATH.match(scope.get("path", "")) if scope["type"] == "http" else None
        if match is None:
            await self.app(scope, receive, send)
            return
        with job_context(match.group(1)):
            await self.app(scope, receive, send)
