"""Shared fixtures: the sample bodies, a real PostgreSQL database per test, a fake token."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from support import pg
from support.demo import DemoRun, demo_run
from support.outbox import OutboxDb, open_db
from support.ports import refusing_port
from support.store import FakeClock
from support.wheel import SHARED_ENV
from support.zygote import ON_SPAWN

from monitor.store import Store, migrate
from monitor.upstream.simulator import SimKnobs, Simulator

DATA = Path(__file__).parent / "data"
#: a token shaped like a real one; tests assert it never shows up anywhere
TEST_TOKEN = "tok-SECRET-7f3a9c1e5b2d4e6f8a0b"


def pytest_configure(config: pytest.Config) -> None:
    """One folder for what the whole run shares (the wheel, the demo database): made by the
    process that starts the run, before any xdist worker, which inherits its name.

    On a whole-suite run in parallel that process (otherwise idle) also builds the wheel and
    runs the demo at once, in a thread, so the workers find them ready (or wait on the file
    lock) instead of the first CLI test paying for both while it holds a worker."""
    if SHARED_ENV not in os.environ:
        os.environ[SHARED_ENV] = tempfile.mkdtemp(prefix="creator-monitor-tests-")
        config.stash[_OWN_SHARED] = os.environ[SHARED_ENV]
        _cache_bytecode()
        parallel = bool(getattr(config.option, "numprocesses", None))
        whole = config.args_source is pytest.Config.ArgsSource.TESTPATHS
        chosen = config.option.markexpr or config.option.keyword  # -m or -k: maybe no CLI test
        if parallel and whole and not chosen:
            prepare = threading.Thread(target=_prepare, name="wheel-and-demo", daemon=True)
            prepare.start()
            config.stash[_PREPARE] = prepare
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker is not None:
        _rewrite_share(config, int(worker[2:]), int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))


def _rewrite_share(config: pytest.Config, index: int, count: int) -> None:
    """Rewrite this worker's share of the test modules' asserts ahead, into pytest's cache.

    Every xdist worker collects every test module, and pytest rewrites a module's asserts on
    import unless it finds the rewritten code cached (``__pycache__/*-pytest-*.pyc``, keyed by
    the source's hash). That is 5 s of CPU for this suite, paid once per worker on a fresh
    clone. Each worker first rewrites and caches its share (one module in each N, N workers,
    in the order all of them collect), then collects, reading what the others cached: the run
    pays for the rewrite about once.

    These are the functions pytest's import hook uses (``_pytest.assertion.rewrite``), private
    ones: if they change, the cost comes back, nothing else (the hook rewrites what it does not
    find cached)."""
    if config.getoption("assertmode") != "rewrite":
        return
    try:
        from _pytest.assertion import rewrite

        state = config.stash[rewrite.assertstate_key]
        for source in sorted(Path(__file__).parent.rglob("test_*.py"))[index::count]:
            pyc = rewrite.get_cache_dir(source) / (source.name[:-3] + rewrite.PYC_TAIL)
            if rewrite._read_pyc(source, pyc) is None and rewrite.try_makedirs(pyc.parent):
                source_hash, code = rewrite._rewrite_test(source, config)
                rewrite._write_pyc(state, code, source_hash, pyc)
    except (ImportError, AttributeError, KeyError, OSError, SyntaxError):
        return


def _cache_bytecode() -> None:
    """Where PYTHONDONTWRITEBYTECODE is set, let this run's processes cache bytecode as Python
    does by default: beside the sources, in ``__pycache__`` folders git ignores.

    Without a cache every process the tests start (about 140 daemons and commands) compiles
    the whole package again, a quarter of a second of CPU each; every migration compiles its
    revision files again; and every xdist worker rewrites every test module's asserts. (Not
    PYTHONPYCACHEPREFIX to a folder of the run's own: Python then looks for every module's
    bytecode there, the standard library's and the dependencies' too, and each worker and
    process compiled all of them again.) Set here, before the workers and the processes
    start: they inherit it."""
    if os.environ.pop("PYTHONDONTWRITEBYTECODE", None) is not None:
        sys.dont_write_bytecode = False


def _prepare() -> None:

    # a failure here is left to the first test that needs the wheel or the demo: it tries
    # again and reports it
    with contextlib.suppress(Exception):
        demo_run()


def pytest_unconfigure(config: pytest.Config) -> None:
    prepare = config.stash.get(_PREPARE, None)
    if prepare is not None:
        prepare.join(timeout=120)  # an interrupted run: the demo ends soon
    own = config.stash.get(_OWN_SHARED, None)
    if own is not None:
        shutil.rmtree(own, ignore_errors=True)
        del os.environ[SHARED_ENV]


_OWN_SHARED = pytest.StashKey[str]()
_PREPARE = pytest.StashKey[threading.Thread]()


#: modules whose tests share a costly module fixture (a daemon): all on one xdist worker, so the
#: fixture starts once. (Not ``xdist_group`` marks with ``--dist loadgroup``: on pytest 9.2 they
#: are silently ignored, pytest-dev/pytest-xdist#1386.)
ONE_WORKER_MODULES = ("tests/e2e/test_console_api.py", "tests/e2e/test_console_browser.py")


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """Load scheduling, one test at a time, except that each of :data:`ONE_WORKER_MODULES` goes
    to a worker as a whole."""
    from xdist.scheduler import LoadScopeScheduling

    class ByTestOrModule(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return module if module in ONE_WORKER_MODULES else nodeid

    return ByTestOrModule(config, log)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The tests that start processes (marked ``slow``) first: the xdist workers take the long
    ones while the rest fill the gaps, so no long test starts last and runs alone. Of those,
    the ones that read the demo's database last: the demo runs for half a minute from the
    start of the run (``pytest_configure``), and a worker that reached one of them early only
    waited for it."""

    def order(item: pytest.Item) -> int:
        if item.get_closest_marker("slow") is None:
            return 2
        return 1 if "demo" in getattr(item, "fixturenames", ()) else 0

    items.sort(key=order)


# The ``slow`` mark means "starts a process". Each test counts the processes it started
# (setup to teardown); the run's summary names every test whose mark says otherwise. A system
# tool that is done in milliseconds (to make a file immutable, to mount a tmpfs) does not count.
_STARTED = [0]
_QUICK_TOOLS = {"chattr", "mount", "umount"}
_popen_init = subprocess.Popen.__init__


def _counting_init(self: subprocess.Popen[Any], *args: Any, **kwargs: Any) -> None:
    argv = args[0] if args else kwargs.get("args", ())
    program = argv if isinstance(argv, str | bytes | os.PathLike) else next(iter(argv), "")
    if Path(os.fsdecode(program)).name not in _QUICK_TOOLS:
        _STARTED[0] += 1
    _popen_init(self, *args, **kwargs)


subprocess.Popen.__init__ = _counting_init  # type: ignore[method-assign]
ON_SPAWN.append(lambda: _STARTED.__setitem__(0, _STARTED[0] + 1))  # forked by the zygote
_STARTED_AT = pytest.StashKey[int]()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    item.stash[_STARTED_AT] = _STARTED[0]


#: (where defined, name) of the fixtures whose setup started a process (a module's daemon, a
#: simulator subprocess); the demo's run is shared by the whole session, so only its first
#: user would see it start
_PROCESS_FIXTURES = {("", "demo")}
_PASSED = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True)
def pytest_fixture_setup(fixturedef: pytest.FixtureDef[Any]) -> Iterator[Any]:
    before = _STARTED[0]
    try:
        return (yield)
    finally:
        if _STARTED[0] != before:
            _PROCESS_FIXTURES.add((fixturedef.baseid, fixturedef.argname))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Iterator[pytest.TestReport]:
    report = yield
    if call.when == "call":
        item.stash[_PASSED] = report.passed
    if call.when == "teardown" and item.stash.get(_PASSED, False):  # a failure proves nothing
        started = _STARTED[0] - item.stash[_STARTED_AT]
        names = set(getattr(item, "fixturenames", ()))
        started += sum(
            1
            for where, name in _PROCESS_FIXTURES
            if name in names and item.nodeid.startswith(where)
        )
        report.user_properties.append(("processes", started))
    return report


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when != "teardown":
        return
    started = dict(report.user_properties).get("processes")
    if not isinstance(started, int):
        return
    marked = "slow" in report.keywords
    if bool(started) != marked:
        wrong = "starts a process but is not" if started else "starts no process but is"
        _mismarked.append(f"{report.nodeid}: {wrong} marked slow")


_mismarked: list[str] = []


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _mismarked:
        terminalreporter.section("slow marks (slow: starts a process)")
        for line in sorted(_mismarked):
            terminalreporter.line(line)


@pytest.fixture
def data_dir() -> Path:
    return DATA


@pytest.fixture
def token() -> str:
    return TEST_TOKEN


@pytest.fixture
def refused_port() -> Iterator[int]:
    """A port on 127.0.0.1 that refuses connections for the whole test, and that no other
    test's server can take meanwhile (an unreachable upstream stays unreachable)."""
    with refusing_port() as port:
        yield port


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database URL on each backend: a SQLite file in a not-yet-existing directory, and pg_url.

    A test that takes ``store`` finds the database already migrated: a copy of one this worker
    migrated once, as ``migrate.upgrade`` would have left it."""
    migrated = "store" in request.fixturenames
    if request.param == "postgresql":
        return str(request.getfixturevalue("migrated_pg_url" if migrated else "pg_url"))
    path = tmp_path / "state" / "history.db"
    if migrated:
        path.parent.mkdir()
        shutil.copyfile(request.getfixturevalue("migrated_sqlite"), path)
    return f"sqlite+aiosqlite:///{path}"


@pytest.fixture(scope="session")
def pg_databases() -> Iterator[pg.Databases]:
    databases = pg.Databases()
    yield databases
    databases.close()


@pytest.fixture
def pg_url(pg_databases: pg.Databases) -> Iterator[str]:
    """A fresh, empty PostgreSQL database on 127.0.0.1; dropped afterwards (``support.pg``)."""
    name = pg_databases.create()
    yield pg.url(name)
    pg_databases.drop_later(name)


@pytest.fixture
def migrated_pg_url(pg_databases: pg.Databases) -> Iterator[str]:
    """A fresh PostgreSQL database on 127.0.0.1 at the head revision; dropped afterwards."""
    name = pg_databases.create(migrated=True)
    yield pg.url(name)
    pg_databases.drop_later(name)


@pytest.fixture(scope="session")
def migrated_sqlite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file at the head revision, for tests to copy."""
    path = tmp_path_factory.mktemp("migrated") / "history.db"
    asyncio.run(migrate.upgrade(f"sqlite+aiosqlite:///{path}"))
    return path


@pytest.fixture
def clock() -> FakeClock:
    """A clock the test moves by hand (``support.store.FakeClock``)."""
    return FakeClock()


@pytest.fixture
def info_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """``caplog`` taking the product's INFO lines."""
    caplog.set_level(logging.INFO, logger="monitor")
    return caplog


@pytest.fixture
def sim_knobs() -> SimKnobs:
    """The knobs of ``sim``: a module overrides this fixture to turn them."""
    return SimKnobs()


@pytest_asyncio.fixture
async def sim(sim_knobs: SimKnobs, clock: FakeClock) -> AsyncIterator[Simulator]:
    """The simulated upstream on a free loopback port, on the test's clock."""
    async with Simulator(sim_knobs, clock=clock) as simulator:
        yield simulator


@pytest_asyncio.fixture
async def store(db_url: str, clock: FakeClock) -> AsyncIterator[Store]:
    """A migrated, open store on each backend (``db_url`` migrated it); closed afterwards."""
    async with Store.open(db_url, clock=clock) as opened:
        yield opened


@pytest.fixture
def demo() -> DemoRun:
    """The demo, run once per test run and shared (``support.demo.demo_run``)."""
    return demo_run()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path}/outbox.db"


@pytest_asyncio.fixture
async def db(db_url: str) -> AsyncIterator[OutboxDb]:
    """A migrated outbox store on each backend."""
    outbox = await open_db(db_url)
    try:
        yield outbox
    finally:
        await outbox.close()


@pytest_asyncio.fixture
async def sdb(sqlite_url: str) -> AsyncIterator[OutboxDb]:
    """A migrated outbox store on SQLite only."""
    outbox = await open_db(sqlite_url)
    try:
        yield outbox
    finally:
        await outbox.close()
