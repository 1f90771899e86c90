"""Dependencies shared by the routers, as ``Annotated`` types."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Annotated

import anyio
from celery import Celery
from fastapi import Depends, HTTPException, Path, Request, status
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from api.errors import STORE_ERRORS, too_many_requests
from api.ratelimit import rate_limiter
from worker.celery_app import celery_for
from worker.settings import Settings, get_settings
from worker.store import jobs, keys, sweeps
from worker.store.db import get_engine, made_engine
from worker.store.models import Job, Sweep

log = logging.getLogger(__name__)


def settings_now(request: Request) -> Settings:
    """The settings: ``get_settings()`` (read once, then cached), or what a test put in its
    place (``app.dependency_overrides[get_settings]``)."""
    provider = request.app.dependency_overrides.get(get_settings, get_settings)
    settings: Settings = provider()
    return settings


async def current_settings(request: Request) -> Settings:
    """``settings_now``, on the event loop. A dependency that is a plain function runs in a
    thread of the pool that serves every sync route, and each such hop waits for a thread and
    then for the event loop to take its result: under a burst of requests (RELIABILITY.md,
    "Hostile clients") every hop a route makes adds that wait, so the dependencies that do no
    I/O are async."""
    return settings_now(request)


SettingsDep = Annotated[Settings, Depends(current_settings)]


_closers: list[anyio.CapacityLimiter] = []  # made on first use: it needs the event loop


async def get_session(settings: SettingsDep) -> AsyncIterator[Session]:
    """A session for the request, closed (its connection back in the pool) after the response.

    Closing runs in a thread of its own small pool, not in the one that runs the routes: a
    request that holds a connection must never wait for a route's thread to give it back,
    else, with more requests at once than the pool has connections, the threads wait for
    connections held by requests that wait for threads, until the pool times out (500s). For
    the same reason the dependencies that read the store (``get_owner``, ``get_owned_job``)
    end their transactions, giving their connections back before the route's thread is
    awaited.

    Closing never raises a store error: it runs after the response is sent, where an exception
    can no longer be answered, and uvicorn would close the client's kept-alive connection
    (closing rolls back an open transaction, which fails when the store went away meanwhile;
    the dead connection is dropped from the pool all the same)."""
    engine = made_engine(settings.database_url)
    if engine is None:  # made (and its schema migrated) on first use, in a thread
        engine = await anyio.to_thread.run_sync(get_engine, settings.database_url)
    session = Session(engine, expire_on_commit=False)
    try:
        yield session
    finally:
        if not _closers:
            _closers.append(anyio.CapacityLimiter(4))
        try:
            await anyio.to_thread.run_sync(session.close, limiter=_closers[0])
        except STORE_ERRORS as e:
            log.warning(
                "closing a session: the job store is unreachable: %s", str(e).splitlines()[0]
            )


def get_celery(settings: SettingsDep) -> Celery:
    return celery_for(settings)


SessionDep = Annotated[Session, Depends(get_session)]
CeleryDep = Annotated[Celery, Depends(get_celery)]

_bearer = HTTPBearer(auto_error=False, description="An API key: `Authorization: Bearer <key>`.")
_api_key_header = APIKeyHeader(
    name="X-API-Key", auto_error=False, description="An API key: `X-API-Key: <key>`."
)


def get_owner(
    request: Request,
    settings: SettingsDep,
    session: SessionDep,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    header: Annotated[str | None, Depends(_api_key_header)],
) -> str:
    """Who is asking: the owner id of the request's API key (settings ``api_keys`` or
    ``gan keys create``), or "" when no key is configured and the service runs open.

    The key is looked up first, and only unknown keys count against the client address's
    budget of ``bad_keys_per_minute``: a valid key always works, even from an address that has
    spent its budget (tenants behind one NAT or proxy with a guesser), while past the budget
    every unknown key gets a 429 instead of a 401 until it refills (one more every 60 /
    bad_keys_per_minute seconds). Refusing before the lookup would not slow guessing any more
    than this (a 429 tells an unknown key as well as a 401 does; keys are 256-bit secrets) but
    would lock out every tenant behind the guesser's address. The address is the socket's
    peer, or what a trusted proxy (``trusted_proxies``) says it is, never a header of anyone
    else's."""
    owner = _owner(request, settings, session, bearer.credentials if bearer else header)
    session.commit()  # the key lookups' transaction ends: the connection goes back to the pool
    return owner


def _owner(request: Request, settings: Settings, session: Session, presented: str | None) -> str:
    """``get_owner``'s work, in the transaction it ends."""
    configured = {keys.hash_key(key) for key in settings.api_keys}
    if not configured and not keys.has_stored_keys(session):
        return ""
    challenge = {"WWW-Authenticate": "Bearer"}
    if not presented:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "this service needs an API key: send Authorization: Bearer <key> or X-API-Key: <key>",
            headers=challenge,
        )
    key_hash = keys.hash_key(presented)
    owner = keys.key_owner(key_hash) if key_hash in configured else None
    owner = owner or keys.stored_key_owner(session, key_hash)
    if owner is None:
        client = client_address(request)
        refuse_guessers(rate_limiter(settings, "bad-keys").take(client), client, settings)
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "unknown API key", headers=challenge)
    return owner


def client_address(request: Request) -> str:
    """The client's address: the socket's peer, or the one a trusted proxy forwarded."""
    return request.client.host if request.client is not None else "unknown"


def refuse_guessers(wait: float, client: str, settings: Settings) -> None:
    """429 when ``client`` must wait ``wait`` seconds before its next unknown key is answered."""
    if wait > 0:
        raise too_many_requests(
            f"too many unknown API keys from {client} (at most {settings.bad_keys_per_minute} "
            "a minute)",
            wait,
        )


OwnerDep = Annotated[str, Depends(get_owner)]

# What every route that needs a key may answer besides its own responses (routers add them).
AUTH_RESPONSES: dict[int | str, dict[str, object]] = {
    401: {"description": "An API key is needed, or the one sent is unknown."},
    429: {
        "description": "Too many unknown API keys from this client address (or, creating or "
        "resuming a job, too many jobs a minute for this key; streaming events or sampling, "
        "too many at once for this key); see Retry-After."
    },
}
STORE_DOWN = (
    "The job store is unreachable (or has no free connection); retry after Retry-After seconds "
    "(a job submission sent again with its Idempotency-Key never makes two jobs)."
)
# What every route that reads the job store may answer (routers add them; a route with a 503 of
# its own says both in its description: one status, one description).
STORE_RESPONSES: dict[int | str, dict[str, object]] = {503: {"description": STORE_DOWN}}


def charge_jobs(owner: str, settings: Settings, count: int = 1) -> None:
    """A 429 unless ``owner``'s key may start ``count`` more jobs now (``jobs_per_minute``; a
    sweep counts as its jobs). Without keys the service is open to this machine only, and
    unlimited."""
    if not owner:
        return
    wait = rate_limiter(settings, "jobs").take(owner, count)
    if wait > 0:
        raise too_many_requests(
            f"at most {settings.jobs_per_minute} jobs a minute per API key"
            + (f" (this sweep has {count})" if count > 1 else ""),
            wait,
        )


def rate_limited_owner(owner: OwnerDep, settings: SettingsDep) -> str:
    """The owner, if their key may start another job now (``charge_jobs``), else a 429."""
    charge_jobs(owner, settings)
    return owner


RateLimitedOwnerDep = Annotated[str, Depends(rate_limited_owner)]


def get_client_key(request: Request, owner: OwnerDep) -> str:
    """Whom a per-client bound counts for: the owner of the request's API key, or, when the
    service runs open (no keys), the client's address."""
    return f"key:{owner}" if owner else f"address:{client_address(request)}"


ClientKeyDep = Annotated[str, Depends(get_client_key)]


def get_owned_job(
    job_id: Annotated[str, Path(max_length=64, description="The job's id.")],
    session: SessionDep,
    owner: OwnerDep,
) -> Job:
    """The job, if it exists and belongs to the caller's key (else 404: another key's jobs are
    not there for it).

    The read's transaction ends here, giving its database connection back to the pool: the
    job stays loaded (``expire_on_commit=False``), a route that writes to it takes a connection
    again, and one that does not (samples, which generate for a while; an event stream, which
    lasts as long as its job) holds none meanwhile. Else a few dozen slow requests at once hold
    every connection of the pool, and the next requests time out waiting for one (a 500)."""
    job = jobs.get_job(session, job_id, owner)
    session.commit()
    if job is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no job with id {job_id!r}")
    return job


JobDep = Annotated[Job, Depends(get_owned_job)]


def get_owned_sweep(
    sweep_id: Annotated[str, Path(max_length=64, description="The sweep's id.")],
    session: SessionDep,
    owner: OwnerDep,
) -> Sweep:
    """The sweep, if it exists and belongs to the caller's key (else 404), read in a
    transaction that ends here, as ``get_owned_job``'s."""
    sweep = sweeps.get_sweep(session, sweep_id, owner)
    session.commit()
    if sweep is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no sweep with id {sweep_id!r}")
    return sweep


SweepDep = Annotated[Sweep, Depends(get_owned_sweep)]
