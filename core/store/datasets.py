"""SQL for datasets, their versions, cached profiles and stored reports."""

from __future__ import annotations

import json

import duckdb

_VERSION_COLUMNS = (
    "dataset_name, version, content_sha256, source_name, source_sha256, source_format,"
    " row_count, columns, size_bytes, created_by, created_at"
)


def ensure_dataset(con: duckdb.DuckDBPyConnection, name: str, created_by: str) -> bool:
    """Create the dataset row if missing. Returns True when it was created."""
    exists = con.execute("SELECT count(*) FROM datasets WHERE name = ?", [name]).fetchall()[0][0]
    if exists:
        return False
    con.execute("INSERT INTO datasets (name, created_by) VALUES (?, ?)", [name, created_by])
    return True


def next_version(con: duckdb.DuckDBPyConnection, name: str) -> int:
    return con.execute(
        "SELECT coalesce(max(version), 0) + 1 FROM dataset_versions WHERE dataset_name = ?",
        [name],
    ).fetchall()[0][0]


def insert_version(con: duckdb.DuckDBPyConnection, **row: object) -> None:
    row = dict(row)
    row["columns"] = json.dumps(row["columns"])
    names = ", ".join(row)
    marks = ", ".join("?" for _ in row)
    con.execute(f"INSERT INTO dataset_versions ({names}) VALUES ({marks})", list(row.values()))


def insert_artifact(
    con: duckdb.DuckDBPyConnection, sha256: str, size_bytes: int, kind: str, created_by: str
) -> None:
    con.execute(
        "INSERT INTO artifacts (sha256, size_bytes, kind, created_by) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (sha256) DO NOTHING",
        [sha256, size_bytes, kind, created_by],
    )


def get_version(
    con: duckdb.DuckDBPyConnection, name: str, version: int | None
) -> tuple | None:
    if version is None:
        rows = con.execute(
            f"SELECT {_VERSION_COLUMNS} FROM dataset_versions WHERE dataset_name = ?"
            " ORDER BY version DESC LIMIT 1",
            [name],
        ).fetchall()
    else:
        rows = con.execute(
            f"SELECT {_VERSION_COLUMNS} FROM dataset_versions"
            " WHERE dataset_name = ? AND version = ?",
            [name, version],
        ).fetchall()
    return rows[0] if rows else None


def list_versions(con: duckdb.DuckDBPyConnection, name: str | None = None) -> list[tuple]:
    where = "WHERE dataset_name = ?" if name is not None else ""
    return con.execute(
        f"SELECT {_VERSION_COLUMNS} FROM dataset_versions {where}"
        " ORDER BY dataset_name, version",
        [name] if name is not None else [],
    ).fetchall()


def dataset_exists(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    return bool(
        con.execute("SELECT count(*) FROM datasets WHERE name = ?", [name]).fetchall()[0][0]
    )


def get_profile(con: duckdb.DuckDBPyConnection, content_sha256: str) -> dict | None:
    rows = con.execute(
        "SELECT profile FROM profiles WHERE content_sha256 = ?", [content_sha256]
    ).fetchall()
    return json.loads(rows[0][0]) if rows else None


def put_profile(
    con: duckdb.DuckDBPyConnection, content_sha256: str, profile: dict, seconds: float
) -> None:
    con.execute(
        "INSERT OR REPLACE INTO profiles (content_sha256, profile, seconds) VALUES (?, ?, ?)",
        [content_sha256, json.dumps(profile), seconds],
    )


def get_report(
    con: duckdb.DuckDBPyConnection, name: str, version: int, kind: str
) -> tuple | None:
    rows = con.execute(
        "SELECT artifact_sha256, rows_used, total_rows, created_by, created_at FROM reports"
        " WHERE dataset_name = ? AND version = ? AND kind = ?",
        [name, version, kind],
    ).fetchall()
    return rows[0] if rows else None


def put_report(
    con: duckdb.DuckDBPyConnection,
    name: str,
    version: int,
    kind: str,
    artifact_sha256: str,
    rows_used: int,
    total_rows: int,
    created_by: str,
) -> None:
    con.execute(
        "INSERT OR REPLACE INTO reports (dataset_name, version, kind, artifact_sha256, rows_used,"
        " total_rows, created_by) VALUES (?, ?, ?, ?, ?, ?, ?)",
        [name, version, kind, artifact_sha256, rows_used, total_rows, created_by],
    )


def known_artifacts(con: duckdb.DuckDBPyConnection) -> set[str]:
    return {r[0] for r in con.execute("SELECT sha256 FROM artifacts").fetchall()}
