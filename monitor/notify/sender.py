"""Delivery: drains the durable outbox through apprise, one apprise object per channel.

With ``notify.channels`` (loading channel URLs, scrubbing them out of logs and errors), the only
importer of apprise. Owns retries, backoff, dead letters and grouped delivery. Must not import the
store: the outbox is injected (see ``notify.ports``), and so is the delivery decision
(``policy.delivery.DeliveryPolicy``; none: every message may go).

One drain, in stages, as Alertmanager's dispatcher: claim a message and, when it belongs to a
group that is due, the rest of its group (a lone message is a group of one); decide for each
(inhibit, silence, quiet hours); render what may go (an alert's message from its facts, with the
templates as they are now); send it as ONE message; record the outcome for every member.

Delivery is at-least-once: a row is marked sent only after apprise reported success, so a crash
(or a lost database) between the send and the mark re-sends that one message once its claim
lease ends. The window is one message wide, because each channel claims one message at a time.
"""

from __future__ import annotations

import asyncio
import logging
import random
import tempfile
import threading
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from monitor.config import Config, NotifyConfig, channel_url
from monitor.errors import NotifyError
from monitor.notify.channels import (
    Channel,
    Delivery,
    load_target,
    one_line,
    reads_text,
    scrubbed_logs,
    secret_fragments,
    send_in_thread,
    takes_files,
    validate_channel_url,
)
from monitor.notify.facts import grouped_entry, readable, render_facts
from monitor.notify.plaintext import plain_text
from monitor.notify.ports import DrainReport, Outbox, Queued
from monitor.notify.rendering import Renderer
from monitor.policy.delivery import Action, DeliveryPolicy, Silence, silence_of
from monitor.policy.grouping import compose

log = logging.getLogger(__name__)

_SEVERITY_RANK = {"info": 0, "warning": 1, "critical": 2}

#: apprise's ``NotifyType`` member for each severity (apprise is loaded with the first channel)
_NOTIFY_TYPE = {"critical": "FAILURE", "warning": "WARNING", "info": "INFO"}


_BROKEN = "channel {name!r}: {problem}"


class Notifier:
    """Sends queued messages; each channel drains on its own, so a failing or slow channel
    never delays another. Use as ``async with Notifier(...)`` or call ``close()``.
    """

    def __init__(
        self,
        outbox: Outbox,
        channels: Mapping[str, SecretStr | str],
        config: NotifyConfig,
        *,
        owner: str,
        policy: DeliveryPolicy | None = None,
        send_timeout: timedelta | None = None,
        lease: timedelta | None = None,
        per_drain: int = 50,
        jitter: float = 0.1,
        rng: random.Random | None = None,
    ) -> None:
        self._outbox = outbox
        self._config = config
        self._owner = owner
        self._policy = policy
        self._renderer: Renderer | None = None  # built at the first message with facts
        # ``[notify] send_timeout`` unless the caller bounds it itself
        send_timeout = send_timeout or config.send_timeout
        self._send_timeout = send_timeout
        # a claim must outlive its send, or another instance could take it and send it too
        self._lease = lease or send_timeout * 4
        if self._lease <= send_timeout:
            raise ValueError("the claim lease must be longer than the send timeout")
        self._per_drain = per_drain
        self._jitter = jitter
        self._rng = rng or random.Random()  # noqa: S311 - jitter spreads retries; no secrecy involved
        self._failing: dict[str, int] = {}
        self._busy: dict[str, asyncio.Lock] = {}
        #: channel → the thread of a send abandoned at its timeout, while it still runs
        self._stuck: dict[str, threading.Thread] = {}
        urls = {
            name: url.get_secret_value() if isinstance(url, SecretStr) else url
            for name, url in channels.items()
        }
        every_secret = [s for url in urls.values() for s in secret_fragments(url)]
        self._stack = ExitStack()
        # apprise logs the URL while parsing it: scrub from before the first parse
        self._stack.enter_context(scrubbed_logs(every_secret))
        self._channels = {name: self._build(name, url) for name, url in urls.items()}

    @classmethod
    def from_config(
        cls,
        outbox: Outbox,
        config: Config,
        *,
        owner: str,
        environ: Mapping[str, str] | None = None,
        **options: Any,
    ) -> Notifier:
        """One channel per ``[[channels]]``; raises ConfigError when a ``url_env`` is unset."""
        urls = {c.name: channel_url(c, environ) for c in config.channels}
        return cls(outbox, urls, config.notify, owner=owner, **options)

    @staticmethod
    def _build(name: str, url: str) -> Channel:
        target = load_target(url)
        problem = None if target is not None else validate_channel_url(url)
        return Channel(name, target, tuple(secret_fragments(url)), problem)

    async def __aenter__(self) -> Notifier:
        return self

    async def __aexit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._stack.close()

    @property
    def problems(self) -> dict[str, str]:
        """Channel name → why it cannot be used (a permanent error found at startup)."""
        return {c.name: c.problem for c in self._channels.values() if c.problem}

    def check(self) -> None:
        """Raise a permanent NotifyError naming the first unusable channel (never its URL)."""
        for name, problem in self.problems.items():
            raise NotifyError(_BROKEN.format(name=name, problem=problem), permanent=True)

    async def send(
        self,
        channel: str,
        title: str,
        body: str,
        severity: str = "info",
        *,
        event: str = "firing",
        attach: Path | None = None,
    ) -> Delivery:
        """One message through one channel now, bypassing the outbox (used by the drain);
        ``attach`` goes along where the channel takes files (e-mail, json:// …)."""
        spec = self._channels.get(channel)
        if spec is None:
            return Delivery(f"channel {channel!r} is not configured", permanent=True)
        if spec.target is None:
            return Delivery(_BROKEN.format(name=channel, problem=spec.problem), permanent=True)
        import apprise  # a leaf library (loaded by the first channel already)

        member = "SUCCESS" if event == "resolved" else _NOTIFY_TYPE.get(severity, "INFO")
        kind = apprise.NotifyType[member]
        files = {} if attach is None or not takes_files(spec.target) else {"attach": str(attach)}
        text = reads_text(spec.target)  # e-mail: our text rendering, not apprise's
        return await self._bounded(
            spec,
            body=plain_text(body) if text else body,
            title=title,
            notify_type=kind,
            body_format=apprise.NotifyFormat.TEXT if text else apprise.NotifyFormat.MARKDOWN,
            **files,
        )

    async def _bounded(self, spec: Channel, **message: Any) -> Delivery:
        """One apprise send, waited for at most ``send_timeout`` (see ``send_in_thread``)."""
        assert spec.target is not None
        seconds = self._send_timeout.total_seconds()
        stuck = self._stuck.get(spec.name)
        if stuck is not None and stuck.is_alive():
            # one abandoned thread per channel at most: a trickling server cannot pile them up
            return Delivery(
                f"its previous send is still running past {seconds:g}s (the server has not "
                "finished answering); no new send until it ends"
            )
        done, thread = send_in_thread(spec.target, spec.name, **message)
        try:
            async with asyncio.timeout(seconds):
                result = await done
        except TimeoutError:
            self._stuck[spec.name] = thread
            return Delivery(f"timed out after {seconds:g}s")
        except asyncio.CancelledError:  # the stop cut the drain short: the thread stays behind
            self._stuck[spec.name] = thread
            raise
        except Exception as exc:  # noqa: BLE001 - any plugin may raise anything; it is one failed send
            return Delivery(one_line(f"{type(exc).__name__}: {exc}", spec.secrets))
        with result:
            if result:
                return Delivery()
            return Delivery(self._reason(result, spec))

    @staticmethod
    def _reason(result: Any, spec: Channel) -> str:
        problems = [
            entry.message
            for entry in result.logs()
            if entry.level in ("WARNING", "ERROR", "CRITICAL")
        ]
        status = getattr(result.status, "name", str(result.status)).lower()
        detail = "; ".join(dict.fromkeys(problems)) or "no detail from apprise"
        return one_line(f"{status}: {detail}", spec.secrets)

    async def send_test(self, channel: str | None = None) -> dict[str, str | None]:
        """``notify test``: a test message through each (or one) channel; name → None or error."""
        names = list(self._channels) if channel is None else [channel]

        async def one(name: str) -> tuple[str, str | None]:
            outcome = await self.send(
                name,
                "creator-monitor test",
                "This is a **test** message from creator-monitor.",
            )
            return name, outcome.error

        return dict(await asyncio.gather(*(one(name) for name in names)))

    async def drain(self, now: datetime, *, flush: bool = False) -> DrainReport:
        """Send every due message once; channels run concurrently, each one at a time.

        A channel still busy from an earlier drain is skipped (reported in ``busy``); within a
        channel the first failure ends its turn, so a dead endpoint costs one timeout per drain.
        ``flush`` (the stop): groups go now, without waiting for ``group_wait`` or
        ``group_interval``; silences, quiet hours and backoffs still hold what they hold.
        """
        report = DrainReport()
        buried = await self._outbox.bury_orphans(
            list(self._channels), reason="its channel is no longer configured"
        )
        report.dead += buried
        silences: Sequence[Silence] = ()
        if self._policy is not None:
            silences = [silence_of(row) for row in await self._outbox.active_silences(now)]
        idle = [name for name in self._channels if not self._lock(name).locked()]
        report.busy = tuple(name for name in self._channels if name not in idle)
        # every channel finishes its turn even when another one hits a store error
        outcomes = await asyncio.gather(
            *(self._drain_channel(n, silences, now, flush) for n in idle),
            return_exceptions=True,
        )
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
            report.add(outcome)
        return report

    def _lock(self, name: str) -> asyncio.Lock:
        return self._busy.setdefault(name, asyncio.Lock())

    async def _drain_channel(
        self, name: str, silences: Sequence[Silence], now: datetime, flush: bool
    ) -> DrainReport:
        report = DrainReport()
        last_id = 0
        async with self._lock(name):
            for _ in range(self._per_drain):
                message = await self._outbox.claim_next(
                    now,
                    channel=name,
                    owner=self._owner,
                    lease=self._lease,
                    after_id=last_id,
                    held_groups=flush,
                )
                if message is None:
                    break
                last_id = message.id
                if not await self._deliver(message, silences, now, report, flush):
                    break
        return report

    async def _deliver(
        self,
        message: Queued,
        silences: Sequence[Silence],
        now: datetime,
        report: DrainReport,
        flush: bool,
    ) -> bool:
        """Deliver the claimed ``message`` with the rest of its group: decide, render, send and
        record; False when the channel just failed (its turn ends)."""
        members = await self._group(message, now, report, flush)
        going = [m for m in members if await self._decide(m, silences, now, report)]
        if not going:
            return True
        title, body = self._render(going)
        worst = max(going, key=lambda m: _SEVERITY_RANK.get(m.severity, 0))
        with tempfile.TemporaryDirectory(prefix="creator-monitor-") as folder:
            attach = await self._attachment(going[0], Path(folder)) if len(going) == 1 else None
            outcome = await self.send(
                message.channel, title, body, worst.severity, event=message.event, attach=attach
            )
        if outcome.error is None:
            await self._outbox.mark_group_sent([m.id for m in going], now=now)
            self._recovered(message.channel)
            report.sent += len(going)
            return True
        for member in going:
            dead = await self._failed(member, outcome, now)
            report.dead += dead
            report.failed += not dead
        return False

    async def _group(
        self, message: Queued, now: datetime, report: DrainReport, flush: bool
    ) -> list[Queued]:
        """The members going with ``message``: itself alone, or its whole group once the group
        is due (``group_wait`` after its first message, ``group_interval`` after its last
        delivery; at once for a critical member of a group already notified, and at the stop's
        flush); none while the group waits, every pending member held until it is due."""
        key = message.group_key
        if key is None:
            return [message]
        ready = None if flush else await self._group_ready(message, now)
        if ready is not None:
            report.held += await self._outbox.hold_group(message.channel, key, until=ready)
            return []
        others = await self._outbox.claim_group(
            now,
            channel=message.channel,
            group_key=key,
            owner=self._owner,
            lease=self._lease,
            held_too=True,  # the group goes as one: members it held earlier go with it
        )
        return [message, *others]

    async def _decide(
        self, member: Queued, silences: Sequence[Silence], now: datetime, report: DrainReport
    ) -> bool:
        """Whether ``member`` goes now; one that does not is suppressed or held, and recorded."""
        if self._policy is None:
            return True
        decision = self._policy.decide(member, silences, now)
        if decision.action is Action.SUPPRESS:
            await self._outbox.suppress(member.id, reason=decision.reason)
            report.suppressed += 1
            return False
        if decision.action is Action.HOLD:
            await self._outbox.hold(member.id, until=decision.until, reason=decision.reason)
            report.held += 1
            return False
        return True

    def _render(self, members: Sequence[Queued]) -> tuple[str, str]:
        """(title, body) of the one message carrying ``members``: a lone member as itself, many
        as a list, worst first (members queued without grouping facts: the first as itself)."""
        if len(members) > 1:
            entries = [self._entry(m) for m in members]
            if all(entries):
                return compose([e for e in entries if e], self._config.group_limit)
        return self._text(members[0])

    def _text(self, message: Queued) -> tuple[str, str]:
        """An alert's message rendered from its facts now; any other as it was queued (and so
        is one whose facts cannot be rendered: the queued text beats no message)."""
        if not readable(message.facts):
            return message.title, message.body
        assert message.facts is not None
        try:
            rendered = render_facts(self._templates(), message.facts)
        except Exception as exc:  # noqa: BLE001 - facts from another version: send as queued
            log.warning("message %d sent as queued: %s", message.id, _unrendered(exc))
            return message.title, message.body
        if rendered.error:
            log.warning(
                "template for %s fell back to the built-in one: %s", message.channel, rendered.error
            )
        return rendered.title, rendered.body

    def _entry(self, message: Queued) -> Mapping[str, Any] | None:
        """How ``message`` reads inside a grouped one (None: it was queued without grouping)."""
        if readable(message.facts):
            assert message.facts is not None
            try:
                return grouped_entry(message.facts)
            except Exception as exc:  # noqa: BLE001 - as in _text
                log.warning("message %d not listed in its group: %s", message.id, _unrendered(exc))
        return message.grouping

    def _templates(self) -> Renderer:
        if self._renderer is None:
            self._renderer = Renderer(self._config.templates_dir)
        return self._renderer

    async def _attachment(self, message: Queued, folder: Path) -> Path | None:
        """The stored report a message carries, written to ``folder`` for apprise to read."""
        spec = message.attachment
        if not spec:
            return None
        html = await self._outbox.report_html(str(spec["report"]), str(spec["period"]))
        if html is None:
            return None
        path = folder / Path(str(spec.get("filename") or "report.html")).name
        path.write_text(html, encoding="utf-8")
        return path

    async def _group_ready(self, message: Queued, now: datetime) -> datetime | None:
        """None when the group of ``message`` may go now, else when it may."""
        key = message.group_key
        assert key is not None
        last = await self._outbox.group_last_sent(message.channel, key)
        cfg = self._config
        if last is None:  # a new group waits for the rest of its wave, critical or not
            ready = message.created_at + cfg.group_wait
        else:
            ready = last + cfg.group_interval
            # a critical alert joining a group already notified does not wait for the interval
            if ready > now and await self._outbox.group_has_critical(message.channel, key):
                return None
        return None if ready <= now else ready

    async def _failed(self, message: Queued, outcome: Delivery, now: datetime) -> bool:
        """Record a failed attempt: backoff, or dead letter; True when it was dead-lettered."""
        attempts = message.attempts + 1
        error = outcome.error or "unknown failure"
        started = message.not_before or message.created_at
        dead = (
            outcome.permanent
            or attempts >= self._config.max_attempts
            or now - started >= self._config.max_age
        )
        await self._outbox.mark_failed(
            message.id, error=error, next_attempt_at=now + self.backoff(attempts), dead=dead
        )
        streak = self._failing.get(message.channel, 0)
        self._failing[message.channel] = streak + 1
        if streak == 0:  # one line when a channel starts failing, not one per retry
            log.warning("channel %s failing: %s", message.channel, error)
        if dead:
            log.error(
                "notification %d for channel %s dead-lettered after %d attempt(s): %s "
                "(replay with: creator-monitor notify retry)",
                message.id,
                message.channel,
                attempts,
                error,
            )
        return dead

    def _recovered(self, channel: str) -> None:
        streak = self._failing.pop(channel, 0)
        if streak:
            log.info("channel %s delivering again after %d failed attempt(s)", channel, streak)

    def backoff(self, attempts: int) -> timedelta:
        """Capped exponential delay after the ``attempts``-th failure; jitter only shortens it."""
        base, cap = self._config.backoff_base, self._config.backoff_max
        delay = min(base * (1 << min(attempts - 1, 30)), cap)
        return delay * (1 - self._jitter * self._rng.random())

    async def retry_dead(self, now: datetime, channel: str | None = None) -> int:
        """``notify retry``: dead letters go back to pending, due now; returns how many."""
        return await self._outbox.retry_dead(now, channel=channel)


def _unrendered(exc: Exception) -> str:
    return f"its facts could not be rendered ({type(exc).__name__}: {exc})"
