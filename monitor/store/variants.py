"""How a ``Variant`` maps onto the columns that several tables share: the four variant columns
(``daily_metrics``, core_data's alone) and, where any source's series live (``schedule``,
``fetches``), the ``source`` column beside them.

Column plumbing only; no queries of its own.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, Table, and_

from monitor.model import CORE, FANS, NOTES, Advertise, Business, DateType, NoteType, Variant

VARIANT_COLUMNS: tuple[str, ...] = ("business", "note_type", "date_type", "advertise")
#: a series of any source: the variant columns and the source
SERIES_COLUMNS: tuple[str, ...] = (*VARIANT_COLUMNS, "source")
#: the sources a stored series can have
STORED_SOURCES: tuple[str, ...] = (CORE, FANS, NOTES)


def variant_values(variant: Variant) -> dict[str, str]:
    """The four variant columns' values, as stored (the upstream's own spelling)."""
    return {
        "business": variant.business.value,
        "note_type": variant.note_type.value,
        "date_type": variant.date_type.value,
        "advertise": variant.advertise.value,
    }


def series_values(variant: Variant) -> dict[str, str]:
    """The series columns' values: the variant's and its source."""
    return {**variant_values(variant), "source": variant.source}


def variant_of(row: Any) -> Variant:
    """The Variant held by a row that has the four variant columns (and, if it has one, the
    source column: a row of ``daily_metrics`` is always core's)."""
    source = getattr(row, "source", CORE) or CORE
    return Variant(
        business=Business(row.business),
        note_type=NoteType(row.note_type),
        date_type=DateType(row.date_type),
        advertise=Advertise(row.advertise),
        source=source if source in STORED_SOURCES else CORE,
    )


def matches_variant(table: Table, variant: Variant) -> ColumnElement[bool]:
    """A WHERE clause selecting ``variant`` in ``table`` (its source too, where the table has
    the column)."""
    values = series_values(variant) if "source" in table.c else variant_values(variant)
    return and_(*(table.c[name] == value for name, value in values.items()))
