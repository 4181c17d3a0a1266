"""Ingest: every supported format, every bad input, and nothing half-written."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from core import datasets, store
from core.errors import InvalidInput, NotFound, PermissionDenied

DATA = Path(__file__).resolve().parent.parent / "data"


def _state(ws):
    """What a failed ingest must not change: rows, audit entries, files."""
    with store.read(ws) as con:
        versions = con.execute("SELECT count(*) FROM dataset_versions").fetchall()[0][0]
        audit = con.execute("SELECT count(*) FROM audit_log").fetchall()[0][0]
    files = sorted(p.name for p in ws.artifacts_dir.iterdir())
    tmp = sorted(p.name for p in ws.tmp_dir.iterdir() if p.is_file())
    return versions, audit, files, tmp


def test_csv_ingest_records_a_version(ws, analyst):
    dv = datasets.ingest(ws, DATA / "penguins.csv", "penguins", actor=analyst)
    assert (dv.name, dv.version, dv.row_count, len(dv.columns)) == ("penguins", 1, 344, 8)
    assert dv.created_by == "ana"
    assert dv.columns[0] == datasets.Column("species", "VARCHAR")
    # "NA" in the file is read as missing, so numeric columns stay numeric.
    assert dict((c.name, c.type) for c in dv.columns)["bill_length_mm"] == "DOUBLE"
    assert len(dv.content_sha256) == 64 and dv.parquet_path(ws).exists()


def test_reingest_makes_version_two_and_keeps_version_one(ws, analyst, tmp_path):
    v1 = datasets.ingest(ws, DATA / "penguins.csv", "penguins", actor=analyst)
    smaller = tmp_path / "p.csv"
    smaller.write_text("\n".join((DATA / "penguins.csv").read_text().splitlines()[:11]) + "\n")
    v2 = datasets.ingest(ws, smaller, "penguins", actor=analyst)
    assert v2.version == 2 and v2.row_count == 10
    again = datasets.get_version(ws, "penguins", 1)
    assert again.row_count == 344 and again.content_sha256 == v1.content_sha256
    assert datasets.get_version(ws, "penguins").version == 2
    assert datasets.resolve(ws, "penguins:1").version == 1
    assert [v.version for v in datasets.list_versions(ws, "penguins")] == [1, 2]


@pytest.mark.parametrize("suffix", [".parquet", ".json", ".jsonl", ".xlsx", ".tsv"])
def test_other_formats(ws, analyst, tmp_path, suffix):
    frame = pd.DataFrame({"a": [1, 2, 3], "b": ["x", "y", None], "c": [0.5, 1.5, 2.5]})
    path = tmp_path / f"f{suffix}"
    if suffix == ".parquet":
        frame.to_parquet(path)
    elif suffix == ".json":
        path.write_text(json.dumps(frame.to_dict(orient="records")))
    elif suffix == ".jsonl":
        frame.to_json(path, orient="records", lines=True)
    elif suffix == ".xlsx":
        frame.to_excel(path, index=False)
    else:
        frame.to_csv(path, sep="\t", index=False)
    dv = datasets.ingest(ws, path, "frame", actor=analyst)
    assert dv.row_count == 3 and dv.column_names == ["a", "b", "c"]
    back = datasets.load_frame(ws, dv)
    assert back["c"].tolist() == [0.5, 1.5, 2.5]


BAD_INPUTS = {
    "empty.csv": (b"", "empty"),
    "header_only.csv": (b"a,b,c\n", "no data rows"),
    "ragged.csv": (b"a,b,c\n1,2,3\n4,5\n6,7,8\n", "different number of fields"),
    "latin1.csv": ("name,city\nJosé,Málaga\n".encode("latin-1") * 1, "not valid utf-8"),
    "dupes.csv": (b"a,b,a\n1,2,3\n", "more than once"),
    "blank.csv": (b"a,,c\n1,2,3\n", "has no name"),
    "data.exe": (b"MZ\x00\x00", "unknown file type"),
    "broken.parquet": (b"PAR1 not really", "not a readable Parquet"),
    "broken.json": (b'{"a": 1, "b": ', "JSON"),
    "broken.xlsx": (b"not a zip", "not a readable Excel"),
}


@pytest.mark.parametrize("filename", sorted(BAD_INPUTS))
def test_bad_files_get_a_clear_error_and_leave_nothing(ws, analyst, tmp_path, filename):
    content, message = BAD_INPUTS[filename]
    path = tmp_path / filename
    path.write_bytes(content)
    before = _state(ws)
    with pytest.raises(InvalidInput) as info:
        datasets.ingest(ws, path, "bad", actor=analyst)
    assert message.lower() in str(info.value).lower()
    assert filename in str(info.value)
    assert _state(ws) == before
    with pytest.raises(NotFound):
        datasets.get_version(ws, "bad")


def test_non_utf8_file_reads_with_its_encoding(ws, analyst, tmp_path):
    path = tmp_path / "latin1.csv"
    path.write_bytes("name,city\nJosé,Málaga\n".encode("latin-1"))
    dv = datasets.ingest(ws, path, "latin", actor=analyst, encoding="latin-1")
    assert datasets.load_frame(ws, dv)["city"].tolist() == ["Málaga"]


def test_semicolon_file_is_detected_and_wrong_delimiter_explained(ws, analyst, tmp_path):
    path = tmp_path / "semi.csv"
    path.write_text("a;b;c\n1;2;3\n4;5;6\n")
    assert datasets.ingest(ws, path, "semi", actor=analyst).column_names == ["a", "b", "c"]
    with pytest.raises(InvalidInput, match="--delimiter ';'"):
        datasets.ingest(ws, path, "semi", actor=analyst, delimiter=",")


@pytest.mark.parametrize(
    "name", ["../etc", "a/b", "x; DROP TABLE datasets", "1abc", "", "a b", "naïve", "a" * 64]
)
def test_bad_dataset_names_are_refused(ws, analyst, name):
    with pytest.raises(InvalidInput, match="dataset name"):
        datasets.ingest(ws, DATA / "penguins.csv", name, actor=analyst)


def test_reviewer_cannot_ingest(ws, reviewer):
    with pytest.raises(PermissionDenied, match="rita"):
        datasets.ingest(ws, DATA / "penguins.csv", "p", actor=reviewer)


def test_missing_file(ws, analyst, tmp_path):
    with pytest.raises(InvalidInput, match="not a file"):
        datasets.ingest(ws, tmp_path / "nope.csv", "p", actor=analyst)


def test_file_larger_than_the_memory_limit_streams(ws, analyst, tmp_path, monkeypatch):
    # Cap DuckDB below the file's size: ingest must stream, not load it whole.
    monkeypatch.setattr(datasets, "INGEST_MEMORY_LIMIT", "96MB")
    path = tmp_path / "big.csv"
    con = duckdb.connect()
    con.execute(
        "COPY (SELECT range AS id, random() AS x, 'text value number ' || range AS s,"
        " range % 97 AS k FROM range(3000000)) TO '" + str(path) + "' (HEADER)"
    )
    con.close()
    assert path.stat().st_size > 100 * 2**20
    dv = datasets.ingest(ws, path, "big", actor=analyst)
    assert dv.row_count == 3_000_000


def test_parse_ref():
    assert datasets.parse_ref("iris") == ("iris", None)
    assert datasets.parse_ref("iris:3") == ("iris", 3)
    with pytest.raises(InvalidInput):
        datasets.parse_ref("iris:x")
    with pytest.raises(InvalidInput):
        datasets.parse_ref("iris:0")


def test_suggest_name_makes_valid_names():
    assert datasets.suggest_name("Sales 2024-Q1.csv") == "sales_2024_q1"
    assert datasets.suggest_name("2024.csv") == "data_2024"
    assert datasets.check_name(datasets.suggest_name("../../etc/passwd.csv"))
