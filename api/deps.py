"""Dependencies shared by the routers, as ``Annotated`` types."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from celery import Celery
from fastapi import Depends
from sqlalchemy.orm import Session

from worker.celery_app import celery_for
from worker.settings import Settings, get_settings
from worker.store import get_engine

SettingsDep = Annotated[Settings, Depends(get_settings)]


def get_session(settings: SettingsDep) -> Iterator[Session]:
    with Session(get_engine(settings.database_url), expire_on_commit=False) as session:
        yield session


def get_celery(settings: SettingsDep) -> Celery:
    return celery_for(settings)


SessionDep = Annotated[Session, Depends(get_session)]
CeleryDep = Annotated[Celery, Depends(get_celery)]
