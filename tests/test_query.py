"""The read-only SQL explorer."""

from __future__ import annotations

from pathlib import Path

import pytest

from core import datasets, query
from core.errors import InvalidInput, QueryRefused, QueryTimeout

DATA = Path(__file__).resolve().parent.parent / "data"


@pytest.fixture
def penguins(ws, analyst):
    datasets.ingest(ws, DATA / "penguins.csv", "penguins", actor=analyst)
    return datasets.ingest(ws, DATA / "penguins.csv", "penguins", actor=analyst)


def test_select_over_latest_and_versioned_views(ws, penguins):
    res = query.run_query(ws, "SELECT species, count(*) AS n FROM penguins GROUP BY 1 ORDER BY 1")
    assert res.frame.to_dict(orient="list") == {
        "species": ["Adelie", "Chinstrap", "Gentoo"],
        "n": [152, 68, 124],
    }
    res = query.run_query(ws, "SELECT count(*) AS n FROM penguins_v1")
    assert res.frame["n"].tolist() == [344]
    assert not res.truncated


def test_row_limit_truncates(ws, penguins):
    res = query.run_query(ws, "SELECT * FROM penguins", row_limit=10)
    assert len(res.frame) == 10 and res.truncated


@pytest.mark.parametrize(
    "sql",
    [
        "COPY penguins TO '/tmp/out.csv'",
        "CREATE TABLE x AS SELECT 1",
        "INSERT INTO penguins VALUES (1)",
        "DELETE FROM penguins",
        "ATTACH '/tmp/other.db'",
        "SET enable_external_access=true",
        "PRAGMA version",
        "SELECT 1; SELECT 2",
        "INSTALL httpfs",
    ],
)
def test_writes_and_side_effects_are_refused(ws, penguins, sql):
    with pytest.raises(QueryRefused):
        query.run_query(ws, sql)


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM read_csv('/etc/passwd')",
        "SELECT * FROM read_text('/etc/hostname')",
    ],
)
def test_reading_other_files_is_refused(ws, penguins, sql):
    with pytest.raises(QueryRefused, match="datasets only"):
        query.run_query(ws, sql)


def test_slow_query_is_cancelled(ws, penguins):
    with pytest.raises(QueryTimeout, match="cancelled"):
        query.run_query(
            ws,
            "SELECT count(*) FROM range(100000000) a, range(100000000) b WHERE a.range + b.range = 7",
            timeout_s=0.5,
        )


def test_bad_sql_gets_a_clear_error(ws, penguins):
    with pytest.raises(InvalidInput, match="does not parse|failed"):
        query.run_query(ws, "SELEC oops")
    with pytest.raises(InvalidInput, match="failed"):
        query.run_query(ws, "SELECT no_such_column FROM penguins")
    with pytest.raises(InvalidInput, match="empty"):
        query.run_query(ws, "   ")
