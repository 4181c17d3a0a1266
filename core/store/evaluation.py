"""SQL for stored evaluations (writes happen inside the caller's transaction)."""

from __future__ import annotations

import json
from typing import Any

import duckdb

from core.store import _rows

_COLUMNS = (
    "id, model_name, version, dataset_name, dataset_version, dataset_sha256, kind, task,"
    " row_count, columns, metrics, main_metric, details_sha256, implementation, warnings,"
    " created_by, created_at"
)
_JSON_COLUMNS = ("columns", "metrics", "implementation", "warnings")


def _dicts(cursor: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    return _rows.dicts(cursor, _JSON_COLUMNS)


def insert(con: duckdb.DuckDBPyConnection, row: dict[str, Any]) -> int:
    """Insert one evaluation; JSON fields are serialised here. Returns its id."""
    return con.execute(
        "INSERT INTO evaluations (model_name, version, dataset_name, dataset_version,"
        " dataset_sha256, kind, task, row_count, columns, metrics, main_metric, details_sha256,"
        " implementation, warnings, created_by)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
        [
            row.get("model_name"),
            row.get("version"),
            row["dataset_name"],
            row["dataset_version"],
            row["dataset_sha256"],
            row["kind"],
            row["task"],
            row["row_count"],
            json.dumps(row["columns"]),
            json.dumps(row["metrics"]),
            row.get("main_metric"),
            row.get("details_sha256"),
            json.dumps(row["implementation"]),
            json.dumps(row["warnings"]),
            row["created_by"],
        ],
    ).fetchall()[0][0]


def insert_artifact(
    con: duckdb.DuckDBPyConnection, sha256: str, size_bytes: int, created_by: str
) -> None:
    """Record a details file in the shared `artifacts` table (the same bytes stay as they are)."""
    con.execute(
        "INSERT OR IGNORE INTO artifacts (sha256, size_bytes, kind, created_by)"
        " VALUES (?, ?, 'evaluation_details', ?)",
        [sha256, size_bytes, created_by],
    )


def get(con: duckdb.DuckDBPyConnection, evaluation_id: int) -> dict[str, Any] | None:
    found = _dicts(con.execute(f"SELECT {_COLUMNS} FROM evaluations WHERE id = ?", [evaluation_id]))
    return found[0] if found else None


def list_for(
    con: duckdb.DuckDBPyConnection,
    *,
    model: str | None = None,
    version: int | None = None,
    dataset: str | None = None,
    kind: str | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """Evaluations, newest first, filtered by model (and version), dataset and kind."""
    where: list[str] = []
    params: list[Any] = []
    for column, value in (
        ("model_name", model), ("version", version), ("dataset_name", dataset), ("kind", kind)
    ):
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    sql = f"SELECT {_COLUMNS} FROM evaluations"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY id DESC LIMIT ?"
    return _dicts(con.execute(sql, [*params, limit]))
