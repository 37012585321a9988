"""Fetch attempts, their raw bodies and the daily metric series: written whole, read back in order.

One fetch (or a batch of them) is one transaction: the ``fetches`` row, the upserted points (or a
fans answer's follower counts, a notes answer's page), the raw body and the schedule's ``last_*``
fields. The store never sees the API token.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import ClauseElement, Select, bindparam, delete, func, insert, select, update
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from monitor.model import (
    COST_METRICS,
    METRICS,
    CoreData,
    DailyPoint,
    FollowerPoint,
    NotePage,
    Variant,
)
from monitor.ops.wallclock import Clock
from monitor.store.engine import StoreBase, prepared, upsert, utc_binder, write_later
from monitor.store.ledger import count_ledger
from monitor.store.schedule import write_attempts
from monitor.store.schema import (
    creators,
    daily_metrics,
    fetches,
    raw_responses,
    unreadable_answers,
)
from monitor.store.sources import put_followers, put_note_page
from monitor.store.variants import (
    VARIANT_COLUMNS,
    matches_variant,
    series_values,
    variant_of,
    variant_values,
)

_PK = ("creator_id", *VARIANT_COLUMNS, "date_key")


@dataclass(frozen=True, slots=True)
class FetchRecord:
    """One call attempt as the ``fetches`` table records it, with what it returned (if anything).

    ``error`` is None exactly when the attempt counts as a success for the schedule; the caller
    redacts it before it gets here.
    """

    creator_id: int
    variant: Variant
    started_at: datetime
    due_at: datetime | None = None
    latency_ms: int | None = None
    http_status: int | None = None
    code: int | None = None
    billed: bool = False
    error: str | None = None
    data: CoreData | None = None
    raw_body: str | None = None
    keep_raw: bool = True
    #: set when this attempt serves its due time: the schedule moves on in the same transaction
    next_due_at: datetime | None = None
    #: the attempt's unique id (``fetches.attempt_id``): ``store_held`` skips one already stored
    attempt_id: str | None = None
    #: the quota day whose ``billed`` count this call still owes (the gate could not write it
    #: after the call): counted in the transaction that stores the fetch
    billed_day: str | None = None
    #: the quarter hour of ``billed_day`` that count goes in (the ledger's ``slot_at``)
    billed_slot: datetime | None = None
    #: a ``fans`` answer's daily follower counts (stored in ``follower_counts``)
    followers: tuple[FollowerPoint, ...] | None = None
    #: a ``notes`` answer's page (stored in ``notes`` and ``note_observations``, seen at
    #: ``started_at``)
    note_page: NotePage | None = None
    #: set when the answer was billed but unreadable: its query (never the token), so the
    #: body is kept whole in ``unreadable_answers`` for ``reparse`` (retention never prunes it)
    unreadable_params: Mapping[str, str] | None = None

    def points(self) -> tuple[DailyPoint, ...]:
        """Every dated point: ``dailyData``, plus ``sumData`` when its day is not among them."""
        if self.data is None:
            return ()
        days = {point.date_key for point in self.data.daily}
        extra = () if self.data.summary.date_key in days else (self.data.summary,)
        return (*self.data.daily, *extra)


#: built once (run once per fetch): new statements cost more to build than to run
_INSERT_FETCHES = insert(fetches).returning(fetches.c.id, sort_by_parameter_order=True)
_RAW_ROW = ("fetch_id", "received_at", "body")


def _insert_raw(_dialect: str) -> ClauseElement:
    return insert(raw_responses).values(
        {name: bindparam(name, type_=raw_responses.c[name].type) for name in _RAW_ROW}
    )


def _points_upsert(dialect: str) -> ClauseElement:
    # built and compiled once (``prepared``): that costs more than running the statement
    stmt = upsert(dialect, daily_metrics).values(
        {name: bindparam(name, type_=daily_metrics.c[name].type) for name in _POINT_ROW}
    )
    updates = {name: stmt.excluded[name] for name in (*METRICS, "fetch_id", "updated_at")}
    return stmt.on_conflict_do_update(index_elements=list(_PK), set_=updates)


def _retrieved(done: asyncio.Future[int]) -> None:
    if not done.cancelled():
        done.exception()


#: a stored point's columns, in the order ``_upsert_points`` gives them
_POINT_ROW = (*_PK, *METRICS, "fetch_id", "updated_at")


def _metric_row(point: DailyPoint) -> tuple[Any, ...]:
    """The point's metrics in ``METRICS`` order; the API's 0 means "no price": a cost is
    never stored as free."""
    return tuple(
        (getattr(point, name) or None) if cost else getattr(point, name)
        for name, cost in _METRIC_IS_COST
    )


_METRIC_IS_COST = tuple((name, name in COST_METRICS) for name in METRICS)


def _stored_count(rec: FetchRecord) -> int:
    """What the attempt stored: points of core data, follower days, or notes on the page."""
    if rec.followers is not None:
        return len(rec.followers)
    if rec.note_page is not None:
        return len(rec.note_page.notes)
    return len(rec.points())


def _point_of(row: Any) -> DailyPoint:
    return DailyPoint(
        date_key=date.fromisoformat(row.date_key), **{name: row._mapping[name] for name in METRICS}
    )


class MetricsStore(StoreBase):
    """Writes fetches and their points; reads series, history and exports."""

    def __init__(self, engine: AsyncEngine, url: URL, clock: Clock) -> None:
        super().__init__(engine, url, clock)
        #: attempts waiting for the next group commit, each with what its caller awaits
        self._waiting: list[tuple[FetchRecord, asyncio.Future[int]]] = []
        self._committer: asyncio.Task[None] | None = None

    async def record_fetch(self, record: FetchRecord) -> int:
        """Store one attempt and return its id. Attempts that finish while another group is
        being written go together in the next transaction (group commit): one BEGIN and COMMIT
        for all of them. When that transaction fails, each of its callers gets the StoreError
        (and holds its own answer, as it would have alone).

        A caller that is cancelled while it waits does not take its attempt out: it is
        written with its group all the same (``close`` waits for that).
        """
        done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        done.add_done_callback(_retrieved)  # a cancelled caller no longer reads its failure
        self._waiting.append((record, done))
        if self._committer is None or self._committer.done():
            self._committer = asyncio.create_task(self._commit_groups())
        return await asyncio.shield(done)

    async def _commit_groups(self) -> None:
        while self._waiting:
            group, self._waiting = self._waiting, []
            try:
                ids = await self.record_fetches([record for record, _ in group])
            except Exception as exc:  # noqa: BLE001 - each caller gets it, as if alone
                for _, done in group:
                    done.set_exception(exc)
            except BaseException:
                for _, done in group:
                    done.cancel()
                raise
            else:
                for (_, done), fetch_id in zip(group, ids, strict=True):
                    done.set_result(fetch_id)

    async def close(self) -> None:
        if self._committer is not None:
            await asyncio.wait([self._committer])  # the attempts already handed over go first
        await super().close()

    async def record_fetches(self, records: Sequence[FetchRecord]) -> list[int]:
        """Store many attempts in ONE transaction (bulk ingest); ids in the order given."""
        if not records:
            return []
        async with self._write(lock_with_first_statement=True) as conn:
            return await self._store_records(conn, records)

    async def store_held(self, records: Sequence[FetchRecord]) -> int:
        """Store answers that were held while the database refused writes, in ONE transaction,
        skipping those whose ``attempt_id`` is already stored (a replay after a crash between
        the write and the spill file's deletion); returns how many were new."""
        if not records:
            return 0
        wanted = [rec.attempt_id for rec in records if rec.attempt_id is not None]
        async with self._write() as conn:
            known: set[str] = set()
            for start in range(0, len(wanted), 500):
                chunk = wanted[start : start + 500]
                found = await conn.execute(
                    select(fetches.c.attempt_id).where(fetches.c.attempt_id.in_(chunk))
                )
                known.update(str(value) for value in found.scalars())
            fresh = [r for r in records if r.attempt_id is None or r.attempt_id not in known]
            if fresh:
                await self._store_records(conn, fresh)
        return len(fresh)

    async def _store_records(
        self, conn: AsyncConnection, records: Sequence[FetchRecord]
    ) -> list[int]:
        ids = await self._insert_fetches(conn, records)
        now = self._clock()  # read with the write lock held (taken by the first statement)
        await self._upsert_points(conn, records, ids, now)
        await self._store_sources(conn, records, now)
        received_at = utc_binder(conn, raw_responses.c.received_at)(now)
        raws = [
            (fid, received_at, rec.raw_body)
            for rec, fid in zip(records, ids, strict=True)
            if rec.raw_body is not None and rec.keep_raw
        ]
        stmt = prepared(conn, "raw.insert", _insert_raw, _RAW_ROW)
        await write_later(conn, stmt, raws)  # on SQLite: with the commit
        await write_attempts(conn, records)
        await self._count_owed_billed(conn, records)
        return ids

    async def _store_sources(
        self, conn: AsyncConnection, records: Sequence[FetchRecord], now: datetime
    ) -> None:
        """The follower counts and note pages of the batch's fans and notes answers, and the
        paid answers this version could not read, kept whole."""
        followers = {rec.creator_id: rec.followers for rec in records if rec.followers}
        if followers:
            await put_followers(conn, self._upsert, followers, now)
        kept = [
            {
                "source": rec.variant.source,
                "creator_id": rec.creator_id,
                "params": dict(rec.unreadable_params),
                "body": rec.raw_body,
                "error": rec.error or "",
                "fetched_at": rec.started_at,
            }
            for rec in records
            if rec.unreadable_params is not None and rec.raw_body is not None
        ]
        if kept:
            await conn.execute(insert(unreadable_answers), kept)
        for rec in records:
            if rec.note_page is not None and rec.note_page.notes:
                await put_note_page(
                    conn, self._upsert, rec.creator_id, rec.note_page.notes, rec.started_at
                )

    async def store_reparsed(self, kept_id: int, record: FetchRecord) -> bool:
        """What ``reparse`` read at last from a kept answer (``record``: its creator, series
        and rows, ``started_at`` when it was paid for), stored and the answer marked read, in
        one transaction: no ``fetches`` row (no call was made) and no schedule move. False
        when another ``reparse`` marked it first (nothing written)."""
        async with self._write() as conn:
            marked = await conn.execute(
                update(unreadable_answers)
                .where(unreadable_answers.c.id == kept_id)
                .where(unreadable_answers.c.reparsed_at.is_(None))
                .values(reparsed_at=self._clock())
            )
            if marked.rowcount != 1:
                return False
            now = self._clock()
            await self._upsert_points(conn, [record], [None], now)
            await self._store_sources(conn, [record], now)
        return True

    async def billed_calls(self, since: datetime, until: datetime) -> list[tuple[datetime, int]]:
        """(when sent, how many) of the billed calls recorded within [since, until], oldest
        first: what the price per call is derived from (``policy.spend``)."""
        query = (
            select(fetches.c.started_at, func.count())
            .where(fetches.c.billed.is_(True))
            .where(fetches.c.started_at >= since, fetches.c.started_at <= until)
            .group_by(fetches.c.started_at)
            .order_by(fetches.c.started_at)
        )
        async with self._read() as conn:
            return [(at, int(n)) for at, n in (await conn.execute(query)).all()]

    async def unanswered_streak(self, limit: int = 50) -> tuple[int, datetime | None]:
        """How many of the latest calls got no answer at all (no code, no HTTP status: refused,
        timed out, reset), and when the first of them started; (0, None) when the latest call
        was answered."""
        query = (
            select(fetches.c.started_at, fetches.c.code, fetches.c.http_status)
            .order_by(fetches.c.id.desc())
            .limit(limit)
        )
        async with self._read() as conn:
            rows = (await conn.execute(query)).all()
        count, since = 0, None
        for started, code, status in rows:
            if code is not None or status is not None:
                break
            count, since = count + 1, started
        return count, since

    async def _count_owed_billed(
        self, conn: AsyncConnection, records: Sequence[FetchRecord]
    ) -> None:
        """The ledger's billed counts the gate could not write after the call, under the
        ledger day (and quarter hour) the gate gave them."""
        owed = [
            (rec.billed_slot, rec.billed_day)
            for rec in records
            if rec.billed_day is not None and rec.billed_slot is not None
        ]
        if owed:
            await count_ledger(conn, owed, billed=1)

    async def _insert_fetches(
        self, conn: AsyncConnection, records: Sequence[FetchRecord]
    ) -> list[int]:
        rows = [
            {
                "creator_id": rec.creator_id,
                **series_values(rec.variant),
                "due_at": rec.due_at,
                "started_at": rec.started_at,
                "latency_ms": rec.latency_ms,
                "http_status": rec.http_status,
                "code": rec.code,
                "billed": rec.billed,
                "error": rec.error,
                "points": _stored_count(rec),
                "attempt_id": rec.attempt_id,
            }
            for rec in records
        ]
        result = await conn.execute(_INSERT_FETCHES, rows)
        return [int(fid) for fid in result.scalars()]

    async def _upsert_points(
        self,
        conn: AsyncConnection,
        records: Sequence[FetchRecord],
        ids: Sequence[int | None],
        now: datetime,
    ) -> None:
        # one row per key: a later fetch in the batch wins, and PostgreSQL refuses to update
        # the same row twice in one statement
        rows: dict[tuple[Any, ...], tuple[Any, ...]] = {}
        updated_at = utc_binder(conn, daily_metrics.c.updated_at)(now)
        for rec, fetch_id in zip(records, ids, strict=True):
            series = (rec.creator_id, *variant_values(rec.variant).values())
            for point in rec.points():
                key = (*series, point.date_key.isoformat())
                rows[key] = (*key, *_metric_row(point), fetch_id, updated_at)
        stmt = prepared(conn, "points.upsert", _points_upsert, _POINT_ROW)
        await write_later(conn, stmt, list(rows.values()))  # on SQLite: with the commit

    async def series(
        self, creator_id: int, variant: Variant | None = None, since: date | None = None
    ) -> list[tuple[Variant, DailyPoint]]:
        """One creator's stored points, by variant then ascending day."""
        query = self._points_query(since).where(daily_metrics.c.creator_id == creator_id)
        if variant is not None:
            query = query.where(matches_variant(daily_metrics, variant))
        async with self._read() as conn:
            result = await conn.execute(query)
            return [(variant_of(row), _point_of(row)) for row in result]

    async def history_rows(
        self, user_id: str, *, since: date | None = None, variant: Variant | None = None
    ) -> list[dict[str, Any]]:
        """One creator's series as flat rows for ``history`` (empty if the creator is unknown)."""
        query = self._export_query(since).where(creators.c.user_id == user_id)
        if variant is not None:
            query = query.where(matches_variant(daily_metrics, variant))
        async with self._read() as conn:
            result = await conn.execute(query)
            return [dict(row._mapping) for row in result]

    async def export_rows(self, since: date | None = None) -> AsyncIterator[dict[str, Any]]:
        """Every creator's series as flat rows, streamed with constant memory.

        Holds a read transaction until exhausted or closed (``aclose()``), so consume it promptly.
        """
        query = self._export_query(since).execution_options(yield_per=1000)
        async with self._read() as conn:
            result = await conn.stream(query)
            async for row in result:
                yield dict(row._mapping)

    async def prune_raw(self, older_than: datetime) -> int:
        """Delete raw bodies received before ``older_than``; returns how many went."""
        async with self._write() as conn:
            result = await conn.execute(
                delete(raw_responses).where(raw_responses.c.received_at < older_than)
            )
            return int(result.rowcount)

    async def raw_body(self, fetch_id: int) -> str | None:
        """The raw response body kept for a fetch, if it is still kept."""
        async with self._read() as conn:
            body = await conn.scalar(
                select(raw_responses.c.body).where(raw_responses.c.fetch_id == fetch_id)
            )
            return None if body is None else str(body)

    @staticmethod
    def _points_query(since: date | None) -> Select[Any]:
        query = select(daily_metrics).order_by(*(daily_metrics.c[name] for name in _PK))
        if since is not None:
            query = query.where(daily_metrics.c.date_key >= since.isoformat())
        return query

    @staticmethod
    def _export_query(since: date | None) -> Select[Any]:
        m = daily_metrics.c
        query = (
            select(
                creators.c.user_id,
                creators.c.name,
                *(m[name] for name in (*VARIANT_COLUMNS, "date_key", *METRICS)),
                m.fetch_id,
                m.updated_at,
            )
            .join(creators, creators.c.id == m.creator_id)
            .order_by(*(m[name] for name in _PK))
        )
        if since is not None:
            query = query.where(m.date_key >= since.isoformat())
        return query
