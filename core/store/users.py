"""SQL for the `users` table. Callers pass a connection from `store.read()`
or `store.transaction()`."""

from __future__ import annotations

import duckdb

_COLUMNS = "name, role, disabled, created_at"


def count(con: duckdb.DuckDBPyConnection) -> int:
    return con.execute("SELECT count(*) FROM users").fetchall()[0][0]


def get(con: duckdb.DuckDBPyConnection, name: str) -> tuple | None:
    """(name, role, disabled, created_at, password_hash) or None."""
    rows = con.execute(
        f"SELECT {_COLUMNS}, password_hash FROM users WHERE name = ?", [name]
    ).fetchall()
    return rows[0] if rows else None


def list_all(con: duckdb.DuckDBPyConnection) -> list[tuple]:
    return con.execute(f"SELECT {_COLUMNS} FROM users ORDER BY name").fetchall()


def insert(
    con: duckdb.DuckDBPyConnection, name: str, role: str, password_hash: str, created_by: str
) -> None:
    con.execute(
        "INSERT INTO users (name, role, password_hash, created_by) VALUES (?, ?, ?, ?)",
        [name, role, password_hash, created_by],
    )


def update(con: duckdb.DuckDBPyConnection, name: str, **fields: object) -> None:
    allowed = {"role", "disabled", "password_hash"}
    if not fields or set(fields) - allowed:
        raise ValueError(f"can only update {sorted(allowed)}")
    assignments = ", ".join(f"{k} = ?" for k in fields)
    con.execute(f"UPDATE users SET {assignments} WHERE name = ?", [*fields.values(), name])
