"""What every page shares: the workspace, the signed-in user, small renderers.

Pages stay thin: they read widgets, call one `core` function and render what
comes back. Nothing here computes a metric or speaks SQL.
"""

from __future__ import annotations

import os
from typing import Any

import streamlit as st

from core import auth, store
from core.errors import PondError
from core.store import Workspace


@st.cache_resource(show_spinner=False)
def _workspace(home: str) -> Workspace:
    return store.open_workspace(home)


def workspace() -> Workspace:
    """The workspace this app serves (`POND_HOME`, default ./.pond)."""
    return _workspace(str(store.resolve_home(os.environ.get("POND_HOME"))))


def signed_in_user() -> auth.User:
    """The signed-in user; a page without one shows a note and stops."""
    user = st.session_state.get("user")
    if user is None:
        st.info("Sign in to use Pond.")
        st.stop()
    return user


def show_error(exc: Exception) -> None:
    """A PondError's message is for people; anything else is a bug we still explain."""
    if isinstance(exc, PondError):
        st.error(str(exc))
    else:
        st.exception(exc)


def metric_row(items: list[tuple[str, Any]]) -> None:
    cols = st.columns(len(items))
    for col, (label, value) in zip(cols, items, strict=True):
        col.metric(label, value)


def followed_job(ws: Workspace, key: str) -> Any:
    """The status of the background job a page follows (its id in `st.session_state[key]`),
    or None; a job that can no longer be read is shown as an error and forgotten."""
    from core import training_jobs

    current = st.session_state[key]
    if not current:
        return None
    try:
        return training_jobs.read_progress(ws, current)
    except PondError as exc:
        show_error(exc)
        st.session_state[key] = None
        return None
