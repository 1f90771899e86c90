"""ASGI middleware."""

from __future__ import annotations

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
