"""SQL for feature views, their immutable versions and their materialisations."""

from __future__ import annotations

import json
from typing import Any

import duckdb

_VERSION_COLUMNS = (
    "v.name, v.version, v.content_sha256, v.description, v.entity_key, v.timestamp_column,"
    " v.tags, v.definition, v.created_by, v.created_at, f.owner,"
    " m.artifact_sha256, m.latest, m.row_count, m.created_by, m.created_at"
)
_FROM = (
    " FROM feature_view_versions v JOIN feature_views f ON f.name = v.name"
    " LEFT JOIN feature_view_materializations m ON m.name = v.name AND m.version = v.version"
)


def _row(r: tuple) -> dict[str, Any]:
    keys = [
        "name",
        "version",
        "content_sha256",
        "description",
        "entity_key",
        "timestamp_column",
        "tags",
        "definition",
        "created_by",
        "created_at",
        "owner",
        "materialized_sha256",
        "latest",
        "row_count",
        "materialized_by",
        "materialized_at",
    ]
    out = dict(zip(keys, r, strict=True))
    for key in ("tags", "definition", "latest"):
        if isinstance(out[key], str):
            out[key] = json.loads(out[key])
    return out


def view_exists(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    return bool(
        con.execute("SELECT count(*) FROM feature_views WHERE name = ?", [name]).fetchall()[0][0]
    )


def ensure_view(con: duckdb.DuckDBPyConnection, name: str, owner: str, created_by: str) -> bool:
    """Create the feature view row if missing. Returns True when it was created."""
    if view_exists(con, name):
        return False
    con.execute(
        "INSERT INTO feature_views (name, owner, created_by) VALUES (?, ?, ?)",
        [name, owner, created_by],
    )
    return True


def next_version(con: duckdb.DuckDBPyConnection, name: str) -> int:
    return con.execute(
        "SELECT coalesce(max(version), 0) + 1 FROM feature_view_versions WHERE name = ?", [name]
    ).fetchall()[0][0]


def insert_version(con: duckdb.DuckDBPyConnection, **row: Any) -> None:
    row = dict(row)
    row["tags"] = json.dumps(row["tags"])
    row["definition"] = json.dumps(row["definition"], default=str)
    names = ", ".join(row)
    marks = ", ".join("?" for _ in row)
    con.execute(f"INSERT INTO feature_view_versions ({names}) VALUES ({marks})", list(row.values()))


def put_materialization(
    con: duckdb.DuckDBPyConnection,
    name: str,
    version: int,
    artifact_sha256: str,
    latest: dict[str, str],
    row_count: int,
    created_by: str,
) -> None:
    con.execute(
        "INSERT OR REPLACE INTO feature_view_materializations"
        " (name, version, artifact_sha256, latest, row_count, created_by) VALUES (?, ?, ?, ?, ?, ?)",
        [name, version, artifact_sha256, json.dumps(latest), row_count, created_by],
    )


def get_version(
    con: duckdb.DuckDBPyConnection, name: str, version: int | None
) -> dict[str, Any] | None:
    if version is None:
        rows = con.execute(
            f"SELECT {_VERSION_COLUMNS}{_FROM} WHERE v.name = ? ORDER BY v.version DESC LIMIT 1",
            [name],
        ).fetchall()
    else:
        rows = con.execute(
            f"SELECT {_VERSION_COLUMNS}{_FROM} WHERE v.name = ? AND v.version = ?",
            [name, version],
        ).fetchall()
    return _row(rows[0]) if rows else None


def find_by_hash(
    con: duckdb.DuckDBPyConnection, name: str, content_sha256: str
) -> dict[str, Any] | None:
    rows = con.execute(
        f"SELECT {_VERSION_COLUMNS}{_FROM} WHERE v.name = ? AND v.content_sha256 = ?"
        " ORDER BY v.version LIMIT 1",
        [name, content_sha256],
    ).fetchall()
    return _row(rows[0]) if rows else None


def list_versions(con: duckdb.DuckDBPyConnection, name: str | None = None) -> list[dict[str, Any]]:
    where = " WHERE v.name = ?" if name is not None else ""
    rows = con.execute(
        f"SELECT {_VERSION_COLUMNS}{_FROM}{where} ORDER BY v.name, v.version",
        [name] if name is not None else [],
    ).fetchall()
    return [_row(r) for r in rows]


def models_using(con: duckdb.DuckDBPyConnection, name: str) -> list[dict[str, Any]]:
    """Registered model versions whose lineage names feature view `name`."""
    rows = con.execute(
        "SELECT model_name, version, status,"
        " CAST(json_extract(lineage, '$.feature_view.version') AS INTEGER), created_by, created_at"
        " FROM model_versions"
        " WHERE json_extract_string(lineage, '$.feature_view.name') = ?"
        " ORDER BY model_name, version",
        [name],
    ).fetchall()
    keys = ["model", "version", "status", "feature_view_version", "created_by", "created_at"]
    return [dict(zip(keys, r, strict=True)) for r in rows]
