"""SQL that reads the append-only audit log (writes go through `store.append_audit`)."""

from __future__ import annotations

import json
from typing import Any

import duckdb

_COLUMNS = (
    "id, occurred_at, actor, action, entity_type, entity_id, from_state, to_state, comment, details"
)


def _row(r: tuple) -> dict[str, Any]:
    keys = [c.strip() for c in _COLUMNS.split(",")]
    out = dict(zip(keys, r, strict=True))
    if isinstance(out["details"], str):
        out["details"] = json.loads(out["details"])
    return out


def recent(con: duckdb.DuckDBPyConnection, limit: int = 20) -> list[dict[str, Any]]:
    rows = con.execute(
        f"SELECT {_COLUMNS} FROM audit_log ORDER BY id DESC LIMIT ?", [limit]
    ).fetchall()
    return [_row(r) for r in rows]


def for_entity(
    con: duckdb.DuckDBPyConnection, entity_type: str, entity_id_prefix: str | None = None
) -> list[dict[str, Any]]:
    if entity_id_prefix is None:
        rows = con.execute(
            f"SELECT {_COLUMNS} FROM audit_log WHERE entity_type = ? ORDER BY id",
            [entity_type],
        ).fetchall()
    else:
        rows = con.execute(
            f"SELECT {_COLUMNS} FROM audit_log WHERE entity_type = ? AND"
            " (entity_id = ? OR starts_with(entity_id, ?)) ORDER BY id",
            [entity_type, entity_id_prefix, entity_id_prefix + ":"],
        ).fetchall()
    return [_row(r) for r in rows]
