"""Plotly figures and tables drawn from a dataset profile: a histogram or top-values bar per
column, the correlation heatmap, the missing-values bar and the per-column summary table.
They read only a profile, never the data, so a cached profile is redrawn without touching the
dataset. Every function takes a ``Profile`` / ``ColumnProfile`` or their ``to_dict()`` form;
the pages only render what comes back.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime
from itertools import pairwise
from typing import Any

import plotly.graph_objects as go

from core.profiling import ColumnProfile, LogicalType, Profile

ProfileLike = Profile | Mapping[str, Any]
ColumnLike = ColumnProfile | Mapping[str, Any]

_BAR_COLOR = "#2a6f97"
_MISSING_COLOR = "#c8553d"
_HEIGHT = 280


def histogram_chart(column: ColumnLike) -> go.Figure | None:
    """Draw a column's histogram as adjacent bars, one per bin.

    Args:
        column: the profile of a numeric or datetime column.

    Returns:
        The figure, or None when the column has no histogram (not numeric or datetime, or
        no values).
    """
    column = _column(column)
    histogram = column.histogram
    # An edge is None only for dates beyond Python's datetime range (after year 9999).
    if histogram is None or not histogram.counts or None in histogram.edges:
        return None
    edges = list(histogram.edges)
    dates = column.logical_type is LogicalType.DATETIME
    if dates:
        moments = [datetime.fromisoformat(str(e)) for e in edges]
        lefts: list[object] = list(moments[:-1])
        # Plotly sizes bars on a date axis in milliseconds.
        widths = [(b - a).total_seconds() * 1000 for a, b in pairwise(moments)]
    else:
        numbers = [float(e) for e in edges]
        lefts = list(numbers[:-1])
        widths = [b - a for a, b in pairwise(numbers)]
    if len(histogram.counts) == 1 and not any(widths):
        widths = [1.0 if not dates else 86_400_000.0]  # a constant column: a visible bar
    ranges = [f"{_short(a)} to {_short(b)}" for a, b in pairwise(edges)]
    offset = 0.0
    if isinstance(column.min, int):
        # Integer bins are a whole number of values wide: name the values each one holds.
        ranges = [_integer_range(a, b) for a, b in pairwise(edges)]
        if all(w == 1 for w in widths):
            offset = -0.5  # one bar per value, centred on it
    figure = go.Figure(
        go.Bar(
            x=lefts,
            y=list(histogram.counts),
            width=widths,
            offset=offset,
            marker={"color": _BAR_COLOR, "line": {"width": 0.5, "color": "white"}},
            customdata=ranges,
            hovertemplate="%{customdata}<br>%{y:,} rows<extra></extra>",
        )
    )
    figure.update_layout(
        title=f"{column.name}: distribution",
        xaxis_title=column.name,
        yaxis_title="rows",
        bargap=0,
        height=_HEIGHT,
        margin={"l": 50, "r": 20, "t": 40, "b": 40},
    )
    return figure


def top_values_chart(column: ColumnLike) -> go.Figure | None:
    """Draw a column's most frequent values as horizontal bars, the most frequent on top.

    Args:
        column: the profile of a categorical, boolean or text column.

    Returns:
        The figure, or None when the column has no top values.
    """
    column = _column(column)
    if not column.top_values:
        return None
    labels = [str(v.value) for v in column.top_values][::-1]
    counts = [v.count for v in column.top_values][::-1]
    figure = go.Figure(
        go.Bar(
            x=counts,
            y=labels,
            orientation="h",
            marker={"color": _BAR_COLOR},
            hovertemplate="%{y}<br>%{x:,} rows<extra></extra>",
        )
    )
    figure.update_layout(
        title=f"{column.name}: most frequent values",
        xaxis_title="rows",
        height=max(_HEIGHT, 40 + 24 * len(labels)),
        margin={"l": 120, "r": 20, "t": 40, "b": 40},
    )
    figure.update_yaxes(type="category")
    return figure


def column_chart(column: ColumnLike) -> go.Figure | None:
    """Return the chart that fits a column: its histogram, else its top values.

    Args:
        column: any column profile.

    Returns:
        The figure, or None when the column has neither (for example all missing).
    """
    column = _column(column)
    return histogram_chart(column) or top_values_chart(column)


def correlation_heatmap(profile: ProfileLike) -> go.Figure | None:
    """Draw the Pearson correlation matrix of the numeric columns as a heatmap.

    Args:
        profile: a dataset profile.

    Returns:
        The figure, or None when fewer than two numeric columns vary.
    """
    profile = _profile(profile)
    names = list(profile.correlation_columns)
    if len(names) < 2:
        return None
    z = [[math.nan if v is None else v for v in row] for row in profile.correlations]
    heatmap = go.Heatmap(
        z=z,
        x=names,
        y=names,
        zmin=-1,
        zmax=1,
        colorscale="RdBu",
        reversescale=True,
        colorbar={"title": "r"},
        hovertemplate="%{y} vs %{x}<br>r = %{z:.3f}<extra></extra>",
    )
    if len(names) <= 15:
        heatmap.update(texttemplate="%{z:.2f}", textfont={"size": 10})
    figure = go.Figure(heatmap)
    side = max(360, 60 + 28 * len(names))
    figure.update_layout(
        title="Correlations (Pearson)",
        height=side,
        margin={"l": 120, "r": 20, "t": 40, "b": 120},
    )
    figure.update_yaxes(autorange="reversed")
    return figure


def missing_chart(profile: ProfileLike) -> go.Figure | None:
    """Draw the share of missing values of every column.

    Args:
        profile: a dataset profile.

    Returns:
        A bar chart with one bar per column, in table order; None for an empty table.
    """
    profile = _profile(profile)
    if not profile.n_rows:
        return None
    names = [c.name for c in profile.columns]
    shares = [c.missing_share * 100 for c in profile.columns]
    counts = [c.n_missing for c in profile.columns]
    figure = go.Figure(
        go.Bar(
            x=names,
            y=shares,
            marker={"color": _MISSING_COLOR},
            customdata=counts,
            hovertemplate="%{x}<br>%{y:.1f}% missing (%{customdata:,} rows)<extra></extra>",
        )
    )
    figure.update_layout(
        title="Missing values",
        yaxis_title="% of rows",
        yaxis_range=[0, 100],
        height=_HEIGHT,
        margin={"l": 50, "r": 20, "t": 40, "b": 80},
    )
    figure.update_xaxes(type="category")
    return figure


def profile_charts(profile: ProfileLike) -> dict[str, go.Figure]:
    """Build every chart of a profile.

    Args:
        profile: a dataset profile.

    Returns:
        ``{"missing_values": fig, "correlations": fig, "column:<name>": fig, ...}``; an
        entry is absent when there is nothing to draw (an empty table, fewer than two varying
        numeric columns, a column with no values).
    """
    profile = _profile(profile)
    charts: dict[str, go.Figure] = {}
    for key, figure in [
        ("missing_values", missing_chart(profile)),
        ("correlations", correlation_heatmap(profile)),
        *((f"column:{c.name}", column_chart(c)) for c in profile.columns),
    ]:
        if figure is not None:
            charts[key] = figure
    return charts


def profile_table(profile: ProfileLike) -> list[dict[str, Any]]:
    """Summarise every column in one row, ready for a table widget.

    Statistics are formatted as text so that numbers and dates can share a column.

    Args:
        profile: a dataset profile.

    Returns:
        One dict per column with the keys column, type, missing, missing %, distinct, min,
        median, max, mean and std.
    """
    profile = _profile(profile)
    rows = []
    for c in profile.columns:
        distinct = f"{c.n_distinct:,}" if c.distinct_exact else f"≈{c.n_distinct:,}"
        rows.append(
            {
                "column": c.name,
                "type": f"{c.logical_type.value} ({c.duckdb_type})",
                "missing": c.n_missing,
                "missing %": round(100 * c.missing_share, 2),
                "distinct": distinct,
                "min": _text(c.min),
                "median": _text(c.quantiles.get("p50")),
                "max": _text(c.max),
                "mean": _text(c.mean),
                "std": _text(c.std),
            }
        )
    return rows


def _profile(profile: ProfileLike) -> Profile:
    return profile if isinstance(profile, Profile) else Profile.from_dict(profile)


def _column(column: ColumnLike) -> ColumnProfile:
    return column if isinstance(column, ColumnProfile) else ColumnProfile.from_dict(column)


def _text(value: float | int | str | None) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, int):
        return f"{value:,}"
    return value.replace("T00:00:00", "")


def _integer_range(a: float | str, b: float | str) -> str:
    low, high = int(float(a)), int(float(b)) - 1
    return f"{low:,}" if high <= low else f"{low:,} to {high:,}"


def _short(edge: float | str) -> str:
    if isinstance(edge, str):
        return edge.replace("T00:00:00", "")
    return f"{edge:.4g}"
