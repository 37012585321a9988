"""Sources beyond core_data (issue sources): daily follower counts, notes and their
observations, balance readings, and the paid answers this version could not read (kept whole
for ``reparse``). New tables only: every existing row stays as it is.

Revision ID: 0007_sources
Revises: 0006_pause_cause
Create Date: 2026-12-06 20:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from monitor.store.schema import ExactDecimal, JSONText, UTCDateTime

revision: str = "0007_sources"
down_revision: str | None = "0006_pause_cause"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "follower_counts",
        sa.Column("creator_id", sa.Integer(), nullable=False),
        sa.Column("date_key", sa.String(length=10), nullable=False),
        sa.Column("fans", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["creator_id"], ["creators.id"], name=op.f("fk_follower_counts_creator_id_creators")
        ),
        sa.PrimaryKeyConstraint("creator_id", "date_key", name=op.f("pk_follower_counts")),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "notes",
        sa.Column("id", sa.String(length=24), nullable=False),
        sa.Column("creator_id", sa.Integer(), nullable=False),
        sa.Column("title", sa.Text(), server_default="", nullable=False),
        sa.Column("published", sa.String(length=10), nullable=False),
        sa.Column("video", sa.Boolean(), nullable=False),
        sa.Column("ad", sa.Boolean(), nullable=False),
        sa.Column("brand", sa.Text(), nullable=True),
        sa.Column("first_seen_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["creator_id"], ["creators.id"], name=op.f("fk_notes_creator_id_creators")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notes")),
    )
    op.create_index(
        op.f("ix_notes_creator_id_published"), "notes", ["creator_id", "published"], unique=False
    )
    op.create_table(
        "note_observations",
        sa.Column("note_id", sa.String(length=24), nullable=False),
        sa.Column("seen_at", UTCDateTime(), nullable=False),
        sa.Column("reads", sa.BigInteger(), nullable=True),
        sa.Column("likes", sa.BigInteger(), nullable=True),
        sa.Column("collects", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(
            ["note_id"],
            ["notes.id"],
            name=op.f("fk_note_observations_note_id_notes"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("note_id", "seen_at", name=op.f("pk_note_observations")),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "balance_readings",
        sa.Column("read_at", UTCDateTime(), nullable=False),
        sa.Column("balance", ExactDecimal(), nullable=False),
        sa.Column("currency", sa.String(length=8), server_default="CNY", nullable=False),
        sa.PrimaryKeyConstraint("read_at", name=op.f("pk_balance_readings")),
    )
    op.create_table(
        "unreadable_answers",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("creator_id", sa.Integer(), nullable=True),
        sa.Column("params", JSONText(), server_default="{}", nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("error", sa.Text(), server_default="", nullable=False),
        sa.Column("fetched_at", UTCDateTime(), nullable=False),
        sa.Column("reparsed_at", UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["creator_id"],
            ["creators.id"],
            name=op.f("fk_unreadable_answers_creator_id_creators"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_unreadable_answers")),
    )
    op.create_index(
        op.f("ix_unreadable_answers_reparsed_at"),
        "unreadable_answers",
        ["reparsed_at"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_unreadable_answers_reparsed_at"), table_name="unreadable_answers")
    op.drop_table("unreadable_answers")
    op.drop_table("balance_readings")
    op.drop_table("note_observations")
    op.drop_index(op.f("ix_notes_creator_id_published"), table_name="notes")
    op.drop_table("notes")
    op.drop_table("follower_counts")
