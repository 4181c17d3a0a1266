"""Charts of an AutoML training, as Plotly figures built in `core` for the pages.

Optuna's own visualisations (optimisation history, parameter importances) are
drawn by the training worker from its study and kept as Plotly JSON in the
result, so a page never loads Optuna. The rest (live history, feature
importances, confusion matrix, residuals) are drawn here from the plain data
of a progress snapshot or a result dict.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import plotly.graph_objects as go
import plotly.io as pio

_TOP_FEATURES = 25


def study_figures_json(study: Any) -> dict[str, str]:
    """Optuna's optimisation-history and parameter-importance figures, as Plotly JSON.

    The importance figure is left out when fewer than two trials finished.
    """
    import optuna
    from optuna.visualization import plot_optimization_history, plot_param_importances

    figures = {"optimization_history": plot_optimization_history(study).to_json()}
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if len(complete) >= 2:
        figures["param_importances"] = plot_param_importances(study).to_json()
    return figures


def figure_from_json(text: str) -> go.Figure:
    """A figure stored by `study_figures_json`."""
    return pio.from_json(text)


def live_history_figure(
    history: Sequence[Mapping[str, Any]], metric_label: str, higher_is_better: bool
) -> go.Figure:
    """Trial scores and the best so far against trial number, from progress history."""
    done = [h for h in history if h.get("value") is not None]
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=[h["number"] for h in done],
            y=[h["value"] for h in done],
            mode="markers",
            name="trial",
        )
    )
    best = [h for h in history if h.get("best_value") is not None]
    fig.add_trace(
        go.Scatter(
            x=[h["number"] for h in best],
            y=[h["best_value"] for h in best],
            mode="lines",
            name="best so far",
            line={"shape": "hv"},
        )
    )
    direction = "higher is better" if higher_is_better else "lower is better"
    fig.update_layout(
        title="Optimisation history",
        xaxis_title="trial",
        yaxis_title=f"{metric_label} ({direction})",
        height=320,
        margin={"l": 40, "r": 10, "t": 40, "b": 40},
    )
    return fig


def feature_importance_figure(importances: Mapping[str, float]) -> go.Figure:
    """Horizontal bars of total split gain per feature (the top 25)."""
    items = list(importances.items())[:_TOP_FEATURES]
    items.reverse()
    fig = go.Figure(go.Bar(x=[v for _, v in items], y=[k for k, _ in items], orientation="h"))
    fig.update_layout(
        title="Feature importance (gain)",
        xaxis_title="total gain",
        height=max(240, 22 * len(items) + 80),
        margin={"l": 10, "r": 10, "t": 40, "b": 40},
    )
    return fig


def confusion_matrix_figure(matrix: Sequence[Sequence[int]], classes: Sequence[Any]) -> go.Figure:
    """Holdout confusion matrix: rows are true classes, columns predicted ones."""
    labels = [str(c) for c in classes]
    fig = go.Figure(
        go.Heatmap(
            z=[list(r) for r in matrix],
            x=labels,
            y=labels,
            text=[[str(v) for v in r] for r in matrix],
            texttemplate="%{text}",
            colorscale="Blues",
            showscale=False,
        )
    )
    fig.update_layout(
        title="Confusion matrix (holdout)",
        xaxis_title="predicted",
        yaxis_title="actual",
        yaxis={"autorange": "reversed"},
        height=360,
    )
    return fig


def residuals_figure(residuals: Mapping[str, Sequence[float]]) -> go.Figure:
    """Holdout residuals (actual minus predicted) against the prediction."""
    predicted = list(residuals["predicted"])
    actual = list(residuals["actual"])
    fig = go.Figure(
        go.Scatter(
            x=predicted,
            y=[a - p for a, p in zip(actual, predicted, strict=True)],
            mode="markers",
            marker={"opacity": 0.5},
        )
    )
    fig.add_hline(y=0, line_dash="dash")
    fig.update_layout(
        title="Residuals (holdout)", xaxis_title="predicted", yaxis_title="actual − predicted",
        height=360,
    )
    return fig


def param_importance_figure(importances: Mapping[str, float]) -> go.Figure:
    """Bars of hyperparameter importance (used when Optuna's figure is absent)."""
    items = list(importances.items())
    items.reverse()
    fig = go.Figure(go.Bar(x=[v for _, v in items], y=[k for k, _ in items], orientation="h"))
    fig.update_layout(title="Hyperparameter importances", height=max(240, 24 * len(items) + 80))
    return fig


def result_figures(result: Mapping[str, Any]) -> dict[str, go.Figure]:
    """Every chart of a finished training, by name, from its result dict."""
    figures: dict[str, go.Figure] = {}
    stored = result.get("figures") or {}
    if "optimization_history" in stored:
        figures["optimization_history"] = figure_from_json(stored["optimization_history"])
    else:
        figures["optimization_history"] = live_history_figure(
            result.get("history", []), result.get("metric_label", ""),
            bool(result.get("higher_is_better")),
        )
    if "param_importances" in stored:
        figures["param_importances"] = figure_from_json(stored["param_importances"])
    elif result.get("param_importances"):
        figures["param_importances"] = param_importance_figure(result["param_importances"])
    if result.get("feature_importances"):
        figures["feature_importances"] = feature_importance_figure(result["feature_importances"])
    if result.get("confusion_matrix") is not None:
        figures["confusion_matrix"] = confusion_matrix_figure(
            result["confusion_matrix"], result.get("classes") or []
        )
    if result.get("residuals") is not None:
        figures["residuals"] = residuals_figure(result["residuals"])
    return figures
