"""Drift monitoring: compare a reference (by default a model's training dataset
version) with current data (by default the model's logged inferences), per
column and for the model's predictions; store every report; track drift and
performance over time; and raise alerts by per-model policy, stored,
acknowledgeable and optionally POSTed to a webhook.

How the numbers are computed. DuckDB reads the data (dataset Parquet files, or
the inference log) and does the counting: nulls, ±inf, value counts. Exact
sort-based statistics run on one column at a time, fetched from DuckDB as a
NumPy array; no whole table is ever loaded into pandas (the inference log's
records come from `core.inference_log`, which hands them over as one frame).
A reference is scanned once per dataset version: its statistics (counts,
std, value counts, and the sorted values of numeric columns as an `.npy`
artifact) are stored under the version's content hash and reused by every
later report. The tests and the default choice of test live in
`core.drift_stats`.

Bad input is handled, not crashed on:

- a column missing on one side, a date-time, nested or free-text column, or a
  column with no values on one side is listed under `skipped` with the reason
  (and a warning when data went missing);
- a column whose type changed is read as the reference's type when every
  value converts (text "42" for a number column), compared as text categories
  when the reference held text, and otherwise skipped with a warning;
- NaN and ±inf are dropped before a test and counted per side;
- a category seen only in the current data counts 0 on the reference side
  (chi-square then gives p = 0; Jensen-Shannon and PSI stay finite);
- a window with no logged rows is an error naming the latest logged time.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
import time
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb
import numpy as np
import orjson
import pandas as pd
import pyarrow as pa

from core import datasets, inference_log, model_contract, registry, store, webhooks
from core import drift_stats as ds
from core import metrics as metric_registry
from core.auth import SYSTEM, User, require
from core.errors import IllegalTransition, InvalidInput, NotFound, PondError
from core.store import Workspace
from core.store import artifacts as artifact_store
from core.store import drift as rows

COLUMNS_SCOPE = "columns"
PREDICTION = "prediction"
HISTOGRAM_BINS = 30
TOP_CATEGORIES = 20
# A text column with more distinct values than this is an identifier or free text: it has no
# categories to compare, so its counts are not stored and it is not tested.
MAX_CATEGORIES = 10_000
# ...and so is one where most reference values are distinct (Evidently calls those "text").
TEXT_DISTINCT_SHARE = 0.5
TEXT_MIN_DISTINCT = 50
FREQUENCIES = {"day": "day", "week": "week", "hour": "hour"}
_WINDOW_RE = re.compile(r"^\s*(\d+)\s*(m|min|h|d|w)\s*$", re.IGNORECASE)
_WINDOW_UNITS = {"m": "minutes", "min": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_INTEGER_TYPES = {
    "TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER",
    "UBIGINT", "UHUGEINT", "INT1", "INT2", "INT4", "INT8",
}
_NUMERIC = ("float", "integer")
_PREDICT_BATCH = 100_000


# --- results ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ColumnDrift:
    """One column's comparison.

    Attributes:
        kind: "numeric" or "categorical" (Evidently's rules, `drift_stats.column_kind`).
        storage: the data type family: float, integer, text or boolean.
        test, test_label: the test that ran ("wasserstein", "Wasserstein distance (normed)").
        score: the p-value or distance; `score_kind` says which.
        threshold: drift when a p-value is below it, or a distance at or above it.
        psi, psi_band: PSI over the reference's deciles, and its reading.
        reference_rows, current_rows: the values tested (nulls and ±inf dropped).
        reference_missing, current_missing: nulls per side.
        reference_non_finite, current_non_finite: NaN/±inf dropped per side.
        overridden: the user chose the test or threshold.
        notes: what a person should know about this column's data.
        distribution: both sides' histogram (numeric) or category shares, for charts.
    """

    column: str
    kind: str
    storage: str
    test: str
    test_label: str
    score: float
    score_kind: str
    threshold: float
    drifted: bool
    psi: float | None
    psi_band: str | None
    reference_rows: int
    current_rows: int
    reference_missing: int = 0
    current_missing: int = 0
    reference_non_finite: int = 0
    current_non_finite: int = 0
    overridden: bool = False
    notes: tuple[str, ...] = ()
    distribution: dict[str, Any] = field(default_factory=dict, compare=False)

    def to_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out["notes"] = list(self.notes)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ColumnDrift:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        known["notes"] = tuple(known.get("notes") or ())
        known["score"] = _float(known.get("score"))
        return cls(**known)


@dataclass(frozen=True)
class SkippedColumn:
    column: str
    reason: str


@dataclass(frozen=True)
class DriftReport:
    """A stored comparison of current data with a reference.

    Attributes:
        reference: "dataset:version" of the reference.
        current: "dataset:version", or "inference log of MODEL".
        current_kind: "dataset" or "inference_log".
        window: the window asked for ("7d"), None for a dataset or the whole log.
        columns: one result per compared column, in the data's column order.
        skipped: columns not compared, with the reason.
        drifted_share: drifted columns / compared columns.
        dataset_drift: `drifted_share` ≥ `drift_share_threshold` (Evidently's dataset drift).
        prediction: the model's predictions compared the same way, when a model is given.
        alerts: ids of the alerts this report fired.
    """

    id: int
    model: str | None
    model_version: int | None
    reference: str
    reference_sha256: str
    current: str
    current_kind: str
    current_sha256: str | None
    window: str | None
    window_start: datetime | None
    window_end: datetime | None
    reference_rows: int
    current_rows: int
    columns: tuple[ColumnDrift, ...]
    skipped: tuple[SkippedColumn, ...]
    drifted_share: float | None
    drift_share_threshold: float
    dataset_drift: bool
    prediction: ColumnDrift | None
    warnings: tuple[str, ...]
    alerts: tuple[int, ...]
    seconds: float
    created_by: str
    created_at: datetime

    @property
    def drifted_columns(self) -> list[str]:
        return [c.column for c in self.columns if c.drifted]

    @property
    def model_ref(self) -> str | None:
        return None if self.model is None else f"{self.model}:{self.model_version}"

    def column(self, name: str) -> ColumnDrift:
        """Raises: NotFound when the report did not compare that column."""
        for result in self.columns:
            if result.column == name:
                return result
        if self.prediction is not None and name == self.prediction.column:
            return self.prediction
        raise NotFound(f"drift report #{self.id} did not compare a column named {name!r}")

    def summary_rows(self) -> list[dict[str, Any]]:
        """One plain row per compared column (and the prediction), for tables."""
        results = [*self.columns, *([self.prediction] if self.prediction else [])]
        return [
            {
                "column": r.column,
                "kind": r.kind,
                "test": r.test_label,
                "score": r.score,
                "threshold": r.threshold,
                "drifted": r.drifted,
                "psi": r.psi,
                "psi_band": r.psi_band,
                "reference_rows": r.reference_rows,
                "current_rows": r.current_rows,
            }
            for r in results
        ]

    def to_dict(self, *, distributions: bool = False) -> dict[str, Any]:
        def column(c: ColumnDrift) -> dict[str, Any]:
            out = c.to_dict()
            if not distributions:
                out.pop("distribution", None)
            return out

        return {
            "id": self.id,
            "model": self.model,
            "model_version": self.model_version,
            "reference": self.reference,
            "reference_sha256": self.reference_sha256,
            "current": self.current,
            "current_kind": self.current_kind,
            "current_sha256": self.current_sha256,
            "window": self.window,
            "window_start": self.window_start,
            "window_end": self.window_end,
            "reference_rows": self.reference_rows,
            "current_rows": self.current_rows,
            "columns_tested": len(self.columns),
            "columns_drifted": len(self.drifted_columns),
            "drifted_columns": self.drifted_columns,
            "drifted_share": self.drifted_share,
            "drift_share_threshold": self.drift_share_threshold,
            "dataset_drift": self.dataset_drift,
            "columns": [column(c) for c in self.columns],
            "skipped": [s.__dict__ for s in self.skipped],
            "prediction": None if self.prediction is None else column(self.prediction),
            "warnings": list(self.warnings),
            "alerts": list(self.alerts),
            "seconds": self.seconds,
            "created_by": self.created_by,
            "created_at": self.created_at,
        }


@dataclass(frozen=True)
class ReportSummary:
    """A stored report as listed (without per-column results)."""

    id: int
    model: str | None
    model_version: int | None
    reference: str
    current: str
    window: str | None
    current_rows: int
    columns_tested: int
    columns_drifted: int
    drifted_share: float | None
    dataset_drift: bool
    created_by: str
    created_at: datetime

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class TimelinePoint:
    """Drift of one period's logged inputs against the reference."""

    start: datetime
    rows: int
    columns_tested: int
    columns_drifted: int
    drifted_share: float | None
    scores: dict[str, float]
    drifted: dict[str, bool]
    tests: dict[str, str]
    prediction_score: float | None = None


@dataclass(frozen=True)
class DriftTimeline:
    model: str
    model_version: int
    reference: str
    freq: str
    drift_share_threshold: float
    points: tuple[TimelinePoint, ...]
    skipped: tuple[SkippedColumn, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "model_version": self.model_version,
            "reference": self.reference,
            "freq": self.freq,
            "drift_share_threshold": self.drift_share_threshold,
            "points": [p.__dict__ for p in self.points],
            "skipped": [s.__dict__ for s in self.skipped],
        }


@dataclass(frozen=True)
class PerformancePoint:
    start: datetime
    rows: int
    metrics: dict[str, float | None]


@dataclass(frozen=True)
class PerformanceTimeline:
    """The model's quality per period, from logged predictions joined with later labels."""

    model: str
    model_version: int
    task: str
    labels: str
    key: str
    freq: str
    main_metric: str
    points: tuple[PerformancePoint, ...]
    matched_rows: int
    logged_rows: int
    alerts: tuple[int, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out["points"] = [p.__dict__ for p in self.points]
        out["alerts"] = list(self.alerts)
        return out


@dataclass(frozen=True)
class AlertPolicy:
    """When a model's monitoring raises an alert.

    Attributes:
        max_drift_share: alert when a report's drifted share is at or above it.
        watched_columns: alert when any of these columns drifted.
        metric, metric_limit: alert when the metric is worse than the limit (below it
            for metrics where higher is better, above it for errors such as rmse).
        webhook_url: where alerts are POSTed (JSON with a Slack-compatible `text`).
        secret_hint: the last characters of the signing secret, if one was set.
    """

    model: str
    max_drift_share: float | None
    watched_columns: tuple[str, ...]
    metric: str | None
    metric_limit: float | None
    webhook_url: str | None
    secret_hint: str | None
    enabled: bool
    updated_by: str
    updated_at: datetime

    def describe(self) -> list[str]:
        """The conditions in words."""
        out = []
        if self.max_drift_share is not None:
            out.append(f"drifted share ≥ {self.max_drift_share:g}")
        if self.watched_columns:
            out.append("any of " + ", ".join(self.watched_columns) + " drifted")
        if self.metric is not None and self.metric_limit is not None:
            spec = metric_registry.METRICS.get(self.metric)
            word = "below" if spec is None or spec.higher_is_better else "above"
            out.append(f"{self.metric} {word} {self.metric_limit:g}")
        return out

    def to_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out["watched_columns"] = list(self.watched_columns)
        out["conditions"] = self.describe()
        return out


@dataclass(frozen=True)
class Alert:
    """One firing of a policy."""

    id: int
    model: str
    model_version: int | None
    condition: str
    message: str
    details: dict[str, Any]
    report_id: int | None
    fired_by: str
    fired_at: datetime
    acknowledged_by: str | None
    acknowledged_at: datetime | None
    acknowledge_comment: str | None

    @property
    def is_open(self) -> bool:
        return self.acknowledged_at is None

    def to_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out["open"] = self.is_open
        return out


@dataclass(frozen=True)
class AlertDelivery:
    id: int
    alert_id: int
    url: str
    outcome: str
    attempts: int
    response_status: int | None
    error: str | None
    created_at: datetime
    finished_at: datetime | None


# --- small helpers ------------------------------------------------------------------------------


def _float(value: Any) -> float:
    return float("nan") if value is None else float(value)


def _finite_or_none(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def storage_of(duckdb_type: str) -> str:
    """The family of a DuckDB type: float, integer, boolean, text, datetime or other."""
    t = duckdb_type.upper()
    if t in ("FLOAT", "DOUBLE", "REAL", "FLOAT4", "FLOAT8") or t.startswith("DECIMAL"):
        return "float"
    if t in _INTEGER_TYPES:
        return "integer"
    if t in ("BOOLEAN", "BOOL"):
        return "boolean"
    if t in ("VARCHAR", "TEXT", "STRING") or t.startswith("ENUM"):
        return "text"
    if t.startswith(("DATE", "TIME", "INTERVAL")):
        return "datetime"
    return "other"


def parse_window(window: str | None) -> timedelta | None:
    """"30m", "12h", "1d", "7d", "2w" → a timedelta; None or "all" → None (the whole log).

    Raises:
        InvalidInput: anything else.
    """
    if window is None or str(window).strip().lower() in ("", "all"):
        return None
    match = _WINDOW_RE.match(str(window))
    if not match or int(match.group(1)) < 1:
        raise InvalidInput(
            f"The 'window' parameter must look like 30m, 12h, 1d, 7d or 2w. Got {window!r} instead."
        )
    return timedelta(**{_WINDOW_UNITS[match.group(2).lower()]: int(match.group(1))})


def _check_freq(freq: str) -> str:
    if freq not in FREQUENCIES:
        raise InvalidInput(
            f"The 'freq' parameter must be one of {', '.join(FREQUENCIES)}. Got {freq!r} instead."
        )
    return freq


def _check_share(name: str, value: float | None) -> float | None:
    if value is None:
        return None
    if not isinstance(value, int | float) or not 0 < float(value) <= 1:
        raise InvalidInput(f"The '{name}' parameter must be a number in (0, 1]. Got {value!r} instead.")
    return float(value)


# --- reference statistics -----------------------------------------------------------------------


@dataclass(frozen=True)
class ColumnReference:
    """What is kept of one reference column.

    Attributes:
        count: non-null finite values; `nulls` and `non_finite` were dropped.
        values_sha256: the artifact holding the sorted values (numeric columns).
        counts: [value, count] pairs (text and boolean columns), None when too many.
    """

    name: str
    duckdb_type: str
    storage: str
    count: int
    nulls: int
    non_finite: int
    distinct: int
    std: float | None = None
    mean: float | None = None
    minimum: float | None = None
    maximum: float | None = None
    values_sha256: str | None = None
    counts: tuple[tuple[Any, int], ...] | None = None
    deciles: tuple[float, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out["counts"] = None if self.counts is None else [list(c) for c in self.counts]
        out["deciles"] = None if self.deciles is None else list(self.deciles)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ColumnReference:
        counts, deciles = data.get("counts"), data.get("deciles")
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**{**known, "counts": None if counts is None else tuple(
            (value, int(n)) for value, n in counts),
            "deciles": None if deciles is None else tuple(deciles)})


@dataclass(frozen=True)
class ReferenceStats:
    """Statistics of one dataset version (or of a model's predictions on it), stored once."""

    content_sha256: str
    scope: str
    dataset: str
    version: int
    row_count: int
    columns: dict[str, ColumnReference]
    seconds: float
    computed_now: bool

    @property
    def ref(self) -> str:
        return f"{self.dataset}:{self.version}"


def _duck() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()  # in memory: user data is files, not workspace tables
    con.execute("SET TimeZone = 'UTC'")
    con.execute("SET enable_progress_bar = false")
    return con


def _describe(con: duckdb.DuckDBPyConnection, relation: str) -> dict[str, str]:
    return {r[0]: r[1] for r in con.execute(f"DESCRIBE SELECT * FROM {relation}").fetchall()}


def _row_count(con: duckdb.DuckDBPyConnection, relation: str) -> int:
    return int(con.execute(f"SELECT count(*) FROM {relation}").fetchall()[0][0])


@dataclass(frozen=True)
class _Numbers:
    """One column's finite values, sorted, and what was dropped."""

    values: np.ndarray
    nulls: int
    non_finite: int


def _finite_values(
    con: duckdb.DuckDBPyConnection, relation: str, column: str, *, as_text: bool = False
) -> _Numbers:
    """One column fetched as float64 (one column at a time), nulls and NaN/±inf dropped and
    counted, then sorted. `as_text` reads text that holds numbers; other text counts as null."""
    q = _quote(column)
    value = f"TRY_CAST({q} AS DOUBLE)" if as_text else f"CAST({q} AS DOUBLE)"
    fetched = con.execute(f"SELECT {value} AS v FROM {relation}").fetchnumpy()["v"]
    data = np.ma.getdata(fetched)
    mask = np.ma.getmaskarray(fetched) if np.ma.isMaskedArray(fetched) else None
    nulls = 0
    if mask is not None and mask.any():
        nulls = int(mask.sum())
        data = data[~mask]
    finite = np.isfinite(data)
    non_finite = int(finite.size - np.count_nonzero(finite))
    # The fetched array is ours alone, so it is sorted in place without another copy.
    values = np.ascontiguousarray(data[finite] if non_finite else data, dtype=np.float64)
    values.sort(kind="quicksort")
    return _Numbers(values, nulls, non_finite)


def _value_counts(
    con: duckdb.DuckDBPyConnection, relation: str, column: str, *, as_text: bool = False
) -> tuple[dict[Any, int], int]:
    """(value → count, nulls) of one column, counted in DuckDB."""
    q = _quote(column)
    value = f"CAST({q} AS VARCHAR)" if as_text else q
    found = con.execute(f"SELECT {value} AS v, count(*) FROM {relation} GROUP BY 1").fetchall()
    counts = {v: int(n) for v, n in found if v is not None}
    nulls = sum(int(n) for v, n in found if v is None)
    return counts, nulls


def _store_sorted(ws: Workspace, values: np.ndarray) -> tuple[str, int]:
    ws.tmp_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".drift-", suffix=".npy", dir=ws.tmp_dir)
    os.close(fd)
    try:
        np.save(tmp, values, allow_pickle=False)
        found = artifact_store.put_file(ws, tmp, move=True)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return found.sha256, found.size_bytes


def _reference_from_relation(
    ws: Workspace, con: duckdb.DuckDBPyConnection, relation: str
) -> tuple[int, dict[str, ColumnReference], list[tuple[str, int]]]:
    types = _describe(con, relation)
    total = _row_count(con, relation)
    columns: dict[str, ColumnReference] = {}
    files: list[tuple[str, int]] = []
    for name, duck_type in types.items():
        storage = storage_of(duck_type)
        base = {"name": name, "duckdb_type": duck_type, "storage": storage}
        if storage in _NUMERIC:
            numbers = _finite_values(con, relation, name)
            values = numbers.values
            stats: dict[str, Any] = {"count": int(values.size), "distinct": 0,
                                     "nulls": numbers.nulls, "non_finite": numbers.non_finite}
            if values.size:
                sha, size = _store_sorted(ws, values)
                files.append((sha, size))
                stats.update(
                    distinct=ds.Sample(values=values).distinct(), std=float(np.std(values)),
                    mean=float(np.mean(values)), minimum=float(values[0]),
                    maximum=float(values[-1]), values_sha256=sha,
                    deciles=tuple(ds.decile_edges(values).tolist()),
                )
            columns[name] = ColumnReference(**base, **stats)
        elif storage in ("text", "boolean"):
            q = _quote(name)
            distinct, non_null = con.execute(
                f"SELECT count(DISTINCT {q}), count({q}) FROM {relation}").fetchall()[0]
            counts = None
            if distinct <= MAX_CATEGORIES:
                found, _ = _value_counts(con, relation, name)
                counts = tuple(sorted(found.items(), key=lambda kv: (-kv[1], str(kv[0]))))
            columns[name] = ColumnReference(
                **base, count=int(non_null), nulls=total - int(non_null), non_finite=0,
                distinct=int(distinct), counts=counts,
            )
        else:
            non_null = con.execute(f"SELECT count({_quote(name)}) FROM {relation}").fetchall()[0][0]
            columns[name] = ColumnReference(**base, count=int(non_null),
                                            nulls=total - int(non_null), non_finite=0, distinct=0)
    return total, columns, files


def _stats_from_row(row: Mapping[str, Any], *, computed_now: bool) -> ReferenceStats:
    stats = row["stats"]
    return ReferenceStats(
        content_sha256=row["content_sha256"],
        scope=row["scope"],
        dataset=row["dataset_name"],
        version=row["dataset_version"],
        row_count=row["row_count"],
        columns={name: ColumnReference.from_dict(c) for name, c in stats["columns"].items()},
        seconds=row["seconds"],
        computed_now=computed_now,
    )


def reference_statistics(
    ws: Workspace, dataset: str | datasets.DatasetVersion, *, actor: User
) -> ReferenceStats:
    """The stored statistics of a dataset version, computed and stored on first use.

    Later calls (any report using this version as its reference, or any other
    version with the same content) read them back without scanning the data.

    Args:
        dataset: "name" or "name:version", or a resolved version.
        actor: who is computing them (recorded).

    Raises:
        NotFound: no such dataset version, or its data file is missing.
        PermissionDenied: the actor may not monitor.
    """
    require(actor, "monitor")
    version = dataset if isinstance(dataset, datasets.DatasetVersion) else datasets.resolve(
        ws, dataset)
    with store.read(ws) as con:
        found = rows.get_reference_stats(con, version.content_sha256, COLUMNS_SCOPE)
    if found is not None:
        return _stats_from_row(found, computed_now=False)
    started = time.perf_counter()
    duck = _duck()
    try:
        relation = f"read_parquet({_literal(str(version.parquet_path(ws)))})"
        total, columns, files = _reference_from_relation(ws, duck, relation)
    finally:
        duck.close()
    seconds = time.perf_counter() - started
    stats = {"columns": {name: c.to_dict() for name, c in columns.items()}}
    _save_stats(ws, version, COLUMNS_SCOPE, total, stats, seconds, actor, files)
    return ReferenceStats(version.content_sha256, COLUMNS_SCOPE, version.name, version.version,
                          total, columns, seconds, True)


def _save_stats(
    ws: Workspace, version: datasets.DatasetVersion, scope: str, total: int,
    stats: dict[str, Any], seconds: float, actor: User, files: list[tuple[str, int]],
) -> None:
    def write() -> None:
        with store.transaction(ws) as con:
            rows.insert_reference_stats(
                con, content_sha256=version.content_sha256, scope=scope,
                dataset_name=version.name, dataset_version=version.version, row_count=total,
                stats=stats, seconds=seconds, created_by=actor.name, artifacts=files,
            )

    store.retry_on_conflict(write)


def _load_sorted(ws: Workspace, column: ColumnReference) -> np.ndarray:
    if column.values_sha256 is None:
        return np.zeros(0, dtype=np.float64)
    path = artifact_store.artifact_path(ws, column.values_sha256)
    if not path.exists():
        raise NotFound(
            f"the stored reference values of column {column.name!r} are missing from "
            f"{ws.artifacts_dir} (sha256 {column.values_sha256[:12]}…); run `pond doctor`"
        )
    # Memory-mapped: the OS pages the sorted values in as the test reads them.
    return np.load(path, mmap_mode="r", allow_pickle=False)


# --- the sides of a comparison ------------------------------------------------------------------


@dataclass(frozen=True)
class _Current:
    """The current side: a relation in an in-memory DuckDB connection."""

    con: duckdb.DuckDBPyConnection
    relation: str
    types: dict[str, str]
    rows: int


def _current_side(con: duckdb.DuckDBPyConnection, relation: str,
                  names: Sequence[str] | None = None) -> _Current:
    types = _describe(con, relation)
    if names is not None:
        types = {n: t for n, t in types.items() if n in set(names)}
    return _Current(con, relation, types, _row_count(con, relation))


def _frame_to_arrow(frame: pd.DataFrame) -> pa.Table:
    """The logged records as Arrow; a field logged with mixed types becomes text."""
    columns = {}
    for name in frame.columns:
        series = frame[name]
        try:
            columns[str(name)] = pa.array(series, from_pandas=True)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            columns[str(name)] = pa.array(
                [None if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)
                 for v in series], type=pa.string())
    return pa.table(columns)


# --- comparing one column -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Override:
    test: str | None
    threshold: float | None


def _parse_overrides(column_tests: Mapping[str, Any] | None) -> dict[str, _Override]:
    out: dict[str, _Override] = {}
    for column, spec in (column_tests or {}).items():
        if isinstance(spec, str):
            _, name, threshold = ds.parse_column_test(f"{column}={spec}")
            out[column] = _Override(name, threshold)
        elif isinstance(spec, Mapping):
            out[column] = _Override(spec.get("test"), spec.get("threshold"))
        elif isinstance(spec, Sequence) and len(spec) == 2:
            out[column] = _Override(spec[0], None if spec[1] is None else float(spec[1]))
        elif isinstance(spec, int | float):
            out[column] = _Override(None, float(spec))
        else:
            raise InvalidInput(
                f"the test for column {column!r} must be a test name, (name, threshold) or "
                f"{{'test': ..., 'threshold': ...}}. Got {spec!r} instead."
            )
        if out[column].test is not None:
            ds.get_test(out[column].test)
    return out


def _chart_numeric(ref: np.ndarray, cur: np.ndarray) -> dict[str, Any]:
    low, high = float(min(ref[0], cur[0])), float(max(ref[-1], cur[-1]))
    if low == high:
        low, high = low - 0.5, high + 0.5
    edges = np.linspace(low, high, HISTOGRAM_BINS + 1)
    return {
        "type": "histogram",
        "edges": edges.tolist(),
        "reference": (ds.histogram_counts(ref, edges) / ref.size).tolist(),
        "current": (ds.histogram_counts(cur, edges) / cur.size).tolist(),
    }


def _chart_categorical(reference: ds.Sample, current: ds.Sample) -> dict[str, Any]:
    keys, ref_counts, cur_counts = ds.aligned_counts(reference, current)
    ref_shares, cur_shares = ds.shares(ref_counts), ds.shares(cur_counts)
    order = np.argsort(-np.maximum(ref_shares, cur_shares), kind="stable")
    top = order[:TOP_CATEGORIES]
    rest = order[TOP_CATEGORIES:]
    labels = [_label(keys[i]) for i in top]
    ref_out, cur_out = ref_shares[top].tolist(), cur_shares[top].tolist()
    if rest.size:
        labels.append(f"(other {rest.size})")
        ref_out.append(float(ref_shares[rest].sum()))
        cur_out.append(float(cur_shares[rest].sum()))
    return {"type": "bars", "categories": labels, "reference": ref_out, "current": cur_out}


def _label(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _category_notes(reference: ds.Sample, current: ds.Sample) -> list[str]:
    ref, cur = reference.value_counts(), current.value_counts()
    notes = []
    only_current = [k for k in cur if k not in ref]
    if only_current:
        shown = ", ".join(repr(_label(k)) for k in sorted(only_current, key=str)[:5])
        more = f" and {len(only_current) - 5} more" if len(only_current) > 5 else ""
        notes.append(f"categories only in current data: {shown}{more} (counted 0 in reference)")
    only_ref = [k for k in ref if k not in cur]
    if only_ref and len(cur) > 0:
        notes.append(f"{len(only_ref)} reference categories do not occur in current data")
    return notes


def _ref_categorical(column: ColumnReference, *, as_text: bool) -> ds.Sample:
    counts = {(_label(v) if as_text else v): n for v, n in column.counts or ()}
    return ds.Sample.categorical(counts)


def compare_samples(
    name: str,
    storage: str,
    reference: ds.Sample,
    current: ds.Sample,
    *,
    override: _Override | None = None,
    reference_std: float | None = None,
    reference_deciles: Sequence[float] | None = None,
    notes: Sequence[str] = (),
    counts: tuple[int, int, int, int] = (0, 0, 0, 0),
) -> ColumnDrift:
    """Choose the test (Evidently's default unless overridden), run it with PSI, and
    describe the two distributions.

    Raises:
        InvalidInput: an overriding test that does not apply to the column's kind.
    """
    numeric_samples = reference.values is not None and current.values is not None
    distinct_current = current.distinct()
    distinct_all = ds.distinct_overall(reference, current)
    kind = ds.column_kind(storage, distinct_current, distinct_all) if numeric_samples \
        else ds.CATEGORICAL
    if override is not None and override.test is not None:
        test = ds.get_test(override.test, kind, name)
    else:
        test = ds.default_test(kind, reference.size, distinct_all)
    threshold = override.threshold if override is not None else None
    result = ds.run_test(test, reference, current, threshold, reference_std=reference_std,
                         psi_edges=reference_deciles, categorical=kind == ds.CATEGORICAL)
    if kind == ds.NUMERIC:
        distribution = _chart_numeric(reference.values, current.values)
        extra: list[str] = []
    else:
        distribution = _chart_categorical(reference, current)
        extra = _category_notes(reference, current)
    ref_missing, cur_missing, ref_non_finite, cur_non_finite = counts
    all_notes = [*notes, *extra]
    if ref_non_finite or cur_non_finite:
        all_notes.append(
            f"NaN/±inf dropped before the test: {ref_non_finite} in reference, "
            f"{cur_non_finite} in current"
        )
    return ColumnDrift(
        column=name, kind=kind, storage=storage, test=test.name, test_label=test.label,
        score=result.score, score_kind=test.score, threshold=result.threshold,
        drifted=result.drifted, psi=_finite_or_none(result.psi),
        psi_band=ds.psi_band(result.psi), reference_rows=reference.size,
        current_rows=current.size, reference_missing=ref_missing, current_missing=cur_missing,
        reference_non_finite=ref_non_finite, current_non_finite=cur_non_finite,
        overridden=override is not None, notes=tuple(all_notes), distribution=distribution,
    )


def _compare_column(
    ws: Workspace,
    name: str,
    ref: ColumnReference,
    cur: _Current,
    override: _Override | None,
    warnings: list[str],
) -> ColumnDrift | SkippedColumn:
    cur_type = cur.types[name]
    cur_storage = storage_of(cur_type)
    for storage, side in ((ref.storage, "reference"), (cur_storage, "current")):
        if storage == "datetime":
            return SkippedColumn(name, f"a date-time column in the {side} data; date-times are "
                                 "not tested for drift (as in Evidently)")
        if storage == "other":
            shown = ref.duckdb_type if side == "reference" else cur_type
            return SkippedColumn(name, f"its {side} type ({shown}) has no drift test")
    if ref.count == 0:
        return SkippedColumn(name, f"no values in the reference ({ref.nulls} nulls, "
                             f"{ref.non_finite} NaN/±inf)")
    notes: list[str] = []
    as_text_numbers = False
    if ref.storage in _NUMERIC and cur_storage not in _NUMERIC:
        q = _quote(name)
        bad = cur.con.execute(
            f"SELECT count(*) FILTER (WHERE {q} IS NOT NULL AND TRY_CAST({q} AS DOUBLE) IS NULL),"
            f" any_value({q}) FILTER (WHERE {q} IS NOT NULL AND TRY_CAST({q} AS DOUBLE) IS NULL)"
            f" FROM {cur.relation}"
        ).fetchall()[0]
        if bad[0]:
            message = (f"column {name!r} changed type: {ref.duckdb_type} in the reference, "
                       f"{cur_type} in the current data, where {bad[0]} values are not numbers "
                       f"(e.g. {_label(bad[1])!r}); not tested")
            warnings.append(message)
            return SkippedColumn(name, message)
        as_text_numbers = True
        notes.append(f"arrived as {cur_type} in the current data; its values were read as numbers")
    if ref.storage in _NUMERIC:
        numbers = _finite_values(cur.con, cur.relation, name, as_text=as_text_numbers)
        if numbers.values.size == 0:
            message = (f"column {name!r} has no values in the current data ({numbers.nulls} of "
                       f"{cur.rows} rows null, {numbers.non_finite} NaN/±inf); not tested")
            warnings.append(message)
            return SkippedColumn(name, message)
        storage = "float" if "float" in (ref.storage, cur_storage) else "integer"
        reference = ds.Sample.numeric(_load_sorted(ws, ref), presorted=True,
                                      distinct=ref.distinct)
        current = ds.Sample.numeric(numbers.values, presorted=True)
        return compare_samples(
            name, storage, reference, current, override=override, reference_std=ref.std,
            reference_deciles=ref.deciles, notes=notes,
            counts=(ref.nulls, numbers.nulls, ref.non_finite, numbers.non_finite),
        )
    # Text and boolean references: categories.
    if ref.counts is None or (ref.storage == "text" and ref.distinct > TEXT_MIN_DISTINCT
                              and ref.distinct > TEXT_DISTINCT_SHARE * ref.count):
        return SkippedColumn(
            name, f"{ref.distinct} distinct values in {ref.count} reference rows: an identifier "
            "or free text, which has no categories to compare")
    as_text = cur_storage != ref.storage
    if as_text:
        notes.append(f"{ref.duckdb_type} in the reference, {cur_type} in the current data: "
                     "compared as text")
    current_counts, cur_nulls = _value_counts(cur.con, cur.relation, name, as_text=as_text)
    if not current_counts:
        message = (f"column {name!r} has no values in the current data (all {cur.rows} rows "
                   "null); not tested")
        warnings.append(message)
        return SkippedColumn(name, message)
    return compare_samples(
        name, ref.storage, _ref_categorical(ref, as_text=as_text),
        ds.Sample.categorical(current_counts), override=override, notes=notes,
        counts=(ref.nulls, cur_nulls, 0, 0),
    )


def _compare_columns(
    ws: Workspace,
    names: Sequence[str],
    reference: ReferenceStats,
    cur: _Current,
    overrides: Mapping[str, _Override],
    warnings: list[str],
    skipped: list[SkippedColumn],
) -> list[ColumnDrift]:
    results: list[ColumnDrift] = []
    for name in names:
        ref = reference.columns.get(name)
        if ref is None:
            skipped.append(SkippedColumn(name, "missing in the reference data"))
            continue
        if name not in cur.types:
            skipped.append(SkippedColumn(name, "missing in the current data"))
            warnings.append(f"column {name!r} is missing in the current data")
            continue
        outcome = _compare_column(ws, name, ref, cur, overrides.get(name), warnings)
        if isinstance(outcome, SkippedColumn):
            skipped.append(outcome)
        else:
            results.append(outcome)
    return results


# --- models, logs and predictions -----------------------------------------------------------------


def _contract(ws: Workspace, version: registry.ModelVersion) -> model_contract.Contract | None:
    for f in version.files:
        if f.name == model_contract.CONTRACT_FILE:
            return model_contract.Contract.from_json(
                artifact_store.read_bytes(ws, f.sha256).decode("utf-8"))
    return None


def _training_dataset(ws: Workspace, version: registry.ModelVersion) -> datasets.DatasetVersion:
    lineage = version.dataset
    if not lineage or not lineage.get("name") or not lineage.get("version"):
        raise InvalidInput(
            f"model {version.ref} records no training dataset in its lineage; name the "
            "reference yourself (--reference DATASET[:VERSION])"
        )
    found = datasets.get_version(ws, lineage["name"], int(lineage["version"]))
    expected = lineage.get("content_sha256")
    if expected and expected != found.content_sha256:
        raise PondError(
            f"dataset {found.ref}, which model {version.ref} was trained on, no longer has the "
            "content recorded in the model's lineage; run `pond doctor`"
        )
    return found


def _logged_predictions(ws: Workspace, model: str, since: datetime | None) -> pd.DataFrame:
    """One row per logged record: request id, record position, time, version, prediction and
    class probabilities, from the responses in the inference log."""
    requests = inference_log.inference_rows(ws, model, since)
    out: dict[str, list[Any]] = {"_request_id": [], "_record": [], "_received_at": [],
                                 "_version": [], PREDICTION: [], "_probabilities": []}
    if requests.empty:
        return pd.DataFrame(out)
    ok = requests[(requests["status"] == 200) & requests["outputs"].notna()]
    for request_id, received_at, version, outputs in zip(
        ok["request_id"], ok["received_at"], ok["version"], ok["outputs"], strict=True
    ):
        body = orjson.loads(outputs)
        predictions = body.get("predictions") or []
        probabilities = body.get("probabilities") or [None] * len(predictions)
        for i, (value, proba) in enumerate(zip(predictions, probabilities, strict=False)):
            out["_request_id"].append(request_id)
            out["_record"].append(i)
            out["_received_at"].append(received_at)
            out["_version"].append(int(version))
            out[PREDICTION].append(value)
            out["_probabilities"].append(proba)
    return pd.DataFrame(out)


def _prediction_sample(values: Sequence[Any], task: str | None) -> tuple[str, ds.Sample]:
    if task == "regression":
        array = np.asarray([v for v in values if v is not None], dtype=np.float64)
        return "float", ds.Sample.numeric(array[np.isfinite(array)])
    counts: dict[Any, int] = {}
    for value in values:
        if value is not None:
            key = model_contract.json_label(value)
            counts[key] = counts.get(key, 0) + 1
    storage = "integer" if counts and all(isinstance(k, int) for k in counts) else "text"
    return storage, ds.Sample.categorical(counts)


def _model_predictions(
    ws: Workspace, version: registry.ModelVersion, data: datasets.DatasetVersion
) -> list[Any]:
    import pyarrow.parquet as pq

    loaded = model_contract.load_model(registry.version_files(ws, version.model, version.version))
    names = loaded.contract.feature_names
    missing = [n for n in names if n not in data.column_names]
    if missing:
        raise InvalidInput(
            f"dataset {data.ref} lacks the feature columns {', '.join(missing)} of model "
            f"{version.ref}, so the model's predictions on it cannot be compared"
        )
    values: list[Any] = []
    parquet = pq.ParquetFile(data.parquet_path(ws))
    for batch in parquet.iter_batches(batch_size=_PREDICT_BATCH, columns=names):
        values.extend(loaded.predict(batch.to_pandas()).values)
    return values


def prediction_statistics(
    ws: Workspace, version: registry.ModelVersion, data: datasets.DatasetVersion, *, actor: User
) -> tuple[str, ds.Sample]:
    """The model version's predictions on a dataset version, computed once and stored.

    Returns:
        (storage, sample): numbers for regression, label counts for classification.
    """
    scope = f"predictions:{version.model}:{version.version}"
    with store.read(ws) as con:
        found = rows.get_reference_stats(con, data.content_sha256, scope)
    if found is None:
        started = time.perf_counter()
        storage, sample = _prediction_sample(_model_predictions(ws, version, data), version.task)
        files: list[tuple[str, int]] = []
        column: dict[str, Any] = {"name": PREDICTION, "storage": storage, "count": sample.size}
        if sample.values is not None:
            if sample.size:
                sha, size = _store_sorted(ws, sample.values)
                files.append((sha, size))
                column["values_sha256"] = sha
            column["std"] = float(np.std(sample.values)) if sample.size else None
        else:
            column["counts"] = [[k, n] for k, n in sample.value_counts().items()]
        _save_stats(ws, data, scope, data.row_count, {"columns": {PREDICTION: column}},
                    time.perf_counter() - started, actor, files)
        return storage, sample
    column = found["stats"]["columns"][PREDICTION]
    if column.get("counts") is not None:
        return column["storage"], ds.Sample.categorical({k: n for k, n in column["counts"]})
    ref = ColumnReference(PREDICTION, "DOUBLE", column["storage"], column["count"], 0, 0, 0,
                          std=column.get("std"), values_sha256=column.get("values_sha256"))
    return column["storage"], ds.Sample(values=_load_sorted(ws, ref))


def _prediction_drift(
    ws: Workspace,
    version: registry.ModelVersion,
    reference: datasets.DatasetVersion,
    current_values: Sequence[Any] | None,
    current_dataset: datasets.DatasetVersion | None,
    override: _Override | None,
    actor: User,
    warnings: list[str],
) -> ColumnDrift | None:
    if version.flavor != "lightgbm":
        warnings.append(f"prediction drift needs a tabular (LightGBM) model; {version.ref} is "
                        f"{version.flavor}")
        return None
    try:
        storage, ref_sample = prediction_statistics(ws, version, reference, actor=actor)
        if current_dataset is not None:
            _, cur_sample = prediction_statistics(ws, version, current_dataset, actor=actor)
        else:
            _, cur_sample = _prediction_sample(current_values or [], version.task)
    except InvalidInput as exc:
        warnings.append(f"prediction drift not computed: {exc}")
        return None
    if ref_sample.size == 0 or cur_sample.size == 0:
        warnings.append("prediction drift not computed: no predictions on one side")
        return None
    return compare_samples(
        PREDICTION, storage, ref_sample, cur_sample, override=override,
        reference_std=float(np.std(ref_sample.values)) if ref_sample.values is not None else None,
        notes=[f"predictions of {version.ref} on {reference.ref} vs the current predictions"],
    )


# --- the report --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Plan:
    version: registry.ModelVersion | None
    contract: model_contract.Contract | None
    reference: datasets.DatasetVersion
    current: datasets.DatasetVersion | None
    window: str | None
    window_start: datetime | None
    window_end: datetime | None


def _plan(
    ws: Workspace, reference: str | None, current: str | None, model: str | None,
    window: str | None,
) -> _Plan:
    version = registry.resolve(ws, model) if model else None
    if version is None and (reference is None or current is None):
        raise InvalidInput(
            "name a model (--model NAME) to compare its training data with its logged "
            "inferences, or both --reference DATASET[:VERSION] and --current DATASET[:VERSION]"
        )
    if window is not None and current is not None:
        raise InvalidInput("a window applies to a model's logged inferences, not to a dataset; "
                           "leave out --window or --current")
    span = parse_window(window)
    ref = datasets.resolve(ws, reference) if reference else _training_dataset(ws, version)
    cur = datasets.resolve(ws, current) if current else None
    end = datetime.now(UTC) if cur is None else None
    start = end - span if (end is not None and span is not None) else None
    contract = _contract(ws, version) if version is not None else None
    return _Plan(version, contract, ref, cur, window, start, end)


def _no_rows_message(ws: Workspace, model: str, plan: _Plan) -> str:
    everything = inference_log.inference_rows(ws, model)
    if everything.empty:
        return (f"model '{model}' has no logged inferences yet; serve it (`pond serve`) and "
                "send requests, or compare datasets with --reference and --current")
    latest = pd.Timestamp(everything["received_at"].max()).isoformat()
    return (f"model '{model}' has no successfully answered requests in the last {plan.window} "
            f"(the latest logged request is from {latest}); widen --window")


def drift_report(
    ws: Workspace,
    *,
    reference: str | None = None,
    current: str | None = None,
    model: str | None = None,
    window: str | None = None,
    actor: User,
    column_tests: Mapping[str, Any] | None = None,
    columns: Sequence[str] | None = None,
    drift_share: float = ds.DEFAULT_DRIFT_SHARE,
) -> DriftReport:
    """Compare current data with a reference, store the report, and fire alerts.

    Args:
        reference: "DATASET[:VERSION]"; default: the model's training dataset version.
        current: "DATASET[:VERSION]"; default: the model's logged inferences in the window.
        model: "NAME", "NAME:VERSION" or "NAME@ALIAS": its features are the compared
            columns, its predictions are compared too, and its alert policy applies.
        window: with logged inferences, only the last "30m", "12h", "1d", "7d", "2w"…
            (default: the whole log).
        actor: who asks (needs the monitor right).
        column_tests: per column, another test or threshold: {"age": "psi"},
            {"age": ("ks", 0.01)}, {"city": {"threshold": 0.2}}; "prediction" names the
            model's predictions.
        columns: compare only these columns (default: the model's features, else every
            column of the reference).
        drift_share: dataset drift when at least this share of columns drifted.

    Returns:
        The stored report.

    Raises:
        InvalidInput: missing or contradictory inputs, a bad window or test, no logged rows
            in the window, or no column that could be compared.
        NotFound: an unknown model or dataset.
        PermissionDenied: the actor may not monitor.
    """
    require(actor, "monitor")
    share_limit = _check_share("drift_share", drift_share)
    assert share_limit is not None
    overrides = _parse_overrides(column_tests)
    started = time.perf_counter()
    plan = _plan(ws, reference, current, model, window)
    version = plan.version
    ref_stats = reference_statistics(ws, plan.reference, actor=actor)
    if columns is not None:
        names = list(dict.fromkeys(columns))
    elif plan.contract is not None:
        names = plan.contract.feature_names
    else:
        names = list(ref_stats.columns)
    unknown = [c for c in overrides if c not in names and c != PREDICTION]
    if unknown:
        raise InvalidInput(
            f"column_tests names {', '.join(map(repr, unknown))}, which the report does not "
            f"compare; compared columns: {', '.join(names)}"
        )
    warnings: list[str] = []
    skipped: list[SkippedColumn] = []
    logged: list[Any] | None = None
    duck = _duck()
    try:
        if plan.current is not None:
            relation = f"read_parquet({_literal(str(plan.current.parquet_path(ws)))})"
            cur_names = None if columns is None and plan.contract is None else names
            if cur_names is None:
                extra = [c for c in plan.current.column_names if c not in ref_stats.columns]
                for c in extra:
                    skipped.append(SkippedColumn(c, "missing in the reference data"))
            cur = _current_side(duck, relation, cur_names)
            current_label = plan.current.ref
        else:
            assert version is not None
            frame = inference_log.inference_inputs(ws, version.model, plan.window_start)
            if frame.empty:
                raise InvalidInput(_no_rows_message(ws, version.model, plan))
            duck.register("logged_inputs", _frame_to_arrow(frame))
            del frame
            cur = _current_side(duck, "logged_inputs",
                                [n for n in names if not n.startswith("_")])
            current_label = f"inference log of {version.model}"
            predictions = _logged_predictions(ws, version.model, plan.window_start)
            same = predictions[predictions["_version"] == version.version]
            if len(same) < len(predictions):
                warnings.append(
                    f"{len(predictions) - len(same)} logged predictions came from other versions "
                    f"of {version.model} and are left out of prediction drift"
                )
            logged = same[PREDICTION].tolist()
        if cur.rows == 0:
            raise InvalidInput(f"the current data ({current_label}) has no rows")
        results = _compare_columns(ws, names, ref_stats, cur, overrides, warnings, skipped)
    finally:
        duck.close()
    if not results:
        reasons = "; ".join(f"{s.column}: {s.reason}" for s in skipped) or "no columns"
        raise InvalidInput(f"no column could be compared ({reasons})")
    prediction = None
    if version is not None:
        prediction = _prediction_drift(ws, version, plan.reference, logged, plan.current,
                                       overrides.get(PREDICTION), actor, warnings)
    drifted = sum(1 for r in results if r.drifted)
    share = drifted / len(results)
    report = DriftReport(
        id=0, model=version.model if version else None,
        model_version=version.version if version else None, reference=plan.reference.ref,
        reference_sha256=plan.reference.content_sha256, current=current_label,
        current_kind="dataset" if plan.current is not None else "inference_log",
        current_sha256=plan.current.content_sha256 if plan.current is not None else None,
        window=plan.window, window_start=plan.window_start, window_end=plan.window_end,
        reference_rows=ref_stats.row_count, current_rows=cur.rows, columns=tuple(results),
        skipped=tuple(skipped), drifted_share=share, drift_share_threshold=share_limit,
        dataset_drift=share >= share_limit, prediction=prediction, warnings=tuple(warnings),
        alerts=(), seconds=0.0, created_by=actor.name, created_at=datetime.now(UTC),
    )
    return _store_report(ws, report, plan, actor, time.perf_counter() - started)


def _results_json(report: DriftReport) -> dict[str, Any]:
    return {
        "columns": [c.to_dict() for c in report.columns],
        "skipped": [s.__dict__ for s in report.skipped],
        "prediction": None if report.prediction is None else report.prediction.to_dict(),
        "warnings": list(report.warnings),
        "current": report.current,
        "alerts": list(report.alerts),
    }


def _store_report(
    ws: Workspace, report: DriftReport, plan: _Plan, actor: User, seconds: float
) -> DriftReport:
    policy = get_policy(ws, report.model) if report.model else None
    firings = _drift_firings(policy, report) if policy is not None and policy.enabled else []
    row = {
        "model_name": report.model, "model_version": report.model_version,
        "reference_name": plan.reference.name, "reference_version": plan.reference.version,
        "reference_sha256": report.reference_sha256, "current_kind": report.current_kind,
        "current_name": plan.current.name if plan.current else None,
        "current_version": plan.current.version if plan.current else None,
        "current_sha256": report.current_sha256, "window_spec": report.window,
        "window_start": report.window_start, "window_end": report.window_end,
        "reference_rows": report.reference_rows, "current_rows": report.current_rows,
        "columns_tested": len(report.columns), "columns_drifted": len(report.drifted_columns),
        "drifted_share": report.drifted_share,
        "drift_share_threshold": report.drift_share_threshold,
        "dataset_drift": report.dataset_drift, "results": _results_json(report),
        "seconds": seconds, "created_by": actor.name,
    }

    def write() -> tuple[int, datetime, list[int], list[Any], list[Any]]:
        with store.transaction(ws) as con:
            report_id = rows.insert_report(con, row)
            store.append_audit(
                con, actor=actor.name, action="drift_report_created", entity_type="drift_report",
                entity_id=str(report_id),
                details={"model": report.model_ref, "reference": report.reference,
                         "current": report.current, "drifted_share": report.drifted_share,
                         "dataset_drift": report.dataset_drift},
            )
            ids, own, registry_hooks = _fire(con, firings, report_id, actor, policy)
            stored = rows.get_report(con, report_id)
        assert stored is not None
        return report_id, stored["created_at"], ids, own, registry_hooks

    report_id, created_at, alert_ids, own, registry_hooks = store.retry_on_conflict(write)
    _dispatch(ws, own, registry_hooks)
    return replace(report, id=report_id, created_at=created_at, alerts=tuple(alert_ids),
                   seconds=seconds)


def _report_from_row(row: Mapping[str, Any]) -> DriftReport:
    results = row["results"]
    prediction = results.get("prediction")
    reference = f"{row['reference_name']}:{row['reference_version']}"
    return DriftReport(
        id=row["id"], model=row["model_name"], model_version=row["model_version"],
        reference=reference, reference_sha256=row["reference_sha256"],
        current=results.get("current") or (f"{row['current_name']}:{row['current_version']}"),
        current_kind=row["current_kind"], current_sha256=row["current_sha256"],
        window=row["window_spec"], window_start=row["window_start"], window_end=row["window_end"],
        reference_rows=row["reference_rows"], current_rows=row["current_rows"],
        columns=tuple(ColumnDrift.from_dict(c) for c in results["columns"]),
        skipped=tuple(SkippedColumn(**s) for s in results["skipped"]),
        drifted_share=row["drifted_share"], drift_share_threshold=row["drift_share_threshold"],
        dataset_drift=row["dataset_drift"],
        prediction=None if prediction is None else ColumnDrift.from_dict(prediction),
        warnings=tuple(results.get("warnings") or ()), alerts=tuple(results.get("alerts") or ()),
        seconds=row["seconds"], created_by=row["created_by"], created_at=row["created_at"],
    )


def get_report(ws: Workspace, report_id: int) -> DriftReport:
    """A stored report with every column's result.

    Raises:
        NotFound: no report has that id.
    """
    with store.read(ws) as con:
        row = rows.get_report(con, int(report_id))
        fired = rows.list_alerts(con, model=None, open_only=False, limit=1000,
                                 report_id=int(report_id))
    if row is None:
        raise NotFound(f"there is no drift report #{report_id}; `pond drift reports` lists them")
    return replace(_report_from_row(row), alerts=tuple(sorted(a["id"] for a in fired)))


def list_reports(
    ws: Workspace, model: str | None = None, *, limit: int = 50, offset: int = 0
) -> list[ReportSummary]:
    """Stored reports, newest first (of one model when `model` is given).

    Raises:
        InvalidInput: a limit outside 1–1000 or a negative offset.
    """
    if not 1 <= int(limit) <= 1000 or int(offset) < 0:
        raise InvalidInput(f"The 'limit' parameter must be in 1–1000 and 'offset' ≥ 0. Got "
                           f"{limit} and {offset} instead.")
    with store.read(ws) as con:
        found = rows.list_reports(con, model=model, limit=int(limit), offset=int(offset))
    out = []
    for r in found:
        if r["current_kind"] == "dataset":
            current_label = f"{r['current_name']}:{r['current_version']}"
        else:
            current_label = f"inference log of {r['model_name']}"
        out.append(ReportSummary(
            id=r["id"], model=r["model_name"], model_version=r["model_version"],
            reference=f"{r['reference_name']}:{r['reference_version']}", current=current_label,
            window=r["window_spec"], current_rows=r["current_rows"],
            columns_tested=r["columns_tested"], columns_drifted=r["columns_drifted"],
            drifted_share=r["drifted_share"], dataset_drift=r["dataset_drift"],
            created_by=r["created_by"], created_at=r["created_at"],
        ))
    return out


# --- over time -----------------------------------------------------------------------------------


def drift_over_time(
    ws: Workspace,
    model: str,
    freq: str = "day",
    *,
    reference: str | None = None,
    window: str | None = None,
    actor: User | None = None,
    column_tests: Mapping[str, Any] | None = None,
    drift_share: float = ds.DEFAULT_DRIFT_SHARE,
) -> DriftTimeline:
    """The main drift scores of a model's logged inputs per day (or week, or hour), each
    period compared with the reference, so a slow shift shows as a trend.

    Args:
        model: "NAME", "NAME:VERSION" or "NAME@ALIAS".
        freq: "day", "week" or "hour".
        reference: default: the model's training dataset version.
        window: only the last "7d", "4w"… of the log (default: all of it).
        actor: who asks; reference statistics computed on the way are recorded as theirs
            (as Pond's own, `system`, when None).

    Returns:
        One point per period that has logged rows, oldest first (not stored).

    Raises:
        InvalidInput: a bad freq or window, or nothing logged.
        PermissionDenied: the actor may not monitor.
    """
    if actor is None:
        actor = SYSTEM
    require(actor, "monitor")
    _check_freq(freq)
    share_limit = _check_share("drift_share", drift_share)
    assert share_limit is not None
    overrides = _parse_overrides(column_tests)
    plan = _plan(ws, reference, None, model, window)
    version = plan.version
    assert version is not None
    ref_stats = reference_statistics(ws, plan.reference, actor=actor)
    names = plan.contract.feature_names if plan.contract is not None else list(ref_stats.columns)
    frame = inference_log.inference_inputs(ws, version.model, plan.window_start)
    if frame.empty:
        raise InvalidInput(_no_rows_message(ws, version.model, plan))
    predictions = _logged_predictions(ws, version.model, plan.window_start)
    predictions = predictions[predictions["_version"] == version.version]
    points: list[TimelinePoint] = []
    skipped_all: dict[str, SkippedColumn] = {}
    duck = _duck()
    try:
        duck.register("logged_all", _frame_to_arrow(frame))
        del frame
        duck.execute(
            "CREATE TEMP TABLE logged AS SELECT *, date_trunc("
            f"{_literal(freq)}, CAST(_received_at AS TIMESTAMPTZ)) AS _period FROM logged_all"
        )
        periods = [r[0] for r in duck.execute(
            "SELECT DISTINCT _period FROM logged ORDER BY 1").fetchall()]
        for period in periods:
            stamp = pd.Timestamp(period)
            duck.execute(
                "CREATE OR REPLACE TEMP VIEW logged_period AS SELECT * FROM logged WHERE _period"
                f" = CAST({_literal(stamp.isoformat())} AS TIMESTAMPTZ)"
            )
            cur = _current_side(duck, "logged_period", [n for n in names if not n.startswith("_")])
            skipped: list[SkippedColumn] = []
            results = _compare_columns(ws, names, ref_stats, cur, overrides, [], skipped)
            for s in skipped:
                skipped_all.setdefault(s.column, s)
            pred_score = None
            if not predictions.empty and version.flavor == "lightgbm":
                in_period = predictions[_period_of(predictions["_received_at"], freq) == stamp]
                if len(in_period):
                    pred = _prediction_drift(ws, version, plan.reference,
                                             in_period[PREDICTION].tolist(), None,
                                             overrides.get(PREDICTION), actor, [])
                    pred_score = None if pred is None else pred.score
            drifted = sum(1 for r in results if r.drifted)
            points.append(TimelinePoint(
                start=stamp.to_pydatetime(), rows=cur.rows, columns_tested=len(results),
                columns_drifted=drifted,
                drifted_share=drifted / len(results) if results else None,
                scores={r.column: r.score for r in results},
                drifted={r.column: r.drifted for r in results},
                tests={r.column: r.test for r in results}, prediction_score=pred_score,
            ))
    finally:
        duck.close()
    return DriftTimeline(version.model, version.version, plan.reference.ref, freq, share_limit,
                         tuple(points), tuple(skipped_all.values()))


def _period_of(times: pd.Series, freq: str) -> pd.Series:
    stamps = pd.to_datetime(times, utc=True)
    if freq == "week":
        # Weeks start on Monday, as DuckDB's date_trunc('week') has them.
        return stamps.dt.floor("D") - pd.to_timedelta(stamps.dt.weekday, unit="D")
    return stamps.dt.floor({"day": "D", "hour": "h"}[freq])


# --- performance when labels arrive later -----------------------------------------------------------


def performance_over_time(
    ws: Workspace,
    model: str,
    labels: str,
    *,
    key: str = "request_id",
    label_column: str | None = None,
    freq: str = "day",
    window: str | None = None,
    actor: User | None = None,
) -> PerformanceTimeline:
    """The model's quality per period, joining logged predictions with labels that
    arrived later as a dataset.

    Args:
        labels: "DATASET[:VERSION]" holding the true values.
        key: "request_id" (the labels carry the `request_id` the server returned, plus a
            `record` column, 0-based, when requests held several records), or the name of
            a column present both in the logged records and in the labels.
        label_column: the column of true values (default: the model's target).
        freq: "day", "week" or "hour".
        window: only the last "7d"… of the log.
        actor: when given, the model's metric alert policy is checked on the latest period
            and an alert is fired (and stored) when it is breached.

    Returns:
        Metrics per period with matched rows, oldest first.

    Raises:
        InvalidInput: a bad key or label column, or no logged prediction matched a label.
        NotFound: an unknown model or dataset.
    """
    _check_freq(freq)
    if actor is not None:
        require(actor, "monitor")
    version = registry.resolve(ws, model)
    contract = _contract(ws, version)
    if contract is None or version.task not in metric_registry.TASKS:
        raise InvalidInput(f"model {version.ref} is not a tabular model with a task; "
                           "performance over time needs one")
    target = label_column or contract.target
    truth = datasets.resolve(ws, labels)
    if target not in truth.column_names:
        raise InvalidInput(f"dataset {truth.ref} has no column {target!r} with the true values; "
                           "name it with --label-column")
    span = parse_window(window)
    since = datetime.now(UTC) - span if span is not None else None
    logged = _logged_predictions(ws, version.model, since)
    logged = logged[logged["_version"] == version.version]
    if logged.empty:
        raise InvalidInput(f"model {version.ref} has no logged predictions"
                           + (f" in the last {window}" if window else ""))
    duck = _duck()
    try:
        parquet = f"read_parquet({_literal(str(truth.parquet_path(ws)))})"
        truth_types = _describe(duck, parquet)
        if key == "request_id":
            if "request_id" not in truth_types:
                raise InvalidInput(f"dataset {truth.ref} has no request_id column to join on; "
                                   "pass --key COLUMN to join on a column of the records")
            frame = logged[["_request_id", "_record", "_received_at", PREDICTION,
                            "_probabilities"]].rename(columns={"_request_id": "_key"})
            on = "l._key = CAST(t.request_id AS VARCHAR)"
            if "record" in truth_types:
                on += " AND l._record = t.record"
            elif (frame.groupby("_key")["_record"].max() > 0).any():
                raise InvalidInput(
                    f"some logged requests to {version.model} held several records; add a 0-based "
                    f"`record` column to {truth.ref}, or join on a key column (--key COLUMN)"
                )
        else:
            if key not in truth_types:
                raise InvalidInput(f"dataset {truth.ref} has no column {key!r} to join on")
            inputs = inference_log.inference_inputs(ws, version.model, since,
                                                    version=version.version)
            if key not in inputs.columns:
                raise InvalidInput(f"the logged records of {version.model} have no field {key!r} "
                                   "to join on")
            inputs = inputs.assign(_record=inputs.groupby("_request_id").cumcount())
            frame = logged.merge(
                inputs[["_request_id", "_record", key]], on=["_request_id", "_record"]
            )[[key, "_received_at", PREDICTION, "_probabilities"]].rename(columns={key: "_key"})
            frame["_key"] = frame["_key"].astype(str)
            on = "l._key = CAST(t." + _quote(key) + " AS VARCHAR)"
        frame = frame.reset_index(drop=True)
        duck.register("logged_rows", pa.table({
            "_row": np.arange(len(frame), dtype=np.int64),
            "_key": frame["_key"].astype(str).tolist(),
            "_record": (frame["_record"] if "_record" in frame else pd.Series(
                np.zeros(len(frame), dtype=np.int64))).astype("int64").tolist(),
        }))
        matched = duck.execute(
            f"SELECT l._row, t.{_quote(target)} FROM logged_rows l JOIN {parquet} t ON {on}"
            f" WHERE t.{_quote(target)} IS NOT NULL ORDER BY l._row"
        ).fetchall()
    finally:
        duck.close()
    if not matched:
        raise InvalidInput(f"no logged prediction of {version.ref} matched a label in "
                           f"{truth.ref} on {key!r}")
    index = np.asarray([m[0] for m in matched], dtype=np.int64)
    truths = [m[1] for m in matched]
    sub = frame.iloc[index]
    periods = _period_of(sub["_received_at"], freq).to_numpy()
    task = str(version.task)
    main = metric_registry.default_metric(task).name
    points = []
    for period in sorted(set(periods)):
        mask = periods == period
        y_true, y_score = _metric_inputs(task, contract, [t for t, m in zip(truths, mask,
                                         strict=True) if m], sub[mask])
        if y_true.size == 0:
            continue
        with np.errstate(all="ignore"):
            values = {s.name: _finite_or_none(s(y_true, y_score))
                      for s in metric_registry.metrics_for(task)}
        points.append(PerformancePoint(pd.Timestamp(period).to_pydatetime(), int(y_true.size),
                                       values))
    timeline = PerformanceTimeline(
        model=version.model, model_version=version.version, task=task, labels=truth.ref,
        key=key, freq=freq, main_metric=main, points=tuple(points),
        matched_rows=len(matched), logged_rows=len(logged),
    )
    if actor is not None and points:
        ids = _check_metric_policy(ws, timeline, actor)
        timeline = replace(timeline, alerts=tuple(ids))
    return timeline


def _metric_inputs(
    task: str, contract: model_contract.Contract, truths: list[Any], sub: pd.DataFrame
) -> tuple[np.ndarray, np.ndarray]:
    if task == "regression":
        y = np.asarray(truths, dtype=np.float64)
        pred = np.asarray(sub[PREDICTION].tolist(), dtype=np.float64)
        keep = np.isfinite(y) & np.isfinite(pred)
        return y[keep], pred[keep]
    classes = [model_contract.level_key(c) for c in contract.classes or ()]
    position = {c: i for i, c in enumerate(classes)}
    y_list, proba_list = [], []
    for truth, proba in zip(truths, sub["_probabilities"], strict=True):
        index = position.get(model_contract.level_key(truth))
        if index is None or proba is None:
            continue
        y_list.append(index)
        proba_list.append(proba)
    if not y_list:
        return np.zeros(0, dtype=np.int64), np.zeros((0, len(classes)))
    return np.asarray(y_list, dtype=np.int64), np.asarray(proba_list, dtype=np.float64)


# --- alert policies and alerts -----------------------------------------------------------------------


def _check_url(url: str) -> str:
    parsed = urllib.parse.urlparse(url or "")
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise InvalidInput(f"webhook URL {url!r} must be an http:// or https:// URL with a host")
    return url


def _policy(row: Mapping[str, Any]) -> AlertPolicy:
    secret = row["webhook_secret"]
    return AlertPolicy(
        model=row["model_name"], max_drift_share=row["max_drift_share"],
        watched_columns=tuple(row["watched_columns"] or ()), metric=row["metric"],
        metric_limit=row["metric_limit"], webhook_url=row["webhook_url"],
        secret_hint=("…" + secret[-4:]) if secret else None, enabled=row["enabled"],
        updated_by=row["updated_by"], updated_at=row["updated_at"],
    )


def set_policy(
    ws: Workspace,
    model: str,
    *,
    actor: User,
    max_drift_share: float | None = None,
    watched_columns: Iterable[str] = (),
    metric: str | None = None,
    metric_limit: float | None = None,
    webhook_url: str | None = None,
    webhook_secret: str | None = None,
    enabled: bool = True,
) -> AlertPolicy:
    """Set (or replace) a model's alert policy.

    Args:
        model: the registered model's name.
        max_drift_share: alert when a drift report's drifted share is at or above it.
        watched_columns: alert when any of these columns drifted.
        metric, metric_limit: alert when performance over time shows the metric worse than
            the limit (below for accuracy/roc_auc/r2…, above for rmse/mae/log_loss).
        webhook_url: POST every alert here as JSON with a Slack-compatible `text` field.
        webhook_secret: signs the body (`X-Pond-Signature-256`), as registry webhooks do.
        enabled: False keeps the policy but stops it firing.

    Returns:
        The stored policy.

    Raises:
        InvalidInput: no condition, a share outside (0, 1], an unknown column or metric, a
            metric without a limit, or a bad URL.
        NotFound: no such model. PermissionDenied: the actor may not monitor.
    """
    require(actor, "monitor")
    name, _ = registry.parse_ref(model)
    detail = registry.get_model(ws, name)
    share = _check_share("max_drift_share", max_drift_share)
    columns = tuple(dict.fromkeys(c.strip() for c in watched_columns if c and c.strip()))
    if (metric is None) != (metric_limit is None):
        raise InvalidInput("a metric alert needs both a metric and a limit (e.g. accuracy 0.8)")
    newest = detail.versions[0] if detail.versions else None
    if metric is not None:
        task = newest.task if newest is not None else None
        if task not in metric_registry.TASKS:
            raise InvalidInput(f"model '{name}' has no tabular task, so it has no metric to watch")
        metric = metric_registry.get_metric(metric, task).name
        if not isinstance(metric_limit, int | float) or not math.isfinite(metric_limit):
            raise InvalidInput(f"The 'metric_limit' parameter must be a number. Got "
                               f"{metric_limit!r} instead.")
    if columns and newest is not None:
        contract = _contract(ws, newest)
        known = set(contract.feature_names) | {PREDICTION} if contract is not None else None
        unknown = [c for c in columns if known is not None and c not in known]
        if unknown:
            raise InvalidInput(
                f"model '{name}' has no feature {', '.join(map(repr, unknown))}; its features "
                f"are {', '.join(sorted(known or ()))}"
            )
    if share is None and not columns and metric is None:
        raise InvalidInput("an alert policy needs a condition: a drift share, a watched column "
                           "or a metric limit")
    if webhook_url:
        _check_url(webhook_url)
    row = {
        "model_name": name, "max_drift_share": share, "watched_columns": list(columns),
        "metric": metric, "metric_limit": None if metric_limit is None else float(metric_limit),
        "webhook_url": webhook_url or None, "webhook_secret": webhook_secret or None,
        "enabled": bool(enabled), "updated_by": actor.name,
    }

    def write() -> dict[str, Any] | None:
        with store.transaction(ws) as con:
            rows.upsert_policy(con, row)
            store.append_audit(
                con, actor=actor.name, action="alert_policy_set", entity_type="model",
                entity_id=name, to_state="enabled" if enabled else "disabled",
                details={k: v for k, v in row.items() if k != "webhook_secret"},
            )
            return rows.get_policy(con, name)

    stored = store.retry_on_conflict(write)
    assert stored is not None
    return _policy(stored)


def get_policy(ws: Workspace, model: str) -> AlertPolicy | None:
    """A model's alert policy, or None."""
    with store.read(ws) as con:
        found = rows.get_policy(con, model)
    return None if found is None else _policy(found)


def list_policies(ws: Workspace) -> list[AlertPolicy]:
    """Every model's alert policy, by model name."""
    with store.read(ws) as con:
        return [_policy(r) for r in rows.list_policies(con)]


@dataclass(frozen=True)
class _Firing:
    model: str
    model_version: int | None
    condition: str
    message: str
    details: dict[str, Any]


def _drift_firings(policy: AlertPolicy, report: DriftReport) -> list[_Firing]:
    out = []
    assert report.model is not None
    if (policy.max_drift_share is not None and report.drifted_share is not None
            and report.drifted_share >= policy.max_drift_share):
        out.append(_Firing(
            report.model, report.model_version, "drift_share",
            f"{len(report.drifted_columns)} of {len(report.columns)} columns of "
            f"{report.model_ref} drifted ({report.drifted_share:.0%} ≥ "
            f"{policy.max_drift_share:.0%}) in {report.current}"
            + (f", last {report.window}" if report.window else ""),
            {"drifted_share": report.drifted_share, "limit": policy.max_drift_share,
             "drifted_columns": report.drifted_columns},
        ))
    results = {c.column: c for c in report.columns}
    if report.prediction is not None:
        results[PREDICTION] = report.prediction
    hit = [c for c in policy.watched_columns if c in results and results[c].drifted]
    if hit:
        scores = {c: results[c].score for c in hit}
        out.append(_Firing(
            report.model, report.model_version, "column_drift",
            f"watched column{'s' if len(hit) > 1 else ''} {', '.join(hit)} of "
            f"{report.model_ref} drifted in {report.current}"
            + (f", last {report.window}" if report.window else ""),
            {"columns": hit, "scores": scores,
             "tests": {c: results[c].test for c in hit}},
        ))
    return out


def _slack_text(alert_id: int, firing: _Firing, report_id: int | None) -> str:
    where = f" (drift report #{report_id})" if report_id else ""
    return f":rotating_light: Pond alert #{alert_id} on model {firing.model}: {firing.message}{where}"


def _fire(
    con: duckdb.DuckDBPyConnection, firings: Sequence[_Firing], report_id: int | None,
    actor: User, policy: AlertPolicy | None,
) -> tuple[list[int], list[webhooks.PendingDelivery], list[webhooks.PendingDelivery]]:
    """Store firings and their pending deliveries inside the caller's transaction."""
    ids: list[int] = []
    own: list[webhooks.PendingDelivery] = []
    registry_hooks: list[webhooks.PendingDelivery] = []
    secret = ""
    if policy is not None and policy.webhook_url:
        stored = rows.get_policy(con, policy.model)
        secret = (stored or {}).get("webhook_secret") or ""
    for firing in firings:
        alert_id = rows.insert_alert(con, {
            "model_name": firing.model, "model_version": firing.model_version,
            "condition": firing.condition, "message": firing.message, "details": firing.details,
            "report_id": report_id, "fired_by": actor.name,
        })
        ids.append(alert_id)
        store.append_audit(
            con, actor=actor.name, action="alert_fired", entity_type="drift_alert",
            entity_id=str(alert_id), to_state="open",
            details={"model": firing.model, "condition": firing.condition,
                     "report_id": report_id},
        )
        payload = {
            "text": _slack_text(alert_id, firing, report_id),
            "event": webhooks.WebhookEvent.DRIFT_ALERT.value,
            "alert": {"id": alert_id, "model": firing.model, "version": firing.model_version,
                      "condition": firing.condition, "message": firing.message,
                      "details": firing.details, "report_id": report_id},
        }
        if policy is not None and policy.webhook_url:
            delivery_id = rows.insert_delivery(con, alert_id, policy.webhook_url, payload)
            own.append(webhooks.PendingDelivery(
                delivery_id, alert_id, policy.webhook_url, secret,
                webhooks.WebhookEvent.DRIFT_ALERT.value, {**payload, "delivery_id": delivery_id},
            ))
        registry_hooks += webhooks.enqueue(con, webhooks.WebhookEvent.DRIFT_ALERT, payload)
    return ids, own, registry_hooks


def _settle_alert_delivery(
    con: duckdb.DuckDBPyConnection, delivery_id: int, outcome: webhooks.DeliveryOutcome,
    attempts: int, status: int | None, error: str | None,
) -> None:
    rows.settle_delivery(con, delivery_id, outcome=outcome.value, attempts=attempts,
                         response_status=status, error=error)


def _dispatch(ws: Workspace, own: list[webhooks.PendingDelivery],
              registry_hooks: list[webhooks.PendingDelivery]) -> None:
    if own:
        webhooks.dispatch(ws, own, settle=_settle_alert_delivery)
    if registry_hooks:
        webhooks.dispatch(ws, registry_hooks)


def _check_metric_policy(ws: Workspace, timeline: PerformanceTimeline, actor: User) -> list[int]:
    policy = get_policy(ws, timeline.model)
    if policy is None or not policy.enabled or policy.metric is None or not timeline.points:
        return []
    latest = timeline.points[-1]
    value = latest.metrics.get(policy.metric)
    spec = metric_registry.METRICS[policy.metric]
    limit = float(policy.metric_limit or 0.0)
    if value is None or not (value < limit if spec.higher_is_better else value > limit):
        return []
    word = "below" if spec.higher_is_better else "above"
    firing = _Firing(
        timeline.model, timeline.model_version, "metric",
        f"{policy.metric} of {timeline.model}:{timeline.model_version} is {value:.4g}, {word} "
        f"the limit {limit:g} ({timeline.freq} from {latest.start:%Y-%m-%d %H:%M}, "
        f"{latest.rows} labelled rows from {timeline.labels})",
        {"metric": policy.metric, "value": value, "limit": limit,
         "period_start": latest.start.isoformat(), "rows": latest.rows},
    )

    def write() -> tuple[list[int], list[Any], list[Any]]:
        with store.transaction(ws) as con:
            return _fire(con, [firing], None, actor, policy)

    ids, own, registry_hooks = store.retry_on_conflict(write)
    _dispatch(ws, own, registry_hooks)
    return ids


def _alert(row: Mapping[str, Any]) -> Alert:
    return Alert(
        id=row["id"], model=row["model_name"], model_version=row["model_version"],
        condition=row["condition"], message=row["message"], details=row["details"] or {},
        report_id=row["report_id"], fired_by=row["fired_by"], fired_at=row["fired_at"],
        acknowledged_by=row["acknowledged_by"], acknowledged_at=row["acknowledged_at"],
        acknowledge_comment=row["acknowledge_comment"],
    )


def list_alerts(
    ws: Workspace, model: str | None = None, *, open_only: bool = False, limit: int = 100
) -> list[Alert]:
    """Fired alerts, newest first.

    Args:
        model: only this model's alerts.
        open_only: only alerts nobody has acknowledged yet.
    """
    with store.read(ws) as con:
        found = rows.list_alerts(con, model=model, open_only=open_only, limit=int(limit))
    return [_alert(r) for r in found]


def open_alerts(ws: Workspace, limit: int = 20) -> list[dict[str, Any]]:
    """Unacknowledged alerts as plain dicts (id, model, message, fired_at…), newest first,
    for the home page."""
    return [a.to_dict() for a in list_alerts(ws, open_only=True, limit=limit)]


def acknowledge(
    ws: Workspace, alert_id: int, *, actor: User, comment: str | None = None
) -> Alert:
    """Mark an alert as seen and handled.

    Raises:
        NotFound: no alert has that id.
        IllegalTransition: it was acknowledged already.
        PermissionDenied: the actor may not monitor.
    """
    require(actor, "monitor")
    comment = (comment or "").strip() or None

    def write() -> dict[str, Any] | None:
        with store.transaction(ws) as con:
            found = rows.get_alert(con, int(alert_id))
            if found is None:
                raise NotFound(f"there is no alert #{alert_id}; `pond alerts list` shows them")
            if found["acknowledged_at"] is not None:
                raise IllegalTransition(
                    f"alert #{alert_id} was already acknowledged by {found['acknowledged_by']} "
                    f"at {found['acknowledged_at']:%Y-%m-%d %H:%M}"
                )
            rows.acknowledge_alert(con, int(alert_id), actor.name, comment)
            store.append_audit(
                con, actor=actor.name, action="alert_acknowledged", entity_type="drift_alert",
                entity_id=str(alert_id), from_state="open", to_state="acknowledged",
                comment=comment,
            )
            return rows.get_alert(con, int(alert_id))

    stored = store.retry_on_conflict(write)
    assert stored is not None
    return _alert(stored)


def alert_deliveries(ws: Workspace, alert_id: int | None = None, *, limit: int = 50
                     ) -> list[AlertDelivery]:
    """Webhook deliveries of alerts (pending, delivered or failed), newest first."""
    with store.read(ws) as con:
        found = rows.list_deliveries(con, alert_id=alert_id, limit=limit)
    return [AlertDelivery(
        id=r["id"], alert_id=r["alert_id"], url=r["url"], outcome=r["outcome"],
        attempts=r["attempts"], response_status=r["response_status"], error=r["error"],
        created_at=r["created_at"], finished_at=r["finished_at"],
    ) for r in found]


# --- what the Monitor page offers -----------------------------------------------------------------


def monitored_models(ws: Workspace) -> list[str]:
    """Registered model names, for pickers."""
    return [m.name for m in registry.list_models(ws, limit=500)]


def dataset_refs(ws: Workspace) -> list[str]:
    """Every dataset version as "name:version", newest version of each name first."""
    found = datasets.list_versions(ws)
    return [d.ref for d in sorted(found, key=lambda d: (d.name, -d.version))]


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def report_json(report: DriftReport) -> str:
    """The report as JSON text (for downloads)."""
    return json.dumps(report.to_dict(distributions=True), default=_json_default, indent=2)
