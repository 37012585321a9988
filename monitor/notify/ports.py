"""What the notifier needs from the rest of the program, as protocols: the outbox (the store
provides it), and the queued message and silence it reads.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from monitor.policy.delivery import SilenceRow


class Queued(Protocol):
    """A claimed outbox row, with what the delivery decision needs to know about its alert."""

    @property
    def id(self) -> int: ...
    @property
    def channel(self) -> str: ...
    @property
    def event(self) -> str: ...
    @property
    def severity(self) -> str: ...
    @property
    def title(self) -> str: ...
    @property
    def body(self) -> str: ...
    @property
    def attempts(self) -> int: ...
    @property
    def created_at(self) -> datetime: ...
    @property
    def not_before(self) -> datetime | None: ...
    @property
    def rule(self) -> str | None: ...  # None: not about an alert (digest, test)
    @property
    def scope(self) -> str | None: ...  # the creator's user_id or 'account'
    @property
    def tags(self) -> tuple[str, ...]: ...
    @property
    def alert_state(self) -> str | None: ...  # pending | firing | resolved, as it is now
    @property
    def firing_status(self) -> str | None: ...  # a resolution's firing on this channel
    @property
    def group_key(self) -> str | None: ...  # None: sent on its own
    @property
    def grouping(self) -> Mapping[str, Any] | None: ...
    @property
    def attachment(self) -> Mapping[str, Any] | None: ...  # a stored report to attach
    @property
    def facts(self) -> Mapping[str, Any] | None: ...  # an alert's: rendered at send time


class Outbox(Protocol):
    """What the notifier needs from the store (``monitor.store.Store`` provides it)."""

    async def claim_next(
        self,
        now: datetime,
        *,
        channel: str,
        owner: str,
        lease: timedelta,
        after_id: int,
        held_groups: bool = False,
    ) -> Queued | None: ...
    async def mark_failed(
        self, message_id: int, *, error: str, next_attempt_at: datetime, dead: bool
    ) -> None: ...
    async def hold(self, message_id: int, *, until: datetime | None, reason: str) -> None: ...
    async def suppress(self, message_id: int, *, reason: str) -> None: ...
    async def active_silences(self, now: datetime) -> Sequence[SilenceRow]: ...
    async def retry_dead(self, now: datetime, *, channel: str | None = None) -> int: ...
    async def bury_orphans(self, known: Sequence[str], *, reason: str) -> int: ...
    async def group_last_sent(self, channel: str, group_key: str) -> datetime | None: ...
    async def hold_group(self, channel: str, group_key: str, *, until: datetime) -> int: ...
    async def group_has_critical(self, channel: str, group_key: str) -> bool: ...
    async def claim_group(
        self,
        now: datetime,
        *,
        channel: str,
        group_key: str,
        owner: str,
        lease: timedelta,
        limit: int = 1000,
        held_too: bool = False,
    ) -> Sequence[Queued]: ...
    async def mark_group_sent(self, ids: Sequence[int], *, now: datetime) -> int: ...  # 1 or many
    async def report_html(self, name: str, period: str) -> str | None: ...


@dataclass(slots=True)
class DrainReport:
    sent: int = 0
    failed: int = 0
    dead: int = 0
    held: int = 0
    suppressed: int = 0
    busy: tuple[str, ...] = ()

    def add(self, other: DrainReport) -> None:
        self.sent += other.sent
        self.failed += other.failed
        self.dead += other.dead
        self.held += other.held
        self.suppressed += other.suppressed
