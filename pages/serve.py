"""Serve: which champion versions are live, their traffic from the inference log
(requests, errors, latency percentiles), and a "try it" form that sends a request."""

from __future__ import annotations

import streamlit as st

from core import serving
from core.errors import PondError
from pages._shared import metric_row, show_error, signed_in_user, workspace

user = signed_in_user()
ws = workspace()
st.session_state.setdefault("serve_result", None)

st.title("Serving")
st.caption(
    "`pond serve` answers `POST /v1/models/NAME/predict` for every model whose `champion` "
    "alias points at an approved version, and logs every request under "
    f"`{ws.inference_dir}`. Clients need a token from `pond tokens create NAME` (admin)."
)

window = st.selectbox("Traffic in the", list(serving.WINDOWS), index=3, key="serve_window")
view = serving.serve_overview(ws, window)
metric_row([
    ("Live versions", len(view.live)),
    ("Requests", f"{view.requests:,}"),
    ("Errors", f"{view.errors:,}"),
])

st.subheader("Live versions")
if view.live:
    st.dataframe(
        [{"model": m.name, "version": m.version, "task": m.task, "flavor": m.flavor,
          "champion since": m.set_at, "set by": m.set_by,
          "served": "yes" if m.servable else "no", "input": m.note} for m in view.live],
        hide_index=True, key="serve_live",
    )
else:
    st.info(
        "No model has a champion yet: a reviewer points the `champion` alias at an approved "
        "version on the Registry page (or `pond registry set-alias MODEL champion VERSION`)."
    )

st.subheader("Traffic")
if view.stats:
    st.dataframe(
        [{"model": s.model, "version": s.version, "requests": s.requests, "errors": s.errors,
          "records": s.records, "p50 ms": s.p50_ms, "p95 ms": s.p95_ms, "p99 ms": s.p99_ms,
          "last request": s.last_at} for s in view.stats],
        hide_index=True, key="serve_traffic",
    )
else:
    st.info("No requests logged in this window. Start a server with `pond serve` and send one.")

st.subheader("Try it")
servable = [m.name for m in view.live if m.servable]
if not servable:
    st.info("Nothing to try until a tabular model has a champion.")
    st.stop()
model = st.selectbox("Model", servable, key="serve_try_model")
url = st.text_input("Server URL", value=serving.DEFAULT_URL, key="serve_try_url")
token = st.text_input("API token", type="password", key="serve_try_token",
                      help="Sent as 'Authorization: Bearer <token>'; not needed in-process.")
try:
    example = serving.example_request(ws, model)
except PondError as exc:
    show_error(exc)
    st.stop()
body = st.text_area("Request body (JSON)", value=example, height=200,
                    key=f"serve_try_body_{model}")
if st.button("Send", type="primary", key="serve_try_send"):
    st.session_state["serve_result"] = serving.try_request(ws, model, body, url=url,
                                                           token=token)
result = st.session_state["serve_result"]
if result is not None:
    st.caption(f"HTTP {result.status}, {result.via}: {result.note}")
    if result.status == 200:
        st.success(f"{result.body['model']} version {result.body['version']} answered.")
    else:
        st.error(result.body.get("error", {}).get("message", "the request failed"))
    st.json(result.body)
