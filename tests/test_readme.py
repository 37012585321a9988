"""The README holds: every CLI command with an example, every config key, the two commands."""

from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path

from pydantic import BaseModel

from monitor import config as config_module
from monitor.cli.main import build_parser

ROOT = Path(__file__).parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


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
        line.strip() for line in README.splitlines() if line.strip().startswith("creator-monitor ")
    ]
    missing = []
    for path in paths:
        pattern = re.compile(r"^creator-monitor (?:-c \S+ )?" + re.escape(path) + r"(?: |$)")
        if not any(pattern.match(line) for line in examples):
            missing.append(path)
    assert not missing, f"commands without an example line in README.md: {missing}"


def test_every_example_line_parses() -> None:
    parser = build_parser()
    for raw in README.splitlines():
        line = raw.strip()
        if line.startswith("creator-monitor ") and "…" not in line:
            argv = shlex.split(line.split(">")[0])[1:]
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
    missing = sorted(k for k in wanted if f"`{k}`" not in README)
    assert not missing, f"config keys missing from the README's reference: {missing}"


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
    section = README[README.index("## Troubleshooting") : README.index("## Performance")]
    for code in ("0", "201", "301", "302", "303", "400", "500", "100", "600", "601", "602"):
        assert re.search(rf"^\| {code} \|", section, re.M), code
    assert "| gateway / non-JSON |" in section
    for mark in ("<!-- perf:store -->", "<!-- perf:budget -->", "<!-- perf:scaleout -->"):
        assert mark in README
