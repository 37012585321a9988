"""From stored history to stored alert transitions and the outbox rows they owe.

Loads what the pure rules need, folds their outcomes with the pure lifecycle, renders messages and
writes each transition with its messages in one transaction. Sends nothing (the notifier drains).

Inhibition: a per-creator ``api_error`` finding caused by an account-wide code (100/303/600/601/
602) never fires, paused or not: the one account alert speaks for it. While the account is
paused, ``stale`` findings do not fire either (nobody can be fetched; the account alert says why).
An inhibited finding leaves the alert as it was. Orphans: an open alert whose rule left the config,
or whose creator left the config or the rule's scope, is resolved at the first account evaluation
after a (re)configure; a pending one is dropped quietly, a firing one sends its resolution to the
channels its firing went to (the SPEC's "a resolution is always sent for a sent firing").
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from monitor import alerts, rules
from monitor.alerts import AlertState, Phase
from monitor.config import ApiErrorRule, BudgetRule, Config, Rule, StaleRule
from monitor.message import Language, MessageContext, Renderer
from monitor.model import Creator, Outcome, Severity, Variant, Verdict
from monitor.store import Store
from monitor.store.outbox import NewMessage

log = logging.getLogger(__name__)

#: account-wide codes: quota (303) and the account codes (100/600/601/602)
ACCOUNT_WIDE = (100, 303, 600, 601, 602)
_SEVERITY_ORDER = {Severity.INFO: 0, Severity.WARNING: 1, Severity.CRITICAL: 2}
#: how much history a rule may look back on (the longest baseline or window in practice)
HISTORY = timedelta(days=120)


def effective_rules(config: Config) -> tuple[Rule, ...]:
    """The configured rules, plus a built-in critical account alert for every account-wide code
    that no configured rule covers: running out of money or quota must never go unnoticed."""
    covered = {code for r in config.rules if isinstance(r, ApiErrorRule) for code in r.codes}
    uncovered = tuple(code for code in ACCOUNT_WIDE if code not in covered)
    if not uncovered:
        return config.rules
    builtin = ApiErrorRule(
        name="account-blocked", kind="api_error", codes=uncovered, severity=Severity.CRITICAL
    )
    return (*config.rules, builtin)


@dataclass(frozen=True, slots=True)
class SeriesFacts:
    """One creator × variant as the rules see it, gathered by the caller."""

    variant: Variant
    last_success_at: datetime | None
    consecutive_failures: int
    last_code: int | None
    tracked_since: datetime | None


class Alerting:
    """Evaluates rules for one creator or for the account and stores the transitions."""

    def __init__(self, config: Config, store: Store, *, clock: Callable[[], datetime]) -> None:
        self._store = store
        self._clock = clock
        self.reconfigure(config)

    def reconfigure(self, config: Config) -> None:
        self._config = config
        self._rules = effective_rules(config)
        self._renderer = Renderer(config.notify.templates_dir)
        self._orphans_swept = False
        self._tracked = {c.user_id: c.creator() for c in config.creators}

    async def evaluate_creator(
        self,
        creator_id: int,
        creator: Creator,
        facts: Sequence[SeriesFacts],
        account: rules.AccountSubject,
    ) -> int:
        """Run every creator-scope rule over each variant; returns the number of events queued."""
        now = self._clock()
        subjects = []
        for fact in facts:
            series = await self._store.series(creator_id, fact.variant, (now - HISTORY).date())
            subjects.append(
                rules.Subject(
                    creator=creator,
                    variant=fact.variant,
                    series=tuple(p for _, p in series),
                    now=now,
                    last_success_at=fact.last_success_at,
                    consecutive_failures=fact.consecutive_failures,
                    last_code=fact.last_code,
                    tracked_since=fact.tracked_since,
                )
            )
        queued = 0
        for rule in self._rules:
            if isinstance(rule, BudgetRule) or not rule.applies_to(creator):
                continue
            outcomes = [inhibit(rule, rules.evaluate(rule, s), s, account) for s in subjects]
            outcome = rules.combine(outcomes)
            if outcome is not None:
                variant = facts[0].variant if len(facts) == 1 else None
                queued += await self._apply(rule, outcome, now, creator_id, creator, variant)
        return queued

    async def evaluate_account(self, account: rules.AccountSubject) -> int:
        """Run the account-scope rules (budget, account-wide api errors); the first call after a
        (re)configure also resolves orphaned alerts."""
        queued = 0
        if not self._orphans_swept:
            queued += await self.resolve_orphans(account.now)
            self._orphans_swept = True
        for rule in self._rules:
            if rules.in_scope(rule, account):
                outcome = rules.evaluate(rule, account)
                queued += await self._apply(rule, outcome, account.now, None, None, None)
        return queued

    async def _apply(
        self,
        rule: Rule,
        outcome: Outcome,
        now: datetime,
        creator_id: int | None,
        creator: Creator | None,
        variant: Variant | None,
    ) -> int:
        row = await self._store.load_alert(rule.name, outcome.scope)
        before = None if row is None else _state_of(row)
        transition = alerts.step(before, outcome, rule, now, creator_id=creator_id)
        if not transition.changed and not transition.events:
            return 0
        after = transition.after
        messages: list[NewMessage] = []
        if after is not None:
            context = MessageContext(
                now=now, creator=creator, variant=variant, zone=self._config.budget.zone
            )
            names = self._config.rule_channels(rule)
            messages = [
                m for e in transition.events for m in self._messages(names, e, after, context)
            ]
        written = await self._store.commit_transition(
            None if after is None else _row_of(after),
            messages,
            now=now,
            # an update or drop must find the row as read; an insert is guarded by the index
            expect=row,
            drop_id=before.id if transition.dropped and before is not None else None,
        )
        if not written:
            # another instance stored its own evaluation of this alert first; theirs stands
            log.debug("alert %s for %s changed meanwhile; skipped", rule.name, outcome.scope)
            return 0
        for event in transition.events:
            assert after is not None
            log.info("alert %s %s for %s: %s", rule.name, event.value, after.scope, after.summary)
        return len(messages)

    async def resolve_orphans(self, now: datetime) -> int:
        """Resolve open alerts whose rule or creator is no longer in play; returns the number of
        messages queued (resolutions of sent firings, to the channels the firing went to)."""
        queued = 0
        for row in await self._store.open_alerts():
            reason = self._orphan_reason(row)
            if reason is None:
                continue
            queued += await self._resolve_orphan(row, reason, now)
        return queued

    def _orphan_reason(self, row: dict[str, Any]) -> str | None:
        rule = next((r for r in self._rules if r.name == row["rule"]), None)
        if rule is None:
            return f"the rule {row['rule']!r} was removed from the config"
        account_rule = isinstance(rule, BudgetRule | ApiErrorRule)
        if row["scope"] == rules.ACCOUNT_SCOPE:
            return None if account_rule else f"the rule {rule.name!r} is no longer account-wide"
        creator = self._tracked.get(row["scope"])
        if creator is None:
            return f"the creator {row['scope']} is no longer tracked"
        if isinstance(rule, BudgetRule) or not rule.applies_to(creator):
            return f"the creator {row['scope']} left the scope of the rule {rule.name!r}"
        return None

    async def _resolve_orphan(self, row: dict[str, Any], reason: str, now: datetime) -> int:
        before = _state_of(row)
        if before.state is Phase.PENDING:
            await self._store.commit_transition(None, [], now=now, expect=row, drop_id=before.id)
            log.info("pending alert %s for %s dropped: %s", before.rule, before.scope, reason)
            return 0
        details = {**before.details, "clear_summary": reason, "orphaned": True}
        after = replace(before, state=Phase.RESOLVED, resolved_at=now, details=details)
        messages: list[NewMessage] = []
        if before.firing_sent and before.id is not None:
            creator = self._tracked.get(before.scope) or _creator_of(row)
            context = MessageContext(now=now, creator=creator, zone=self._config.budget.zone)
            names = tuple(await self._store.firing_channels(before.id))
            messages = self._messages(names, alerts.Event.RESOLVED, after, context, note=reason)
        if await self._store.commit_transition(_row_of(after), messages, now=now, expect=row):
            log.info("alert %s for %s resolved: %s", before.rule, before.scope, reason)
            return len(messages)
        return 0

    def _messages(
        self,
        names: Sequence[str],
        event: alerts.Event,
        alert: AlertState,
        context: MessageContext,
        *,
        note: str | None = None,
    ) -> list[NewMessage]:
        """One message per configured channel in ``names`` that takes this severity; ``note``
        is a last line of our own (why an orphan resolved), added whatever the template."""
        out = []
        for channel in self._config.channels:
            if channel.name not in names:
                continue
            if _SEVERITY_ORDER[alert.severity] < _SEVERITY_ORDER[channel.min_severity]:
                continue
            language: Language = channel.language or self._config.notify.language
            message = self._renderer.render(event.value, alert, context, language)
            if message.error:
                log.warning(
                    "template for %s fell back to the built-in one: %s", channel.name, message.error
                )
            body = message.body if note is None else f"{message.body}\n_{_note(note, language)}_\n"
            out.append(
                NewMessage(
                    channel=channel.name,
                    event=event.value,
                    severity=alert.severity.value,
                    title=message.title,
                    body=body,
                )
            )
        return out


def inhibit(
    rule: Rule, outcome: Outcome, subject: rules.Subject, account: rules.AccountSubject
) -> Outcome:
    """``rules.inhibit`` plus this module's two inhibitions (see the module docstring)."""
    outcome = rules.inhibit(rule, outcome, subject, account)
    if not outcome.firing:
        return outcome
    if isinstance(rule, ApiErrorRule) and subject.last_code in ACCOUNT_WIDE:
        reason = f"code {subject.last_code} is account-wide: the account alert speaks for it"
    elif isinstance(rule, StaleRule) and account.pause_code is not None:
        reason = f"nothing can be fetched while the account is paused ({account.pause_code})"
    else:
        return outcome
    return Outcome(Verdict.UNKNOWN, outcome.scope, reason=reason)


def _note(reason: str, language: Language) -> str:
    return f"不再评估：{reason}" if language == "zh" else f"No longer evaluated: {reason}."


def _creator_of(row: dict[str, Any]) -> Creator | None:
    """The creator as the database remembers it (it may have left the config)."""
    if row.get("creator_id") is None:
        return None
    tags = tuple(row.get("creator_tags") or ())
    return Creator(user_id=row["scope"], name=row.get("creator_name") or "", tags=tags)


def _state_of(row: dict[str, Any]) -> AlertState:
    values = dict(row)
    values["severity"] = Severity(values["severity"])
    values["state"] = Phase(values["state"])
    values["details"] = values.get("details") or {}
    known = set(AlertState.__dataclass_fields__)
    return AlertState(**{k: v for k, v in values.items() if k in known})


def _row_of(state: AlertState) -> dict[str, Any]:
    row = asdict(state)
    row["severity"] = state.severity.value
    row["state"] = state.state.value
    row["details"] = dict(state.details)
    return row
