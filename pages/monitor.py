"""Monitor: drift of a model's logged inferences (or of one dataset version against
another) per column with overlaid distributions, drift and performance over time,
stored reports, alert policies and the alerts they fired. Every number comes from
one `core.drift` call; this page only lays it out."""

from __future__ import annotations

from typing import Any

import streamlit as st

from core import drift
from core import drift_charts as charts
from core import drift_stats as ds
from core.errors import PondError
from core.metrics import METRICS
from pages._shared import metric_row, show_error, signed_in_user, workspace

TRAINING = "(the model's training data)"
WINDOWS = ["1d", "7d", "30d", "all"]
MODES = ["A model's logged inferences", "Two dataset versions"]

user = signed_in_user()
ws = workspace()
for key in ("monitor_report", "monitor_timeline", "monitor_performance"):
    st.session_state.setdefault(key, None)

st.title("Monitor")
st.caption(
    "Drift tests and thresholds are Evidently 0.7's defaults (K-S, chi-square or Z-test up to "
    "1,000 reference rows; normed Wasserstein or Jensen-Shannon above), with PSI beside. "
    "Reference statistics are computed once per dataset version and stored; every report is "
    "stored with who ran it and when."
)

dataset_refs = drift.dataset_refs(ws)
if not dataset_refs:
    st.info("No datasets yet: ingest one on the Data page or with `pond ingest PATH --name NAME`.")
    st.stop()
models = drift.monitored_models(ws)


def _fmt(value: Any) -> str:
    if value is None or value != value:
        return "n/a"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _render_report(report: drift.DriftReport, prefix: str) -> None:
    window = f", last {report.window}" if report.window else ""
    st.success(
        f"Report #{report.id}: {report.reference} vs {report.current}{window}"
        + (f" (model {report.model_ref})" if report.model else "")
        + f", by {report.created_by} in {report.seconds:.2f} s."
    )
    metric_row([
        ("Dataset drift", "yes" if report.dataset_drift else "no"),
        ("Drifted columns", f"{len(report.drifted_columns)} of {len(report.columns)}"),
        ("Drifted share", f"{_fmt(report.drifted_share)} (≥ {report.drift_share_threshold:g})"),
        ("Current rows", f"{report.current_rows:,}"),
    ])
    for warning in report.warnings:
        st.warning(warning)
    if report.alerts:
        st.error("Alerts fired: " + ", ".join(f"#{a}" for a in report.alerts))
    st.dataframe(charts.summary_table(report), hide_index=True, key=f"{prefix}_summary")
    if report.skipped:
        with st.expander(f"{len(report.skipped)} columns not compared"):
            st.dataframe(charts.skipped_table(report), hide_index=True, key=f"{prefix}_skipped")
    names = [c.column for c in report.columns]
    if report.prediction is not None:
        names.append(report.prediction.column)
    default = report.drifted_columns[0] if report.drifted_columns else names[0]
    column = st.selectbox("Distribution of", names, index=names.index(default),
                          key=f"{prefix}_column")
    chosen = report.column(column)
    st.plotly_chart(charts.distribution_figure(chosen), key=f"{prefix}_chart")
    for note in chosen.notes:
        st.caption(note)
    st.download_button("Download report (JSON)", drift.report_json(report),
                       file_name=f"drift-report-{report.id}.json", mime="application/json",
                       key=f"{prefix}_download")


def _report_tab() -> None:
    mode = st.radio("Compare", MODES, horizontal=True, key="monitor_mode")
    left, mid, right = st.columns(3)
    model = reference = current = window = None
    if mode == MODES[0]:
        if not models:
            st.info("No registered models yet: train one on the Train page, or compare two "
                    "dataset versions.")
            return
        model = left.selectbox("Model", models, key="monitor_model")
        window = mid.selectbox("Logged in the last", WINDOWS, index=1, key="monitor_window")
        chosen = right.selectbox("Reference", [TRAINING, *dataset_refs], key="monitor_reference")
        reference = None if chosen == TRAINING else chosen
        window = None if window == "all" else window
    else:
        reference = left.selectbox("Reference", dataset_refs, key="monitor_ref_dataset")
        current = mid.selectbox("Current", dataset_refs, index=min(1, len(dataset_refs) - 1),
                                key="monitor_cur_dataset")
    with st.expander("Tests and thresholds"):
        share = st.number_input("Dataset drift when this share of columns drifted", 0.05, 1.0,
                                ds.DEFAULT_DRIFT_SHARE, 0.05, key="monitor_drift_share")
        overrides = st.text_input(
            "Per-column tests (COLUMN=TEST[:THRESHOLD], comma-separated)",
            placeholder="age=psi:0.2, city=chisquare", key="monitor_overrides",
            help=f"Tests: {', '.join(ds.STAT_TESTS)}. Leave empty for Evidently's defaults.",
        )
    if st.button("Run drift report", type="primary", key="monitor_run"):
        try:
            tests = {}
            for spec in [s.strip() for s in overrides.split(",") if s.strip()]:
                column, name, threshold = ds.parse_column_test(spec)
                tests[column] = {"test": name, "threshold": threshold}
            with st.spinner("Comparing…"):
                st.session_state["monitor_report"] = drift.drift_report(
                    ws, reference=reference, current=current, model=model, window=window,
                    actor=user, column_tests=tests or None, drift_share=share,
                )
        except PondError as exc:
            show_error(exc)
    report = st.session_state["monitor_report"]
    if report is None:
        st.info("Pick what to compare, then press Run drift report.")
        return
    _render_report(report, "monitor_report_view")


def _over_time_tab() -> None:
    if not models:
        st.info("Drift over time follows a registered model's logged inferences; none yet.")
        return
    left, mid, right = st.columns(3)
    model = left.selectbox("Model", models, key="monitor_time_model")
    freq = mid.selectbox("Per", list(drift.FREQUENCIES), key="monitor_freq")
    window = right.selectbox("Logged in the last", WINDOWS, index=3, key="monitor_time_window")
    if st.button("Show drift over time", key="monitor_time_run"):
        try:
            with st.spinner("Comparing each period with the reference…"):
                st.session_state["monitor_timeline"] = drift.drift_over_time(
                    ws, model, freq, window=None if window == "all" else window, actor=user)
        except PondError as exc:
            show_error(exc)
    timeline = st.session_state["monitor_timeline"]
    if timeline is not None:
        st.plotly_chart(charts.drift_over_time_figure(timeline), key="monitor_time_chart")
        st.dataframe(
            [{"period": p.start, "rows": p.rows, "drifted share": p.drifted_share,
              **{c: s for c, s in p.scores.items()}} for p in timeline.points],
            hide_index=True, key="monitor_time_table",
        )
    st.subheader("Performance over time")
    st.caption("When true labels arrive later, ingest them as a dataset with the `request_id` "
               "the server returned (or a key column of the records) and the true value.")
    left, mid, right = st.columns(3)
    labels = left.selectbox("Labels dataset", dataset_refs, key="monitor_labels")
    key = mid.text_input("Join on", "request_id", key="monitor_key")
    label_column = right.text_input("True value column (default: the model's target)", "",
                                    key="monitor_label_column")
    if st.button("Show performance over time", key="monitor_perf_run"):
        try:
            with st.spinner("Joining predictions with labels…"):
                st.session_state["monitor_performance"] = drift.performance_over_time(
                    ws, model, labels, key=key.strip() or "request_id",
                    label_column=label_column.strip() or None, freq=freq,
                    window=None if window == "all" else window, actor=user,
                )
        except PondError as exc:
            show_error(exc)
    performance = st.session_state["monitor_performance"]
    if performance is not None:
        st.caption(f"{performance.matched_rows} of {performance.logged_rows} logged predictions "
                   f"have a label in {performance.labels}.")
        st.plotly_chart(charts.performance_figure(performance), key="monitor_perf_chart")
        if performance.alerts:
            st.error("Alerts fired: " + ", ".join(f"#{a}" for a in performance.alerts))


def _alerts_tab() -> None:
    open_now = drift.list_alerts(ws, open_only=True)
    st.subheader(f"Open alerts ({len(open_now)})")
    if open_now:
        st.dataframe([{"id": a.id, "fired": a.fired_at, "model": a.model,
                       "condition": a.condition, "message": a.message, "report": a.report_id}
                      for a in open_now], hide_index=True, key="monitor_open_alerts")
        left, right = st.columns([1, 2])
        alert_id = left.selectbox("Alert", [a.id for a in open_now], key="monitor_ack_id")
        comment = right.text_input("What was done", key="monitor_ack_comment")
        if st.button("Acknowledge", key="monitor_ack"):
            try:
                drift.acknowledge(ws, alert_id, actor=user, comment=comment)
                st.rerun()
            except PondError as exc:
                show_error(exc)
    else:
        st.info("No open alerts.")
    deliveries = drift.alert_deliveries(ws, limit=20)
    if deliveries:
        with st.expander("Webhook deliveries"):
            st.dataframe([d.__dict__ for d in deliveries], hide_index=True,
                         key="monitor_deliveries")
    st.subheader("Alert policy")
    if not models:
        st.info("Alert policies belong to registered models; none yet.")
        return
    model = st.selectbox("Model", models, key="monitor_policy_model")
    current = drift.get_policy(ws, model)
    if current is not None:
        st.caption("Now: alert when " + " or ".join(current.describe())
                   + ("" if current.enabled else " (disabled)"))
    left, right = st.columns(2)
    use_share = left.checkbox("Alert on the share of drifted columns", value=True,
                              key="monitor_policy_use_share")
    share = left.number_input("Share at or above", 0.05, 1.0, 0.5, 0.05,
                              key="monitor_policy_share")
    columns = right.text_input("Alert when any of these columns drift (comma-separated)",
                               key="monitor_policy_columns")
    metric = left.selectbox("Alert on a metric", ["(none)", *METRICS],
                            key="monitor_policy_metric")
    limit = left.number_input("Metric limit", value=0.8, key="monitor_policy_limit")
    url = right.text_input("Webhook URL (optional, Slack-compatible)", key="monitor_policy_url")
    if st.button("Save policy", key="monitor_policy_save"):
        try:
            saved = drift.set_policy(
                ws, model, actor=user, max_drift_share=share if use_share else None,
                watched_columns=[c.strip() for c in columns.split(",") if c.strip()],
                metric=None if metric == "(none)" else metric,
                metric_limit=None if metric == "(none)" else limit,
                webhook_url=url.strip() or None,
            )
            st.success("Saved: alert when " + " or ".join(saved.describe()))
        except PondError as exc:
            show_error(exc)


def _reports_tab() -> None:
    found = drift.list_reports(ws, limit=50)
    if not found:
        st.info("No drift reports yet.")
        return
    st.dataframe(
        [{"id": r.id, "created": r.created_at, "by": r.created_by,
          "model": f"{r.model}:{r.model_version}" if r.model else "", "reference": r.reference,
          "current": r.current, "window": r.window or "",
          "drifted": f"{r.columns_drifted}/{r.columns_tested}", "dataset drift": r.dataset_drift}
         for r in found],
        hide_index=True, key="monitor_reports_table",
    )
    report_id = st.selectbox("Open report", [r.id for r in found], key="monitor_open_report")
    try:
        _render_report(drift.get_report(ws, report_id), "monitor_stored")
    except PondError as exc:
        show_error(exc)


report_tab, time_tab, alerts_tab, reports_tab = st.tabs(
    ["Drift report", "Over time", "Alerts", "Reports"])
with report_tab:
    _report_tab()
with time_tab:
    _over_time_tab()
with alerts_tab:
    _alerts_tab()
with reports_tab:
    _reports_tab()
