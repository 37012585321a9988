"""What each CLI command does, as one function per command over the library.

Each takes the parsed arguments and the loaded config and returns an exit code; output formatting
lives in ``monitor.cli.output`` and ``monitor.cli.history_output``. Errors are raised as
MonitorError for the CLI to print as one line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import shutil
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from monitor import app
from monitor.cli import arguments, history_output, output, source_output
from monitor.cli.arguments import parse_since
from monitor.config import Config, channel_url, startup_problems
from monitor.config.references import silence_request
from monitor.config.roster import RosterError
from monitor.display import labelled_time
from monitor.errors import ConfigError, MonitorError
from monitor.notify.channels import validate_channel_url
from monitor.policy import cadence
from monitor.validation import raise_all

Handler = Callable[[argparse.Namespace, Config], int]


def _now() -> datetime:
    return datetime.now(UTC)


def _run(coro: Callable[[], Awaitable[int]]) -> int:
    return asyncio.run(coro())  # type: ignore[arg-type]


# --- check -----------------------------------------------------------------------------------


def check(args: argparse.Namespace, config: Config) -> int:
    """Every problem of the config in one run: its keys, references and roster (found while
    loading, kept in ``args.config_problems``), the channels, the files ``run`` reads (tokens,
    templates) and the call plan. "ok" only when there is none."""
    problems = [
        row
        for found in getattr(args, "config_problems", [])
        for row in (_rows(found) if isinstance(found, RosterError) else [found])
    ]
    for i, channel in enumerate(config.channels):
        key = "url" if channel.url is not None else "url_env"
        try:
            problem = validate_channel_url(channel_url(channel).get_secret_value())
        except ConfigError as exc:
            problems.append(ConfigError(f"channels[{i}].{key}", exc.message))
            continue
        if problem is not None:
            problems.append(
                ConfigError(f"channels[{i}].{key}", f"{problem} (channel {channel.name!r})")
            )
    problems += startup_problems(config, api_token=not args.no_token)
    api_key_state = "not checked (--no-token)" if args.no_token else "found"
    plan = cadence.call_plan(config)
    if not problems:
        for line in plan.lines():
            print(line)
    if not plan.fits:  # with other problems, no advice: it would be for a config in part
        where = "see the advice above" if not problems else plan.lines()[0]
        problems.append(ConfigError("budget", f"the call plan does not fit the budget; {where}"))
    raise_all(problems)
    print(
        f"config ok: {len(config.creators)} creators, {len(config.channels)} channels "
        f"(each URL parsed), {len(config.rules)} rules; API token {api_key_state}"
    )
    return 0


def _rows(found: RosterError) -> list[ConfigError]:
    """A roster's problems, one line each (a daemon's log gets the first and a count)."""
    return [ConfigError("", row) for row in found.problems]


# --- simulate, db ----------------------------------------------------------------------------


def simulate(args: argparse.Namespace, config: Config) -> int:
    from monitor.upstream.simulator import SimKnobs, run_simulator

    p50 = args.latency * 1000
    knobs = SimKnobs(
        latency_p50_ms=p50,
        latency_p99_ms=p50 * 6,
        calls_per_minute=args.calls_per_minute,
        daily_quota=args.daily_quota,
        balance=args.balance,
        call_price=args.call_price,
    )

    def ready(url: str) -> None:
        print(
            f'simulated Just One API on {url} (Ctrl-C to stop); set api.base_url = "{url}"',
            flush=True,
        )

    run_simulator(args.port, knobs, on_ready=ready)
    return 0


def db_upgrade(args: argparse.Namespace, config: Config) -> int:
    revision = asyncio.run(app.upgrade_schema(config.storage.url))
    print(f"database at revision {revision}")
    return 0


def db_current(args: argparse.Namespace, config: Config) -> int:
    revision = asyncio.run(app.current_schema(config.storage.url))
    head = app.head_schema()
    if revision == head:
        state = "up to date"
    elif revision is not None and revision not in app.KNOWN_REVISIONS:
        state = (
            f"newer than this creator-monitor knows, up to {head}: install the newer "
            "creator-monitor that migrated it"
        )
    else:
        state = f"behind head {head}: run `creator-monitor db upgrade`"
    print(f"{revision or '(empty database)'} ({state})")
    return 0


# --- history, export, status -----------------------------------------------------------------


def history(args: argparse.Namespace, config: Config) -> int:
    if args.source == "fans":
        return _follower_history(args, config)
    ref = arguments.resolve_creator(config, args.user_id, arg="CREATOR")
    named = f"{args.user_id} ({ref.user_id})" if args.user_id != ref.user_id else ref.user_id

    async def go() -> int:
        since = parse_since(args.since, _now().date())
        async with app.command_store(config) as store:
            rows = await store.history_rows(ref.user_id, since=since, variant=args.variant)
        if not rows:
            raise MonitorError(f"no stored history for {named}")
        if args.plot:
            width = shutil.get_terminal_size((100, 24)).columns
            history_output.plot_history(rows, args.metric, sys.stdout, width)
        else:
            history_output.print_history(rows, args.metric, args.format, sys.stdout)
        return 0

    return _run(go)


def _follower_history(args: argparse.Namespace, config: Config) -> int:
    """``history --source fans``: the daily follower counts and their day-over-day change."""
    for option, given in (("--metric", args.metric), ("--variant", args.variant)):
        if given:
            raise ConfigError(option, "is for --source core; followers are one count a day")

    async def go() -> int:
        since = parse_since(args.since, _now().date())
        async with app.command_store(config) as store:
            _, days = await app.creator_followers(
                config, store, args.user_id, since=since, arg="CREATOR"
            )
        if args.plot:
            width = shutil.get_terminal_size((100, 24)).columns
            source_output.plot_followers(days, sys.stdout, width)
        else:
            source_output.print_followers(days, args.format, sys.stdout)
        return 0

    return _run(go)


def notes(args: argparse.Namespace, config: Config) -> int:
    """A creator's stored notes, newest first, with their totals and growth since first seen."""

    async def go() -> int:
        since = parse_since(args.since, _now().date())
        async with app.command_store(config) as store:
            _, lines = await app.creator_notes(
                config, store, args.user_id, limit=args.limit, since=since, arg="CREATOR"
            )
        source_output.print_notes(lines, args.format, sys.stdout)
        return 0

    return _run(go)


def export(args: argparse.Namespace, config: Config) -> int:
    async def go() -> int:
        since = parse_since(args.since, _now().date())
        async with app.command_store(config) as store:
            # the stored row count is exact without --since and an upper bound with it (core)
            total = None
            if since is None and args.source == "core":
                total = sum(r.rows_stored for r in await store.status_rows())
            with output.progress(total, "export") as bar:
                stream = app.export_source(store, args.source, since, config.budget.zone)
                async with contextlib.aclosing(stream) as rows:
                    count = await history_output.stream_export(
                        rows, args.format, sys.stdout, bar.update
                    )
        print(f"{count:,} rows exported", file=sys.stderr)
        return 0

    return _run(go)


def status(args: argparse.Namespace, config: Config) -> int:
    async def go() -> int:
        async with app.command_store(config) as store:
            rows = await store.status_rows()
            reading = await app.budget_reading(config, store, _now)
            funds = await app.account_funds(config, store, _now)
            counts = await store.outbox_counts()
            open_alerts = await store.list_alerts(open_only=True)
            instances = await store.list_instances(_now())
            unanswered = await store.unanswered_streak()
            unreadable = await store.count_unreparsed()
        output.print_status(
            rows,
            reading,
            counts,
            open_alerts,
            _now(),
            sys.stdout,
            unanswered,
            held=app.held_answers(config),
            zone=config.budget.zone,
            unreadable=unreadable,
            funds=funds,
            balance_every=config.account.balance_every,
        )
        output.print_instances(instances, _now(), sys.stdout)
        return 0

    return _run(go)


def report(args: argparse.Namespace, config: Config) -> int:
    folder = args.out.absolute().parent
    if not folder.is_dir():  # a mistyped path is refused, never created
        raise ConfigError("--out", f"folder {folder} does not exist; create it or fix the path")
    if args.out.is_dir():
        raise ConfigError("--out", f"{args.out} is a folder; name the HTML file to write")

    async def go() -> int:
        now = _now()
        since = parse_since(args.since, now.date())
        assert since is not None
        async with app.command_store(config) as store:
            try:
                written = await app.write_report(
                    store,
                    args.out,
                    since=since,
                    now=now,
                    daily_calls=config.budget.daily_calls,
                    zone=config.budget.zone,
                )
            except OSError as exc:  # a full disk or device, a folder we may not write
                why = exc.strerror or type(exc).__name__
                raise MonitorError(f"--out: cannot write {args.out}: {why}") from None
        print(
            f"wrote {written.path} ({written.size / 1e6:.1f} MB): {written.creators} creators, "
            f"{written.points:,} points, {written.alerts} alerts since {since}"
        )
        return 0

    return _run(go)


def rules_test(args: argparse.Namespace, config: Config) -> int:
    """Backtest the configured rules over stored history; the backtest sends nothing."""

    async def go() -> int:
        since = parse_since(args.since, _now().date())
        async with app.command_store(config) as store:
            with output.progress(None, "rules test") as bar:

                def advance(done: int, total: int) -> None:
                    bar.total = total
                    bar.update(done - bar.n)

                lines = await app.run_backtest(config, store, since, progress=advance)
        # the rules on core_data's rolling medians (not on the follower counts)
        rolling = [
            r.name
            for r in config.rules
            if r.kind in ("change", "anomaly") and getattr(r, "metric", None) != "fans"
        ]
        output.print_backtest(list(lines), sys.stdout, rolling)
        return 0

    return _run(go)


def reparse(args: argparse.Namespace, config: Config) -> int:
    """Read the kept unreadable answers again; exit 0 when every one read (or none waited),
    1 when some are still unreadable by this version (they stay kept)."""

    async def go() -> int:
        async with app.command_store(config) as store:
            kept, report = await app.run_reparse(
                config, store, source=args.source, dry_run=args.dry_run
            )
        for line in app.reparse_lines(report, kept):
            print(line)
        return 1 if report.unreadable else 0

    return _run(go)


# --- alerts, silences, notify ----------------------------------------------------------------


def alerts(args: argparse.Namespace, config: Config) -> int:
    async def go() -> int:
        async with app.command_store(config) as store:
            rows = await store.list_alerts(open_only=args.open)
            counts = await store.outbox_counts()
        output.print_alerts(rows, counts, config.budget.zone, sys.stdout)
        return 0

    return _run(go)


def silence_add(args: argparse.Namespace, config: Config) -> int:
    # the console API checks a silence with this same function
    wanted = silence_request(
        config,
        creator=args.creator,
        rule=args.rule,
        tag=args.tag,
        length=args.for_,
        reason=args.reason,
        option=lambda key: f"--{key}",
    )

    async def go() -> int:
        now = _now()
        ends = now + wanted.length
        async with app.command_store(config) as store:
            silence_id = await store.add_silence(
                now=now,
                ends_at=ends,
                user_id=wanted.user_id,
                rule=wanted.rule,
                tag=wanted.tag,
                reason=wanted.reason,
            )
        print(f"silence {silence_id} until {labelled_time(ends, config.budget.zone)}")
        return 0

    return _run(go)


def silence_list(args: argparse.Namespace, config: Config) -> int:
    async def go() -> int:
        async with app.command_store(config) as store:
            rows = await store.list_silences(_now())
        output.print_silences(rows, config.budget.zone, sys.stdout)
        return 0

    return _run(go)


def unsilence(args: argparse.Namespace, config: Config) -> int:
    async def go() -> int:
        async with app.command_store(config) as store:
            removed = await store.remove_silence(args.id)
        if not removed:
            raise MonitorError(f"no silence with id {args.id}")
        print(f"silence {args.id} removed")
        return 0

    return _run(go)


def notify_test(args: argparse.Namespace, config: Config) -> int:
    if not config.channels:
        raise ConfigError("channels", "no channels configured; add a [[channels]] entry")
    if args.channel is not None:
        arguments.channel_name(config, args.channel, arg="CHANNEL")

    async def go() -> int:
        async with (
            app.command_store(config) as store,
            app.command_notifier(config, store) as notifier,
        ):
            results = await notifier.send_test(args.channel)
        for name, error in results.items():
            print(f"{name}: {'delivered' if error is None else error}")
        return 0 if all(e is None for e in results.values()) else 1

    return _run(go)


def notify_retry(args: argparse.Namespace, config: Config) -> int:
    if args.channel is not None:
        arguments.channel_name(config, args.channel, arg="--channel")

    async def go() -> int:
        async with (
            app.command_store(config) as store,
            app.command_notifier(config, store) as notifier,
        ):
            count = await notifier.retry_dead(_now(), args.channel)
        print(f"{count} dead letters queued again; the running daemon sends them")
        return 0

    return _run(go)


# --- run, demo -------------------------------------------------------------------------------


def run(args: argparse.Namespace, config: Config) -> int:
    from monitor.daemon import run_daemon
    from monitor.daemon.options import Options

    return run_daemon(config, Options(config_path=args.config))


def demo(args: argparse.Namespace, config: Config) -> int:
    from monitor.cli.demo import run_demo

    return run_demo(args.db, seconds=args.seconds, fresh=args.fresh)


def serve(args: argparse.Namespace, config: Config) -> int:
    """The web console from the database alone (no daemon, no paid call)."""
    from monitor.web.server import DEFAULT_LISTEN, serve_console

    listen = args.listen or config.http.listen or DEFAULT_LISTEN
    return asyncio.run(serve_console(config, listen))


# --- roster ----------------------------------------------------------------------------------


def roster(args: argparse.Namespace, config: Config) -> int:
    """``roster check``: every problem of the roster files on its own line (exit 2), or the
    count of creators they add (exit 0)."""
    from monitor.config import roster as rosters

    found, problems = rosters.check(args.config)
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if problems:
        print(f"roster: {len(problems)} problems", file=sys.stderr)
        return 2
    print(f"roster ok: {len(found.creators)} creators in {len(found.files)} files")
    return 0


#: each command's function, by the name the parser gives it (``parser.command``)
def _on_use(module: str, name: str) -> Handler:
    """A handler imported when it runs: fetch and resume bring the HTTP client and fetch path."""

    def handler(args: argparse.Namespace, config: Config) -> int:
        run: Handler = getattr(importlib.import_module(module), name)
        return run(args, config)

    return handler


HANDLERS: dict[str, Handler] = {
    "check": check,
    "simulate": simulate,
    "db_upgrade": db_upgrade,
    "db_current": db_current,
    "history": history,
    "notes": notes,
    "export": export,
    "status": status,
    "report": report,
    "rules_test": rules_test,
    "reparse": reparse,
    "alerts": alerts,
    "silence_add": silence_add,
    "silence_list": silence_list,
    "unsilence": unsilence,
    "notify_test": notify_test,
    "notify_retry": notify_retry,
    "fetch": _on_use("monitor.cli.fetching", "fetch"),
    "resume": _on_use("monitor.cli.resume", "resume"),
    "run": run,
    "demo": demo,
    "serve": serve,
    "roster": roster,
}
