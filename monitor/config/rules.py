"""The ``[[rules]]`` models, one per kind (threshold, change, stale, api_error, anomaly,
budget), told apart by ``kind``; what each rule evaluates lives in monitor/policy/rules.py."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, Field, StrictFloat, StrictInt, model_validator

from monitor.config.fields import Metric, Section, Year, parse_duration
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


class ThresholdRule(RuleBase):
    kind: Literal["threshold"]
    metric: Metric
    op: Literal["<", "<=", ">", ">=", "==", "!="]
    value: StrictFloat = Field(ge=-1e15, le=1e15)


def _parse_baseline(value: object) -> object:
    if value == "previous":
        return value
    return parse_duration(value, timedelta(days=365))


class ChangeRule(RuleBase):
    kind: Literal["change"]
    metric: Metric
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
    metric: Metric
    k: StrictFloat = Field(default=3.5, gt=0, le=100)
    window: StrictInt = Field(default=14, ge=3, le=365)
    min_points: StrictInt = Field(default=7, ge=3, le=365)


class BudgetRule(RuleBase):
    kind: Literal["budget"]
    level_pct: StrictFloat = Field(default=80, gt=0, le=100)


Rule = Annotated[
    ThresholdRule | ChangeRule | StaleRule | ApiErrorRule | AnomalyRule | BudgetRule,
    Field(discriminator="kind"),
]
RULE_KINDS = ("threshold", "change", "stale", "api_error", "anomaly", "budget")


RULE_MODELS: dict[str, type[BaseModel]] = {
    "threshold": ThresholdRule,
    "change": ChangeRule,
    "stale": StaleRule,
    "api_error": ApiErrorRule,
    "anomaly": AnomalyRule,
    "budget": BudgetRule,
}
