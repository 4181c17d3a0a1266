"""Drift statistics: each test is a pure function of two samples plus a small
descriptor (`StatTest`) in the `STAT_TESTS` registry, and the default choice of
test lives in one readable function, `default_test`.

The defaults are Evidently 0.7's, so a user's numbers match what they know:
`column_kind` decides numeric or categorical, `default_test` picks K-S,
chi-square or Z for small references and normalised Wasserstein or
Jensen-Shannon for large ones, with thresholds 0.05 for p-values and 0.1 for
distances. Every function takes NaN/inf-free data: numeric samples as *sorted*
float64 arrays (sorting is what makes Wasserstein and K-S exact and cheap), and
categorical samples as value counts. `core.drift` fetches both from DuckDB.
PSI (10 bins on the reference's deciles) is reported beside every test.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import stats
from scipy.spatial import distance

from core.errors import InvalidInput

NUMERIC = "numeric"
CATEGORICAL = "categorical"
KINDS = (NUMERIC, CATEGORICAL)

P_VALUE = "p_value"
DISTANCE = "distance"

# Evidently 0.7: an integer column is numeric only with more than this many distinct values
# (in the current data), and no column is numeric with this few over reference + current.
INTEGER_CARDINALITY_LIMIT = 10
MIN_NUMERIC_DISTINCT = 5
# Evidently 0.7 switches from hypothesis tests to distances above this many reference rows.
SMALL_REFERENCE_ROWS = 1000
# Wasserstein is divided by the reference's std, floored so a constant column cannot divide by 0.
MIN_STD = 0.001
DEFAULT_DRIFT_SHARE = 0.5

PSI_BINS = 10
# A bin empty on one side would make PSI infinite; the usual fix is a tiny share instead.
PSI_EPSILON = 1e-4
PSI_MODERATE = 0.1
PSI_MAJOR = 0.25


# --- samples --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    """One side of one column with nulls, NaN and ±inf removed.

    Attributes:
        values: the numbers in ascending order (numeric columns), else None.
        counts: value → count (categorical columns), else derived from `values`.
    """

    values: np.ndarray | None = None
    counts: Mapping[Any, int] | None = None
    _derived: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def numeric(cls, values: Any, *, presorted: bool = False, distinct: int | None = None
                ) -> Sample:
        """A numeric sample; sorts `values` (float64) unless told they are sorted already.

        Args:
            distinct: the number of distinct values, when already known (it is stored).
        """
        array = np.asarray(values, dtype=np.float64)
        if not presorted:
            array = np.sort(array, kind="stable")
        sample = cls(values=array)
        if distinct is not None:
            sample._derived["distinct"] = int(distinct)
        return sample

    @classmethod
    def categorical(cls, counts: Mapping[Any, int]) -> Sample:
        return cls(counts={k: int(v) for k, v in counts.items() if int(v) > 0})

    @property
    def size(self) -> int:
        if self.values is not None:
            return int(self.values.size)
        return int(sum(self.counts.values())) if self.counts else 0

    def value_counts(self) -> dict[Any, int]:
        """Counts per distinct value (computed once from sorted numbers when needed)."""
        if self.counts is not None:
            return dict(self.counts)
        if "counts" not in self._derived:
            keys, counts = _unique_sorted(self.values)
            self._derived["counts"] = {
                _plain(k): int(c) for k, c in zip(keys.tolist(), counts.tolist(), strict=True)
            }
        return dict(self._derived["counts"])

    def distinct(self) -> int:
        if self.values is None:
            return len(self.counts or {})
        if "distinct" not in self._derived:
            size = self.values.size
            self._derived["distinct"] = 0 if size == 0 else int(
                np.count_nonzero(self.values[1:] != self.values[:-1]) + 1)
        return int(self._derived["distinct"])


def _plain(value: Any) -> Any:
    # Integral floats become ints so 3.0 from JSON and 3 from Parquet are one category.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _unique_sorted(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct values and their counts of an already sorted array, in O(n)."""
    if values.size == 0:
        return values, np.zeros(0, dtype=np.int64)
    starts = np.flatnonzero(np.concatenate(([True], values[1:] != values[:-1])))
    counts = np.diff(np.append(starts, values.size))
    return values[starts], counts


def _sort_key(value: Any) -> tuple[str, Any]:
    # Mixed types (a column that changed type) cannot be compared directly.
    return (type(value).__name__, value)


def aligned_counts(
    reference: Sample, current: Sample
) -> tuple[list[Any], np.ndarray, np.ndarray]:
    """The union of both sides' values, sorted, with each side's counts (0 where absent).

    Returns:
        (keys, reference counts, current counts), the counts as int64 arrays.
    """
    ref, cur = reference.value_counts(), current.value_counts()
    try:
        keys = sorted(set(ref) | set(cur))
    except TypeError:
        keys = sorted(set(ref) | set(cur), key=_sort_key)
    ref_counts = np.array([ref.get(k, 0) for k in keys], dtype=np.int64)
    cur_counts = np.array([cur.get(k, 0) for k in keys], dtype=np.int64)
    return keys, ref_counts, cur_counts


# --- the tests as pure functions -------------------------------------------------------------


def ks_pvalue(reference: np.ndarray, current: np.ndarray) -> float:
    """Two-sample Kolmogorov-Smirnov test, two-sided (scipy's `ks_2samp`, method auto).

    Returns:
        The p-value.
    """
    return float(stats.ks_2samp(reference, current).pvalue)


def wasserstein_sorted(reference: np.ndarray, current: np.ndarray) -> float:
    """The first Wasserstein distance of two *sorted* samples, exactly.

    It is the area between the two quantile functions. Both are step functions
    whose steps sit at i/n and j/m, so on a common denominator n·m the steps are
    the integers i·m and j·n: merging them needs one pass over two sorted runs,
    and each segment's quantile indices follow by integer division. That is
    the same number scipy's `wasserstein_distance` computes from the CDFs,
    without its argsorts and binary searches.
    """
    n, m = reference.size, current.size
    if n == 0 or m == 0:
        raise ValueError("the Wasserstein distance needs values on both sides")
    if n == m:
        return float(np.abs(reference - current).mean())
    steps = np.concatenate(
        (np.arange(1, n + 1, dtype=np.int64) * m, np.arange(1, m + 1, dtype=np.int64) * n)
    )
    steps.sort(kind="stable")  # two sorted runs: a linear merge
    lengths = np.diff(steps, prepend=0).astype(np.float64)
    ref_index = (steps + m - 1) // m - 1
    cur_index = (steps + n - 1) // n - 1
    gaps = np.abs(reference[ref_index] - current[cur_index])
    return float(np.vecdot(gaps, lengths)) / (float(n) * float(m))


def wasserstein_norm(reference: np.ndarray, current: np.ndarray, reference_std: float | None = None) -> float:
    """Wasserstein distance divided by the reference's population std (ddof 0), the std
    floored at 0.001 (Evidently's "Wasserstein distance (normed)").

    Args:
        reference, current: sorted finite values.
        reference_std: the reference's std when already known (it is stored once per version).
    """
    std = float(np.std(reference)) if reference_std is None else float(reference_std)
    return wasserstein_sorted(reference, current) / max(std, MIN_STD)


def chisquare_pvalue(reference_counts: np.ndarray, current_counts: np.ndarray) -> float:
    """Pearson's chi-square of the current counts against the reference's shares scaled
    to the current size (Evidently's chi-square). A category absent from the
    reference gives an infinite statistic: p-value 0.

    Returns:
        The p-value.
    """
    ref = np.asarray(reference_counts, dtype=np.float64)
    cur = np.asarray(current_counts, dtype=np.float64)
    expected = ref * (cur.sum() / ref.sum())
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(stats.chisquare(cur, expected).pvalue)


def z_pvalue(reference_counts: np.ndarray, current_counts: np.ndarray) -> float:
    """Two-proportion Z-test on the share of rows *not* in the first category (Evidently's
    Z-test for at most two categories; the keys must be in sorted order).

    Returns:
        The two-sided p-value; 1 when both sides hold the same single value.
    """
    ref = np.asarray(reference_counts, dtype=np.float64)
    cur = np.asarray(current_counts, dtype=np.float64)
    ref_present, cur_present = np.flatnonzero(ref), np.flatnonzero(cur)
    if ref_present.size == 1 and cur_present.size == 1 and ref_present[0] == cur_present[0]:
        return 1.0
    n1, n2 = ref.sum(), cur.sum()
    p1 = (n1 - ref[0]) / n1
    p2 = (n2 - cur[0]) / n2
    pooled = (p1 * n1 + p2 * n2) / (n1 + n2)
    z = (p1 - p2) / np.sqrt(pooled * (1 - pooled) * (1.0 / n1 + 1.0 / n2))
    # Written as Evidently writes it (not norm.sf) so the numbers agree to the last digit.
    return float(2 * (1 - stats.norm.cdf(np.abs(z))))


def jensenshannon_shares(reference_shares: np.ndarray, current_shares: np.ndarray) -> float:
    """Jensen-Shannon distance (natural log) between two share vectors, as scipy computes it."""
    return float(distance.jensenshannon(reference_shares, current_shares))


def jensenshannon_counts(reference_counts: np.ndarray, current_counts: np.ndarray) -> float:
    """Jensen-Shannon distance between the value shares of two sides (no binning; a value
    absent on one side has share 0)."""
    ref = np.asarray(reference_counts, dtype=np.float64)
    cur = np.asarray(current_counts, dtype=np.float64)
    return jensenshannon_shares(ref / ref.sum(), cur / cur.sum())


def sturges_edges(reference: np.ndarray, current: np.ndarray) -> np.ndarray:
    """`np.histogram_bin_edges(ref ∪ cur, "sturges")` from two sorted samples."""
    n = reference.size + current.size
    low = float(min(reference[0], current[0]))
    high = float(max(reference[-1], current[-1]))
    if low == high:
        low, high = low - 0.5, high + 0.5
    width = (high - low) / (math.log2(n) + 1.0)
    bins = max(int(np.ceil((high - low) / width)), 1)
    return np.linspace(low, high, bins + 1, endpoint=True)


def histogram_counts(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """`np.histogram(values, edges)[0]` for sorted values: right edge closed on the last bin."""
    below = np.searchsorted(values, edges[:-1], side="left")
    upto_last = np.searchsorted(values, edges[-1], side="right")
    return np.diff(np.append(below, upto_last))


def psi_shares(reference_shares: np.ndarray, current_shares: np.ndarray) -> float:
    """Population stability index Σ (cur − ref)·ln(cur / ref), empty bins set to 1e-4."""
    ref = np.where(reference_shares > 0, reference_shares, PSI_EPSILON)
    cur = np.where(current_shares > 0, current_shares, PSI_EPSILON)
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def sorted_quantiles(values: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Quantiles of a sorted array by linear interpolation (numpy's default method), read
    straight from positions instead of partitioning the data again."""
    position = np.asarray(q, dtype=np.float64) * (values.size - 1)
    low = np.floor(position).astype(np.int64)
    high = np.minimum(low + 1, values.size - 1)
    fraction = position - low
    return values[low] + fraction * (values[high] - values[low])


def decile_edges(reference: np.ndarray, bins: int = PSI_BINS) -> np.ndarray:
    """The inner bin edges of PSI: the sorted reference's quantiles, duplicates removed."""
    return np.unique(sorted_quantiles(reference, np.linspace(0, 1, bins + 1)[1:-1]))


def quantile_bin_counts(values: np.ndarray, inner_edges: np.ndarray) -> np.ndarray:
    """Counts of sorted `values` in (−inf, e1], (e1, e2], …, (ek, inf)."""
    upto = np.searchsorted(values, inner_edges, side="right")
    return np.diff(np.concatenate(([0], upto, [values.size])))


def psi_numeric(
    reference: np.ndarray, current: np.ndarray, bins: int = PSI_BINS,
    edges: np.ndarray | Sequence[float] | None = None,
) -> float:
    """PSI of two sorted samples over 10 bins cut at the reference's deciles.

    Args:
        edges: the reference's inner edges when already known (they are stored).
    """
    edges = decile_edges(reference, bins) if edges is None else np.asarray(edges, np.float64)
    ref = quantile_bin_counts(reference, edges) / reference.size
    cur = quantile_bin_counts(current, edges) / current.size
    return psi_shares(ref, cur)


def psi_counts(reference_counts: np.ndarray, current_counts: np.ndarray) -> float:
    """PSI over category shares."""
    ref = np.asarray(reference_counts, dtype=np.float64)
    cur = np.asarray(current_counts, dtype=np.float64)
    return psi_shares(ref / ref.sum(), cur / cur.sum())


def psi_band(value: float | None) -> str | None:
    """The conventional reading of a PSI: < 0.1 none, 0.1–0.25 moderate, ≥ 0.25 major."""
    if value is None or not math.isfinite(value):
        return None
    if value < PSI_MODERATE:
        return "none"
    return "moderate" if value < PSI_MAJOR else "major"


# --- descriptors and the registry ------------------------------------------------------------


@dataclass(frozen=True)
class StatTest:
    """What a drift test is.

    Attributes:
        name: the name users pass to override a column's test ("ks", "psi", …).
        label: how reports show it.
        kinds: the column kinds it applies to.
        default_threshold: Evidently 0.7's default.
        score: "p_value" (drift when small) or "distance" (drift when large).
        inclusive: whether a score equal to the threshold is drift (Evidently: K-S
            `p ≤ t`, chi-square and Z `p < t`, distances `d ≥ t`).
        run: the pure function of (reference, current) samples.
    """

    name: str
    label: str
    kinds: frozenset[str]
    default_threshold: float
    score: str
    inclusive: bool
    run: Callable[[Sample, Sample], float]

    @property
    def higher_is_drift(self) -> bool:
        return self.score == DISTANCE

    def drifted(self, score: float, threshold: float | None = None) -> bool:
        """Whether `score` means drift at `threshold` (the default when None)."""
        limit = self.default_threshold if threshold is None else threshold
        if math.isnan(score):
            return False
        if self.higher_is_drift:
            return score >= limit if self.inclusive else score > limit
        return score <= limit if self.inclusive else score < limit


def _numeric_jensenshannon(reference: Sample, current: Sample) -> float:
    ref, cur = reference.values, current.values
    if ref is not None and cur is not None and reference.distinct() > 20:
        # Evidently bins a numeric column with many values (Sturges over ref ∪ cur).
        edges = sturges_edges(ref, cur)
        return jensenshannon_shares(
            histogram_counts(ref, edges) / ref.size, histogram_counts(cur, edges) / cur.size
        )
    _, ref_counts, cur_counts = aligned_counts(reference, current)
    return jensenshannon_counts(ref_counts, cur_counts)


def _psi(reference: Sample, current: Sample) -> float:
    if reference.values is not None and current.values is not None:
        return psi_numeric(reference.values, current.values)
    _, ref_counts, cur_counts = aligned_counts(reference, current)
    return psi_counts(ref_counts, cur_counts)


def _counts_test(fn: Callable[[np.ndarray, np.ndarray], float]) -> Callable[[Sample, Sample], float]:
    def run(reference: Sample, current: Sample) -> float:
        _, ref_counts, cur_counts = aligned_counts(reference, current)
        return fn(ref_counts, cur_counts)

    return run


def _sorted_test(fn: Callable[[np.ndarray, np.ndarray], float]) -> Callable[[Sample, Sample], float]:
    def run(reference: Sample, current: Sample) -> float:
        if reference.values is None or current.values is None:
            raise InvalidInput("this test needs numbers on both sides")
        return fn(reference.values, current.values)

    return run


KS = StatTest("ks", "K-S p-value", frozenset({NUMERIC}), 0.05, P_VALUE, True,
              _sorted_test(ks_pvalue))
CHISQUARE = StatTest("chisquare", "chi-square p-value", frozenset({CATEGORICAL}), 0.05, P_VALUE,
                     False, _counts_test(chisquare_pvalue))
Z = StatTest("z", "Z-test p-value", frozenset({CATEGORICAL}), 0.05, P_VALUE, False,
             _counts_test(z_pvalue))
WASSERSTEIN = StatTest("wasserstein", "Wasserstein distance (normed)", frozenset({NUMERIC}), 0.1,
                       DISTANCE, True, _sorted_test(wasserstein_norm))
JENSENSHANNON = StatTest("jensenshannon", "Jensen-Shannon distance",
                         frozenset({NUMERIC, CATEGORICAL}), 0.1, DISTANCE, True,
                         _numeric_jensenshannon)
PSI = StatTest("psi", "PSI", frozenset({NUMERIC, CATEGORICAL}), PSI_MODERATE, DISTANCE, True, _psi)

STAT_TESTS: dict[str, StatTest] = {t.name: t for t in (KS, CHISQUARE, Z, WASSERSTEIN, JENSENSHANNON,
                                                        PSI)}


def get_test(name: str, kind: str | None = None, column: str | None = None) -> StatTest:
    """The test called `name`, checked against the column's kind.

    Raises:
        InvalidInput: an unknown test, or one that does not apply to this kind of column.
    """
    test = STAT_TESTS.get(str(name).strip().lower())
    if test is None:
        raise InvalidInput(
            f"unknown drift test {name!r}; choose from {', '.join(STAT_TESTS)}"
        )
    if kind is not None and kind not in test.kinds:
        where = f"column {column!r} is {kind}" if column else f"the column is {kind}"
        fits = ", ".join(t.name for t in STAT_TESTS.values() if kind in t.kinds)
        raise InvalidInput(
            f"the {test.name} test applies to {' and '.join(sorted(test.kinds))} columns, but "
            f"{where}; choose from {fits}"
        )
    return test


# --- the default choice ----------------------------------------------------------------------


def column_kind(storage: str, distinct_in_current: int, distinct_overall: int) -> str:
    """Numeric or categorical, by Evidently 0.7's rules.

    A column is numeric when it holds floats, or integers with more than 10
    distinct values in the current data, *and* it has more than 5 distinct
    values over reference and current together; everything else (text,
    booleans, few-valued numbers) is categorical.

    Args:
        storage: "float", "integer", or anything else ("text", "boolean").
        distinct_in_current: distinct non-null values in the current data.
        distinct_overall: distinct non-null values over reference and current.
    """
    if storage == "float":
        numeric_type = True
    elif storage == "integer":
        numeric_type = distinct_in_current > INTEGER_CARDINALITY_LIMIT
    else:
        numeric_type = False
    return NUMERIC if numeric_type and distinct_overall > MIN_NUMERIC_DISTINCT else CATEGORICAL


def default_test(kind: str, reference_rows: int, distinct_overall: int) -> StatTest:
    """Evidently 0.7's default test.

    Reference of at most 1000 rows (after dropping nulls and ±inf): K-S for
    numeric columns, chi-square for categorical ones, the Z-test when there are
    at most two categories. Larger references: Wasserstein distance normed by
    the reference's std for numeric columns, Jensen-Shannon distance for
    categorical ones.
    """
    if reference_rows <= SMALL_REFERENCE_ROWS:
        if kind == NUMERIC:
            return KS
        return CHISQUARE if distinct_overall > 2 else Z
    return WASSERSTEIN if kind == NUMERIC else JENSENSHANNON


def distinct_overall(reference: Sample, current: Sample) -> int:
    """Distinct values over both sides (cheap when either side already has more than 5)."""
    ref_distinct, cur_distinct = reference.distinct(), current.distinct()
    if max(ref_distinct, cur_distinct) > MIN_NUMERIC_DISTINCT:
        return max(ref_distinct, cur_distinct)
    return len(set(reference.value_counts()) | set(current.value_counts()))


# --- a whole column ---------------------------------------------------------------------------


@dataclass(frozen=True)
class TestResult:
    """The outcome of one column's test."""

    test: StatTest
    score: float
    threshold: float
    drifted: bool
    psi: float | None


def run_test(
    test: StatTest, reference: Sample, current: Sample, threshold: float | None = None,
    *, reference_std: float | None = None, psi_edges: Sequence[float] | None = None,
    categorical: bool = False,
) -> TestResult:
    """Run `test` and PSI on one column's two samples.

    Args:
        reference_std: the stored std of the reference, used by the Wasserstein test.
        psi_edges: the stored decile edges of the reference, used by PSI.
        categorical: the column is categorical, so PSI compares category shares even when
            the values are numbers.

    Raises:
        InvalidInput: a threshold outside (0, ∞) or a p-value threshold ≥ 1.
    """
    limit = test.default_threshold if threshold is None else float(threshold)
    check_threshold(test, limit)
    if test is WASSERSTEIN and reference.values is not None and current.values is not None:
        score = wasserstein_norm(reference.values, current.values, reference_std)
    elif test is PSI:
        score = float("nan")  # computed below, with the stored edges
    else:
        score = test.run(reference, current)
    if not categorical and reference.values is not None and current.values is not None:
        psi_value = psi_numeric(reference.values, current.values, edges=psi_edges)
    else:
        _, ref_counts, cur_counts = aligned_counts(reference, current)
        psi_value = psi_counts(ref_counts, cur_counts)
    if test is PSI:
        score = psi_value
    return TestResult(test, float(score), limit, test.drifted(float(score), limit), psi_value)


def check_threshold(test: StatTest, threshold: float) -> float:
    """Raises: InvalidInput unless the threshold makes sense for the test."""
    if not isinstance(threshold, int | float) or not math.isfinite(threshold) or threshold <= 0:
        raise InvalidInput(
            f"The 'threshold' of the {test.name} test must be a number > 0. Got {threshold!r} "
            "instead."
        )
    if test.score == P_VALUE and threshold >= 1:
        raise InvalidInput(
            f"The 'threshold' of the {test.name} test is a p-value and must be < 1. "
            f"Got {threshold!r} instead."
        )
    return float(threshold)


def parse_column_test(spec: str) -> tuple[str, str, float | None]:
    """Read "COLUMN=TEST" or "COLUMN=TEST:THRESHOLD" (the CLI's --test option).

    Raises:
        InvalidInput: a malformed spec, unknown test or bad threshold.
    """
    column, sep, rest = spec.rpartition("=")
    if not sep or not column or not rest:
        raise InvalidInput(
            f"column test {spec!r} is malformed; write COLUMN=TEST or COLUMN=TEST:THRESHOLD "
            "(e.g. age=psi:0.2)"
        )
    name, _, raw = rest.partition(":")
    test = get_test(name)
    threshold: float | None = None
    if raw:
        try:
            threshold = float(raw)
        except ValueError:
            raise InvalidInput(
                f"the threshold in {spec!r} must be a number, e.g. {column}={name}:0.2"
            ) from None
        check_threshold(test, threshold)
    return column, test.name, threshold


def shares(counts: Sequence[int] | np.ndarray) -> np.ndarray:
    array = np.asarray(counts, dtype=np.float64)
    total = array.sum()
    return array / total if total else array
