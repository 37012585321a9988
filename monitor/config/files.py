"""Reading the files a config names (the config itself, token files, roster files, templates):
each must be a regular file of bounded size, opened without blocking and checked before a byte
is read, so ``/dev/zero``, a FIFO or a directory is a one-line error, never a hang or a memory
blow-up. Must not: parse what it reads (the callers do).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from monitor.errors import ConfigError
from monitor.validation import CONTROL

KIB = 1024
MIB = 1024 * KIB
#: a config with 100,000 creators is about 10 MB of TOML
CONFIG_LIMIT = 64 * MIB
#: a roster file of 100,000 rows is about 6 MB of CSV
ROSTER_LIMIT = 64 * MIB
TOKEN_LIMIT = 64 * KIB
TEMPLATE_LIMIT = 1 * MIB
_MAKE_ONE = "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _size(count: int) -> str:
    for unit, size in (("GiB", 1024 * MIB), ("MiB", MIB), ("KiB", KIB)):
        if count >= size:
            return f"{count / size:.1f} {unit}".replace(".0 ", " ")
    return f"{count} bytes"


def _kind(mode: int) -> str | None:
    """What a non-regular file is, in words; None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    return next((word for test, word in _KINDS if test(mode)), "not a regular file")


def file_kind(path: Path) -> str | None:
    """What ``path`` is when it is there but no regular file ("a directory", "a FIFO (named
    pipe)", …); None for a regular file, a missing one or one that cannot be looked at."""
    try:
        return _kind(path.stat().st_mode)
    except OSError:
        return None


def _refuse(key: str, what: str, path: Path, why: str) -> ConfigError:
    """``key: what path why``; the path only once when the key is the path."""
    return ConfigError(key, f"{what} {why}" if key == str(path) else f"{what} {path} {why}")


@contextmanager
def opened(path: Path, *, key: str, what: str, limit: int) -> Iterator[int]:
    """A descriptor open for reading on ``path``, known to be a regular file of at most
    ``limit`` bytes; ConfigError(key, "<what> <path> …") otherwise.

    Opened with O_NONBLOCK, so a FIFO never waits for a writer, and checked with fstat on the
    descriptor itself (a file swapped after a stat is still caught). FileNotFoundError passes
    through, for callers to whom a missing file means something else."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise
    except IsADirectoryError:
        raise _refuse(key, what, path, "is a directory, not a regular file") from None
    except OSError as exc:
        raise _refuse(key, what, path, f"cannot be read: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if (kind := _kind(info.st_mode)) is not None:
            raise _refuse(key, what, path, f"is {kind}, not a regular file")
        if info.st_size > limit:
            raise _refuse(key, what, path, f"is {_size(info.st_size)}; at most {_size(limit)}")
        yield fd
    finally:
        os.close(fd)


def read_bytes(path: Path, *, key: str, what: str, limit: int) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes (see ``opened``). Reads at most
    ``limit + 1`` bytes whatever the file claims, so one that grows meanwhile is refused too."""
    with opened(path, key=key, what=what, limit=limit) as fd:
        chunks: list[bytes] = []
        total = 0
        while chunk := os.read(fd, min(MIB, limit + 1 - total)):
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:
                raise _refuse(key, what, path, f"is larger than {_size(limit)}")
        return b"".join(chunks)


def read_text(path: Path, *, key: str, what: str, limit: int) -> str:
    """``read_bytes`` decoded as UTF-8; a leading byte order mark (as Windows editors save
    it) is dropped."""
    raw = read_bytes(path, key=key, what=what, limit=limit)
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise _refuse(key, what, path, "is not UTF-8 text") from None


def read_token_file(key: str, path: Path, *, shortest: int = 1, what: str = "token") -> str:
    """The token in a file (surrounding white space dropped): a regular file of at most 64 KiB,
    one line, not empty and at least ``shortest`` characters. FileNotFoundError passes through.
    No message holds the token."""
    token = read_text(path, key=key, what="token file", limit=TOKEN_LIMIT).strip()
    if not token:
        raise ConfigError(key, f"token file {path} is empty")
    if CONTROL.search(token):
        raise ConfigError(key, f"token file {path} holds more than one line or a control character")
    if len(token) < shortest:
        raise ConfigError(
            key,
            f"the {what} in {path} has {len(token)} character{'s' if len(token) > 1 else ''}; "
            f"it needs at least {shortest} "
            f"(make one with: {_MAKE_ONE})",
        )
    return token
