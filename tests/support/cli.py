"""The command line run in this process: ``monitor.cli.main.main(argv)`` with the environment a
user's shell would give it, its stdout and stderr captured, its exit code as the shell sees it.

For the tests whose point is what a command prints and how it ends (usage and config errors,
one-line messages), not the process: a subprocess of the wheel costs 0.5 to 1 s of CPU for its
imports alone. What only a process shows (signals, the installed entry point, the wheel's
contents, daemons) stays in subprocess tests against the wheel (``support.wheel``).

The simulated upstream for these tests runs here too, in a thread (:func:`simulator`), over
real HTTP on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import os
import sys
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import NamedTuple

import pytest

from monitor.cli.main import main
from monitor.upstream.simulator import SimKnobs, Simulator

#: what the tests' environment must not pass on to a command (``clean_env``, ``child_env``)
_NOT_INHERITED = ("JUSTONEAPI", "CREATOR_MON", "NOTIFY_SOCKET", "WATCHDOG")


class Ran(NamedTuple):
    """A finished command: the fields a ``subprocess.CompletedProcess`` has for the same."""

    returncode: int
    stdout: str
    stderr: str


def run_cli(
    *argv: str | os.PathLike[str],
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    merged: bool = False,
) -> Ran:
    """``creator-monitor ARGV`` in this process.

    The environment is this one without the variables of :data:`_NOT_INHERITED`, plus
    ``env``, and is restored afterwards, as are the working folder and the logging set-up that
    ``main`` installs for itself (the root handler, logger levels). ``merged``: stderr goes
    into stdout, interleaved as a terminal shows them (``2>&1``)."""
    out = io.StringIO()
    err = out if merged else io.StringIO()
    with pytest.MonkeyPatch.context() as patch, _logging_restored():
        for name in list(os.environ):
            if name.startswith(_NOT_INHERITED):
                patch.delenv(name)
        for name, value in (env or {}).items():
            patch.setenv(name, value)
        if cwd is not None:
            patch.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = _exit_code([os.fspath(a) for a in argv])
    return Ran(code, out.getvalue(), "" if merged else err.getvalue())


def _exit_code(argv: list[str]) -> int:
    """What the console script's ``sys.exit(main())`` would end the process with."""
    try:
        return main(argv)
    except SystemExit as exit_:  # argparse: usage errors, --help, --version
        if exit_.code is None:
            return 0
        if isinstance(exit_.code, int):
            return exit_.code
        print(exit_.code, file=sys.stderr)
        return 1


@contextlib.contextmanager
def _logging_restored() -> Iterator[None]:
    """``main`` replaces the root logger's handlers (pytest's capture among them) and sets the
    levels of a few library loggers: put back what was there before."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    levels = {
        name: logger.level
        for name, logger in logging.root.manager.loggerDict.items()
        if isinstance(logger, logging.Logger)
    }
    try:
        yield
    finally:
        for handler in list(root.handlers):
            if handler not in handlers:
                root.removeHandler(handler)
        for handler in handlers:
            if handler not in root.handlers:
                root.addHandler(handler)
        root.setLevel(level)
        # a logger made during the command keeps its level: a library sets its own on import
        # (``sqlalchemy`` at WARNING), once per process
        for name, level_before in levels.items():
            logging.getLogger(name).setLevel(level_before)


@contextlib.contextmanager
def simulator(latency: float = 0.005) -> Iterator[str]:
    """The simulated upstream, as ``creator-monitor simulate --latency LATENCY`` serves it, in
    a thread of this process; yields its base URL."""
    p50 = latency * 1000
    with simulator_thread(SimKnobs(latency_p50_ms=p50, latency_p99_ms=p50 * 6)) as sim:
        yield sim.base_url


@contextlib.contextmanager
def simulator_thread(knobs: SimKnobs) -> Iterator[Simulator]:
    """A :class:`Simulator` serving on its own event loop in a thread of this process, so that
    a command run here (whose ``main`` runs its own loop, and wants the main thread for its
    signal handlers) can call it; its knobs may be changed between commands."""
    loop = asyncio.new_event_loop()
    started: list[Simulator] = []
    ready = threading.Event()

    async def start() -> None:
        sim = Simulator(knobs, port=0)
        await sim.start()
        started.append(sim)

    def serve() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(start())
        finally:
            ready.set()
        if started:
            loop.run_forever()

    thread = threading.Thread(target=serve, name="simulator", daemon=True)
    thread.start()
    try:
        if not ready.wait(timeout=30) or not started:
            raise RuntimeError("the simulator did not start")
        yield started[0]
    finally:
        if started:
            asyncio.run_coroutine_threadsafe(started[0].close(), loop).result(timeout=30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=30)
        loop.close()
