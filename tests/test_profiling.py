"""The dataset profile: numbers pinned on small fixed tables, alerts, edge cases, charts and
the ydata-profiling report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from core import charts, profiling
from core.profiling import AlertKind, LogicalType, Profile, compute_profile, ydata_report_html


def write_parquet(tmp_path: Path, sql: str, name: str = "t.parquet") -> Path:
    """Write the result of a DuckDB query to a Parquet file, as ingest does."""
    path = tmp_path / name
    quoted = str(path).replace("'", "''")
    with duckdb.connect() as con:
        con.execute(f"COPY ({sql}) TO '{quoted}' (FORMAT parquet)")
    return path


def alert_kinds(profile: Profile, column: str) -> set[AlertKind]:
    return {a.kind for a in profile.alerts if a.column == column}


# -- counts and statistics -------------------------------------------------------------------


def test_counts_and_numeric_statistics(tmp_path):
    path = write_parquet(
        tmp_path,
        "SELECT i::DOUBLE AS x, 2 * i + 1 AS y, i % 3 AS k FROM range(1, 11) t(i)",
    )
    p = compute_profile(path)
    assert (p.n_rows, p.n_columns, p.n_duplicate_rows) == (10, 3, 0)
    x = p.column("x")
    assert x.logical_type is LogicalType.NUMERIC
    assert x.duckdb_type == "DOUBLE"
    assert (x.n_missing, x.missing_share, x.n_distinct, x.distinct_exact) == (0, 0.0, 10, True)
    assert x.min == 1.0 and x.max == 10.0
    assert x.mean == pytest.approx(5.5)
    assert x.std == pytest.approx(3.0276503540974917)
    assert x.skewness == pytest.approx(0.0, abs=1e-12)
    assert x.quantiles == pytest.approx(
        {"p5": 1.45, "p25": 3.25, "p50": 5.5, "p75": 7.75, "p95": 9.55}
    )
    assert p.quantiles_exact
    y = p.column("y")
    assert (y.min, y.max) == (3, 21)
    assert isinstance(y.min, int)
    assert p.column("k").n_zeros == 3


def test_quantiles_skewness_on_a_known_column(tmp_path):
    values = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5]
    rows = ", ".join(f"({v})" for v in values)
    p = compute_profile(write_parquet(tmp_path, f"SELECT v::DOUBLE AS v FROM (VALUES {rows}) t(v)"))
    v = p.column("v")
    # numpy.percentile's linear interpolation and pandas' skew() on the same values.
    assert v.quantiles == pytest.approx({"p5": 1.0, "p25": 2.5, "p50": 4.0, "p75": 5.0, "p95": 7.5})
    assert v.mean == pytest.approx(4.0)
    assert v.std == pytest.approx(2.3664319132398464)
    assert v.skewness == pytest.approx(0.6640497715724059)
    assert (v.n_distinct, v.distinct_exact) == (7, True)


def test_nan_counts_as_missing_and_infinity_is_kept_out_of_statistics(tmp_path):
    path = write_parquet(
        tmp_path,
        "SELECT * FROM (VALUES (1.0::DOUBLE), (NULL), ('nan'::DOUBLE), ('inf'::DOUBLE), "
        "(3.0), (5.0)) t(f)",
    )
    f = compute_profile(path).column("f")
    assert (f.n_missing, f.missing_share) == (2, pytest.approx(2 / 6))
    assert f.n_infinite == 1
    assert (f.min, f.max, f.mean) == (1.0, 5.0, pytest.approx(3.0))
    assert sum(f.histogram.counts) == 3


def test_histogram_counts_sum_to_the_values_present(tmp_path):
    path = write_parquet(
        tmp_path,
        "SELECT CASE WHEN i % 7 = 0 THEN NULL ELSE sqrt(i) END AS r FROM range(1000) t(i)",
    )
    r = compute_profile(path).column("r")
    present = 1000 - r.n_missing
    assert r.n_missing == 143
    assert sum(r.histogram.counts) == present
    assert len(r.histogram.counts) == profiling.HISTOGRAM_BINS
    assert len(r.histogram.edges) == profiling.HISTOGRAM_BINS + 1
    assert r.histogram.edges[0] == r.min and r.histogram.edges[-1] == r.max
    assert r.histogram.counts[-1] >= 1  # the maximum lands in the last bin


def test_short_integer_range_gets_one_bin_per_value(tmp_path):
    path = write_parquet(tmp_path, "SELECT v FROM (VALUES (0), (0), (1), (2), (2), (2), (5)) t(v)")
    v = compute_profile(path).column("v")
    assert v.histogram.edges == (0, 1, 2, 3, 4, 5, 6)
    assert v.histogram.counts == (2, 1, 3, 0, 0, 1)
    assert (v.n_distinct, v.distinct_exact) == (4, True)


def test_integer_bins_are_whole_numbers_wide(tmp_path):
    p = compute_profile(write_parquet(tmp_path, "SELECT i AS n, i % 53 AS m FROM range(100) t(i)"))
    n = p.column("n")
    assert n.histogram.edges == tuple(range(0, 101, 4))
    assert n.histogram.counts == (4,) * 25
    m = p.column("m")  # 0..52: 53 values in bins 3 wide
    assert m.histogram.edges == tuple(range(0, 55, 3))
    assert sum(m.histogram.counts) == 100 and m.histogram.counts[-1] == 2


def test_top_values_are_exact_and_ordered(tmp_path):
    path = write_parquet(
        tmp_path,
        "SELECT * FROM (VALUES ('a'), ('b'), ('a'), ('c'), ('a'), ('b'), (NULL), ('a'), ('b'), "
        "('d'), ('a')) t(cat)",
    )
    cat = compute_profile(path).column("cat")
    assert cat.logical_type is LogicalType.CATEGORICAL
    assert [(v.value, v.count) for v in cat.top_values] == [("a", 5), ("b", 3), ("c", 1), ("d", 1)]
    assert (cat.n_missing, cat.n_distinct, cat.distinct_exact) == (1, 4, True)
    assert (cat.min_length, cat.max_length, cat.mean_length) == (1, 1, 1.0)
    assert cat.histogram is None and cat.mean is None


def test_only_ten_top_values_and_booleans_stay_booleans(tmp_path):
    path = write_parquet(
        tmp_path, "SELECT 'v' || (i % 20) AS code, i % 4 = 0 AS flag FROM range(400) t(i)"
    )
    p = compute_profile(path)
    assert len(p.column("code").top_values) == profiling.TOP_VALUES
    flag = p.column("flag")
    assert flag.logical_type is LogicalType.BOOLEAN
    assert [(v.value, v.count) for v in flag.top_values] == [(False, 300), (True, 100)]


def test_duplicate_rows_are_counted_exactly_nulls_included(tmp_path):
    path = write_parquet(
        tmp_path,
        "SELECT * FROM (VALUES (1, 'a'), (1, 'a'), (1, 'a'), (2, NULL), (2, NULL), (3, 'b'), "
        "(3, 'c')) t(n, s)",
    )
    p = compute_profile(path)
    assert p.n_duplicate_rows == 3
    assert p.duplicate_share == pytest.approx(3 / 7)


def test_correlations_of_perfectly_related_columns(tmp_path):
    path = write_parquet(
        tmp_path,
        "SELECT i::DOUBLE AS a, 3.5 * i - 2 AS b, -i AS c, "
        "CASE WHEN i % 3 = 0 THEN NULL ELSE 2.0 * i END AS with_gaps, "
        "(i * 7919) % 13 AS noise, 'x' AS label FROM range(50) t(i)",
    )
    p = compute_profile(path)
    assert p.correlation_columns == ("a", "b", "c", "with_gaps", "noise")
    assert p.correlation("a", "b") == pytest.approx(1.0)
    assert p.correlation("a", "c") == pytest.approx(-1.0)
    assert p.correlation("b", "a") == p.correlation("a", "b")
    assert p.correlation("a", "a") == 1.0
    # Pairs with missing values are correlated on the rows where both have a value.
    assert p.correlation("a", "with_gaps") == pytest.approx(1.0)
    assert abs(p.correlation("a", "noise")) < 0.5


def test_correlations_with_gaps_match_duckdb_corr(tmp_path):
    path = write_parquet(
        tmp_path,
        "SELECT CASE WHEN i % 3 = 0 THEN NULL ELSE sin(i) END AS x, "
        "CASE WHEN i % 5 = 0 THEN NULL ELSE sin(i) + cos(i / 7) END AS y, "
        "cos(i) * i AS z FROM range(300) t(i)",
    )
    p = compute_profile(path)
    with duckdb.connect() as con:
        expected = con.execute(
            f"SELECT corr(x, y), corr(x, z), corr(y, z) FROM '{path}'"
        ).fetchone()
    got = (p.correlation("x", "y"), p.correlation("x", "z"), p.correlation("y", "z"))
    assert got == pytest.approx(expected, abs=1e-12)
    with pytest.raises(KeyError, match="label"):
        p.correlation("a", "label")


def test_datetime_columns_report_iso_dates_and_days(tmp_path):
    path = write_parquet(
        tmp_path,
        "SELECT DATE '2020-01-01' + i::INTEGER AS day, "
        "TIMESTAMPTZ '2021-06-01 12:00:00+00' + to_hours(i) AS seen FROM range(10) t(i)",
    )
    p = compute_profile(path)
    day = p.column("day")
    assert day.logical_type is LogicalType.DATETIME
    assert (day.min, day.max, day.mean) == ("2020-01-01", "2020-01-10", "2020-01-05T12:00:00")
    assert day.std == pytest.approx(3.0276503540974917)  # days
    assert day.quantiles["p50"] == "2020-01-05T12:00:00"
    assert day.histogram.counts == (1,) * 10  # one bin per day
    assert day.histogram.edges[0] == "2020-01-01" and day.histogram.edges[-1] == "2020-01-11"
    assert (day.n_distinct, day.distinct_exact) == (10, True)
    seen = p.column("seen")
    assert seen.min == "2021-06-01T12:00:00+00:00"
    assert seen.max == "2021-06-01T21:00:00+00:00"
    assert "day" not in p.correlation_columns


def test_long_strings_are_text(tmp_path):
    path = write_parquet(
        tmp_path,
        "SELECT 'this review says the parcel arrived on day ' || i AS review FROM range(30) t(i)",
    )
    review = compute_profile(path).column("review")
    assert review.logical_type is LogicalType.TEXT
    assert review.top_values[0].count == 1


# -- alerts ----------------------------------------------------------------------------------


@pytest.fixture
def planted(tmp_path) -> Profile:
    """100 rows, one column per alert kind plus columns that must raise none."""
    return compute_profile(
        write_parquet(
            tmp_path,
            """
            SELECT
                (i * 37 % 17)::DOUBLE + i / 100 AS normal,
                ['north', 'south', 'east'][i % 3 + 1] AS city,
                'k' AS const,
                CASE WHEN i % 10 < 3 THEN i END AS sparse,
                'c' || (i % 70) AS code,
                CASE WHEN i < 95 THEN 1 ELSE 1000 END AS skewed,
                i * 7 + 3 AS customer_id,
                i + 1 AS seq,
                'T' || lpad(i::VARCHAR, 5, '0') AS ticket
            FROM range(100) t(i)
            """,
        )
    )


@pytest.mark.parametrize(
    ("column", "kind"),
    [
        ("const", AlertKind.CONSTANT),
        ("sparse", AlertKind.MOSTLY_MISSING),
        ("code", AlertKind.HIGH_CARDINALITY),
        ("skewed", AlertKind.SKEWED),
        ("customer_id", AlertKind.LIKELY_ID),  # by its name
        ("seq", AlertKind.LIKELY_ID),  # unique integers filling their range
        ("ticket", AlertKind.LIKELY_ID),  # unique fixed-width codes
    ],
)
def test_each_alert_fires_on_its_planted_column(planted, column, kind):
    assert alert_kinds(planted, column) == {kind}
    alert = next(a for a in planted.alerts if a.column == column)
    assert repr(column) in alert.message


def test_no_alert_on_ordinary_columns(planted):
    assert alert_kinds(planted, "normal") == set()
    assert alert_kinds(planted, "city") == set()


def test_alert_messages_give_the_numbers(planted):
    messages = {a.column: a.message for a in planted.alerts}
    assert "70% of rows (70 of 100)" in messages["sparse"]
    assert "70 distinct values for 100 rows" in messages["code"]
    assert "skewness 4.2" in messages["skewed"]


# -- edge cases ------------------------------------------------------------------------------


def test_empty_table_gives_a_profile_of_zeros(tmp_path):
    path = write_parquet(
        tmp_path,
        "SELECT 1 AS n, 'x' AS s, 1.5::DOUBLE AS f, DATE '2020-01-01' AS d, true AS b WHERE false",
    )
    p = compute_profile(path)
    assert (p.n_rows, p.n_columns, p.n_duplicate_rows, p.duplicate_share) == (0, 5, 0, 0.0)
    for c in p.columns:
        assert (c.n_missing, c.missing_share, c.n_distinct) == (0, 0.0, 0)
        assert c.histogram is None and c.top_values == () and c.min is None
    assert p.alerts == () and p.correlation_columns == ()
    assert Profile.from_dict(json.loads(json.dumps(p.to_dict()))) == p


def test_all_null_column(tmp_path):
    path = write_parquet(
        tmp_path,
        "SELECT i, NULL::DOUBLE AS gone, NULL::VARCHAR AS gone_text FROM range(10) t(i)",
    )
    p = compute_profile(path)
    for name in ("gone", "gone_text"):
        c = p.column(name)
        assert (c.n_missing, c.missing_share, c.n_distinct) == (10, 1.0, 0)
        assert c.min is None and c.histogram is None and c.top_values == ()
        assert alert_kinds(p, name) == {AlertKind.MOSTLY_MISSING}
    assert "every row" in next(a.message for a in p.alerts if a.column == "gone")
    assert "gone" not in p.correlation_columns


def test_constant_numeric_column_has_one_bin(tmp_path):
    p = compute_profile(write_parquet(tmp_path, "SELECT 4.2::DOUBLE AS c FROM range(5)"))
    c = p.column("c")
    assert c.histogram.counts == (5,)
    assert (c.std, c.skewness, c.n_distinct) == (0.0, None, 1)
    assert alert_kinds(p, "c") == {AlertKind.CONSTANT}


def test_awkward_column_names_are_quoted(tmp_path):
    path = write_parquet(
        tmp_path,
        """SELECT i AS "my col", i * 2.0 AS "naïve ☃ 列", 'x' || i AS "quo""te",
                  i % 2 = 0 AS "it's", i AS "select", 'a' AS "from", i AS "group by"
           FROM range(5) t(i)""",
    )
    p = compute_profile(path)
    names = ["my col", "naïve ☃ 列", 'quo"te', "it's", "select", "from", "group by"]
    assert [c.name for c in p.columns] == names
    assert p.column("naïve ☃ 列").max == 8.0
    assert p.column('quo"te').n_distinct == 5
    assert p.correlation("my col", "naïve ☃ 列") == pytest.approx(1.0)


def test_unusual_types_do_not_break_the_profile(tmp_path):
    path = write_parquet(
        tmp_path,
        """SELECT i::HUGEINT AS huge, (i / 3)::DECIMAL(10, 2) AS money, i::UTINYINT AS tiny,
                  [i, i + 1] AS pair, {'k': i} AS record, gen_random_uuid() AS token,
                  TIME '10:00:00' + to_minutes(i) AS at, 'ab'::BLOB AS raw,
                  TIMESTAMP_NS '2020-01-01 00:00:00' + to_seconds(i) AS ns,
                  i::FLOAT AS single
           FROM range(20) t(i)""",
    )
    p = compute_profile(path)
    assert p.column("huge").mean == pytest.approx(9.5)
    assert p.column("money").max == pytest.approx(6.33)
    assert p.column("pair").logical_type is LogicalType.TEXT
    assert p.column("pair").n_distinct == 20
    assert p.column("token").n_distinct == 20
    assert p.column("ns").max == "2020-01-01T00:00:19"
    assert p.column("single").std == pytest.approx(p.column("huge").std)
    json.dumps(p.to_dict())


def test_large_table_paths_sample_and_estimate(tmp_path, monkeypatch):
    """Above the exact-answer limits quantiles come from a sample, distinct counts are
    estimated and top values come from a sketch; counts stay exact."""
    monkeypatch.setattr(profiling, "EXACT_DISTINCT_MAX_ROWS", 100)
    monkeypatch.setattr(profiling, "QUANTILE_SAMPLE_ROWS", 2_000)
    monkeypatch.setattr(profiling, "EXACT_TOP_VALUES_MAX_DISTINCT", 100)
    path = write_parquet(
        tmp_path,
        "SELECT i::DOUBLE AS u, CASE WHEN i % 4 = 0 THEN 'hot' ELSE 'w' || i END AS word, "
        "'note ' || i AS note FROM range(20000) t(i)",
    )
    p = compute_profile(path)
    assert not p.quantiles_exact
    u = p.column("u")
    assert u.quantiles["p50"] == pytest.approx(10_000, rel=0.05)
    assert (u.min, u.max, u.mean) == (0.0, 19_999.0, pytest.approx(9_999.5))
    assert not u.distinct_exact and u.n_distinct == pytest.approx(20_000, rel=0.05)
    word = p.column("word")
    assert not word.distinct_exact
    assert (word.top_values[0].value, word.top_values[0].count) == ("hot", 5_000)
    assert p.column("note").top_values == ()  # all different: no value is more frequent


def test_profile_round_trips_through_json(tmp_path):
    path = write_parquet(
        tmp_path,
        "SELECT i AS n, i * 0.5 AS half, 'c' || (i % 3) AS c, DATE '2024-02-28' + i::INTEGER "
        "AS d, i % 2 = 0 AS even FROM range(40) t(i)",
    )
    p = compute_profile(path)
    data = json.loads(json.dumps(p.to_dict(), allow_nan=False))
    assert data["format"] == profiling.PROFILE_FORMAT
    assert set(data) == {
        "format",
        "n_rows",
        "n_columns",
        "n_duplicate_rows",
        "quantiles_exact",
        "elapsed_s",
        "columns",
        "correlations",
        "alerts",
    }
    assert Profile.from_dict(data) == p
    with pytest.raises(ValueError, match="recompute"):
        Profile.from_dict({**data, "format": 0})


def test_bad_input_is_refused_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        compute_profile(tmp_path / "missing.parquet")
    not_parquet = tmp_path / "notes.parquet"
    not_parquet.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="not a readable Parquet file"):
        compute_profile(not_parquet)
    ok = write_parquet(tmp_path, "SELECT 1 AS a")
    with pytest.raises(ValueError, match="'threads' parameter"):
        compute_profile(ok, threads=0)
    assert compute_profile(ok, threads=1, memory_limit="100MB").n_rows == 1


def test_awkward_paths_read_exactly_that_file(tmp_path):
    folder = tmp_path / "it's here"
    folder.mkdir()
    path = write_parquet(folder, "SELECT 1 AS a", name="o'clock.parquet")
    assert compute_profile(path).n_rows == 1
    # DuckDB would expand the glob 'v[1].parquet' to v1.parquet: the wrong file.
    write_parquet(tmp_path, "SELECT 1 AS a FROM range(5)", name="v1.parquet")
    bracketed = write_parquet(tmp_path, "SELECT 1 AS a FROM range(3)", name="v[1].parquet")
    assert compute_profile(bracketed).n_rows == 3


# -- charts ----------------------------------------------------------------------------------


def test_charts_from_a_profile_or_its_dict(tmp_path):
    path = write_parquet(
        tmp_path,
        "SELECT i AS n, sqrt(i) AS r, 'c' || (i % 3) AS c, DATE '2024-01-01' + i::INTEGER AS d, "
        "NULL::DOUBLE AS gone FROM range(60) t(i)",
    )
    p = compute_profile(path)
    figures = charts.profile_charts(p)
    assert set(figures) == {
        "missing_values",
        "correlations",
        "column:n",
        "column:r",
        "column:c",
        "column:d",
    }
    assert figures["column:c"].data[0].orientation == "h"
    assert list(figures["column:n"].data[0].y) == list(p.column("n").histogram.counts)
    as_dict = p.to_dict()
    assert charts.column_chart(as_dict["columns"][2]).data[0].x == (20, 20, 20)
    assert charts.correlation_heatmap(as_dict) is not None
    assert charts.missing_chart(as_dict).data[0].y[-1] == 100.0
    table = charts.profile_table(as_dict)
    assert table[0]["column"] == "n" and table[0]["max"] == "59"
    assert table[3]["min"] == "2024-01-01"


def test_core_never_imports_streamlit():
    code = "import sys, core.profiling, core.charts; sys.exit('streamlit' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


# -- ydata-profiling -------------------------------------------------------------------------


def test_ydata_report_on_a_sample(tmp_path):
    path = write_parquet(
        tmp_path,
        "SELECT i AS n, (i % 7)::DOUBLE AS x, 'g' || (i % 3) AS g FROM range(200) t(i)",
    )
    html, rows_used, total_rows = ydata_report_html(path, sample_rows=50, name="sales v2")
    assert (rows_used, total_rows) == (50, 200)
    assert "<html" in html.lower()
    assert "sales v2: random sample of 50 of 200 rows" in html
    again = ydata_report_html(path, sample_rows=500)
    assert again[1:] == (200, 200)
    with pytest.raises(ValueError, match="'sample_rows' parameter"):
        ydata_report_html(path, sample_rows=0)
