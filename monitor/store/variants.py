"""How a ``Variant`` maps onto the four variant columns that several tables share.

Column plumbing only; no queries of its own.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, Table, and_

from monitor.model import Advertise, Business, DateType, NoteType, Variant

VARIANT_COLUMNS: tuple[str, ...] = ("business", "note_type", "date_type", "advertise")


def variant_values(variant: Variant) -> dict[str, str]:
    """The column values of a variant, as stored (the upstream's own spelling)."""
    return {
        "business": variant.business.value,
        "note_type": variant.note_type.value,
        "date_type": variant.date_type.value,
        "advertise": variant.advertise.value,
    }


def variant_of(row: Any) -> Variant:
    """The Variant held by a row that has the four variant columns."""
    return Variant(
        business=Business(row.business),
        note_type=NoteType(row.note_type),
        date_type=DateType(row.date_type),
        advertise=Advertise(row.advertise),
    )


def matches_variant(table: Table, variant: Variant) -> ColumnElement[bool]:
    """A WHERE clause selecting ``variant`` in ``table``."""
    return and_(*(table.c[name] == value for name, value in variant_values(variant).items()))
