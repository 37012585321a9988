"""E-mail carries a real plain-text rendering: a rendered alert and digest sent through the
Notifier to a real SMTP server (aiosmtpd on 127.0.0.1), the MIME parts parsed. Inline code stays
on its line, links keep their URL, no Markdown marks are left; ``format=html`` in the mailto URL
still asks for an HTML mail. Unit cases of the text rendering follow."""

from __future__ import annotations

import email
from collections.abc import Iterator
from datetime import UTC, date, datetime
from email import policy
from email.message import Message
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from aiosmtpd.controller import Controller
from support.ports import free_port

from monitor.config import parse_config
from monitor.model import AlertState, Creator, Phase, Severity, Variant
from monitor.notify.message import (
    AlertLine,
    Digest,
    MessageContext,
    Mover,
)
from monitor.notify.plaintext import plain_text
from monitor.notify.rendering import Renderer
from monitor.notify.sender import Notifier

LILYY = Creator("5c3bf7f7000000000602fd63", "Lilyy")
CAROL = Creator("5c3bf7f7000000000602fd65", "Carol")
FIRED = datetime(2025, 12, 11, 2, 0, tzinfo=UTC)
CONTEXT = MessageContext(
    now=datetime(2025, 12, 12, 5, tzinfo=UTC),
    creator=LILYY,
    variant=Variant(),
    zone=ZoneInfo("Asia/Shanghai"),
)


class Mailbox:
    """aiosmtpd handler keeping every message it is given."""

    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(email.message_from_bytes(envelope.content, policy=policy.default))
        return "250 Message accepted for delivery"


@pytest.fixture
def smtp() -> Iterator[tuple[Mailbox, int]]:
    port = free_port()
    mailbox = Mailbox()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield mailbox, port
    finally:
        controller.stop()


def _mail_url(port: int, extra: str = "") -> str:
    return f"mailto://127.0.0.1:{port}?from=monitor@example.com&to=ops@example.com&secure=no{extra}"


async def _send(port: int, title: str, body: str, extra: str = "") -> None:
    config = parse_config({})
    notifier = Notifier(None, {"mail": _mail_url(port, extra)}, config.notify, owner="test")  # type: ignore[arg-type]
    async with notifier:
        outcome = await notifier.send("mail", title, body, "warning")
    assert outcome.error is None, outcome.error


def _parts(message: Message, subtype: str) -> list[str]:
    return [
        part.get_payload(decode=True).decode("utf-8")  # type: ignore[union-attr]
        for part in message.walk()
        if part.get_content_type() == f"text/{subtype}" and not part.get_filename()
    ]


def _alert() -> AlertState:
    return AlertState(
        rule="reads-down",
        scope=LILYY.user_id,
        severity=Severity.WARNING,
        state=Phase.FIRING,
        metric="read",
        value=4260.0,
        baseline=7100.0,
        fired_at=FIRED,
        summary="reads 7,100 → 4,260 (-40.0 %) from 2025-12-03 to 2025-12-10",
        details={
            "kind": "change",
            "change_abs": -2840.0,
            "change_pct": -40.0,
            "date": "2025-12-10",
            "baseline_date": "2025-12-03",
            "rolling_median": True,
        },
    )


async def test_an_alert_mail_has_a_text_part_rendered_for_text(
    smtp: tuple[Mailbox, int],
) -> None:
    mailbox, port = smtp
    message = Renderer().render("firing", _alert(), CONTEXT, "en")
    await _send(port, message.title, message.body)
    [mail] = mailbox.messages
    assert mail["Subject"] == "[FIRING] Lilyy: reads 7,100 → 4,260 (-40.0 %) · reads-down"
    [text] = _parts(mail, "plain")
    lines = text.splitlines()
    # the user id stays on its line, inside the parentheses it was written in
    assert f"Lilyy ({LILYY.user_id}, DAILY_NOTE/PHOTO_TEXT_AND_VIDEO/DAY_30/ALL)" in lines
    assert "- Rule: reads-down (change, warning)" in lines
    assert "- Reads: 7,100 → 4,260 (-40.0 %), by -2,840" in lines
    assert f"Open in Pugongying: {LILYY.pgy_url}" in lines
    for mark in ("**", "`", "](", "_Values"):
        assert mark not in text, mark


async def test_a_digest_mail_keeps_headings_and_every_link(smtp: tuple[Mailbox, int]) -> None:
    mailbox, port = smtp
    digest = Digest(
        day=date(2025, 12, 10),
        movers=(Mover(CAROL, "read", 2000, 3000), Mover(LILYY, "read", 7100, 4260)),
        fired=(AlertLine("reads-down", LILYY.user_id, "warning", "reads fell", FIRED, LILYY),),
        budget_used=1234,
        daily_calls=2000,
    )
    message = Renderer().render_digest(digest, CONTEXT, "en")
    await _send(port, message.title, message.body)
    [text] = _parts(mailbox.messages[0], "plain")
    lines = text.splitlines()
    assert "Budget: 1,234 of 2,000 calls used (61.7 %)" in lines
    at = lines.index("Top movers")
    assert lines[at + 1] == "-" * len("Top movers")
    assert f"- Carol: {CAROL.pgy_url}: 2,000 → 3,000 (+50.0 %)" in lines
    assert "- 2025-12-11 10:00 reads-down Lilyy (warning): reads fell" in lines


async def test_format_html_in_the_url_still_asks_for_an_html_mail(
    smtp: tuple[Mailbox, int],
) -> None:
    mailbox, port = smtp
    message = Renderer().render("firing", _alert(), CONTEXT, "en")
    await _send(port, message.title, message.body, "&format=html")
    [mail] = mailbox.messages
    assert _parts(mail, "html")
    assert _parts(mail, "plain")


@pytest.mark.parametrize(
    ("markdown", "text"),
    [
        ("**Lilyy** (`5c3b`)", "Lilyy (5c3b)"),
        ("[https://x.example/a](https://x.example/a)", "https://x.example/a"),
        (
            "- `creator-monitor alerts --open` lists them",
            "- creator-monitor alerts --open lists them",
        ),
        (
            "`reads_down_fast` and snake_case_words stay",
            "reads_down_fast and snake_case_words stay",
        ),
        ("## 变化最大", "变化最大\n--------"),
        ("price \\*2\\*", "price *2*"),
    ],
)
def test_plain_text_of_our_markdown(markdown: str, text: str) -> None:
    assert plain_text(markdown) == text + "\n"
