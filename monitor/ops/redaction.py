"""Scrubs secrets (the API token, channel URLs) out of text and log records, in every encoding.

The one redaction mechanism: the client, the log filter, the CLI and the notifier all use it.
It must not log or store the secrets it holds.

How it sees through encodings: the text is decoded once into a canonical form (``%XX`` however
often percent-encoded, JSON ``\\uXXXX``, ``\\/`` and the other JSON escapes, however often
escaped), each canonical character remembering the span of text it came from; the secrets are
looked for there and the spans they came from are masked. So a token that is raw, quoted,
``quote_plus``-ed, JSON-escaped (slashes too) or any mix of these is found alike.

Secrets shorter than ``MIN_SECRET`` are not masked: they are words, not secrets.

Pieces: an upstream that echoes the request may cut it anywhere. For a token (a secret that is
not a URL, at least ``MIN_PIECE`` long) every run of text of ``MIN_PIECE`` or more characters
that decodes to ``MIN_DECODED`` or more consecutive characters of the token is masked too: a
raw piece of 8, or ``%2F%2Bab`` (8 characters, 4 of the token). An escape the cut split
(``2F`` of ``%2F``, a trailing ``%2``) counts and is masked with the run beside it. What may
remain visible is a piece under 8 characters, or one that decodes to a single character.
URLs (channel URLs) are masked whole only, since their scheme and host are public text; the
notifier passes a URL's secret parts separately.

Cost: pieces are found with ``str.find`` on 4-grams of the token taken every 2 characters (any
run of 5 holds one), plus a look at the pairs around each escape and each cut escape; text without
``%`` or ``\\`` is not decoded. About 0.1 ms for a 7 kB body, 10 us for a log line.
"""

from __future__ import annotations

import logging
import re
import traceback
from bisect import bisect_left
from collections.abc import Iterable
from functools import lru_cache
from json import dumps
from urllib.parse import quote, quote_plus

from pydantic import SecretStr

# a shorter secret is not masked: no real token or channel URL is this short (the config refuses
# one), and masking it would garble ordinary words ("e" in every "error")
from monitor.config import MIN_SECRET

MASK = "***"
#: a run of text at least this long that decodes to part of a token is masked ...
MIN_PIECE = 8
#: ... when it decodes to at least this many characters of the token
MIN_DECODED = 2
_ANCHOR = 4  # k-gram length of the index
_STEP = 2  # an anchor every _STEP characters of a token: any run of _ANCHOR + _STEP - 1 holds one

# an escape, however often escaped again: %XX, %25XX, %2525XX …; \uXXXX, \\uXXXX …; \/ \" …
# (the leading class lets the regex engine skip the text between them fast)
_ESCAPE = re.compile(
    r"[%\\](?:(?<=%)(?:25)*(?P<pct>[0-9A-Fa-f]{2})"
    r"|(?<=\\)(?:\\\\)*(?:u(?P<uni>[0-9A-Fa-f]{4})|(?P<chr>[\"\\/bfnrt])))"
)
_JSON_ESCAPES = {
    '"': '"',
    "\\": "\\",
    "/": "/",
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
}


def secret_forms(secret: str | SecretStr) -> set[str]:
    """The secret as given and as it appears url-encoded or JSON-escaped (for test oracles;
    redaction itself decodes the text instead of listing encodings)."""
    raw = _raw(secret)
    if not raw:
        return set()
    json_form = dumps(raw)[1:-1]
    return {
        raw,
        quote(raw, safe=""),
        quote(raw),
        quote_plus(raw),
        json_form,
        json_form.replace("/", "\\/"),
        dumps(raw, ensure_ascii=False)[1:-1],
    }


def _raw(secret: str | SecretStr) -> str:
    return secret.get_secret_value() if isinstance(secret, SecretStr) else secret


class _Decoded:
    """``text`` decoded once, and the way back from a canonical position to the text."""

    __slots__ = ("canon", "escapes", "shifts", "size")

    def __init__(self, text: str) -> None:
        self.size = len(text)
        self.escapes: list[int] = []  # canonical positions that came from an escape
        self.shifts: list[int] = []  # text characters saved up to and including each escape
        if "%" not in text and "\\" not in text:
            self.canon = text.replace(" ", "+")  # a form-encoded space is a "+": one spelling
            return
        escapes, shifts = self.escapes, self.shifts
        shift = 0

        def unescape(match: re.Match[str]) -> str:
            nonlocal shift
            start, end = match.span()
            escapes.append(start - shift)
            shift += end - start - 1
            shifts.append(shift)
            kind = match.lastgroup
            if kind == "chr":
                return _JSON_ESCAPES[match[kind]]
            return chr(int(match[kind or 0], 16))

        self.canon = _ESCAPE.sub(unescape, text).replace(" ", "+")

    def origin(self, position: int) -> int:
        """Where canonical ``position`` starts in the text (``len(canon)`` maps to the end)."""
        before = bisect_left(self.escapes, position)
        return position + (self.shifts[before - 1] if before else 0)


def _canonical_forms(secret: str) -> set[str]:
    """What the secret can look like after decoding: as is, decoded itself, and as UTF-8 bytes
    (percent-encoded non-ASCII). Spaces are folded into ``+`` on both sides (form encoding)."""
    forms = {secret.replace(" ", "+"), _Decoded(secret).canon}
    if not secret.isascii():
        forms.add(secret.encode("utf-8").decode("latin-1").replace(" ", "+"))
    return {form for form in forms if form}


class Redactor:
    """Masks every known secret in any text; build once, call per text."""

    def __init__(self, secrets: Iterable[str | SecretStr] = ()) -> None:
        self._secrets: list[str] = []
        self._whole: list[str] = []  # masked only where the whole form shows
        self._pieces: list[str] = []  # masked whole or in pieces
        self._anchors: dict[str, list[tuple[int, int]]] = {}  # k-gram -> (piece form, offset)
        self._pairs: dict[str, list[tuple[int, int]]] = {}  # every 2-gram, for escaped runs
        self._chars: set[str] = set()
        self.add(*secrets)

    @property
    def secrets(self) -> tuple[str, ...]:
        """The secrets as given (to build another redactor, e.g. for ``redact``)."""
        return tuple(self._secrets)

    def add(self, *secrets: str | SecretStr) -> None:
        """Also mask these secrets from now on."""
        for secret in map(_raw, secrets):
            if len(secret) < MIN_SECRET or secret in self._secrets:
                continue
            self._secrets.append(secret)
            pieces = "://" not in secret and len(secret) >= MIN_PIECE
            for form in _canonical_forms(secret):
                if pieces and len(form) >= MIN_PIECE:
                    self._index(form)
                elif form not in self._whole:
                    self._whole.append(form)
        self._whole.sort(key=len, reverse=True)

    def _index(self, form: str) -> None:
        if form in self._pieces:
            return
        number = len(self._pieces)
        self._pieces.append(form)
        self._chars.update(form)
        last = len(form) - _ANCHOR
        for offset in sorted({*range(0, last + 1, _STEP), last}):
            self._anchors.setdefault(form[offset : offset + _ANCHOR], []).append((number, offset))
        for offset in range(len(form) - 1):
            self._pairs.setdefault(form[offset : offset + 2], []).append((number, offset))

    def __call__(self, text: str) -> str:
        return self.redact(text)

    def redact(self, text: str) -> str:
        """``text`` with every form and every piece of every secret replaced by ``***``."""
        if not self._secrets or not text:
            return text
        decoded = _Decoded(text)
        spans = [
            (decoded.origin(a), decoded.origin(b)) for a, b in self._whole_spans(decoded.canon)
        ]
        if self._pieces:
            spans += self._piece_spans(text, decoded)
        return _mask(text, spans) if spans else text

    def _whole_spans(self, canon: str) -> list[tuple[int, int]]:
        spans: list[tuple[int, int]] = []
        for form in self._whole:
            at = canon.find(form)
            while at != -1:
                spans.append((at, at + len(form)))
                at = canon.find(form, at + 1)
        return spans

    def _piece_spans(self, text: str, decoded: _Decoded) -> list[tuple[int, int]]:
        canon = decoded.canon
        runs: dict[tuple[int, int], list[tuple[int, int]]] = {}  # (form, alignment) -> runs

        def grow(at: int, number: int, offset: int, width: int) -> None:
            key = (number, at - offset)
            known = runs.setdefault(key, [])
            if any(a <= at < b for a, b in known):
                return
            form = self._pieces[number]
            a, j = at, offset
            while a > 0 and j > 0 and canon[a - 1] == form[j - 1]:
                a, j = a - 1, j - 1
            b, j = at + width, offset + width
            while b < len(canon) and j < len(form) and canon[b] == form[j]:
                b, j = b + 1, j + 1
            known.append((a, b))

        for gram, places in self._anchors.items():
            at = canon.find(gram)
            while at != -1:
                for number, offset in places:
                    grow(at, number, offset, _ANCHOR)
                at = canon.find(gram, at + 1)
        # Runs under _ANCHOR + _STEP - 1 decoded characters are MIN_PIECE long as written only
        # beside an escape: a whole one (its pairs hold it), or the head of one an echo cut
        # ("%2", "\\u00": the pair just before the literal "%" or "\\")
        starts = [a for e in decoded.escapes if canon[e] in self._chars for a in (e - 1, e)]
        starts += [site - 2 for site in _literal_sites(canon)]
        for at in starts:
            for number, offset in self._pairs.get(canon[at : at + 2], ()) if at >= 0 else ():
                grow(at, number, offset, 2)
        spans: list[tuple[int, int]] = []
        for (number, alignment), known in runs.items():
            form = self._pieces[number]
            for a, b in known:
                if b - a < MIN_DECODED:
                    continue
                start, stop = decoded.origin(a), decoded.origin(b)
                # a cut inside an escape leaves part of it ("2F" of "%2F") beside the run
                if a > alignment:
                    start -= _remnant_before(text, start, form[a - alignment - 1])
                if b - alignment < len(form):
                    stop += _remnant_after(text, stop, form[b - alignment])
                if stop - start >= MIN_PIECE:
                    spans.append((start, stop))
        return spans


def _literal_sites(canon: str) -> list[int]:
    sites: list[int] = []
    for mark in "%\\":
        at = canon.find(mark)
        while at != -1:
            sites.append(at)
            at = canon.find(mark, at + 1)
    return sites


@lru_cache(maxsize=512)
def _encodings(char: str) -> tuple[str, ...]:
    """The escapes that stand for ``char``: percent (also twice-encoded), ``\\uXXXX``, JSON."""
    if not char.isascii():
        return ()
    forms = []
    for digits in (f"{ord(char):02X}", f"{ord(char):02x}"):
        forms += [f"%{digits}", f"%25{digits}"]
    for digits in (f"{ord(char):04X}", f"{ord(char):04x}"):
        forms += [f"\\u{digits}", f"\\\\u{digits}"]
    forms += [f"\\{key}" for key, value in _JSON_ESCAPES.items() if value == char]
    return tuple(dict.fromkeys(forms))


def _remnant_before(text: str, end: int, char: str) -> int:
    """How many characters before ``end`` are the tail of an escape of ``char``."""
    if end == 0 or text[end - 1] not in {e[-1] for e in _encodings(char)}:
        return 0  # the usual case, decided without trying every tail
    return max(
        (
            n
            for e in _encodings(char)
            for n in range(len(e) - 1, 0, -1)
            if text.endswith(e[-n:], 0, end)
        ),
        default=0,
    )


def _remnant_after(text: str, start: int, char: str) -> int:
    """How many characters from ``start`` are the head of an escape of ``char``."""
    if text[start : start + 1] not in ("%", "\\"):
        return 0  # every escape starts with one of these
    return max(
        (
            n
            for e in _encodings(char)
            for n in range(len(e) - 1, 0, -1)
            if text.startswith(e[:n], start)
        ),
        default=0,
    )


def _mask(text: str, spans: list[tuple[int, int]]) -> str:
    merged: list[list[int]] = []
    for start, stop in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], stop)
        else:
            merged.append([start, stop])
    out: list[str] = []
    end = 0
    for start, stop in merged:
        out += (text[end:start], MASK)
        end = stop
    out.append(text[end:])
    return "".join(out)


@lru_cache(maxsize=32)
def _redactor(secrets: tuple[str, ...]) -> Redactor:
    return Redactor(secrets)


def redact(text: str, secrets: Iterable[str | SecretStr]) -> str:
    """``text`` with every form and piece of every secret replaced by ``***``."""
    return _redactor(tuple(_raw(s) for s in secrets if _raw(s))).redact(text)


class SecretFilter(logging.Filter):
    """A handler filter that masks secrets in the message, its args, exception and stack text.

    Install it on handlers (not loggers): a logger's filters do not see records propagated from
    its children. It always lets the record through, scrubbed.
    """

    def __init__(self, secrets: Iterable[str | SecretStr] = ()) -> None:
        super().__init__()
        self._redactor = Redactor(secrets)

    def add(self, *secrets: str | SecretStr) -> None:
        """Also mask these secrets (in every encoding, and a token's pieces) from now on."""
        self._redactor.add(*secrets)

    @property
    def secrets(self) -> tuple[str, ...]:
        """The secrets being masked (for ``redact`` on text that bypasses logging)."""
        return self._redactor.secrets

    def scrub(self, text: str) -> str:
        return self._redactor.redact(text)

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._redactor.secrets:
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
