"""SQL for the model registry: models, versions, their files, tags and
aliases, approval requests, and the registry's slice of the audit log.
Callers pass a connection from `store.read()` or `store.transaction()`;
every function here is one or a few statements and holds no logic beyond
shaping rows into plain dicts."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

import duckdb

from core.store import _rows

# Audit rows about the registry use these entity types; their entity ids are
# "model", "model:version" and "model@alias".
ENTITY_MODEL = "model"
ENTITY_VERSION = "model_version"
ENTITY_ALIAS = "model_alias"
ENTITY_TYPES = (ENTITY_MODEL, ENTITY_VERSION, ENTITY_ALIAS)

_VERSION_COLUMNS = (
    "model_name, version, status, task, flavor, description, metrics, params, lineage, "
    "dataset_name, dataset_version, parent_version, created_by, created_at, "
    "status_changed_by, status_changed_at"
)
_REQUEST_COLUMNS = (
    "id, model_name, version, requested_by, requested_at, comment, decision, decided_by, "
    "decided_at, decision_comment"
)


def _dicts(cursor: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    return _rows.dicts(cursor)


def _one(cursor: duckdb.DuckDBPyConnection) -> dict[str, Any] | None:
    return _rows.one(cursor)


# --- models -----------------------------------------------------------------


def get_model(con: duckdb.DuckDBPyConnection, name: str) -> dict[str, Any] | None:
    return _one(con.execute("SELECT name, created_by, created_at FROM models WHERE name = ?",
                            [name]))


def insert_model(con: duckdb.DuckDBPyConnection, name: str, created_by: str) -> None:
    con.execute("INSERT INTO models (name, created_by) VALUES (?, ?)", [name, created_by])


def _model_filters(
    search: str | None, status: str | None, owner: str | None, tag: tuple[str, str | None] | None
) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    if search:
        # contains() treats the text literally, so '_' or '%' in a search mean themselves.
        clauses.append("contains(lower(m.name), lower(?))")
        params.append(search)
    if owner:
        clauses.append("m.created_by = ?")
        params.append(owner)
    if status:
        clauses.append(
            "EXISTS (SELECT 1 FROM model_versions v WHERE v.model_name = m.name AND v.status = ?)"
        )
        params.append(status)
    if tag:
        key, value = tag
        if value is None:
            clauses.append(
                "EXISTS (SELECT 1 FROM model_version_tags t WHERE t.model_name = m.name"
                " AND t.key = ?)"
            )
            params.append(key)
        else:
            clauses.append(
                "EXISTS (SELECT 1 FROM model_version_tags t WHERE t.model_name = m.name"
                " AND t.key = ? AND t.value = ?)"
            )
            params.extend([key, value])
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    return where, params


def list_models(
    con: duckdb.DuckDBPyConnection,
    *,
    search: str | None = None,
    status: str | None = None,
    owner: str | None = None,
    tag: tuple[str, str | None] | None = None,
    limit: int = 50,
    offset: int = 0,
) -> tuple[list[dict[str, Any]], int]:
    """One page of models (by name) with their version summary, and the total matching.

    Each row has name, created_by, created_at, version_count, latest_version,
    latest_status, updated_at, status_counts (JSON text) and aliases (JSON text).
    """
    where, params = _model_filters(search, status, owner, tag)
    total = con.execute(f"SELECT count(*) FROM models m {where}", params).fetchall()[0][0]
    # Page the names first so the per-model aggregates only run over one page.
    rows = _dicts(
        con.execute(
            f"""
            WITH page AS (
                SELECT m.name, m.created_by, m.created_at FROM models m {where}
                ORDER BY m.name LIMIT ? OFFSET ?
            ),
            counts AS (
                SELECT v.model_name, v.status, count(*) AS n
                FROM model_versions v JOIN page ON v.model_name = page.name
                GROUP BY ALL
            ),
            summary AS (
                SELECT v.model_name,
                       count(*) AS version_count,
                       max(v.version) AS latest_version,
                       arg_max(v.status, v.version) AS latest_status,
                       max(greatest(v.created_at, v.status_changed_at)) AS updated_at
                FROM model_versions v JOIN page ON v.model_name = page.name
                GROUP BY v.model_name
            ),
            status_maps AS (
                SELECT model_name, to_json(map(list(status), list(n))) AS status_counts
                FROM counts GROUP BY model_name
            ),
            alias_maps AS (
                SELECT a.model_name, to_json(map(list(a.alias), list(a.version))) AS aliases
                FROM model_aliases a JOIN page ON a.model_name = page.name
                GROUP BY a.model_name
            )
            SELECT page.name, page.created_by, page.created_at,
                   coalesce(s.version_count, 0) AS version_count,
                   s.latest_version, s.latest_status,
                   coalesce(s.updated_at, page.created_at) AS updated_at,
                   sm.status_counts, am.aliases
            FROM page
            LEFT JOIN summary s ON s.model_name = page.name
            LEFT JOIN status_maps sm ON sm.model_name = page.name
            LEFT JOIN alias_maps am ON am.model_name = page.name
            ORDER BY page.name
            """,
            [*params, limit, offset],
        )
    )
    return rows, total


# --- versions ---------------------------------------------------------------


def next_version(con: duckdb.DuckDBPyConnection, model: str) -> int:
    return con.execute(
        "SELECT coalesce(max(version), 0) + 1 FROM model_versions WHERE model_name = ?", [model]
    ).fetchall()[0][0]


def insert_version(con: duckdb.DuckDBPyConnection, row: dict[str, Any]) -> None:
    """Insert one version; JSON fields are serialised here."""
    con.execute(
        "INSERT INTO model_versions (model_name, version, status, task, flavor, description,"
        " metrics, params, lineage, dataset_name, dataset_version, parent_version, created_by,"
        " status_changed_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            row["model_name"],
            row["version"],
            row["status"],
            row.get("task"),
            row["flavor"],
            row.get("description"),
            json.dumps(row["metrics"]),
            json.dumps(row["params"], default=str),
            json.dumps(row["lineage"], default=str),
            row.get("dataset_name"),
            row.get("dataset_version"),
            row.get("parent_version"),
            row["created_by"],
            row["created_by"],
        ],
    )


def insert_files(
    con: duckdb.DuckDBPyConnection, model: str, version: int, files: Iterable[tuple[str, str, int]]
) -> None:
    """Record (name, sha256, size_bytes) for each file of a version."""
    con.executemany(
        "INSERT INTO model_version_files (model_name, version, name, sha256, size_bytes)"
        " VALUES (?, ?, ?, ?, ?)",
        [[model, version, name, sha, size] for name, sha, size in files],
    )


def insert_artifacts(
    con: duckdb.DuckDBPyConnection, artifacts: Iterable[tuple[str, int]], *, kind: str,
    created_by: str,
) -> None:
    """Record artifacts in the shared `artifacts` table; bytes stored before stay as they are."""
    con.executemany(
        "INSERT OR IGNORE INTO artifacts (sha256, size_bytes, kind, created_by) VALUES (?, ?, ?, ?)",
        [[sha, size, kind, created_by] for sha, size in artifacts],
    )


def insert_tags(
    con: duckdb.DuckDBPyConnection, model: str, version: int, tags: dict[str, str]
) -> None:
    if tags:
        con.executemany(
            "INSERT INTO model_version_tags (model_name, version, key, value) VALUES (?, ?, ?, ?)",
            [[model, version, k, v] for k, v in tags.items()],
        )


def get_version(con: duckdb.DuckDBPyConnection, model: str, version: int) -> dict[str, Any] | None:
    return _one(
        con.execute(
            f"SELECT {_VERSION_COLUMNS} FROM model_versions WHERE model_name = ? AND version = ?",
            [model, version],
        )
    )


def list_versions(con: duckdb.DuckDBPyConnection, model: str) -> list[dict[str, Any]]:
    return _dicts(
        con.execute(
            f"SELECT {_VERSION_COLUMNS} FROM model_versions WHERE model_name = ?"
            " ORDER BY version DESC",
            [model],
        )
    )


def latest_version(
    con: duckdb.DuckDBPyConnection, model: str, *, exclude_status: Sequence[str] = ()
) -> int | None:
    sql = "SELECT max(version) FROM model_versions WHERE model_name = ?"
    params: list[Any] = [model]
    if exclude_status:
        sql += f" AND status NOT IN ({', '.join('?' for _ in exclude_status)})"
        params.extend(exclude_status)
    return con.execute(sql, params).fetchall()[0][0]


def version_numbers(con: duckdb.DuckDBPyConnection, model: str) -> list[int]:
    return [
        r[0]
        for r in con.execute(
            "SELECT version FROM model_versions WHERE model_name = ? ORDER BY version", [model]
        ).fetchall()
    ]


def set_status(
    con: duckdb.DuckDBPyConnection, model: str, version: int, status: str, by: str
) -> None:
    con.execute(
        "UPDATE model_versions SET status = ?, status_changed_by = ?,"
        " status_changed_at = current_timestamp WHERE model_name = ? AND version = ?",
        [status, by, model, version],
    )


def _version_filter(model: str, version: int | None) -> tuple[str, list[Any]]:
    if version is None:
        return "model_name = ?", [model]
    return "model_name = ? AND version = ?", [model, version]


def files_of(
    con: duckdb.DuckDBPyConnection, model: str, version: int | None = None
) -> list[dict[str, Any]]:
    """Files of one version, or of every version of `model` when `version` is None."""
    where, params = _version_filter(model, version)
    return _dicts(
        con.execute(
            f"SELECT version, name, sha256, size_bytes FROM model_version_files WHERE {where}"
            " ORDER BY version, name",
            params,
        )
    )


def tags_of(
    con: duckdb.DuckDBPyConnection, model: str, version: int | None = None
) -> list[dict[str, Any]]:
    where, params = _version_filter(model, version)
    return _dicts(
        con.execute(
            f"SELECT version, key, value FROM model_version_tags WHERE {where}"
            " ORDER BY version, key",
            params,
        )
    )


# --- aliases ----------------------------------------------------------------


def aliases_of_model(con: duckdb.DuckDBPyConnection, model: str) -> list[dict[str, Any]]:
    return _dicts(
        con.execute(
            "SELECT model_name, alias, version, set_by, set_at FROM model_aliases"
            " WHERE model_name = ? ORDER BY alias",
            [model],
        )
    )


def aliases_of_version(con: duckdb.DuckDBPyConnection, model: str, version: int) -> list[str]:
    return [
        r[0]
        for r in con.execute(
            "SELECT alias FROM model_aliases WHERE model_name = ? AND version = ? ORDER BY alias",
            [model, version],
        ).fetchall()
    ]


def alias_target(con: duckdb.DuckDBPyConnection, model: str, alias: str) -> int | None:
    rows = con.execute(
        "SELECT version FROM model_aliases WHERE model_name = ? AND alias = ?", [model, alias]
    ).fetchall()
    return rows[0][0] if rows else None


def put_alias(
    con: duckdb.DuckDBPyConnection, model: str, alias: str, version: int, by: str
) -> None:
    """Point `alias` at `version`, replacing whatever it pointed at (one statement)."""
    con.execute(
        "INSERT INTO model_aliases (model_name, alias, version, set_by) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (model_name, alias) DO UPDATE SET version = excluded.version,"
        " set_by = excluded.set_by, set_at = now()",
        [model, alias, version, by],
    )


def delete_alias(con: duckdb.DuckDBPyConnection, model: str, alias: str) -> None:
    con.execute("DELETE FROM model_aliases WHERE model_name = ? AND alias = ?", [model, alias])


def all_aliases(con: duckdb.DuckDBPyConnection, alias: str | None = None) -> list[dict[str, Any]]:
    """Every alias of every model (optionally only one alias name, e.g. `champion`)."""
    sql = "SELECT model_name, alias, version, set_by, set_at FROM model_aliases"
    params: list[Any] = []
    if alias is not None:
        sql += " WHERE alias = ?"
        params.append(alias)
    return _dicts(con.execute(sql + " ORDER BY model_name, alias", params))


# --- approval requests --------------------------------------------------------


def insert_request(
    con: duckdb.DuckDBPyConnection, model: str, version: int, requested_by: str, comment: str
) -> int:
    return con.execute(
        "INSERT INTO approval_requests (model_name, version, requested_by, comment)"
        " VALUES (?, ?, ?, ?) RETURNING id",
        [model, version, requested_by, comment],
    ).fetchall()[0][0]


def open_request(con: duckdb.DuckDBPyConnection, model: str, version: int) -> dict[str, Any] | None:
    return _one(
        con.execute(
            f"SELECT {_REQUEST_COLUMNS} FROM approval_requests"
            " WHERE model_name = ? AND version = ? AND decision IS NULL ORDER BY id DESC LIMIT 1",
            [model, version],
        )
    )


def requests_of(
    con: duckdb.DuckDBPyConnection, model: str, version: int | None = None
) -> list[dict[str, Any]]:
    """Approval requests of one version (or all of `model`'s), oldest first."""
    where, params = _version_filter(model, version)
    return _dicts(
        con.execute(
            f"SELECT {_REQUEST_COLUMNS} FROM approval_requests WHERE {where} ORDER BY id",
            params,
        )
    )


def decide_request(
    con: duckdb.DuckDBPyConnection, request_id: int, decision: str, by: str, comment: str
) -> None:
    con.execute(
        "UPDATE approval_requests SET decision = ?, decided_by = ?, decided_at = current_timestamp,"
        " decision_comment = ? WHERE id = ?",
        [decision, by, comment, request_id],
    )


def pending_requests(
    con: duckdb.DuckDBPyConnection, *, limit: int = 100, offset: int = 0
) -> tuple[list[dict[str, Any]], int]:
    """Open requests, oldest first, and how many there are in all."""
    total = con.execute(
        "SELECT count(*) FROM approval_requests WHERE decision IS NULL"
    ).fetchall()[0][0]
    rows = _dicts(
        con.execute(
            f"SELECT {_REQUEST_COLUMNS} FROM approval_requests WHERE decision IS NULL"
            " ORDER BY requested_at, id LIMIT ? OFFSET ?",
            [limit, offset],
        )
    )
    return rows, total


# --- audit --------------------------------------------------------------------


def audit_rows(
    con: duckdb.DuckDBPyConnection, model: str | None, *, limit: int, offset: int
) -> list[dict[str, Any]]:
    """Registry audit rows, newest first; for one model when `model` is given."""
    sql = (
        "SELECT id, occurred_at, actor, action, entity_type, entity_id, from_state, to_state,"
        " comment, details FROM audit_log WHERE entity_type IN (?, ?, ?)"
    )
    params: list[Any] = list(ENTITY_TYPES)
    if model is not None:
        # starts_with() is literal, unlike LIKE, where '_' in a model name would be a wildcard.
        sql += (
            " AND (entity_id = ? OR starts_with(entity_id, ? || ':')"
            " OR starts_with(entity_id, ? || '@'))"
        )
        params.extend([model, model, model])
    sql += " ORDER BY id DESC LIMIT ? OFFSET ?"
    params.extend([limit, offset])
    return _dicts(con.execute(sql, params))


# --- maintenance ----------------------------------------------------------------


def all_version_files(con: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    return _dicts(
        con.execute(
            "SELECT model_name, version, name, sha256, size_bytes FROM model_version_files"
            " ORDER BY model_name, version, name"
        )
    )


def referenced_sha256s(con: duckdb.DuckDBPyConnection) -> set[str]:
    """Every value of every `*sha256` column in the workspace.

    Asking the catalogue rather than naming tables means artifacts written by
    other domains (datasets, reports, evaluations) count as referenced too.
    """
    columns = con.execute(
        "SELECT table_name, column_name FROM information_schema.columns"
        " WHERE table_schema = 'main' AND column_name LIKE '%sha256' AND data_type = 'VARCHAR'"
    ).fetchall()
    known: set[str] = set()
    for table_name, column_name in columns:
        rows = con.execute(
            f'SELECT DISTINCT "{column_name}" FROM "{table_name}" WHERE "{column_name}" IS NOT NULL'
        ).fetchall()
        known.update(r[0] for r in rows)
    return known


def bulk_insert(
    con: duckdb.DuckDBPyConnection,
    *,
    models: Sequence[tuple[str, str]],
    versions: Sequence[dict[str, Any]],
    tags: Sequence[tuple[str, int, str, str]] = (),
    aliases: Sequence[tuple[str, str, int, str]] = (),
) -> None:
    """Insert many models, versions, tags and aliases at once (benchmarks and imports).

    Skips the per-version checks and audit rows of `core.registry`; callers
    own that decision.
    """
    import pyarrow as pa

    con.register(
        "_bulk_models",
        pa.table({"name": [m[0] for m in models], "created_by": [m[1] for m in models]}),
    )
    con.execute("INSERT INTO models (name, created_by) SELECT name, created_by FROM _bulk_models")
    con.unregister("_bulk_models")
    cols = {
        "model_name": [v["model_name"] for v in versions],
        "version": pa.array([v["version"] for v in versions], pa.int32()),
        "status": [v["status"] for v in versions],
        "task": [v.get("task") for v in versions],
        "flavor": [v["flavor"] for v in versions],
        "metrics": [json.dumps(v["metrics"]) for v in versions],
        "params": [json.dumps(v["params"]) for v in versions],
        "lineage": [json.dumps(v["lineage"]) for v in versions],
        "created_by": [v["created_by"] for v in versions],
    }
    con.register("_bulk_versions", pa.table(cols))
    con.execute(
        "INSERT INTO model_versions (model_name, version, status, task, flavor, metrics, params,"
        " lineage, created_by, status_changed_by) SELECT model_name, version, status, task,"
        " flavor, metrics::JSON, params::JSON, lineage::JSON, created_by, created_by"
        " FROM _bulk_versions"
    )
    con.unregister("_bulk_versions")
    if tags:
        con.register(
            "_bulk_tags",
            pa.table(
                {
                    "model_name": [t[0] for t in tags],
                    "version": pa.array([t[1] for t in tags], pa.int32()),
                    "key": [t[2] for t in tags],
                    "value": [t[3] for t in tags],
                }
            ),
        )
        con.execute("INSERT INTO model_version_tags SELECT * FROM _bulk_tags")
        con.unregister("_bulk_tags")
    if aliases:
        con.register(
            "_bulk_aliases",
            pa.table(
                {
                    "model_name": [a[0] for a in aliases],
                    "alias": [a[1] for a in aliases],
                    "version": pa.array([a[2] for a in aliases], pa.int32()),
                    "set_by": [a[3] for a in aliases],
                }
            ),
        )
        con.execute(
            "INSERT INTO model_aliases (model_name, alias, version, set_by)"
            " SELECT model_name, alias, version, set_by FROM _bulk_aliases"
        )
        con.unregister("_bulk_aliases")
