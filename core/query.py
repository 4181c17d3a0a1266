"""The read-only SQL explorer over a workspace's datasets.

Each query runs in its own in-memory DuckDB where every dataset is a view over
its Parquet file: `<name>` is the latest version and `<name>_v<k>` version k.
Only a single SELECT-like statement is accepted, file access outside the
artifact folder is switched off and locked, results are capped in rows, and
a query that runs past its time limit is interrupted.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import duckdb

from core import datasets
from core.errors import InvalidInput, QueryRefused, QueryTimeout
from core.store import Workspace

_ALLOWED = {duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN}
DEFAULT_ROW_LIMIT = 10_000
DEFAULT_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class QueryResult:
    frame: Any  # pandas.DataFrame
    truncated: bool
    seconds: float

    @property
    def columns(self) -> list[str]:
        return list(self.frame.columns)


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def table_names(ws: Workspace) -> dict[str, datasets.DatasetVersion]:
    """The view names a query can use, each with the dataset version it reads."""
    names: dict[str, datasets.DatasetVersion] = {}
    for dv in datasets.list_versions(ws):
        names[f"{dv.name}_v{dv.version}"] = dv
        names[dv.name] = dv  # versions come oldest first, so the latest wins
    return names


def run_query(
    ws: Workspace,
    sql: str,
    *,
    row_limit: int = DEFAULT_ROW_LIMIT,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> QueryResult:
    """Run one read-only query over the workspace's datasets.

    Returns:
        At most `row_limit` rows as a DataFrame, and whether more were cut off.

    Raises:
        QueryRefused: the text is not a single SELECT (writes, COPY, ATTACH,
            SET, PRAGMA... are refused), or it touches files.
        QueryTimeout: it ran longer than `timeout_s` seconds and was cancelled.
        InvalidInput: DuckDB could not parse or bind it (the message says why).
    """
    if not sql or not sql.strip():
        raise InvalidInput("the query is empty; write a SELECT over your datasets")
    if row_limit < 1:
        raise InvalidInput(f"The 'row_limit' parameter must be an int >= 1. Got {row_limit}.")
    views = table_names(ws)
    con = duckdb.connect(config={"memory_limit": "1GB", "threads": 2})
    timer: threading.Timer | None = None
    try:
        try:
            statements = con.extract_statements(sql)
        except duckdb.Error as exc:
            raise InvalidInput(f"the query does not parse: {str(exc).splitlines()[0]}") from exc
        if len(statements) != 1:
            raise QueryRefused(
                f"the explorer runs one statement at a time; this text has {len(statements)}"
            )
        if statements[0].type not in _ALLOWED:
            raise QueryRefused(
                f"only read-only queries are allowed; this is a {statements[0].type.name} "
                "statement. Write a SELECT instead"
            )
        for view, dv in views.items():
            path = str(dv.parquet_path(ws)).replace("'", "''")
            con.execute(f"CREATE VIEW {_ident(view)} AS SELECT * FROM read_parquet('{path}')")
        # Views resolve their files at query time, so allow exactly the artifact folder,
        # then lock the configuration so the query cannot turn file access back on.
        folder = str(ws.artifacts_dir).replace("'", "''")
        con.execute(f"SET allowed_directories=['{folder}/']")
        con.execute("SET enable_external_access=false")
        con.execute("SET lock_configuration=true")

        timer = threading.Timer(timeout_s, con.interrupt)
        timer.daemon = True
        started = time.perf_counter()
        timer.start()
        try:
            frame = con.sql(sql).limit(row_limit + 1).df()
        except duckdb.InterruptException as exc:
            raise QueryTimeout(
                f"the query ran longer than {timeout_s:g} s and was cancelled; "
                "narrow it down (filter, aggregate or add a LIMIT)"
            ) from exc
        except duckdb.PermissionException as exc:
            raise QueryRefused(
                "queries may read the workspace's datasets only, not other files"
            ) from exc
        except duckdb.Error as exc:
            raise InvalidInput(f"the query failed: {str(exc).splitlines()[0]}") from exc
        seconds = time.perf_counter() - started
    finally:
        if timer is not None:
            timer.cancel()
        con.close()
    truncated = len(frame) > row_limit
    if truncated:
        frame = frame.iloc[:row_limit]
    return QueryResult(frame=frame, truncated=truncated, seconds=seconds)
