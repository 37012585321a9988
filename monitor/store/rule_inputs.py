"""What a creator's rules read after each fetch, in one read transaction: the series of every
variant and the alert of every (rule, variant), each in one statement (instead of one
transaction per variant and one per rule and variant)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy import Select, bindparam, func, select

from monitor.model import AlertState, DailyPoint, Variant
from monitor.store.alert_rows import state_of
from monitor.store.engine import StoreBase
from monitor.store.metrics import _PK, _point_of
from monitor.store.schema import alerts, daily_metrics
from monitor.store.variants import variant_of


@dataclass(frozen=True, slots=True)
class RuleInputs:
    """One creator's stored inputs to its rules."""

    #: each variant asked for: its points since the day asked, ascending
    series: dict[Variant, tuple[DailyPoint, ...]]
    #: (rule name, variant label): the open alert, else the newest resolved one; absent if none
    alerts: dict[tuple[str, str], AlertState]

    def alert(self, rule: str, variant: str) -> AlertState | None:
        return self.alerts.get((rule, variant))


#: built once: making these statements cost more than running them, once per fetch
_POINTS = (
    select(daily_metrics)
    .where(
        daily_metrics.c.creator_id == bindparam("creator_id"),
        daily_metrics.c.date_key >= bindparam("since"),
    )
    .order_by(*(daily_metrics.c[name] for name in _PK))
)


def _latest_alerts() -> Select[Any]:
    """The open alert, else the newest resolved one, of each (rule, variant) for a scope."""
    rank = (
        func.row_number()
        .over(
            partition_by=(alerts.c.rule, alerts.c.variant),
            order_by=((alerts.c.state == "resolved").asc(), alerts.c.id.desc()),
        )
        .label("cm_rank")
    )
    ranked = (
        select(alerts, rank)
        .where(
            alerts.c.scope == bindparam("scope"),
            alerts.c.rule.in_(bindparam("rules", expanding=True)),
        )
        .subquery()
    )
    return select(*(ranked.c[c.name] for c in alerts.columns)).where(ranked.c.cm_rank == 1)


_LATEST = _latest_alerts()


class RuleInputStore(StoreBase):
    """The rules' reads, gathered."""

    async def rule_inputs(
        self,
        creator_id: int,
        scope: str,
        variants: Sequence[Variant],
        since: date,
        rules: Iterable[str],
    ) -> RuleInputs:
        """The series of ``variants`` since ``since`` and the alerts of ``rules`` for
        ``scope`` (as ``series`` and ``load_alert`` would give them one by one)."""
        names = sorted(set(rules))
        wanted = {"creator_id": creator_id, "since": since.isoformat()}
        series: dict[Variant, list[DailyPoint]] = {v: [] for v in variants}
        found: dict[tuple[str, str], AlertState] = {}
        async with self._read() as conn:
            for row in await conn.execute(_POINTS, wanted):
                kept = series.get(variant_of(row))
                if kept is not None:
                    kept.append(_point_of(row))
            if names:
                found_rows = await conn.execute(_LATEST, {"scope": scope, "rules": names})
                rows: Any = found_rows.mappings()
                for alert_row in rows:
                    state = state_of(alert_row)
                    found[state.rule, state.variant] = state
        return RuleInputs({v: tuple(p) for v, p in series.items()}, found)
