"""Feature views: named, versioned data prep that training and serving share.

A feature view is data, not code: a source (a dataset version, or a SQL
`SELECT` over datasets) and a list of low-code steps (select, rename, cast,
filter, derive, impute, bin, one-hot, frequency encoding, de-duplication,
joins and entity aggregates over a time window). Each step compiles to DuckDB
SQL from the same definitions in two modes: *training* runs over the pinned
dataset versions (entity aggregates as a point-in-time join, so a row only
sees events strictly before its own timestamp), and *serving* runs the
row-level part over incoming records in an in-memory DuckDB, looking entity
aggregates up in the latest values materialised with the view. Steps that
learn from data (imputed means, bin edges, categories, frequencies) are fitted
once when the view is compiled and stored with the version, so both modes
apply the same constants. User expressions are parsed with sqlglot and only an
allow-list of expression nodes and functions is accepted; the SQL that runs is
generated from the parsed tree, never pasted from the user's text.

This module owns the steps model, validation, compilation, preview, saving and
versioning (content-hashed), materialisation (Parquet artifacts) and the
serving transform. SQL on Pond's own tables lives in `core.store.features`.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import re
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import sqlglot
from sqlglot import exp

from core import auth, datasets, store
from core.errors import AlreadyExists, InvalidInput, NotFound, PondError
from core.store import Workspace
from core.store import artifacts as artifact_store
from core.store import datasets as dataset_rows
from core.store import features as rows

NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,62}$")
VIEW_PREFIX = "fv:"
CAST_TYPES = ("INTEGER", "BIGINT", "DOUBLE", "VARCHAR", "BOOLEAN", "DATE", "TIMESTAMP")
AGGREGATES = {
    "count": "count({col})",
    "sum": "sum({col})",
    "mean": "avg({col})",
    "min": "min({col})",
    "max": "max({col})",
    "count_distinct": "count(DISTINCT {col})",
}
IMPUTE_STRATEGIES = ("mean", "median", "mode", "constant")
WINDOW_RE = re.compile(r"^\s*(\d+)\s+(second|minute|hour|day|week|month|year)s?\s*$", re.I)
MAX_CATEGORIES = 50
MAX_FREQUENCY_LEVELS = 1000
PREVIEW_ROWS = 50
_RID = "__pond_rid"
_RESERVED_PREFIX = "__pond"

# What each step does, for people (the page and `pond features` list them).
OPS: dict[str, str] = {
    "select": "keep only some columns",
    "rename": "rename columns",
    "cast": "change column types",
    "filter": "keep rows where a condition holds (training only; serving scores every record)",
    "derive": "add a column from an expression (arithmetic, date parts, text, CASE)",
    "impute": "fill missing values (mean, median, mode or a constant)",
    "bin": "cut a number into bins (edges or quantiles)",
    "one_hot": "one 0/1 column per category",
    "frequency_encode": "replace a category by its share of rows",
    "dedupe": "drop duplicate rows, or keep the latest row per key (training only)",
    "join": "add columns from another dataset on keys",
    "aggregate": "per-entity count/sum/mean/min/max/distinct over a time window",
}
# Steps that pick rows rather than compute columns: serving scores every record it gets.
_ROW_SELECTION = {"filter", "dedupe"}

# --- the expression allow-list --------------------------------------------------------

_ALLOWED_NODES: tuple[type[exp.Expression], ...] = (
    exp.Column,
    exp.Identifier,
    exp.Literal,
    exp.Boolean,
    exp.Null,
    exp.Paren,
    exp.Neg,
    exp.Not,
    exp.And,
    exp.Or,
    exp.Add,
    exp.Sub,
    exp.Mul,
    exp.Div,
    exp.IntDiv,
    exp.Mod,
    exp.Pow,
    exp.EQ,
    exp.NEQ,
    exp.GT,
    exp.GTE,
    exp.LT,
    exp.LTE,
    exp.Is,
    exp.In,
    exp.Between,
    exp.Like,
    exp.ILike,
    exp.Case,
    exp.If,
    exp.Cast,
    exp.TryCast,
    exp.DataType,
    exp.Interval,
    exp.Var,
    exp.Extract,
    exp.DPipe,
    exp.Tuple,
)
# Function names (sqlglot's node key, or the name of a function it does not model).
_ALLOWED_FUNCTIONS = frozenset(
    {
        # numbers
        "abs",
        "round",
        "floor",
        "ceil",
        "ln",
        "log",
        "log2",
        "log10",
        "exp",
        "sqrt",
        "pow",
        "power",
        "sign",
        "greatest",
        "least",
        "coalesce",
        "nullif",
        "ifnull",
        "nvl",
        # text
        "lower",
        "upper",
        "length",
        "substring",
        "substr",
        "trim",
        "ltrim",
        "rtrim",
        "replace",
        "concat",
        "strposition",
        "strpos",
        "startswith",
        "starts_with",
        "endswith",
        "ends_with",
        "contains",
        "left",
        "right",
        "lpad",
        "rpad",
        "pad",
        "regexplike",
        "regexp_matches",
        "regexpextract",
        "regexp_extract",
        "regexpreplace",
        "regexp_replace",
        "reverse",
        "initcap",
        # dates and times
        "year",
        "month",
        "day",
        "dayofweek",
        "dayofyear",
        "dayofmonth",
        "week",
        "weekofyear",
        "quarter",
        "hour",
        "minute",
        "second",
        "date_part",
        "datepart",
        "timestamptrunc",
        "datetrunc",
        "date_trunc",
        "datediff",
        "date_diff",
        "dateadd",
        "date_add",
        "epoch",
        "timetostr",
        "strftime",
        "strtotime",
        "strptime",
        "strtodate",
        "make_date",
        "todays",
        "last_day",
        "lastday",
        "dayname",
        "monthname",
        "isodow",
        "isoyear",
        "yearweek",
        "timestampdiff",
        "timestamp_diff",
        "tsordstodate",
        "tsordstotime",
        "date",
        "todate",
    }
)


def _function_name(node: exp.Expression) -> str:
    if isinstance(node, exp.Anonymous):
        return str(node.name).lower()
    return node.key.lower()


def parse_expression(text: str, where: str) -> exp.Expression:
    """Parse a user's expression and check it against the allow-list.

    Args:
        text: the expression, in DuckDB's SQL dialect (e.g. `bill_length_mm / bill_depth_mm`).
        where: names the step, for messages ("step 3 (derive 'ratio')").

    Returns:
        The parsed expression tree.

    Raises:
        InvalidInput: it does not parse, is a statement rather than an expression,
            holds a subquery, a table reference, an aggregate or window, or a
            function outside the allow-list.
    """
    if not isinstance(text, str) or not text.strip():
        raise InvalidInput(f"{where}: the expression is empty; write one, e.g. `a / b`")
    try:
        parsed = sqlglot.parse(text, read="duckdb")
    except sqlglot.errors.ParseError as exc:
        first = str(exc).splitlines()[0]
        raise InvalidInput(f"{where}: the expression {text!r} does not parse: {first}") from exc
    if len(parsed) != 1 or parsed[0] is None:
        raise InvalidInput(
            f"{where}: {text!r} holds {len(parsed)} statements; write a single expression"
        )
    tree = parsed[0]
    for node in tree.walk():
        if isinstance(node, exp.Query | exp.Subquery | exp.Table | exp.From | exp.Join):
            raise InvalidInput(
                f"{where}: {text!r} holds a query or a table reference; an expression may "
                "use this row's columns, constants and functions only"
            )
        if isinstance(node, exp.AggFunc | exp.Window):
            raise InvalidInput(
                f"{where}: {text!r} uses an aggregate or window function; use an "
                "'aggregate' step for per-entity aggregates"
            )
        if isinstance(node, exp.Column) and (node.table or node.args.get("db")):
            raise InvalidInput(
                f"{where}: {text!r} names a table ({node.sql('duckdb')}); refer to columns by "
                "their name only"
            )
        if isinstance(node, exp.Star):
            raise InvalidInput(f"{where}: {text!r} uses '*'; name the columns instead")
        if isinstance(node, exp.Func) and not isinstance(
            node, exp.Case | exp.If | exp.Cast | exp.TryCast | exp.Extract
        ):
            name = _function_name(node)
            if name not in _ALLOWED_FUNCTIONS:
                raise InvalidInput(
                    f"{where}: function {name!r} is not allowed in a feature expression; "
                    "use arithmetic, CASE, CAST, or number, text and date functions"
                )
            continue
        if not isinstance(node, _ALLOWED_NODES):
            raise InvalidInput(
                f"{where}: {text!r} uses {node.key.upper()}, which a feature expression may "
                "not contain; use arithmetic, comparisons, CASE, CAST and functions"
            )
    return tree


def _expression_columns(tree: exp.Expression) -> list[str]:
    return [c.name for c in tree.find_all(exp.Column)]


# --- definitions ----------------------------------------------------------------------


@dataclass(frozen=True)
class Definition:
    """What a feature view is: a source and steps (plain JSON-able data).

    Attributes:
        source: "NAME", "NAME:VERSION" of a dataset, or "fv:NAME[:VERSION]" of a
            materialised feature view; None when `sql` is given.
        sql: a single SELECT over datasets (by `NAME` or `NAME_vK`), or None.
        steps: the low-code steps applied after the source, in order.
    """

    source: str | None = None
    sql: str | None = None
    steps: tuple[dict[str, Any], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "sql": self.sql, "steps": [dict(s) for s in self.steps]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Definition:
        if not isinstance(data, Mapping):
            raise InvalidInput("a feature view definition must be an object with source/sql/steps")
        unknown = set(data) - {"source", "sql", "steps"}
        if unknown:
            raise InvalidInput(
                f"unknown field {sorted(unknown)[0]!r} in the feature view definition; it takes "
                "'source', 'sql' and 'steps'"
            )
        steps = data.get("steps") or []
        if not isinstance(steps, list | tuple) or not all(isinstance(s, Mapping) for s in steps):
            raise InvalidInput("'steps' must be a list of objects, each with an 'op'")
        return cls(data.get("source"), data.get("sql"), tuple(dict(s) for s in steps))


def load_definition(path: str | Path) -> Definition:
    """A definition from a JSON file: {"source": ..., "steps": [...]} or just the steps list.

    Raises:
        InvalidInput: the file is missing or not valid JSON of that shape.
    """
    p = Path(path)
    if not p.is_file():
        raise InvalidInput(f"{p} is not a file; pass a JSON file of steps")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"{p} is not valid JSON: {exc}") from exc
    if isinstance(data, list):
        data = {"steps": data}
    return Definition.from_dict(data)


def check_name(name: str) -> str:
    """Raises: InvalidInput unless `name` can name a feature view."""
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise InvalidInput(
            f"feature view name {name!r} is not allowed: use up to 63 letters, digits and "
            "underscores, starting with a letter (for example 'penguin_features')"
        )
    return name


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidInput(f"{value!r} cannot be used as a constant; use a finite number")
        return repr(value)
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return f"TIMESTAMP '{value.isoformat(sep=' ')}'"
    if isinstance(value, date):
        return f"DATE '{value.isoformat()}'"
    return "'" + str(value).replace("'", "''") + "'"


# --- pinned tables ----------------------------------------------------------------------


@dataclass(frozen=True)
class _Table:
    """A dataset version or materialised feature view version, pinned by content hash."""

    kind: str  # "dataset" or "feature_view"
    name: str
    version: int
    content_sha256: str
    columns: tuple[tuple[str, str], ...]

    @property
    def ref(self) -> str:
        prefix = VIEW_PREFIX if self.kind == "feature_view" else ""
        return f"{prefix}{self.name}:{self.version}"

    @property
    def sql_name(self) -> str:
        prefix = "fv_" if self.kind == "feature_view" else ""
        return f"{prefix}{self.name}_v{self.version}"

    def lineage(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "version": self.version,
            "content_sha256": self.content_sha256,
        }


def _split_ref(ref: str, what: str) -> tuple[str, str, int | None]:
    if not isinstance(ref, str) or not ref.strip():
        raise InvalidInput(f"{what}: name a dataset (NAME or NAME:VERSION) or fv:NAME")
    kind = "dataset"
    text = ref.strip()
    if text.startswith(VIEW_PREFIX):
        kind, text = "feature_view", text[len(VIEW_PREFIX) :]
    name, _, version = text.partition(":")
    if version and (not version.isdigit() or int(version) < 1):
        raise InvalidInput(f"{what}: {ref!r} is not a valid reference; write NAME or NAME:VERSION")
    if not NAME_RE.match(name):
        raise InvalidInput(f"{what}: {ref!r} does not name a dataset or feature view")
    return kind, name, int(version) if version else None


def _pin(ws: Workspace, ref: str, what: str, own_name: str | None) -> _Table:
    kind, name, version = _split_ref(ref, what)
    if kind == "feature_view":
        if own_name is not None and name == own_name:
            raise InvalidInput(
                f"{what}: feature view '{own_name}' cannot read itself ({ref}); build it from "
                "datasets or other feature views"
            )
        fv = get_view(ws, name, version)
        if fv.materialized_sha256 is None:
            raise InvalidInput(
                f"{what}: feature view {fv.ref} is not materialised yet; run "
                f"`pond features materialize {fv.name}:{fv.version}` first"
            )
        return _Table(
            "feature_view",
            fv.name,
            fv.version,
            fv.materialized_sha256,
            tuple((c["name"], c["type"]) for c in fv.columns),
        )
    try:
        dv = datasets.get_version(ws, name, version)
    except NotFound as exc:
        raise NotFound(f"{what}: {exc}") from exc
    if own_name is not None and name == own_name:
        raise InvalidInput(f"{what}: feature view '{own_name}' cannot read itself")
    return _Table(
        "dataset",
        dv.name,
        dv.version,
        dv.content_sha256,
        tuple((c.name, c.type) for c in dv.columns),
    )


def _sandbox(
    ws: Workspace, tables: Sequence[_Table], *, threads: int = 2
) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB where each pinned table is a view over its Parquet artifact,
    with file access limited to the artifact folder and the configuration locked."""
    con = duckdb.connect(config={"memory_limit": "1GB", "threads": threads})
    try:
        for t in tables:
            path = str(artifact_store.artifact_path(ws, t.content_sha256))
            if not Path(path).exists():
                raise NotFound(f"the data file of {t.ref} is missing; run `pond doctor`")
            con.execute(
                f"CREATE VIEW {_q(t.sql_name)} AS SELECT * FROM read_parquet({_literal(path)})"
            )
        folder = str(ws.artifacts_dir)
        con.execute(f"SET allowed_directories=[{_literal(folder + '/')}]")
        con.execute("SET enable_external_access=false")
        con.execute("SET lock_configuration=true")
    except BaseException:
        con.close()
        raise
    return con


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    text = re.sub(r"^[A-Za-z ]*Error: ", "", text)
    return text.splitlines()[0] if text else type(exc).__name__


# --- SQL base ------------------------------------------------------------------------------

_FILE_FUNCTIONS = re.compile(r"^(read_|glob$|parquet_|sniff_csv|query_table|query$)", re.I)


def _check_select(
    ws: Workspace, sql: str, own_name: str | None
) -> tuple[str, list[_Table], _Table]:
    """Validate a user's SELECT and pin the datasets it reads.

    Returns:
        The SELECT rewritten to pinned table names, the pinned tables, and the
        primary table (the first one in the outermost FROM, which serving binds
        to the incoming records).
    """
    if not isinstance(sql, str) or not sql.strip():
        raise InvalidInput("the SQL is empty; write a SELECT over your datasets")
    try:
        parsed = sqlglot.parse(sql, read="duckdb")
    except sqlglot.errors.ParseError as exc:
        raise InvalidInput(f"the SQL does not parse: {str(exc).splitlines()[0]}") from exc
    parsed = [p for p in parsed if p is not None]
    if len(parsed) != 1:
        raise InvalidInput(f"a feature view is one SELECT; this SQL has {len(parsed)} statements")
    tree = parsed[0]
    if not isinstance(tree, exp.Query):
        raise InvalidInput(
            f"a feature view's SQL must be a SELECT; this is {tree.key.upper()}. Write a SELECT"
        )
    for node in tree.walk():
        if isinstance(node, exp.DDL | exp.DML | exp.Command | exp.Set | exp.Pragma):
            raise InvalidInput("a feature view's SQL may only read; it holds a write or command")
        if isinstance(node, exp.Func) and _FILE_FUNCTIONS.match(_function_name(node)):
            raise InvalidInput(
                f"a feature view's SQL may read the workspace's datasets only, not files "
                f"({_function_name(node)})"
            )
    cte_names = {c.alias_or_name for c in tree.find_all(exp.CTE)}
    pinned: dict[str, _Table] = {}
    for table in tree.find_all(exp.Table):
        if isinstance(table.this, exp.Func) or not table.name:
            raise InvalidInput("a feature view's SQL may read the workspace's datasets only")
        if table.args.get("db") or table.args.get("catalog"):
            raise InvalidInput(
                f"table {table.sql('duckdb')} names a schema or database; use dataset names"
            )
        raw = table.name
        if raw in cte_names:
            continue
        if own_name is not None and raw == own_name:
            raise InvalidInput(f"feature view '{own_name}' cannot read itself in its SQL")
        match = re.match(r"^(.*)_v(\d+)$", raw)
        ref = f"{match.group(1)}:{match.group(2)}" if match and match.group(1) else raw
        try:
            pinned_table = pinned.get(raw) or _pin(ws, ref, f"table {raw!r} in the SQL", own_name)
        except (NotFound, InvalidInput):
            known = [dv.name for dv in datasets.latest_versions(ws)]
            hint = difflib.get_close_matches(raw, known, n=1)
            raise InvalidInput(
                f"the SQL reads table {raw!r}, which is no dataset"
                + (f"; did you mean {hint[0]!r}?" if hint else "")
                + f" Datasets: {', '.join(sorted(known)) or 'none yet'}"
            ) from None
        pinned[raw] = pinned_table
        alias = table.alias
        table.set("this", exp.to_identifier(pinned_table.sql_name, quoted=True))
        if not alias:
            table.set("alias", exp.TableAlias(this=exp.to_identifier(raw, quoted=True)))
    if not pinned:
        raise InvalidInput("the SQL reads no dataset; write SELECT ... FROM a dataset")
    # The primary table is the first dataset read, in reading order (CTEs included).
    by_name = {t.sql_name: t for t in pinned.values()}
    primary = next(
        (by_name[t.name] for t in tree.find_all(exp.Table, bfs=False) if t.name in by_name),
        next(iter(pinned.values())),
    )
    return tree.sql(dialect="duckdb"), list(dict.fromkeys(pinned.values())), primary


# --- compiling steps ------------------------------------------------------------------------


@dataclass
class _State:
    """Where the compiler stands after some steps."""

    con: duckdb.DuckDBPyConnection
    base_training: str
    training: list[tuple[str, str]] = field(default_factory=list)
    serving: list[tuple[str, str]] = field(default_factory=list)
    latest: dict[str, str] = field(default_factory=dict)
    schema: list[tuple[str, str]] = field(default_factory=list)
    referenced: set[str] = field(default_factory=set)
    warnings: list[str] = field(default_factory=list)
    # Row-level views carry a record id through serving to keep the records' order.
    carry_rid: bool = True

    @property
    def names(self) -> list[str]:
        return [c for c, _ in self.schema]

    @property
    def types(self) -> dict[str, str]:
        return dict(self.schema)

    def chain(self, which: str = "training", base: str | None = None) -> str:
        ctes = self.training if which == "training" else self.serving
        parts = list(ctes)
        if base is not None:
            parts[0] = (parts[0][0], base)
        body = ",\n".join(f"{n} AS (\n  {s}\n)" for n, s in parts)
        return f"WITH {body}\nSELECT * FROM {parts[-1][0]}"

    @property
    def last(self) -> str:
        return self.training[-1][0]


def _render(state: _State, which: str = "training") -> str:
    return state.chain(which)


def _column(state: _State, name: Any, where: str) -> str:
    if not isinstance(name, str) or not name:
        raise InvalidInput(f"{where}: name a column (got {name!r})")
    if name not in state.types:
        hint = difflib.get_close_matches(name, state.names, n=1)
        raise InvalidInput(
            f"{where}: column {name!r} does not exist here"
            + (f"; did you mean {hint[0]!r}?" if hint else "")
            + f" The columns at this step are: {', '.join(state.names)}"
        )
    state.referenced.add(name)
    return name


def _new_name(state: _State, name: Any, where: str, *, replacing: str | None = None) -> str:
    if not isinstance(name, str) or not re.match(r"^[A-Za-z_][A-Za-z0-9_ .\-()/%]{0,119}$", name):
        raise InvalidInput(
            f"{where}: {name!r} is not a usable column name; use letters, digits and underscores"
        )
    if name.startswith(_RESERVED_PREFIX):
        raise InvalidInput(f"{where}: column names starting with {_RESERVED_PREFIX!r} are reserved")
    if name in state.types and name != replacing:
        raise InvalidInput(
            f"{where}: a column named {name!r} already exists; choose another name"
            + (' (or set "replace": true to overwrite it)' if replacing is None else "")
        )
    return name


def _numeric(type_name: str) -> bool:
    t = type_name.upper()
    return t in {
        "TINYINT",
        "SMALLINT",
        "INTEGER",
        "BIGINT",
        "HUGEINT",
        "UTINYINT",
        "USMALLINT",
        "UINTEGER",
        "UBIGINT",
        "FLOAT",
        "DOUBLE",
        "REAL",
    } or t.startswith("DECIMAL")


def _temporal(type_name: str) -> bool:
    return type_name.upper().startswith(("DATE", "TIMESTAMP"))


def _type_family(type_name: str) -> str:
    t = type_name.upper()
    if _numeric(t):
        return (
            "integer"
            if not (t in {"FLOAT", "DOUBLE", "REAL"} or t.startswith("DECIMAL"))
            else "number"
        )
    if _temporal(t):
        return "time"
    return t


def _expr_sql(state: _State, text: str, where: str) -> tuple[str, exp.Expression]:
    tree = parse_expression(text, where)
    for name in _expression_columns(tree):
        _column(state, _match_case(state, name), where)
    # Re-quote columns to their exact names so DuckDB binds the same column either way.
    for col in tree.find_all(exp.Column):
        col.set("this", exp.to_identifier(_match_case(state, col.name), quoted=True))
    return tree.sql(dialect="duckdb"), tree


def _match_case(state: _State, name: str) -> str:
    if name in state.types:
        return name
    lowered = {n.lower(): n for n in state.names}
    return lowered.get(name.lower(), name)


def _fetch(state: _State, sql: str, where: str) -> list[tuple]:
    try:
        return state.con.execute(sql).fetchall()
    except duckdb.Error as exc:
        raise InvalidInput(f"{where}: {_first_line(exc)}") from exc


def _describe(state: _State, where: str, text: str | None = None) -> list[tuple[str, str]]:
    try:
        described = state.con.execute(f"DESCRIBE {_render(state)}").fetchall()
    except duckdb.Error as exc:
        detail = _first_line(exc)
        what = f" in {text!r}" if text else ""
        if (
            "No function matches" in detail
            or "Cannot compare" in detail
            or "Conversion" in detail
            or "cast" in detail.lower()
        ):
            raise InvalidInput(f"{where}: type error{what}: {detail}") from exc
        raise InvalidInput(f"{where}: {detail}") from exc
    return [(r[0], r[1]) for r in described]


def _carry(mode: str) -> list[str]:
    return [_q(_RID)] if mode == "serving" else []


def _select_list(items: list[str], mode: str) -> str:
    return ", ".join(items + _carry(mode))


def _push(state: _State, training: str, serving: str) -> None:
    index = len(state.training)
    state.training.append((f"s{index}", training))
    state.serving.append((f"s{index}", serving))


def _compile_step(
    state: _State,
    index: int,
    step: Mapping[str, Any],
    fitted: dict | None,
    ws: Workspace,
    own_name: str | None,
    tables: dict[str, _Table],
) -> dict:
    """Add one step to both chains; returns the fitted constants it used."""
    op = step.get("op")
    label = step.get("name") or step.get("column") or ""
    where = f"step {index} ({op}{' ' + repr(label) if label else ''})"
    if op not in OPS:
        raise InvalidInput(f"step {index}: unknown op {op!r}; the steps are {', '.join(OPS)}")
    prev = state.last
    cols = state.names
    fit: dict[str, Any] = dict(fitted or {})

    def both(items: list[str], tail: str = "") -> None:
        _push(
            state,
            f"SELECT {_select_list(items, 'training')} FROM {prev}{tail}",
            f"SELECT {_select_list(items, 'serving' if state.carry_rid else 'training')} "
            f"FROM {prev}{tail}",
        )

    if op == "select":
        chosen = step.get("columns")
        if not isinstance(chosen, list) or not chosen:
            raise InvalidInput(f"{where}: 'columns' must list at least one column to keep")
        both([_q(_column(state, c, where)) for c in chosen])
    elif op == "rename":
        mapping = step.get("columns")
        if not isinstance(mapping, Mapping) or not mapping:
            raise InvalidInput(f"{where}: 'columns' must map old names to new names")
        for old in mapping:
            _column(state, old, where)
        final = [mapping.get(c, c) for c in cols]
        for new in mapping.values():
            if not isinstance(new, str) or not NAME_RE.match(new.replace(" ", "_")):
                raise InvalidInput(f"{where}: {new!r} is not a usable column name")
        dupes = sorted({n for n in final if final.count(n) > 1})
        if dupes:
            raise InvalidInput(f"{where}: renaming would give two columns named {dupes[0]!r}")
        both([f"{_q(c)} AS {_q(mapping[c])}" if c in mapping else _q(c) for c in cols])
    elif op == "cast":
        mapping = step.get("columns")
        if not isinstance(mapping, Mapping) or not mapping:
            raise InvalidInput(f"{where}: 'columns' must map column names to types")
        for c, t in mapping.items():
            _column(state, c, where)
            if str(t).upper() not in CAST_TYPES:
                raise InvalidInput(
                    f"{where}: type {t!r} for column {c!r} is not one of {', '.join(CAST_TYPES)}"
                )
        both(
            [
                f"CAST({_q(c)} AS {str(mapping[c]).upper()}) AS {_q(c)}" if c in mapping else _q(c)
                for c in cols
            ]
        )
    elif op == "filter":
        condition, _ = _expr_sql(state, step.get("condition", ""), where)
        state.training.append((f"s{index}", f"SELECT * FROM {prev} WHERE ({condition})"))
        state.serving.append((f"s{index}", f"SELECT * FROM {prev}"))
        check = _describe_expr(state, prev, condition, where, step.get("condition"))
        if check != "BOOLEAN":
            raise InvalidInput(
                f"{where}: the condition {step.get('condition')!r} gives {check}, not true/false; "
                "write a comparison such as `body_mass_g > 3000`"
            )
    elif op == "derive":
        name = _new_name(
            state,
            step.get("name"),
            where,
            replacing=step.get("name") if step.get("replace") else None,
        )
        sql, _ = _expr_sql(state, step.get("expression", ""), where)
        _describe_expr(state, prev, sql, where, step.get("expression"))
        items = [(f"({sql}) AS {_q(name)}" if c == name else _q(c)) for c in cols]
        if name not in cols:
            items.append(f"({sql}) AS {_q(name)}")
        both(items)
    elif op == "impute":
        targets = step.get("columns")
        if isinstance(targets, str):
            targets = [targets]
        if not isinstance(targets, list) or not targets:
            raise InvalidInput(f"{where}: 'columns' must list the columns to fill")
        strategy = step.get("strategy", "mean")
        if strategy not in IMPUTE_STRATEGIES:
            raise InvalidInput(
                f"{where}: strategy {strategy!r} is not one of {', '.join(IMPUTE_STRATEGIES)}"
            )
        values = fit.get("values") or {}
        for c in targets:
            _column(state, c, where)
            if c in values:
                continue
            if strategy == "constant":
                if "value" not in step or step["value"] is None:
                    raise InvalidInput(f"{where}: strategy 'constant' needs a 'value'")
                values[c] = step["value"]
                continue
            if strategy in ("mean", "median") and not _numeric(state.types[c]):
                raise InvalidInput(
                    f"{where}: column {c!r} is {state.types[c]}, so it has no {strategy}; use "
                    "'mode' or 'constant'"
                )
            fn = {"mean": "avg", "median": "median", "mode": "mode"}[strategy]
            found = _fetch(state, _with(state, f"SELECT {fn}({_q(c)}) FROM {prev}"), where)[0][0]
            if found is None:
                raise InvalidInput(
                    f"{where}: column {c!r} has no values to take the {strategy} of; use "
                    "strategy 'constant'"
                )
            values[c] = _jsonable(found)
        fit["values"] = values
        both(
            [
                f"coalesce({_q(c)}, {_literal(values[c])}) AS {_q(c)}" if c in values else _q(c)
                for c in cols
            ]
        )
    elif op == "bin":
        col = _column(state, step.get("column"), where)
        if not _numeric(state.types[col]):
            raise InvalidInput(f"{where}: column {col!r} is {state.types[col]}; bin a number")
        name = _new_name(state, step.get("name") or f"{col}_bin", where)
        edges = fit.get("edges") or step.get("edges")
        if edges is None:
            bins = step.get("bins", 4)
            if not isinstance(bins, int) or isinstance(bins, bool) or not 2 <= bins <= 100:
                raise InvalidInput(
                    f"{where}: 'bins' must be an int from 2 to 100 (quantile bins). Got {bins!r}"
                )
            qs = [i / bins for i in range(1, bins)]
            found = _fetch(
                state, _with(state, f"SELECT quantile_cont({_q(col)}, {qs}) FROM {prev}"), where
            )[0][0]
            if found is None:
                raise InvalidInput(f"{where}: column {col!r} has no values to bin")
            edges = sorted({float(e) for e in found})
        if (
            not isinstance(edges, list)
            or not edges
            or not all(isinstance(e, int | float) and not isinstance(e, bool) for e in edges)
            or sorted(edges) != list(edges)
            or len(set(edges)) != len(edges)
        ):
            raise InvalidInput(f"{where}: 'edges' must be increasing numbers, e.g. [10, 20, 30]")
        fit["edges"] = [float(e) for e in edges]
        whens = " ".join(
            f"WHEN {_q(col)} < {_literal(float(e))} THEN {i}" for i, e in enumerate(edges)
        )
        case = f"CASE WHEN {_q(col)} IS NULL THEN NULL {whens} ELSE {len(edges)} END"
        both([_q(c) for c in cols] + [f"CAST({case} AS INTEGER) AS {_q(name)}"])
    elif op in ("one_hot", "frequency_encode"):
        col = _column(state, step.get("column"), where)
        keep = bool(step.get("keep_original", op == "frequency_encode"))
        text = f"CAST({_q(col)} AS VARCHAR)"
        if op == "one_hot":
            categories = fit.get("categories") or step.get("categories")
            if categories is None:
                limit = step.get("max_categories", 20)
                if (
                    not isinstance(limit, int)
                    or isinstance(limit, bool)
                    or not 1 <= limit <= MAX_CATEGORIES
                ):
                    raise InvalidInput(
                        f"{where}: 'max_categories' must be an int from 1 to {MAX_CATEGORIES}"
                    )
                found = _fetch(
                    state,
                    _with(
                        state,
                        f"SELECT {text} AS v, count(*) AS n FROM {prev} WHERE {_q(col)} IS NOT "
                        f"NULL GROUP BY v ORDER BY n DESC, v LIMIT {limit}",
                    ),
                    where,
                )
                categories = sorted(r[0] for r in found)
            if not categories:
                raise InvalidInput(f"{where}: column {col!r} has no values to one-hot encode")
            fit["categories"] = [str(c) for c in categories]
            outputs = []
            for cat in fit["categories"]:
                slug = re.sub(r"[^A-Za-z0-9]+", "_", cat).strip("_") or "blank"
                name = _new_name(state, f"{col}_{slug}", where)
                if name in outputs:
                    raise InvalidInput(f"{where}: categories of {col!r} give two columns {name!r}")
                outputs.append(name)
            items = [_q(c) for c in cols if keep or c != col]
            items += [
                f"CAST(coalesce({text} = {_literal(cat)}, false) AS INTEGER) AS {_q(n)}"
                for cat, n in zip(fit["categories"], outputs, strict=True)
            ]
        else:
            name = _new_name(state, step.get("name") or f"{col}_freq", where)
            levels = fit.get("frequencies")
            if levels is None:
                found = _fetch(
                    state,
                    _with(
                        state,
                        f"SELECT {text} AS v, count(*) / sum(count(*)) OVER () AS share FROM "
                        f"{prev} GROUP BY v ORDER BY share DESC, v LIMIT {MAX_FREQUENCY_LEVELS}",
                    ),
                    where,
                )
                levels = [[v, round(float(s), 12)] for v, s in found if v is not None]
            fit["frequencies"] = levels
            whens = " ".join(f"WHEN {_literal(v)} THEN {_literal(float(s))}" for v, s in levels)
            case = f"CASE {text} {whens} ELSE 0.0 END" if levels else "0.0"
            items = [_q(c) for c in cols if keep or c != col]
            items.append(f"CAST({case} AS DOUBLE) AS {_q(name)}")
        both(items)
    elif op == "dedupe":
        keys = step.get("keys") or []
        if isinstance(keys, str):
            keys = [keys]
        order = step.get("order_by")
        for k in keys:
            _column(state, k, where)
        if order is not None:
            _column(state, order, where)
        if keys:
            order_sql = f" ORDER BY {_q(order)} DESC NULLS LAST" if order else ""
            training = (
                f"SELECT * FROM {prev} QUALIFY row_number() OVER (PARTITION BY "
                f"{', '.join(_q(k) for k in keys)}{order_sql}) = 1"
            )
        else:
            training = f"SELECT DISTINCT * FROM {prev}"
        state.training.append((f"s{index}", training))
        state.serving.append((f"s{index}", f"SELECT * FROM {prev}"))
    elif op == "join":
        _compile_join(state, index, step, where, ws, own_name, tables)
    elif op == "aggregate":
        _compile_aggregate(state, index, step, where, ws, own_name, tables)
    state.schema = _describe(state, where)
    return fit


def _with(state: _State, select: str) -> str:
    """`select` run over the chain so far (the full data, for fitting)."""
    ctes = ",\n".join(f"{n} AS (\n  {s}\n)" for n, s in state.training)
    return f"WITH {ctes}\n{select}"


def _describe_expr(state: _State, prev: str, sql: str, where: str, text: Any) -> str:
    saved = list(state.training)
    try:
        rows_ = state.con.execute(
            f"DESCRIBE {_with(state, f'SELECT ({sql}) AS v FROM {prev}')}"
        ).fetchall()
    except duckdb.Error as exc:
        detail = _first_line(exc)
        raise InvalidInput(f"{where}: type error in {text!r}: {detail}") from exc
    finally:
        state.training = saved
    return rows_[0][1]


def _jsonable(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


def _join_keys(step: Mapping[str, Any], where: str) -> list[tuple[str, str]]:
    on = step.get("on")
    if isinstance(on, str):
        on = [on]
    if isinstance(on, Mapping):
        pairs = [(str(k), str(v)) for k, v in on.items()]
    elif isinstance(on, list) and on:
        pairs = [(str(k), str(k)) for k in on]
    else:
        raise InvalidInput(
            f"{where}: 'on' must name the key columns (a list, or a map of left to right names)"
        )
    return pairs


def _compile_join(
    state: _State,
    index: int,
    step: Mapping[str, Any],
    where: str,
    ws: Workspace,
    own_name: str | None,
    tables: dict[str, _Table],
) -> None:
    right = _pin(ws, step.get("dataset", ""), where, own_name)
    tables[right.sql_name] = right
    right_types = dict(right.columns)
    how = str(step.get("how", "left")).lower()
    if how not in ("left", "inner"):
        raise InvalidInput(f"{where}: 'how' must be 'left' or 'inner'. Got {how!r}")
    pairs = _join_keys(step, where)
    for left_key, right_key in pairs:
        _column(state, left_key, where)
        if right_key not in right_types:
            raise InvalidInput(
                f"{where}: {right.ref} has no column {right_key!r}; its columns are "
                f"{', '.join(right_types)}"
            )
        lt, rt = state.types[left_key], right_types[right_key]
        if _type_family(lt) != _type_family(rt):
            raise InvalidInput(
                f"{where}: join key {left_key!r} is {lt} but {right.ref}.{right_key} is {rt}; "
                "keys must have the same type: add a 'cast' step first"
            )
    right_keys = {r for _, r in pairs}
    wanted = step.get("columns") or [c for c in right_types if c not in right_keys]
    prefix = step.get("prefix") or ""
    items = []
    for c in wanted:
        if c not in right_types:
            raise InvalidInput(f"{where}: {right.ref} has no column {c!r}")
        out = _new_name(state, f"{prefix}{c}", where)
        items.append(f"r.{_q(c)} AS {_q(out)}")
    if not items:
        raise InvalidInput(f"{where}: the join adds no column; list 'columns' to bring in")
    cond = " AND ".join(f"l.{_q(a)} = r.{_q(b)}" for a, b in pairs)
    prev = state.last
    keys = ", ".join(_q(b) for _, b in pairs)
    training = (
        f"SELECT l.*, {', '.join(items)} FROM {prev} AS l {how.upper()} JOIN "
        f"{_q(right.sql_name)} AS r ON {cond}"
    )
    # Serving gives one answer per record: take one right row per key, keep every record.
    serving = (
        f"SELECT l.*, {', '.join(items)} FROM {prev} AS l LEFT JOIN (SELECT * FROM "
        f"{_q(right.sql_name)} QUALIFY row_number() OVER (PARTITION BY {keys}) = 1) AS r "
        f"ON {cond}"
    )
    before = _fetch(state, _with(state, f"SELECT count(*) FROM {prev}"), where)[0][0]
    state.training.append((f"s{index}", training))
    state.serving.append((f"s{index}", serving))
    after = _fetch(state, _with(state, f"SELECT count(*) FROM s{index}"), where)[0][0]
    if after > before:
        dup = _fetch(
            state,
            f"SELECT {keys}, count(*) AS n FROM {_q(right.sql_name)} GROUP BY "
            f"{keys} HAVING count(*) > 1 ORDER BY n DESC LIMIT 1",
            where,
        )
        example = f" (e.g. key {dup[0][:-1]} appears {dup[0][-1]} times)" if dup else ""
        state.warnings.append(
            f"{where}: the join with {right.ref} turns {before:,} rows into {after:,}: keys repeat "
            f"in {right.ref}{example}. Deduplicate it or join on more keys"
        )


def _window_sql(window: Any, where: str) -> str | None:
    if window in (None, "", "all"):
        return None
    match = WINDOW_RE.match(str(window))
    if not match:
        raise InvalidInput(
            f"{where}: window {window!r} is not understood; write e.g. '30 days', '12 hours', "
            "'1 year', or leave it out for all history"
        )
    return f"INTERVAL '{int(match.group(1))} {match.group(2).lower()}'"


def _compile_aggregate(
    state: _State,
    index: int,
    step: Mapping[str, Any],
    where: str,
    ws: Workspace,
    own_name: str | None,
    tables: dict[str, _Table],
) -> None:
    events = _pin(ws, step.get("dataset", ""), where, own_name)
    tables[events.sql_name] = events
    ev_types = dict(events.columns)
    on = _column(state, step.get("on"), where)
    key = step.get("key") or on
    ts = _column(state, step.get("timestamp"), where)
    ev_ts = step.get("event_timestamp") or ts
    for c in (key, ev_ts):
        if c not in ev_types:
            raise InvalidInput(
                f"{where}: {events.ref} has no column {c!r}; its columns are {', '.join(ev_types)}"
            )
    if _type_family(state.types[on]) != _type_family(ev_types[key]):
        raise InvalidInput(
            f"{where}: entity key {on!r} is {state.types[on]} but {events.ref}.{key} is "
            f"{ev_types[key]}; keys must have the same type: add a 'cast' step first"
        )
    for c, t in ((ts, state.types[ts]), (f"{events.ref}.{ev_ts}", ev_types[ev_ts])):
        if not _temporal(t):
            raise InvalidInput(
                f"{where}: timestamp {c!r} is {t}; a point-in-time aggregate needs a DATE or "
                "TIMESTAMP column (add a 'cast' step)"
            )
    window = _window_sql(step.get("window"), where)
    features = step.get("features")
    if not isinstance(features, list) or not features:
        raise InvalidInput(
            f"{where}: 'features' must list what to compute, e.g. "
            '[{"name": "orders_30d", "fn": "count"}]'
        )
    aggs, names, counts = [], [], []
    for f in features:
        fn = (f or {}).get("fn")
        if fn not in AGGREGATES:
            raise InvalidInput(f"{where}: fn {fn!r} is not one of {', '.join(AGGREGATES)}")
        column = f.get("column")
        if fn == "count" and column in (None, "*"):
            col_sql = "*"
        else:
            if column not in ev_types:
                raise InvalidInput(f"{where}: {events.ref} has no column {column!r} for {fn}")
            if fn in ("sum", "mean") and not _numeric(ev_types[column]):
                raise InvalidInput(
                    f"{where}: {fn} needs a number but {events.ref}.{column} is {ev_types[column]}"
                )
            col_sql = f"e.{_q(column)}"
        name = _new_name(state, f.get("name") or f"{fn}_{column or 'rows'}", where)
        if name in names:
            raise InvalidInput(f"{where}: two features are named {name!r}")
        names.append(name)
        aggs.append(f"{AGGREGATES[fn].format(col=col_sql)} AS {_q(name)}")
        if fn in ("count", "count_distinct"):
            counts.append(name)
    prev = state.last
    ev = _q(events.sql_name)
    # Point in time: strictly before the row's own timestamp, never at or after it.
    cond = f"e.{_q(key)} = l.{_q(on)} AND e.{_q(ev_ts)} < l.{_q(ts)}"
    if window:
        cond += f" AND e.{_q(ev_ts)} >= l.{_q(ts)} - {window}"
    training = (
        f"SELECT l.*, {', '.join(f'a.{_q(n)}' for n in names)} FROM {prev} AS l "
        f"LEFT JOIN LATERAL (SELECT {', '.join(aggs)} FROM {ev} AS e WHERE {cond}) AS a "
        "ON true"
    )
    latest_name = f"__latest_{index}"
    latest_where = f"e.{_q(key)} IS NOT NULL"
    if window:
        latest_where += f" AND e.{_q(ev_ts)} >= (SELECT max({_q(ev_ts)}) FROM {ev}) - {window}"
    state.latest[str(index)] = (
        f"SELECT e.{_q(key)} AS {_q('__key')}, {', '.join(aggs)} FROM {ev} AS e "
        f"WHERE {latest_where} GROUP BY e.{_q(key)}"
    )
    picked = [f"coalesce(a.{_q(n)}, 0) AS {_q(n)}" if n in counts else f"a.{_q(n)}" for n in names]
    serving = (
        f"SELECT l.*, {', '.join(picked)} FROM {prev} AS l LEFT JOIN {_q(latest_name)} "
        f"AS a ON a.{_q('__key')} = l.{_q(on)}"
    )
    state.training.append((f"s{index}", training))
    state.serving.append((f"s{index}", serving))


# --- compile, preview -------------------------------------------------------------------


@dataclass(frozen=True)
class Compiled:
    """A definition compiled against pinned data.

    Attributes:
        definition: the definition with every table reference pinned to a version.
        fitted: per step, the constants learnt from the data (means, edges, …).
        training_sql: the SQL over the pinned tables that builds the training table.
        serving_sql: the same steps over the incoming records (`__records`).
        latest_sql: per aggregate step, the SQL of the latest values by entity key.
        columns: the output columns and their DuckDB types.
        tables: the pinned tables read.
        base: the table the records stand in for at serving time.
        input_columns: the fields of that table the steps read (what a record must hold).
        warnings: things to look at (exploding joins, …).
        sample: the first rows of the output (a DataFrame).
        step_columns: the columns after each step (for the page).
        step_rows: rows after each step, on the sample.
    """

    definition: Definition
    fitted: tuple[dict[str, Any], ...]
    training_sql: str
    serving_sql: str
    latest_sql: dict[str, str]
    columns: tuple[tuple[str, str], ...]
    tables: tuple[_Table, ...]
    base: _Table
    input_columns: tuple[str, ...]
    warnings: tuple[str, ...]
    sample: Any = None
    step_columns: tuple[tuple[str, ...], ...] = ()
    step_rows: tuple[int, ...] = ()

    @property
    def row_level(self) -> bool:
        return self.definition.sql is None

    def to_dict(self) -> dict[str, Any]:
        return {
            "definition": self.definition.to_dict(),
            "fitted": list(self.fitted),
            "training_sql": self.training_sql,
            "serving_sql": self.serving_sql,
            "latest_sql": self.latest_sql,
            "columns": [{"name": n, "type": t} for n, t in self.columns],
            "sources": [t.lineage() for t in self.tables],
            "base": self.base.lineage(),
            "input_columns": list(self.input_columns),
            "warnings": list(self.warnings),
        }


def compile_view(
    ws: Workspace,
    definition: Definition,
    *,
    own_name: str | None = None,
    fitted: Sequence[Mapping[str, Any] | None] | None = None,
    sample_rows: int = PREVIEW_ROWS,
) -> Compiled:
    """Validate a definition, pin its data and compile it to SQL, step by step.

    Args:
        definition: the source or SQL, and the steps.
        own_name: the feature view being edited (so it cannot read itself).
        fitted: constants from an earlier compile (reuse them instead of fitting).
        sample_rows: how many output rows to return as a sample (0 for none).

    Returns:
        The compiled view, with a sample of its output and warnings.

    Raises:
        InvalidInput: a bad step, expression, column, type, key, or SQL; the
            message names the step and what to change.
        NotFound: a dataset or feature view that does not exist.
    """
    if (definition.source is None) == (definition.sql is None):
        raise InvalidInput(
            "a feature view starts from one dataset ('source') or one SQL SELECT ('sql'); "
            "give exactly one of them"
        )
    tables: dict[str, _Table] = {}
    if definition.sql is not None:
        select_sql, read, base = _check_select(ws, definition.sql, own_name)
        for t in read:
            tables[t.sql_name] = t
        pinned = Definition(None, select_sql, definition.steps)
        base_training = select_sql
    else:
        base = _pin(ws, definition.source, "the source", own_name)
        tables[base.sql_name] = base
        pinned = Definition(base.ref, None, definition.steps)
        base_training = f"SELECT * FROM {_q(base.sql_name)}"
    for i, step in enumerate(definition.steps, start=1):
        if isinstance(step, Mapping) and step.get("op") in ("join", "aggregate"):
            where = f"step {i} ({step.get('op')})"
            other = _pin(ws, step.get("dataset", ""), where, own_name)
            tables[other.sql_name] = other
    con = _sandbox(ws, list(tables.values()))
    try:
        state = _State(con=con, base_training=base_training, carry_rid=definition.sql is None)
        state.training.append(("s0", base_training))
        base_serving = (
            f"SELECT * FROM {_q('__records')}"
            if definition.sql is None
            else _serving_base_sql(select_sql, base)
        )
        state.serving.append(("s0", base_serving))
        try:
            state.schema = [
                (r[0], r[1]) for r in con.execute(f"DESCRIBE {_render(state)}").fetchall()
            ]
        except duckdb.Error as exc:
            raise InvalidInput(f"the SQL does not run: {_first_line(exc)}") from exc
        base_names = set(state.names)
        if any(n.startswith(_RESERVED_PREFIX) for n in base_names):
            raise InvalidInput(f"column names starting with {_RESERVED_PREFIX!r} are reserved")
        step_columns = [tuple(state.names)]
        fits: list[dict[str, Any]] = []
        row_level_refs: set[str] = set()
        all_steps = list(pinned.steps)
        new_steps = []
        for i, step in enumerate(all_steps, start=1):
            if not isinstance(step, Mapping):
                raise InvalidInput(f"step {i}: must be an object with an 'op'")
            before = set(state.referenced)
            prior = fitted[i - 1] if fitted is not None and i - 1 < len(fitted) else None
            fits.append(_compile_step(state, i, step, prior, ws, own_name, tables))
            if step.get("op") not in _ROW_SELECTION:
                row_level_refs |= state.referenced - before
            step_columns.append(tuple(state.names))
            new = dict(step)
            if step.get("op") in ("join", "aggregate"):
                new["dataset"] = _pin(ws, step["dataset"], f"step {i}", own_name).ref
            new_steps.append(new)
        pinned = Definition(pinned.source, pinned.sql, tuple(new_steps))
        # Everything must also bind in serving mode: records with the base's columns.
        rid = f", 0::BIGINT AS {_q(_RID)}" if definition.sql is None else ""
        con.execute(
            f"CREATE TEMP TABLE {_q('__records')} AS SELECT *{rid} FROM {_q(base.sql_name)} LIMIT 0"
        )
        for idx, latest in state.latest.items():
            con.execute(f"CREATE TEMP TABLE {_q('__latest_' + idx)} AS {latest} LIMIT 0")
        try:
            con.execute(f"DESCRIBE {state.chain('serving')}").fetchall()
        except duckdb.Error as exc:
            raise InvalidInput(
                f"the view cannot be applied to single records at serving time: {_first_line(exc)}"
            ) from exc
        sample = None
        step_rows: list[int] = []
        if sample_rows:
            limited = f"SELECT * FROM ({base_training}) LIMIT {int(sample_rows)}"
            try:
                sample = con.execute(state.chain("training", base=limited)).df()
                for k in range(len(state.training)):
                    ctes = ",\n".join(
                        f"{n} AS ({limited if j == 0 else s})"
                        for j, (n, s) in enumerate(state.training[: k + 1])
                    )
                    step_rows.append(
                        con.execute(f"WITH {ctes} SELECT count(*) FROM s{k}").fetchall()[0][0]
                    )
            except duckdb.Error as exc:
                raise InvalidInput(f"the preview failed: {_first_line(exc)}") from exc
        if definition.sql is None:
            inputs = [c for c in base.columns if c[0] in row_level_refs or c[0] in state.types]
            input_columns = tuple(c for c, _ in inputs)
        else:
            input_columns = _sql_inputs(select_sql, base)
        return Compiled(
            definition=pinned,
            fitted=tuple(fits),
            training_sql=state.chain("training"),
            serving_sql=state.chain("serving"),
            latest_sql=dict(state.latest),
            columns=tuple(state.schema),
            tables=tuple(tables.values()),
            base=base,
            input_columns=input_columns,
            warnings=tuple(state.warnings),
            sample=sample,
            step_columns=tuple(step_columns),
            step_rows=tuple(step_rows),
        )
    finally:
        con.close()


def _serving_base_sql(select_sql: str, base: _Table) -> str:
    """The user's SELECT with its primary table swapped for the incoming records."""
    tree = sqlglot.parse_one(select_sql, read="duckdb")
    first = next(t for t in tree.find_all(exp.Table, bfs=False) if t.name == base.sql_name)
    first.set("this", exp.to_identifier("__records", quoted=True))
    return tree.sql(dialect="duckdb")


def _sql_inputs(select_sql: str, base: _Table) -> tuple[str, ...]:
    tree = sqlglot.parse_one(select_sql, read="duckdb")
    names = {c.name for c in tree.find_all(exp.Column)}
    if any(isinstance(s, exp.Star) for s in tree.find_all(exp.Star)):
        return tuple(c for c, _ in base.columns)
    return tuple(c for c, _ in base.columns if c in names)


@dataclass(frozen=True)
class Preview:
    """What the page shows while a view is being built."""

    frame: Any
    sql: str
    columns: tuple[tuple[str, str], ...]
    warnings: tuple[str, ...]
    step_columns: tuple[tuple[str, ...], ...]
    step_rows: tuple[int, ...]
    sources: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "sql": self.sql,
            "columns": [{"name": n, "type": t} for n, t in self.columns],
            "warnings": list(self.warnings),
            "step_rows": list(self.step_rows),
            "sources": list(self.sources),
            "rows": json.loads(self.frame.to_json(orient="records", date_format="iso")),
        }


def preview(
    ws: Workspace, definition: Definition, *, rows_: int = PREVIEW_ROWS, own_name: str | None = None
) -> Preview:
    """Compile a definition and run it on a sample of its source (nothing is saved).

    Returns:
        The first `rows_` output rows, the compiled SQL, the output columns,
        warnings, and the columns and rows after each step.

    Raises:
        as `compile_view`.
    """
    compiled = compile_view(ws, definition, own_name=own_name, sample_rows=max(1, int(rows_)))
    return Preview(
        compiled.sample,
        compiled.training_sql,
        compiled.columns,
        compiled.warnings,
        compiled.step_columns,
        compiled.step_rows,
        tuple(t.ref for t in compiled.tables),
    )


# --- saved views -----------------------------------------------------------------------------


@dataclass(frozen=True)
class FeatureViewVersion:
    """One immutable version of a feature view."""

    name: str
    version: int
    content_sha256: str
    description: str
    owner: str
    entity_key: str | None
    timestamp_column: str | None
    tags: dict[str, str]
    definition: dict[str, Any]
    created_by: str
    created_at: datetime
    materialized_sha256: str | None = None
    latest: dict[str, str] | None = None
    row_count: int | None = None
    materialized_by: str | None = None
    materialized_at: datetime | None = None

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"

    @property
    def columns(self) -> list[dict[str, str]]:
        return list(self.definition["columns"])

    @property
    def column_names(self) -> list[str]:
        return [c["name"] for c in self.columns]

    @property
    def steps(self) -> list[dict[str, Any]]:
        return list(self.definition["definition"]["steps"])

    @property
    def sources(self) -> list[dict[str, Any]]:
        return list(self.definition["sources"])

    @property
    def sql(self) -> str:
        return self.definition["training_sql"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "content_sha256": self.content_sha256,
            "description": self.description,
            "owner": self.owner,
            "entity_key": self.entity_key,
            "timestamp_column": self.timestamp_column,
            "tags": self.tags,
            "columns": self.columns,
            "sources": self.sources,
            "steps": self.steps,
            "source_sql": self.definition["definition"].get("sql"),
            "sql": self.sql,
            "warnings": self.definition.get("warnings", []),
            "created_by": self.created_by,
            "created_at": self.created_at.isoformat(),
            "materialized_sha256": self.materialized_sha256,
            "row_count": self.row_count,
            "materialized_at": self.materialized_at.isoformat() if self.materialized_at else None,
        }

    def lineage(self) -> dict[str, Any]:
        """What a model trained on this version records as `lineage.feature_view`."""
        return {
            "name": self.name,
            "version": self.version,
            "content_sha256": self.content_sha256,
            "materialized_sha256": self.materialized_sha256,
            "entity_key": self.entity_key,
            "timestamp_column": self.timestamp_column,
            "sources": self.sources,
        }


def _to_version(row: Mapping[str, Any]) -> FeatureViewVersion:
    return FeatureViewVersion(
        name=row["name"],
        version=row["version"],
        content_sha256=row["content_sha256"],
        description=row["description"] or "",
        owner=row["owner"],
        entity_key=row["entity_key"],
        timestamp_column=row["timestamp_column"],
        tags=row["tags"] or {},
        definition=row["definition"],
        created_by=row["created_by"],
        created_at=row["created_at"],
        materialized_sha256=row["materialized_sha256"],
        latest=row["latest"],
        row_count=row["row_count"],
        materialized_by=row["materialized_by"],
        materialized_at=row["materialized_at"],
    )


def parse_ref(ref: str) -> tuple[str, int | None]:
    """Split "NAME", "NAME:3" (or with the "fv:" prefix) into (name, version or None)."""
    text = ref[len(VIEW_PREFIX) :] if ref.startswith(VIEW_PREFIX) else ref
    name, _, version = text.partition(":")
    if version and (not version.isdigit() or int(version) < 1):
        raise InvalidInput(
            f"feature view reference {ref!r} is not valid: write NAME or NAME:VERSION"
        )
    return check_name(name), int(version) if version else None


def get_view(ws: Workspace, name: str, version: int | None = None) -> FeatureViewVersion:
    """A feature view version (the latest when `version` is None).

    Raises:
        NotFound: no such feature view, or no such version of it.
    """
    with store.read(ws) as con:
        row = rows.get_version(con, name, version)
        exists = row is not None or rows.view_exists(con, name)
    if row is None:
        if not exists:
            raise NotFound(f"feature view '{name}' does not exist; see `pond features list`")
        raise NotFound(f"feature view '{name}' has no version {version}")
    return _to_version(row)


def resolve(ws: Workspace, ref: str) -> FeatureViewVersion:
    """The version a "NAME", "NAME:VERSION" or "fv:NAME:VERSION" reference points at."""
    name, version = parse_ref(ref)
    return get_view(ws, name, version)


def list_versions(ws: Workspace, name: str | None = None) -> list[FeatureViewVersion]:
    """Every version (of one view when `name` is given), oldest first."""
    with store.read(ws) as con:
        if name is not None and not rows.view_exists(con, name):
            raise NotFound(f"feature view '{name}' does not exist; see `pond features list`")
        return [_to_version(r) for r in rows.list_versions(con, name)]


def list_views(ws: Workspace) -> list[FeatureViewVersion]:
    """The latest version of every feature view, by name."""
    latest: dict[str, FeatureViewVersion] = {}
    for v in list_versions(ws):
        latest[v.name] = v
    return list(latest.values())


def _check_tags(tags: Mapping[str, Any] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in (tags or {}).items():
        if not isinstance(k, str) or not re.match(r"^[A-Za-z][A-Za-z0-9_.\-]{0,63}$", k):
            raise InvalidInput(f"tag key {k!r} is not allowed: use letters, digits, '_', '.', '-'")
        out[k] = str(v)
    return out


def _content_hash(compiled: Compiled, meta: Mapping[str, Any]) -> str:
    payload = {
        "definition": compiled.definition.to_dict(),
        "fitted": list(compiled.fitted),
        "sources": [t.lineage() for t in compiled.tables],
        **meta,
    }
    blob = json.dumps(payload, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()


def create_view(
    ws: Workspace,
    name: str,
    definition: Definition,
    *,
    actor: auth.User,
    description: str = "",
    entity_key: str | None = None,
    timestamp_column: str | None = None,
    tags: Mapping[str, Any] | None = None,
    owner: str | None = None,
    materialize: bool = True,
) -> FeatureViewVersion:
    """Save a definition as the next version of feature view `name`.

    A new name starts at version 1; an edited definition becomes the next
    version and the old ones stay as they were (pinned data, fitted constants,
    SQL). Saving exactly what the latest version holds (definition, description
    and tags) returns that version instead of adding a copy.

    Args:
        definition: the source or SQL and the steps (see `Definition`).
        entity_key / timestamp_column: output columns naming the entity and the
            time of each row; both are left out of a model's features.
        owner: who answers for the view (default: the actor; kept from v1 on).
        materialize: also write the training table and latest values now.

    Returns:
        The saved version (materialised when asked).

    Raises:
        InvalidInput: bad name, definition, key or timestamp column; nothing is saved.
        AlreadyExists: the name belongs to a dataset.
        PermissionDenied: the actor may not prepare data (needs analyst).
    """
    check_name(name)
    auth.require(actor, "ingest")
    with store.read(ws) as con:
        if dataset_rows.dataset_exists(con, name):
            raise AlreadyExists(
                f"'{name}' is already the name of a dataset; give the feature view another "
                f"name (for example '{name}_features')"
            )
    compiled = compile_view(ws, definition, own_name=name, sample_rows=0)
    names = [c for c, _ in compiled.columns]
    for what, col in (("entity key", entity_key), ("timestamp column", timestamp_column)):
        if col and col not in names:
            raise InvalidInput(
                f"the {what} {col!r} is not an output column of the view; its columns are "
                f"{', '.join(names)}"
            )
    if timestamp_column and not _temporal(dict(compiled.columns)[timestamp_column]):
        raise InvalidInput(
            f"the timestamp column {timestamp_column!r} is {dict(compiled.columns)[timestamp_column]}"
            "; pick a DATE or TIMESTAMP column (or cast it in a step)"
        )
    clean_tags = _check_tags(tags)
    meta = {"entity_key": entity_key, "timestamp_column": timestamp_column}
    sha = _content_hash(compiled, meta)
    body = compiled.to_dict()
    with store.read(ws) as con:
        existing = rows.get_version(con, name, None)
    unchanged = existing is not None and (
        existing["content_sha256"],
        existing["description"] or "",
        existing["tags"] or {},
    ) == (sha, description or "", clean_tags)
    if unchanged:
        fv = _to_version(existing)
        if materialize and fv.materialized_sha256 is None:
            fv = materialize_view(ws, fv, actor=actor)
        return fv
    # Run it on the full data first: a view that fails there is not saved at all.
    done = _write_outputs(ws, compiled.tables, body, name) if materialize else None
    with store.transaction(ws) as con:
        created = rows.ensure_view(con, name, owner or actor.name, actor.name)
        version = rows.next_version(con, name)
        rows.insert_version(
            con,
            name=name,
            version=version,
            content_sha256=sha,
            description=description or "",
            entity_key=entity_key,
            timestamp_column=timestamp_column,
            tags=clean_tags,
            definition=body,
            created_by=actor.name,
        )
        store.append_audit(
            con,
            actor=actor.name,
            action="feature_view_created" if created else "feature_view_version_added",
            entity_type="feature_view",
            entity_id=f"{name}:{version}",
            to_state="defined",
            details={
                "sha256": sha,
                "sources": [t.ref for t in compiled.tables],
                "steps": len(compiled.definition.steps),
            },
        )
        if done is not None:
            _record_outputs(con, name, version, done, actor)
    return get_view(ws, name, version)


# --- materialisation -------------------------------------------------------------------------


def _stored_compiled(ws: Workspace, fv: FeatureViewVersion) -> tuple[list[_Table], dict]:
    tables = [
        _Table(s["kind"], s["name"], s["version"], s["content_sha256"], ()) for s in fv.sources
    ]
    return tables, fv.definition


@dataclass(frozen=True)
class _Materialized:
    """A version's output written as artifacts, not yet recorded."""

    table: artifact_store.Artifact
    latest: dict[str, artifact_store.Artifact]
    row_count: int


def _write_outputs(
    ws: Workspace, tables: Sequence[_Table], body: Mapping[str, Any], label: str
) -> _Materialized:
    """Run the stored SQL over the pinned data (one thread, so the same bytes every time)
    and store the training table and each aggregate's latest values as Parquet artifacts."""
    ws.tmp_dir.mkdir(parents=True, exist_ok=True)
    stamp = f"{time.time_ns()}-{threading.get_ident()}"
    out = ws.tmp_dir / f"fv-{stamp}.parquet"
    latest_files: dict[str, Path] = {}
    try:
        con = _sandbox(ws, tables, threads=1)
        try:
            # The sandbox cannot write files, so rows come back as Arrow and pyarrow writes them.
            frame = con.sql(body["training_sql"]).to_arrow_table()
            for idx, sql in body["latest_sql"].items():
                latest_files[idx] = ws.tmp_dir / f"fv-{stamp}-{idx}.parquet"
                _write_parquet(con.sql(f"{sql} ORDER BY 1").to_arrow_table(), latest_files[idx])
        except duckdb.Error as exc:
            raise InvalidInput(
                f"feature view {label} failed on the full data: {_first_line(exc)}; fix the "
                "step (e.g. a cast some rows cannot take) and save again"
            ) from exc
        finally:
            con.close()
        _write_parquet(frame, out)
        table = artifact_store.put_file(ws, out, move=True)
        latest = {k: artifact_store.put_file(ws, f, move=True) for k, f in latest_files.items()}
    finally:
        out.unlink(missing_ok=True)
        for f in latest_files.values():
            f.unlink(missing_ok=True)
    return _Materialized(table, latest, frame.num_rows)


def _record_outputs(
    con: duckdb.DuckDBPyConnection, name: str, version: int, done: _Materialized, actor: auth.User
) -> None:
    for a in (done.table, *done.latest.values()):
        dataset_rows.insert_artifact(con, a.sha256, a.size_bytes, "feature_view", actor.name)
    rows.put_materialization(
        con,
        name,
        version,
        done.table.sha256,
        {k: a.sha256 for k, a in done.latest.items()},
        done.row_count,
        actor.name,
    )
    store.append_audit(
        con,
        actor=actor.name,
        action="feature_view_materialized",
        entity_type="feature_view",
        entity_id=f"{name}:{version}",
        to_state="materialized",
        details={"sha256": done.table.sha256, "rows": done.row_count},
    )


def materialize_view(
    ws: Workspace, view: FeatureViewVersion | str, *, actor: auth.User
) -> FeatureViewVersion:
    """Write a version's training table (and latest values per entity) as Parquet artifacts.

    The stored SQL runs over the pinned dataset versions, one thread, so the same
    version always gives the same bytes: an old version stays reproducible.

    Returns:
        The version with its materialisation recorded.

    Raises:
        PermissionDenied: the actor may not prepare data.
        NotFound: the view or one of its data files is missing.
        InvalidInput: the SQL fails on the full data (e.g. a cast that fails on some row).
    """
    fv = resolve(ws, view) if isinstance(view, str) else view
    auth.require(actor, "ingest")
    tables, body = _stored_compiled(ws, fv)
    done = _write_outputs(ws, tables, body, fv.ref)
    with store.transaction(ws) as con:
        _record_outputs(con, fv.name, fv.version, done, actor)
    return get_view(ws, fv.name, fv.version)


def _write_parquet(table: Any, path: Path) -> None:
    import pyarrow.parquet as pq

    pq.write_table(table, str(path), compression="zstd")


def output_path(ws: Workspace, fv: FeatureViewVersion) -> Path:
    """The Parquet file of a materialised version.

    Raises:
        InvalidInput: the version is not materialised.
    """
    if fv.materialized_sha256 is None:
        raise InvalidInput(
            f"feature view {fv.ref} is not materialised; run `pond features materialize {fv.ref}`"
        )
    return artifact_store.artifact_path(ws, fv.materialized_sha256)


def load_frame(ws: Workspace, fv: FeatureViewVersion) -> Any:
    """The materialised output of a version as a pandas DataFrame."""
    con = duckdb.connect()
    try:
        return con.execute(f"SELECT * FROM read_parquet({_literal(str(output_path(ws, fv)))})").df()
    finally:
        con.close()


def profile(ws: Workspace, fv: FeatureViewVersion) -> Any:
    """The column profile of a materialised version (`core.profiling.Profile`), cached."""
    from core import profiling

    if fv.materialized_sha256 is None:
        return None
    with store.read(ws) as con:
        cached = dataset_rows.get_profile(con, fv.materialized_sha256)
    if cached is not None:
        try:
            return profiling.Profile.from_dict(cached)
        except ValueError:
            pass
    started = time.perf_counter()
    result = profiling.compute_profile(output_path(ws, fv))
    with store.transaction(ws) as con:
        dataset_rows.put_profile(
            con, fv.materialized_sha256, result.to_dict(), time.perf_counter() - started
        )
    return result


def models_using(ws: Workspace, name: str) -> list[dict[str, Any]]:
    """Registered model versions trained on any version of feature view `name`."""
    with store.read(ws) as con:
        return rows.models_using(con, name)


@dataclass(frozen=True)
class CatalogEntry:
    """Everything the catalog shows about one version."""

    view: FeatureViewVersion
    versions: tuple[int, ...]
    models: tuple[dict[str, Any], ...]
    profile: Any

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.view.to_dict(),
            "versions": list(self.versions),
            "models": list(self.models),
            "profile": self.profile.to_dict() if self.profile is not None else None,
        }


def catalog_entry(ws: Workspace, ref: str, *, with_profile: bool = True) -> CatalogEntry:
    """One version with its other versions, the models trained on the view, and its profile."""
    fv = resolve(ws, ref)
    versions = tuple(v.version for v in list_versions(ws, fv.name))
    prof = profile(ws, fv) if with_profile else None
    return CatalogEntry(fv, versions, tuple(models_using(ws, fv.name)), prof)


# --- training ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainingInput:
    """A feature view version as AutoML's training data."""

    view: FeatureViewVersion
    data: datasets.DatasetVersion

    @property
    def ref(self) -> str:
        return f"{VIEW_PREFIX}{self.view.ref}"

    def excluded(self, target: str, exclude: Sequence[str] = ()) -> tuple[str, ...]:
        """Entity key and timestamp are identifiers, not features."""
        return tuple(
            c
            for c in (self.view.entity_key, self.view.timestamp_column)
            if c and c != target and c not in exclude
        )

    @property
    def lineage(self) -> dict[str, Any]:
        """`lineage.dataset` (the raw base dataset, which serving's records look like) with
        the feature view version nested under "feature_view"."""
        base = self.view.definition["base"]
        return {
            "name": base["name"],
            "version": base["version"],
            "content_sha256": base["content_sha256"],
            "feature_view": self.view.lineage(),
        }


def training_input(
    ws: Workspace, source: Any, *, actor: auth.User | None = None
) -> TrainingInput | None:
    """The feature view behind AutoML's `dataset` argument, or None for a plain dataset.

    A feature view is "fv:NAME[:VERSION]" or a `FeatureViewVersion`; it is
    materialised first when it has not been yet.
    """
    if isinstance(source, FeatureViewVersion):
        fv = source
    elif isinstance(source, str) and source.startswith(VIEW_PREFIX):
        fv = resolve(ws, source)
    else:
        return None
    if fv.materialized_sha256 is None:
        fv = materialize_view(ws, fv, actor=actor or auth.SYSTEM)
    data = datasets.DatasetVersion(
        name=fv.name,
        version=fv.version,
        content_sha256=fv.materialized_sha256 or "",
        source_name=f"feature view {fv.ref}",
        source_sha256=fv.content_sha256,
        source_format="feature_view",
        row_count=fv.row_count or 0,
        columns=tuple(datasets.Column(c["name"], c["type"]) for c in fv.columns),
        size_bytes=0,
        created_by=fv.created_by,
        created_at=fv.created_at,
    )
    return TrainingInput(fv, data)


def training_choices(ws: Workspace) -> list[str]:
    """ "fv:NAME:VERSION" of every feature view version (for pickers)."""
    return [f"{VIEW_PREFIX}{v.ref}" for v in list_versions(ws)]


# --- serving ----------------------------------------------------------------------------------


def _record_error(message: str, **details: Any) -> PondError:
    from core.serving import InvalidRecord

    return InvalidRecord(message, **details)


_DUCK_CASTS = {"DATE", "TIMESTAMP", "TIMESTAMP WITH TIME ZONE", "TIME"}


class ServingTransform:
    """The row-level part of a feature view, applied to incoming records.

    Built once per served model version: the pinned join tables and the
    latest entity aggregates are loaded into an in-memory DuckDB, and each
    request runs the version's stored serving SQL over its records in a
    cursor of that database. Filters and de-duplication pick training rows
    and do not apply here: every record gets one output row.
    """

    def __init__(
        self,
        ws: Workspace,
        fv: FeatureViewVersion,
        *,
        target: str | None = None,
        features: Sequence[str] | None = None,
    ) -> None:
        self.view = fv
        body = fv.definition
        self._sql = body["serving_sql"]
        self._row_level = body["definition"].get("sql") is None
        self._base = body["base"]
        base_columns = dict(self._base_columns(ws))
        self._types = base_columns
        self._inputs = [c for c in body["input_columns"] if c != target]
        self._all = list(base_columns)
        self._features = list(features) if features is not None else None
        self._lock = threading.Lock()
        if body["latest_sql"] and not fv.latest:
            raise InvalidInput(
                f"feature view {fv.ref} has entity aggregates but no materialised latest values; "
                f"run `pond features materialize {fv.ref}`"
            )
        tables, _ = _stored_compiled(ws, fv)
        self._con = _sandbox(ws, tables, threads=1)
        if self._row_level:
            self._con.register("__incoming", self._arrow({c: [] for c in self._all}, 0))
            self._con.execute(
                f"CREATE VIEW {_q('__records')} AS SELECT {self._typed_select()}, {_q(_RID)} "
                f"FROM {_q('__incoming')}"
            )
            self._con.unregister("__incoming")
        for idx, sha in (fv.latest or {}).items():
            path = str(artifact_store.verified_path(ws, sha))
            self._con.execute(
                f"CREATE TABLE {_q('__latest_' + idx)} AS SELECT * FROM "
                f"read_parquet({_literal(path)})"
            )

    def _base_columns(self, ws: Workspace) -> list[tuple[str, str]]:
        if self._base["kind"] == "feature_view":
            inner = get_view(ws, self._base["name"], self._base["version"])
            return [(c["name"], c["type"]) for c in inner.columns]
        dv = datasets.get_version(ws, self._base["name"], self._base["version"])
        return [(c.name, c.type) for c in dv.columns]

    @property
    def input_columns(self) -> list[str]:
        return list(self._inputs)

    def _frame(self, records: Sequence[Any]) -> Any:

        data: dict[str, list[Any]] = {c: [] for c in self._all}
        for i, record in enumerate(records):
            if type(record) is not dict:
                raise _record_error(
                    f"record {i} must be an object of field names to values",
                    record=i,
                    expected="object",
                )
            for c in self._inputs:
                if c not in record:
                    raise _record_error(
                        f"record {i} has no field {c!r}, which feature view {self.view.ref} "
                        "reads (send null for a missing value)",
                        record=i,
                        field=c,
                    )
            for c in self._all:
                value = record.get(c)
                t = self._types[c].upper()
                if value is not None:
                    ok = (
                        (
                            isinstance(value, int | float)
                            and not isinstance(value, bool)
                            and (not isinstance(value, float) or math.isfinite(value))
                        )
                        if _numeric(t)
                        else isinstance(value, bool)
                        if t == "BOOLEAN"
                        else isinstance(value, str)
                        if _temporal(t) or t == "VARCHAR"
                        else True
                    )
                    if not ok:
                        expected = (
                            "a number"
                            if _numeric(t)
                            else "true or false"
                            if t == "BOOLEAN"
                            else "a date/time text"
                            if _temporal(t)
                            else "a text"
                        )
                        raise _record_error(
                            f"field {c!r} of record {i} must be {expected} ({t}); got "
                            f"{type(value).__name__} {value!r:.40}",
                            record=i,
                            field=c,
                            expected=expected,
                        )
                data[c].append(value)
        return self._arrow(data, len(records))

    def _arrow(self, data: Mapping[str, list[Any]], n: int) -> Any:
        # Arrow, not pandas: DuckDB scans an Arrow table without a per-request copy.
        import pyarrow as pa

        columns = {}
        for c, values in data.items():
            t = self._types[c].upper()
            if _numeric(t):
                whole = all(v is None or isinstance(v, int) for v in values)
                columns[c] = pa.array(values, type=pa.int64() if whole else pa.float64())
            elif t == "BOOLEAN":
                columns[c] = pa.array(values, type=pa.bool_())
            else:
                columns[c] = pa.array([None if v is None else str(v) for v in values], pa.string())
        columns[_RID] = pa.array(range(n), type=pa.int64())
        return pa.table(columns)

    def _typed_select(self) -> str:
        parts = []
        for c, t in self._types.items():
            parts.append(f"CAST({_q(c)} AS {t}) AS {_q(c)}")
        return ", ".join(parts)

    def transform(self, records: Sequence[Any]) -> list[dict[str, Any]]:
        """The feature view's output for each record, in order, one dict per record.

        Raises:
            InvalidRecord: a record lacks a field the view reads, or holds a value
                of the wrong type, or the view's SQL drops it.
        """
        frame = self._frame(records)
        with self._lock:  # one cursor per request; creating them is not thread-safe
            cur = self._con.cursor()
        try:
            # `__records` is a view over `__incoming`, which each cursor binds to its own records.
            cur.register("__incoming", frame)
            if self._row_level:
                try:
                    out = cur.execute(f"SELECT * FROM ({self._sql}) ORDER BY {_q(_RID)}")
                except duckdb.ConversionException as exc:
                    raise _record_error(
                        f"a record does not fit feature view {self.view.ref}: {_first_line(exc)}"
                    ) from exc
                names = [d[0] for d in out.description]
                got = out.fetchall()
            else:
                names, got = self._per_record(cur, len(records))
        except duckdb.Error as exc:
            raise _record_error(
                f"feature view {self.view.ref} failed on the records: {_first_line(exc)}"
            ) from exc
        finally:
            cur.close()
        keep = [i for i, n in enumerate(names) if n != _RID]
        if self._features is not None:
            wanted = set(self._features)
            keep = [i for i in keep if names[i] in wanted]
        return [{names[i]: _plain(row[i]) for i in keep} for row in got]

    def _per_record(self, cur: Any, n: int) -> tuple[list[str], list[tuple]]:
        # A SQL-based view has no row id to carry, so records go through one at a time.
        cur.execute(
            f"CREATE TEMP TABLE {_q('__all_records')} AS SELECT {self._typed_select()}, "
            f"{_q(_RID)} FROM {_q('__incoming')}"
        )
        names: list[str] = []
        got: list[tuple] = []
        columns = ", ".join(_q(c) for c in self._types)
        for i in range(n):
            cur.execute(
                f"CREATE OR REPLACE TEMP TABLE {_q('__records')} AS SELECT {columns} "
                f"FROM {_q('__all_records')} WHERE {_q(_RID)} = {i}"
            )
            out = cur.execute(self._sql)
            names = [d[0] for d in out.description]
            result = out.fetchall()
            if len(result) != 1:
                raise _record_error(
                    f"feature view {self.view.ref} gives {len(result)} rows for record {i} "
                    "(its SQL filters or multiplies rows); serving needs exactly one",
                    record=i,
                )
            got.append(result[0])
        return names, got

    def example_record(self) -> dict[str, Any]:
        """A record this view accepts: the first row of its base data, its input fields only."""
        base = _Table(self._base["kind"], self._base["name"], self._base["version"], "", ())
        with self._lock:
            cur = self._con.cursor()
        try:
            out = cur.execute(f"SELECT * FROM {_q(base.sql_name)} LIMIT 1")
            names = [d[0] for d in out.description]
            row = out.fetchall()[0]
        finally:
            cur.close()
        values = {n: _plain(v) for n, v in zip(names, row, strict=True)}
        return {c: values.get(c) for c in self._inputs}

    def close(self) -> None:
        self._con.close()


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


def serving_transform(
    ws: Workspace, model_version: Any, contract: Any = None
) -> ServingTransform | None:
    """The transform a served model version needs, or None when it was not trained on a view.

    Args:
        model_version: a registry `ModelVersion` (its lineage names the view version).
        contract: the version's loaded `model_contract.Contract` (read from its files if None).
    """
    lineage = getattr(model_version, "lineage", None) or {}
    ref = lineage.get("feature_view")
    if not ref:
        return None
    fv = get_view(ws, ref["name"], int(ref["version"]))
    if ref.get("materialized_sha256") and fv.materialized_sha256 != ref["materialized_sha256"]:
        raise PondError(
            f"feature view {fv.ref} was materialised again with different data than model "
            f"{model_version.ref} was trained on; retrain the model"
        )
    if contract is None:
        from core import model_contract, registry

        contract = model_contract.load_model(
            registry.version_files(ws, model_version.model, model_version.version)
        ).contract
    return ServingTransform(
        ws, fv, target=contract.target, features=[f.name for f in contract.features]
    )


def transform_records(
    ws: Workspace, ref: str, records: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """Apply a saved version's serving transform to records (for checks and the page)."""
    transform = ServingTransform(ws, resolve(ws, ref))
    try:
        return transform.transform(list(records))
    finally:
        transform.close()
