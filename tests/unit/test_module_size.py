"""No module of the package is over 500 lines: a longer one is split along a seam of its own
(a group of functions that belong together, named for what they are), not left to grow."""

from __future__ import annotations

from pathlib import Path

import monitor

ROOT = Path(monitor.__file__).parent
LIMIT = 500


def test_no_module_is_over_500_lines() -> None:
    sizes = {
        path.relative_to(ROOT.parent).as_posix(): len(path.read_text(encoding="utf-8").splitlines())
        for path in sorted(ROOT.rglob("*.py"))
    }
    assert len(sizes) > 50  # the package was found, not an empty folder
    too_long = {name: lines for name, lines in sizes.items() if lines > LIMIT}
    assert not too_long, f"modules over {LIMIT} lines (split each along a seam): {too_long}"
