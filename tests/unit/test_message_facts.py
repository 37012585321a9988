"""An alert message's facts, stored in the outbox row and rendered when it is sent: through JSON
and back, they render byte for byte what the alert itself renders, in both languages, grouped
or alone, with an orphan's note; a user template read at send time changes only the text."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from monitor.model import Creator, Severity, Variant
from monitor.notify.facts import (
    alert_facts,
    grouped_entry,
    readable,
    render_facts,
)
from monitor.notify.message import Language, MessageContext, group_entry
from monitor.notify.rendering import Renderer, render
from monitor.policy.grouping import rank
from monitor.policy.lifecycle import AlertState, Phase

LILY = Creator("5c3bf7f7000000000602fd63", "Lilyy", ("fitness",))
FIRED = datetime(2025, 12, 11, 2, 0, tzinfo=UTC)
SHANGHAI = ZoneInfo("Asia/Shanghai")
CTX = MessageContext(
    now=FIRED + timedelta(days=1, hours=3), creator=LILY, variant=Variant(), zone=SHANGHAI
)
DROP = AlertState(
    rule="reads-down-30pct-week",
    scope=LILY.user_id,
    variant=Variant().label,
    severity=Severity.WARNING,
    state=Phase.FIRING,
    metric="read",
    value=4260,
    baseline=7100.0,
    fired_at=FIRED,
    summary="read 7100 → 4260 (-40.0 %)",
    details={"kind": "change", "change_abs": -2840.0, "change_pct": -40.0, "date": "2025-12-10"},
)
DONE = replace(
    DROP,
    state=Phase.RESOLVED,
    resolved_at=FIRED + timedelta(hours=30),
    details={**DROP.details, "clear_value": 6900.0},
)
ACCOUNT = AlertState(
    rule="out-of-money",
    scope="account",
    severity=Severity.CRITICAL,
    state=Phase.FIRING,
    fired_at=FIRED,
    summary="account-wide error 601: all calls paused",
    details={"kind": "api_error", "code": 601, "reason": "INSUFFICIENT BALANCE"},
)
CASES = [
    ("firing", DROP, CTX),
    ("repeat", DROP, replace(CTX, variant=None)),
    ("resolved", DONE, CTX),
    ("firing", ACCOUNT, MessageContext(now=FIRED + timedelta(minutes=30), zone=SHANGHAI)),
    ("firing", DROP, MessageContext(now=FIRED, creator=Creator(LILY.user_id))),  # no name
]


def stored(facts: dict[str, Any]) -> dict[str, Any]:
    """The facts as the outbox row gives them back (the store's JSON column)."""
    text = json.dumps(facts, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    loaded: dict[str, Any] = json.loads(text)
    return loaded


@pytest.mark.parametrize("language", ["en", "zh"])
@pytest.mark.parametrize(("event", "alert", "context"), CASES)
def test_stored_facts_render_what_the_alert_renders(
    event: str, alert: AlertState, context: MessageContext, language: Language
) -> None:
    facts = stored(alert_facts(event, alert, context, language))
    assert readable(facts)
    assert render_facts(Renderer(), facts) == render(event, alert, context, language)
    assert grouped_entry(facts) == {
        "rank": rank(alert),
        **group_entry(event, alert, context, language),
    }


def test_an_orphans_note_ends_the_body_in_its_language() -> None:
    reason = "the rule 'reads-down' was removed from the config"
    en = render_facts(Renderer(), stored(alert_facts("resolved", DONE, CTX, "en", note=reason)))
    assert en.body == (
        render("resolved", DONE, CTX, "en").body + f"\n_No longer evaluated: {reason}._\n"
    )
    zh = render_facts(Renderer(), stored(alert_facts("resolved", DONE, CTX, "zh", note=reason)))
    assert zh.body.endswith(f"\n_不再评估：{reason}_\n")


def test_a_user_template_is_read_when_the_facts_are_rendered(tmp_path: Path) -> None:
    facts = stored(alert_facts("firing", DROP, CTX, "en"))
    before = render_facts(Renderer(tmp_path), facts)
    (tmp_path / "alert.en.j2").write_text("{{ creator.name }} {{ value_text }}\n{{ now }}")
    after = render_facts(Renderer(tmp_path), facts)
    assert before == render("firing", DROP, CTX, "en")
    assert (after.title, after.body) == ("Lilyy 4,260", "2025-12-12 13:00 Asia/Shanghai\n")


def test_facts_of_an_unknown_shape_are_not_rendered() -> None:
    assert not readable(None)
    assert not readable({**alert_facts("firing", DROP, CTX, "en"), "v": 99})
