"""worker_slots: each training slot's heartbeat (``worker.store.workers``), behind GET /workers
and the slot gauges of /metrics.

Revision ID: 0003_workers
Revises: 0002
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_workers"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "worker_slots",
        sa.Column("id", sa.String(length=255), nullable=False),
        sa.Column("worker", sa.String(length=255), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("slot", sa.Integer(), nullable=False),
        sa.Column("device", sa.String(length=64), nullable=False),
        sa.Column("threads", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_worker_slots_worker", "worker_slots", ["worker"], unique=False)
    op.create_index("ix_worker_slots_seen_at", "worker_slots", ["seen_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_worker_slots_seen_at", table_name="worker_slots")
    op.drop_index("ix_worker_slots_worker", table_name="worker_slots")
    op.drop_table("worker_slots")
