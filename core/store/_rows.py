"""Query results as dicts, for the per-domain store modules."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import duckdb


def dicts(
    cursor: duckdb.DuckDBPyConnection, json_columns: Iterable[str] = ()
) -> list[dict[str, Any]]:
    """Every row of `cursor`'s result as a dict by column name; the named JSON columns,
    which DuckDB returns as text, parsed."""
    names = [d[0] for d in cursor.description]
    parsed = [c for c in json_columns if c in names]
    out = []
    for row in cursor.fetchall():
        item = dict(zip(names, row, strict=True))
        for key in parsed:
            if isinstance(item[key], str):
                item[key] = json.loads(item[key])
        out.append(item)
    return out


def one(
    cursor: duckdb.DuckDBPyConnection, json_columns: Iterable[str] = ()
) -> dict[str, Any] | None:
    """The first row as `dicts` gives it, or None."""
    found = dicts(cursor, json_columns)
    return found[0] if found else None
