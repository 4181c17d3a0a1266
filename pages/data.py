"""Data: upload files into dataset versions, profile them, run read-only SQL."""

from __future__ import annotations

import tempfile
from pathlib import Path

import streamlit as st

from core import charts, datasets, query
from core.errors import PondError
from pages._shared import metric_row, show_error, signed_in_user, workspace

user = signed_in_user()
ws = workspace()
st.session_state.setdefault("data_last_ingest", None)

st.title("Data")

# --- upload -----------------------------------------------------------------------
with st.expander("Upload a file", expanded=not datasets.list_versions(ws)):
    upload = st.file_uploader(
        "CSV, TSV, Parquet, JSON/JSONL or Excel",
        type=[ext.lstrip(".") for ext in datasets.FORMATS],
        key="data_upload",
    )
    default_name = datasets.suggest_name(upload.name) if upload else ""
    typed = st.text_input(
        "Dataset name", placeholder=default_name or "e.g. churn_2024", key="data_upload_name",
        help="Defaults to the file's name. A new name starts at version 1; an existing name "
        "gets a new version.",
    )
    name = typed.strip() or default_name
    if st.button("Ingest", key="data_ingest", type="primary", disabled=upload is None):
        ws.tmp_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=ws.tmp_dir, suffix=Path(upload.name).suffix) as tmp:
            tmp.write(upload.getbuffer())
            tmp.flush()
            try:
                with st.spinner("Ingesting…"):
                    dv = datasets.ingest(ws, tmp.name, name, actor=user, source_name=upload.name)
            except PondError as exc:
                show_error(exc)
            else:
                st.session_state["data_last_ingest"] = dv.ref
                st.session_state["data_dataset"] = dv.name
                st.session_state.pop("data_version", None)

if st.session_state["data_last_ingest"]:
    st.success(f"Ingested {st.session_state['data_last_ingest']}.")

# --- pick a dataset version --------------------------------------------------------------
versions = datasets.list_versions(ws)
if not versions:
    st.info("No datasets yet. Upload a file above, or run `pond ingest PATH --name NAME`.")
    st.stop()

names = sorted({v.name for v in versions})
left, right = st.columns([3, 1])
dataset_name = left.selectbox("Dataset", names, key="data_dataset")
numbers = [v.version for v in versions if v.name == dataset_name][::-1]
version = right.selectbox("Version", numbers, key="data_version")
dv = next(v for v in versions if v.name == dataset_name and v.version == version)

metric_row([("Rows", f"{dv.row_count:,}"), ("Columns", len(dv.columns)),
            ("Source", dv.source_name), ("By", dv.created_by)])
st.caption(f"Added {dv.created_at:%Y-%m-%d %H:%M} · content sha256 `{dv.content_sha256}`")

tab_preview, tab_profile, tab_report, tab_sql = st.tabs(
    ["Preview", "Profile", "Full report", "SQL explorer"]
)

with tab_preview:
    st.dataframe(datasets.preview(ws, dv, 200), key="data_preview")
    st.dataframe(
        [{"column": c.name, "type": c.type} for c in dv.columns],
        hide_index=True, key="data_schema",
    )

with tab_profile:
    with st.spinner("Profiling…"):
        prof = datasets.profile(ws, dv).to_dict()
    metric_row([
        ("Rows", f"{prof['n_rows']:,}"),
        ("Duplicate rows", f"{prof['n_duplicate_rows']:,}"),
        ("Alerts", len(prof["alerts"])),
    ])
    for alert in prof["alerts"]:
        st.warning(f"**{alert['column']}** — {alert['message']}")
    st.dataframe(charts.profile_table(prof), hide_index=True, key="data_profile_table")
    column = st.selectbox("Column", [c["name"] for c in prof["columns"]], key="data_profile_column")
    col = next(c for c in prof["columns"] if c["name"] == column)
    fig = charts.column_chart(col)
    if fig is not None:
        st.plotly_chart(fig, key="data_column_chart")
    else:
        st.info(f"{column} has no values to chart.")
    heatmap = charts.correlation_heatmap(prof)
    if heatmap is not None:
        st.plotly_chart(heatmap, key="data_correlations")
    missing = charts.missing_chart(prof)
    if missing is not None:
        st.plotly_chart(missing, key="data_missing")

with tab_report:
    st.write(
        "A full ydata-profiling report. Above 100,000 rows it profiles a random sample, "
        "and says so; it takes a while on large data."
    )
    report = datasets.stored_report(ws, dv)
    if st.button("Generate report", key="data_make_report"):
        try:
            with st.spinner("Running ydata-profiling…"):
                report = datasets.ydata_report(ws, dv, actor=user)
        except PondError as exc:
            show_error(exc)
    if report is None:
        st.info("No report for this version yet.")
    else:
        if report.sampled:
            st.caption(
                f"Profiled a random sample of {report.rows_used:,} of {report.total_rows:,} rows."
            )
        else:
            st.caption(f"Profiled all {report.total_rows:,} rows.")
        st.iframe(datasets.report_html(ws, report), height=900)

with tab_sql:
    tables = query.table_names(ws)
    st.caption(
        "One read-only SELECT over your datasets. Each dataset is a view: "
        + ", ".join(f"`{t}`" for t in sorted(tables))
    )
    sql = st.text_area(
        "SQL", value=f"SELECT * FROM {dv.name} LIMIT 20", key="data_sql", height=120
    )
    if st.button("Run", key="data_sql_run"):
        try:
            result = query.run_query(ws, sql)
        except PondError as exc:
            show_error(exc)
        else:
            st.dataframe(result.frame, key="data_sql_result")
            st.caption(
                f"{len(result.frame):,} rows in {result.seconds:.2f} s"
                + (" (cut at the row limit)" if result.truncated else "")
            )
