"""The README and docs/ hold: every CLI command with an example, every config key, the two
commands, every upstream code; the README stays a short front door whose links resolve, and the
docs site builds with ``mkdocs build --strict``."""

from __future__ import annotations

import argparse
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from markdown.extensions.toc import slugify
from pydantic import BaseModel

from monitor import config as config_module
from monitor.cli.parser import build_parser

ROOT = Path(__file__).parent.parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
DOCS = ROOT / "docs"


def page(name: str) -> str:
    return (DOCS / name).read_text(encoding="utf-8")


def every_page() -> str:
    """The README and every docs page, one after the other."""
    return "\n".join([README, *(page(p.name) for p in sorted(DOCS.glob("*.md")))])


def command_rows(text: str) -> set[str]:
    """The commands named in the first column of a ``| command | does |`` table."""
    return set(re.findall(r"^\| `([a-z]+)` \|", text, re.M))


def command_paths(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> list[str]:
    """Every command and sub-command, walked from the argparse tree: 'db', 'db upgrade', …"""
    paths: list[str] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                paths.append(" ".join((*prefix, name)))
                paths += command_paths(sub, (*prefix, name))
    return paths


def test_every_command_has_an_example_line_in_the_readme() -> None:
    paths = command_paths(build_parser())
    assert {"report", "rules test", "db upgrade", "notify retry", "silence add"} <= set(paths)
    examples = [
        line.strip()
        for line in page("commands.md").splitlines()
        if line.strip().startswith("creator-monitor ")
    ]
    missing = []
    for path in paths:
        pattern = re.compile(r"^creator-monitor (?:-c \S+ )?" + re.escape(path) + r"(?: |$)")
        if not any(pattern.match(line) for line in examples):
            missing.append(path)
    assert not missing, f"commands without an example line in docs/commands.md: {missing}"


def test_every_command_is_in_the_readme_and_the_commands_page() -> None:
    top = {path for path in command_paths(build_parser()) if " " not in path}
    assert {"run", "check", "fetch", "db", "roster"} <= top
    for name, text in (("README.md", README), ("docs/commands.md", page("commands.md"))):
        missing = sorted(top - command_rows(text))
        assert not missing, f"commands missing from the command table of {name}: {missing}"


def test_every_example_line_parses() -> None:
    parser = build_parser()
    # console blocks are transcripts, run by test_docs_examples (mistakes included, on purpose)
    blocks = re.findall(r"^```([a-z]*)[^\n]*\n(.*?)^```$", every_page(), re.S | re.M)
    lines = [
        raw.strip() for lang, block in blocks if lang != "console" for raw in block.splitlines()
    ]
    assert len([line for line in lines if line.startswith("creator-monitor ")]) > 25
    for line in lines:
        if line.startswith("creator-monitor ") and "…" not in line:
            argv = shlex.split(line.split(">")[0], comments=True)[1:]
            parser.parse_args(argv)  # exits (fails the test) on a wrong option


def _keys(model: type[BaseModel] | type[config_module.CreatorConfig], prefix: str) -> set[str]:
    return {f"{prefix}{key}" for key in config_module.config_keys(model)}


def test_every_config_key_is_in_the_reference() -> None:
    c = config_module
    wanted: set[str] = set()
    for section, model in c.Config.model_fields.items():
        annotation = model.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            wanted |= _keys(annotation, f"{section}.")
    wanted |= _keys(c.CreatorConfig, "creators[].")
    wanted |= _keys(c.ChannelConfig, "channels[].")
    for rule in (
        c.ThresholdRule,
        c.ChangeRule,
        c.StaleRule,
        c.ApiErrorRule,
        c.AnomalyRule,
        c.BudgetRule,
    ):
        wanted |= _keys(rule, "rules[].")
    reference = page("configuration.md") + page("rules.md")
    missing = sorted(k for k in wanted if f"`{k}`" not in reference)
    assert not missing, f"config keys missing from the docs' reference: {missing}"


def test_every_report_key_is_in_the_reference() -> None:
    keys = _keys(config_module.ReportConfig, "reports[].")
    assert "reports[].cadence" in keys
    missing = sorted(k for k in keys if f"`{k}`" not in page("rules.md"))
    assert not missing, f"[[reports]] keys missing from docs/rules.md: {missing}"


def test_the_two_commands_are_the_first_blocks_and_ci_runs_the_second() -> None:
    blocks = re.findall(r"```sh\n(.*?)```", README, re.S)
    install_demo, tests = blocks[0].strip(), blocks[1].strip()
    assert install_demo == (
        "python3 -m venv .venv && .venv/bin/pip install -e . && .venv/bin/creator-monitor demo"
    )
    assert tests == (
        "python3 -m venv .venv && .venv/bin/pip install -e '.[dev]' "
        "&& .venv/bin/python -m pytest -q"
    )
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "python -m pytest -q" in ci


def test_troubleshooting_covers_every_upstream_code_and_perf_placeholders() -> None:
    section = page("troubleshooting.md")
    for code in ("0", "201", "301", "302", "303", "400", "500", "100", "600", "601", "602"):
        assert re.search(rf"^\| {code} \|", section, re.M), code
    assert "| gateway / non-JSON |" in section
    performance = page("performance.md")
    for mark in ("<!-- perf:store -->", "<!-- perf:budget -->", "<!-- perf:scaleout -->"):
        assert mark in performance


def test_the_readme_is_a_short_front_door() -> None:
    assert len(README.splitlines()) < 250
    for part in ("## Try it", "## A first real setup", "## Commands", "## Documentation"):
        assert part in README, part
    steps = README[README.index("## A first real setup") : README.index("## Commands")]
    assert re.findall(r"^(\d)\. \*\*", steps, re.M) == ["1", "2", "3", "4", "5"]


def _anchors(path: Path) -> set[str]:
    """The ids MkDocs gives a page's headings (its toc extension's slugs)."""
    headings = re.findall(r"^#{1,6} (.+)$", path.read_text(encoding="utf-8"), re.M)
    return {slugify(re.sub(r"[`*]", "", h), "-") for h in headings}


def test_the_readmes_links_resolve() -> None:
    links = re.findall(r"\]\((docs/[^)#\s]*)(?:#([^)\s]+))?\)", README)
    assert len(links) >= 10
    for target, anchor in links:
        path = ROOT / target
        assert path.exists(), f"README.md links to {target}, which does not exist"
        if anchor:
            assert anchor in _anchors(path), f"README.md: {target}#{anchor}: no such heading"


@pytest.mark.slow
def test_every_docs_page_is_in_the_nav_and_the_site_builds_strict(tmp_path: Path) -> None:
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    for path in DOCS.glob("*.md"):
        assert f": {path.name}" in nav, f"{path.name} is not in mkdocs.yml's nav"
    built = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "--site-dir", tmp_path],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        env={"NO_MKDOCS_2_WARNING": "1", "PATH": "/usr/bin:/bin"},
    )
    assert built.returncode == 0, built.stdout + built.stderr
    assert (tmp_path / "commands" / "index.html").exists()
