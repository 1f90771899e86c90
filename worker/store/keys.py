"""API keys stored in the job store (``gan keys``), beside those in the settings
(``GAN_API_KEYS``): both name a key's owner the same way (``key_owner``)."""

from __future__ import annotations

import hashlib
import secrets

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from worker.store.models import ApiKey, utcnow


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def key_owner(key_hash: str) -> str:
    """The owner id of a key: the same whether the key is in the settings or the database."""
    return f"key-{key_hash[:16]}"


def create_api_key(session: Session, name: str) -> tuple[ApiKey, str]:
    """A new key named ``name``: (its row, the secret, which is shown once and never stored)."""
    secret = "gan_" + secrets.token_urlsafe(32)
    key_hash = hash_key(secret)
    key = ApiKey(id=key_owner(key_hash), name=name, key_hash=key_hash, created_at=utcnow())
    session.add(key)
    session.flush()
    return key, secret


def list_api_keys(session: Session) -> list[ApiKey]:
    return list(session.scalars(select(ApiKey).order_by(ApiKey.created_at)))


def revoke_api_key(session: Session, key_id: str) -> bool:
    """Delete the key; its jobs stay (with nobody left to read them but the database)."""
    deleted = session.execute(delete(ApiKey).where(ApiKey.id == key_id))
    return bool(deleted.rowcount)  # type: ignore[attr-defined]


def stored_key_owner(session: Session, key_hash: str) -> str | None:
    """The owner of the stored key with this hash, if there is one."""
    return session.scalar(select(ApiKey.id).where(ApiKey.key_hash == key_hash))


def has_stored_keys(session: Session) -> bool:
    return session.scalar(select(ApiKey.id).limit(1)) is not None
