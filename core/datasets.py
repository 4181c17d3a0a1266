"""Datasets and their immutable versions.

Ingest turns a CSV, TSV, Parquet, JSON/JSONL or Excel file into a new dataset
version: DuckDB streams the file into a Parquet file (so a file larger than
memory never has to fit in it), the Parquet is stored as a content-addressed
artifact, and only then one transaction records the version. A failure at any
step leaves no version behind. Heavy reads (profiles, SQL, training) work on
the Parquet file with their own in-memory DuckDB, never holding the workspace
lock.
"""

from __future__ import annotations

import csv
import io
import json
import re
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb

from core import auth, store
from core.errors import InvalidInput, NotFound, PondError
from core.store import Workspace
from core.store import artifacts as artifact_store
from core.store import datasets as rows

FORMATS: dict[str, str] = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".txt": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".json": "json",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".xlsx": "excel",
    ".xlsm": "excel",
}
NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,62}$")
# What analysts' tools (pandas, R) read as missing in text files.
NULL_STRINGS = "['', 'NA', 'N/A', 'NULL', 'null', 'NaN', 'nan']"
# DuckDB may spill to disk past this, so ingest of a file larger than memory still works.
INGEST_MEMORY_LIMIT = "1GB"


@dataclass(frozen=True)
class Column:
    name: str
    type: str


@dataclass(frozen=True)
class DatasetVersion:
    """One immutable version of a dataset: its data lives in a Parquet artifact."""

    name: str
    version: int
    content_sha256: str
    source_name: str
    source_sha256: str
    source_format: str
    row_count: int
    columns: tuple[Column, ...]
    size_bytes: int
    created_by: str
    created_at: datetime

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def parquet_path(self, ws: Workspace) -> Path:
        """The Parquet file holding this version's rows (not re-hashed: `pond doctor` does that)."""
        path = artifact_store.artifact_path(ws, self.content_sha256)
        if not path.exists():
            raise NotFound(
                f"the data file of dataset {self.ref} is missing from {ws.artifacts_dir}; "
                "run `pond doctor`"
            )
        return path

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "content_sha256": self.content_sha256,
            "source_name": self.source_name,
            "source_sha256": self.source_sha256,
            "source_format": self.source_format,
            "row_count": self.row_count,
            "columns": [{"name": c.name, "type": c.type} for c in self.columns],
            "size_bytes": self.size_bytes,
            "created_by": self.created_by,
            "created_at": self.created_at.isoformat(),
        }


def _row_to_version(row: tuple) -> DatasetVersion:
    columns = json.loads(row[7]) if isinstance(row[7], str) else row[7]
    return DatasetVersion(
        name=row[0],
        version=row[1],
        content_sha256=row[2],
        source_name=row[3],
        source_sha256=row[4],
        source_format=row[5],
        row_count=row[6],
        columns=tuple(Column(c["name"], c["type"]) for c in columns),
        size_bytes=row[8],
        created_by=row[9],
        created_at=row[10],
    )


def check_name(name: str) -> str:
    """Raises: InvalidInput unless `name` can name a dataset (and a SQL view)."""
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise InvalidInput(
            f"dataset name {name!r} is not allowed: use up to 63 letters, digits and "
            "underscores, starting with a letter (for example 'churn_2024')"
        )
    return name


def suggest_name(filename: str) -> str:
    """A valid dataset name made from a file name ("Sales 2024-Q1.csv" → "sales_2024_q1")."""
    stem = re.sub(r"[^A-Za-z0-9_]+", "_", Path(filename).stem).strip("_").lower()
    if not stem or not stem[0].isalpha():
        stem = "data_" + stem
    return stem[:63].rstrip("_") or "data"


def parse_ref(ref: str) -> tuple[str, int | None]:
    """Split "name" or "name:3" into (name, version or None for the latest).

    Raises:
        InvalidInput: the version part is not a positive integer.
    """
    name, _, version = ref.partition(":")
    if not version:
        return check_name(name), None
    if not version.isdigit() or int(version) < 1:
        raise InvalidInput(
            f"dataset reference {ref!r} is not valid: write NAME or NAME:VERSION (e.g. 'iris:2')"
        )
    return check_name(name), int(version)


def get_version(ws: Workspace, name: str, version: int | None = None) -> DatasetVersion:
    """A dataset version (the latest when `version` is None).

    Raises:
        NotFound: no such dataset, or no such version of it.
    """
    with store.read(ws) as con:
        row = rows.get_version(con, name, version)
        exists = row is not None or rows.dataset_exists(con, name)
    if row is None:
        if not exists:
            raise NotFound(f"dataset '{name}' does not exist; see `pond datasets`")
        raise NotFound(f"dataset '{name}' has no version {version}")
    return _row_to_version(row)


def resolve(ws: Workspace, ref: str) -> DatasetVersion:
    """The dataset version a "name" or "name:version" reference points at."""
    name, version = parse_ref(ref)
    return get_version(ws, name, version)


def list_versions(ws: Workspace, name: str | None = None) -> list[DatasetVersion]:
    """All versions (of one dataset when `name` is given), oldest first."""
    with store.read(ws) as con:
        if name is not None and not rows.dataset_exists(con, name):
            raise NotFound(f"dataset '{name}' does not exist; see `pond datasets`")
        return [_row_to_version(r) for r in rows.list_versions(con, name)]


def latest_versions(ws: Workspace) -> list[DatasetVersion]:
    """The newest version of every dataset, by name."""
    latest: dict[str, DatasetVersion] = {}
    for dv in list_versions(ws):
        latest[dv.name] = dv
    return list(latest.values())


# --- ingest -----------------------------------------------------------------


def _detect_format(path: Path, format: str | None) -> str:
    if format:
        if format not in set(FORMATS.values()):
            raise InvalidInput(
                f"format {format!r} is not supported; use one of "
                f"{', '.join(sorted(set(FORMATS.values())))}"
            )
        return format
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise InvalidInput(
            f"{path.name}: unknown file type {path.suffix or '(no extension)'!r}; Pond reads "
            f"{', '.join(sorted(FORMATS))} (or pass --format)"
        )
    return fmt


def _sql_str(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _header_names(path: Path, delimiter: str, quote: str, encoding: str) -> list[str]:
    """The raw header of a delimited file, read by Python's csv module.

    DuckDB silently renames blank and duplicate names, so we read them ourselves.
    """
    with open(path, "rb") as fh:
        head = fh.read(1 << 20)
    try:
        text = head.decode(encoding)
    except UnicodeDecodeError:
        # The cut may split a character; decode what is whole.
        text = head.decode(encoding, errors="ignore")
    if text.startswith("\ufeff"):
        text = text[1:]
    reader = csv.reader(io.StringIO(text), delimiter=delimiter, quotechar=quote or '"')
    return next(reader, [])


def _check_header(names: list[str], source: str) -> None:
    blank = [i + 1 for i, n in enumerate(names) if not n.strip()]
    if blank:
        raise InvalidInput(
            f"{source}: column {', '.join(map(str, blank))} has no name in the header; "
            "give every column a name and upload again"
        )
    seen: dict[str, int] = {}
    for n in names:
        seen[n.strip()] = seen.get(n.strip(), 0) + 1
    dupes = [n for n, k in seen.items() if k > 1]
    if dupes:
        raise InvalidInput(
            f"{source}: the header names {', '.join(repr(d) for d in dupes)} more than once; "
            "rename the duplicate columns and upload again"
        )


def _check_row_lengths(
    path: Path, delimiter: str, quote: str, encoding: str, width: int, source: str
) -> None:
    """Name the first ragged row among the first lines (DuckDB's sniffer only says it failed)."""
    with open(path, encoding=encoding, errors="replace", newline="") as fh:
        reader = csv.reader(fh, delimiter=delimiter, quotechar=quote or '"')
        next(reader, None)
        for line_number, row in enumerate(reader, start=2):
            if line_number > 20_000:
                return
            if row and len(row) != width:
                raise InvalidInput(
                    f"{source}: line {line_number} has {len(row)} fields but the header has "
                    f"{width} (a different number of fields than the header); fix that row, "
                    "or quote fields that contain the delimiter, and upload again"
                )


def _explain_duckdb_error(exc: Exception, source: str, fmt: str, encoding: str) -> PondError:
    message = str(exc)
    first = message.splitlines()[0] if message else type(exc).__name__
    line = re.search(r"[Ll]ine:? (\d+)", message)
    where = f" at line {line.group(1)}" if line else ""
    lowered = message.lower()
    if "invalid unicode" in lowered or "byte sequence" in lowered:
        return InvalidInput(
            f"{source} is not valid {encoding} text{where}; save it as UTF-8 or pass its "
            "encoding (for example --encoding latin-1)"
        )
    if "expected number of columns" in lowered or "too many columns" in lowered or (
        "column" in lowered and "found" in lowered
    ):
        return InvalidInput(
            f"{source} has rows with a different number of fields than the header{where}; "
            "fix those rows (or quote fields that contain the delimiter) and upload again"
        )
    if "not possible to automatically detect" in lowered:
        return InvalidInput(
            f"{source}: could not work out the file's layout (delimiter, quoting, rows); "
            "check that every row has as many fields as the header, or pass --delimiter"
        )
    if fmt == "parquet":
        return InvalidInput(f"{source} is not a readable Parquet file: {first}")
    if fmt in ("json", "jsonl"):
        return InvalidInput(f"{source} is not readable JSON{where}: {first}")
    return InvalidInput(f"{source} could not be read as {fmt}{where}: {first}")


def _source_sql(
    con: duckdb.DuckDBPyConnection,
    path: Path,
    fmt: str,
    source: str,
    delimiter: str | None,
    encoding: str,
) -> str:
    p = _sql_str(str(path))
    if fmt in ("csv", "tsv"):
        if delimiter is None and fmt == "tsv":
            delimiter = "\t"
        sniff_opts = f", delim={_sql_str(delimiter)}" if delimiter else ""
        enc = f", encoding={_sql_str(encoding)}" if encoding.lower() not in ("utf-8", "utf8") else ""
        try:
            sniffed = con.execute(
                f"SELECT Delimiter, Quote, HasHeader FROM sniff_csv({p}{sniff_opts}{enc}, nullstr={NULL_STRINGS})"
            ).fetchall()[0]
        except duckdb.Error as exc:
            raise _explain_duckdb_error(exc, source, fmt, encoding) from exc
        delim, quote = sniffed[0], sniffed[1]
        if quote in ("(empty)", "\x00", ""):
            quote = '"'
        names = _header_names(path, delim, quote, encoding)
        if len(names) == 1:
            other = next((d for d in (",", ";", "\t", "|") if d != delim and d in names[0]), None)
            if other is not None and delimiter is not None:
                raise InvalidInput(
                    f"{source}: the header splits into a single column with delimiter "
                    f"{delim!r} but contains {other!r}; pass --delimiter {other!r}"
                )
            if other is not None:
                # The sniffer gives up on files with ragged rows; the header knows better.
                delim = other
                names = _header_names(path, delim, quote, encoding)
        _check_header(names, source)
        _check_row_lengths(path, delim, quote, encoding, len(names), source)
        return (
            f"read_csv({p}, delim={_sql_str(delim)}, quote={_sql_str(quote or '')}, "
            f"header=true, strict_mode=true, null_padding=false, nullstr={NULL_STRINGS}{enc})"
        )
    if fmt == "parquet":
        return f"read_parquet({p})"
    if fmt == "jsonl":
        return f"read_json({p}, format='newline_delimited')"
    if fmt == "json":
        return f"read_json({p}, format='auto')"
    raise AssertionError(fmt)


def _excel_to_parquet(path: Path, out: Path, source: str) -> None:
    import pandas as pd  # only Excel goes through pandas: openpyxl reads it

    try:
        frame = pd.read_excel(path, sheet_name=0, engine="openpyxl")
    except Exception as exc:  # openpyxl raises many types for broken files
        raise InvalidInput(f"{source} is not a readable Excel workbook: {exc}") from exc
    raw = [str(c) for c in frame.columns]
    names = ["" if n.startswith("Unnamed: ") else n for n in raw]
    # pandas suffixes duplicates with ".1"; map them back to report them.
    base = [re.sub(r"\.\d+$", "", n) if n not in names[:i] else n for i, n in enumerate(names)]
    _check_header(base if len(set(base)) != len(base) else names, source)
    for col in frame.columns:
        if frame[col].dtype == object:
            # Mixed cells (numbers and text) become text so Parquet gets one type.
            frame[col] = frame[col].map(lambda v: None if pd.isna(v) else str(v))
    con = duckdb.connect()
    try:
        con.register("excel_frame", frame)
        con.execute(f"COPY excel_frame TO {_sql_str(str(out))} (FORMAT parquet)")
    finally:
        con.close()


def ingest(
    ws: Workspace,
    path: str | Path,
    name: str,
    *,
    actor: auth.User,
    source_name: str | None = None,
    format: str | None = None,
    delimiter: str | None = None,
    encoding: str = "utf-8",
) -> DatasetVersion:
    """Read a file into a new, immutable version of dataset `name`.

    Args:
        path: the file (CSV, TSV, Parquet, JSON, JSONL, Excel).
        name: dataset name; a new name starts at version 1, an existing one gets
            the next version while the old ones stay readable.
        source_name: the file name to record (an upload's original name).
        format / delimiter / encoding: override what the extension and the sniffer say.

    Returns:
        The new version with its row count, schema and content hash.

    Raises:
        InvalidInput: a bad name, an unreadable, empty, header-only, ragged or
            otherwise malformed file; nothing is written in that case.
        PermissionDenied: the actor may not ingest.
    """
    check_name(name)
    auth.require(actor, "ingest")
    path = Path(path)
    source = source_name or path.name
    if not path.is_file():
        raise InvalidInput(f"{path} is not a file")
    if path.stat().st_size == 0:
        raise InvalidInput(f"{source} is empty (0 bytes); choose a file with data")
    fmt = _detect_format(Path(source) if source_name else path, format)

    ws.tmp_dir.mkdir(parents=True, exist_ok=True)
    tmp_parquet = ws.tmp_dir / f"ingest-{time.time_ns()}.parquet"
    try:
        if fmt == "excel":
            _excel_to_parquet(path, tmp_parquet, source)
        else:
            con = duckdb.connect(config={"memory_limit": INGEST_MEMORY_LIMIT})
            try:
                con.execute(f"SET temp_directory={_sql_str(str(ws.tmp_dir / 'spill'))}")
                src = _source_sql(con, path, fmt, source, delimiter, encoding)
                con.execute(
                    f"COPY (SELECT * FROM {src}) TO {_sql_str(str(tmp_parquet))} "
                    "(FORMAT parquet, COMPRESSION zstd)"
                )
            except duckdb.Error as exc:
                raise _explain_duckdb_error(exc, source, fmt, encoding) from exc
            finally:
                con.close()
        row_count, columns = _describe_parquet(tmp_parquet)
        if not columns:
            raise InvalidInput(f"{source} has no columns")
        if row_count == 0:
            raise InvalidInput(
                f"{source} has a header but no data rows; add rows and upload again"
            )
        _check_header([c.name for c in columns], source)
        source_sha = artifact_store.sha256_file(path)
        artifact = artifact_store.put_file(ws, tmp_parquet, move=True)
    finally:
        tmp_parquet.unlink(missing_ok=True)

    with store.transaction(ws) as con:
        created = rows.ensure_dataset(con, name, actor.name)
        version = rows.next_version(con, name)
        rows.insert_artifact(con, artifact.sha256, artifact.size_bytes, "dataset", actor.name)
        rows.insert_version(
            con,
            dataset_name=name,
            version=version,
            content_sha256=artifact.sha256,
            source_name=source,
            source_sha256=source_sha,
            source_format=fmt,
            row_count=row_count,
            columns=[{"name": c.name, "type": c.type} for c in columns],
            size_bytes=artifact.size_bytes,
            created_by=actor.name,
        )
        store.append_audit(
            con,
            actor=actor.name,
            action="dataset_created" if created else "dataset_version_added",
            entity_type="dataset",
            entity_id=f"{name}:{version}",
            to_state="available",
            details={"rows": row_count, "source": source, "sha256": artifact.sha256},
        )
    return get_version(ws, name, version)


def _describe_parquet(path: Path) -> tuple[int, list[Column]]:
    con = duckdb.connect()
    try:
        p = _sql_str(str(path))
        count = con.execute(f"SELECT count(*) FROM read_parquet({p})").fetchall()[0][0]
        described = con.execute(f"DESCRIBE SELECT * FROM read_parquet({p})").fetchall()
    finally:
        con.close()
    return count, [Column(r[0], r[1]) for r in described]


# --- reading ------------------------------------------------------------------


def preview(ws: Workspace, dv: DatasetVersion, limit: int = 100) -> Any:
    """The first `limit` rows as a pandas DataFrame (for display)."""
    con = duckdb.connect()
    try:
        return con.execute(
            f"SELECT * FROM read_parquet({_sql_str(str(dv.parquet_path(ws)))}) LIMIT {int(limit)}"
        ).df()
    finally:
        con.close()


def load_frame(ws: Workspace, dv: DatasetVersion, columns: list[str] | None = None) -> Any:
    """The whole version as a pandas DataFrame (for training, which needs it in memory)."""
    con = duckdb.connect()
    try:
        cols = "*" if not columns else ", ".join('"' + c.replace('"', '""') + '"' for c in columns)
        return con.execute(
            f"SELECT {cols} FROM read_parquet({_sql_str(str(dv.parquet_path(ws)))})"
        ).df()
    finally:
        con.close()


# --- profiles and reports -------------------------------------------------------


@dataclass(frozen=True)
class StoredReport:
    """A generated HTML report of a dataset version, kept as an artifact."""

    dataset: str
    version: int
    kind: str
    artifact_sha256: str
    rows_used: int
    total_rows: int
    created_by: str
    created_at: datetime

    @property
    def sampled(self) -> bool:
        return self.rows_used < self.total_rows


def profile(ws: Workspace, dv: DatasetVersion) -> Any:
    """The column profile of a version (`core.profiling.Profile`), computed once and cached.

    The profile is DuckDB SQL over the version's Parquet file; the workspace
    lock is held only to read or store the cached result.
    """
    from core import profiling

    with store.read(ws) as con:
        cached = rows.get_profile(con, dv.content_sha256)
    if cached is not None:
        try:
            return profiling.Profile.from_dict(cached)
        except ValueError:
            pass  # written by an older profile format: compute it again
    started = time.perf_counter()
    result = profiling.compute_profile(dv.parquet_path(ws))
    seconds = time.perf_counter() - started
    with store.transaction(ws) as con:
        rows.put_profile(con, dv.content_sha256, result.to_dict(), seconds)
    return result


def stored_report(ws: Workspace, dv: DatasetVersion, kind: str = "ydata") -> StoredReport | None:
    with store.read(ws) as con:
        row = rows.get_report(con, dv.name, dv.version, kind)
    if row is None:
        return None
    return StoredReport(dv.name, dv.version, kind, *row)


def report_html(ws: Workspace, report: StoredReport) -> str:
    """The HTML of a stored report (hash re-checked)."""
    return artifact_store.read_bytes(ws, report.artifact_sha256).decode("utf-8")


def ydata_report(
    ws: Workspace, dv: DatasetVersion, *, actor: auth.User, sample_rows: int = 100_000
) -> StoredReport:
    """Generate the ydata-profiling HTML report (on a sample above `sample_rows` rows).

    ydata-profiling is imported only here; the report is stored as an artifact
    and replaces an earlier report of the same version.
    """
    from core import profiling

    if sample_rows < 1:
        raise InvalidInput(
            f"The 'sample_rows' parameter of ydata_report must be an int >= 1. Got {sample_rows}."
        )
    html, rows_used, total_rows = profiling.ydata_report_html(
        dv.parquet_path(ws), sample_rows=sample_rows
    )
    artifact = artifact_store.put_bytes(ws, html.encode("utf-8"))
    with store.transaction(ws) as con:
        rows.insert_artifact(con, artifact.sha256, artifact.size_bytes, "report", actor.name)
        rows.put_report(
            con, dv.name, dv.version, "ydata", artifact.sha256, rows_used, total_rows, actor.name
        )
        store.append_audit(
            con,
            actor=actor.name,
            action="report_generated",
            entity_type="dataset",
            entity_id=dv.ref,
            details={"kind": "ydata", "rows_used": rows_used, "total_rows": total_rows},
        )
    report = stored_report(ws, dv, "ydata")
    assert report is not None
    return report
