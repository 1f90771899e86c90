"""Dependencies shared by the routers, as ``Annotated`` types."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from celery import Celery
from fastapi import Depends, HTTPException, Path, status
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from api.ratelimit import limiter_for
from worker import store
from worker.celery_app import celery_for
from worker.settings import Settings, get_settings

SettingsDep = Annotated[Settings, Depends(get_settings)]


def get_session(settings: SettingsDep) -> Iterator[Session]:
    with Session(store.get_engine(settings.database_url), expire_on_commit=False) as session:
        yield session


def get_celery(settings: SettingsDep) -> Celery:
    return celery_for(settings)


SessionDep = Annotated[Session, Depends(get_session)]
CeleryDep = Annotated[Celery, Depends(get_celery)]

_bearer = HTTPBearer(auto_error=False, description="An API key: `Authorization: Bearer <key>`.")
_api_key_header = APIKeyHeader(
    name="X-API-Key", auto_error=False, description="An API key: `X-API-Key: <key>`."
)


def get_owner(
    settings: SettingsDep,
    session: SessionDep,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    header: Annotated[str | None, Depends(_api_key_header)],
) -> str:
    """Who is asking: the owner id of the request's API key (settings ``api_keys`` or
    ``gan keys create``), or "" when no key is configured and the service runs open."""
    configured = {store.hash_key(key) for key in settings.api_keys}
    if not configured and not store.has_stored_keys(session):
        return ""
    presented = bearer.credentials if bearer is not None else header
    challenge = {"WWW-Authenticate": "Bearer"}
    if not presented:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "this service needs an API key: send Authorization: Bearer <key> or X-API-Key: <key>",
            headers=challenge,
        )
    key_hash = store.hash_key(presented)
    owner = store.key_owner(key_hash) if key_hash in configured else None
    owner = owner or store.stored_key_owner(session, key_hash)
    if owner is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "unknown API key", headers=challenge)
    return owner


OwnerDep = Annotated[str, Depends(get_owner)]


def rate_limited_owner(owner: OwnerDep, settings: SettingsDep) -> str:
    """The owner, if their key may start another job now (``jobs_per_minute``), else a 429.
    Without keys the service is open to this machine only, and unlimited."""
    if not owner:
        return owner
    wait = limiter_for(settings.jobs_per_minute).take(owner)
    if wait > 0:
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            f"at most {settings.jobs_per_minute} jobs a minute per API key; retry in {wait:.0f} s",
            headers={"Retry-After": str(max(1, round(wait)))},
        )
    return owner


RateLimitedOwnerDep = Annotated[str, Depends(rate_limited_owner)]


def get_owned_job(
    job_id: Annotated[str, Path(max_length=64, description="The job's id.")],
    session: SessionDep,
    owner: OwnerDep,
) -> store.Job:
    """The job, if it exists and belongs to the caller's key (else 404: another key's jobs are
    not there for it)."""
    job = store.get_job(session, job_id, owner)
    if job is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no job with id {job_id!r}")
    return job


JobDep = Annotated[store.Job, Depends(get_owned_job)]
