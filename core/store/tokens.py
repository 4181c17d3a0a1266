"""SQL for the `api_tokens` table. Callers pass a connection from `store.read()`
or `store.transaction()`; only hashes of tokens ever reach this table."""

from __future__ import annotations

from typing import Any

import duckdb

from core.store import _rows

ENTITY_TOKEN = "api_token"
_COLUMNS = "id, name, last4, created_by, created_at, revoked_by, revoked_at"


def _dicts(cursor: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    return _rows.dicts(cursor)


def insert(
    con: duckdb.DuckDBPyConnection, name: str, token_sha256: str, last4: str, created_by: str
) -> int:
    """Store a new token's hash; returns its id."""
    rows = con.execute(
        "INSERT INTO api_tokens (name, token_sha256, last4, created_by) VALUES (?, ?, ?, ?)"
        " RETURNING id",
        [name, token_sha256, last4, created_by],
    ).fetchall()
    return int(rows[0][0])


def get(con: duckdb.DuckDBPyConnection, token_id: int) -> dict[str, Any] | None:
    found = _dicts(con.execute(f"SELECT {_COLUMNS} FROM api_tokens WHERE id = ?", [token_id]))
    return found[0] if found else None


def by_hash(con: duckdb.DuckDBPyConnection, token_sha256: str) -> dict[str, Any] | None:
    found = _dicts(
        con.execute(f"SELECT {_COLUMNS} FROM api_tokens WHERE token_sha256 = ?", [token_sha256])
    )
    return found[0] if found else None


def list_all(con: duckdb.DuckDBPyConnection, *, include_revoked: bool = True) -> list[dict]:
    where = "" if include_revoked else " WHERE revoked_at IS NULL"
    return _dicts(con.execute(f"SELECT {_COLUMNS} FROM api_tokens{where} ORDER BY id"))


def active_by_hash(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """sha256 → id of every token that is not revoked (what a server accepts)."""
    rows = con.execute(
        "SELECT token_sha256, id FROM api_tokens WHERE revoked_at IS NULL"
    ).fetchall()
    return {r[0]: int(r[1]) for r in rows}


def revoke(con: duckdb.DuckDBPyConnection, token_id: int, revoked_by: str) -> None:
    con.execute(
        "UPDATE api_tokens SET revoked_by = ?, revoked_at = current_timestamp WHERE id = ?",
        [revoked_by, token_id],
    )
