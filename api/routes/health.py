"""/livez: the process is up (no dependencies checked). /readyz: it can reach its job store, its
broker and its artifact store, so it can take requests."""

from __future__ import annotations

from functools import partial
from typing import Literal

from fastapi import APIRouter, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from api.deps import SettingsDep
from api.readiness import OK, check_artifacts, check_broker, check_database, run_checks

router = APIRouter(tags=["health"])

CHECK_DESCRIPTION = '"ok", or why the check failed (the error\'s type and message).'


class LiveOut(BaseModel):
    status: Literal["ok"] = "ok"


class ReadyChecks(BaseModel):
    database: str = Field(description=f"The job store: SELECT 1. {CHECK_DESCRIPTION}")
    broker: str = Field(
        description="The Celery broker: a connection (a file written in its folder for the "
        f"filesystem broker). {CHECK_DESCRIPTION}"
    )
    artifacts: str = Field(
        "ok",
        description="The artifact store (GAN_ARTIFACTS_URL): its root listed (an object "
        f"store's endpoint, credentials and bucket). {CHECK_DESCRIPTION}",
    )


class ReadyOut(BaseModel):
    status: Literal["ok", "unavailable"] = Field(description='"ok" when every check passed.')
    checks: ReadyChecks


@router.get("/livez", response_model=LiveOut)
async def livez() -> LiveOut:
    """The API process is up. Checks nothing else: for a liveness probe."""
    # async: answered on the event loop, never queued behind the thread pool's routes (a burst
    # of requests waiting for the job store or for sampling must not make the API look dead).
    return LiveOut()


@router.get(
    "/readyz",
    response_model=ReadyOut,
    responses={
        503: {
            "model": ReadyOut,
            "description": "A check failed; `checks` names it and says why.",
            "content": {
                "application/json": {
                    "example": {
                        "status": "unavailable",
                        "checks": {
                            "database": "ok",
                            "broker": "OperationalError: Error 111 connecting to "
                            "127.0.0.1:6379. Connection refused.",
                        },
                    }
                }
            },
        }
    },
)
def readyz(settings: SettingsDep) -> ReadyOut | JSONResponse:
    """The API can serve requests: its job store answers `SELECT 1`, its broker accepts a
    connection and its artifact store can be listed, each within 2 seconds (all at once). For a
    readiness probe: it never takes much longer than that."""
    results = run_checks(
        {
            "database": partial(check_database, settings),
            "broker": partial(check_broker, settings),
            "artifacts": partial(check_artifacts, settings),
        }
    )
    ready = ReadyOut(
        status="ok" if all(r == OK for r in results.values()) else "unavailable",
        checks=ReadyChecks(**results),
    )
    if ready.status == "ok":
        return ready
    return JSONResponse(ready.model_dump(), status_code=status.HTTP_503_SERVICE_UNAVAILABLE)
