"""The command line's parser: every command, its options and its help, and usage errors as one
line (exit 2) that name the nearest known command, choice or option.

Each command names its handler in ``monitor.cli.commands.HANDLERS`` without importing it, so
``--help``, ``--version`` and usage errors answer without loading the store or the client.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import functools
import importlib.metadata
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn

from monitor.cli import arguments
from monitor.config import CONFIG_ENV
from monitor.config.references import LONGEST_SILENCE
from monitor.validation import did_you_mean


@functools.cache
def version() -> str:
    """The installed package's version (``--version``)."""
    try:
        return importlib.metadata.version("creator-monitor")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree, not installed
        return "unknown"


class _Parser(argparse.ArgumentParser):
    """argparse, with usage errors as one line (exit 2) that suggest the nearest known name."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {_explain(self, message)} (see: {self.prog} --help)\n")

    def parse_args(  # type: ignore[override]  # one signature: the CLI passes argv only
        self, args: Sequence[str] | None = None, namespace: None = None
    ) -> argparse.Namespace:
        # argparse reports a stray option from the top parser, which knows every sub-command's
        # options: the sub-command that was typed reports it instead, against its own options
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            command = _chosen(self, parsed)
            self.exit(2, f"error: {_stray(self, command, extras)} (see: {command.prog} --help)\n")
        return parsed


def _chosen(parser: argparse.ArgumentParser, parsed: argparse.Namespace) -> argparse.ArgumentParser:
    """The innermost sub-command parser ``parsed`` came through (``rules test``)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            name = getattr(parsed, action.dest, None)
            if isinstance(name, str) and name in action.choices:
                return _chosen(action.choices[name], parsed)
    return parser


def _explain(parser: argparse.ArgumentParser, message: str) -> str:
    """argparse's message, with "did you mean" for a mistyped command, choice or option."""
    message = message.removeprefix("argument ")
    choice = re.match(r"(\S+): invalid choice: (.+?) \(choose from (.*)\)$", message)
    if choice:
        with contextlib.suppress(ValueError, SyntaxError):
            name, bad = choice.group(1), str(ast.literal_eval(choice.group(2)))
            known = [str(c) for c in ast.literal_eval(f"[{choice.group(3)}]")]
            what = {"COMMAND": "command", "ACTION": "action"}.get(name, f"{name} value")
            close = did_you_mean(bad, known)
            hint = f"did you mean {close!r}?" if close else f"one of: {', '.join(known)}"
            return f"unknown {what} {bad!r}; {hint}"
    return message


def _stray(
    root: argparse.ArgumentParser, command: argparse.ArgumentParser, words: list[str]
) -> str:
    """What is wrong with the first stray word of ``command``'s line."""
    for word in words:
        if word.startswith("-"):
            return _unknown_option(root, command, word)
    return f"unexpected argument {words[0]!r}"


def _unknown_option(
    root: argparse.ArgumentParser, command: argparse.ArgumentParser, word: str
) -> str:
    """A stray option of ``command``: the nearest of its own options, or, when the option is
    another command's, which one (never the option that was typed)."""
    option = word.split("=", 1)[0]
    name = command.prog.removeprefix(root.prog).strip() or root.prog
    owners = [other for other, sub in _commands(root, "") if option in sub._option_string_actions]
    if owners:
        where = " and ".join(repr(owner) for owner in owners)
        return f"unknown option {word!r}; it is an option of {where}, not of {name!r}"
    close = did_you_mean(option, sorted(command._option_string_actions))
    return f"unknown option {word!r}" + (f"; did you mean {close!r}?" if close else "")


def _commands(
    parser: argparse.ArgumentParser, prefix: str
) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """Every (sub-)command under ``parser`` with its parser: ``("rules test", parser)``."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield f"{prefix}{name}", sub
                yield from _commands(sub, f"{prefix}{name} ")


def _global_options(parser: argparse.ArgumentParser, *, top: bool) -> None:
    """``-c``, ``--debug`` and ``--version``: on the top parser with their defaults, and on every
    sub-command without (``SUPPRESS``), so they work anywhere on the line."""
    default: Any = argparse.SUPPRESS
    parser.add_argument(
        "-c",
        "--config",
        type=Path,
        default=Path(os.environ.get(CONFIG_ENV, "config.toml")) if top else default,
        help=f"config file (default ./config.toml, env {CONFIG_ENV})",
    )
    parser.add_argument(
        "--debug",
        action="store_true",
        default=False if top else default,
        help="debug logs and tracebacks (redacted)",
    )
    parser.add_argument("--version", action="version", version=f"creator-monitor {version()}")


def _add(
    sub: argparse._SubParsersAction[_Parser],
    name: str,
    help_: str,
    example: str,
    handler: str,
) -> _Parser:
    """A sub-command whose work is ``monitor.cli.commands.HANDLERS[handler]``: named, not
    imported, so ``--help``, ``--version`` and usage errors answer without loading the store or
    the client."""
    parser = sub.add_parser(
        name,
        help=help_,
        description=f"{help_}\n\nexample:\n  {example}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _global_options(parser, top=False)
    parser.set_defaults(handler=handler)
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="creator-monitor",
        description="Keeps watch over Xiaohongshu creators through Just One API.",
    )
    _global_options(parser, top=True)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = _add(
        sub,
        "check",
        "validate the config, the channels and the token; print the call plan",
        "creator-monitor check -c config.toml",
        "check",
    )
    p.add_argument("--no-token", action="store_true", help="do not require an API token (CI use)")
    p = _add(
        sub,
        "fetch",
        "one call now: print the metrics and store them (--all: every configured creator)",
        "creator-monitor fetch 5c3bf7f7000000000602fd63 --dry-run",
        "fetch",
    )
    p.add_argument("user_id", nargs="?", metavar="CREATOR", help="a user id or a configured name")
    p.add_argument("--dry-run", action="store_true", help="print only; store nothing")
    p.add_argument(
        "--all", action="store_true", help="fetch every configured creator once, inside the budget"
    )
    p.add_argument(
        "--adhoc",
        action="store_true",
        help="fetch a user id that is not configured (refused otherwise: a typo costs a call)",
    )
    p.add_argument(
        "--source",
        type=arguments.source,
        default=None,
        help="core (the core metrics, the default for one creator), fans (the follower "
        "history) or notes (the note list); with --all, only that source's series",
    )
    _add(
        sub,
        "resume",
        "send one probe now and say what the account answered (0: it answers normally)",
        "creator-monitor -c /etc/creator-monitor/config.toml resume",
        "resume",
    )
    p = _add(
        sub,
        "simulate",
        "run the simulated upstream on 127.0.0.1",
        "creator-monitor simulate --port 8765",
        "simulate",
    )
    p.add_argument("--port", type=arguments.PORT, default=8765, help="0: any free port")
    knobs = (
        ("--latency", arguments.decimal(0, 60), 0.05, "median latency in seconds"),
        ("--calls-per-minute", arguments.number(1, 1_000_000), None, "limit (→ code 302)"),
        ("--daily-quota", arguments.number(0, 1_000_000_000), None, "quota (→ code 303)"),
        ("--balance", arguments.decimal(0, 1e9), None, "money left in CNY (→ code 601)"),
        ("--call-price", arguments.decimal(0, 1e6), 1, "CNY each billed call takes (e.g. 0.05)"),
    )
    for flag, kind, default, text in knobs:
        p.add_argument(flag, type=kind, default=default, help=text)
    db = _add(sub, "db", "database migrations", "creator-monitor db upgrade", "db_current")
    db_sub = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    p = _add(
        db_sub,
        "upgrade",
        "create or upgrade the schema to the newest revision",
        "creator-monitor db upgrade",
        "db_upgrade",
    )
    p.add_argument(
        "--create-folder",
        action="store_true",
        help="create the SQLite file's folder when it does not exist (refused otherwise)",
    )
    _add(
        db_sub,
        "current",
        "print the schema revision of the database",
        "creator-monitor db current",
        "db_current",
    )
    p = _add(
        sub,
        "history",
        "the stored daily series of one creator: core metrics, or --source fans the followers",
        "creator-monitor history 5c3bf7f7000000000602fd63 --metric read --since 30d",
        "history",
    )
    p.add_argument("user_id", metavar="CREATOR", help="a user id or a configured name")
    p.add_argument(
        "--source",
        type=arguments.series_source,
        default="core",
        help="core (the core metrics, default) or fans (the daily follower count and its change)",
    )
    p.add_argument(
        "--metric",
        action="append",
        type=arguments.metric,
        help="metric to show (repeatable; default all)",
    )
    p.add_argument(
        "--since",
        type=arguments.since,
        default=None,
        help="a duration back from today (30d) or a date",
    )
    p.add_argument(
        "--variant",
        type=arguments.variant,
        default=None,
        help="BUSINESS/NOTE_TYPE/DATE_TYPE/ADVERTISE, e.g. DAILY_NOTE/VIDEO/DAY_30/ALL",
    )
    p.add_argument("--format", choices=("table", "csv", "json"), default="table")
    p.add_argument("--plot", action="store_true", help="draw each metric in the terminal")
    p = _add(
        sub,
        "notes",
        "one creator's stored notes, newest first: reads, likes, collects, growth, link",
        "creator-monitor notes Lilyy --limit 10",
        "notes",
    )
    p.add_argument("user_id", metavar="CREATOR", help="a user id or a configured name")
    p.add_argument(
        "--limit",
        type=arguments.number(1, arguments.MAX_NOTES),
        default=arguments.DEFAULT_NOTES,
        help=f"how many notes (default {arguments.DEFAULT_NOTES}, at most {arguments.MAX_NOTES})",
    )
    p.add_argument(
        "--since",
        type=arguments.since,
        default=None,
        help="published on or after: a duration back from today (30d) or a date",
    )
    p.add_argument("--format", choices=("table", "csv", "json"), default="table")
    p = _add(
        sub,
        "export",
        "the daily series of all creators (or their followers, or notes), streamed",
        "creator-monitor export --format csv --since 90d > metrics.csv",
        "export",
    )
    p.add_argument("--format", choices=("csv", "jsonl"), default="csv")
    p.add_argument(
        "--since",
        type=arguments.since,
        default=None,
        help="a duration back from today (30d) or a date",
    )
    p.add_argument(
        "--source",
        type=arguments.source,
        default="core",
        help="core (the daily metrics, default), fans (daily follower counts) or notes "
        "(every observation of every note)",
    )
    _add(
        sub,
        "status",
        "per creator: last success, next due, failures, open alerts; the account's budget",
        "creator-monitor status",
        "status",
    )
    _add_report_commands(sub)
    _add_daemon_commands(sub)
    _add_roster_commands(sub)
    return parser


def _add_roster_commands(sub: argparse._SubParsersAction[_Parser]) -> None:
    """roster check: the CSV files of ``[roster] files``, validated alone."""
    roster = _add(sub, "roster", "work with roster files", "creator-monitor roster check", "roster")
    roster_sub = roster.add_subparsers(dest="roster_command", required=True, metavar="ACTION")
    _add(
        roster_sub,
        "check",
        "validate the roster files alone: every bad row with its file and line; the count",
        "creator-monitor -c config.toml roster check",
        "roster",
    )


def _add_report_commands(sub: argparse._SubParsersAction[_Parser]) -> None:
    """report and rules test: read the history, send nothing."""
    p = _add(
        sub,
        "report",
        "one self-contained HTML file: charts per creator, top movers, alerts, budget",
        "creator-monitor report --out report.html --since 90d",
        "report",
    )
    p.add_argument("--out", type=Path, required=True, help="the HTML file to write")
    p.add_argument(
        "--since",
        type=arguments.since,
        default="90d",
        help="a duration back from today (90d) or a date",
    )
    rules = _add(sub, "rules", "work with alert rules", "creator-monitor rules test", "rules_test")
    rules_sub = rules.add_subparsers(dest="rules_command", required=True, metavar="ACTION")
    p = _add(
        rules_sub,
        "test",
        "backtest the rules over stored history; sends nothing",
        "creator-monitor rules test --since 90d",
        "rules_test",
    )
    p.add_argument(
        "--since",
        type=arguments.since,
        default="90d",
        help="a duration back from today (90d) or a date",
    )

    p = _add(
        sub,
        "reparse",
        "read the kept paid answers an earlier version could not read, store what reads now "
        "and run the rules on it; makes no call",
        "creator-monitor reparse",
        "reparse",
    )
    p.add_argument(
        "--source",
        choices=("core", "fans", "notes", "balance"),
        help="only the answers of this source",
    )
    p.add_argument("--dry-run", action="store_true", help="say what would be read; store nothing")


def _add_daemon_commands(sub: argparse._SubParsersAction[_Parser]) -> None:
    """run, demo, alerts, silences and notify."""
    _add(
        sub,
        "run",
        "the daemon: fetch on schedule, alert, until SIGTERM",
        "creator-monitor -c /etc/creator-monitor/config.toml run",
        "run",
    )
    p = _add(
        sub,
        "demo",
        "the whole system against the built-in simulator; ends by itself",
        "creator-monitor demo",
        "demo",
    )
    p.add_argument("--db", type=Path, default=None, help="keep the SQLite file here")
    p.add_argument(
        "--seconds",
        type=arguments.decimal(5, 3600),
        default=40.0,
        help="how long the story runs",
    )
    p.add_argument("--fresh", action="store_true", help="replace an existing --db file")
    p = _add(
        sub,
        "serve",
        "the web console from the database, without the daemon (run serves it on [http] listen)",
        "creator-monitor serve --listen 127.0.0.1:9465",
        "serve",
    )
    p.add_argument("--listen", help="HOST:PORT (default [http] listen, else 127.0.0.1:9465)")
    p = _add(sub, "alerts", "the alert log", "creator-monitor alerts --open", "alerts")
    p.add_argument("--open", action="store_true", help="only pending and firing alerts")
    sil = _add(
        sub,
        "silence",
        "hold back messages for a while",
        "creator-monitor silence add --creator 5c3bf7f7000000000602fd63 --for 2d "
        "--reason 'on holiday'",
        "silence_list",
    )
    sil_sub = sil.add_subparsers(dest="silence_command", required=True, metavar="ACTION")
    p = _add(
        sil_sub,
        "add",
        "add a silence",
        "creator-monitor silence add --rule engagement-floor --for 12h --reason tuning",
        "silence_add",
    )
    p.add_argument("--creator", help="a creator's user id or configured name, or 'account'")
    p.add_argument("--rule", help="a configured rule's name")
    p.add_argument("--tag", help="a tag of configured creators")
    p.add_argument(
        "--for",
        dest="for_",
        type=arguments.duration(LONGEST_SILENCE),
        required=True,
        help="how long, e.g. 2d (at most 365d)",
    )
    p.add_argument("--reason", default="")
    _add(
        sil_sub,
        "list",
        "list active silences",
        "creator-monitor silence list",
        "silence_list",
    )
    p = _add(sub, "unsilence", "remove a silence", "creator-monitor unsilence 3", "unsilence")
    p.add_argument("id", type=arguments.number(1, 2**63 - 1))
    note = _add(
        sub,
        "notify",
        "test channels, replay dead letters",
        "creator-monitor notify test",
        "notify_test",
    )
    note_sub = note.add_subparsers(dest="notify_command", required=True, metavar="ACTION")
    p = _add(
        note_sub,
        "test",
        "send a test message through each (or one) channel",
        "creator-monitor notify test team-slack",
        "notify_test",
    )
    p.add_argument("channel", nargs="?")
    p = _add(
        note_sub,
        "retry",
        "queue dead-lettered messages again",
        "creator-monitor notify retry",
        "notify_retry",
    )
    p.add_argument("--channel")
