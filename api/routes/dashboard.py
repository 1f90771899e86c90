"""The web dashboard: ``/`` serves its page, ``/ui/…`` its JavaScript modules (app.js imports
the others; no build step), style sheet and icon (the files of ``api/dashboard``, shipped in the
package). The page talks to the API like any other client, so these files need no API key;
everything they show comes from the endpoints that do."""

from __future__ import annotations

import os
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse
from starlette.responses import Response
from starlette.staticfiles import PathLike, StaticFiles
from starlette.types import Scope

DASHBOARD_DIR = Path(__file__).resolve().parents[1] / "dashboard"
# Revalidate every time (cheap: the ETag answers 304), so a new version is never half-loaded.
NO_CACHE = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}

router = APIRouter(include_in_schema=False)


@router.get("/")
def dashboard() -> FileResponse:
    """The dashboard's page; its views are fragments: #/jobs, #/jobs/<id>, #/new."""
    return FileResponse(DASHBOARD_DIR / "index.html", headers=NO_CACHE)


class DashboardFiles(StaticFiles):
    """The dashboard's assets (mounted at ``/ui``), revalidated on every load."""

    def __init__(self) -> None:
        super().__init__(directory=DASHBOARD_DIR)

    def file_response(
        self, full_path: PathLike, stat_result: os.stat_result, scope: Scope, status_code: int = 200
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers.update(NO_CACHE)
        return response
