"""The call ledger by quarter hour: the daily cap follows the configured zone's day edges, so a
change of ``budget.timezone`` cannot open a fresh day; ``budget_days`` becomes a view over it.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from alembic import op

from monitor.store.schema import UTCDateTime

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: a frozen copy (a migration must not change when monitor.store.schema does); portable SQL
BUDGET_DAYS_VIEW = """
CREATE VIEW budget_days AS
SELECT day, SUM(calls) AS calls, SUM(billed) AS billed
FROM budget_calls
GROUP BY day
"""
#: the zone old day rows are placed in (the default ``budget.timezone``)
_OLD_ZONE = ZoneInfo("Asia/Shanghai")


def _quarter(moment: datetime) -> datetime:
    return moment.replace(minute=moment.minute - moment.minute % 15, second=0, microsecond=0)


def upgrade() -> None:
    ledger = op.create_table(
        "budget_calls",
        sa.Column("slot_at", UTCDateTime(), nullable=False),
        sa.Column("day", sa.String(length=10), nullable=False),
        sa.Column("calls", sa.Integer(), server_default="0", nullable=False),
        sa.Column("billed", sa.Integer(), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint("slot_at", "day", name=op.f("pk_budget_calls")),
    )
    conn = op.get_bind()
    old = conn.execute(sa.text("SELECT day, calls, billed FROM budget_days ORDER BY day")).all()
    now = datetime.now(UTC)
    rows = []
    for index, (day, calls, billed) in enumerate(old):
        # each old day at its midnight in the default zone; the newest one (today, if anything
        # was counted today) at the current quarter hour, inside today's window in any zone
        start = datetime.combine(date.fromisoformat(day), time(0), tzinfo=_OLD_ZONE)
        slot = start.astimezone(UTC)
        if index == len(old) - 1:
            slot = max(slot, min(_quarter(now), slot + timedelta(days=1, minutes=-15)))
        rows.append({"slot_at": slot, "day": day, "calls": calls, "billed": billed})
    if rows:
        op.bulk_insert(ledger, rows)
    op.drop_table("budget_days")
    op.execute(BUDGET_DAYS_VIEW)


def downgrade() -> None:
    op.execute("DROP VIEW IF EXISTS budget_days")
    days = op.create_table(
        "budget_days",
        sa.Column("day", sa.String(length=10), nullable=False),
        sa.Column("calls", sa.Integer(), server_default="0", nullable=False),
        sa.Column("billed", sa.Integer(), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint("day", name=op.f("pk_budget_days")),
    )
    conn = op.get_bind()
    summed = conn.execute(
        sa.text("SELECT day, SUM(calls), SUM(billed) FROM budget_calls GROUP BY day ORDER BY day")
    ).all()
    op.bulk_insert(days, [{"day": d, "calls": c, "billed": b} for d, c, b in summed])
    op.drop_table("budget_calls")
