"""ASGI middleware."""

from __future__ import annotations

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

FORM = b"application/x-www-form-urlencoded"


class CurlJSONBodies:
    """Read ``curl -d '{...}'`` bodies as JSON.

    ``curl -d`` labels its body application/x-www-form-urlencoded, which FastAPI will not parse
    as JSON. This relabels such bodies as JSON, but only for clients that are not browsers (no
    ``Origin`` header): a web page can send a form-encoded POST to another site without a CORS
    preflight, so accepting it from browsers would let any page queue jobs on a local service
    (CSRF). Browsers send ``Origin`` with every POST and keep FastAPI's strict check.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = scope["headers"]
            names = {name for name, _ in headers}
            is_form = any(n == b"content-type" and v.startswith(FORM) for n, v in headers)
            if is_form and b"origin" not in names:
                relabelled = [
                    (n, b"application/json" if n == b"content-type" else v) for n, v in headers
                ]
                scope = {**scope, "headers": relabelled}
        await self.app(scope, receive, send)


# The largest request body accepted: the largest dataset archive (gan.data.UploadLimits, 100 MiB)
# plus room for the multipart envelope, on the upload route; job specs and the other JSON bodies
# are a few hundred bytes, so elsewhere 1 MiB is plenty.
MAX_BODY_BYTES = 101 * 2**20
MAX_JSON_BODY_BYTES = 2**20
UPLOAD_PATHS = ("/datasets",)


class BodySizeLimit:
    """Refuse bodies over the limit of their route before they are read: 413 when
    Content-Length says so (``max_bytes`` for uploads, ``max_json_bytes`` elsewhere), 411 when
    a POST/PUT/PATCH has no Content-Length (a chunked body of unknown size), so that no request
    can fill the memory or the disk before the route's own checks run."""

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int = MAX_BODY_BYTES,
        max_json_bytes: int = MAX_JSON_BODY_BYTES,
    ) -> None:
        self.app, self.max_bytes, self.max_json_bytes = app, max_bytes, max_json_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in ("POST", "PUT", "PATCH"):
            problem = self._problem(scope)
            if problem is not None:
                await JSONResponse({"detail": problem[1]}, status_code=problem[0])(
                    scope, receive, send
                )
                return
        await self.app(scope, receive, send)

    def _problem(self, scope: Scope) -> tuple[int, str] | None:
        """(status, message) when the request's body must be refused, else None."""
        headers = dict(scope["headers"])
        length = headers.get(b"content-length")
        limit = self.max_bytes if scope["path"] in UPLOAD_PATHS else self.max_json_bytes
        if length is None and b"chunked" in headers.get(b"transfer-encoding", b""):
            return 411, "send a Content-Length header with the body"
        if length is not None and (not length.isdigit() or int(length) > limit):
            return 413, (
                f"the body is over the limit of {limit} bytes for {scope['method']} {scope['path']}"
            )
        return None
