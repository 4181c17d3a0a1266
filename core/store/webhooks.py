"""SQL for registry webhooks and their deliveries. Callers pass a connection
from `store.read()` or `store.transaction()`."""

from __future__ import annotations

import json
from typing import Any

import duckdb

from core.store import _rows

_HOOK_COLUMNS = "id, url, events, secret, created_by, created_at, removed_by, removed_at"
_DELIVERY_COLUMNS = (
    "id, webhook_id, event, payload, outcome, attempts, response_status, error, created_at,"
    " finished_at"
)


def _dicts(cursor: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    return _rows.dicts(cursor)


def insert(
    con: duckdb.DuckDBPyConnection, url: str, events: list[str], secret: str, created_by: str
) -> int:
    return con.execute(
        "INSERT INTO webhooks (url, events, secret, created_by) VALUES (?, ?, ?, ?) RETURNING id",
        [url, json.dumps(events), secret, created_by],
    ).fetchall()[0][0]


def get(con: duckdb.DuckDBPyConnection, hook_id: int) -> dict[str, Any] | None:
    rows = _dicts(con.execute(f"SELECT {_HOOK_COLUMNS} FROM webhooks WHERE id = ?", [hook_id]))
    return rows[0] if rows else None


def list_all(con: duckdb.DuckDBPyConnection, *, include_removed: bool = False) -> list[dict]:
    where = "" if include_removed else " WHERE removed_at IS NULL"
    return _dicts(con.execute(f"SELECT {_HOOK_COLUMNS} FROM webhooks{where} ORDER BY id"))


def for_event(con: duckdb.DuckDBPyConnection, event: str) -> list[dict[str, Any]]:
    """Active hooks subscribed to `event`."""
    return _dicts(
        con.execute(
            f"SELECT {_HOOK_COLUMNS} FROM webhooks WHERE removed_at IS NULL"
            " AND list_contains(CAST(events AS TEXT[]), ?) ORDER BY id",
            [event],
        )
    )


def mark_removed(con: duckdb.DuckDBPyConnection, hook_id: int, by: str) -> None:
    con.execute(
        "UPDATE webhooks SET removed_by = ?, removed_at = current_timestamp WHERE id = ?",
        [by, hook_id],
    )


def insert_delivery(
    con: duckdb.DuckDBPyConnection, hook_id: int, event: str, payload: dict[str, Any]
) -> int:
    return con.execute(
        "INSERT INTO webhook_deliveries (webhook_id, event, payload, outcome)"
        " VALUES (?, ?, ?, 'pending') RETURNING id",
        [hook_id, event, json.dumps(payload, default=str)],
    ).fetchall()[0][0]


def settle_delivery(
    con: duckdb.DuckDBPyConnection,
    delivery_id: int,
    *,
    outcome: str,
    attempts: int,
    response_status: int | None,
    error: str | None,
) -> None:
    con.execute(
        "UPDATE webhook_deliveries SET outcome = ?, attempts = ?, response_status = ?, error = ?,"
        " finished_at = current_timestamp WHERE id = ?",
        [outcome, attempts, response_status, error, delivery_id],
    )


def list_deliveries(
    con: duckdb.DuckDBPyConnection, *, hook_id: int | None = None, limit: int = 50
) -> list[dict[str, Any]]:
    sql = f"SELECT {_DELIVERY_COLUMNS} FROM webhook_deliveries"
    params: list[Any] = []
    if hook_id is not None:
        sql += " WHERE webhook_id = ?"
        params.append(hook_id)
    sql += " ORDER BY id DESC LIMIT ?"
    params.append(limit)
    return _dicts(con.execute(sql, params))


def stale_pending(con: duckdb.DuckDBPyConnection, older_than_s: float) -> list[dict[str, Any]]:
    """Deliveries still `pending` after `older_than_s` seconds, with their active hook's URL
    and secret."""
    return _dicts(
        con.execute(
            "SELECT d.id, d.webhook_id, d.event, d.payload, w.url, w.secret"
            " FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id"
            " WHERE d.outcome = 'pending' AND w.removed_at IS NULL"
            " AND d.created_at <= current_timestamp - to_seconds(?) ORDER BY d.id",
            [float(older_than_s)],
        )
    )
