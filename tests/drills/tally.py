"""What a drill counts: faults injected, rows checked, and the four numbers that must stay 0.

Shared by the short forms (pytest asserts the zeros) and ``bench/drills.py`` (prints the table).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from monitor.ops.redaction import secret_forms


@dataclass
class Tally:
    """One drill's score; ``notes`` say what went wrong, one line per finding."""

    drill: str
    faults: int = 0
    rows_checked: int = 0
    lost: int = 0
    duplicates: int = 0
    budget_breaches: int = 0
    leaks: int = 0
    #: alerts the rules did not call for, or ones they did that never came (must stay 0)
    misalerts: int = 0
    notes: list[str] = field(default_factory=list)

    def lose(self, count: int, why: str) -> None:
        if count:
            self.lost += count
            self.notes.append(f"lost {count}: {why}")

    def duplicate(self, count: int, why: str) -> None:
        if count:
            self.duplicates += count
            self.notes.append(f"{count} duplicate(s): {why}")

    def breach(self, count: int, why: str) -> None:
        if count:
            self.budget_breaches += count
            self.notes.append(f"{count} budget breach(es): {why}")

    def misalert(self, count: int, why: str) -> None:
        if count:
            self.misalerts += count
            self.notes.append(f"{count} alert(s) off the rules: {why}")

    def leak(self, texts: Iterable[str], secrets: Iterable[str], where: str) -> None:
        """Count every text that holds any form of any secret."""
        forms = {form for secret in secrets if secret for form in secret_forms(secret)}
        hits = sum(1 for text in texts if any(form in text for form in forms))
        if hits:
            self.leaks += hits
            self.notes.append(f"{hits} secret leak(s) in {where}")

    @property
    def clean(self) -> bool:
        return not (
            self.lost or self.duplicates or self.budget_breaches or self.leaks or self.misalerts
        )

    def row(self) -> tuple[str, int, int, int, int, int, int, int]:
        return (
            self.drill,
            self.faults,
            self.rows_checked,
            self.lost,
            self.duplicates,
            self.budget_breaches,
            self.leaks,
            self.misalerts,
        )


HEADERS = (
    "drill",
    "faults injected",
    "rows checked",
    "data lost",
    "duplicates sent",
    "budget breaches",
    "secret leaks",
    "alerts off-rule",
)


def table(tallies: Iterable[Tally]) -> str:
    """A plain-text table, one row per drill."""
    rows = [tuple(str(v) for v in t.row()) for t in tallies]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(HEADERS)]
    line = "  ".join(h.ljust(w) for h, w in zip(HEADERS, widths, strict=True))
    out = [line, "  ".join("-" * w for w in widths)]
    out += [
        "  ".join(
            v.rjust(w) if i else v.ljust(w) for i, (v, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in rows
    ]
    return "\n".join(out)


# --------------------------------------------------------------------------- SQLite inspection


def integrity(path: Path) -> str:
    """``PRAGMA integrity_check`` on a closed or live (WAL) SQLite file: ``ok`` when sound."""
    return str(query(path, "PRAGMA integrity_check")[0][0])


def dump(path: Path) -> str:
    """The whole database as SQL text, as ``sqlite3 FILE .dump`` prints it."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return "\n".join(conn.iterdump())
    finally:
        conn.close()


def query(path: Path, sql: str, *params: object) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return list(conn.execute(sql, params).fetchall())
    finally:
        conn.close()
