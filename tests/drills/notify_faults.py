"""Notification faults: for an hour of injected time one receiver answers 500, one hangs past
the send timeout, one refuses connections; a fourth is healthy. The process restarts halfway.
Each message must arrive exactly once after recovery, the healthy channel at once, with one log
line when a channel starts failing and one when it recovers, and no channel URL anywhere.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

from support.cli import run_cli
from support.receiver import Receiver

from drills.tally import Tally, dump, query
from monitor.config import NotifyConfig, load_config
from monitor.model import AlertState, Creator, Phase, Severity
from monitor.notify.sender import Notifier
from monitor.store import Store, migrate
from monitor.store.outbox import NewMessage

T0 = datetime(2025, 12, 11, 2, 0, tzinfo=UTC)
USER = "5c3bf7f7000000000602fd63"
#: the notifier's defaults: 12 attempts, 24 h, backoff 30 s doubling to 1 h
CONFIG = NotifyConfig()
SEND_TIMEOUT = timedelta(seconds=0.15)
KINDS = ("status500", "hang", "refused", "healthy")


class LogTap(logging.Handler):
    """Every record of every logger, formatted, at every level (apprise TRACE included)."""

    def __init__(self) -> None:
        super().__init__(level=1)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())
        if record.exc_info:
            self.lines.append(logging.Formatter().formatException(record.exc_info))


@contextmanager
def tapped() -> Iterator[LogTap]:
    root = logging.getLogger()
    # aiosqlite logs every statement at DEBUG: slow, and the database dump is checked instead
    driver = logging.getLogger("aiosqlite")
    tap = LogTap()
    old_levels = root.level, driver.level
    root.addHandler(tap)
    root.setLevel(1)
    driver.setLevel(logging.INFO)
    try:
        yield tap
    finally:
        root.removeHandler(tap)
        root.setLevel(old_levels[0])
        driver.setLevel(old_levels[1])


def urls(receivers: dict[str, Receiver]) -> dict[str, str]:
    # a secret-looking path per channel: it must never show up in logs, errors or the database
    return {kind: r.url(f"/hooks/{kind}-S3cr3tPathT0ken") for kind, r in receivers.items()}


async def _fire(store: Store, messages: int, channels: tuple[str, ...] = KINDS) -> list[str]:
    ids = await store.sync_creators([Creator(USER, "Lilyy", ("fitness",))])
    titles = []
    for n in range(messages):
        title = f"alert {n}"
        titles.append(title)
        alert = AlertState(
            rule=f"rule-{n}",
            creator_id=ids[USER],
            scope=USER,
            severity=Severity.WARNING,
            state=Phase.FIRING,
            pending_since=T0,
            fired_at=T0,
            hits=1,
            firing_sent=True,
            last_notified_at=T0,
            summary=title,
        )
        notes = [NewMessage(k, "firing", "warning", title, f"**{title}**") for k in channels]
        assert await store.commit_transition(alert, notes, now=T0, expect=None)
    return titles


def _frozen(moment: datetime) -> Callable[[], datetime]:
    return lambda: moment


def _notifier(store: Store, receivers: dict[str, Receiver], owner: str) -> Notifier:
    return Notifier(
        store, urls(receivers), CONFIG, owner=owner, jitter=0.0, send_timeout=SEND_TIMEOUT
    )


async def _break(receivers: dict[str, Receiver]) -> None:
    receivers["status500"].fail(500)
    receivers["hang"].hang()
    await receivers["refused"].stop()


async def _heal(receivers: dict[str, Receiver]) -> None:
    receivers["status500"].recover()
    receivers["hang"].recover()
    await receivers["refused"].start()


async def notify_drill(
    directory: Path,
    *,
    outage: timedelta = timedelta(hours=1),
    messages: int = 1,
    step: timedelta = timedelta(minutes=1),
) -> Tally:
    """Drain every ``step`` through the outage and as long again after it; restart halfway."""
    tally = Tally("notification faults")
    path = directory / "notify.db"
    url = f"sqlite+aiosqlite:///{path}"
    await migrate.upgrade(url)
    receivers = {kind: Receiver() for kind in KINDS}
    for receiver in receivers.values():
        await receiver.start()
    try:
        with tapped() as tap:
            titles, healthy_at_once = await _run(url, receivers, outage, messages, step, tally)
        _score(tally, path, receivers, titles, healthy_at_once, tap)
    finally:
        for receiver in receivers.values():
            receiver.recover()
            await receiver.stop()
    return tally


async def _run(
    url: str,
    receivers: dict[str, Receiver],
    outage: timedelta,
    messages: int,
    step: timedelta,
    tally: Tally,
) -> tuple[list[str], bool]:
    await _break(receivers)
    tally.faults += 3
    steps = int(outage / step)
    store = Store.open(url, clock=lambda: T0)
    titles = await _fire(store, messages)
    notifier = _notifier(store, receivers, "first")
    healthy_at_once = False
    try:
        for tick in range(2 * steps + 1):
            now = T0 + tick * step
            if tick == steps // 2:  # the process restarts mid-outage
                notifier.close()
                await store.close()
                tally.faults += 1
                store = Store.open(url, clock=_frozen(now))
                notifier = _notifier(store, receivers, "second")
            if tick == steps:
                await _heal(receivers)
            await notifier.drain(now)
            if tick == 0:
                healthy_at_once = len(receivers["healthy"].received) == messages
    finally:
        notifier.close()
        await store.close()
    return titles, healthy_at_once


def _score(
    tally: Tally,
    path: Path,
    receivers: dict[str, Receiver],
    titles: list[str],
    healthy_at_once: bool,
    tap: LogTap,
) -> None:
    if not healthy_at_once:
        tally.notes.append("the healthy channel did not get its messages on the first drain")
    for kind, receiver in receivers.items():
        got = [body["title"] for body in receiver.bodies()]
        tally.rows_checked += len(titles)
        tally.lose(len(set(titles) - set(got)), f"{kind}: never delivered")
        tally.duplicate(len(got) - len(set(got)), f"{kind}: delivered more than once")
    rows = query(path, "SELECT channel, status, attempts FROM notifications ORDER BY id")
    not_sent = [r for r in rows if r[1] != "sent"]
    tally.lose(len(not_sent), f"outbox rows not sent: {not_sent}")
    for kind in KINDS[:3]:
        attempts = max(int(str(r[2])) for r in rows if r[0] == kind)
        if not 2 <= attempts <= 9:  # backoff 30 s doubling: about 8 tries in an hour
            tally.notes.append(f"{kind}: {attempts} attempts in the outage; backoff not applied?")
    monitor_lines = [line for line in tap.lines if "channel " in line]
    for kind in KINDS[:3]:
        starts = [line for line in monitor_lines if line.startswith(f"channel {kind} failing")]
        if len(starts) > 2:  # once per process; the drill restarts once
            tally.notes.append(f"{kind}: {len(starts)} 'failing' lines; expected one per process")
    secrets = [*urls(receivers).values(), "S3cr3tPathT0ken"]
    tally.leak(tap.lines, secrets, "log records")
    tally.leak([dump(path)], secrets, "the database dump")


# --------------------------------------------------------------------------- a misspelt URL


async def cli(config: Path, *args: str) -> tuple[int, str]:
    """``creator-monitor -c CONFIG ARGS`` as an operator would run it, in this process
    (``support.cli``, no token), off the loop that serves the receivers; (exit code,
    stdout+stderr)."""
    done = await asyncio.to_thread(run_cli, "-c", config, *args, merged=True)
    return done.returncode, done.stdout


def write_config(path: Path, db: Path, team_url: str, ok_url: str) -> None:
    path.write_text(
        f'[storage]\nurl = "sqlite+aiosqlite:///{db}"\n\n'
        f'[[channels]]\nname = "team"\nurl = "{team_url}"\n\n'
        f'[[channels]]\nname = "ok"\nurl = "{ok_url}"\n',
        encoding="utf-8",
    )
    path.chmod(0o600)


async def misspelt_url_drill(directory: Path) -> Tally:
    """A typo in one channel's scheme: that channel dead-letters at once, the other delivers;
    ``alerts`` shows the dead letter; after the fix ``notify retry`` replays it, exactly once."""
    tally = Tally("misspelt channel URL")
    db, cfg = directory / "typo.db", directory / "config.toml"
    await migrate.upgrade(f"sqlite+aiosqlite:///{db}")
    async with Receiver() as team, Receiver() as ok:
        good, ok_url = team.url("/hooks/T0pS3cretPath"), ok.url("/hooks/0kS3cretPath")
        bad = good.replace("json://", "jsno://")
        secrets = [good, bad, ok_url, "T0pS3cretPath", "0kS3cretPath"]
        write_config(cfg, db, bad, ok_url)
        tally.faults += 1
        outputs: list[str] = []
        with tapped() as tap:
            await _deliver_all(cfg, tally)
            code, out = await cli(cfg, "alerts")
            outputs.append(out)
            if code != 0 or "1 dead-lettered" not in out:
                tally.notes.append(f"`alerts` does not show the dead letter: {code} {out!r}")
            write_config(cfg, db, good, ok_url)  # the operator fixes the typo
            code, out = await cli(cfg, "notify", "retry")
            outputs.append(out)
            if code != 0 or not out.startswith("1 dead letters queued again"):
                tally.notes.append(f"`notify retry` did not requeue: {code} {out!r}")
            await _deliver_all(cfg, tally)
            code, out = await cli(cfg, "notify", "retry")  # nothing left to replay
            outputs.append(out)
        for name, receiver, want in (("team", team, 1), ("ok", ok, 1)):
            got = len(receiver.received)
            tally.rows_checked += 1
            tally.lose(max(0, want - got), f"{name}: not delivered")
            tally.duplicate(max(0, got - want), f"{name}: delivered {got} times")
        tally.leak(tap.lines + outputs, secrets, "logs and CLI output")
        tally.leak([dump(db)], secrets, "the database dump")
    return tally


async def _deliver_all(cfg: Path, tally: Tally) -> None:
    config = load_config(cfg)
    # the CLI stamps a replay with the wall clock, so this drill drains on it too
    now = datetime.now(UTC)
    async with Store.open(config.storage.url, clock=lambda: now) as store:
        if not await store.list_alerts():
            await _fire(store, 1, ("team", "ok"))
        async with Notifier.from_config(store, config, owner="drill", jitter=0.0) as notifier:
            for minute in range(3):
                await notifier.drain(now + timedelta(minutes=minute))
