"""The delivery decision as the notifier asks it, per queued outbox row: rows about no alert
answer to quiet hours only; an alert's row to its alert's fate, silences and quiet hours; the
config's quiet windows land on their channels, in the budget's zone."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from monitor.config import parse_config
from monitor.policy.delivery import (
    Action,
    Decision,
    DeliveryPolicy,
    QuietHours,
    silence_of,
)

UID = "5c3bf7f7000000000602fd63"
SHANGHAI = ZoneInfo("Asia/Shanghai")
NIGHT = QuietHours(time(22, 0), time(8, 0), SHANGHAI)
AT_NIGHT = datetime(2025, 12, 11, 15, 0, tzinfo=UTC)  # 23:00 in Shanghai
MORNING = datetime(2025, 12, 12, 0, 0, tzinfo=UTC)  # 08:00 in Shanghai
POLICY = DeliveryPolicy({"slack": NIGHT})


@dataclass(frozen=True)
class Row:
    channel: str = "slack"
    event: str = "firing"
    severity: str = "warning"
    rule: str | None = "reads-down"
    scope: str | None = UID
    tags: tuple[str, ...] = ("fitness",)
    alert_state: str | None = "firing"
    firing_status: str | None = None


@dataclass(frozen=True)
class SilenceRow:
    id: int
    user_id: str | None
    rule: str | None
    tag: str | None
    starts_at: datetime
    ends_at: datetime


def test_a_digest_waits_out_quiet_hours_unless_critical_and_elsewhere_goes() -> None:
    digest = Row(event="digest", rule=None, scope=None, alert_state=None)
    assert POLICY.decide(digest, [], AT_NIGHT) == Decision(Action.HOLD, MORNING, "quiet hours")
    assert POLICY.decide(Row(event="digest", severity="critical", rule=None), [], AT_NIGHT) == (
        Decision(Action.SEND)
    )
    assert POLICY.decide(Row(channel="mail", event="digest", rule=None), [], AT_NIGHT) == (
        Decision(Action.SEND)
    )


def test_an_alerts_row_answers_to_its_alert_then_silences_then_quiet_hours() -> None:
    day = AT_NIGHT - timedelta(hours=12)
    gone = POLICY.decide(Row(alert_state="resolved"), [], day)
    assert (gone.action, gone.reason) == (Action.SUPPRESS, "its alert resolved before it was sent")
    never = POLICY.decide(Row(event="resolved", firing_status="suppressed"), [], day)
    assert never.action is Action.SUPPRESS
    waiting = POLICY.decide(Row(event="resolved", firing_status="pending"), [], day)
    assert (waiting.action, waiting.until) == (Action.HOLD, None)
    row = SilenceRow(1, UID, None, None, day - timedelta(hours=1), day + timedelta(hours=1))
    silenced = POLICY.decide(Row(), [silence_of(row)], day)
    assert silenced == Decision(Action.HOLD, day + timedelta(hours=1), "silenced")
    assert POLICY.decide(Row(), [], AT_NIGHT) == Decision(Action.HOLD, MORNING, "quiet hours")
    assert POLICY.decide(Row(severity="critical"), [], AT_NIGHT) == Decision(Action.SEND)


def test_the_configs_quiet_windows_land_on_their_channels() -> None:
    config = parse_config(
        {
            "budget": {"timezone": "Asia/Shanghai"},
            "channels": [
                {"name": "slack", "url": "json://127.0.0.1/x", "quiet_hours": "22:00-08:00"},
                {"name": "mail", "url": "json://127.0.0.1/y"},
            ],
        }
    )
    assert DeliveryPolicy.from_config(config).quiet == {"slack": NIGHT}
