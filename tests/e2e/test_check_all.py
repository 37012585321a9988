"""``check`` says in one run everything ``run`` would refuse (issue "hardening" item 8, issue
"day one" build 4): schema, references, roster, channels, the files run reads (token files,
templates) and the call plan, one ``error: key.path: message`` line each, exit 2, and never in
pydantic's words. ``run`` refuses the same config with the same lines (one function for both).
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Any

import pytest
import support.cli as cli_support
from pydantic import BaseModel
from support.cli import Ran

from monitor.config import CONSOLE_TOKEN_MIN, Config, ConfigError, parse_config
from monitor.config.rules import RULE_MODELS
from monitor.config.sections import CreatorConfig
from monitor.validation import config_keys, problems_of

LILYY = "5c3bf7f7000000000602fd63"
MIA = "5a1b2c3d4e5f60718293a4b5"
TOKEN = "tok-SECRET-check-all-5b2d4e6f8a0b"


def run_cli(*argv: str, cwd: Path) -> Ran:
    return cli_support.run_cli(*argv, env={"JUSTONEAPI_TOKEN": TOKEN}, cwd=cwd)


def _secret(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    path.chmod(0o600)
    return path


def test_check_validates_the_files_run_reads_and_run_refuses_the_same(tmp_path: Path) -> None:
    empty = _secret(tmp_path / "readonly.token", "\n")
    config = _secret(
        tmp_path / "config.toml",
        f'[storage]\nurl = "sqlite+aiosqlite:///{tmp_path}/h.db"\n'
        f'[http]\nlisten = "127.0.0.1:9"\ntoken_file = "{tmp_path}/missing.token"\n'
        f'readonly_token_file = "{empty}"\n'
        f'[notify]\ntemplates_dir = "{tmp_path}/no-templates"\n'
        f'[[creators]]\nuser_id = "{LILYY}"\n',
    )
    expected = [
        f"error: http.token_file: token file {tmp_path}/missing.token not found",
        f"error: http.readonly_token_file: token file {empty} is empty",
        f"error: notify.templates_dir: folder {tmp_path}/no-templates not found",
    ]
    checked = run_cli("-c", str(config), "check", cwd=tmp_path)
    assert checked.returncode == 2, checked.stderr
    assert checked.stderr.splitlines() == expected
    ran = run_cli("-c", str(config), "run", cwd=tmp_path)
    assert ran.returncode == 2, ran.stderr
    assert [line for line in ran.stderr.splitlines() if line.startswith("error")] == expected
    assert TOKEN not in checked.stderr + ran.stderr


def test_a_console_token_needs_16_characters(tmp_path: Path) -> None:
    short = _secret(tmp_path / "admin.token", "x\n")
    config = parse_config({"http": {"token_file": str(short)}})
    from monitor.config import startup_problems

    (problem,) = startup_problems(config, {}, api_token=False)
    assert problem.path == "http.token_file"
    assert problem.message == (
        f"the console token in {short} has 1 character; it needs at least {CONSOLE_TOKEN_MIN} "
        "(make one with: python3 -c 'import secrets; print(secrets.token_urlsafe(32))')"
    )
    _secret(short, "a" * CONSOLE_TOKEN_MIN)
    assert startup_problems(config, {}, api_token=False) == []


def test_templates_dir_must_hold_templates(tmp_path: Path) -> None:
    folder = tmp_path / "templates"
    folder.mkdir()
    (folder / "alert.en.jinja").write_text("a typo in the name\n")
    from monitor.config import template_problems

    (problem,) = template_problems(folder)
    assert problem.message.startswith(f"{folder} holds none of the templates (alert.en.j2, ")
    (folder / "alert.en.j2").write_text("{{ title }}\nbody\n")
    assert template_problems(folder) == []


def test_check_reports_every_problem_of_a_config_in_one_run(tmp_path: Path) -> None:
    """Typos across every stage at once: before, each round showed one stage's problems."""
    roster = tmp_path / "team.csv"
    roster.write_text(f"user_id,name,every\n{MIA},Mia,3x\n")
    config = _secret(
        tmp_path / "config.toml",
        f"""\
[storage]
url = "sqlite+aiosqlite:///{tmp_path}/h.db"
[budget]
daily_calls = 10
calls_per_minute = "30"
[defaults]
every = "1h"
[roster]
files = ["team.csv"]
[api]
tiemout = "60s"
[[creators]]
user_id = "{LILYY}"
tags = "top"
[[creators]]
user_id = "5c3bf7f7000000000602fd64"
every = "forever"
[[creators]]
user_id = "5c3bf7f7000000000602fd66"
[[channels]]
name = "team"
url = "foo://bar"
[[channels]]
name = "ops"
url = 5
[[rules]]
name = "quiet"
kind = "stale"
after = "3d"
channels = ["team", "ops", "pager"]
creators = ["5c3bf7f7000000000602fd64", "5c3bf7f7000000000602fd65"]
[notify]
templates_dir = "{tmp_path}/templates"
""",
    )
    done = run_cli("-c", str(config), "check", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stdout == ""  # no plan advice for a config in part
    assert done.stderr.splitlines() == [
        "error: api.tiemout: unknown key; did you mean 'timeout'?",
        'error: budget.calls_per_minute: expected a whole number (no quotes), got "30"',
        'error: creators[0].tags: expected an array, e.g. ["a", "b"], got "top"',
        "error: creators[1].every: bad duration 'forever'; use a number with s, m, h, d or w, "
        "e.g. '15m'",
        "error: channels[1].url: expected text in quotes",
        "error: team.csv:2: every: bad duration '3x'; use a number with s, m, h, d or w, "
        "e.g. '15m'",
        "error: rules[0].channels: unknown channel 'pager'; known: team",
        "error: rules[0].creators: '5c3bf7f7000000000602fd65' is not a tracked creator",
        "error: channels[0].url: apprise cannot use this foo:// URL (unknown scheme or missing "
        "parts; see the apprise wiki for the scheme's format) (channel 'team')",
        f"error: notify.templates_dir: folder {tmp_path}/templates not found",
        "error: budget: the call plan does not fit the budget; call plan: 48.0 calls/day for "
        "1 series and the balance; budget allows 10 (daily_calls 10, calls_per_minute x 1440 "
        "= 43200): DOES NOT FIT",
    ]


# --- no message in pydantic's words ---------------------------------------------------------

PYDANTIC_WORDS = re.compile(
    r"Input should|Field required|Extra inputs|valid dictionary|instance of|Unexpected keyword|"
    r"Value error|Input tag|Input is not|unable to (parse|interpret)|\bNoneType\b"
)
WRONG: list[object] = [
    "text",
    "",
    7,
    -1,
    2.5,
    True,
    [1],
    ["a"],
    {"a": 1},
    dt.date(2020, 1, 2),
    dt.time(9, 0),
]
SECTIONS: dict[str, tuple[type[BaseModel] | type[Any], dict[str, Any] | None]] = {
    name: (info.annotation, None)  # type: ignore[misc]
    for name, info in Config.model_fields.items()
    if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel)
}


def _documents() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = [{name: value} for name in Config.model_fields for value in WRONG]
    for name, (model, _) in SECTIONS.items():
        docs += [{name: {key: value}} for key in config_keys(model) for value in WRONG]
    entries: list[tuple[str, type[Any], dict[str, Any]]] = [
        ("creators", CreatorConfig, {"user_id": LILYY}),
        ("channels", Config.model_fields["channels"].annotation, {"name": "a", "url": "json://x"}),
        ("reports", Config.model_fields["reports"].annotation, {"name": "r"}),
    ]
    for section, model, base in entries:
        keys = config_keys(CreatorConfig) if model is CreatorConfig else [
            *base, "language", "quiet_hours", "min_severity", "digest", "cadence", "at",
            "weekday", "day", "channels", "creators", "tags",
        ]  # fmt: skip
        docs += [{section: [{**base, key: value}]} for key in keys for value in WRONG]
    for kind, model in RULE_MODELS.items():
        base = {"name": "r", "kind": kind}
        docs += [{"rules": [{**base, key: value}]} for key in config_keys(model) for value in WRONG]
    docs += [{"creators": [{"user_id": LILYY, "variants": [value]}]} for value in WRONG]
    return docs


def test_no_config_message_shows_pydantic_wording() -> None:
    seen = 0
    for document in _documents():
        try:
            parse_config(document)
        except ConfigError as exc:
            for problem in problems_of(exc):
                seen += 1
                assert not PYDANTIC_WORDS.search(str(problem)), (document, str(problem))
    assert seen > 1000  # the sweep reached the models


@pytest.mark.parametrize(
    ("document", "line"),
    [
        ({"notify": {"language": "eng"}}, "notify.language: expected 'zh' or 'en', got \"eng\"; "
         "did you mean 'en'?"),
        ({"roster": {"files": "x.csv"}},
         'roster.files: expected an array, e.g. ["a", "b"], got "x.csv"'),
        ({"api": {"token_file": 5}}, "api.token_file: expected a file path in quotes, got 5"),
        ({"budget": []}, "budget: expected a table (a [section] or { key = value }), got an array"),
        ({"creators": ["x"]},
         'creators[0]: expected a table (a [[section]] entry or { key = value }), got "x"'),
        ({"reports": [{"name": ""}]}, "reports[0].name: must not be empty"),
    ],
)  # fmt: skip
def test_type_errors_read_as_toml(document: dict[str, Any], line: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(document)
    assert str(caught.value) == line


def test_roster_cells_read_as_csv_not_pydantic(tmp_path: Path) -> None:
    (tmp_path / "team.csv").write_text(
        f"user_id,business,advertise\n{LILYY},DAILY,ALL\n{MIA},DAILY_NOTE,everything\n"
    )
    from monitor.config.roster import read_roster

    _, problems = read_roster(["team.csv"], tmp_path, {})
    assert problems == [
        "team.csv:2: business: expected 'DAILY_NOTE' or 'COOPERATE_NOTE', got \"DAILY\"; "
        "did you mean 'DAILY_NOTE'?",
        "team.csv:3: advertise: expected 'ALL' or 'ORGANIC_ONLY', got \"everything\"",
    ]


def test_a_short_inline_channel_url_is_named_under_url(tmp_path: Path) -> None:
    config = _secret(
        tmp_path / "config.toml",
        f'[storage]\nurl = "sqlite+aiosqlite:///{tmp_path}/h.db"\n'
        f'[[creators]]\nuser_id = "{LILYY}"\n'
        '[[channels]]\nname = "team"\nurl = "x"\n',
    )
    done = run_cli("-c", str(config), "check", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "error: channels[0].url: the URL of channel 'team' holds 1 character, too short to be "
        "a real channel URL; set the whole value"
    ]
