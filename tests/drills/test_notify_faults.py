"""Drill 3, short form: an hour of 500s, hangs and refused connections (injected clock), a
restart in the middle; then a misspelt apprise URL whose dead letters are visible and replayed
through the CLI."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from drills.notify_faults import misspelt_url_drill, notify_drill

pytestmark = pytest.mark.drills


async def test_an_hour_of_channel_faults_delivers_each_message_once(tmp_path: Path) -> None:
    tally = await notify_drill(tmp_path, messages=1, step=timedelta(minutes=5))
    assert tally.notes == []
    assert tally.clean
    assert tally.rows_checked == 4


async def test_a_misspelt_url_dead_letters_then_replays_once(tmp_path: Path) -> None:
    tally = await misspelt_url_drill(tmp_path)
    assert tally.notes == []
    assert tally.clean
    assert tally.rows_checked == 2
