"""Evaluate: score a model version on a dataset version (metrics, curves, segments),
score generated texts (BLEU, ROUGE, sacreBLEU, chrF), explain predictions (SHAP),
and compare two versions with a bootstrap interval. Every result is computed by
one `core` call; `evaluate` (slow to import) is loaded only when text is scored."""

from __future__ import annotations

from typing import Any

import streamlit as st

from core import datasets, evaluation, explain
from core import evaluation_charts as charts
from core.errors import InvalidInput, PondError
from core.metrics import METRICS, TEXT_METRICS
from pages._feedback import compare_win_rate
from pages._shared import metric_row, show_error, signed_in_user, workspace

NONE = "(none)"

user = signed_in_user()
ws = workspace()
for key in ("eval_result", "eval_text_result", "eval_explain_result", "eval_compare_result"):
    st.session_state.setdefault(key, None)

st.title("Evaluate")
st.caption(
    "Every evaluation is stored on the model version with the dataset version it ran on "
    "(and its content hash), the metric implementation and library versions, who ran it "
    "and when; the Registry page lists them."
)

dataset_refs = evaluation.dataset_choices(ws)
if not dataset_refs:
    st.info("No datasets yet: ingest one on the Data page or with `pond ingest PATH --name NAME`.")
    st.stop()
model_refs = evaluation.model_choices(ws)


def _columns(ref: str) -> list[str]:
    return datasets.resolve(ws, ref).column_names


def _number(value: Any) -> str:
    return "n/a" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)


def _no_models() -> None:
    st.info("No LightGBM model versions yet: train one on the Train page or with `pond train`, "
            "then register it.")


# --- tabular ---------------------------------------------------------------------------------


def _render_tabular(found: evaluation.Evaluation) -> None:
    details = found.details or {}
    st.success(
        f"Stored as evaluation #{found.id} of {found.model_ref} on {found.dataset_ref} "
        f"({found.rows} rows, target `{found.columns.get('target')}`)."
    )
    labels = {name: spec.label for name, spec in METRICS.items()}
    items = list(found.metrics.items())
    for start in range(0, len(items), 4):
        metric_row([(labels.get(k, k) + (" (main)" if k == found.main_metric else ""),
                     _number(v)) for k, v in items[start:start + 4]])
    for warning in found.warnings:
        st.warning(warning)
    if found.task == "regression":
        st.plotly_chart(charts.residuals_figure(details), key="eval_residuals_chart")
        summary = (details.get("residuals") or {}).get("summary", {})
        st.dataframe([{"statistic": k, "value": v} for k, v in summary.items()],
                     hide_index=True, key="eval_residual_summary")
    else:
        left, right = st.columns(2)
        left.plotly_chart(charts.roc_figure(details), key="eval_roc_chart")
        right.plotly_chart(charts.pr_figure(details), key="eval_pr_chart")
        left.plotly_chart(charts.calibration_figure(details), key="eval_calibration_chart")
        right.plotly_chart(charts.confusion_figure(details), key="eval_confusion_chart")
        st.dataframe(details.get("class_report", []), hide_index=True, key="eval_class_report")
    segments = details.get("segments")
    if segments:
        st.subheader(f"By {segments['column']} (weakest first)")
        st.plotly_chart(charts.segments_figure(details), key="eval_segments_chart")
        st.dataframe(segments["rows"], hide_index=True, key="eval_segments_table")
    with st.expander("Metric implementation"):
        st.json(found.implementation)


def _tabular_tab() -> None:
    if not model_refs:
        _no_models()
        return
    left, mid, right = st.columns(3)
    model_ref = left.selectbox("Model version", model_refs, key="eval_model")
    dataset_ref = mid.selectbox("Dataset version", dataset_refs, key="eval_dataset")
    segment = right.selectbox("Segment by (optional)", [NONE, *_columns(dataset_ref)],
                              key="eval_segment")
    if st.button("Evaluate", type="primary", key="eval_run"):
        try:
            with st.spinner(f"Scoring {model_ref} on {dataset_ref}…"):
                st.session_state["eval_result"] = evaluation.evaluate_model(
                    ws, model_ref, dataset_ref, user,
                    segment_column=None if segment == NONE else segment,
                )
        except PondError as exc:
            show_error(exc)
    found = st.session_state["eval_result"]
    if found is None:
        st.info("Pick a model version and a dataset version that has its columns, then press "
                "Evaluate.")
        return
    _render_tabular(found)


# --- text --------------------------------------------------------------------------------------


def _render_text(found: evaluation.Evaluation) -> None:
    details = found.details or {}
    where = f" on {found.model_ref}" if found.model_ref else ""
    st.success(f"Stored as evaluation #{found.id}{where}: {found.rows} rows of "
               f"{found.dataset_ref}.")
    st.dataframe(
        [{"metric": spec.label, "value": found.metrics.get(name), "scale": spec.scale,
          "equals": spec.reference, "variant": spec.variant}
         for name, spec in TEXT_METRICS.items()],
        hide_index=True, key="eval_text_metrics",
    )
    outputs = details.get("outputs", {})
    for name in ("sacrebleu", "chrf"):
        signature = outputs.get(name, {}).get("signature")
        if signature:
            st.caption(f"{TEXT_METRICS[name].label} signature: `{signature}`")
    for warning in found.warnings:
        st.warning(warning)
    examples = details.get("per_example", [])
    sort_by = details.get("sort_by", "chrf")
    st.subheader(f"Rows, worst first by {sort_by}")
    for name, variant in details.get("per_example_variants", {}).items():
        st.caption(f"`{name}`: {variant}")
    st.dataframe(examples, hide_index=True, key="eval_text_examples")
    if examples:
        st.plotly_chart(charts.text_scores_figure(examples, sort_by), key="eval_text_chart")


def _text_tab() -> None:
    left, mid, right = st.columns(3)
    dataset_ref = left.selectbox("Dataset version", dataset_refs, key="eval_text_dataset")
    columns = _columns(dataset_ref)
    source = st.radio("Generated texts come from",
                      ["a column of the dataset", "a text model, from a prompt column"],
                      horizontal=True, key="eval_text_source")
    from_model = source.startswith("a text model")
    predictions = mid.selectbox("Prompts" if from_model else "Generated texts (predictions)",
                                columns, key="eval_text_predictions")
    references = right.selectbox("Reference texts", columns, key="eval_text_references",
                                 index=min(1, len(columns) - 1))
    all_refs = evaluation.model_choices(ws, flavor=None)
    model_ref = st.selectbox(
        "Text model that generates" if from_model else "Store on model version (optional)",
        [NONE, *all_refs], key="eval_text_model")
    if st.button("Compute text metrics", type="primary", key="eval_text_run"):
        try:
            with st.spinner("Scoring with BLEU, sacreBLEU, chrF and ROUGE (loading the metric "
                            "library takes a few seconds the first time)…"):
                if from_model:
                    if model_ref == NONE:
                        raise InvalidInput("pick the text model that generates the texts")
                    st.session_state["eval_text_result"] = evaluation.evaluate_text_model(
                        ws, model_ref, dataset_ref, predictions, references, user)
                else:
                    st.session_state["eval_text_result"] = evaluation.evaluate_text(
                        ws, dataset_ref, predictions, references, user,
                        model_ref=None if model_ref == NONE else model_ref,
                    )
        except PondError as exc:
            show_error(exc)
    found = st.session_state["eval_text_result"]
    if found is None:
        st.info("Pick a column of generated texts and a column of references (a text, or a "
                "list of texts per row), then press Compute text metrics.")
        return
    _render_text(found)


# --- explain -------------------------------------------------------------------------------------


def _explain_tab() -> None:
    if not model_refs:
        _no_models()
        return
    left, mid, right = st.columns(3)
    model_ref = left.selectbox("Model version", model_refs, key="eval_explain_model")
    dataset_ref = mid.selectbox("Dataset version", dataset_refs, key="eval_explain_dataset")
    row = right.number_input("Row to explain (0-based)", min_value=0, value=0, step=1,
                             key="eval_explain_row")
    if st.button("Explain", type="primary", key="eval_explain_run"):
        try:
            with st.spinner("Computing SHAP values with LightGBM…"):
                st.session_state["eval_explain_result"] = explain.explain_model(
                    ws, model_ref, dataset_ref, user, row=int(row)
                )
        except PondError as exc:
            show_error(exc)
    found = st.session_state["eval_explain_result"]
    if found is None:
        st.info("Pick a model version, a dataset version with its input columns and a row, "
                "then press Explain.")
        return
    st.caption(f"{found.model} on {found.dataset}; contributions are in {found.unit}.")
    st.plotly_chart(charts.importance_figure(found.importance), key="eval_importance_chart")
    st.subheader(f"Row {found.row}: predicted {found.prediction!r}")
    st.plotly_chart(charts.contributions_figure(found.row_contributions, found.unit),
                    key="eval_contributions_chart")
    contributions = found.row_contributions["contributions"]
    st.dataframe(
        sorted(({"feature": k, "value": str(found.row_values.get(k)), "contribution": v}
                for k, v in contributions.items()), key=lambda r: -abs(r["contribution"])),
        hide_index=True, key="eval_contributions_table",
    )


# --- compare -----------------------------------------------------------------------------------


def _default_index(refs: list[str], alias: str, fallback: int) -> int:
    found = [i for i, r in enumerate(refs) if r.endswith(f"@{alias}")]
    return found[0] if found else min(fallback, len(refs) - 1)


def _compare_tab() -> None:
    if len(model_refs) < 2:
        st.info("Comparing needs two model versions (e.g. the champion and a challenger).")
        return
    left, mid, right = st.columns(3)
    model_a = left.selectbox("A (e.g. champion)", model_refs, key="eval_cmp_a",
                             index=_default_index(model_refs, "champion", 0))
    model_b = mid.selectbox("B (e.g. challenger)", model_refs, key="eval_cmp_b",
                            index=_default_index(model_refs, "challenger", 1))
    dataset_ref = right.selectbox("Dataset version", dataset_refs, key="eval_cmp_dataset")
    left, mid, right = st.columns(3)
    metric = left.selectbox("Metric", ["(main metric of the task)", *METRICS],
                            key="eval_cmp_metric")
    n_boot = mid.number_input("Bootstrap resamples", min_value=100, max_value=20000,
                              value=evaluation.DEFAULT_N_BOOT, step=100, key="eval_cmp_nboot")
    seed = right.number_input("Seed", min_value=0, value=0, step=1, key="eval_cmp_seed")
    if st.button("Compare", type="primary", key="eval_cmp_run"):
        try:
            with st.spinner(f"Scoring both versions and {int(n_boot)} resamples…"):
                st.session_state["eval_compare_result"] = evaluation.compare(
                    ws, model_a, model_b, dataset_ref,
                    metric=None if metric.startswith("(") else metric,
                    n_boot=int(n_boot), seed=int(seed), actor=user,
                )
        except PondError as exc:
            show_error(exc)
    found = st.session_state["eval_compare_result"]
    if found is None:
        st.info("Pick two versions and a dataset version, then press Compare.")
        return
    metric_row([
        (f"A {found.model_a}", _number(found.score_a)),
        (f"B {found.model_b}", _number(found.score_b)),
        ("B − A", _number(found.difference)),
        (f"{found.confidence:.0%} interval",
         f"{_number(found.low)} to {_number(found.high)}"),
    ])
    (st.success if found.better else st.info)(found.verdict)
    for warning in found.warnings:
        st.warning(warning)
    st.dataframe(
        [{"metric": name, "A": found.metrics_a.get(name), "B": found.metrics_b.get(name)}
         for name in found.metrics_a],
        hide_index=True, key="eval_cmp_table",
    )
    st.plotly_chart(charts.comparison_figure(found), key="eval_cmp_chart")


tab_tabular, tab_text, tab_explain, tab_compare = st.tabs(
    ["Tabular", "Text metrics", "Explain", "Compare"]
)
with tab_tabular:
    _tabular_tab()
with tab_text:
    _text_tab()
with tab_explain:
    _explain_tab()
with tab_compare:
    _compare_tab()
    st.subheader("Human preference")
    compare_win_rate(ws, key="eval_win_rate")
