"""Plotly figures and tables of drift reports: a column's reference and current
distributions overlaid (a histogram for numeric columns, bars for categorical
ones), drift scores over time, performance over time, and the per-column
summary table. They draw only what `core.drift` returns (a stored report
carries each column's distribution), so pages place them without computing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import plotly.graph_objects as go

from core.drift import ColumnDrift, DriftReport, DriftTimeline, PerformanceTimeline

_REFERENCE = "#2a6f97"
_CURRENT = "#c8553d"
_HEIGHT = 360
_MARGIN = {"l": 40, "r": 20, "t": 50, "b": 40}


def _layout(fig: go.Figure, title: str, x: str, y: str, height: int = _HEIGHT) -> go.Figure:
    fig.update_layout(
        title=title, xaxis_title=x, yaxis_title=y, height=height, margin=_MARGIN,
        legend={"orientation": "h", "y": -0.25},
    )
    return fig


def _verdict(column: ColumnDrift) -> str:
    kind = "p" if column.score_kind == "p_value" else "score"
    return (f"{column.test_label}: {kind} = {column.score:.4g} "
            f"(threshold {column.threshold:g}) — {'drift' if column.drifted else 'no drift'}")


def distribution_figure(column: ColumnDrift | Mapping[str, Any]) -> go.Figure:
    """Reference and current distributions of one column, overlaid.

    Args:
        column: a `ColumnDrift` (or its `to_dict()`), as a report holds it.

    Returns:
        A histogram of shares over common bins (numeric) or grouped bars of category
        shares (categorical); titled with the test, score and verdict.
    """
    result = column if isinstance(column, ColumnDrift) else ColumnDrift.from_dict(column)
    data = result.distribution or {}
    fig = go.Figure()
    title = f"{result.column} — {_verdict(result)}"
    if data.get("type") == "histogram":
        edges = data["edges"]
        centers = [(a + b) / 2 for a, b in zip(edges[:-1], edges[1:], strict=True)]
        width = (edges[1] - edges[0]) if len(edges) > 1 else 1.0
        for name, color in (("reference", _REFERENCE), ("current", _CURRENT)):
            fig.add_trace(go.Bar(
                x=centers, y=data[name], width=width, name=name, opacity=0.55,
                marker={"color": color}, hovertemplate="%{x:.4g}: %{y:.2%}<extra>" + name
                + "</extra>",
            ))
        fig.update_layout(barmode="overlay", bargap=0)
        return _layout(fig, title, result.column, "share of rows")
    if data.get("type") == "bars":
        for name, color in (("reference", _REFERENCE), ("current", _CURRENT)):
            fig.add_trace(go.Bar(
                x=data["categories"], y=data[name], name=name, marker={"color": color},
                hovertemplate="%{x}: %{y:.2%}<extra>" + name + "</extra>",
            ))
        fig.update_layout(barmode="group")
        return _layout(fig, title, result.column, "share of rows")
    return _layout(fig, title + " (no distribution stored)", result.column, "share of rows")


def summary_table(report: DriftReport) -> list[dict[str, Any]]:
    """One row per compared column (and the prediction): test, score, threshold, verdict,
    PSI, rows — drifted columns first, then by name."""
    rows = report.summary_rows()
    for row in rows:
        row["score"] = round(row["score"], 6) if row["score"] == row["score"] else None
        row["psi"] = None if row["psi"] is None else round(row["psi"], 4)
    return sorted(rows, key=lambda r: (not r["drifted"], r["column"]))


def skipped_table(report: DriftReport) -> list[dict[str, str]]:
    return [{"column": s.column, "reason": s.reason} for s in report.skipped]


def drift_over_time_figure(timeline: DriftTimeline, columns: list[str] | None = None
                           ) -> go.Figure:
    """Each column's drift score per period as a line, and the drifted share.

    Args:
        columns: only these columns (default: all tested ones).

    Returns:
        A line chart; p-value tests and distances share the axis, so each line's name says
        which test it is.
    """
    fig = go.Figure()
    points = timeline.points
    x = [p.start for p in points]
    names: list[str] = []
    for p in points:
        for name in p.scores:
            if name not in names and (columns is None or name in columns):
                names.append(name)
    for name in names:
        test = next((p.tests[name] for p in points if name in p.tests), "")
        fig.add_trace(go.Scatter(
            x=x, y=[p.scores.get(name) for p in points], mode="lines+markers",
            name=f"{name} ({test})",
        ))
    if any(p.prediction_score is not None for p in points):
        fig.add_trace(go.Scatter(
            x=x, y=[p.prediction_score for p in points], mode="lines+markers",
            name="prediction", line={"dash": "dash"},
        ))
    fig.add_trace(go.Scatter(
        x=x, y=[p.drifted_share for p in points], mode="lines+markers",
        name="share of drifted columns", line={"color": "black", "width": 3},
    ))
    fig.add_hline(y=timeline.drift_share_threshold, line_dash="dot", line_color="grey",
                  annotation_text="dataset drift share")
    return _layout(fig, f"Drift of {timeline.model}:{timeline.model_version} per "
                   f"{timeline.freq} against {timeline.reference}", timeline.freq,
                   "score / share", height=420)


def performance_figure(timeline: PerformanceTimeline, metric: str | None = None) -> go.Figure:
    """One metric per period (the task's main metric by default), with the labelled rows."""
    name = metric or timeline.main_metric
    fig = go.Figure()
    fig.add_trace(go.Scatter(
        x=[p.start for p in timeline.points], y=[p.metrics.get(name) for p in timeline.points],
        mode="lines+markers", name=name,
        text=[f"{p.rows} rows" for p in timeline.points],
        hovertemplate="%{x}: %{y:.4g} (%{text})<extra></extra>",
    ))
    return _layout(fig, f"{name} of {timeline.model}:{timeline.model_version} per "
                   f"{timeline.freq} (labels from {timeline.labels})", timeline.freq, name)
