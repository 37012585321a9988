"""fetches.attempt_id: a unique id per call attempt, so a held (spilled) answer written again
after a crash between its write and the spill file's deletion is not stored twice.

Revision ID: 0005_fetch_idempotency
Revises: 0001
Create Date: 2026-12-03 08:10:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_fetch_idempotency"
down_revision: str | None = "0004_alert_ack"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # a nullable column and an index: plain ALTER TABLE on both backends (no table rebuild)
    op.add_column("fetches", sa.Column("attempt_id", sa.String(length=32), nullable=True))
    op.create_index(op.f("ix_fetches_attempt_id"), "fetches", ["attempt_id"], unique=True)


def downgrade() -> None:
    op.drop_index(op.f("ix_fetches_attempt_id"), table_name="fetches")
    with op.batch_alter_table("fetches") as batch:
        batch.drop_column("attempt_id")
