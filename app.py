"""Pond's Streamlit app: sign-in, then one page per lifecycle stage."""

from __future__ import annotations

import streamlit as st

st.set_page_config(page_title="Pond", page_icon="🪷", layout="wide")

# One entry per page, in lifecycle order. Each page file stays thin over core/.
PAGES = [
    st.Page("pages/home.py", title="Home", icon=":material/home:", default=True),
    st.Page("pages/data.py", title="Data", icon=":material/table:"),
    st.Page("pages/features.py", title="Features", icon=":material/tune:"),
    st.Page("pages/train.py", title="Train", icon=":material/model_training:"),
    st.Page("pages/finetune.py", title="Fine-tune", icon=":material/auto_awesome:"),
    st.Page("pages/registry.py", title="Registry", icon=":material/inventory_2:"),
    st.Page("pages/evaluate.py", title="Evaluate", icon=":material/analytics:"),
    st.Page("pages/serve.py", title="Serve", icon=":material/api:"),
    st.Page("pages/monitor.py", title="Monitor", icon=":material/monitoring:"),
    st.Page("pages/label.py", title="Label", icon=":material/thumbs_up_down:"),
    st.Page("pages/jobs.py", title="Jobs", icon=":material/schedule:"),
]

user = st.session_state.get("user")
if user is None:
    st.navigation([st.Page("pages/sign_in.py", title="Sign in", icon=":material/login:")]).run()
else:
    with st.sidebar:
        st.caption(f"Signed in as **{user.name}** ({user.role.value})")
        if st.button("Sign out", key="sign_out"):
            del st.session_state["user"]
            st.rerun()
    st.navigation(PAGES).run()
