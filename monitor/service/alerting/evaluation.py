"""From stored history to stored alert transitions and the outbox rows they owe.

Loads what the pure rules need, folds their outcomes with the pure lifecycle, and writes each
transition with its messages in one transaction: each message carries its facts (what its
template reads) and its group, and the notifier renders it when it sends. Sends nothing.

An alert is one (rule, creator, series), one (rule, creator, note) for the note events
(``note:<noteId>``), or (rule, 'account'); messages name the series when the creator tracks
several of its source. Each rule reads only the series of its source (``rules.source_of``), and
only what the creator's active rules read is loaded. Inhibition is ``rules.inhibit``'s alone.
Orphans: an open alert whose rule left the config, whose creator left the config or the rule's
scope, whose series or source is no longer tracked, or that predates per-variant alerts, is
resolved at the first account evaluation after a (re)configure; a pending one is dropped
quietly, a firing one sends its resolution to the channels its firing went to (the SPEC's "a
resolution is always sent for a sent firing"), except an event's: an event never resolves
aloud.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from monitor.config import ApiErrorRule, BalanceRule, BudgetRule, Config, CreatorConfig, Rule
from monitor.model import (
    EVENT_KINDS,
    NO_VARIANT,
    NOTE_VARIANT_PREFIX,
    NOTES,
    Creator,
    Outcome,
    Severity,
    Variant,
    Verdict,
)
from monitor.notify.facts import alert_facts, render_facts
from monitor.notify.message import Language, MessageContext
from monitor.notify.rendering import Renderer
from monitor.policy import events, grouping, rules
from monitor.policy import lifecycle as alerts
from monitor.policy.lifecycle import AlertState, Phase
from monitor.store import Store
from monitor.store.alert_rows import OpenAlert
from monitor.store.outbox import NewMessage

log = logging.getLogger(__name__)

#: account-wide codes: quota (303) and the account codes (100/600/601/602)
ACCOUNT_WIDE = tuple(sorted(rules.ACCOUNT_WIDE_CODES))
_SEVERITY_ORDER = {Severity.INFO: 0, Severity.WARNING: 1, Severity.CRITICAL: 2}
#: how much history a rule may look back on (the longest baseline or window in practice)
HISTORY = timedelta(days=120)
#: the rules of the account, never of a creator
_ACCOUNT_ONLY = (BudgetRule, BalanceRule)


def effective_rules(config: Config) -> tuple[Rule, ...]:
    """The configured rules, plus built-in ones for what must never go unnoticed: a critical
    account alert for every account-wide code no configured rule covers (running out of money
    or quota), and a warning per creator whose paid answer this version could not read (code
    0 on a failed call: kept for ``reparse``), unless a rule names code 0 itself."""
    covered = {code for r in config.rules if isinstance(r, ApiErrorRule) for code in r.codes}
    builtins: list[Rule] = []
    uncovered = tuple(code for code in ACCOUNT_WIDE if code not in covered)
    if uncovered:
        builtins.append(
            ApiErrorRule(
                name="account-blocked",
                kind="api_error",
                codes=uncovered,
                severity=Severity.CRITICAL,
            )
        )
    if rules.UNREADABLE_CODE not in covered:
        builtins.append(
            ApiErrorRule(
                name="answer-unreadable",
                kind="api_error",
                codes=(rules.UNREADABLE_CODE,),
                severity=Severity.WARNING,
            )
        )
    return (*config.rules, *builtins)


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

    async def evaluate_creator(
        self,
        creator_id: int,
        creator: Creator,
        facts: Sequence[SeriesFacts],
        account: rules.AccountSubject,
        *,
        fresh: Collection[str] | None = None,
    ) -> int:
        """Run every creator-scope rule over each of the creator's series (one alert per rule
        and series, or per rule and note); returns the number of messages queued. ``fresh``:
        the sources whose stored data just changed (None: any may have); a rule that reads the
        data of another source is left as it is (``stale`` and ``api_error`` always run)."""
        now = self._clock()
        active = [
            r
            for r in self._rules
            if not isinstance(r, _ACCOUNT_ONLY)
            and r.applies_to(creator)
            and (fresh is None or rules.source_of(r) in (None, *fresh))
        ]
        tracked = {fact.variant.source for fact in facts}
        reading = {rules.source_of(r) for r in active} & tracked
        wanted = events.notes_wanted(active, now) if NOTES in reading else None
        inputs = await self._store.rule_inputs(
            creator_id,
            creator.user_id,
            [fact.variant for fact in facts if fact.variant.source in reading - {NOTES}],
            (now - HISTORY).date(),
            [rule.name for rule in active],
            notes_wanted=wanted,
        )
        subjects = [
            rules.Subject(
                creator=creator,
                variant=fact.variant,
                series=inputs.series.get(fact.variant, ()),
                now=now,
                last_success_at=fact.last_success_at,
                consecutive_failures=fact.consecutive_failures,
                last_code=fact.last_code,
                tracked_since=fact.tracked_since,
                notes=inputs.notes if fact.variant.source == NOTES else (),
                notes_since=inputs.notes_since if fact.variant.source == NOTES else None,
            )
            for fact in facts
        ]
        # a rule of one source names the series only among several of that source (a
        # creator's followers go without saying); stale and api_error among all the creator's
        per_source = [fact.variant.source for fact in facts]
        queued = 0
        for rule in active:
            for subject in subjects:
                if not rules.in_scope(rule, subject):
                    continue
                keyed = rules.outcomes(rule, subject)
                if rule.kind in EVENT_KINDS:
                    keyed += _held(rule, subject, inputs.alerts, {key for key, _ in keyed})
                among = per_source.count(subject.variant.source)
                named = (len(facts) if rules.source_of(rule) is None else among) > 1
                shown = subject.variant if named else None
                for key, found in keyed:
                    outcome = rules.inhibit(rule, found, subject, account)
                    before = inputs.alert(rule.name, key)
                    queued += await self._apply(
                        rule, outcome, now, creator_id, creator, key, shown, before
                    )
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
                before = await self._store.load_alert(rule.name, outcome.scope, NO_VARIANT)
                queued += await self._apply(
                    rule, outcome, account.now, None, None, NO_VARIANT, None, before
                )
        return queued

    async def _apply(
        self,
        rule: Rule,
        outcome: Outcome,
        now: datetime,
        creator_id: int | None,
        creator: Creator | None,
        key: str,
        shown: Variant | None,
        before: AlertState | None,
    ) -> int:
        """Fold one outcome into the alert of (rule, scope, variant ``key``), stored as
        ``before``; ``shown`` is the series to name in messages (None: it goes without
        saying)."""
        transition = alerts.step(before, outcome, rule, now, creator_id=creator_id, variant=key)
        if not transition.changed and not transition.events:
            return 0
        after = transition.after
        messages: list[NewMessage] = []
        if after is not None:
            context = MessageContext(
                now=now, creator=creator, variant=shown, zone=self._config.budget.zone
            )
            names = self._config.rule_channels(rule)
            messages = [
                m
                for e in transition.events
                for m in self._messages(names, e, after, context, group_by=rule.group_by)
            ]
        written = await self._store.commit_transition(
            after,
            messages,
            now=now,
            # an update or drop must find the row as read; an insert is guarded by the index
            expect=before,
            drop_id=before.id if transition.dropped and before is not None else None,
        )
        if not written:
            # another instance stored its own evaluation of this alert first; theirs stands
            log.debug("alert %s for %s changed meanwhile; skipped", rule.name, outcome.scope)
            return 0
        for event in transition.events:
            assert after is not None
            where = f"{after.scope} ({after.variant})" if shown is not None else after.scope
            log.info("alert %s %s for %s: %s", rule.name, event.value, where, after.summary)
        return len(messages)

    async def resolve_orphans(self, now: datetime) -> int:
        """Resolve open alerts whose rule or creator is no longer in play; returns the number of
        messages queued (resolutions of sent firings, to the channels the firing went to)."""
        queued = 0
        rows = await self._store.open_alerts()
        # the entries of the few creators with open alerts, in one pass over the config (not an
        # index of 100,000 kept for a sweep that runs at start and on reload)
        scopes = {row.alert.scope for row in rows}
        tracked = {c.user_id: c for c in self._config.creators if c.user_id in scopes}
        for row in rows:
            reason = self._orphan_reason(row.alert, tracked)
            if reason is None:
                continue
            queued += await self._resolve_orphan(row, reason, now, tracked.get(row.alert.scope))
        return queued

    def _orphan_reason(self, alert: AlertState, tracked: Mapping[str, CreatorConfig]) -> str | None:
        rule = next((r for r in self._rules if r.name == alert.rule), None)
        if rule is None:
            return f"the rule {alert.rule!r} was removed from the config"
        account_rule = isinstance(rule, BudgetRule | BalanceRule | ApiErrorRule)
        if alert.scope == rules.ACCOUNT_SCOPE:
            return None if account_rule else f"the rule {rule.name!r} is no longer account-wide"
        creator = tracked.get(alert.scope)
        if creator is None:
            return f"the creator {alert.scope} is no longer tracked"
        if isinstance(rule, _ACCOUNT_ONLY) or not rule.applies_to(creator):
            return f"the creator {alert.scope} left the scope of the rule {rule.name!r}"
        return self._variant_gone(alert, creator)

    def _variant_gone(self, alert: AlertState, entry: CreatorConfig) -> str | None:
        if alert.variant == NO_VARIANT:
            return "alerts are now kept per variant; this one, for the creator as a whole, ends"
        # a note's event lives on the creator's note list
        series = NOTES if alert.variant.startswith(NOTE_VARIANT_PREFIX) else alert.variant
        if series not in {v.label for _, v in self._config.series_of(entry)}:
            return f"the variant {alert.variant} is no longer tracked"
        return None

    async def _resolve_orphan(
        self, row: OpenAlert, reason: str, now: datetime, entry: CreatorConfig | None
    ) -> int:
        before = row.alert
        if before.state is Phase.PENDING:
            await self._store.commit_transition(None, [], now=now, expect=before, drop_id=before.id)
            log.info("pending alert %s for %s dropped: %s", before.rule, before.scope, reason)
            return 0
        details = {**before.details, "clear_summary": reason, "orphaned": True}
        after = replace(before, state=Phase.RESOLVED, resolved_at=now, details=details)
        messages: list[NewMessage] = []
        event = before.variant.startswith(NOTE_VARIANT_PREFIX)  # told once, never resolved aloud
        if before.firing_sent and before.id is not None and not event:
            creator = entry or row.creator
            context = MessageContext(now=now, creator=creator, zone=self._config.budget.zone)
            names = tuple(await self._store.firing_channels(before.id))
            messages = self._messages(names, alerts.Event.RESOLVED, after, context, note=reason)
        if await self._store.commit_transition(after, messages, now=now, expect=before):
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
        group_by: Sequence[str] | None = None,
    ) -> list[NewMessage]:
        """One message per configured channel in ``names`` that takes this severity; ``note``
        is a last line of our own (why an orphan resolved), added whatever the template.
        A creator's alert joins the group ``group_by`` names (account alerts go alone, now)."""
        grouped = group_by is not None and alert.scope != rules.ACCOUNT_SCOPE
        key = grouping.group_key(event.value, alert, group_by or ()) if grouped else None
        out = []
        for channel in self._config.channels:
            if channel.name not in names:
                continue
            if _SEVERITY_ORDER[alert.severity] < _SEVERITY_ORDER[channel.min_severity]:
                continue
            language: Language = channel.language or self._config.notify.language
            # the facts go along: the notifier renders them again when it sends
            facts = alert_facts(event.value, alert, context, language, note=note)
            message = render_facts(self._renderer, facts)  # the text as queued
            out.append(
                NewMessage(
                    channel=channel.name,
                    event=event.value,
                    severity=alert.severity.value,
                    title=message.title,
                    body=message.body,
                    group_key=key,
                    facts=facts,
                )
            )
        return out


def _held(
    rule: Rule,
    subject: rules.Subject,
    found: Mapping[tuple[str, str], AlertState],
    judged: set[str],
) -> list[tuple[str, Outcome]]:
    """An UNKNOWN outcome for each open alert of the event ``rule`` on a note it did not judge
    now: the lifecycle resolves it quietly once its hold has passed."""
    scope = subject.creator.user_id
    return [
        (variant, Outcome(Verdict.UNKNOWN, scope, reason="the note is not judged now"))
        for (name, variant), alert in found.items()
        if name == rule.name
        and alert.open
        and variant not in judged
        and variant.startswith(NOTE_VARIANT_PREFIX)
    ]
