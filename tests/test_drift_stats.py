"""Drift statistics pinned against scipy on fixed data (to 1e-9), Evidently 0.7's choice
rules and verdict boundaries, PSI, and the per-column override syntax."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from scipy.spatial import distance

from core import drift_stats as ds
from core.errors import InvalidInput

TOL = 1e-9


def exact(value: float) -> object:
    return pytest.approx(value, rel=TOL, abs=TOL)


@pytest.fixture(scope="module")
def samples() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(20240607)
    return {
        "a": rng.normal(0.0, 1.0, 5000),
        "b": rng.normal(0.25, 1.3, 3700),
        "ties_a": np.round(rng.normal(10, 3, 2000), 0),
        "ties_b": np.round(rng.normal(11, 3, 2000), 0),
        "small_a": rng.exponential(2.0, 40),
        "small_b": rng.exponential(2.5, 17),
    }


@pytest.mark.parametrize(("left", "right"), [
    ("a", "b"), ("b", "a"), ("ties_a", "ties_b"), ("small_a", "small_b"), ("a", "a"),
])
def test_wasserstein_equals_scipy(samples, left, right):
    u, v = samples[left], samples[right]
    ours = ds.wasserstein_sorted(np.sort(u), np.sort(v))
    assert ours == exact(stats.wasserstein_distance(u, v))


def test_wasserstein_equal_sizes_and_single_values():
    u, v = np.array([3.0, 1.0, 2.0]), np.array([10.0, 0.0, 5.0])
    assert ds.wasserstein_sorted(np.sort(u), np.sort(v)) == exact(
        stats.wasserstein_distance(u, v))
    assert ds.wasserstein_sorted(np.array([1.0]), np.array([4.0, 6.0])) == exact(4.0)


def test_normed_wasserstein_divides_by_population_std_floored(samples):
    u, v = samples["a"], samples["b"]
    expected = stats.wasserstein_distance(u, v) / np.std(u, ddof=0)
    assert ds.wasserstein_norm(np.sort(u), np.sort(v)) == exact(expected)
    constant = np.full(50, 7.0)
    moved = np.full(50, 7.5)
    # A constant reference has std 0: the std is floored at 0.001, as Evidently does.
    assert ds.wasserstein_norm(constant, moved) == exact(0.5 / 0.001)


@pytest.mark.parametrize(("left", "right"), [("small_a", "small_b"), ("a", "b"),
                                             ("ties_a", "ties_b")])
def test_ks_equals_scipy(samples, left, right):
    u, v = samples[left], samples[right]
    assert ds.ks_pvalue(np.sort(u), np.sort(v)) == exact(stats.ks_2samp(u, v).pvalue)


def test_chisquare_equals_scipy_with_reference_shares_scaled():
    ref = np.array([50, 30, 20])
    cur = np.array([20, 25, 35])
    expected = stats.chisquare(cur, ref * cur.sum() / ref.sum()).pvalue
    assert ds.chisquare_pvalue(ref, cur) == exact(expected)


def test_chisquare_category_only_in_current_is_certain_drift():
    assert ds.chisquare_pvalue(np.array([10, 10, 0]), np.array([5, 5, 3])) == 0.0


def test_z_test_matches_the_two_proportion_formula():
    ref, cur = np.array([700, 300]), np.array([600, 400])
    p1, p2 = 300 / 1000, 400 / 1000
    pooled = (300 + 400) / 2000
    z = (p1 - p2) / math.sqrt(pooled * (1 - pooled) * (1 / 1000 + 1 / 1000))
    assert ds.z_pvalue(ref, cur) == exact(2 * stats.norm.sf(abs(z)))
    # Both sides holding the same single value: no evidence of drift at all.
    assert ds.z_pvalue(np.array([40, 0]), np.array([9, 0])) == 1.0


def test_jensenshannon_on_value_shares_natural_log():
    ref = np.array([60, 30, 10, 0])
    cur = np.array([20, 30, 40, 10])
    expected = distance.jensenshannon(ref / ref.sum(), cur / cur.sum())
    assert ds.jensenshannon_counts(ref, cur) == exact(expected)
    same = ds.jensenshannon_counts(np.array([1, 2, 3]), np.array([10, 20, 30]))
    assert same == exact(0.0)


def test_numeric_jensenshannon_bins_like_evidently(samples):
    u, v = samples["a"], samples["b"]
    combined = np.concatenate([u, v])
    edges = np.histogram_bin_edges(combined, bins="sturges")
    expected = distance.jensenshannon(np.histogram(u, edges)[0] / u.size,
                                      np.histogram(v, edges)[0] / v.size)
    result = ds.JENSENSHANNON.run(ds.Sample.numeric(u), ds.Sample.numeric(v))
    assert result == exact(expected)


def test_histogram_and_quantile_helpers_equal_numpy(samples):
    u = np.sort(samples["ties_a"])
    edges = np.linspace(u[0], u[-1], 13)
    assert ds.histogram_counts(u, edges).tolist() == np.histogram(u, edges)[0].tolist()
    q = np.linspace(0, 1, 11)[1:-1]
    assert ds.sorted_quantiles(u, q) == pytest.approx(np.quantile(u, q), rel=1e-12)


def test_psi_on_known_shares_and_bands():
    value = ds.psi_shares(np.array([0.5, 0.5]), np.array([0.25, 0.75]))
    assert value == exact(0.25 * math.log(2) + 0.25 * math.log(1.5))
    # An empty bin counts 1e-4 so PSI stays finite.
    assert ds.psi_shares(np.array([1.0, 0.0]), np.array([0.5, 0.5])) == exact(
        (0.5 - 1.0) * math.log(0.5) + (0.5 - 1e-4) * math.log(0.5 / 1e-4))
    assert [ds.psi_band(v) for v in (0.05, 0.1, 0.2, 0.25, 3.0)] == [
        "none", "moderate", "moderate", "major", "major"]


def test_psi_numeric_uses_reference_deciles(samples):
    u, v = np.sort(samples["a"]), np.sort(samples["b"])
    inner = np.quantile(u, np.linspace(0.1, 0.9, 9))
    ref_counts = np.histogram(u, np.concatenate([[-np.inf], inner, [np.inf]]))[0]
    assert ref_counts.tolist() == ds.quantile_bin_counts(u, inner).tolist()
    cur_counts = ds.quantile_bin_counts(v, inner)
    expected = ds.psi_shares(ref_counts / u.size, cur_counts / v.size)
    assert ds.psi_numeric(u, v) == exact(expected)
    assert ds.psi_numeric(u, u) == exact(0.0)


# --- Evidently 0.7's default choice ---------------------------------------------------------


@pytest.mark.parametrize(("storage", "in_current", "overall", "kind"), [
    ("float", 3, 6, ds.NUMERIC),
    ("float", 3, 5, ds.CATEGORICAL),      # ≤ 5 distinct over both sides
    ("integer", 11, 11, ds.NUMERIC),      # > 10 distinct in the current data
    ("integer", 10, 40, ds.CATEGORICAL),  # an integer code with ≤ 10 values
    ("text", 500, 500, ds.CATEGORICAL),
    ("boolean", 2, 2, ds.CATEGORICAL),
])
def test_column_kind(storage, in_current, overall, kind):
    assert ds.column_kind(storage, in_current, overall) == kind


@pytest.mark.parametrize(("kind", "rows", "distinct", "test"), [
    (ds.NUMERIC, 1000, 50, "ks"),
    (ds.NUMERIC, 1001, 50, "wasserstein"),
    (ds.CATEGORICAL, 1000, 3, "chisquare"),
    (ds.CATEGORICAL, 1000, 2, "z"),
    (ds.CATEGORICAL, 1000, 1, "z"),
    (ds.CATEGORICAL, 1001, 2, "jensenshannon"),
    (ds.CATEGORICAL, 50_000, 30, "jensenshannon"),
])
def test_default_test(kind, rows, distinct, test):
    assert ds.default_test(kind, rows, distinct).name == test


def test_verdict_boundaries_follow_evidently():
    assert ds.KS.drifted(0.05, 0.05)               # K-S: p ≤ threshold
    assert not ds.CHISQUARE.drifted(0.05, 0.05)    # chi-square and Z: p < threshold
    assert not ds.Z.drifted(0.05, 0.05)
    assert ds.WASSERSTEIN.drifted(0.1, 0.1)        # distances: d ≥ threshold
    assert not ds.JENSENSHANNON.drifted(0.0999, 0.1)
    assert [t.default_threshold for t in (ds.KS, ds.CHISQUARE, ds.Z, ds.WASSERSTEIN,
                                          ds.JENSENSHANNON)] == [0.05, 0.05, 0.05, 0.1, 0.1]


def test_run_test_reports_score_threshold_verdict_and_psi(samples):
    ref = ds.Sample.numeric(samples["a"])
    cur = ds.Sample.numeric(samples["b"] + 1.0)
    result = ds.run_test(ds.WASSERSTEIN, ref, cur)
    assert result.drifted and result.threshold == 0.1
    assert result.psi is not None and ds.psi_band(result.psi) == "major"
    relaxed = ds.run_test(ds.WASSERSTEIN, ref, cur, threshold=50.0)
    assert not relaxed.drifted and relaxed.score == result.score


def test_distinct_overall_counts_union_only_when_small():
    a = ds.Sample.categorical({"x": 3, "y": 1})
    b = ds.Sample.categorical({"y": 2, "z": 5})
    assert ds.distinct_overall(a, b) == 3
    keys, ref, cur = ds.aligned_counts(a, b)
    assert keys == ["x", "y", "z"] and ref.tolist() == [3, 1, 0] and cur.tolist() == [0, 2, 5]
    numbers = ds.Sample.numeric([1.0, 1.0, 2.0, 3.0])
    assert numbers.value_counts() == {1: 2, 2: 1, 3: 1}


def test_get_test_and_column_override_syntax():
    assert ds.get_test("PSI").name == "psi"
    with pytest.raises(InvalidInput, match="unknown drift test 'tvd'"):
        ds.get_test("tvd")
    with pytest.raises(InvalidInput, match="applies to numeric columns, but column 'city'"):
        ds.get_test("ks", ds.CATEGORICAL, "city")
    assert ds.parse_column_test("age=psi:0.2") == ("age", "psi", 0.2)
    assert ds.parse_column_test("a=b=ks") == ("a=b", "ks", None)
    with pytest.raises(InvalidInput, match="COLUMN=TEST"):
        ds.parse_column_test("age")
    with pytest.raises(InvalidInput, match="must be < 1"):
        ds.parse_column_test("age=ks:1.5")
    with pytest.raises(InvalidInput, match="must be a number"):
        ds.parse_column_test("age=ks:often")


def test_same_numbers_as_evidently_when_installed(samples):
    """Evidently is an optional `bench` extra; where it is installed, its own functions must
    give our numbers."""
    pd = pytest.importorskip("pandas")
    pytest.importorskip("evidently")
    from evidently.legacy.calculations.stattests import (
        chi_stat_test,
        jensenshannon_stat_test,
        ks_stat_test,
        wasserstein_stat_test,
        z_stat_test,
    )
    from evidently.legacy.core import ColumnType

    num, cat = ColumnType.Numerical, ColumnType.Categorical
    u, v = pd.Series(samples["a"]), pd.Series(samples["b"])
    ref, cur = ds.Sample.numeric(samples["a"]), ds.Sample.numeric(samples["b"])
    assert ds.WASSERSTEIN.run(ref, cur) == exact(
        wasserstein_stat_test.func(u, v, num, 0.1)[0])
    small_u, small_v = pd.Series(samples["small_a"]), pd.Series(samples["small_b"])
    assert ds.KS.run(ds.Sample.numeric(samples["small_a"]),
                     ds.Sample.numeric(samples["small_b"])) == exact(
        ks_stat_test.func(small_u, small_v, num, 0.05)[0])
    a = pd.Series(["x"] * 50 + ["y"] * 30 + ["z"] * 20)
    b = pd.Series(["x"] * 20 + ["y"] * 25 + ["z"] * 35 + ["w"] * 5)
    ca, cb = ds.Sample.categorical(a.value_counts().to_dict()), ds.Sample.categorical(
        b.value_counts().to_dict())
    assert ds.JENSENSHANNON.run(ca, cb) == exact(jensenshannon_stat_test.func(a, b, cat, 0.1)[0])
    assert ds.CHISQUARE.run(ca, cb) == exact(chi_stat_test.func(a, b, cat, 0.05)[0])
    two_a, two_b = pd.Series(["n"] * 70 + ["y"] * 30), pd.Series(["n"] * 55 + ["y"] * 45)
    assert ds.Z.run(ds.Sample.categorical(two_a.value_counts().to_dict()),
                    ds.Sample.categorical(two_b.value_counts().to_dict())) == exact(
        z_stat_test.func(two_a, two_b, cat, 0.05)[0])
