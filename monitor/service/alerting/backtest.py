"""``rules test``: replay the stored daily series day by day through the pure rules and the pure
alert lifecycle, and report what would have fired and resolved, and when. Reads the store only:
writes no alert, queues no message, sends nothing.

What is replayed: the metric rules (threshold, change, anomaly), once per stored day per creator,
as if each day's point had arrived the next local midnight (one evaluation per day, so ``for = 2``
means two days). ``stale``, ``api_error`` and ``budget`` depend on fetch attempts and the budget,
not on the series, so they are not replayed. The lifecycle starts empty on ``since``; points
before it serve as baselines and trailing windows.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from monitor.config import AnomalyRule, ChangeRule, Config, Rule, ThresholdRule
from monitor.model import Creator, DailyPoint, Variant
from monitor.policy import lifecycle as alerts
from monitor.policy import rules
from monitor.policy.lifecycle import AlertState, Event
from monitor.store import Store

_REPORTED = (Event.FIRING, Event.RESOLVED)


@dataclass(frozen=True, slots=True)
class BacktestLine:
    """One event the rules would have produced: on ``day`` (the data date that caused it)."""

    day: date
    rule: str
    user_id: str
    name: str
    event: str  # firing | resolved
    severity: str
    summary: str
    metric: str | None = None
    value: float | None = None
    baseline: float | None = None
    change_pct: float | None = None

    @property
    def when(self) -> date:
        return self.day

    @property
    def scope(self) -> str:
        return self.user_id


def replayed_rules(config: Config) -> list[Rule]:
    return [r for r in config.rules if isinstance(r, ThresholdRule | ChangeRule | AnomalyRule)]


async def run_backtest(
    config: Config,
    store: Store,
    since: date | None = None,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> list[BacktestLine]:
    """Replay every tracked creator's stored series from ``since`` (None: its first point);
    lines ordered by day, then creator, then rule. ``progress(done, total)`` counts creators."""
    ruleset = replayed_rules(config)
    lines: list[BacktestLine] = []
    if not ruleset:
        return lines
    for done, entry in enumerate(config.creators, start=1):
        if progress is not None:
            progress(done - 1, len(config.creators))
        creator_id = await store.find_creator(entry.user_id)
        if creator_id is None:
            continue
        wanted = config.variants_of(entry)
        by_variant: dict[Variant, list[DailyPoint]] = {v: [] for v in wanted}
        for variant, point in await store.series(creator_id):
            if variant in by_variant:
                by_variant[variant].append(point)
        lines += replay(ruleset, entry.creator(), by_variant, since, config.budget.zone)
    if progress is not None:
        progress(len(config.creators), len(config.creators))
    return sorted(lines, key=lambda line: (line.day, line.user_id, line.rule))


def replay(
    ruleset: Sequence[Rule],
    creator: Creator,
    series: Mapping[Variant, Sequence[DailyPoint]],
    since: date | None,
    zone: ZoneInfo,
) -> list[BacktestLine]:
    """PURE: one creator's series (per variant, ascending) through the rules, day by day."""
    days = sorted({p.date_key for points in series.values() for p in points})
    if since is not None:
        days = [d for d in days if d >= since]
    # one alert per (rule, variant), as the daemon keeps them
    states: dict[tuple[str, Variant], AlertState | None] = {}
    lines: list[BacktestLine] = []
    for day in days:
        now = datetime.combine(day + timedelta(days=1), time(0), tzinfo=zone)
        subjects = [
            rules.Subject(creator=creator, variant=variant, series=prefix, now=now)
            for variant, points in series.items()
            if (prefix := tuple(p for p in points if p.date_key <= day))
        ]
        for rule, subject in ((r, s) for r in ruleset for s in subjects):
            if not rule.applies_to(creator):
                continue
            key = (rule.name, subject.variant)
            outcome = rules.evaluate(rule, subject)
            transition = alerts.step(
                states.get(key), outcome, rule, now, variant=subject.variant.label
            )
            states[key] = transition.after
            lines += [
                _line(day, creator, transition.after, event)
                for event in transition.events
                if event in _REPORTED and transition.after is not None
            ]
    return lines


def _line(day: date, creator: Creator, state: AlertState, event: Event) -> BacktestLine:
    return BacktestLine(
        day=day,
        rule=state.rule,
        user_id=creator.user_id,
        name=creator.name,
        event=event.value,
        severity=state.severity.value,
        # a resolution reads better with the reading that cleared it
        summary=str(state.details.get("clear_summary") or state.summary)
        if event is Event.RESOLVED
        else state.summary,
        metric=state.metric,
        value=state.value,
        baseline=state.baseline,
        change_pct=state.details.get("change_pct"),
    )
