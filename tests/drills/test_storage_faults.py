"""Drill 4, short form: disk full, locked by another writer, read-only file (store level)."""

from __future__ import annotations

from pathlib import Path

import pytest

from drills.storage import FAULTS, can_make_read_only, storage_drill

pytestmark = pytest.mark.drills


@pytest.mark.parametrize("fault", FAULTS)
async def test_a_storage_fault_loses_nothing_and_clears(tmp_path: Path, fault: str) -> None:
    if fault == "read_only" and not can_make_read_only():
        pytest.skip("root without chattr cannot make a file read-only")
    tally = await storage_drill(tmp_path, faults=(fault,))
    assert tally.notes == []
    assert tally.clean
    assert tally.faults == 1
    assert tally.rows_checked > 0
