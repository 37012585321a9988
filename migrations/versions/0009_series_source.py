"""A tracked series names its source (issue sources): ``schedule`` and ``fetches`` gain a
``source`` column (``core``, ``fans``, ``notes``), part of the schedule's primary key, so a
creator's follower and note series are scheduled, leased and recorded like its core variants.
Every existing row is core's: the column's default says so, and no row changes otherwise.

Revision ID: 0009_series_source
Revises: 0008_outbox_facts
Create Date: 2026-12-06 22:20:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009_series_source"
down_revision: str | None = "0008_outbox_facts"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_VARIANT = ("creator_id", "business", "note_type", "date_type", "advertise")


def upgrade() -> None:
    with op.batch_alter_table("fetches") as batch:
        batch.add_column(
            sa.Column("source", sa.String(length=8), nullable=False, server_default="core")
        )
    # SQLite rebuilds the table (batch mode); PostgreSQL swaps the primary key in place
    with op.batch_alter_table("schedule", recreate="auto") as batch:
        batch.add_column(
            sa.Column("source", sa.String(length=8), nullable=False, server_default="core")
        )
        batch.drop_constraint(op.f("pk_schedule"), type_="primary")
        batch.create_primary_key(op.f("pk_schedule"), [*_VARIANT, "source"])


def downgrade() -> None:
    # a fans or notes series has no place in the old key: its rows go
    op.execute(sa.text("DELETE FROM schedule WHERE source <> 'core'"))
    with op.batch_alter_table("schedule", recreate="auto") as batch:
        batch.drop_constraint(op.f("pk_schedule"), type_="primary")
        batch.create_primary_key(op.f("pk_schedule"), list(_VARIANT))
        batch.drop_column("source")
    with op.batch_alter_table("fetches") as batch:
        batch.drop_column("source")
