"""The console's state and rendering: what it is handed (config, a store, a clock, the tokens),
how pages render (jinja2, package templates, the negotiated language), and what the pages and
the API share (``console_of``, ``row_id``, ``problem_text``); routes.py mounts them.

Runs beside ``/healthz`` and ``/metrics`` in ``run`` and alone in ``serve``; reads the database
only, so both show the same thing. Never renders a token or a channel URL.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import jinja2
from aiohttp import web

from monitor.app import Funds, Store, account_funds, ledger_day
from monitor.config import Config
from monitor.config.references import silence_request
from monitor.display import (
    ROLLING_NOTE,
    format_days,
    format_money,
    format_number,
    format_pct,
    local_time,
    metric_label,
    one_line,
    with_zone,
    zone_name,
)
from monitor.errors import ConfigError
from monitor.notify.message import CODE_TEXTS, Language
from monitor.notify.summary import describe, severity_label
from monitor.ops.wallclock import Clock
from monitor.validation import problems_of
from monitor.web import auth
from monitor.web.i18n import LANG_COOKIE, negotiate, translator

log = logging.getLogger(__name__)


def _system_clock() -> datetime:
    return datetime.now(UTC)


class Console:
    """One console: its config, its store (read; plus acknowledgements and silences), a clock."""

    def __init__(
        self,
        config: Config,
        store: Store,
        guard: auth.Guard,
        *,
        clock: Clock = _system_clock,
    ) -> None:
        self.config = config
        self.store = store
        self.guard = guard
        self.clock = clock
        self.zone = config.budget.zone
        self.jinja = jinja2.Environment(
            loader=jinja2.PackageLoader("monitor.web", "templates"),
            autoescape=True,
            trim_blocks=True,
            lstrip_blocks=True,
            undefined=jinja2.StrictUndefined,
        )
        #: the last answer from the database failed (its errors are logged once per run)
        self.store_failing = False
        #: the static files' versioned URLs (set by ``mount``)
        self.assets: dict[str, str] = {}
        self.jinja.filters.update(
            num=_num,
            pct=_pct,
            when=self._when,
            zoned=self._zoned,
            spark=spark_points,
            signed=_signed,
            line=one_line,
            money=_money_text,
            days=format_days,
        )

    def _when(self, value: datetime | None) -> str:
        """A time in ``budget.timezone``; its column header names the zone (``zoned``)."""
        return local_time(value, self.zone, missing="—")

    def _zoned(self, header: str) -> str:
        """A header of a column of times: 'Fired (Asia/Shanghai)'."""
        return with_zone(header, self.zone)

    async def pause(self) -> dict[str, Any] | None:
        """The pause every page shows as a banner while no ordinary call may go (an account,
        quota or token pause), or None."""
        from monitor.policy.budget import ACCOUNT_CODES, BudgetState

        row = await self.store.load_budget_state()
        state = None if row is None else BudgetState.from_row(row)
        now = self.clock()
        if state is None or not state.paused or not state.is_paused(now):
            return None
        account = state.pause_code in ACCOUNT_CODES
        return {
            "code": state.pause_code,
            "reason": state.pause_reason or "",
            "until": None if account else state.paused_until,
            "probe": state.paused_until if account else None,
        }

    def language(self, request: web.Request) -> str:
        return negotiate(
            request.query.get("lang") or request.cookies.get(LANG_COOKIE),
            request.headers.get("Accept-Language", ""),
            self.config.notify.language,
        )

    def render(
        self, request: web.Request, template: str, status: int = 200, **context: Any
    ) -> web.Response:
        language = self.language(request)
        identity = auth.identity_of(request)
        session = None if identity is None else identity.session
        context.setdefault("pause", None)
        body = self.jinja.get_template(template).render(
            _=translator(language),
            lang=language,
            metric_label=lambda metric: metric_label(metric, language),
            describe=lambda alert: describe(alert, _lang(language)),
            severity=lambda name: severity_label(name, _lang(language)),
            short=lambda label: _short_variant(label, language),
            code_text=lambda code, fallback="": CODE_TEXTS[_lang(language)].get(code, fallback),
            rolling_note=ROLLING_NOTE[_lang(language)],
            zone=zone_name(self.zone),
            path=request.path,
            role=None if identity is None else identity.role,
            csrf=session.csrf if session is not None else "",
            browser=session is not None,
            assets=self.assets,
            **context,
        )
        response = web.Response(text=body, status=status, content_type="text/html")
        if request.query.get("lang") in ("en", "zh"):
            response.set_cookie(
                LANG_COOKIE, request.query["lang"], max_age=365 * 86400, path="/", samesite="Strict"
            )
        return response

    async def add_silence(
        self,
        *,
        creator: str | None,
        rule: str | None,
        tag: str | None,
        for_: str,
        reason: str,
    ) -> tuple[int, datetime]:
        """A silence from now for ``for_`` (e.g. "2h"), checked exactly as ``silence add``
        checks it (``creator`` a user id, a configured name or 'account'; a configured rule and
        tag; at most 365d). Raises ConfigError (every problem at once) for bad input."""
        wanted = silence_request(
            self.config, creator=creator, rule=rule, tag=tag, length=for_, reason=reason
        )
        now = self.clock()
        ends = now + wanted.length
        silence_id = await self.store.add_silence(
            now=now,
            ends_at=ends,
            user_id=wanted.user_id,
            rule=wanted.rule,
            tag=wanted.tag,
            reason=wanted.reason,
        )
        return silence_id, ends

    def today(self) -> date:
        return self.clock().astimezone(self.zone).date()

    async def budget(self) -> dict[str, Any]:
        """Calls and billed calls today, use in the last minute, pause and next probe, calls
        per day (the last 14) and by code, and the account's money (``balance``). Read from the
        database: the same under ``serve``."""
        from monitor.policy.budget import ACCOUNT_CODES, BudgetPolicy, BudgetState

        now = self.clock()
        today = self.today()
        since_day = (today - timedelta(days=13)).isoformat()
        days = await self.store.ledger_days(since_day)
        row = await self.store.load_budget_state()
        state = None if row is None else BudgetState.from_row(row)
        recent = () if state is None or state.recent is None else state.recent
        minute = sum(1 for t in recent if now - t < timedelta(seconds=60))
        paused = state is not None and state.is_paused(now)
        codes = await self.store.calls_by_code(
            datetime.combine(today - timedelta(days=13), datetime.min.time(), self.zone),
            self.config.budget.timezone,
            now=now,
        )
        # today as the gate counts it: the configured zone's day, whatever label calls got
        calls_today, billed_today = await self.store.ledger_day(
            ledger_day(BudgetPolicy.from_config(self.config), now)
        )
        account_pause = state is not None and state.pause_code in ACCOUNT_CODES
        return {
            "day": today.isoformat(),
            "calls_today": calls_today,
            "billed_today": billed_today,
            "daily_calls": self.config.budget.daily_calls,
            "calls_per_minute": self.config.budget.calls_per_minute,
            "used_last_minute": minute,
            "paused": paused,
            "pause_code": None if state is None else state.pause_code,
            "pause_reason": None if state is None else state.pause_reason,
            "paused_until": None if state is None else state.paused_until,
            "next_probe": state.paused_until if account_pause and state is not None else None,
            "days": [{"day": d, "calls": c, "billed": b} for d, c, b in days],
            "codes": [{"day": d, "code": c, "calls": n} for d, c, n in codes],
            "balance": _money(await account_funds(self.config, self.store, self.clock)),
        }


CONSOLE_KEY = web.AppKey("console", Console)


def _money(funds: Funds) -> dict[str, Any]:
    """The account's money as the API answers it: amounts as decimal strings (exact), None
    where unknown; the page formats them."""
    return {
        "amount": None if funds.balance is None else str(funds.balance),
        "currency": funds.currency,
        "read_at": funds.read_at,
        "price_per_call": None if funds.price is None else str(funds.price),
        "days_left": None if funds.days_left is None else round(funds.days_left, 2),
        "calls_per_day": round(funds.calls_per_day, 1),
    }


def _lang(language: str) -> Language:
    return "zh" if language == "zh" else "en"


def _money_text(value: str | None, currency: str = "CNY", places: int = 2) -> str:
    """An amount the API gives as a decimal string, as every surface writes it."""
    return format_money(None if value is None else Decimal(value), currency, places=places)


def _num(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return format_number(value)


def _signed(value: int | None) -> str:
    """A gain or a change: '+1,234', '-56', '0'; '—' when unknown."""
    if value is None:
        return "—"
    return ("+" if value > 0 else "") + format_number(value)


def _pct(value: float | None) -> str:
    """A change as a signed percentage, as every surface writes it: '+4.2 %'."""
    return "—" if value is None else format_pct(value * 100)


_VARIANT_WORDS = {
    "en": {
        "DAILY_NOTE": "daily",
        "COOPERATE_NOTE": "co-op",
        "PHOTO_TEXT_AND_VIDEO": "all types",
        "PHOTO_TEXT": "photo",
        "VIDEO": "video",
        "DAY_30": "30d",
        "DAY_90": "90d",
        "ALL": "all",
        "ORGANIC_ONLY": "organic",
        "fans": "followers",
        "notes": "notes",
    },
    "zh": {
        "DAILY_NOTE": "日常",
        "COOPERATE_NOTE": "合作",
        "PHOTO_TEXT_AND_VIDEO": "全部类型",
        "PHOTO_TEXT": "图文",
        "VIDEO": "视频",
        "DAY_30": "30天",
        "DAY_90": "90天",
        "ALL": "全部",
        "ORGANIC_ONLY": "自然流量",
        "fans": "粉丝",
        "notes": "笔记",
    },
}


def _short_variant(label: str, language: str = "en") -> str:
    """``DAILY_NOTE/PHOTO_TEXT_AND_VIDEO/DAY_30/ALL`` → ``daily·all types·30d·all``
    (``日常·全部类型·30天·全部`` in Chinese)."""
    names = _VARIANT_WORDS.get(language, _VARIANT_WORDS["en"])
    return "·".join(names.get(part, part) for part in label.split("/"))


def spark_points(values: Sequence[float | None], width: int = 120, height: int = 24) -> str:
    """SVG polyline points for a sparkline (gaps skipped); '' with fewer than two values."""
    known = [(i, v) for i, v in enumerate(values) if v is not None]
    if len(known) < 2:
        return ""
    low, high = min(v for _, v in known), max(v for _, v in known)
    span = (high - low) or 1.0
    step = width / max(1, len(values) - 1)
    return " ".join(
        f"{i * step:.1f},{height - 2 - (v - low) / span * (height - 4):.1f}" for i, v in known
    )


def row_id(text: str) -> int | None:
    """A row id from a URL: 1 to 2**63 - 1 in plain digits, else None (a 404, not an overflow
    in the database driver)."""
    if not (text.isascii() and text.isdigit()) or len(text) > 19:
        return None
    value = int(text)
    return value if 0 < value < 2**63 else None


def problem_text(exc: ConfigError) -> str:
    """Every problem of a refused input on one line: ``rule: unknown rule 'x'; …``."""
    return "; ".join(f"{p.path}: {p.message}" for p in problems_of(exc))


def console_of(request: web.Request) -> Console:
    return request.app[CONSOLE_KEY]
