"""Acknowledgements from the console: who acknowledged an open alert and when (repeats stop
until it resolves), and an index on fetches.started_at for the console's calls-per-day view.

Revision ID: 0004_alert_ack
Revises: 0001
Create Date: 2026-12-03 08:10:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from monitor.store.schema import UTCDateTime

revision: str = "0004_alert_ack"
down_revision: str | None = "0003_alert_variant"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("alerts") as batch:
        batch.add_column(sa.Column("acked_at", UTCDateTime(), nullable=True))
        batch.add_column(sa.Column("acked_by", sa.String(length=32), nullable=True))
    op.create_index(op.f("ix_fetches_started_at"), "fetches", ["started_at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_fetches_started_at"), table_name="fetches")
    with op.batch_alter_table("alerts") as batch:
        batch.drop_column("acked_by")
        batch.drop_column("acked_at")
