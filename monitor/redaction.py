"""Scrubs secrets (the API token, channel URLs) out of text and log records.

The second line of defence: code must keep secrets out of messages in the first place; this
filter catches what slips through. It must not log or store the secrets it holds.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Iterable
from urllib.parse import quote, quote_plus

from pydantic import SecretStr

MASK = "***"


def secret_forms(secret: str | SecretStr) -> set[str]:
    """The secret as given and as it appears url-encoded (path, query and form encodings)."""
    raw = secret.get_secret_value() if isinstance(secret, SecretStr) else secret
    if not raw:
        return set()
    return {raw, quote(raw, safe=""), quote(raw), quote_plus(raw)}


def redact(text: str, secrets: Iterable[str | SecretStr]) -> str:
    """``text`` with every form of every secret replaced by ``***``."""
    forms: set[str] = set()
    for secret in secrets:
        forms |= secret_forms(secret)
    # longest first, so a secret that contains another is masked whole
    for form in sorted(forms, key=len, reverse=True):
        if form in text:
            text = text.replace(form, MASK)
    return text


class SecretFilter(logging.Filter):
    """A handler filter that masks secrets in the message, its args, exception and stack text.

    Install it on handlers (not loggers): a logger's filters do not see records propagated from
    its children. It always lets the record through, scrubbed.
    """

    def __init__(self, secrets: Iterable[str | SecretStr] = ()) -> None:
        super().__init__()
        self._forms: list[str] = []
        self.add(*secrets)

    def add(self, *secrets: str | SecretStr) -> None:
        """Also mask these secrets (and their url-encoded forms) from now on."""
        forms = set(self._forms)
        for secret in secrets:
            forms |= secret_forms(secret)
        self._forms = sorted(forms, key=len, reverse=True)

    @property
    def secrets(self) -> tuple[str, ...]:
        """Every form being masked (for ``redact`` on text that bypasses logging)."""
        return tuple(self._forms)

    def scrub(self, text: str) -> str:
        for form in self._forms:
            if form in text:
                text = text.replace(form, MASK)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._forms:
            return True
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # a broken format string: scrub the parts instead
            message = " ".join([str(record.msg), *(str(arg) for arg in _args(record))])
        # formatting here means no arg object can render the secret later
        record.msg = self.scrub(message)
        record.args = None
        if record.exc_info and record.exc_info[1] is not None:
            exc_text = "".join(traceback.format_exception(record.exc_info[1])).rstrip("\n")
            record.exc_text = self.scrub(exc_text)
            # the formatter appends exc_text; leaving exc_info would let a handler re-render it
            record.exc_info = None
        elif record.exc_text:
            record.exc_text = self.scrub(record.exc_text)
        if record.stack_info:
            record.stack_info = self.scrub(record.stack_info)
        return True


def _args(record: logging.LogRecord) -> tuple[object, ...]:
    args = record.args
    if args is None:
        return ()
    if isinstance(args, tuple):
        return args
    return (args,)
