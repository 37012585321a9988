"""``creator-monitor run``: start, signals, reload and stop of the parts ``monitor.app`` builds.

Owns lifecycle only: the parts are built by ``monitor.app`` (``fetching``, ``running``; the
housekeeping jobs' work is ``app.upkeep``), and each registers its own end as it is built: on
``stack`` what releases it, on ``stopping`` what ends its work at an orderly stop. A stop
unwinds ``stopping`` (newest first), then ``stack``. Beside it: the start-up migration
(``migration``), the interval jobs' scheduler (``jobs``) and how the daemon runs
(``options``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import functools
import logging
import signal
import time
from collections.abc import Callable
from contextlib import AsyncExitStack

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from monitor.app import running, upkeep
from monitor.app.running import (
    ACCOUNT_HYSTERESIS,
    Alerting,
    BalanceReader,
    BudgetGate,
    Dispatcher,
    JustOneClient,
    Notifier,
    Spill,
    Store,
    finish_or_cancel,
)
from monitor.config import (
    Config,
    collector_paused,
    console_secrets,
    load_config,
    resolve_token,
    startup_problems,
)
from monitor.daemon.jobs import schedule_jobs, shift_jobs, tracked
from monitor.daemon.migration import migrate_on_start
from monitor.daemon.options import Options, system_clock
from monitor.errors import ConfigError, MonitorError, NotifyError
from monitor.ops.logs import mask_secrets
from monitor.ops.systemd import SystemdNotifier, watchdog_interval, watchdog_loop
from monitor.ops.telemetry import HttpEndpoint, Telemetry, serve
from monitor.ops.wallclock import WallJumps
from monitor.policy.rules import ACCOUNT_WIDE_CODES
from monitor.validation import path_too_long, raise_all

log = logging.getLogger(__name__)


class Daemon:
    """One running monitor process."""

    def __init__(self, config: Config, options: Options | None = None) -> None:
        self.config = config
        self.options = options or Options()
        self.identity = running.new_identity(self.options.clock)
        self.instance = self.identity.id
        self._scheduler: AsyncIOScheduler
        self._stop = asyncio.Event()
        self.store: Store
        self.client: JustOneClient
        self.gate: BudgetGate
        self.dispatcher: Dispatcher
        self.dispatching: running.Dispatching
        self.notifier: Notifier
        self.alerting: Alerting
        self.spill: Spill
        self.balance: BalanceReader
        self.telemetry = Telemetry(refresh=self._refresh_telemetry)
        self.endpoint: HttpEndpoint | None = None
        self._sd = SystemdNotifier(self.options.environ)
        self.reach = running.new_reach(config)
        #: account evaluations run one at a time, whether the tick or a pause transition asks
        self._account_lock = asyncio.Lock()
        self._account_tasks: set[asyncio.Task[None]] = set()
        #: scheduler jobs running now (``jobs.tracked``): a stop lets them end
        self._job_tasks: set[asyncio.Task[object]] = set()
        #: drains failed in a row (``_drain`` logs the first and the recovery)
        self._drains_failed = 0

    def request_stop(self) -> None:
        self._stop.set()

    async def run(self) -> int:
        """Run until SIGTERM/SIGINT (or ``options.until``); 0 on an orderly stop."""
        sd = self._sd
        # what ends each part's work at a stop; unwound before ``stack`` releases anything
        stopping = AsyncExitStack()
        async with AsyncExitStack() as stack:
            stack.callback(sd.close)
            # what ``check`` checks beside the config (console tokens, templates), with its
            # code, before the database is touched; the API token is read by fetch_parts,
            # after the one-instance lock
            raise_all(startup_problems(self.config, self.options.environ, api_token=False))
            await migrate_on_start(self.config.storage.url, self.options.clock, self._sd)
            await self._build(stack, stopping)
            scheduler = self._scheduler = self._schedule_jobs()
            scheduler.start()
            stack.callback(lambda: scheduler.shutdown(wait=False))
            stopping.callback(scheduler.pause)  # no job starts once a stop began
            self._install_signals(stack)
            await self._start_watchdog(stack, sd)
            dispatching = asyncio.get_running_loop().create_task(self._dispatch(), name="dispatch")
            stack.push_async_callback(_cancel, dispatching)
            # no round half way through a claim or a store probe may start a fetch after this
            stopping.push_async_callback(_cancel, dispatching)
            sd.ready(self.summary())
            self.dispatching.write_new_rows()
            self._read_balance_now()
            log.info(
                "running: %d series, budget %d/min and %d/day; instance %s",
                len(self.dispatcher.slots),
                self.config.budget.calls_per_minute,
                self.config.budget.daily_calls,
                self.instance,
            )
            await self._wait_for_stop()
            sd.stopping("stopping: finishing in-flight calls")
            # each part's stop, newest first: the dispatch loop, the jobs' scheduler, the calls
            # on the wire (``schedule.grace``), running jobs, the heartbeat, the outbox flush
            await stopping.aclose()
            log.info("stopped")
        return 0

    async def _build(self, stack: AsyncExitStack, stopping: AsyncExitStack) -> None:
        """The parts from ``monitor.app``, each registering its end; in the order a stop needs
        reversed: the notifier's flush and the heartbeat's leases outlive the dispatcher."""
        # 100,000 creators make a million objects that live as long as the process: the
        # collector would walk them again and again while they are built (half a second)
        with collector_paused():
            clock = self.options.clock
            config = self.config
            parts, sizer = await running.daemon_fetch_parts(
                config,
                stack,
                clock=clock,
                sleep=self.options.sleep,
                monotonic=self.options.monotonic,
                environ=self.options.environ,
                observe=self._observe,
            )
            self.store, self.gate = parts.store, parts.gate
            self.client = parts.client
            self.spill = parts.spill
            assert parts.alerting is not None
            self.alerting = parts.alerting
            self.notifier = self._make_notifier(config)
            stack.callback(lambda: self.notifier.close())  # noqa: PLW0108 - a reload swaps it
            stopping.push_async_callback(self._flush)
            heartbeat = running.Heartbeat(
                config,
                self.store,
                self.identity,
                stack,
                stopping,
                clock=clock,
                sleep=self.options.sleep,
            )
            # an account-wide error (601 …) and its end are told within seconds, not at the tick
            self.gate.on_pause_change = self._pause_changed
            stopping.push_async_callback(self._stop_jobs)
            self.dispatching = await running.start_dispatching(
                config, parts, stopping, instance=self.instance, sizer=sizer, clock=clock
            )
            self.dispatcher = self.dispatching.dispatcher
            self.balance = running.balance_reader(
                config,
                parts,
                clock=clock,
                observe=self._observe_balance,
                on_reading=self._account_now,
                every=self.options.balance_every,
            )
            stopping.callback(self.balance.stop)  # before the jobs are waited for
            heartbeat.start()
            if config.http.listen:
                from monitor.web.server import console_mount

                self.endpoint = await serve(
                    config.http.listen,
                    self.telemetry,
                    self._healthy,
                    health_timeout=self.options.health_timeout,
                    mount=await console_mount(config, stack, self.options.environ, clock),
                )
                stack.push_async_callback(self.endpoint.close)
        # what start-up read and dropped (rows, dicts of 100,000 entries) is free, but glibc
        # keeps the pages: hand them back to the system (a C library without the call: no-op)
        with contextlib.suppress(OSError, AttributeError, TypeError):
            ctypes.CDLL(None).malloc_trim(0)

    def _make_notifier(self, config: Config) -> Notifier:
        return running.daemon_notifier(
            config, self.store, owner=self.instance, environ=self.options.environ
        )

    async def _flush(self) -> None:
        """At a stop: groups still waiting for group_wait or group_interval go now (10 s)."""
        with contextlib.suppress(MonitorError, TimeoutError):
            await asyncio.wait_for(
                self.notifier.drain(self.options.clock(), flush=True), timeout=10
            )

    async def _stop_jobs(self) -> None:
        """At a stop: a drain or a report half way through ends, or is cut short before the
        store closes (5 s); an account pause's end still in its hysteresis is told next start."""
        await finish_or_cancel(set(self._job_tasks), 5)
        for task in list(self._account_tasks):
            await _cancel(task)

    def _schedule_jobs(self) -> AsyncIOScheduler:
        opts = self.options
        job = functools.partial(tracked, running=self._job_tasks, stop=self._stop)
        return schedule_jobs(
            drain=job(self._drain),
            account=job(self._evaluate_account),
            prune=job(self._prune),
            digest=job(self._digest),
            reports=job(self._reports),
            balance=job(self._balance_job),
            drain_every=opts.drain_every,
            evaluate_every=opts.evaluate_every,
            report_every=opts.report_every,
            balance_tick=opts.balance_tick,
        )

    def _read_balance_now(self) -> None:
        """After READY: the stored figures, then the first reading, so ``status`` has a
        balance (a job of its own: a stop waits for it like for any job)."""
        task = asyncio.get_running_loop().create_task(
            self._balance_job(first=True), name="balance at start"
        )
        self._job_tasks.add(task)
        task.add_done_callback(self._job_tasks.discard)

    async def _balance_job(self, *, first: bool = False) -> None:
        """A balance reading when due (the first is due at once); a failure is logged, the
        next look tries again."""
        try:
            if first:
                await self.balance.load()
            await self.balance.tick()
        except MonitorError as exc:
            log.error("balance not read: %s", exc)
        except Exception:  # a bug must not end the readings silently
            log.exception("balance not read")

    async def _dispatch(self) -> None:
        """Start due fetches, then nap until the next due time or a finished fetch.

        A loop of its own rather than an APScheduler job: it waits with ``options.sleep``, so
        the whole schedule runs on an injected clock in tests, and it wakes as soon as a slot
        in the pool frees up instead of on the next interval.
        """
        # APScheduler times its jobs by the system's wall clock, whatever ``options.clock`` is
        jumps = WallJumps(system_clock, time.monotonic)
        while not self._stop.is_set():
            step = jumps.check()
            if step:
                shift_jobs(self._scheduler, step)
            try:
                await self.dispatcher.step()
            except MonitorError as exc:  # the database refused a claim: try again next round
                log.error("dispatch failed: %s", exc)
            except Exception:  # a bug must not stop all fetching silently: log, keep going
                log.exception("dispatch failed")
            if self.options.until is not None and self.options.until():
                self.request_stop()
                return
            await self.dispatcher.nap(self.options.sleep, self.options.tick)

    async def _drain(self) -> None:
        """One drain; a failure is logged when drains start failing and once when they work
        again, not at every interval (a database locked for 40 s was 8 ERROR lines)."""
        try:
            await self.notifier.drain(self.options.clock())
        except MonitorError as exc:
            if not self._drains_failed:
                log.error("outbox drain failed: %s (said once until a drain works again)", exc)
            self._drains_failed += 1
            return
        if self._drains_failed:
            log.info("outbox drain working again after %d failed drain(s)", self._drains_failed)
            self._drains_failed = 0

    async def _evaluate_account(self) -> int:
        self._sd.status(self.summary())
        async with self._account_lock:
            try:
                account = await self.gate.account()
                return await self.alerting.evaluate_account(account)
            except MonitorError as exc:
                log.error("account rules not evaluated: %s", exc)
                return 0

    def _pause_changed(self, before: int | None, after: int | None) -> None:
        """The gate saw an account-wide pause begin or end: evaluate the account rules now,
        and send what they queued now (the drain would otherwise wait for its interval); at
        an end, the dispatcher looks again at once (it may have ended outside a fetch)."""
        if after is None and hasattr(self, "dispatcher"):
            self.dispatcher.wake()
        if before not in ACCOUNT_WIDE_CODES and after not in ACCOUNT_WIDE_CODES:
            return  # a 302 slow-down is no account alert
        # an end is told once it held for ACCOUNT_HYSTERESIS (the gate shows the pause until
        # then): a pause that comes back within seconds stays one alert
        delay = 0.0 if after in ACCOUNT_WIDE_CODES else ACCOUNT_HYSTERESIS.total_seconds() + 0.1
        task = asyncio.get_running_loop().create_task(self._account_now(delay), name="account-now")
        self._account_tasks.add(task)
        task.add_done_callback(self._account_tasks.discard)

    async def _account_now(self, delay: float = 0.0) -> None:
        if delay > 0:
            await self.options.sleep(delay)
        if await self._evaluate_account():
            await self._drain()

    def _observe(self, code: int | str, billed: bool) -> None:
        """One upstream call ended: count it, stamp a success (code 0), follow reachability."""
        now = self.options.clock()
        self.telemetry.record_call(code, billed)
        if code == 0:
            self.telemetry.set_last_success(now)
        self.reach.observe(code != "transport", now)

    def _observe_balance(self, code: int | str, billed: bool) -> None:
        """A balance reading ended: counted like any call (it is no fetch: no last success)."""
        self.telemetry.record_call(code, billed)
        self.reach.observe(code != "transport", self.options.clock())

    async def _refresh_telemetry(self) -> None:
        """Before each scrape: the gauges the daemon owns (counters are counted as calls end)."""
        await running.refresh_telemetry(
            self.telemetry, self.gate, self.dispatcher, self.store, self.options.clock()
        )

    async def _digest(self) -> None:
        await upkeep.queue_digest(self.config, self.store, self.options.clock)

    async def _reports(self) -> None:
        await upkeep.queue_reports(self.config, self.store, self.options.clock, self.instance)

    async def _prune(self) -> None:
        await upkeep.prune(self.config, self.store, self.options.clock)

    async def _healthy(self) -> bool:
        # a real write (the budget row, unchanged): a database that only reads is not healthy;
        # a StoreError raised here becomes the one-line reason in the 503 body
        if self._stop.is_set():
            return True
        await self.gate.persist()
        if self.spill.waiting:  # paid answers still wait for the database
            raise self.spill.refusal()
        if (unreachable := self.reach.problem()) is not None:
            raise MonitorError(unreachable)
        return True

    async def _start_watchdog(self, stack: AsyncExitStack, sd: SystemdNotifier) -> None:
        interval = watchdog_interval(self.options.environ)
        if interval is None:
            return
        task = asyncio.get_running_loop().create_task(watchdog_loop(sd, interval, lambda: True))

        async def cancel() -> None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

        stack.push_async_callback(cancel)

    def _install_signals(self, stack: AsyncExitStack) -> None:
        loop = asyncio.get_running_loop()
        handlers: dict[signal.Signals, Callable[[], object]] = {
            signal.SIGTERM: self.request_stop,
            signal.SIGINT: self.request_stop,
            signal.SIGHUP: lambda: loop.create_task(self.reload()),
        }
        for sig, handler in handlers.items():
            try:
                loop.add_signal_handler(sig, handler)
            except (NotImplementedError, RuntimeError):  # not the main thread (tests)
                continue
            stack.callback(loop.remove_signal_handler, sig)

    async def reload(self) -> bool:
        """SIGHUP: load the config again; an invalid one is logged and the old one kept."""
        path = self.options.config_path
        if path is None:
            log.warning("reload ignored: no config file")
            return False
        self._sd.reloading("reloading the config")
        try:
            config = load_config(path)
            raise_all(startup_problems(config, self.options.environ, api_token=False))
            token = resolve_token(config, self.options.environ)  # a renewed token_file
            notifier = self._make_notifier(config)  # channel URLs must work before we switch
        except OSError as exc:  # a path the OS refuses (one too long); not ours to know more
            problem = path_too_long(exc) if exc.errno == errno.ENAMETOOLONG else exc
            log.error("reload rejected, keeping the running config: %s", problem)
            self._sd.ready(f"reload rejected; {self.summary()}")
            return False
        except (ConfigError, NotifyError) as exc:
            log.error("reload rejected, keeping the running config: %s", exc)
            self._sd.ready(f"reload rejected; {self.summary()}")
            return False
        environ = self.options.environ
        mask_secrets(
            token.get_secret_value(),
            *(c.url.get_secret_value() for c in config.channels if c.url is not None),
            *(environ.get(c.url_env, "") for c in config.channels if c.url_env),
            *console_secrets(config, environ),
        )
        await upkeep.start_new_reports(
            self.config, config, self.store, self.options.clock, self.instance
        )
        self.config = config
        self.notifier.close()
        self.notifier = notifier
        series = await running.reconfigure(
            config,
            token,
            client=self.client,
            gate=self.gate,
            alerting=self.alerting,
            dispatching=self.dispatching,
            balance=self.balance,
            store=self.store,
            clock=self.options.clock,
        )
        log.info("config reloaded: %d series", series)
        self._sd.ready(self.summary())
        return True

    async def _wait_for_stop(self) -> None:
        await self._stop.wait()

    def summary(self) -> str:
        """The one-line STATUS systemd shows."""
        pause = self.gate.hard_pause(self.options.clock())
        return (
            f"{len(self.dispatcher.slots)} series, {self.gate.on_the_wire} calls in flight, "
            f"{self.dispatcher.completed} fetches done" + (f"; {pause}" if pause else "")
        )


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def run_daemon(config: Config, options: Options) -> int:
    return asyncio.run(Daemon(config, options).run())
