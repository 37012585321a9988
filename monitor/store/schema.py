"""The SQL tables of creator-monitor as SQLAlchemy Core metadata, and the column types they use.

Owns table and column definitions only; it runs no queries. Migrations in ``migrations/`` create
and change the schema; ``tests/store/test_migrations.py`` proves the two never drift apart.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    Text,
    false,
    text,
    true,
)
from sqlalchemy.types import TypeDecorator, TypeEngine

#: constraint names alembic can address later (batch mode on SQLite needs names for everything)
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)

#: fixed-width, so text order on SQLite is time order and ``datetime()`` still parses it
_SQLITE_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


class UTCDateTime(TypeDecorator[datetime]):
    """An aware datetime stored as UTC: ISO-8601 text on SQLite, ``timestamptz`` on PostgreSQL.

    Naive datetimes are refused: a naive value is a bug that would silently shift by hours.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(String(27))
        return dialect.type_descriptor(DateTime(timezone=True))

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value.isoformat()} refused; pass an aware UTC time")
        utc = value.astimezone(UTC)
        return utc.strftime(_SQLITE_TIME_FORMAT) if dialect.name == "sqlite" else utc

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        assert isinstance(value, datetime)
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class JSONText(TypeDecorator[Any]):
    """JSON kept as plain text on both backends, so ``sqlite3`` users can ``json_each`` it."""

    impl = Text()
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        if value is None:
            return None
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)

    def process_result_value(self, value: str | None, dialect: Dialect) -> Any:
        return None if value is None else json.loads(value)


class ExactDecimal(TypeDecorator[Decimal]):
    """Money, exactly: ``numeric`` on PostgreSQL; text on SQLite, whose NUMERIC affinity would
    turn ``'12.30'`` into a float. Read back as a ``Decimal`` on both."""

    impl = Text()
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(Numeric(asdecimal=True))
        return dialect.type_descriptor(Text())

    def process_bind_param(self, value: Decimal | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if not isinstance(value, Decimal) or not value.is_finite():
            raise ValueError(f"money must be a finite Decimal, got {value!r}")
        return value if dialect.name == "postgresql" else str(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        return value if isinstance(value, Decimal) else Decimal(str(value))


def _variant_columns(*, primary_key: bool) -> list[Column[str]]:
    """business / note_type / date_type / advertise: the upstream's own spelling of a variant."""
    return [
        Column("business", String(16), primary_key=primary_key, nullable=False),
        Column("note_type", String(24), primary_key=primary_key, nullable=False),
        Column("date_type", String(8), primary_key=primary_key, nullable=False),
        Column("advertise", String(16), primary_key=primary_key, nullable=False),
    ]


creators = Table(
    "creators",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("user_id", String(24), nullable=False, unique=True),
    Column("name", Text, nullable=False, server_default=""),
    Column("tags", JSONText, nullable=False, server_default="[]"),
    Column("active", Boolean, nullable=False, server_default=true()),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

fetches = Table(
    "fetches",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("creator_id", Integer, ForeignKey("creators.id"), nullable=False),
    *_variant_columns(primary_key=False),
    Column("source", String(8), nullable=False, server_default="core"),
    Column("due_at", UTCDateTime, nullable=True),
    Column("started_at", UTCDateTime, nullable=False),
    Column("latency_ms", Integer, nullable=True),
    Column("http_status", Integer, nullable=True),
    Column("code", Integer, nullable=True),
    Column("billed", Boolean, nullable=False, server_default=false()),
    Column("error", Text, nullable=True),
    Column("points", Integer, nullable=False, server_default="0"),
    #: the attempt's own id: a held answer written again after a crash is not a second row
    Column("attempt_id", String(32), nullable=True),
    Index(None, "creator_id", "started_at"),
    Index(None, "started_at"),  # the console's calls per day by code
    Index(None, "attempt_id", unique=True),
)

raw_responses = Table(
    "raw_responses",
    metadata,
    Column("fetch_id", Integer, ForeignKey("fetches.id", ondelete="CASCADE"), primary_key=True),
    Column("received_at", UTCDateTime, nullable=False, index=True),
    Column("body", Text, nullable=False),
)

daily_metrics = Table(
    "daily_metrics",
    metadata,
    Column("creator_id", Integer, ForeignKey("creators.id"), primary_key=True),
    *_variant_columns(primary_key=True),
    Column("date_key", String(10), primary_key=True),
    Column("imp", BigInteger, nullable=True),
    Column("read", BigInteger, nullable=True),
    Column("engage", BigInteger, nullable=True),
    Column("third_user_num", BigInteger, nullable=True),
    Column("cpm", Float, nullable=True),
    Column("cpe", Float, nullable=True),
    Column("cpv", Float, nullable=True),
    Column("cpuv", Float, nullable=True),
    Column("fetch_id", Integer, ForeignKey("fetches.id", ondelete="SET NULL"), nullable=True),
    Column("updated_at", UTCDateTime, nullable=False),
    Index(None, "date_key"),
    # clustered on the primary key: one creator's series is one contiguous range, and the
    # table carries no hidden rowid plus a second copy of the key in an index
    sqlite_with_rowid=False,
)

schedule = Table(
    "schedule",
    metadata,
    Column("creator_id", Integer, ForeignKey("creators.id"), primary_key=True),
    *_variant_columns(primary_key=True),
    #: the endpoint the series reads (``core``, ``fans``, ``notes``); fans and notes series
    #: keep the variant columns at their defaults (a fans series uses ``date_type``)
    Column("source", String(8), primary_key=True, nullable=False, server_default="core"),
    Column("next_due_at", UTCDateTime, nullable=False, index=True),
    Column("last_attempt_at", UTCDateTime, nullable=True),
    Column("last_success_at", UTCDateTime, nullable=True),
    Column("last_code", Integer, nullable=True),
    Column("last_error", Text, nullable=True),
    Column("consecutive_failures", Integer, nullable=False, server_default="0"),
    Column("broken_at", UTCDateTime, nullable=True),
    Column("broken_reason", Text, nullable=True),
    Column("lease_owner", String(64), nullable=True),
    Column("lease_until", UTCDateTime, nullable=True),
)

#: the call ledger, one row per quarter hour (UTC) and day label: the daily cap sums the quarter
#: hours of the local day in ``budget.timezone`` (every zone's midnight falls on a quarter hour),
#: so changing the zone moves the day's edges but cannot open a fresh day. ``day`` is the label
#: in the zone configured when the call was counted; the view ``budget_days`` sums by it.
budget_calls = Table(
    "budget_calls",
    metadata,
    Column("slot_at", UTCDateTime, primary_key=True),
    Column("day", String(10), primary_key=True),
    Column("calls", Integer, nullable=False, server_default="0"),
    Column("billed", Integer, nullable=False, server_default="0"),
)

budget_state = Table(
    "budget_state",
    metadata,
    Column("name", String(32), primary_key=True),
    Column("tokens", Float, nullable=False),
    Column("refilled_at", UTCDateTime, nullable=False),
    Column("paused_until", UTCDateTime, nullable=True),
    Column("pause_code", Integer, nullable=True),
    Column("pause_reason", Text, nullable=True),
    Column("rate_factor", Float, nullable=False, server_default="1.0"),
    # send times of the last 60 s, so a restart cannot overrun the per-minute cap
    Column("recent_sends", Text, nullable=True),
    # when the account pause began, and a fingerprint (never the token) of the token it was
    # answered to: an older answer never ends it, a changed token ends it at once
    Column("paused_at", UTCDateTime, nullable=True),
    Column("pause_token", String(16), nullable=True),
    Column("updated_at", UTCDateTime, nullable=False),
)

alerts = Table(
    "alerts",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("rule", String(100), nullable=False),
    Column("creator_id", Integer, ForeignKey("creators.id"), nullable=True, index=True),
    Column("scope", String(64), nullable=False),
    # the series' Variant.label ('' for account-wide alerts): identity is (rule, scope, variant)
    Column("variant", String(80), nullable=False, server_default=""),
    Column("severity", String(16), nullable=False),
    Column("state", String(16), nullable=False),
    Column("metric", String(32), nullable=True),
    Column("value", Float, nullable=True),
    Column("baseline", Float, nullable=True),
    Column("pending_since", UTCDateTime, nullable=True),
    Column("fired_at", UTCDateTime, nullable=True),
    Column("resolved_at", UTCDateTime, nullable=True),
    Column("last_seen_at", UTCDateTime, nullable=True),
    Column("hits", Integer, nullable=False, server_default="0"),
    Column("clears", Integer, nullable=False, server_default="0"),
    Column("firing_sent", Boolean, nullable=False, server_default=false()),
    Column("last_notified_at", UTCDateTime, nullable=True),
    Column("repeats_sent", Integer, nullable=False, server_default="0"),
    Column("summary", Text, nullable=False, server_default=""),
    Column("details", JSONText, nullable=True),
    # acknowledged (in the console): no more repeats until it resolves
    Column("acked_at", UTCDateTime, nullable=True),
    Column("acked_by", String(32), nullable=True),
    # at most one open (pending or firing) alert per rule, scope and variant; resolved ones pile up
    Index(
        "ux_alerts_rule_scope_variant_open",
        "rule",
        "scope",
        "variant",
        unique=True,
        sqlite_where=text("state != 'resolved'"),
        postgresql_where=text("state != 'resolved'"),
    ),
)

notifications = Table(
    "notifications",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("alert_id", Integer, ForeignKey("alerts.id", ondelete="SET NULL"), nullable=True),
    Column("channel", String(100), nullable=False),
    Column("event", String(16), nullable=False),
    Column("severity", String(16), nullable=False),
    Column("title", Text, nullable=False),
    Column("body", Text, nullable=False),
    Column("status", String(16), nullable=False, server_default="pending"),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("not_before", UTCDateTime, nullable=True),
    Column("next_attempt_at", UTCDateTime, nullable=False),
    Column("last_error", Text, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("sent_at", UTCDateTime, nullable=True),
    Column("claimed_by", String(64), nullable=True),
    Column("claimed_until", UTCDateTime, nullable=True),
    # messages of one group (event + the rule's group_by values) go out as one per channel;
    # grouping holds the entry's rank, its one-line form and the group's title in its language
    Column("group_key", String(300), nullable=True),
    Column("grouping", JSONText, nullable=True),
    # {"report": name, "period": key, "filename": …}: the stored report goes along as a file
    Column("attachment", JSONText, nullable=True),
    # an alert's message: the facts its template reads, rendered again at send time (None: the
    # row goes out as its title and body were queued)
    Column("facts", JSONText, nullable=True),
    Index(None, "status", "next_attempt_at"),
    Index(None, "alert_id"),
    Index(None, "channel", "group_key"),
)

report_runs = Table(
    "report_runs",
    metadata,
    # one row per [[reports]] entry and period: inserting it is the claim to send that period
    Column("name", String(100), primary_key=True),
    Column("period", String(40), primary_key=True),
    Column("instance", String(64), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("html", Text, nullable=False),
)

silences = Table(
    "silences",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("user_id", String(24), nullable=True),
    Column("rule", String(100), nullable=True),
    Column("tag", String(100), nullable=True),
    Column("starts_at", UTCDateTime, nullable=False),
    Column("ends_at", UTCDateTime, nullable=False, index=True),
    Column("reason", Text, nullable=False, server_default=""),
    Column("created_at", UTCDateTime, nullable=False),
)

instances = Table(
    "instances",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("host", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("version", String(32), nullable=False),
    Column("started_at", UTCDateTime, nullable=False),
    Column("heartbeat_at", UTCDateTime, nullable=False),
)


# --- issue sources: followers, notes, the account balance, and answers kept to read again

#: one follower count per creator and (Asia/Shanghai) day; a follower-history call backfills
#: its 30 or 90 days in one upsert
follower_counts = Table(
    "follower_counts",
    metadata,
    Column("creator_id", Integer, ForeignKey("creators.id"), primary_key=True),
    Column("date_key", String(10), primary_key=True),
    Column("fans", BigInteger, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    sqlite_with_rowid=False,
)

#: what does not change about a note once published; ``first_seen_at``: when the monitor first
#: listed it (the notes of a creator's first visit are the baseline, never announced as new)
notes = Table(
    "notes",
    metadata,
    Column("id", String(24), primary_key=True),
    Column("creator_id", Integer, ForeignKey("creators.id"), nullable=False),
    Column("title", Text, nullable=False, server_default=""),
    Column("published", String(10), nullable=False),
    Column("video", Boolean, nullable=False),
    Column("ad", Boolean, nullable=False),
    Column("brand", Text, nullable=True),
    Column("first_seen_at", UTCDateTime, nullable=False),
    Index(None, "creator_id", "published"),
)

#: a note's totals each time a note-list page showed it
note_observations = Table(
    "note_observations",
    metadata,
    Column("note_id", String(24), ForeignKey("notes.id", ondelete="CASCADE"), primary_key=True),
    Column("seen_at", UTCDateTime, primary_key=True),
    Column("reads", BigInteger, nullable=True),
    Column("likes", BigInteger, nullable=True),
    Column("collects", BigInteger, nullable=True),
    sqlite_with_rowid=False,
)

#: the account balance at each reading, exact
balance_readings = Table(
    "balance_readings",
    metadata,
    Column("read_at", UTCDateTime, primary_key=True),
    Column("balance", ExactDecimal, nullable=False),
    Column("currency", String(8), nullable=False, server_default="CNY"),
)

#: paid answers (code 0) this version could not read, whole, to read again with a newer one
#: (``reparse``); retention never deletes them
unreadable_answers = Table(
    "unreadable_answers",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("source", String(16), nullable=False),
    Column("creator_id", Integer, ForeignKey("creators.id"), nullable=True),
    Column("params", JSONText, nullable=False, server_default="{}"),
    Column("body", Text, nullable=False),
    Column("error", Text, nullable=False, server_default=""),
    Column("fetched_at", UTCDateTime, nullable=False),
    Column("reparsed_at", UTCDateTime, nullable=True),
    Index(None, "reparsed_at"),
)
