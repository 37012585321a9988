"""Initial schema: creators, fetches, raw responses, daily metrics, schedule, budget, alerts,
outbox, silences, instances, and the latest_metrics view.

Revision ID: 0001
Revises:
Create Date: 2026-11-28 13:00:25.472563
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from monitor.store.schema import JSONText, UTCDateTime

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: a frozen copy (a migration must not change when monitor.store.schema does); portable SQL
LATEST_METRICS_VIEW = """
CREATE VIEW latest_metrics AS
SELECT c.user_id, c.name, m.creator_id, m.business, m.note_type, m.date_type, m.advertise,
       m.date_key, m.imp, m.read, m.engage, m.third_user_num, m.cpm, m.cpe, m.cpv, m.cpuv,
       m.fetch_id, m.updated_at
FROM daily_metrics AS m
JOIN creators AS c ON c.id = m.creator_id
WHERE m.date_key = (
    SELECT MAX(n.date_key) FROM daily_metrics AS n
    WHERE n.creator_id = m.creator_id AND n.business = m.business
      AND n.note_type = m.note_type AND n.date_type = m.date_type
      AND n.advertise = m.advertise
)
"""


def upgrade() -> None:
    op.create_table(
        "budget_days",
        sa.Column("day", sa.String(length=10), nullable=False),
        sa.Column("calls", sa.Integer(), server_default="0", nullable=False),
        sa.Column("billed", sa.Integer(), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint("day", name=op.f("pk_budget_days")),
    )
    op.create_table(
        "budget_state",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("tokens", sa.Float(), nullable=False),
        sa.Column("refilled_at", UTCDateTime(), nullable=False),
        sa.Column("paused_until", UTCDateTime(), nullable=True),
        sa.Column("pause_code", sa.Integer(), nullable=True),
        sa.Column("pause_reason", sa.Text(), nullable=True),
        sa.Column("rate_factor", sa.Float(), server_default="1.0", nullable=False),
        sa.Column("recent_sends", sa.Text(), nullable=True),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_budget_state")),
    )
    op.create_table(
        "creators",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.String(length=24), nullable=False),
        sa.Column("name", sa.Text(), server_default="", nullable=False),
        sa.Column("tags", JSONText(), server_default="[]", nullable=False),
        sa.Column("active", sa.Boolean(), server_default=sa.true(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_creators")),
        sa.UniqueConstraint("user_id", name=op.f("uq_creators_user_id")),
    )
    op.create_table(
        "instances",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("version", sa.String(length=32), nullable=False),
        sa.Column("started_at", UTCDateTime(), nullable=False),
        sa.Column("heartbeat_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_instances")),
    )
    op.create_table(
        "silences",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.String(length=24), nullable=True),
        sa.Column("rule", sa.String(length=100), nullable=True),
        sa.Column("tag", sa.String(length=100), nullable=True),
        sa.Column("starts_at", UTCDateTime(), nullable=False),
        sa.Column("ends_at", UTCDateTime(), nullable=False),
        sa.Column("reason", sa.Text(), server_default="", nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_silences")),
    )
    op.create_index(op.f("ix_silences_ends_at"), "silences", ["ends_at"], unique=False)

    op.create_table(
        "alerts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("rule", sa.String(length=100), nullable=False),
        sa.Column("creator_id", sa.Integer(), nullable=True),
        sa.Column("scope", sa.String(length=64), nullable=False),
        sa.Column("severity", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("metric", sa.String(length=32), nullable=True),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("baseline", sa.Float(), nullable=True),
        sa.Column("pending_since", UTCDateTime(), nullable=True),
        sa.Column("fired_at", UTCDateTime(), nullable=True),
        sa.Column("resolved_at", UTCDateTime(), nullable=True),
        sa.Column("last_seen_at", UTCDateTime(), nullable=True),
        sa.Column("hits", sa.Integer(), server_default="0", nullable=False),
        sa.Column("clears", sa.Integer(), server_default="0", nullable=False),
        sa.Column("firing_sent", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("last_notified_at", UTCDateTime(), nullable=True),
        sa.Column("repeats_sent", sa.Integer(), server_default="0", nullable=False),
        sa.Column("summary", sa.Text(), server_default="", nullable=False),
        sa.Column("details", JSONText(), nullable=True),
        sa.ForeignKeyConstraint(
            ["creator_id"], ["creators.id"], name=op.f("fk_alerts_creator_id_creators")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alerts")),
    )
    op.create_index(op.f("ix_alerts_creator_id"), "alerts", ["creator_id"], unique=False)
    op.create_index(
        "ux_alerts_rule_scope_open",
        "alerts",
        ["rule", "scope"],
        unique=True,
        sqlite_where=sa.text("state != 'resolved'"),
        postgresql_where=sa.text("state != 'resolved'"),
    )

    op.create_table(
        "fetches",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("creator_id", sa.Integer(), nullable=False),
        sa.Column("business", sa.String(length=16), nullable=False),
        sa.Column("note_type", sa.String(length=24), nullable=False),
        sa.Column("date_type", sa.String(length=8), nullable=False),
        sa.Column("advertise", sa.String(length=16), nullable=False),
        sa.Column("due_at", UTCDateTime(), nullable=True),
        sa.Column("started_at", UTCDateTime(), nullable=False),
        sa.Column("latency_ms", sa.Integer(), nullable=True),
        sa.Column("http_status", sa.Integer(), nullable=True),
        sa.Column("code", sa.Integer(), nullable=True),
        sa.Column("billed", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("points", sa.Integer(), server_default="0", nullable=False),
        sa.ForeignKeyConstraint(
            ["creator_id"], ["creators.id"], name=op.f("fk_fetches_creator_id_creators")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_fetches")),
    )
    op.create_index(
        op.f("ix_fetches_creator_id_started_at"),
        "fetches",
        ["creator_id", "started_at"],
        unique=False,
    )

    op.create_table(
        "schedule",
        sa.Column("creator_id", sa.Integer(), nullable=False),
        sa.Column("business", sa.String(length=16), nullable=False),
        sa.Column("note_type", sa.String(length=24), nullable=False),
        sa.Column("date_type", sa.String(length=8), nullable=False),
        sa.Column("advertise", sa.String(length=16), nullable=False),
        sa.Column("next_due_at", UTCDateTime(), nullable=False),
        sa.Column("last_attempt_at", UTCDateTime(), nullable=True),
        sa.Column("last_success_at", UTCDateTime(), nullable=True),
        sa.Column("last_code", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("consecutive_failures", sa.Integer(), server_default="0", nullable=False),
        sa.Column("broken_at", UTCDateTime(), nullable=True),
        sa.Column("broken_reason", sa.Text(), nullable=True),
        sa.Column("lease_owner", sa.String(length=64), nullable=True),
        sa.Column("lease_until", UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["creator_id"], ["creators.id"], name=op.f("fk_schedule_creator_id_creators")
        ),
        sa.PrimaryKeyConstraint(
            "creator_id",
            "business",
            "note_type",
            "date_type",
            "advertise",
            name=op.f("pk_schedule"),
        ),
    )
    op.create_index(op.f("ix_schedule_next_due_at"), "schedule", ["next_due_at"], unique=False)

    op.create_table(
        "daily_metrics",
        sa.Column("creator_id", sa.Integer(), nullable=False),
        sa.Column("business", sa.String(length=16), nullable=False),
        sa.Column("note_type", sa.String(length=24), nullable=False),
        sa.Column("date_type", sa.String(length=8), nullable=False),
        sa.Column("advertise", sa.String(length=16), nullable=False),
        sa.Column("date_key", sa.String(length=10), nullable=False),
        sa.Column("imp", sa.BigInteger(), nullable=True),
        sa.Column("read", sa.BigInteger(), nullable=True),
        sa.Column("engage", sa.BigInteger(), nullable=True),
        sa.Column("third_user_num", sa.BigInteger(), nullable=True),
        sa.Column("cpm", sa.Float(), nullable=True),
        sa.Column("cpe", sa.Float(), nullable=True),
        sa.Column("cpv", sa.Float(), nullable=True),
        sa.Column("cpuv", sa.Float(), nullable=True),
        sa.Column("fetch_id", sa.Integer(), nullable=True),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["creator_id"], ["creators.id"], name=op.f("fk_daily_metrics_creator_id_creators")
        ),
        sa.ForeignKeyConstraint(
            ["fetch_id"],
            ["fetches.id"],
            name=op.f("fk_daily_metrics_fetch_id_fetches"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint(
            "creator_id",
            "business",
            "note_type",
            "date_type",
            "advertise",
            "date_key",
            name=op.f("pk_daily_metrics"),
        ),
        sqlite_with_rowid=False,
    )
    op.create_index(op.f("ix_daily_metrics_date_key"), "daily_metrics", ["date_key"], unique=False)

    op.create_table(
        "notifications",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("alert_id", sa.Integer(), nullable=True),
        sa.Column("channel", sa.String(length=100), nullable=False),
        sa.Column("event", sa.String(length=16), nullable=False),
        sa.Column("severity", sa.String(length=16), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), server_default="pending", nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("not_before", UTCDateTime(), nullable=True),
        sa.Column("next_attempt_at", UTCDateTime(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("sent_at", UTCDateTime(), nullable=True),
        sa.Column("claimed_by", sa.String(length=64), nullable=True),
        sa.Column("claimed_until", UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["alert_id"],
            ["alerts.id"],
            name=op.f("fk_notifications_alert_id_alerts"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notifications")),
    )
    op.create_index(op.f("ix_notifications_alert_id"), "notifications", ["alert_id"], unique=False)
    op.create_index(
        op.f("ix_notifications_status_next_attempt_at"),
        "notifications",
        ["status", "next_attempt_at"],
        unique=False,
    )

    op.create_table(
        "raw_responses",
        sa.Column("fetch_id", sa.Integer(), nullable=False),
        sa.Column("received_at", UTCDateTime(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["fetch_id"],
            ["fetches.id"],
            name=op.f("fk_raw_responses_fetch_id_fetches"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("fetch_id", name=op.f("pk_raw_responses")),
    )
    op.create_index(
        op.f("ix_raw_responses_received_at"), "raw_responses", ["received_at"], unique=False
    )
    op.execute(LATEST_METRICS_VIEW)


def downgrade() -> None:
    op.execute("DROP VIEW IF EXISTS latest_metrics")
    op.drop_index(op.f("ix_raw_responses_received_at"), table_name="raw_responses")

    op.drop_table("raw_responses")
    op.drop_index(op.f("ix_notifications_status_next_attempt_at"), table_name="notifications")
    op.drop_index(op.f("ix_notifications_alert_id"), table_name="notifications")

    op.drop_table("notifications")
    op.drop_index(op.f("ix_daily_metrics_date_key"), table_name="daily_metrics")

    op.drop_table("daily_metrics")
    op.drop_index(op.f("ix_schedule_next_due_at"), table_name="schedule")

    op.drop_table("schedule")
    op.drop_index(op.f("ix_fetches_creator_id_started_at"), table_name="fetches")

    op.drop_table("fetches")
    op.drop_index("ux_alerts_rule_scope_open", table_name="alerts")
    op.drop_index(op.f("ix_alerts_creator_id"), table_name="alerts")

    op.drop_table("alerts")
    op.drop_index(op.f("ix_silences_ends_at"), table_name="silences")

    op.drop_table("silences")
    op.drop_table("instances")
    op.drop_table("creators")
    op.drop_table("budget_state")
    op.drop_table("budget_days")
