"""SQL for scheduled retraining: per-model auto-promotion policies, schedules of `pond`
commands, and the record of every job run. Callers pass a connection from `store.read()`
or `store.transaction()`; every function is one or a few statements shaping rows into
plain dicts (JSON columns decoded)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import duckdb

from core.store import _rows

_JSON_COLUMNS = ("command", "details")

_POLICY_COLUMNS = "model_name, enabled, metric, min_improvement, updated_by, updated_at"
_SCHEDULE_COLUMNS = (
    "name, cron, command, run_as, enabled, next_run_at, last_run_at, created_by, created_at"
)
_RUN_COLUMNS = (
    "id, kind, model_name, schedule_name, command, started_by, host, pid, status, outcome,"
    " exit_code, summary, details, model_version, log, started_at, finished_at"
)
# Listing runs leaves the (possibly long) log out.
_RUN_SUMMARY_COLUMNS = _RUN_COLUMNS.replace(" log,", "")


def _dicts(cursor: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    return _rows.dicts(cursor, _JSON_COLUMNS)


def _one(cursor: duckdb.DuckDBPyConnection) -> dict[str, Any] | None:
    return _rows.one(cursor, _JSON_COLUMNS)


# --- auto-promotion policies ----------------------------------------------------------------


def get_policy(con: duckdb.DuckDBPyConnection, model: str) -> dict[str, Any] | None:
    return _one(
        con.execute(
            f"SELECT {_POLICY_COLUMNS} FROM promotion_policies WHERE model_name = ?", [model]
        )
    )


def list_policies(con: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    return _dicts(
        con.execute(f"SELECT {_POLICY_COLUMNS} FROM promotion_policies ORDER BY model_name")
    )


def put_policy(con: duckdb.DuckDBPyConnection, row: dict[str, Any]) -> None:
    # Delete-then-insert: one row per model, replaced whole.
    con.execute("DELETE FROM promotion_policies WHERE model_name = ?", [row["model_name"]])
    con.execute(
        "INSERT INTO promotion_policies (model_name, enabled, metric, min_improvement,"
        " updated_by) VALUES (?, ?, ?, ?, ?)",
        [
            row["model_name"],
            row["enabled"],
            row["metric"],
            row["min_improvement"],
            row["updated_by"],
        ],
    )


# --- schedules ----------------------------------------------------------------------------------


def get_schedule(con: duckdb.DuckDBPyConnection, name: str) -> dict[str, Any] | None:
    return _one(con.execute(f"SELECT {_SCHEDULE_COLUMNS} FROM schedules WHERE name = ?", [name]))


def list_schedules(con: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    return _dicts(con.execute(f"SELECT {_SCHEDULE_COLUMNS} FROM schedules ORDER BY name"))


def insert_schedule(con: duckdb.DuckDBPyConnection, row: dict[str, Any]) -> None:
    con.execute(
        "INSERT INTO schedules (name, cron, command, run_as, enabled, next_run_at, created_by)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        [
            row["name"],
            row["cron"],
            json.dumps(row["command"]),
            row["run_as"],
            row["enabled"],
            row["next_run_at"],
            row["created_by"],
        ],
    )


def delete_schedule(con: duckdb.DuckDBPyConnection, name: str) -> None:
    con.execute("DELETE FROM schedules WHERE name = ?", [name])


def due_schedules(con: duckdb.DuckDBPyConnection, now: datetime) -> list[dict[str, Any]]:
    return _dicts(
        con.execute(
            f"SELECT {_SCHEDULE_COLUMNS} FROM schedules WHERE enabled AND next_run_at <= ?"
            " ORDER BY next_run_at, name",
            [now],
        )
    )


def claim_schedule(
    con: duckdb.DuckDBPyConnection,
    name: str,
    slot: datetime,
    started: datetime,
    next_run_at: datetime,
) -> bool:
    """Move a due schedule on to its next slot; False when someone else already did."""
    found = con.execute(
        "UPDATE schedules SET next_run_at = ?, last_run_at = ? WHERE name = ? AND next_run_at = ?"
        " RETURNING name",
        [next_run_at, started, name, slot],
    ).fetchall()
    return bool(found)


# --- job runs -----------------------------------------------------------------------------------


def insert_run(con: duckdb.DuckDBPyConnection, row: dict[str, Any]) -> int:
    return con.execute(
        "INSERT INTO job_runs (kind, model_name, schedule_name, command, started_by, host, pid,"
        " status) VALUES (?, ?, ?, ?, ?, ?, ?, 'running') RETURNING id",
        [
            row["kind"],
            row.get("model_name"),
            row.get("schedule_name"),
            json.dumps(row["command"]),
            row["started_by"],
            row["host"],
            row.get("pid"),
        ],
    ).fetchall()[0][0]


def adopt_run(
    con: duckdb.DuckDBPyConnection, run_id: int, *, kind: str, model: str | None, pid: int
) -> None:
    con.execute(
        "UPDATE job_runs SET kind = ?, model_name = coalesce(?, model_name), pid = ? WHERE id = ?",
        [kind, model, pid, run_id],
    )


def get_run(con: duckdb.DuckDBPyConnection, run_id: int) -> dict[str, Any] | None:
    return _one(con.execute(f"SELECT {_RUN_COLUMNS} FROM job_runs WHERE id = ?", [run_id]))


def list_runs(
    con: duckdb.DuckDBPyConnection,
    *,
    model: str | None,
    schedule: str | None,
    status: str | None,
    limit: int,
) -> list[dict[str, Any]]:
    clauses, params = [], []
    if model is not None:
        clauses.append("model_name = ?")
        params.append(model)
    if schedule is not None:
        clauses.append("schedule_name = ?")
        params.append(schedule)
    if status is not None:
        clauses.append("status = ?")
        params.append(status)
    where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
    return _dicts(
        con.execute(
            f"SELECT {_RUN_SUMMARY_COLUMNS} FROM job_runs{where} ORDER BY id DESC LIMIT ?",
            [*params, limit],
        )
    )


def last_runs_by_schedule(con: duckdb.DuckDBPyConnection) -> dict[str, dict[str, Any]]:
    found = _dicts(
        con.execute(
            f"SELECT {_RUN_SUMMARY_COLUMNS} FROM job_runs WHERE id IN"
            " (SELECT max(id) FROM job_runs WHERE schedule_name IS NOT NULL GROUP BY schedule_name)"
        )
    )
    return {r["schedule_name"]: r for r in found}


def finish_run(con: duckdb.DuckDBPyConnection, run_id: int, fields: dict[str, Any]) -> bool:
    """Settle a running run; False when it was already settled."""
    found = con.execute(
        "UPDATE job_runs SET status = 'finished', outcome = ?, exit_code = ?, summary = ?,"
        " details = ?, model_version = ?, log = ?, finished_at = current_timestamp"
        " WHERE id = ? AND status = 'running' RETURNING id",
        [
            fields["outcome"],
            fields["exit_code"],
            fields["summary"],
            json.dumps(fields.get("details") or {}, default=str),
            fields.get("model_version"),
            fields.get("log"),
            run_id,
        ],
    ).fetchall()
    return bool(found)
