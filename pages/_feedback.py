"""Human-preference win rates, shown on the Evaluate and Registry pages for the
model versions labelers compared on the Label page. Numbers come from
`core.feedback`; this module only renders them."""

from __future__ import annotations

import streamlit as st

from core import feedback
from core.store import Workspace


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.0%}"


def win_rate_rows(found: list[feedback.WinRate]) -> list[dict]:
    return [
        {
            "A": w.model_a,
            "B": w.model_b,
            "A wins": w.wins,
            "B wins": w.losses,
            "ties": w.ties,
            "both bad": w.both_bad,
            "win rate of A": _pct(w.win_rate),
            f"{w.confidence:.0%} interval": "–" if w.low is None else f"{w.low:.0%} – {w.high:.0%}",
            "projects": ", ".join(w.projects),
        }
        for w in found
    ]


def version_win_rates(ws: Workspace, model_ref: str, key: str) -> None:
    """The version's win rate against every version labelers compared it with."""
    found = feedback.win_rates_for(ws, model_ref)
    if not found:
        st.caption(
            f"No pairwise human labels compare {model_ref} with another version yet "
            "(Label page, or `pond feedback`)."
        )
        return
    st.dataframe(win_rate_rows(found), hide_index=True, key=key)
    st.caption(
        "Share of decisive pairwise answers (ties and 'both bad' are counted, not "
        "scored) where labelers preferred A's response; Wilson interval."
    )


def compare_win_rate(ws: Workspace, key: str) -> None:
    """Pick two compared versions and show A's win rate over B with its interval."""
    models = feedback.compared_models(ws)
    if len(models) < 2:
        st.info(
            "No model versions have been compared by labelers yet: create a pairwise "
            "project on the Label page with candidates from two versions."
        )
        return
    left, right = st.columns(2)
    a = left.selectbox("Version A", models, key=f"{key}_a")
    b = right.selectbox("Version B", [m for m in models if m != a], key=f"{key}_b")
    found = feedback.win_rate(ws, a, b)
    cols = st.columns(4)
    cols[0].metric(f"Win rate of {a}", _pct(found.win_rate))
    cols[1].metric(
        f"{found.confidence:.0%} interval",
        "–" if found.low is None else f"{found.low:.0%} – {found.high:.0%}",
    )
    cols[2].metric("Decisive answers", found.decisive)
    cols[3].metric("Ties / both bad", f"{found.ties} / {found.both_bad}")
    st.caption(found.describe())
