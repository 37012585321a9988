"""The ``[[rules]]`` models, one per kind (threshold, change, stale, api_error, anomaly,
budget, and for the follower, note and balance sources: new_note, note, balance), told apart
by ``kind``; what each rule evaluates lives in monitor/policy/rules.py."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, Field, StrictFloat, StrictInt, model_validator

from monitor.config.fields import Section, SeriesMetric, Year, parse_duration
from monitor.model import Creator, Severity

GroupLabel = Literal["rule", "creator", "variant", "severity"]


class RuleBase(Section):
    name: str = Field(min_length=1)
    severity: Severity = Severity.WARNING
    channels: tuple[str, ...] | None = None  # None: every channel
    creators: tuple[str, ...] = ()  # user ids in scope; empty with empty tags: everyone
    tags: tuple[str, ...] = ()
    for_: StrictInt = Field(default=1, ge=1, le=1_000, alias="for")
    resolve_for: StrictInt = Field(default=1, ge=1, le=1_000)  # clear evaluations before resolving
    repeat: Year = timedelta(hours=24)
    max_repeats: StrictInt | None = Field(default=None, ge=0, le=10_000)
    #: what one grouped message shares (Alertmanager's group_by): the rule alone gathers every
    #: creator a wave fires for; ["rule", "creator"] keeps one message per creator
    group_by: tuple[GroupLabel, ...] = ("rule",)

    def applies_to(self, creator: Creator) -> bool:
        if not self.creators and not self.tags:
            return True
        return creator.user_id in self.creators or bool(set(self.tags) & set(creator.tags))


Op = Literal["<", "<=", ">", ">=", "==", "!="]


class ThresholdRule(RuleBase):
    kind: Literal["threshold"]
    metric: SeriesMetric
    op: Op
    value: StrictFloat = Field(ge=-1e15, le=1e15)


def _parse_baseline(value: object) -> object:
    if value == "previous":
        return value
    return parse_duration(value, timedelta(days=365))


class ChangeRule(RuleBase):
    kind: Literal["change"]
    metric: SeriesMetric
    baseline: Annotated[Literal["previous"] | timedelta, BeforeValidator(_parse_baseline)] = (
        "previous"
    )
    pct: StrictFloat | None = Field(default=None, ge=-100, le=1_000_000)
    abs_: StrictFloat | None = Field(default=None, ge=-1e15, le=1e15, alias="abs")

    @model_validator(mode="after")
    def _one_size(self) -> ChangeRule:
        if (self.pct is None) == (self.abs_ is None):
            raise ValueError(
                "give exactly one of 'pct' or 'abs' (negative: a fall, positive: a rise)"
            )
        if (self.pct or self.abs_) == 0:
            raise ValueError("'pct'/'abs' must not be 0; its sign gives the direction")
        return self


class StaleRule(RuleBase):
    kind: Literal["stale"]
    after: Year


class ApiErrorRule(RuleBase):
    kind: Literal["api_error"]
    codes: tuple[Annotated[StrictInt, Field(ge=0, le=99_999)], ...] = ()
    consecutive: StrictInt | None = Field(default=None, ge=1, le=10_000)

    @model_validator(mode="after")
    def _something(self) -> ApiErrorRule:
        if not self.codes and self.consecutive is None:
            raise ValueError("give 'codes' or 'consecutive' (or both)")
        return self


class AnomalyRule(RuleBase):
    kind: Literal["anomaly"]
    metric: SeriesMetric
    k: StrictFloat = Field(default=3.5, gt=0, le=100)
    window: StrictInt = Field(default=14, ge=3, le=365)
    min_points: StrictInt = Field(default=7, ge=3, le=365)


class BudgetRule(RuleBase):
    kind: Literal["budget"]
    level_pct: StrictFloat = Field(default=80, gt=0, le=100)


#: the common keys that shape a condition's lifecycle, which an event (once per note) has not
_LIFECYCLE_KEYS = {"for_": "for", "resolve_for": "resolve_for", "repeat": "repeat"}


class EventRule(RuleBase):
    """A rule that fires once per note: it never waits (``for``), repeats or resolves."""

    @model_validator(mode="after")
    def _no_lifecycle(self) -> EventRule:
        given = [key for name, key in _LIFECYCLE_KEYS.items() if name in self.model_fields_set]
        if "max_repeats" in self.model_fields_set:
            given.append("max_repeats")
        if given:
            raise ValueError(
                f"{', '.join(repr(k) for k in given)} do not apply to an event (new_note, "
                "note): it fires once per note, at once, and never repeats or resolves"
            )
        return self


class NewNoteRule(EventRule):
    """One message per note a creator published (an event: once per note, never repeated);
    the notes listed on the creator's first visit are the baseline, never announced. News, not
    trouble: ``info`` unless set."""

    kind: Literal["new_note"]
    severity: Severity = Severity.INFO


#: the totals a note-list page shows per note
NoteMetric = Literal["reads", "likes", "collects"]


class NoteRule(EventRule):
    """A note's totals against a value, once per note: while it is younger than ``within``
    (a hit), or once it is older than ``after`` (a flop)."""

    kind: Literal["note"]
    metric: NoteMetric
    op: Op
    value: StrictFloat = Field(ge=0, le=1e15)
    within: Year | None = None
    after: Year | None = None

    @model_validator(mode="after")
    def _one_age(self) -> NoteRule:
        if (self.within is None) == (self.after is None):
            raise ValueError(
                "give exactly one of 'within' (a hit while the note is younger, e.g. \"3d\") "
                "or 'after' (a flop once it is older)"
            )
        return self


class BalanceRule(RuleBase):
    """The account balance (account-wide, never grouped): below an amount in CNY and/or
    fewer days left at the derived spend rate; resolves when money is added."""

    kind: Literal["balance"]
    below: StrictFloat | None = Field(default=None, gt=0, le=1e12)
    days_left: StrictFloat | None = Field(default=None, gt=0, le=3650)

    @model_validator(mode="after")
    def _something(self) -> BalanceRule:
        if self.below is None and self.days_left is None:
            raise ValueError("give 'below' (CNY) or 'days_left' (or both)")
        return self


Rule = Annotated[
    ThresholdRule
    | ChangeRule
    | StaleRule
    | ApiErrorRule
    | AnomalyRule
    | BudgetRule
    | NewNoteRule
    | NoteRule
    | BalanceRule,
    Field(discriminator="kind"),
]
RULE_KINDS = (
    "threshold",
    "change",
    "stale",
    "api_error",
    "anomaly",
    "budget",
    "new_note",
    "note",
    "balance",
)


RULE_MODELS: dict[str, type[BaseModel]] = {
    "threshold": ThresholdRule,
    "change": ChangeRule,
    "stale": StaleRule,
    "api_error": ApiErrorRule,
    "anomaly": AnomalyRule,
    "budget": BudgetRule,
    "new_note": NewNoteRule,
    "note": NoteRule,
    "balance": BalanceRule,
}
