"""Sweeps: a ``sweeps`` table (one row per POST /sweeps: its owner, Idempotency-Key and the
spec asked for) and a nullable ``jobs.sweep_id`` naming the sweep a job belongs to.

On SQLite the column and its foreign key are added by rebuilding ``jobs`` (a batch migration:
SQLite cannot add a constraint to a table); on PostgreSQL by plain ALTERs.

Revision ID: 0005_sweeps
Revises: 0004_webhooks
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_sweeps"
down_revision = "0004_webhooks"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sweeps",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("owner", sa.String(length=64), nullable=False),
        sa.Column("idempotency_key", sa.String(length=255), nullable=True),
        sa.Column("request_hash", sa.String(length=64), nullable=True),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("points", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("owner", "idempotency_key", name="uq_sweeps_owner_idempotency_key"),
    )
    op.create_index("ix_sweeps_owner_created", "sweeps", ["owner", "created_at", "id"])
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("sweep_id", sa.String(length=36), nullable=True))
        batch.create_index("ix_jobs_sweep_id", ["sweep_id"])
        batch.create_foreign_key(
            "fk_jobs_sweep_id_sweeps", "sweeps", ["sweep_id"], ["id"], ondelete="SET NULL"
        )


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_constraint("fk_jobs_sweep_id_sweeps", type_="foreignkey")
        batch.drop_index("ix_jobs_sweep_id")
        batch.drop_column("sweep_id")
    op.drop_table("sweeps")
