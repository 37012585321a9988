"""What an account pause was recorded under: when it began (an answer to a call sent before
that never ends it) and a short fingerprint of the token it was answered to (a changed token
ends it at once). Never the token itself.

Revision ID: 0006_pause_cause
Revises: 0005_fetch_idempotency
Create Date: 2026-12-06 16:30:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from monitor.store.schema import UTCDateTime

revision: str = "0006_pause_cause"
down_revision: str | None = "0005_fetch_idempotency"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("budget_state") as batch:
        batch.add_column(sa.Column("paused_at", UTCDateTime(), nullable=True))
        batch.add_column(sa.Column("pause_token", sa.String(length=16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("budget_state") as batch:
        batch.drop_column("pause_token")
        batch.drop_column("paused_at")
