"""``check`` prints the call plan and exits 2 with advice when the plan cannot fit the budget."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.daemon import creators, daemon_config, write_toml

from monitor.cli.main import main


def _check(tmp_path: Path, every: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    doc = daemon_config(
        "http://127.0.0.1:9",
        f"sqlite+aiosqlite:///{tmp_path}/h.db",
        creators(100),
        budget={"calls_per_minute": 30, "daily_calls": 2000},
        every=every,
    )
    code = main(["-c", str(write_toml(tmp_path / "config.toml", doc)), "check", "--no-token"])
    return code, capsys.readouterr().out


def test_check_exits_2_with_advice_when_the_plan_cannot_fit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = _check(tmp_path, "1h", capsys)
    assert code == 2
    assert "call plan: 2424.0 calls/day for 100 series and the balance; budget allows 2000" in out
    assert "DOES NOT FIT" in out
    assert "advice: raise budget.daily_calls to 2424" in out
    assert "advice: or set every = 2h for every creator" in out


def test_check_passes_a_plan_that_fits(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = _check(tmp_path, "2h", capsys)
    assert code == 0
    assert "call plan: 1224.0 calls/day for 100 series and the balance; budget allows 2000" in out
    assert "fits" in out
    assert "advice" not in out
