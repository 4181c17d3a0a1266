"""The workspace store: the only code that speaks SQL to DuckDB about Pond's
own tables. It opens `pond.duckdb` under the multi-process rule (see
`workspace.py`), applies numbered migrations, keeps content-addressed
artifacts, and appends to the audit log.

Domain modules (`core.datasets`, `core.registry`, …) call `read()` and
`transaction()` and the per-domain helpers in this package.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import duckdb

from core.store.migrations import check_schema, current_version, latest_version, migrate
from core.store.workspace import Workspace, raw_connect, resolve_home, retry_on_conflict

__all__ = [
    "Workspace",
    "append_audit",
    "check_schema",
    "current_version",
    "latest_version",
    "migrate",
    "open_workspace",
    "read",
    "resolve_home",
    "retry_on_conflict",
    "transaction",
]

_checked: set[str] = set()


def open_workspace(home: str | os.PathLike[str] | None = None, *, upgrade: bool = False) -> Workspace:
    """The workspace at `home` (or `$POND_HOME`, or `./.pond`), ready to use.

    A folder without a database is created and migrated. An existing
    workspace on an older schema is refused unless `upgrade` is set.

    Raises:
        SchemaOutdated: the workspace needs `pond migrate` first.
    """
    ws = Workspace(resolve_home(home))
    key = str(ws.home)
    if key in _checked and ws.db_path.exists():
        return ws
    ws.make_dirs()
    if upgrade or not ws.db_path.exists():
        migrate(ws)
    else:
        check_schema(ws)
    _checked.add(key)
    return ws


@contextmanager
def read(ws: Workspace) -> Iterator[duckdb.DuckDBPyConnection]:
    """A short read-only connection under a shared lock. Close it before long work."""
    with raw_connect(ws, write=False) as con:
        yield con


@contextmanager
def transaction(ws: Workspace) -> Iterator[duckdb.DuckDBPyConnection]:
    """A read-write connection with one open transaction, committed on success.

    Validate before entering: the exclusive lock blocks every other process
    for as long as the block runs.
    """
    with raw_connect(ws, write=True) as con:
        con.execute("BEGIN TRANSACTION")
        try:
            yield con
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.execute("COMMIT")


def append_audit(
    con: duckdb.DuckDBPyConnection,
    *,
    actor: str,
    action: str,
    entity_type: str,
    entity_id: str,
    from_state: str | None = None,
    to_state: str | None = None,
    comment: str | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    """Append one row to the audit log, inside the caller's transaction.

    The audit log is append-only: no code path updates or deletes its rows.
    """
    con.execute(
        "INSERT INTO audit_log (actor, action, entity_type, entity_id, from_state, to_state,"
        " comment, details) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [
            actor,
            action,
            entity_type,
            entity_id,
            from_state,
            to_state,
            comment,
            json.dumps(details, default=str) if details is not None else None,
        ],
    )
