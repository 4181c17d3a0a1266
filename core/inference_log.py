"""The inference log: one row per request a Pond server answered, as Parquet
files under `POND_HOME/inference/<model>/`, and the readers monitoring uses.

The server never writes `pond.duckdb` on the request path. Each request's row
goes into an in-memory buffer; a background thread writes the buffer every
`flush_s` seconds (and when it grows large, and on shutdown) as one Parquet
file per model, under a temporary dot-name then `os.replace`d into place, so a
reader globbing `*.parquet` never sees half a file. File names carry the time,
the process id and a random suffix, so several servers (or worker processes)
on one workspace never clash. A request is in the buffer before its response
is sent, so a graceful stop (SIGTERM) logs everything that was answered; a
hard kill loses at most the last `flush_s` seconds.

Readers (`inference_rows`, `inference_inputs`, `serving_stats`) query the files
with an in-memory DuckDB connection over the glob; they never open the
workspace database either.
"""

from __future__ import annotations

import atexit
import json
import logging
import math
import os
import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import duckdb
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from core.errors import InvalidInput
from core.store import Workspace

log = logging.getLogger("pond.inference_log")

FLUSH_SECONDS = 2.0
# Flush early when this many rows wait, so a burst of large batches cannot grow
# the buffer without bound between timer ticks.
MAX_BUFFERED_ROWS = 5_000

SCHEMA = pa.schema(
    [
        pa.field("request_id", pa.string(), nullable=False),
        pa.field("model", pa.string(), nullable=False),
        pa.field("version", pa.int32()),
        pa.field("received_at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("latency_ms", pa.float64(), nullable=False),
        pa.field("status", pa.int16(), nullable=False),
        pa.field("error_code", pa.string()),
        pa.field("n_records", pa.int32(), nullable=False),
        # The request's records and the response body, as JSON text: a model's
        # columns change between versions, and DuckDB reads JSON text directly.
        pa.field("inputs", pa.string()),
        pa.field("outputs", pa.string()),
        pa.field("token_id", pa.int64()),
        pa.field("server_pid", pa.int32(), nullable=False),
    ]
)
COLUMNS = tuple(SCHEMA.names)


class LogRow(NamedTuple):
    """One answered request (a named tuple: made on the request path, so made cheaply).

    Attributes:
        inputs: the request's records (serialised to JSON when flushed, off the
            request path), or None when the body was refused unread or unparsed.
        outputs: the response body exactly as sent (JSON bytes).
    """

    request_id: str
    model: str
    version: int | None
    received_at: datetime
    latency_ms: float
    status: int
    error_code: str | None
    n_records: int
    inputs: Any
    outputs: bytes | None
    token_id: int | None


class InferenceLogWriter:
    """Buffers `LogRow`s and writes them as Parquet files in a background thread.

    Thread-safe: `append` may be called from the event loop and worker threads.
    Call `start()` once and `close()` on shutdown (it writes what is left).
    """

    def __init__(
        self,
        ws: Workspace,
        *,
        flush_s: float = FLUSH_SECONDS,
        max_rows: int = MAX_BUFFERED_ROWS,
    ) -> None:
        self.ws = ws
        self.flush_s = flush_s
        self.max_rows = max_rows
        self._rows: list[LogRow] = []
        self._lock = threading.Lock()
        # Held while writing, so close() waits for a flush that is under way.
        self._write_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.rows_written = 0
        self.files_written = 0
        self.last_error: str | None = None

    def start(self) -> None:
        """Start the background writer; the buffer is also written at interpreter exit
        (a second Ctrl-C makes uvicorn skip the app's shutdown, not this)."""
        if self._thread is None:
            atexit.register(self.close)
            self._thread = threading.Thread(
                target=self._run, name="pond-inference-log", daemon=True
            )
            self._thread.start()

    def append(self, row: LogRow) -> None:
        """Queue one row; it is on disk within `flush_s` seconds."""
        with self._lock:
            self._rows.append(row)
            full = len(self._rows) >= self.max_rows
        if full:
            self._wake.set()

    def pending(self) -> int:
        with self._lock:
            return len(self._rows)

    def flush(self) -> int:
        """Write every buffered row now.

        Returns:
            The number of rows written.
        """
        with self._write_lock:
            with self._lock:
                rows, self._rows = self._rows, []
            if not rows:
                return 0
            by_model: dict[str, list[LogRow]] = {}
            for row in rows:
                by_model.setdefault(row.model, []).append(row)
            written = 0
            for model, model_rows in by_model.items():
                try:
                    _write_file(self.ws, model, model_rows)
                except Exception as exc:  # keep the rows and retry on the next tick
                    self.last_error = f"{type(exc).__name__}: {exc}"
                    log.error("could not write the inference log of %s: %s", model, exc)
                    with self._lock:
                        self._rows[:0] = model_rows
                    continue
                written += len(model_rows)
                self.files_written += 1
            self.rows_written += written
            return written

    def close(self) -> None:
        """Stop the background thread and write what is left."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        self.flush()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.flush_s)
            self._wake.clear()
            self.flush()


def _json_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8")
    return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY).decode("utf-8")


def _write_file(ws: Workspace, model: str, rows: Sequence[LogRow]) -> Path:
    folder = model_dir(ws, model)
    folder.mkdir(parents=True, exist_ok=True)
    pid = os.getpid()
    columns: dict[str, list[Any]] = {
        "request_id": [r.request_id for r in rows],
        "model": [r.model for r in rows],
        "version": [r.version for r in rows],
        "received_at": [r.received_at for r in rows],
        "latency_ms": [r.latency_ms for r in rows],
        "status": [r.status for r in rows],
        "error_code": [r.error_code for r in rows],
        "n_records": [r.n_records for r in rows],
        "inputs": [_json_text(r.inputs) for r in rows],
        "outputs": [_json_text(r.outputs) for r in rows],
        "token_id": [r.token_id for r in rows],
        "server_pid": [pid] * len(rows),
    }
    table = pa.Table.from_pydict(columns, schema=SCHEMA)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    name = f"{stamp}-{pid}-{uuid.uuid4().hex[:12]}.parquet"
    # A dot-name without the .parquet suffix: the readers' glob cannot match it.
    tmp = folder / f".{name}.tmp"
    try:
        pq.write_table(table, tmp, compression="zstd")
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, folder / name)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return folder / name


# --- reading ----------------------------------------------------------------------


def model_dir(ws: Workspace, model: str) -> Path:
    """The folder holding one model's log files."""
    if not model or "/" in model or model.startswith("."):
        raise InvalidInput(f"model name {model!r} cannot name an inference log folder")
    return ws.inference_dir / model


def log_glob(ws: Workspace, model: str | None = None) -> str:
    """The glob DuckDB reads the logs by (`read_parquet(glob)`), for one model or all."""
    folder = ws.inference_dir / "*" if model is None else model_dir(ws, model)
    return str(folder / "*.parquet")


def _has_files(ws: Workspace, model: str | None) -> bool:
    if model is None:
        return any(ws.inference_dir.glob("*/*.parquet"))
    return any(model_dir(ws, model).glob("*.parquet"))


def _since(since: datetime | None) -> datetime | None:
    if since is None:
        return None
    return since if since.tzinfo is not None else since.replace(tzinfo=UTC)


def _query(ws: Workspace, model: str | None, since: datetime | None, select: str,
           tail: str = "") -> pd.DataFrame:
    """Run `SELECT {select} FROM logs [WHERE received_at >= since] {tail}` over the glob."""
    where, params = "", []
    if since is not None:
        where, params = " WHERE received_at >= ?", [_since(since)]
    con = duckdb.connect()  # in memory: the logs are files, not workspace tables
    try:
        con.execute("SET TimeZone = 'UTC'")
        sql = (
            f"SELECT {select} FROM read_parquet(?, union_by_name = true){where} {tail}"
        )
        return con.execute(sql, [log_glob(ws, model), *params]).df()
    finally:
        con.close()


def inference_rows(
    ws: Workspace, model: str | None = None, since: datetime | None = None
) -> pd.DataFrame:
    """Every logged request (one row each), oldest first.

    Args:
        model: only this model's requests (default: all models).
        since: only requests received at or after this time (naive means UTC).

    Returns:
        A DataFrame with the columns of `COLUMNS`; empty (with those columns)
        when nothing was logged yet.
    """
    if not _has_files(ws, model):
        return pd.DataFrame({name: pd.Series(dtype=object) for name in COLUMNS})
    return _query(ws, model, since, "*", "ORDER BY received_at, request_id")


def inference_inputs(
    ws: Workspace, model: str, since: datetime | None = None, *, version: int | None = None
) -> pd.DataFrame:
    """The records that successfully answered requests carried, one row per record,
    for drift monitoring.

    Returns:
        One column per input field, plus `_request_id`, `_version` and
        `_received_at`. Empty when nothing was logged.
    """
    rows = inference_rows(ws, model, since)
    if rows.empty:
        return pd.DataFrame(columns=["_request_id", "_version", "_received_at"])
    rows = rows[(rows["status"] == 200) & rows["inputs"].notna()]
    if version is not None:
        rows = rows[rows["version"] == version]
    records: list[dict[str, Any]] = []
    for request_id, ver, received_at, inputs in zip(
        rows["request_id"], rows["version"], rows["received_at"], rows["inputs"], strict=True
    ):
        for record in json.loads(inputs):
            records.append(
                {**record, "_request_id": request_id, "_version": int(ver),
                 "_received_at": received_at}
            )
    if not records:
        return pd.DataFrame(columns=["_request_id", "_version", "_received_at"])
    return pd.DataFrame.from_records(records)


@dataclass(frozen=True)
class ServingStats:
    """Request counts and latency of one model version, from its inference log."""

    model: str
    version: int | None
    requests: int
    errors: int
    records: int
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    first_at: datetime | None
    last_at: datetime | None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _ms(value: Any) -> float | None:
    if value is None:
        return None
    number = float(value)
    return None if math.isnan(number) else round(number, 3)


def serving_stats(
    ws: Workspace, model: str | None = None, since: datetime | None = None
) -> list[ServingStats]:
    """Per model and version: requests, errors (status ≥ 400), records predicted,
    and latency percentiles of successful requests.

    Args:
        model: one model (default: every model with a log).
        since: only requests received at or after this time.

    Returns:
        One entry per (model, version), by model then version; empty when
        nothing was logged.
    """
    if not _has_files(ws, model):
        return []
    frame = _query(
        ws, model, since,
        "model, version, count(*) AS requests,"
        " count(*) FILTER (WHERE status >= 400) AS errors,"
        " coalesce(sum(n_records) FILTER (WHERE status = 200), 0) AS records,"
        " quantile_cont(latency_ms, 0.50) FILTER (WHERE status = 200) AS p50,"
        " quantile_cont(latency_ms, 0.95) FILTER (WHERE status = 200) AS p95,"
        " quantile_cont(latency_ms, 0.99) FILTER (WHERE status = 200) AS p99,"
        " min(received_at) AS first_at, max(received_at) AS last_at",
        "GROUP BY model, version ORDER BY model, version NULLS FIRST",
    )
    out = []
    for r in frame.itertuples(index=False):
        out.append(
            ServingStats(
                model=r.model,
                version=None if pd.isna(r.version) else int(r.version),
                requests=int(r.requests),
                errors=int(r.errors),
                records=int(r.records),
                p50_ms=_ms(r.p50),
                p95_ms=_ms(r.p95),
                p99_ms=_ms(r.p99),
                first_at=None if pd.isna(r.first_at) else r.first_at.to_pydatetime(),
                last_at=None if pd.isna(r.last_at) else r.last_at.to_pydatetime(),
            )
        )
    return out
