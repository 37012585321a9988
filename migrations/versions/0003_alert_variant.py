"""Alerts are per (rule, creator, variant): a ``variant`` column and the open-alert index on it;
outbox rows carry the group they go out in (``group_key``, ``grouping``) and an attachment;
``report_runs`` claims each scheduled report's period once.

Existing creator alerts take the label of their creator's one tracked variant; a creator with
several keeps '' (the daemon resolves those open rows as superseded at its first evaluation).

Revision ID: 0003_alert_variant
Revises: 0001
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from monitor.store.schema import JSONText, UTCDateTime

revision: str = "0003_alert_variant"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_OPEN = "state != 'resolved'"

#: portable SQL (SQLite and PostgreSQL both spell concatenation ``||``)
_FILL = """
UPDATE alerts SET variant = (
    SELECT s.business || '/' || s.note_type || '/' || s.date_type || '/' || s.advertise
    FROM schedule AS s WHERE s.creator_id = alerts.creator_id
)
WHERE creator_id IS NOT NULL
  AND (SELECT COUNT(*) FROM schedule AS s WHERE s.creator_id = alerts.creator_id) = 1
"""


def upgrade() -> None:
    op.add_column(
        "alerts", sa.Column("variant", sa.String(length=80), server_default="", nullable=False)
    )
    op.execute(_FILL)
    op.drop_index("ux_alerts_rule_scope_open", table_name="alerts")
    op.create_index(
        "ux_alerts_rule_scope_variant_open",
        "alerts",
        ["rule", "scope", "variant"],
        unique=True,
        sqlite_where=sa.text(_OPEN),
        postgresql_where=sa.text(_OPEN),
    )
    op.add_column("notifications", sa.Column("group_key", sa.String(length=300), nullable=True))
    op.add_column("notifications", sa.Column("grouping", JSONText(), nullable=True))
    op.add_column("notifications", sa.Column("attachment", JSONText(), nullable=True))
    op.create_table(
        "report_runs",
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("period", sa.String(length=40), nullable=False),
        sa.Column("instance", sa.String(length=64), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("html", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("name", "period", name=op.f("pk_report_runs")),
    )
    op.create_index(
        op.f("ix_notifications_channel_group_key"),
        "notifications",
        ["channel", "group_key"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_table("report_runs")
    op.drop_index(op.f("ix_notifications_channel_group_key"), table_name="notifications")
    with op.batch_alter_table("notifications") as batch:
        batch.drop_column("attachment")
        batch.drop_column("grouping")
        batch.drop_column("group_key")
    op.drop_index("ux_alerts_rule_scope_variant_open", table_name="alerts")
    # several open variants of one (rule, scope) cannot share the old index: keep the newest
    op.execute(
        "DELETE FROM alerts WHERE state != 'resolved' AND id NOT IN ("
        "SELECT MAX(id) FROM alerts WHERE state != 'resolved' GROUP BY rule, scope)"
    )
    op.create_index(
        "ux_alerts_rule_scope_open",
        "alerts",
        ["rule", "scope"],
        unique=True,
        sqlite_where=sa.text(_OPEN),
        postgresql_where=sa.text(_OPEN),
    )
    with op.batch_alter_table("alerts") as batch:
        batch.drop_column("variant")
