"""The long forms of the fault drills (issue 7); prints one table row per drill.

    .venv/bin/python bench/drills.py [--kills 20] [--quick]

Columns: faults injected, rows checked, data lost, duplicates sent, budget breaches, secret
leaks; the last four must be 0. Notes under the table say what each non-zero count was.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent / "tests")]

from drills.chaos import chaos_drill, summary  # noqa: E402 - the drills live beside the tests
from drills.clock import clock_drill  # noqa: E402
from drills.crash import crash_drill  # noqa: E402
from drills.daemon_storage import FAULTS as DAEMON_FAULTS  # noqa: E402
from drills.daemon_storage import HOLD, daemon_storage_drill  # noqa: E402
from drills.fuzz import fuzz_drill  # noqa: E402
from drills.notify_faults import misspelt_url_drill, notify_drill  # noqa: E402
from drills.storage import can_make_read_only, storage_drill  # noqa: E402
from drills.tally import Tally, table  # noqa: E402

TOKEN = "tok-SECRET-7f3a9c1e5b2d4e6f8a0b"


async def run_all(kills: int, quick: bool) -> list[Tally]:
    tallies: list[Tally] = []
    with tempfile.TemporaryDirectory(prefix="cm-drills-") as tmp:
        root = Path(tmp)

        def fresh(name: str) -> Path:
            path = root / name
            path.mkdir()
            return path

        steps = [
            ("crash", lambda: crash_drill(fresh("crash"), TOKEN, kills=kills)),
            (
                "notify",
                lambda: notify_drill(
                    fresh("notify"),
                    messages=1 if quick else 3,
                    step=timedelta(minutes=5 if quick else 1),
                ),
            ),
            ("typo", lambda: misspelt_url_drill(fresh("typo"))),
            (
                "storage",
                lambda: storage_drill(
                    fresh("storage"),
                    rounds=1 if quick else 5,
                    faults=("disk_full", "locked", "read_only")
                    if can_make_read_only()
                    else ("disk_full", "locked"),
                ),
            ),
        ]
        for name, step in steps:
            started = time.monotonic()
            print(f"… {name}", file=sys.stderr, flush=True)
            tallies.append(await step())
            print(f"  {time.monotonic() - started:.1f} s", file=sys.stderr, flush=True)
        tallies.append(await _chaos(fresh("chaos"), quick))
        tallies.append(await _daemon_storage(fresh("daemon-storage"), quick))
        tallies.append((await clock_drill(fresh("clock"), minutes=10 if quick else 90))[0])
    tallies.append(fuzz_drill(examples=200 if quick else 3000))
    return tallies


async def _chaos(directory: Path, quick: bool) -> Tally:
    started = time.monotonic()
    print("… chaos", file=sys.stderr, flush=True)
    seconds, users = (10.0, 16) if quick else (90.0, 40)
    tally, watch = await chaos_drill(directory, TOKEN, seconds=seconds, users=users)
    tally.notes.append(summary(watch)())
    print(f"  {time.monotonic() - started:.1f} s", file=sys.stderr, flush=True)
    return tally


async def _daemon_storage(directory: Path, quick: bool) -> Tally:
    """The three faults under the running daemon, added up into one row."""
    total = Tally("daemon storage faults")
    faults = DAEMON_FAULTS if can_make_read_only() else ("disk_full", "locked")
    for kind in faults:
        started = time.monotonic()
        print(f"… daemon storage: {kind}", file=sys.stderr, flush=True)
        hold = HOLD[kind] if quick else HOLD[kind] + 7.0
        path = directory / kind
        path.mkdir()
        tally, outcome = await daemon_storage_drill(path, TOKEN, kind, hold=hold)
        for name in ("faults", "rows_checked", "lost", "duplicates", "budget_breaches", "leaks"):
            setattr(total, name, getattr(total, name) + getattr(tally, name))
        total.notes += [*tally.notes, f"{kind}: {len(outcome.errors)} ERROR lines in {hold:g} s"]
        print(f"  {time.monotonic() - started:.1f} s", file=sys.stderr, flush=True)
    return total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20, help="SIGKILLs in the crash drill")
    parser.add_argument("--quick", action="store_true", help="short forms (as in CI)")
    args = parser.parse_args()
    tallies = asyncio.run(run_all(3 if args.quick else args.kills, args.quick))
    print(table(tallies))
    notes = [f"- {t.drill}: {note}" for t in tallies for note in t.notes]
    if notes:
        print("\nnotes:")
        print("\n".join(notes))
    return 0 if all(t.clean for t in tallies) else 1


if __name__ == "__main__":
    raise SystemExit(main())
