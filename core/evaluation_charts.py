"""Charts of evaluations, explanations and comparisons, as Plotly figures built in `core`.

Every figure is drawn from plain data that `core.evaluation` and `core.explain`
return (an evaluation's `details`, an `Importance`, a row's contributions, a
`Comparison`), so pages only place them and the CLI could save them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import plotly.graph_objects as go

from core.evaluation import Comparison
from core.explain import Importance

_TOP_FEATURES = 25
_HEIGHT = 420


def _layout(fig: go.Figure, title: str, x: str, y: str) -> go.Figure:
    fig.update_layout(
        title=title, xaxis_title=x, yaxis_title=y, height=_HEIGHT,
        margin={"l": 40, "r": 20, "t": 50, "b": 40}, legend={"orientation": "h", "y": -0.2},
    )
    return fig


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def roc_figure(details: Mapping[str, Any]) -> go.Figure:
    """ROC curves (one per class for multiclass, one-vs-rest) with the chance diagonal."""
    fig = go.Figure()
    for curve in details.get("roc", []):
        fig.add_trace(go.Scatter(
            x=curve["fpr"], y=curve["tpr"], mode="lines",
            name=f"{curve['class']} (AUC {_fmt(curve.get('auc'))})",
        ))
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="chance",
                             line={"dash": "dot", "color": "grey"}))
    fig.update_xaxes(range=[0, 1])
    fig.update_yaxes(range=[0, 1.02])
    return _layout(fig, "ROC curve", "false positive rate", "true positive rate")


def pr_figure(details: Mapping[str, Any]) -> go.Figure:
    """Precision-recall curves with each class's prevalence (a random model's precision)."""
    fig = go.Figure()
    for curve in details.get("pr", []):
        fig.add_trace(go.Scatter(
            x=curve["recall"], y=curve["precision"], mode="lines", line_shape="vh",
            name=f"{curve['class']} (AP {_fmt(curve.get('average_precision'))}, "
                 f"base rate {_fmt(curve.get('prevalence'))})",
        ))
    fig.update_xaxes(range=[0, 1])
    fig.update_yaxes(range=[0, 1.02])
    return _layout(fig, "Precision-recall curve", "recall", "precision")


def calibration_figure(details: Mapping[str, Any]) -> go.Figure:
    """Reliability diagram: mean predicted probability against the observed rate per bin."""
    calibration = details.get("calibration") or {}
    bins = calibration.get("bins", [])
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="perfectly calibrated",
                             line={"dash": "dot", "color": "grey"}))
    fig.add_trace(go.Scatter(
        x=[b["mean_predicted"] for b in bins], y=[b["observed"] for b in bins],
        mode="lines+markers", name="model",
        text=[f"{b['count']} rows" for b in bins], hovertemplate="%{x:.2f} → %{y:.2f} (%{text})",
    ))
    ece = calibration.get("expected_calibration_error")
    kind = calibration.get("kind", "")
    return _layout(
        fig, f"Calibration ({kind}; expected calibration error {_fmt(ece)})",
        "mean predicted probability", "observed frequency",
    )


def confusion_figure(details: Mapping[str, Any]) -> go.Figure:
    """Confusion matrix heatmap: rows are the truth, columns the prediction."""
    labels = [str(c) for c in details.get("classes", [])]
    matrix = details.get("confusion_matrix", [])
    fig = go.Figure(go.Heatmap(
        z=matrix, x=labels, y=labels, colorscale="Blues", text=matrix,
        texttemplate="%{text}", hovertemplate="true %{y}, predicted %{x}: %{z}<extra></extra>",
    ))
    fig.update_yaxes(autorange="reversed")
    return _layout(fig, "Confusion matrix", "predicted", "true")


def residuals_figure(details: Mapping[str, Any]) -> go.Figure:
    """Residual (true − predicted) against the prediction, with the zero line."""
    residuals = details.get("residuals") or {}
    fig = go.Figure(go.Scatter(
        x=residuals.get("predicted", []), y=residuals.get("residual", []), mode="markers",
        marker={"size": 5, "opacity": 0.6}, name="rows",
    ))
    fig.add_hline(y=0, line_dash="dot", line_color="grey")
    sampled = " (a sample of the rows)" if residuals.get("sampled") else ""
    return _layout(fig, f"Residuals{sampled}", "predicted", "true − predicted")


def segments_figure(details: Mapping[str, Any], metric: str | None = None) -> go.Figure:
    """One metric per segment, weakest first, with each segment's row count."""
    segments = details.get("segments") or {}
    metric = metric or segments.get("main_metric")
    rows = [r for r in segments.get("rows", []) if r.get(metric) is not None]
    fig = go.Figure(go.Bar(
        x=[str(r["segment"]) for r in rows], y=[r[metric] for r in rows],
        text=[f"{r['rows']} rows" for r in rows], textposition="outside",
    ))
    return _layout(fig, f"{metric} by {segments.get('column', 'segment')}",
                   str(segments.get("column", "segment")), str(metric))


def importance_figure(importance: Importance) -> go.Figure:
    """Mean |SHAP| per feature, most important on top (stacked by class for multiclass)."""
    names = list(importance.features[:_TOP_FEATURES])[::-1]
    fig = go.Figure()
    if importance.per_class:
        for label, values in importance.per_class.items():
            fig.add_trace(go.Bar(x=list(values[:_TOP_FEATURES])[::-1], y=names,
                                 orientation="h", name=str(label)))
        fig.update_layout(barmode="stack")
    else:
        fig.add_trace(go.Bar(x=list(importance.mean_abs[:_TOP_FEATURES])[::-1], y=names,
                             orientation="h", name="mean |SHAP|"))
    fig = _layout(fig, f"Feature importance (mean |SHAP| over {importance.rows} rows)",
                  f"mean |SHAP| ({importance.unit})", "")
    fig.update_layout(height=max(_HEIGHT, 24 * len(names) + 120))
    return fig


def contributions_figure(row: Mapping[str, Any], unit: str = "") -> go.Figure:
    """Waterfall from the base value through each feature's contribution to the raw output."""
    items = sorted(row["contributions"].items(), key=lambda kv: abs(kv[1]), reverse=True)
    shown = items[:_TOP_FEATURES]
    rest = sum(v for _, v in items[_TOP_FEATURES:])
    labels = ["base value"] + [name for name, _ in shown]
    values = [row["base_value"]] + [v for _, v in shown]
    measures = ["absolute"] + ["relative"] * len(shown)
    if len(items) > _TOP_FEATURES:
        labels.append(f"{len(items) - _TOP_FEATURES} other features")
        values.append(rest)
        measures.append("relative")
    labels.append("output")
    values.append(row["raw_output"])
    measures.append("total")
    fig = go.Figure(go.Waterfall(
        orientation="h", y=labels[::-1], x=values[::-1], measure=measures[::-1],
    ))
    explained = f" for class {row['class']!r}" if row.get("class") is not None else ""
    fig = _layout(fig, f"Contributions to this row's output{explained}", unit, "")
    fig.update_layout(height=max(_HEIGHT, 24 * len(labels) + 120), showlegend=False)
    return fig


def comparison_figure(comparison: Comparison) -> go.Figure:
    """Bootstrap distribution of the difference b − a, with its interval and zero."""
    fig = go.Figure(go.Histogram(x=list(comparison.differences), nbinsx=40,
                                 name="bootstrap differences"))
    fig.add_vline(x=0, line_dash="dot", line_color="grey")
    for value, name in ((comparison.low, "low"), (comparison.high, "high")):
        if value is not None:
            fig.add_vline(x=value, line_color="firebrick", annotation_text=name)
    if comparison.difference is not None:
        fig.add_vline(x=comparison.difference, line_color="black", annotation_text="observed")
    return _layout(
        fig,
        f"{comparison.metric_label}: {comparison.model_b} − {comparison.model_a} "
        f"({comparison.confidence:.0%} interval)",
        f"difference in {comparison.metric_label}", "resamples",
    )


def side_by_side_figure(comparison: Comparison, metrics: Sequence[str] | None = None) -> go.Figure:
    """Both versions' metrics as grouped bars."""
    names = list(metrics or comparison.metrics_a)
    fig = go.Figure()
    for label, values in ((comparison.model_a, comparison.metrics_a),
                          (comparison.model_b, comparison.metrics_b)):
        fig.add_trace(go.Bar(x=names, y=[values.get(n) for n in names], name=label))
    fig.update_layout(barmode="group")
    return _layout(fig, "Metrics side by side", "metric", "value")


def text_scores_figure(per_example: Sequence[Mapping[str, Any]], score: str) -> go.Figure:
    """Distribution of one per-row text score."""
    fig = go.Figure(go.Histogram(x=[e[score] for e in per_example if score in e], nbinsx=30))
    return _layout(fig, f"Per-row {score}", score, "rows")
