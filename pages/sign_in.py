"""Sign in with a local account."""

from __future__ import annotations

import streamlit as st

from core import auth
from core.errors import AuthenticationFailed
from pages._shared import workspace

st.title("Pond")
st.caption("A low-code MLOps studio: data, training, registry, serving and monitoring.")

with st.form("sign_in_form"):
    name = st.text_input("User name", key="sign_in_name")
    password = st.text_input("Password", type="password", key="sign_in_password")
    submitted = st.form_submit_button("Sign in")

if submitted:
    try:
        st.session_state["user"] = auth.authenticate(workspace(), name.strip(), password)
    except AuthenticationFailed as exc:
        st.error(str(exc))
    else:
        st.rerun()

st.caption(
    "The demo workspace has the accounts `admin`, `ana` (analyst) and `rita` (reviewer), "
    "all with the password `pond-demo`. Admins add accounts with `pond users add`."
)
