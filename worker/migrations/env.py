"""Alembic's environment: run by ``worker.migrate`` (``alembic.command``) to migrate the job
store.

``worker.migrate`` passes the connection to migrate in ``config.attributes["connection"]``,
inside a transaction and holding the migration lock; the tables and ``alembic_version`` go to
that connection's default schema (on PostgreSQL, the first of the URL's ``search_path``).
"""

from __future__ import annotations

from typing import Any, Literal

from alembic import context
from alembic.autogenerate.api import AutogenContext
from sqlalchemy.engine import Connection

from worker.store.models import Base, UTCDateTime


def render_item(kind: str, obj: Any, autogen_context: AutogenContext) -> str | Literal[False]:
    """Write the store's own column types as plain SQLAlchemy ones, so that a migration never
    imports the models (which go on changing after it was written)."""
    if kind == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def run_migrations(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        compare_type=True,
        render_item=render_item,
        # New revisions use batch mode, on every database: SQLite cannot ALTER most things, so
        # there it copies the table; elsewhere it is plain ALTER TABLE. A revision generated
        # against either then runs on both.
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = context.config.attributes.get("connection")
if context.is_offline_mode() or connection is None:
    raise RuntimeError(
        "run the job store's migrations with `gan db upgrade` (worker.migrate), which configures "
        "Alembic and takes the migration lock; offline (--sql) mode is not supported"
    )
run_migrations(connection)
