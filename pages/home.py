"""Home: the workspace at a glance."""

from __future__ import annotations

import streamlit as st

from core import overview
from pages._shared import metric_row, signed_in_user, workspace

user = signed_in_user()
ws = workspace()
view = overview.workspace_overview(ws)

st.title("Pond")
st.caption(f"Workspace `{ws.home}`")
metric_row(
    [
        ("Datasets", len(view.datasets)),
        ("Dataset versions", view.dataset_versions),
        ("Models", len(view.models)),
        ("Reviews waiting", len(view.pending_reviews)),
        ("Open alerts", len(view.alerts)),
    ]
)

left, right = st.columns(2)
with left:
    st.subheader("Datasets")
    if view.datasets:
        st.dataframe(
            [
                {"dataset": dv.name, "latest version": dv.version, "rows": dv.row_count,
                 "columns": len(dv.columns), "by": dv.created_by, "at": dv.created_at}
                for dv in view.datasets
            ],
            hide_index=True,
            key="home_datasets",
        )
    else:
        st.info("No datasets yet: upload one on the Data page or run `pond ingest`.")
    st.subheader("Models")
    if view.models:
        st.dataframe(view.models, hide_index=True, key="home_models")
    else:
        st.info("No registered models yet.")
with right:
    st.subheader("Reviews waiting")
    if view.pending_reviews:
        st.dataframe(view.pending_reviews, hide_index=True, key="home_reviews")
    else:
        st.info("No approval requests are waiting.")
    st.subheader("Alerts")
    if view.alerts:
        st.dataframe(view.alerts, hide_index=True, key="home_alerts")
    else:
        st.info("No open alerts.")

st.subheader("Recent activity")
if view.recent_activity:
    st.dataframe(
        [
            {"when": a["occurred_at"], "who": a["actor"], "what": a["action"],
             "on": f"{a['entity_type']} {a['entity_id']}", "comment": a["comment"] or ""}
            for a in view.recent_activity
        ],
        hide_index=True,
        key="home_activity",
    )
else:
    st.info("Nothing has happened in this workspace yet.")
