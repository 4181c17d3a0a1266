"""SQL for drift monitoring: stored reference statistics, drift reports, alert
policies, alert firings and their webhook deliveries. Callers pass a connection
from `store.read()` or `store.transaction()`; every function is one or a few
statements shaping rows into plain dicts (JSON columns decoded)."""

from __future__ import annotations

import json
from typing import Any

import duckdb

from core.store import _rows

_JSON_COLUMNS = ("stats", "results", "watched_columns", "details", "payload")

_REPORT_COLUMNS = (
    "id, model_name, model_version, reference_name, reference_version, reference_sha256,"
    " current_kind, current_name, current_version, current_sha256, window_spec, window_start,"
    " window_end, reference_rows, current_rows, columns_tested, columns_drifted, drifted_share,"
    " drift_share_threshold, dataset_drift, results, seconds, created_by, created_at"
)
# Listing reports leaves the (large) results out.
_REPORT_SUMMARY_COLUMNS = _REPORT_COLUMNS.replace(" results,", "")
_POLICY_COLUMNS = (
    "model_name, max_drift_share, watched_columns, metric, metric_limit, webhook_url,"
    " webhook_secret, enabled, updated_by, updated_at"
)
_ALERT_COLUMNS = (
    "id, model_name, model_version, condition, message, details, report_id, fired_by, fired_at,"
    " acknowledged_by, acknowledged_at, acknowledge_comment"
)
_DELIVERY_COLUMNS = (
    "id, alert_id, url, payload, outcome, attempts, response_status, error, created_at,"
    " finished_at"
)


def _dicts(cursor: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    return _rows.dicts(cursor, _JSON_COLUMNS)


def _one(cursor: duckdb.DuckDBPyConnection) -> dict[str, Any] | None:
    return _rows.one(cursor, _JSON_COLUMNS)


# --- reference statistics ---------------------------------------------------------------------


def get_reference_stats(
    con: duckdb.DuckDBPyConnection, content_sha256: str, scope: str
) -> dict[str, Any] | None:
    return _one(con.execute(
        "SELECT content_sha256, scope, dataset_name, dataset_version, row_count, stats, seconds,"
        " created_by, created_at FROM drift_reference_stats WHERE content_sha256 = ? AND scope = ?",
        [content_sha256, scope],
    ))


def insert_reference_stats(
    con: duckdb.DuckDBPyConnection,
    *,
    content_sha256: str,
    scope: str,
    dataset_name: str,
    dataset_version: int,
    row_count: int,
    stats: dict[str, Any],
    seconds: float,
    created_by: str,
    artifacts: list[tuple[str, int]],
) -> None:
    """Store one version's statistics and record their array files as artifacts.

    Two processes may compute the same statistics at once; the first one stored wins.
    """
    for sha256, size_bytes in artifacts:
        con.execute(
            "INSERT INTO artifacts (sha256, size_bytes, kind, created_by) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (sha256) DO NOTHING",
            [sha256, size_bytes, "drift_reference", created_by],
        )
    con.execute(
        "INSERT INTO drift_reference_stats (content_sha256, scope, dataset_name, dataset_version,"
        " row_count, stats, seconds, created_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (content_sha256, scope) DO NOTHING",
        [content_sha256, scope, dataset_name, dataset_version, row_count, json.dumps(stats),
         seconds, created_by],
    )


# --- reports -----------------------------------------------------------------------------------


def insert_report(con: duckdb.DuckDBPyConnection, row: dict[str, Any]) -> int:
    """Insert one report (`results` serialised here). Returns its id."""
    row = dict(row)
    row["results"] = json.dumps(row["results"], default=str)
    names = ", ".join(row)
    marks = ", ".join("?" for _ in row)
    return con.execute(
        f"INSERT INTO drift_reports ({names}) VALUES ({marks}) RETURNING id", list(row.values())
    ).fetchall()[0][0]


def get_report(con: duckdb.DuckDBPyConnection, report_id: int) -> dict[str, Any] | None:
    return _one(con.execute(f"SELECT {_REPORT_COLUMNS} FROM drift_reports WHERE id = ?",
                            [report_id]))


def list_reports(
    con: duckdb.DuckDBPyConnection, *, model: str | None, limit: int, offset: int = 0
) -> list[dict[str, Any]]:
    sql = f"SELECT {_REPORT_SUMMARY_COLUMNS} FROM drift_reports"
    params: list[Any] = []
    if model is not None:
        sql += " WHERE model_name = ?"
        params.append(model)
    sql += " ORDER BY id DESC LIMIT ? OFFSET ?"
    return _dicts(con.execute(sql, [*params, limit, offset]))


# --- alert policies ------------------------------------------------------------------------------


def get_policy(con: duckdb.DuckDBPyConnection, model: str) -> dict[str, Any] | None:
    return _one(con.execute(
        f"SELECT {_POLICY_COLUMNS} FROM drift_alert_policies WHERE model_name = ?", [model]
    ))


def list_policies(con: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    return _dicts(con.execute(
        f"SELECT {_POLICY_COLUMNS} FROM drift_alert_policies ORDER BY model_name"
    ))


def upsert_policy(con: duckdb.DuckDBPyConnection, row: dict[str, Any]) -> None:
    values = [
        row["model_name"], row["max_drift_share"], json.dumps(row["watched_columns"]),
        row["metric"], row["metric_limit"], row["webhook_url"], row["webhook_secret"],
        row["enabled"], row["updated_by"],
    ]
    # Delete-then-insert rather than UPDATE: a plain replacement, one row per model.
    con.execute("DELETE FROM drift_alert_policies WHERE model_name = ?", [row["model_name"]])
    con.execute(
        "INSERT INTO drift_alert_policies (model_name, max_drift_share, watched_columns, metric,"
        " metric_limit, webhook_url, webhook_secret, enabled, updated_by)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        values,
    )


# --- alerts ---------------------------------------------------------------------------------------


def insert_alert(con: duckdb.DuckDBPyConnection, row: dict[str, Any]) -> int:
    return con.execute(
        "INSERT INTO drift_alerts (model_name, model_version, condition, message, details,"
        " report_id, fired_by) VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
        [row["model_name"], row.get("model_version"), row["condition"], row["message"],
         json.dumps(row["details"], default=str), row.get("report_id"), row["fired_by"]],
    ).fetchall()[0][0]


def get_alert(con: duckdb.DuckDBPyConnection, alert_id: int) -> dict[str, Any] | None:
    return _one(con.execute(f"SELECT {_ALERT_COLUMNS} FROM drift_alerts WHERE id = ?",
                            [alert_id]))


def list_alerts(
    con: duckdb.DuckDBPyConnection, *, model: str | None, open_only: bool, limit: int,
    report_id: int | None = None,
) -> list[dict[str, Any]]:
    clauses, params = [], []
    if model is not None:
        clauses.append("model_name = ?")
        params.append(model)
    if report_id is not None:
        clauses.append("report_id = ?")
        params.append(report_id)
    if open_only:
        clauses.append("acknowledged_at IS NULL")
    where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
    return _dicts(con.execute(
        f"SELECT {_ALERT_COLUMNS} FROM drift_alerts{where} ORDER BY id DESC LIMIT ?",
        [*params, limit],
    ))


def acknowledge_alert(
    con: duckdb.DuckDBPyConnection, alert_id: int, by: str, comment: str | None
) -> None:
    con.execute(
        "UPDATE drift_alerts SET acknowledged_by = ?, acknowledged_at = current_timestamp,"
        " acknowledge_comment = ? WHERE id = ?",
        [by, comment, alert_id],
    )


# --- deliveries -----------------------------------------------------------------------------------


def insert_delivery(
    con: duckdb.DuckDBPyConnection, alert_id: int, url: str, payload: dict[str, Any]
) -> int:
    return con.execute(
        "INSERT INTO drift_alert_deliveries (alert_id, url, payload, outcome)"
        " VALUES (?, ?, ?, 'pending') RETURNING id",
        [alert_id, url, json.dumps(payload, default=str)],
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
        "UPDATE drift_alert_deliveries SET outcome = ?, attempts = ?, response_status = ?,"
        " error = ?, finished_at = current_timestamp WHERE id = ?",
        [outcome, attempts, response_status, error, delivery_id],
    )


def list_deliveries(
    con: duckdb.DuckDBPyConnection, *, alert_id: int | None = None, limit: int = 50
) -> list[dict[str, Any]]:
    sql = f"SELECT {_DELIVERY_COLUMNS} FROM drift_alert_deliveries"
    params: list[Any] = []
    if alert_id is not None:
        sql += " WHERE alert_id = ?"
        params.append(alert_id)
    sql += " ORDER BY id DESC LIMIT ?"
    return _dicts(con.execute(sql, [*params, limit]))
