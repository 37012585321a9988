"""The account-balance source: its path and its parser into exact money.

Pure (no I/O, no clock), sharing monitor/upstream/parse.py's envelope handling. The endpoint
names no creator; whether the vendor bills it is not published.
"""

from __future__ import annotations

import re
from datetime import date
from decimal import Decimal, InvalidOperation

from monitor.errors import UnreadableAnswer
from monitor.model import Answer, Balance
from monitor.upstream.parse import BadData, body_text, parse_record_time, read_envelope

SOURCE = "balance"
BALANCE_PATH = "/user/get-balance"
#: more than any account holds: a larger figure is a broken body
MAX_BALANCE = Decimal("1e12")
_CURRENCY_RE = re.compile(r"^[A-Z]{3}$")


def balance_params() -> dict[str, str]:
    """The query of one balance call (without the token): none."""
    return {}


def parse_balance(
    body: str | bytes, *, http_status: int = 200, latency_ms: int = 0, today: date | None = None
) -> Answer[Balance]:
    """One balance body: the amount as a Decimal, or the matching UpstreamError (``today`` is
    taken like every source's parser takes it, and unused: a balance has no data date).

    A code 0 answer whose ``data`` cannot be read raises ``UnreadableAnswer`` with the whole
    body. The body must already be redacted.
    """
    text = body_text(body)
    envelope = read_envelope(text, http_status=http_status, latency_ms=latency_ms)
    try:
        balance = _balance(envelope.get("data"), envelope.get("recordTime"))
    except BadData as exc:
        raise UnreadableAnswer(
            f"unreadable balance: {exc}",
            source=SOURCE,
            code=0,
            raw_body=text,
            http_status=http_status,
            latency_ms=latency_ms,
        ) from None
    return Answer(balance, http_status=http_status, latency_ms=latency_ms, raw_body=text)


def _balance(data: object, record_time: object) -> Balance:
    if not isinstance(data, dict):
        raise BadData(f"data is {type(data).__name__}, expected an object")
    currency = data.get("currency")
    if currency is None:
        currency = "CNY"  # the only currency the vendor sells in
    if not isinstance(currency, str) or not _CURRENCY_RE.match(currency.strip().upper()):
        raise BadData(f"currency is {currency!r:.40}, expected a code like CNY")
    return Balance(
        amount=_amount(data.get("balance")),
        currency=currency.strip().upper(),
        record_time=parse_record_time(record_time),
    )


def _amount(value: object) -> Decimal:
    # documented as a decimal string ("100.0000"); a JSON number is read through its text so a
    # float's binary error never becomes money
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise BadData(f"balance is {value!r:.40}, expected a decimal string")
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        raise BadData(f"balance is {value!r:.40}, expected a decimal string") from None
    if not amount.is_finite():
        raise BadData("balance is not finite")
    if abs(amount) > MAX_BALANCE:
        raise BadData(f"balance is out of range (over {MAX_BALANCE:,.0f})")
    return amount
