"""The notifier over real apprise into a real HTTP receiver on 127.0.0.1, with a SQLite outbox
(and one drain on PostgreSQL). The clock is injected: ``drain(now)`` is called with advancing
times, nothing sleeps through a backoff."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
import pytest_asyncio
from support.outbox import (
    T0,
    USER_ID,
    OutboxDb,
    fire,
    firing_alert,
    message,
    open_db,
    rows,
)
from support.receiver import Receiver

from monitor.config import NotifyConfig, parse_config
from monitor.errors import NotifyError
from monitor.model import Creator, Phase
from monitor.notify.channels import validate_channel_url
from monitor.notify.facts import alert_facts, render_facts
from monitor.notify.message import MessageContext
from monitor.notify.rendering import Renderer
from monitor.notify.sender import Notifier
from monitor.policy.delivery import DeliveryPolicy
from monitor.store.outbox import NewMessage

#: fixtures db, db_url, sdb, sqlite_url

CONFIG = NotifyConfig(
    max_attempts=12,
    max_age=timedelta(hours=24),
    backoff_base=timedelta(seconds=30),
    backoff_max=timedelta(hours=1),
)


@pytest_asyncio.fixture
async def slack() -> AsyncIterator[Receiver]:
    async with Receiver() as receiver:
        yield receiver


@pytest_asyncio.fixture
async def mail() -> AsyncIterator[Receiver]:
    async with Receiver() as receiver:
        yield receiver


def notifier(store: OutboxDb, config: NotifyConfig = CONFIG, **urls: str) -> Notifier:
    return Notifier(
        store, urls, config, owner="test", jitter=0.0, send_timeout=timedelta(seconds=1.5)
    )


async def test_delivers_a_rendered_markdown_message(db: OutboxDb, slack: Receiver) -> None:
    await fire(db, "slack")
    async with notifier(db, slack=slack.url("/kol")) as n:
        report = await n.drain(T0)
    assert (report.sent, report.failed) == (1, 0)
    assert slack.bodies("/kol") == [
        {
            "version": "1.0",
            "title": "reads down",
            "message": "**read** 7,100 → 4,260",
            "attachments": [],
            "type": "warning",
        }
    ]
    [row] = await rows(db)
    assert (row["status"], row["attempts"], row["sent_at"], row["last_error"]) == (
        "sent",
        1,
        T0,
        None,
    )


async def test_ten_minutes_of_500_delay_only_that_channel(
    sdb: OutboxDb, slack: Receiver, mail: Receiver
) -> None:
    await fire(sdb, "slack", "mail")
    slack.fail(500)
    attempts_at = []
    async with notifier(sdb, slack=slack.url(), mail=mail.url()) as n:
        first = await n.drain(T0)
        assert (first.sent, first.failed) == (1, 1)
        assert len(mail.received) == 1  # the healthy channel got its copy on the first drain
        attempts_at.extend([0] * slack.hits)
        for second in range(10, 601, 10):  # a drain every 10 s for ten minutes
            before = slack.hits
            await n.drain(T0 + timedelta(seconds=second))
            if slack.hits > before:
                attempts_at.append(second)
        slack.recover()
        for second in range(610, 1201, 10):
            await n.drain(T0 + timedelta(seconds=second))
    # backoff 30 s doubling: retries at +30, +90, +210, +450 s; the next is due at +930 s
    assert attempts_at == [0, 30, 90, 210, 450]
    assert len(slack.received) == 1
    assert len(mail.received) == 1
    state = {r["channel"]: (r["status"], r["attempts"], r["sent_at"]) for r in await rows(sdb)}
    assert state == {
        "slack": ("sent", 6, T0 + timedelta(seconds=930)),
        "mail": ("sent", 1, T0),
    }


async def test_dead_letter_after_max_attempts_then_replay(sdb: OutboxDb, slack: Receiver) -> None:
    await fire(sdb, "slack")
    slack.fail(503)
    config = CONFIG.model_copy(update={"max_attempts": 3})
    async with notifier(sdb, config, slack=slack.url()) as n:
        for minutes in range(10):
            await n.drain(T0 + timedelta(minutes=minutes))
        [row] = await rows(sdb)
        assert (row["status"], row["attempts"], slack.hits) == ("dead", 3, 3)
        assert "503" in row["last_error"]
        slack.recover()
        assert (await n.drain(T0 + timedelta(hours=1))).sent == 0  # dead letters wait
        assert await n.retry_dead(T0 + timedelta(hours=2)) == 1
        report = await n.drain(T0 + timedelta(hours=2))
    assert report.sent == 1
    assert len(slack.received) == 1
    [row] = await rows(sdb)
    assert (row["status"], row["attempts"]) == ("sent", 1)


async def test_too_old_is_dead_lettered(sdb: OutboxDb, slack: Receiver) -> None:
    await fire(sdb, "slack")
    slack.fail(500)
    async with notifier(sdb, slack=slack.url()) as n:
        await n.drain(T0 + timedelta(hours=25))
    [row] = await rows(sdb)
    assert (row["status"], row["attempts"]) == ("dead", 1)


async def test_misspelt_url_is_permanent_and_names_the_channel(
    sdb: OutboxDb, slack: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(1)
    bad = "slakc://T0SECRET1/B0SECRET2/XXSECRET3"
    assert validate_channel_url(slack.url()) is None
    problem = validate_channel_url(bad)
    assert problem is not None
    assert "slakc" in problem
    assert "SECRET" not in problem
    assert validate_channel_url("not a url at all") is not None
    await fire(sdb, "team", "slack")
    async with notifier(sdb, team=bad, slack=slack.url()) as n:
        assert list(n.problems) == ["team"]
        with pytest.raises(NotifyError) as raised:
            n.check()
        assert raised.value.permanent
        assert "'team'" in str(raised.value)
        assert "SECRET" not in str(raised.value)
        report = await n.drain(T0)
        assert await n.send_test() == {"team": str(raised.value), "slack": None}
    assert (report.sent, report.dead) == (1, 1)
    by_channel = {r["channel"]: r for r in await rows(sdb)}
    assert by_channel["team"]["status"] == "dead"
    assert by_channel["team"]["attempts"] == 1
    assert "SECRET" not in by_channel["team"]["last_error"]
    assert [b["title"] for b in slack.bodies()] == ["reads down", "creator-monitor test"]
    assert not [r for r in caplog.records if "SECRET" in r.getMessage()]


async def test_no_channel_url_in_logs_or_last_error(
    sdb: OutboxDb, slack: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(1)  # everything, including apprise's TRACE and urllib3's DEBUG
    url = slack.url("/hooks/Tk9zecretPathToken?apikey=Qw3rtySecretKey")
    await fire(sdb, "slack")
    slack.fail(500)
    async with notifier(sdb, slack=url) as n:
        await n.drain(T0)
        await slack.stop()  # connection refused now
        await n.drain(T0 + timedelta(minutes=5))
        await slack.start()
        slack.recover()
        await n.drain(T0 + timedelta(minutes=10))
    [row] = await rows(sdb)
    assert row["status"] == "sent"
    assert len(slack.received) == 1
    texts = [r.getMessage() for r in caplog.records] + [str(r.exc_text) for r in caplog.records]
    assert any(r.name == "apprise" for r in caplog.records)  # apprise did log, scrubbed
    for secret in (url, "Tk9zecretPathToken", "Qw3rtySecretKey", f"127.0.0.1:{slack.port}"):
        assert not [t for t in texts if secret in t], secret
    assert [r.getMessage() for r in caplog.records if r.name == "monitor.notify.sender"] == [
        "channel slack failing: failure: Failed to send JSON POST notification: "
        "Internal server error., error=500.",
        "channel slack delivering again after 2 failed attempt(s)",
    ]


async def test_a_hanging_channel_does_not_hold_back_another(
    sdb: OutboxDb, slack: Receiver, mail: Receiver
) -> None:
    await fire(sdb, "slack", "mail")
    slack.hang()
    async with notifier(sdb, slack=slack.url(), mail=mail.url()) as n:
        started = time.monotonic()
        report = await n.drain(T0)
        elapsed = time.monotonic() - started
    slack.recover()
    assert (report.sent, report.failed) == (1, 1)
    assert len(mail.received) == 1
    assert slack.received == []
    assert elapsed < 5
    last_error = {r["channel"]: r["last_error"] for r in await rows(sdb)}["slack"]
    assert "timeout" in last_error.lower() or "timed out" in last_error.lower()


async def test_restart_between_state_change_and_send_delivers_once(
    sqlite_url: str, slack: Receiver
) -> None:
    first = await open_db(sqlite_url)
    await fire(first, "slack")
    dropped = notifier(first, slack=slack.url())
    dropped.close()  # the process dies before it drains
    await first.close()
    second = await open_db(sqlite_url)
    try:
        async with notifier(second, slack=slack.url()) as n:
            assert (await n.drain(T0 + timedelta(minutes=1))).sent == 1
            assert (await n.drain(T0 + timedelta(minutes=2))).sent == 0
    finally:
        await second.close()
    assert len(slack.received) == 1


async def test_silence_added_after_enqueue_holds_until_it_ends(
    db: OutboxDb, slack: Receiver
) -> None:
    config = parse_config(
        {"channels": [{"name": "slack", "url": slack.url()}], "creators": [{"user_id": USER_ID}]}
    )
    await fire(db, "slack")
    silence_end = T0 + timedelta(hours=2)
    await db.add_silence(now=T0, ends_at=silence_end, tag="fitness", reason="campaign")
    n = Notifier.from_config(
        db, config, owner="test", policy=DeliveryPolicy.from_config(config), jitter=0.0
    )
    async with n:
        assert (await n.drain(T0)).held == 1
        assert (await n.drain(T0 + timedelta(hours=1))).sent == 0
        [row] = await rows(db)
        assert (row["status"], row["not_before"], row["attempts"]) == ("pending", silence_end, 0)
        assert (await n.drain(silence_end)).sent == 1
    assert [b["title"] for b in slack.bodies()] == ["reads down"]


async def test_resolution_waits_for_its_firing_and_stale_firing_is_suppressed(
    sdb: OutboxDb, slack: Receiver
) -> None:
    config = parse_config({"channels": [{"name": "slack", "url": slack.url()}]})
    alert_id = await fire(sdb, "slack")
    silence = await sdb.add_silence(now=T0, ends_at=T0 + timedelta(hours=1), user_id=USER_ID)
    n = Notifier.from_config(
        sdb, config, owner="test", policy=DeliveryPolicy.from_config(config), jitter=0.0
    )
    async with n:
        await n.drain(T0)
        current = await sdb.load_alert("reads-down", USER_ID)
        assert current is not None
        assert current.id == alert_id
        resolved = replace(current, state=Phase.RESOLVED, resolved_at=T0 + timedelta(minutes=30))
        assert await sdb.commit_transition(
            resolved, [message("slack", event="resolved")], now=T0, expect=current
        )
        await sdb.remove_silence(silence)
        report = await n.drain(T0 + timedelta(minutes=40))
    # fired under a silence and resolved before it ended: neither is sent, both are kept
    assert report.suppressed == 2
    assert slack.received == []
    assert [(r["event"], r["status"]) for r in await rows(sdb)] == [
        ("firing", "suppressed"),
        ("resolved", "suppressed"),
    ]


# --- rendering at send time ---------------------------------------------------------------


async def _queue_with_facts(store: OutboxDb) -> None:
    """A firing whose message carries its facts, queued with the built-in templates' text."""
    ids = await store.sync_creators([Creator(USER_ID, "Lilyy", ("fitness",))])
    alert = firing_alert(ids[USER_ID])
    facts = alert_facts(
        "firing", alert, MessageContext(now=T0, creator=Creator(USER_ID, "Lilyy")), "en"
    )
    queued = render_facts(Renderer(), facts)
    new = NewMessage("slack", "firing", "warning", queued.title, queued.body, facts=facts)
    assert await store.commit_transition(alert, [new], now=T0, expect=None)


async def test_a_template_fixed_while_a_message_waits_reaches_it(
    sdb: OutboxDb, slack: Receiver, tmp_path: Path
) -> None:
    await _queue_with_facts(sdb)
    [row] = await rows(sdb)
    assert row["title"] == "[FIRING] Lilyy: reads 7,100 → 4,260 (-40.0 %) · reads-down"
    (tmp_path / "alert.en.j2").write_text("Fixed: {{ creator.name }} · {{ rule }}\n{{ summary }}")
    fixed = CONFIG.model_copy(update={"templates_dir": tmp_path})
    async with notifier(sdb, fixed, slack=slack.url("/kol")) as n:
        assert (await n.drain(T0)).sent == 1
    [sent] = slack.bodies("/kol")
    assert (sent["title"], sent["message"]) == (
        "Fixed: Lilyy · reads-down",
        "read 7,100 → 4,260 (-40.0 %)",
    )


async def test_without_a_template_change_the_sent_text_is_the_queued_text(
    sdb: OutboxDb, slack: Receiver
) -> None:
    await _queue_with_facts(sdb)
    [row] = await rows(sdb)
    async with notifier(sdb, slack=slack.url("/kol")) as n:
        assert (await n.drain(T0)).sent == 1
    [sent] = slack.bodies("/kol")
    assert (sent["title"], sent["message"]) == (row["title"], row["body"].rstrip("\n"))


async def test_facts_that_cannot_be_rendered_send_the_queued_text(
    sdb: OutboxDb, slack: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    broken = NewMessage("slack", "firing", "warning", "as queued", "body", facts={"v": 1})
    await sdb.enqueue_once([broken], now=T0, since=T0, until=T0 + timedelta(seconds=1))
    async with notifier(sdb, slack=slack.url("/kol")) as n:
        assert (await n.drain(T0)).sent == 1
    assert [(b["title"], b["message"]) for b in slack.bodies("/kol")] == [("as queued", "body")]
    assert "sent as queued: its facts could not be rendered (KeyError" in caplog.text
