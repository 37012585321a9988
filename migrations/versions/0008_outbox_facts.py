"""The outbox keeps an alert message's facts (what its template reads) so the notifier renders
it when it sends: a template fixed while a message waits reaches that message. Rows queued
before this revision have no facts and go out as their stored title and body.

Revision ID: 0008_outbox_facts
Revises: 0007_sources
Create Date: 2026-12-06 19:45:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from monitor.store.schema import JSONText

revision: str = "0008_outbox_facts"
down_revision: str | None = "0007_sources"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("notifications") as batch:
        batch.add_column(sa.Column("facts", JSONText(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("notifications") as batch:
        batch.drop_column("facts")
