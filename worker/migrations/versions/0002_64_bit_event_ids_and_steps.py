"""64-bit event ids and steps: job_events.id, metric_points.id and step, and jobs.step,
total_steps and checkpoint_step become BIGINT on PostgreSQL, with the id sequences behind
job_events.id and metric_points.id (SERIAL made them 32-bit too).

SQLite's INTEGER is 64-bit already (and only an INTEGER PRIMARY KEY autoincrements), so the models
keep INTEGER there (``models.BigInt``) and there is nothing to do. On PostgreSQL each ALTER
rewrites its table under an exclusive lock: seconds for a million metric points.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

COLUMNS = {
    "job_events": ["id"],
    "metric_points": ["id", "step"],
    "jobs": ["step", "total_steps", "checkpoint_step"],
}
SEQUENCES = ["job_events", "metric_points"]  # their "id" columns were SERIAL


def _retype(column_type: str) -> None:
    """Every column of COLUMNS, and the sequences of SEQUENCES, to ``column_type``."""
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        return
    for table, columns in COLUMNS.items():
        changes = ", ".join(f"ALTER COLUMN {c} TYPE {column_type}" for c in columns)
        op.execute(f"ALTER TABLE {table} {changes}")
    for table in SEQUENCES:
        query = sa.text("SELECT pg_get_serial_sequence(:table, 'id')")
        sequence = bind.scalar(query, {"table": table})  # schema-qualified, quoted as needed
        op.execute(f"ALTER SEQUENCE {sequence} AS {column_type}")


def upgrade() -> None:
    _retype("BIGINT")


def downgrade() -> None:
    _retype("INTEGER")  # fails while a value exceeds 2**31 - 1
