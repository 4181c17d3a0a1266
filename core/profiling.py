"""Dataset profiles: what a Parquet file holds, column by column, computed in DuckDB SQL.

This module owns the profile of a dataset version (types, missing values, distinct counts,
summary statistics, quantiles, histograms, top values, duplicate rows, numeric correlations and
plain-words alerts), its JSON form for caching, and the optional ydata-profiling HTML report.
The profile comes from a few aggregate queries of an in-memory DuckDB connection over the file;
the table is never loaded into pandas, so memory stays within DuckDB's ``memory_limit``
whatever the size of the file.
"""

from __future__ import annotations

import math
import os
import re
import tempfile
import time
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any

import duckdb

PROFILE_FORMAT = 1
"""Version of the ``to_dict()`` shape; bumped when it changes so stale caches are refused."""

QUANTILES: tuple[float, ...] = (0.05, 0.25, 0.5, 0.75, 0.95)
HISTOGRAM_BINS = 25
TOP_VALUES = 10

# Alert thresholds, in the words of the alert messages.
MOSTLY_MISSING_SHARE = 0.5
HIGH_CARDINALITY_DISTINCT = 50
HIGH_CARDINALITY_SHARE = 0.5
HEAVY_SKEW = 2.0

# Exact answers cost time and memory in proportion to the data, so they are used up to these
# sizes, and estimates (HyperLogLog, a Bernoulli sample, a space-saving sketch) above them;
# flags on the profile say which answers are estimates.
EXACT_DISTINCT_MAX_ROWS = 200_000
QUANTILE_SAMPLE_ROWS = 200_000
# Values one quantile query may hold in memory (8 bytes each), so wide tables take several.
QUANTILE_MAX_VALUES = 8_000_000
EXACT_TOP_VALUES_MAX_DISTINCT = 250_000
# Above that size, a column whose distinct estimate reaches this share of its values gets no
# top values: nearly every value occurs once, so none is more frequent than another.
NEARLY_UNIQUE_SHARE = 0.9
# Integer and date columns spanning at most this many values get exact distinct counts from a
# bitmap (2 MB at this size) whatever the number of rows.
BITMAP_MAX_RANGE = 16_000_000
# Correlations cost one aggregate per pair: 50 columns are 1,225 pairs.
MAX_CORRELATION_COLUMNS = 50

_EPOCH = datetime(1970, 1, 1)
_DAY_SECONDS = 86_400.0
_INTEGER_TYPES = frozenset(
    {"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT"}
    | {"UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT", "UHUGEINT"}
)
_FLOAT_TYPES = frozenset({"FLOAT", "DOUBLE"})
_STRING_TYPES = frozenset({"VARCHAR", "UUID", "JSON"})
_TIMESTAMP_TYPES = frozenset(
    {"TIMESTAMP", "TIMESTAMP_S", "TIMESTAMP_MS", "TIMESTAMP_NS", "TIMESTAMP WITH TIME ZONE"}
)
_ID_TOKENS = frozenset({"id", "ids", "uuid", "guid", "key", "pk"})
# Strings this long on average read as prose, not as labels.
_TEXT_MEAN_LENGTH = 30.0


class LogicalType(StrEnum):
    """What a column holds, in an analyst's words; decides which statistics it gets."""

    NUMERIC = "numeric"
    CATEGORICAL = "categorical"
    BOOLEAN = "boolean"
    DATETIME = "datetime"
    TEXT = "text"

    @property
    def has_distribution(self) -> bool:
        """Whether the column gets min/max/mean/std, quantiles and a histogram."""
        return self in (LogicalType.NUMERIC, LogicalType.DATETIME)

    @property
    def has_top_values(self) -> bool:
        """Whether the column gets its most frequent values."""
        return not self.has_distribution


class AlertKind(StrEnum):
    """Something about a column that an analyst should look at before modelling."""

    CONSTANT = "constant"
    MOSTLY_MISSING = "mostly_missing"
    HIGH_CARDINALITY = "high_cardinality"
    SKEWED = "skewed"
    LIKELY_ID = "likely_id"


@dataclass(frozen=True)
class Alert:
    """One warning about one column, with a message written for people."""

    column: str
    kind: AlertKind
    message: str

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict."""
        return {"column": self.column, "kind": self.kind.value, "message": self.message}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Alert:
        """Rebuild an alert from :meth:`to_dict` output."""
        return cls(column=data["column"], kind=AlertKind(data["kind"]), message=data["message"])


@dataclass(frozen=True)
class Histogram:
    """Counts of non-missing values in consecutive bins.

    ``edges`` has one more entry than ``counts``; bin ``i`` covers ``[edges[i], edges[i+1])``.
    Bins are ``HISTOGRAM_BINS`` equal slices of ``[min, max]`` (the last one also holds the
    maximum), except that integer and date columns get at most that many bins a whole number
    of values or days wide (one per value when the range is short), and a constant column
    gets a single bin ``[min, max]``. Edges are numbers for numeric columns and ISO-8601
    strings for datetime columns.
    """

    edges: tuple[float | str, ...]
    counts: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict."""
        return {"edges": list(self.edges), "counts": list(self.counts)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Histogram:
        """Rebuild a histogram from :meth:`to_dict` output."""
        return cls(edges=tuple(data["edges"]), counts=tuple(int(c) for c in data["counts"]))


@dataclass(frozen=True)
class ValueCount:
    """One of a column's most frequent values and how many rows hold it."""

    value: str | bool
    count: int

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict."""
        return {"value": self.value, "count": self.count}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ValueCount:
        """Rebuild a value count from :meth:`to_dict` output."""
        return cls(value=data["value"], count=int(data["count"]))


Stat = float | int | str | None
"""A summary statistic: a number, an ISO-8601 string for datetimes, or None when undefined."""


@dataclass(frozen=True)
class ColumnProfile:
    """Everything the profile says about one column.

    Missing values are SQL NULLs and, in float columns, NaN. Numeric and datetime columns get
    min, max, mean, std, quantiles (keys ``p5``, ``p25``, ``p50``, ``p75``, ``p95``, linear
    interpolation as in numpy) and a histogram; numeric ones also skewness (adjusted, as in
    pandas) and ``n_zeros``. Their statistics are numbers, or ISO-8601 strings for datetimes,
    whose ``std`` is in days. Infinite floats count as present values but are left out of the
    statistics, quantiles and histogram (``n_infinite`` says how many there were).
    Categorical, boolean and text columns get ``top_values`` (most frequent first, ties in
    value order, missing values left out; none for a column of more than
    ``EXACT_TOP_VALUES_MAX_DISTINCT`` values nearly all different) and, for strings, lengths
    in characters.
    ``distinct_exact`` is False when ``n_distinct`` is a HyperLogLog estimate.
    """

    name: str
    logical_type: LogicalType
    duckdb_type: str
    n_missing: int
    missing_share: float
    n_distinct: int
    distinct_exact: bool
    min: Stat = None
    max: Stat = None
    mean: Stat = None
    std: float | None = None
    skewness: float | None = None
    n_zeros: int | None = None
    n_infinite: int | None = None
    quantiles: dict[str, Stat] = field(default_factory=dict)
    histogram: Histogram | None = None
    top_values: tuple[ValueCount, ...] = ()
    min_length: int | None = None
    max_length: int | None = None
    mean_length: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict (see :meth:`Profile.to_dict`)."""
        return {
            "name": self.name,
            "logical_type": self.logical_type.value,
            "duckdb_type": self.duckdb_type,
            "n_missing": self.n_missing,
            "missing_share": self.missing_share,
            "n_distinct": self.n_distinct,
            "distinct_exact": self.distinct_exact,
            "min": self.min,
            "max": self.max,
            "mean": self.mean,
            "std": self.std,
            "skewness": self.skewness,
            "n_zeros": self.n_zeros,
            "n_infinite": self.n_infinite,
            "quantiles": dict(self.quantiles),
            "histogram": None if self.histogram is None else self.histogram.to_dict(),
            "top_values": [v.to_dict() for v in self.top_values],
            "min_length": self.min_length,
            "max_length": self.max_length,
            "mean_length": self.mean_length,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ColumnProfile:
        """Rebuild a column profile from :meth:`to_dict` output."""
        histogram = data.get("histogram")
        return cls(
            name=data["name"],
            logical_type=LogicalType(data["logical_type"]),
            duckdb_type=data["duckdb_type"],
            n_missing=int(data["n_missing"]),
            missing_share=float(data["missing_share"]),
            n_distinct=int(data["n_distinct"]),
            distinct_exact=bool(data["distinct_exact"]),
            min=data.get("min"),
            max=data.get("max"),
            mean=data.get("mean"),
            std=data.get("std"),
            skewness=data.get("skewness"),
            n_zeros=data.get("n_zeros"),
            n_infinite=data.get("n_infinite"),
            quantiles=dict(data.get("quantiles") or {}),
            histogram=None if histogram is None else Histogram.from_dict(histogram),
            top_values=tuple(ValueCount.from_dict(v) for v in data.get("top_values") or ()),
            min_length=data.get("min_length"),
            max_length=data.get("max_length"),
            mean_length=data.get("mean_length"),
        )


@dataclass(frozen=True)
class Profile:
    """The profile of one table: its size, duplicate rows, columns, correlations and alerts.

    ``correlations`` is the Pearson matrix over ``correlation_columns`` (numeric columns
    that vary, at most ``MAX_CORRELATION_COLUMNS``), each pair on the rows where both have
    a value; an entry is None where it is undefined. ``quantiles_exact`` is False when the
    table was too large for exact quantiles and a t-digest sketch was used instead.
    """

    n_rows: int
    n_columns: int
    n_duplicate_rows: int
    columns: tuple[ColumnProfile, ...]
    correlation_columns: tuple[str, ...] = ()
    correlations: tuple[tuple[float | None, ...], ...] = ()
    alerts: tuple[Alert, ...] = ()
    quantiles_exact: bool = True
    elapsed_s: float = 0.0

    @property
    def duplicate_share(self) -> float:
        """Share of rows that repeat an earlier row exactly (0.0 for an empty table)."""
        return self.n_duplicate_rows / self.n_rows if self.n_rows else 0.0

    def column(self, name: str) -> ColumnProfile:
        """Return the profile of the column called ``name``.

        Raises:
            KeyError: the table has no such column.
        """
        for column in self.columns:
            if column.name == name:
                return column
        raise KeyError(f"the profile has no column {name!r}")

    def correlation(self, a: str, b: str) -> float | None:
        """Return the Pearson correlation of two numeric columns, None when undefined.

        Raises:
            KeyError: one of the columns is not in ``correlation_columns``.
        """
        try:
            i, j = self.correlation_columns.index(a), self.correlation_columns.index(b)
        except ValueError:
            raise KeyError(
                f"no correlation between {a!r} and {b!r}: correlations cover only the numeric "
                f"columns {list(self.correlation_columns)}"
            ) from None
        return self.correlations[i][j]

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict.

        Shape::

            {"format": 1, "n_rows": int, "n_columns": int, "n_duplicate_rows": int,
             "quantiles_exact": bool, "elapsed_s": float,
             "columns": [ColumnProfile.to_dict(), ...],
             "correlations": {"columns": [str, ...], "matrix": [[float | None, ...], ...]},
             "alerts": [{"column": str, "kind": str, "message": str}, ...]}
        """
        return {
            "format": PROFILE_FORMAT,
            "n_rows": self.n_rows,
            "n_columns": self.n_columns,
            "n_duplicate_rows": self.n_duplicate_rows,
            "quantiles_exact": self.quantiles_exact,
            "elapsed_s": self.elapsed_s,
            "columns": [c.to_dict() for c in self.columns],
            "correlations": {
                "columns": list(self.correlation_columns),
                "matrix": [list(row) for row in self.correlations],
            },
            "alerts": [a.to_dict() for a in self.alerts],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Profile:
        """Rebuild a profile from :meth:`to_dict` output.

        Raises:
            ValueError: the dict was written by an incompatible version of this module;
                recompute the profile.
        """
        if data.get("format") != PROFILE_FORMAT:
            raise ValueError(
                f"cached profile has format {data.get('format')!r}, this Pond reads format "
                f"{PROFILE_FORMAT}; recompute the profile"
            )
        correlations = data.get("correlations") or {}
        return cls(
            n_rows=int(data["n_rows"]),
            n_columns=int(data["n_columns"]),
            n_duplicate_rows=int(data["n_duplicate_rows"]),
            columns=tuple(ColumnProfile.from_dict(c) for c in data["columns"]),
            correlation_columns=tuple(correlations.get("columns") or ()),
            correlations=tuple(tuple(row) for row in correlations.get("matrix") or ()),
            alerts=tuple(Alert.from_dict(a) for a in data.get("alerts") or ()),
            quantiles_exact=bool(data.get("quantiles_exact", True)),
            elapsed_s=float(data.get("elapsed_s", 0.0)),
        )


def compute_profile(
    parquet_path: str | Path, *, threads: int | None = None, memory_limit: str = "400MB"
) -> Profile:
    """Profile a Parquet file with DuckDB SQL, without loading it into Python.

    The file is read by five aggregate queries (counts and means; spreads, skewness and
    correlations as sums of deviations; duplicate rows; quantiles; histograms and top values),
    each reading only the columns it needs. What is exact and what is estimated:

    - counts, missing values, min/max/mean/std, skewness, histograms, correlations, top-value
      counts: exact;
    - duplicate rows: counted on a 64-bit hash of each row, so a false match needs a hash
      collision (about one chance in 10^7 at a million rows);
    - distinct counts: exact for tables up to ``EXACT_DISTINCT_MAX_ROWS`` rows, for integer
      and date columns with a short range, and for columns whose top values are grouped
      exactly; HyperLogLog estimates otherwise (``ColumnProfile.distinct_exact``);
    - quantiles: exact up to ``QUANTILE_SAMPLE_ROWS`` rows, else computed on a reproducible
      Bernoulli sample of about that many rows (``Profile.quantiles_exact``);
    - top values of columns with more than ``EXACT_TOP_VALUES_MAX_DISTINCT`` distinct values:
      candidates come from a space-saving sketch, their counts are exact; such a column whose
      values nearly all differ gets none.

    Args:
        parquet_path: the Parquet file to profile.
        threads: DuckDB worker threads; None lets DuckDB use every core.
        memory_limit: DuckDB's memory limit, e.g. ``"400MB"``; larger work spills to a
            temporary directory that is removed afterwards.

    Returns:
        The profile of the whole table.

    Raises:
        FileNotFoundError: ``parquet_path`` does not exist.
        ValueError: the file is not a readable Parquet file, or ``threads`` is below 1.
    """
    started = time.perf_counter()
    path = Path(parquet_path)
    if not path.is_file():
        raise FileNotFoundError(f"cannot profile {str(path)!r}: no such file")
    if threads is not None and threads < 1:
        raise ValueError(
            f"The 'threads' parameter of compute_profile must be an int >= 1. "
            f"Got {threads!r} instead."
        )
    with tempfile.TemporaryDirectory(prefix="pond-profile-") as spill_dir:
        config: dict[str, Any] = {
            "memory_limit": memory_limit,
            "temp_directory": spill_dir,
            "preserve_insertion_order": False,
        }
        if threads is not None:
            config["threads"] = threads
        with duckdb.connect(config=config) as con:
            con.execute("SET enable_progress_bar = false")
            profile = _Profiler(con, path, _parquet_scan(path, Path(spill_dir))).run()
    return replace(profile, elapsed_s=round(time.perf_counter() - started, 4))


# ---------------------------------------------------------------------------------------------
# The engine. Each column gets three SQL views of itself in an inner projection:
#   r<i>  the raw value (row hashing for duplicates),
#   v<i>  the value with float NaN turned into NULL and non-native types cast to VARCHAR,
#   s<i>  a number to compute statistics on: finite floats, integers, epoch seconds for
#         datetimes.
# Queries refer to these aliases only, so user-supplied column names are quoted in one place.


def quote_identifier(name: str) -> str:
    """Quote a column name for DuckDB SQL, whatever characters it holds."""
    return '"' + name.replace('"', '""') + '"'


def _string_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _parquet_scan(path: Path, workdir: Path) -> str:
    """SQL that reads exactly ``path``, even when its name holds glob characters."""
    if any(ch in str(path) for ch in "*?["):
        # read_parquet() expands globs: 'a[1].parquet' would read 'a1.parquet'.
        link = workdir / "table.parquet"
        link.symlink_to(path.resolve())
        path = link
    return f"read_parquet({_string_literal(str(path))})"


def _double_literal(x: float) -> str:
    return f"{float(x)!r}::DOUBLE"


def _family(duckdb_type: str) -> str:
    base = duckdb_type.split("(", 1)[0].strip()
    if base in _INTEGER_TYPES:
        return "integer"
    if base in _FLOAT_TYPES:
        return "float"
    if base == "DECIMAL":
        return "decimal"
    if base == "BOOLEAN":
        return "boolean"
    if base == "DATE":
        return "date"
    if base in _TIMESTAMP_TYPES:
        return "timestamp"
    if base in _STRING_TYPES or base == "ENUM":
        return "string"
    return "other"


@dataclass
class _Column:
    """Working state for one column while its profile is being assembled."""

    index: int
    name: str
    duckdb_type: str
    family: str
    present: int = 0
    distinct: int = 0
    distinct_exact: bool = False
    logical_type: LogicalType = LogicalType.TEXT
    stats: dict[str, Any] = field(default_factory=dict)
    histogram: Histogram | None = None
    top_values: tuple[ValueCount, ...] = ()
    top_candidates: tuple[str, ...] = ()

    @property
    def r(self) -> str:
        return f"r{self.index}"

    @property
    def v(self) -> str:
        return f"v{self.index}"

    @property
    def s(self) -> str:
        return f"s{self.index}"

    def projections(self) -> list[str]:
        q = quote_identifier(self.name)
        out = [f"{q} AS {self.r}"]
        if self.family == "float":
            out.append(f"CASE WHEN isnan({q}) THEN NULL ELSE {q} END AS {self.v}")
            out.append(f"CASE WHEN isfinite({q}) THEN {q} END AS {self.s}")
        elif self.family in ("string", "other") and self.duckdb_type != "VARCHAR":
            out.append(f"{q}::VARCHAR AS {self.v}")
        else:
            out.append(f"{q} AS {self.v}")
        if self.family == "integer":
            wide = self.duckdb_type in ("HUGEINT", "UHUGEINT")
            out.append(f"{q}::DOUBLE AS {self.s}" if wide else f"{q} AS {self.s}")
        elif self.family == "decimal":
            out.append(f"{q}::DOUBLE AS {self.s}")
        elif self.family in ("date", "timestamp"):
            out.append(f"epoch({q}) AS {self.s}")
        return out

    @property
    def has_stats(self) -> bool:
        return self.family in ("integer", "float", "decimal", "date", "timestamp")

    @property
    def is_datetime(self) -> bool:
        return self.family in ("date", "timestamp")


class _Aggregates:
    """A wide ``SELECT agg, agg, ...`` whose results come back by key."""

    def __init__(self) -> None:
        self._keys: list[tuple[str, int]] = []
        self._sql: list[str] = []

    def add(self, key: tuple[str, int], sql: str) -> None:
        self._keys.append(key)
        self._sql.append(sql)

    def __bool__(self) -> bool:
        return bool(self._sql)

    def run(self, con: duckdb.DuckDBPyConnection, source: str) -> dict[tuple[str, int], Any]:
        row = _one(con.execute(f"SELECT {', '.join(self._sql)} FROM {source}"))
        return dict(zip(self._keys, row, strict=True))


class _Profiler:
    """Runs the profile's queries against one Parquet file and assembles the result."""

    def __init__(self, con: duckdb.DuckDBPyConnection, path: Path, scan: str) -> None:
        self.con = con
        self.scan = scan
        try:
            described = con.execute(f"DESCRIBE SELECT * FROM {self.scan}").fetchall()
            self.n_rows = int(_one(con.execute(f"SELECT count(*) FROM {self.scan}"))[0])
        except duckdb.Error as exc:
            raise ValueError(
                f"cannot profile {str(path)!r}: not a readable Parquet file ({exc})"
            ) from exc
        self.columns = [
            _Column(index=i, name=str(name), duckdb_type=str(type_), family=_family(str(type_)))
            for i, (name, type_, *_) in enumerate(described)
        ]
        self.n_duplicates = 0
        self.quantiles_exact = True
        self.correlation_columns: list[_Column] = []
        self.correlations: list[list[float | None]] = []

    def source(self, columns: Iterable[_Column] | None = None) -> str:
        chosen = self.columns if columns is None else list(columns)
        projections = [p for c in chosen for p in c.projections()]
        return f"(SELECT {', '.join(projections)} FROM {self.scan})"

    def run(self) -> Profile:
        if self.n_rows:
            self._scan_summaries()
            for column in self.columns:
                column.logical_type = self._logical_type(column)
            self._scan_moments_and_correlations()
            self._scan_duplicates_and_distinct()
            self._scan_quantiles()
            self._scan_histograms_and_top_values()
        columns = tuple(self._column_profile(c) for c in self.columns)
        alerts = tuple(
            alert
            for c, profile in zip(self.columns, columns, strict=True)
            for alert in _alerts(profile, self.n_rows, looks_like_id=self._looks_like_id(c))
        )
        return Profile(
            n_rows=self.n_rows,
            n_columns=len(self.columns),
            n_duplicate_rows=self.n_duplicates,
            columns=columns,
            correlation_columns=tuple(c.name for c in self.correlation_columns),
            correlations=tuple(tuple(row) for row in self.correlations),
            alerts=alerts,
            quantiles_exact=self.quantiles_exact,
        )

    # The queries below are split by the kind of aggregate they hold: DISTINCT and holistic
    # aggregates (quantiles) switch DuckDB to a slower plan for the whole SELECT, measured
    # 3.5x slower on the benchmark table, so cheap streaming aggregates never share a SELECT
    # with them.

    def _scan_summaries(self) -> None:
        """Counts, extremes, means, distinct estimates and string lengths, in one pass."""
        agg = _Aggregates()
        for c in self.columns:
            i, v, s = c.index, c.v, c.s
            agg.add(("present", i), f"count({v})")
            if c.family not in ("integer", "date", "boolean"):
                # Those get exact counts later: a bitmap over their range, or their groups.
                agg.add(("distinct", i), f"approx_count_distinct({v})")
            if c.family == "float":
                # s is v without infinities, so the difference of their counts counts those.
                agg.add(("n_stat", i), f"count({s})")
            if c.has_stats:
                agg.add(("min", i), f"min({s})")
                agg.add(("max", i), f"max({s})")
                agg.add(("mean", i), f"avg({s})")
                if not c.is_datetime:
                    agg.add(("n_zeros", i), f"count_if({s} = 0)")
            if c.family == "string":
                agg.add(("min_length", i), f"min(length({v}))")
                agg.add(("max_length", i), f"max(length({v}))")
                agg.add(("mean_length", i), f"avg(length({v}))")
        result = agg.run(self.con, self.source())
        for c in self.columns:
            c.stats = {key: value for (key, i), value in result.items() if i == c.index}
            c.present = int(c.stats["present"])
            if c.has_stats:
                c.stats.setdefault("n_stat", c.present)
                c.stats["n_infinite"] = c.present - c.stats["n_stat"]
            c.distinct = min(int(c.stats.get("distinct") or 0), c.present)
            if c.has_stats and c.stats["n_stat"] and c.stats["min"] == c.stats["max"]:
                # min == max settles constancy exactly, whatever the estimate says.
                c.distinct, c.distinct_exact = 1, c.stats["n_stat"] == c.present

    def _logical_type(self, c: _Column) -> LogicalType:
        if c.family in ("integer", "float", "decimal"):
            return LogicalType.NUMERIC
        if c.is_datetime:
            return LogicalType.DATETIME
        if c.family == "boolean":
            return LogicalType.BOOLEAN
        if c.family == "string" and (c.stats.get("mean_length") or 0.0) < _TEXT_MEAN_LENGTH:
            return LogicalType.CATEGORICAL
        return LogicalType.TEXT

    def _scan_moments_and_correlations(self) -> None:
        """Spread, skewness and Pearson correlations as sums of deviations from the means of
        the first pass, plus exact distinct counts of short integer and day ranges and the
        candidate top values of columns too large to group exactly."""
        # Two passes with plain sums run 2 to 3 times faster than stddev_samp(), skewness()
        # and corr() in one, and deviations from a known mean keep the sums accurate.
        spread = [c for c in self.columns if c.has_stats and c.stats["n_stat"] >= 2]
        numeric = [c for c in spread if c.logical_type is LogicalType.NUMERIC and _varies(c)][
            :MAX_CORRELATION_COLUMNS
        ]
        pairs = [(a, b) for k, a in enumerate(numeric) for b in numeric[k + 1 :]]
        agg = _Aggregates()
        for c in spread:
            d = f"d{c.index}"
            agg.add(("sum_d", c.index), f"sum({d})")
            agg.add(("sum_d2", c.index), f"sum({d} * {d})")
            agg.add(("sum_d3", c.index), f"sum({d} * {d} * {d})")
        for n, (a, b) in enumerate(pairs):
            da, db = f"d{a.index}", f"d{b.index}"
            agg.add(("sum_ab", n), f"sum({da} * {db})")
            # A pair is correlated on the rows where both have a value. Where one column has
            # gaps, the other's sums are taken again over those rows only: x + 0 * y is NULL
            # wherever y is, and sum() skips NULLs.
            if not _complete(b, self.n_rows):
                agg.add(("sum_a", n), f"sum({da} + 0 * {db})")
                agg.add(("sum_a2", n), f"sum({da} * {da} + 0 * {db})")
            if not _complete(a, self.n_rows):
                agg.add(("sum_b", n), f"sum({db} + 0 * {da})")
                agg.add(("sum_b2", n), f"sum({db} * {db} + 0 * {da})")
            if not (_complete(a, self.n_rows) or _complete(b, self.n_rows)):
                agg.add(("count_ab", n), f"count({da} * {db})")
        for c in self.columns:
            if c.family in ("integer", "date") and c.present and not c.distinct_exact:
                unit = _distinct_unit(c)
                if unit is None:
                    agg.add(("approx_distinct", c.index), f"approx_count_distinct({c.v})")
                else:
                    lo, hi = c.stats["min"], c.stats["max"]
                    agg.add(
                        ("distinct", c.index),
                        f"bit_count(bitstring_agg(({c.s} // {unit})::BIGINT, "
                        f"{int(lo // unit)}, {int(hi // unit)}))",
                    )
            if (
                c.logical_type.has_top_values
                and not self._exact_top_values(c)
                # When nearly every value differs, the "most frequent" would be arbitrary rows.
                and c.distinct < NEARLY_UNIQUE_SHARE * c.present
            ):
                agg.add(("top_k", c.index), f"approx_top_k({c.v}, {TOP_VALUES})")
        if not agg:
            return
        deviations = ", ".join(
            f"{c.s} - {_double_literal(c.stats['mean'])} AS d{c.index}" for c in spread
        )
        source = f"(SELECT *{', ' + deviations if deviations else ''} FROM {self.source()})"
        result = agg.run(self.con, source)
        for c in spread:
            n = c.stats["n_stat"]
            s1, s2, s3 = (result[(k, c.index)] for k in ("sum_d", "sum_d2", "sum_d3"))
            # Corrected two-pass sums: exact even when the first-pass mean is slightly off.
            m2 = max(s2 - s1 * s1 / n, 0.0)
            m3 = s3 - 3 * s1 * s2 / n + 2 * s1**3 / (n * n)
            c.stats["m2"] = m2
            c.stats["std"] = math.sqrt(m2 / (n - 1))
            if n >= 3 and m2 > 0:
                # Adjusted Fisher-Pearson coefficient, as in pandas and DuckDB's skewness().
                g1 = (m3 / n) / (m2 / n) ** 1.5
                c.stats["skewness"] = g1 * math.sqrt(n * (n - 1)) / (n - 2)
        matrix: list[list[float | None]] = [
            [1.0 if i == j else None for j in range(len(numeric))] for i in range(len(numeric))
        ]
        position = {c.index: k for k, c in enumerate(numeric)}
        for n, (a, b) in enumerate(pairs):
            k = result.get(("count_ab", n))
            if k is None:  # one column has no gaps: the rows are those of the other
                k = min(a.stats["n_stat"], b.stats["n_stat"])
            sa = result.get(("sum_a", n), result[("sum_d", a.index)])
            sa2 = result.get(("sum_a2", n), result[("sum_d2", a.index)])
            sb = result.get(("sum_b", n), result[("sum_d", b.index)])
            sb2 = result.get(("sum_b2", n), result[("sum_d2", b.index)])
            value = _pearson(k, sa, sb, sa2, sb2, result[("sum_ab", n)])
            matrix[position[a.index]][position[b.index]] = value
            matrix[position[b.index]][position[a.index]] = value
        self.correlation_columns, self.correlations = numeric, matrix
        for c in self.columns:
            if ("distinct", c.index) in result:
                c.distinct, c.distinct_exact = int(result[("distinct", c.index)]), True
            if ("approx_distinct", c.index) in result:
                c.distinct = min(int(result[("approx_distinct", c.index)]), c.present)
            if ("top_k", c.index) in result:
                c.top_candidates = tuple(str(x) for x in result[("top_k", c.index)] or ())

    def _scan_duplicates_and_distinct(self) -> None:
        """Duplicate rows, plus exact distinct counts where they are cheap or decide an alert."""
        # An ungrouped count(DISTINCT x) holds its whole hash table in memory and fails past
        # memory_limit; count(*) over SELECT DISTINCT is a grouped aggregate, which DuckDB
        # spills to disk.
        row_hash = "hash(" + ", ".join(c.r for c in self.columns) + ")"
        counts = [f"(SELECT count(*) FROM (SELECT DISTINCT {row_hash} FROM {self.source()}))"]
        exact = [
            c
            for c in self.columns
            if c.present
            and not c.distinct_exact
            and (
                self.n_rows <= EXACT_DISTINCT_MAX_ROWS
                # Estimates are within a few percent: only a near-unique one can be an ID.
                or (_could_be_id(c, self.n_rows) and c.distinct >= 0.95 * self.n_rows)
            )
        ]
        counts += [
            f"(SELECT count(*) FROM (SELECT DISTINCT {c.v} FROM {self.source([c])} "
            f"WHERE {c.v} IS NOT NULL))"
            for c in exact
        ]
        distinct_rows, *distinct = _one(self.con.execute(f"SELECT {', '.join(counts)}"))
        self.n_duplicates = self.n_rows - int(distinct_rows)
        for c, n in zip(exact, distinct, strict=True):
            c.distinct, c.distinct_exact = int(n), True

    def _scan_quantiles(self) -> None:
        """Exact quantiles, or quantiles of a large Bernoulli sample of a large table."""
        with_values = [c for c in self.columns if c.has_stats and c.stats["n_stat"]]
        self.quantiles_exact = self.n_rows <= QUANTILE_SAMPLE_ROWS
        sample = ""
        if not self.quantiles_exact:
            percent = 100.0 * QUANTILE_SAMPLE_ROWS / self.n_rows
            # A fixed seed keeps the profile of a dataset version reproducible.
            sample = f" USING SAMPLE bernoulli({percent:.6f}%) REPEATABLE (0)"
        # quantile_cont() keeps every value of its column in memory: bound each query's share.
        per_query = max(1, QUANTILE_MAX_VALUES // min(self.n_rows, QUANTILE_SAMPLE_ROWS))
        qs = "[" + ", ".join(repr(q) for q in QUANTILES) + "]"
        for start in range(0, len(with_values), per_query):
            batch = with_values[start : start + per_query]
            sql = ", ".join(f"quantile_cont({c.s}, {qs})" for c in batch)
            row = _one(self.con.execute(f"SELECT {sql} FROM {self.source(batch)}{sample}"))
            for c, quantiles in zip(batch, row, strict=True):
                c.stats["quantiles"] = quantiles

    def _scan_histograms_and_top_values(self) -> None:
        """Histograms and top values: one small GROUP BY per column, in one UNION ALL."""
        parts: list[str] = []
        bins: dict[int, _Bins] = {}
        for c in self.columns:
            if c.logical_type.has_distribution and c.stats["n_stat"]:
                bins[c.index] = b = _bins(c, c.stats["min"], c.stats["max"])
                if b.width == 0:
                    continue  # a constant column: one bin, counted without a scan
                bin_sql = (
                    f"least(floor(({c.s} - {_double_literal(b.start)}) / "
                    f"{_double_literal(b.width)}), {b.n_bins - 1})::INTEGER"
                )
                parts.append(
                    f"SELECT {c.index} AS col, {bin_sql} AS bin, NULL::VARCHAR AS value, "
                    f"count(*) AS n, NULL::BIGINT AS groups FROM {self.source([c])} "
                    f"WHERE {c.s} IS NOT NULL GROUP BY bin"
                )
            elif c.logical_type.has_top_values and c.present:
                if self._exact_top_values(c):
                    # The number of groups is the exact distinct count, for free.
                    parts.append(
                        f"SELECT * FROM (SELECT {c.index} AS col, NULL::INTEGER AS bin, "
                        f"{c.v}::VARCHAR AS value, count(*) AS n, count(*) OVER () AS groups "
                        f"FROM {self.source([c])} WHERE {c.v} IS NOT NULL GROUP BY {c.v} "
                        f"ORDER BY n DESC, value LIMIT {TOP_VALUES})"
                    )
                elif c.top_candidates:
                    listed = ", ".join(_string_literal(x) for x in c.top_candidates)
                    parts.append(
                        f"SELECT {c.index} AS col, NULL::INTEGER AS bin, {c.v} AS value, "
                        f"count(*) AS n, NULL::BIGINT AS groups FROM {self.source([c])} "
                        f"WHERE {c.v} IN ({listed}) GROUP BY {c.v}"
                    )
        rows = self.con.execute(" UNION ALL ".join(parts)).fetchall() if parts else []
        counts = {i: [0] * b.n_bins for i, b in bins.items()}
        tops: dict[int, list[tuple[str, int]]] = {}
        for col, bin_, value, n, groups in rows:
            if bin_ is not None:
                counts[col][bin_] += int(n)
            else:
                tops.setdefault(col, []).append((value, int(n)))
            if groups is not None:
                self.columns[col].distinct = int(groups)
                self.columns[col].distinct_exact = True
        for c in self.columns:
            if c.index in bins:
                if bins[c.index].width == 0:
                    counts[c.index] = [int(c.stats["n_stat"])]
                c.histogram = Histogram(
                    edges=tuple(self._stat_value(c, e) for e in bins[c.index].edges),
                    counts=tuple(counts[c.index]),
                )
            if c.index in tops:
                ordered = sorted(tops[c.index], key=lambda vc: (-vc[1], vc[0]))[:TOP_VALUES]
                c.top_values = tuple(ValueCount(_typed_value(c, v), n) for v, n in ordered)

    def _exact_top_values(self, c: _Column) -> bool:
        return c.distinct_exact or c.distinct <= EXACT_TOP_VALUES_MAX_DISTINCT

    def _looks_like_id(self, c: _Column) -> bool:
        return _could_be_id(c, self.n_rows) and c.distinct_exact and c.distinct == self.n_rows

    # -- assembling -----------------------------------------------------------------------------

    def _stat_value(self, c: _Column, value: Any) -> Stat:
        if value is None:
            return None
        if c.is_datetime:
            return _iso(float(value), c)
        if c.family == "integer" and isinstance(value, int):
            return value
        return _finite(value)

    def _column_profile(self, c: _Column) -> ColumnProfile:
        n_missing = self.n_rows - c.present
        stats = c.stats
        extra: dict[str, Any] = {}
        if c.has_stats and stats.get("n_stat"):
            std = _finite(stats.get("std"))
            extra = {
                "min": self._stat_value(c, stats["min"]),
                "max": self._stat_value(c, stats["max"]),
                "mean": self._stat_value(c, stats["mean"])
                if c.is_datetime
                else (_finite(stats["mean"])),
                "std": std / _DAY_SECONDS if c.is_datetime and std is not None else std,
                "skewness": None if c.is_datetime else _finite(stats.get("skewness")),
                "quantiles": {
                    _quantile_name(q): self._stat_value(c, value)
                    for q, value in zip(QUANTILES, stats["quantiles"], strict=True)
                },
            }
        if c.has_stats and not c.is_datetime and c.present:
            extra["n_zeros"] = int(stats["n_zeros"])
        if c.family == "float" and c.present:
            extra["n_infinite"] = int(stats["n_infinite"])
        if c.family == "string" and c.present:
            extra["min_length"] = int(stats["min_length"])
            extra["max_length"] = int(stats["max_length"])
            extra["mean_length"] = float(stats["mean_length"])
        return ColumnProfile(
            name=c.name,
            logical_type=c.logical_type,
            duckdb_type=c.duckdb_type,
            n_missing=n_missing,
            missing_share=n_missing / self.n_rows if self.n_rows else 0.0,
            n_distinct=c.distinct,
            distinct_exact=c.distinct_exact or not c.present,
            histogram=c.histogram,
            top_values=c.top_values,
            **extra,
        )


def _one(relation: duckdb.DuckDBPyConnection) -> tuple[Any, ...]:
    row = relation.fetchone()
    if row is None:  # an aggregate without GROUP BY always returns a row
        raise RuntimeError("DuckDB returned no row for an aggregate query")
    return row


def _complete(c: _Column, n_rows: int) -> bool:
    """Whether every row has a finite value in this column."""
    return c.stats["n_stat"] == n_rows


def _pearson(
    k: int | None,
    sa: float | None,
    sb: float | None,
    sa2: float | None,
    sb2: float | None,
    sab: float | None,
) -> float | None:
    """Pearson's r from sums over ``k`` rows of deviations ``a``, ``b`` from any fixed points:
    ``sa = Σa``, ``sa2 = Σa²``, ``sab = Σab``...; None when a column does not vary there."""
    if not k or k < 2 or None in (sa, sb, sa2, sb2, sab):
        return None
    var_a, var_b = sa2 - sa * sa / k, sb2 - sb * sb / k
    # Rounding leaves a constant column a tiny variance; it has no correlation.
    if var_a <= 1e-12 * sa2 or var_b <= 1e-12 * sb2:
        return None
    r = _finite((sab - sa * sb / k) / math.sqrt(var_a * var_b))
    return None if r is None else max(-1.0, min(1.0, r))


def _varies(c: _Column) -> bool:
    return bool(c.stats.get("n_stat")) and c.stats["min"] != c.stats["max"]


def _distinct_unit(c: _Column) -> int | None:
    """The step between possible values of an integer or date column whose range is short
    enough to count its distinct values exactly with a bitmap, else None."""
    if not c.present or c.stats.get("min") is None:
        return None
    unit = 1 if c.family == "integer" else int(_DAY_SECONDS) if c.family == "date" else None
    if unit is None or (c.stats["max"] - c.stats["min"]) / unit > BITMAP_MAX_RANGE:
        return None
    return unit


@dataclass(frozen=True)
class _Bins:
    start: float
    width: float
    n_bins: int
    edges: tuple[float, ...]


def _bins(c: _Column, lo: float | int, hi: float | int) -> _Bins:
    """Histogram bins: ``HISTOGRAM_BINS`` equal slices of ``[lo, hi]``, except that integer
    and date columns get half-open bins a whole number of values (days) wide, so that every
    bin can hold as many distinct values as the next and none shows a spurious dip."""
    if lo == hi:
        return _Bins(float(lo), 0.0, 1, (float(lo), float(hi)))
    unit = 1 if c.family == "integer" else _DAY_SECONDS if c.family == "date" else None
    if unit is not None:
        span = round((hi - lo) / unit) + 1  # possible values, min and max included
        width = math.ceil(span / HISTOGRAM_BINS) * unit
        n_bins = math.ceil(span * unit / width)
        edges = tuple(float(lo) + k * width for k in range(n_bins + 1))
        return _Bins(float(lo), float(width), n_bins, edges)
    width = (float(hi) - float(lo)) / HISTOGRAM_BINS
    edges = tuple(float(lo) + k * width for k in range(HISTOGRAM_BINS)) + (float(hi),)
    return _Bins(float(lo), width, HISTOGRAM_BINS, edges)


def _finite(value: Any) -> float | None:
    """A float that JSON can hold: NaN and infinities become None."""
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _iso(epoch_seconds: float, c: _Column) -> str | None:
    """Epoch seconds as ISO-8601: a bare date for whole days of a DATE column."""
    try:
        moment = _EPOCH + timedelta(seconds=float(epoch_seconds))
    except (OverflowError, ValueError):
        return None  # beyond Python's datetime range (years 1 to 9999)
    if (
        c.family == "date"
        and moment.hour == moment.minute == moment.second == 0
        and (moment.microsecond == 0)
    ):
        return moment.date().isoformat()
    if "WITH TIME ZONE" in c.duckdb_type:
        return moment.replace(tzinfo=UTC).isoformat()
    return moment.isoformat()


def _quantile_name(q: float) -> str:
    return f"p{round(q * 100):d}"


def _typed_value(c: _Column, value: str) -> str | bool:
    if c.family == "boolean":
        return value == "true"
    return value


def _name_looks_like_id(name: str) -> bool:
    # Split snake_case, kebab-case, spaces and camelCase ("customerID", "orderId").
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", name)
    tokens = [t.lower() for t in re.split(r"[^A-Za-z0-9]+", spaced) if t]
    return bool(tokens) and (tokens[-1] in _ID_TOKENS or tokens[0] == "id")


def _values_look_like_id(c: _Column, n_rows: int) -> bool:
    if c.family == "integer":
        lo, hi = c.stats.get("min"), c.stats.get("max")
        # Unique integers that fill a whole range are a row counter.
        return lo is not None and hi is not None and int(hi) - int(lo) + 1 == n_rows
    # Codes, hashes and UUIDs: one fixed width.
    return (
        c.stats.get("min_length") == c.stats.get("max_length")
        and (c.stats.get("min_length") or 0) >= 4
    )


def _could_be_id(c: _Column, n_rows: int) -> bool:
    return (
        c.family in ("integer", "string")
        and n_rows >= 2
        and c.present == n_rows
        and (_name_looks_like_id(c.name) or _values_look_like_id(c, n_rows))
    )


def _alerts(c: ColumnProfile, n_rows: int, *, looks_like_id: bool) -> list[Alert]:
    """The alerts a column deserves, most fundamental first."""
    alerts: list[Alert] = []
    present = n_rows - c.n_missing
    name = repr(c.name)
    if n_rows and c.missing_share > MOSTLY_MISSING_SHARE:
        how_many = (
            "every row"
            if c.n_missing == n_rows
            else f"{c.missing_share:.0%} of rows ({c.n_missing:,} of {n_rows:,})"
        )
        alerts.append(
            Alert(
                c.name,
                AlertKind.MOSTLY_MISSING,
                f"{name} is missing in {how_many}; drop it or fill it before training.",
            )
        )
    if present and c.n_distinct == 1 and c.distinct_exact:
        value = c.min if c.min is not None else (c.top_values[0].value if c.top_values else "")
        alerts.append(
            Alert(
                c.name,
                AlertKind.CONSTANT,
                f"{name} holds the same value ({value}) in every row that has one, "
                "so it tells a model nothing.",
            )
        )
    if looks_like_id:
        alerts.append(
            Alert(
                c.name,
                AlertKind.LIKELY_ID,
                f"{name} looks like an identifier: all {n_rows:,} values are "
                "different and none is missing. Leave it out of the features.",
            )
        )
    if (
        c.logical_type is LogicalType.CATEGORICAL
        and not looks_like_id
        and c.n_distinct > HIGH_CARDINALITY_DISTINCT
        and present
        and c.n_distinct / present > HIGH_CARDINALITY_SHARE
    ):
        alerts.append(
            Alert(
                c.name,
                AlertKind.HIGH_CARDINALITY,
                f"{name} has {c.n_distinct:,} distinct values for {present:,} rows; "
                "as a category it will hardly generalise. Group rare values or "
                "treat it as text.",
            )
        )
    if c.skewness is not None and abs(c.skewness) > HEAVY_SKEW:
        right = c.skewness > 0
        side = (
            "right (a long tail of large values)" if right else "left (a long tail of small values)"
        )
        # log(x) needs x > 0; log1p covers zeros, so a non-negative column qualifies.
        non_negative = isinstance(c.min, int | float) and c.min >= 0
        hint = "; a log transform may help" if right and non_negative else ""
        alerts.append(
            Alert(
                c.name,
                AlertKind.SKEWED,
                f"{name} is heavily skewed to the {side}, skewness {c.skewness:.1f}{hint}.",
            )
        )
    return alerts


def ydata_report_html(
    parquet_path: str | Path,
    *,
    sample_rows: int = 100_000,
    seed: int = 0,
    minimal: bool = True,
    name: str | None = None,
) -> tuple[str, int, int]:
    """Build the ydata-profiling HTML report of a Parquet file, on a sample when it is large.

    ydata-profiling works on pandas in memory and is slow, so a table of more than
    ``sample_rows`` rows is reduced to a reproducible reservoir sample of that many rows
    (drawn by DuckDB, so the whole table is never in memory); the report title states the
    sample size. The package is imported only here, with its usage analytics switched off.

    Args:
        parquet_path: the Parquet file to report on.
        sample_rows: the most rows the report is computed on.
        seed: seed of the sample, so the same file gives the same report.
        minimal: ydata-profiling's minimal mode (no correlations or interactions), which is
            many times faster.
        name: what the report title calls the table, e.g. ``"sales v2"``; defaults to the
            file's name.

    Returns:
        ``(html, rows_used, total_rows)``.

    Raises:
        FileNotFoundError: ``parquet_path`` does not exist.
        ValueError: ``sample_rows`` is below 1.
    """
    path = Path(parquet_path)
    if not path.is_file():
        raise FileNotFoundError(f"cannot build a report of {str(path)!r}: no such file")
    if sample_rows < 1:
        raise ValueError(
            f"The 'sample_rows' parameter of ydata_report_html must be an "
            f"int >= 1. Got {sample_rows!r} instead."
        )
    with tempfile.TemporaryDirectory(prefix="pond-report-") as workdir:
        scan = _parquet_scan(path, Path(workdir))
        with duckdb.connect() as con:
            total_rows = int(_one(con.execute(f"SELECT count(*) FROM {scan}"))[0])
            if total_rows > sample_rows:
                frame = con.execute(
                    f"SELECT * FROM {scan} USING SAMPLE reservoir({int(sample_rows)} ROWS) "
                    f"REPEATABLE ({int(seed)})"
                ).df()
            else:
                frame = con.execute(f"SELECT * FROM {scan}").df()
    rows_used = len(frame)
    label = name or path.stem
    if rows_used < total_rows:
        title = f"{label}: random sample of {rows_used:,} of {total_rows:,} rows (seed {seed})"
    else:
        title = f"{label}: all {total_rows:,} rows"
    # Must be set before the import: ydata-profiling reads it when the package loads.
    os.environ["YDATA_PROFILING_NO_ANALYTICS"] = "True"
    with warnings.catch_warnings():
        # Its import warns that the package is renamed: noise for a user who clicked a button.
        warnings.simplefilter("ignore", DeprecationWarning)
        from ydata_profiling import ProfileReport

    report = ProfileReport(frame, title=title, minimal=minimal, progress_bar=False)
    return report.to_html(), rows_used, total_rows
