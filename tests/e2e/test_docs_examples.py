"""Every command example in the docs that shows its output is run, and must print what the page
shows (see ``support.docs`` for the transcript format): a page that drifts from the code fails.

Each page runs in a fresh folder with the page's own files (its ``config.toml``, …), the
``creator-monitor`` command in this process and the simulated upstream over real HTTP, whose
clock stands still at a fixed moment so the metric values the pages show are the same every day.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from datetime import UTC, datetime
from pathlib import Path

import pytest
from support.cli import run_cli
from support.docs import DOC_BASE_URL, PAGES, Page, Step, matches, pages, parse_page
from support.sources import store_sources

from monitor.config import load_config
from monitor.config.references import resolve_creator
from monitor.store import Store
from monitor.upstream.simulator import SimKnobs, Simulator

#: the simulated upstream's "now": 10:00 in Asia/Shanghai, so its newest data day is 2026-11-29
SIM_NOW = datetime(2026, 11, 30, 2, 0, tzinfo=UTC)


class SimThread:
    """The simulator on its own event loop in a thread, so that the CLI processes can call it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.sim = Simulator(SimKnobs(), clock=lambda: SIM_NOW)

    def __enter__(self) -> SimThread:
        self.thread.start()
        self._call(self.sim.start()).result(timeout=30)
        return self

    def __exit__(self, *exc: object) -> None:
        self._call(self.sim.close()).result(timeout=30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()

    def _call(self, coroutine: object) -> Future[object]:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop)  # type: ignore[arg-type]

    def set(self, knobs: dict[str, str]) -> None:
        """``balance=N`` (or ``none``) and ``tokens=a,b`` (or ``any``) from a page's comment."""

        async def apply() -> None:
            for name, value in knobs.items():
                if name == "balance":
                    self.sim.set_balance(None if value == "none" else int(value))
                elif name == "tokens":
                    tokens = None if value == "any" else frozenset(value.split(","))
                    self.sim.set_knobs(tokens=tokens)
                else:
                    raise ValueError(f"unknown simulator knob {name!r} in an example comment")

        self._call(apply()).result(timeout=30)


@pytest.fixture
def simulator() -> Iterator[SimThread]:
    with SimThread() as sim:
        yield sim


def run_step(step: Step, cwd: Path, env: dict[str, str], base_url: str) -> tuple[int, str]:
    """One console line: ``export`` sets a variable for the page's later lines; a
    ``creator-monitor`` command runs in this process (``support.cli``: a shell's environment,
    stdout and stderr interleaved, the exit code), which spares each line a second of imports;
    the installed script itself is run by the install guide's test and the wheel smoke tests."""
    argv = step.argv
    if argv[0] == "export":
        name, value = argv[1].split("=", 1)
        env[name] = value
        return 0, ""
    assert argv[0] == "creator-monitor", (
        f"line {step.line}: only creator-monitor and export may run in a console block"
    )
    done = run_cli(*argv[1:], env=env, cwd=cwd, merged=True)
    return done.returncode, done.stdout.replace(base_url, DOC_BASE_URL)


def store_page_sources(names: str, cwd: Path) -> None:
    """``sources=Lilyy,Anna``: the page's creators' followers and notes, stored in the page's
    database as fetching those sources stores them, with the simulator's clock."""
    config = load_config(cwd / "config.toml")
    url = config.storage.url.replace(":///", f":///{cwd}/", 1)  # the page's relative file
    user_ids = [resolve_creator(config, name).user_id for name in names.split(",")]

    async def store() -> None:
        async with Store.open(url) as opened:
            await store_sources(opened, user_ids, SIM_NOW)

    asyncio.run(store())


def _page_ids() -> list[str]:
    return [page.path.name for page in pages()]


@pytest.mark.parametrize("page", pages(), ids=_page_ids())
def test_the_page_prints_what_it_shows(page: Page, simulator: SimThread, tmp_path: Path) -> None:
    base_url = simulator.sim.base_url
    for name, content in page.files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(content.replace(DOC_BASE_URL, base_url), encoding="utf-8")
    env: dict[str, str] = {}  # what the page exports; run_cli drops the tests' own token
    for block in page.blocks:
        knobs = dict(block.knobs)
        if "sources" in knobs:
            store_page_sources(knobs.pop("sources"), tmp_path)
        simulator.set(knobs)
        for step in block.steps:
            status, output = run_step(step, tmp_path, env, base_url)
            where = f"{page.path.name}:{step.line}: $ {step.command}"
            if not matches(step.expected, output):
                shown = "\n".join(step.expected)
                pytest.fail(f"{where}\nthe page shows:\n{shown}\nit printed:\n{output}", False)
            if status != step.status:
                pytest.fail(f"{where}: exit {status}, the page shows [{step.status}]", False)


def test_the_docs_show_examples_with_their_output() -> None:
    """The harness has something to check: the commands page's transcripts cover the daily
    commands, with output and exit statuses."""
    commands = parse_page(Path(__file__).parent.parent.parent / "docs" / "commands.md")
    steps = [step for block in commands.blocks for step in block.steps]
    shown = {step.argv[1] for step in steps if step.argv[0] == "creator-monitor"}
    assert {"check", "fetch", "history", "status", "db"} <= shown, shown
    assert all(step.expected for step in steps if step.argv[0] == "creator-monitor")
    assert {0, 2} <= {step.status for step in steps}


def test_the_transcript_format() -> None:
    """``...`` alone matches any lines (none too), inside a line any text; trailing spaces and
    a missing last newline do not matter; anything else must be as shown."""
    shown = ["header", "...", "total: ... rows", "[x]"]
    assert matches(shown, "header\ntotal: 3 rows\n[x]")
    assert matches(shown, "header\na\nb\ntotal: 3 rows   \n[x]\n")
    assert not matches(shown, "header\ntotal: 3 rows\n[x]\nextra\n")
    assert not matches(shown, "header\ntotal: 3\n[x]\n")
    assert not matches(["a"], "a\nb\n")
    assert matches([], "")
    assert not matches([], "something\n")


def test_every_fence_in_the_docs_closes() -> None:
    """A fence left open or closed with text after it (```` ``` text ````) would hide blocks from
    the harness and break the page: fences alternate, and a closing one is bare."""
    for path in PAGES:
        fences = [
            (number, line)
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
            if line.lstrip().startswith("```")
        ]
        assert len(fences) % 2 == 0, f"{path.name}: a fence is not closed"
        for number, line in fences[1::2]:
            assert line.strip() == "```", f"{path.name}:{number}: a closing fence with text"
