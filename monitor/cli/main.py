"""The command line: parse arguments, load the config, call one library function, map errors.

Thin on purpose: no SQL, no HTTP, no business rules here. Exit codes: 0 ok, 1 runtime failure,
2 usage or config error. Errors are one line on stderr; a traceback only with ``--debug``.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import logging
import os
import sys
import traceback
from collections.abc import Sequence

from monitor.cli.output import plain_error
from monitor.cli.parser import build_parser
from monitor.config import (
    Config,
    console_secrets,
    file_kind,
    load_config,
    parse_config,
    read_config,
    resolve_token,
    storage_password,
)
from monitor.errors import ConfigError, MonitorError
from monitor.ops.logs import configure_logging
from monitor.ops.redaction import SecretFilter, redact
from monitor.validation import path_too_long, problems_of

log = logging.getLogger("monitor")


def _secrets(config: Config | None) -> list[str]:
    """Every secret this process could know, so the log filter can scrub them."""
    found = [os.environ.get("JUSTONEAPI_TOKEN", "")]
    if config is not None:
        with contextlib.suppress(ConfigError):  # no token is fine for commands that need none
            found.append(resolve_token(config).get_secret_value())
        found += [c.url.get_secret_value() for c in config.channels if c.url is not None]
        found += [os.environ.get(c.url_env, "") for c in config.channels if c.url_env]
        found += console_secrets(config)
        found.append(storage_password(config.storage.url))
    return [s for s in found if s]


#: commands that never open the database (``demo`` makes its own)
_NO_STORAGE = frozenset({"check", "simulate", "demo", "roster"})


def _storage_folder(args: argparse.Namespace, config: Config) -> None:
    """A SQLite file's folder must exist: a mistyped ``storage.url`` is refused, not created
    (systemd's ``StateDirectory`` makes the default one); ``db upgrade --create-folder`` makes
    it on purpose."""
    if args.command in _NO_STORAGE:
        return
    from monitor.app import sqlite_file, sqlite_folder  # sqlalchemy: not for ``--help``

    folder = sqlite_folder(config.storage.url)
    if folder is None:
        return
    if folder.is_dir():
        # a folder or a FIFO named as the file: SQLite says only "disk I/O error"
        path = sqlite_file(config.storage.url)
        if path is not None and (kind := file_kind(path)) is not None:
            raise ConfigError(
                "storage.url", f"{path} is {kind}, not a SQLite database file; fix the path"
            )
        return
    if getattr(args, "create_folder", False):
        try:
            folder.mkdir(mode=0o750, parents=True)
        except OSError as exc:
            raise ConfigError("storage.url", f"cannot create {folder}: {exc.strerror}") from None
        print(f"created {folder}", file=sys.stderr)
        return
    raise ConfigError(
        "storage.url",
        f"the database's folder {folder} does not exist; fix the path, or create it "
        "(mkdir, or `creator-monitor db upgrade --create-folder`)",
    )


def _load(args: argparse.Namespace) -> Config:
    if args.command == "roster":  # it reads the roster itself, without the rest of the config
        return parse_config({})
    if args.command in {"simulate", "demo"} and not args.config.exists():
        return parse_config({})
    if args.command == "check":  # it reports these with its own: every problem in one run
        config, args.config_problems = read_config(args.config)
        return config
    return load_config(args.config)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    secret_filter: SecretFilter = configure_logging(debug=args.debug, secrets=_secrets(None))
    try:
        config = _load(args)
        secret_filter.add(*_secrets(config))
        _storage_folder(args, config)
        from monitor.cli.commands import HANDLERS  # the library: not for ``--help``

        code = HANDLERS[args.handler](args, config)
    except ConfigError as exc:
        _fail(exc, args.debug, secret_filter)
        return 2
    except MonitorError as exc:
        _fail(exc, args.debug, secret_filter)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `creator-monitor export | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:  # noqa: BLE001 - the last line of defence: one redacted line, exit 1
        return _last_resort(exc, args.debug, secret_filter)
    return code


def _last_resort(exc: Exception, debug: bool, secrets: SecretFilter) -> int:
    """An exception no command turned into its own error: one redacted line, exit 1; a path
    the OS refuses as too long (from the config or the command line) is a usage mistake."""
    if isinstance(exc, OSError) and exc.errno == errno.ENAMETOOLONG:
        _fail(path_too_long(exc), debug, secrets)
        return 2
    _fail(exc, debug, secrets, unexpected=True)
    return 1


def _fail(
    exc: BaseException, debug: bool, secrets: SecretFilter, *, unexpected: bool = False
) -> None:
    if debug:
        text = "".join(traceback.format_exception(exc))
        sys.stderr.write(redact(text, secrets.secrets))
    if isinstance(exc, ConfigError):
        lines = [f"error: {problem}" for problem in problems_of(exc)]
    elif unexpected:
        lines = [f"error (unexpected; rerun with --debug): {exc}"]
    else:
        lines = [f"error: {plain_error(str(exc))}"]
    for line in lines:
        sys.stderr.write(redact(line, secrets.secrets) + "\n")
