"""Registry: registered models and their versions, the review queue, aliases,
archiving, comparing two versions and the audit trail."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import streamlit as st

from core import registry
from core.errors import PondError
from core.registry import VersionStatus
from pages._feedback import version_win_rates
from pages._shared import metric_row, show_error, signed_in_user, workspace

user = signed_in_user()
ws = workspace()
st.session_state.setdefault("reg_flash", None)

st.title("Model registry")
if st.session_state["reg_flash"]:
    st.success(st.session_state["reg_flash"])
    st.session_state["reg_flash"] = None


def _done(message: str) -> None:
    """Remember what happened, then rerun so every section shows the new state."""
    st.session_state["reg_flash"] = message
    st.rerun()


def _decision_form(prefix: str, model: str, version: int) -> None:
    """Approve or reject one pending version (reviewers and admins)."""
    with st.form(f"{prefix}_decision_form", clear_on_submit=True):
        comment = st.text_area(
            "Comment (required to reject)", key=f"{prefix}_decision_comment",
            placeholder="What you checked, or why it is rejected",
        )
        approve_col, reject_col = st.columns(2)
        approved = approve_col.form_submit_button(
            "Approve", type="primary", key=f"{prefix}_approve"
        )
        rejected = reject_col.form_submit_button("Reject", key=f"{prefix}_reject")
    if approved or rejected:
        try:
            if approved:
                v = registry.approve(ws, model, version, actor=user, comment=comment)
            else:
                v = registry.reject(ws, model, version, actor=user, comment=comment)
        except PondError as exc:
            show_error(exc)
        else:
            _done(f"{v.ref} is now {v.status.value}.")


def _rows(items: list[Any]) -> list[dict[str, Any]]:
    return [
        item.to_dict() if hasattr(item, "to_dict")
        else dataclasses.asdict(item) if dataclasses.is_dataclass(item) else item
        for item in items
    ]


# --- reviews waiting ----------------------------------------------------------------------
pending = registry.pending_reviews(ws)
with st.expander(f"Reviews waiting ({len(pending)})", expanded=bool(pending) and user.can("review")):
    if not pending:
        st.info("No approval requests are waiting.")
    else:
        st.dataframe(
            [{"version": f"{r.model}:{r.version}", "requested by": r.requested_by,
              "requested at": r.requested_at, "comment": r.comment} for r in pending],
            hide_index=True, key="reg_pending_table",
        )
        if user.can("review"):
            pick = st.selectbox(
                "Review", pending, key="reg_queue_pick",
                format_func=lambda r: f"{r.model}:{r.version} — {r.requested_by}: {r.comment}",
            )
            _decision_form("reg_queue", pick.model, pick.version)

# --- the model list -------------------------------------------------------------------------
st.subheader("Models")
search_col, status_col, owner_col, tag_col, size_col = st.columns([3, 2, 2, 2, 1])
search = search_col.text_input("Search by name", key="reg_search")
status = status_col.selectbox(
    "Has a version that is", ["any", *[s.value for s in VersionStatus]], key="reg_status"
)
owner = owner_col.text_input("Owner", key="reg_owner")
tag = tag_col.text_input("Tag (key or key=value)", key="reg_tag")
page_size = size_col.selectbox("Per page", [25, 50, 100], key="reg_page_size")
# One pagination key per filter set: changing a filter starts again at page 1.
page_key = f"reg_page|{search}|{status}|{owner}|{tag}|{page_size}"
page_number = st.session_state.get(page_key, 1)

try:
    page = registry.list_models(
        ws, search=search, status=None if status == "any" else status, owner=owner, tag=tag,
        limit=page_size, offset=(page_number - 1) * page_size,
    )
except PondError as exc:
    show_error(exc)
    st.stop()

if page.total == 0:
    st.info(
        "No registered models match. AutoML registers them (`pond train --register NAME`), "
        "or `pond registry register NAME FILE --flavor lightgbm`."
    )
    st.stop()

st.dataframe(
    [{"model": m.name, "versions": m.version_count, "latest": m.latest_version,
      "latest status": m.latest_status.value if m.latest_status else "",
      "aliases": ", ".join(f"{a} → v{v}" for a, v in m.aliases.items()),
      "owner": m.created_by, "updated": m.updated_at} for m in page],
    hide_index=True, key="reg_models_table",
)
st.pagination(max(1, math.ceil(page.total / page_size)), key=page_key)
st.caption(f"{len(page)} of {page.total} models")

names = [m.name for m in page]
model_name = st.selectbox("Model", names, key="reg_model")
if model_name is None:
    st.info("Pick a model to see its versions.")
    st.stop()

# --- one model -------------------------------------------------------------------------------
detail = registry.get_model(ws, model_name)
st.dataframe(
    [{"version": v.version, "status": v.status.value, "aliases": ", ".join(v.aliases),
      "by": v.created_by, "registered": v.created_at,
      "dataset": f"{v.dataset['name']} v{v.dataset['version']}" if v.dataset else "",
      **{k: x for k, x in list(v.metrics.items())[:4]}} for v in detail.versions],
    hide_index=True, key="reg_versions_table",
)
by_number = {v.version: v for v in detail.versions}
number = st.selectbox(
    "Version", list(by_number), key="reg_version",
    format_func=lambda n: " · ".join(
        [f"v{n}", by_number[n].status.value, *by_number[n].aliases]
    ),
)
if number is None:
    st.info("This model has no versions yet.")
    st.stop()
v = by_number[number]

tab_version, tab_actions, tab_compare, tab_audit = st.tabs(
    ["Version", "Review & aliases", "Compare", "Audit trail"]
)

with tab_version:
    metric_row([
        ("Status", v.status.value),
        ("Aliases", ", ".join(v.aliases) or "none"),
        ("Registered by", v.created_by),
        ("Flavor", v.flavor),
    ])
    st.caption(
        f"{v.ref} · registered {v.created_at:%Y-%m-%d %H:%M} · status set by "
        f"{v.status_changed_by} at {v.status_changed_at:%Y-%m-%d %H:%M}"
        + (f" · task {v.task}" if v.task else "")
    )
    if v.description:
        st.markdown(v.description)
    for request in v.requests:
        st.markdown(f"**{request.requested_by}** requested approval: {request.comment}")
        if request.decision:
            st.markdown(
                f"**{request.decided_by}** {request.decision} it"
                + (f": {request.decision_comment}" if request.decision_comment else "")
            )

    st.subheader("Metrics")
    if v.metrics:
        st.dataframe([{"metric": k, "value": x} for k, x in v.metrics.items()],
                     hide_index=True, key="reg_metrics_table")
    else:
        st.info("No metrics were recorded for this version.")

    st.subheader("Lineage")
    lineage = v.lineage
    dataset = lineage.get("dataset") or {}
    feature_view = lineage.get("feature_view") or {}
    study = lineage.get("optuna_study")
    st.dataframe(
        [
            {"what": "dataset", "value": f"{dataset.get('name')} v{dataset.get('version')}"
             if dataset else "—"},
            {"what": "dataset content sha256", "value": dataset.get("content_sha256") or "—"},
            {"what": "feature view", "value": f"{feature_view.get('name')} "
             f"v{feature_view.get('version')}" if feature_view else "—"},
            {"what": "Optuna study", "value": (study.get("name") if isinstance(study, dict)
                                               else study) or "—"},
            {"what": "parent version", "value": str(lineage.get("parent_version") or "—")},
            {"what": "package version", "value": lineage.get("package_version") or "—"},
            {"what": "git commit", "value": lineage.get("git_commit") or "not available"},
        ],
        hide_index=True, key="reg_lineage_table",
    )
    with st.expander("Training config, search space and parameters"):
        st.json({"training_config": lineage.get("training_config"),
                 "search_space": lineage.get("search_space"),
                 "params": v.params, "tags": v.tags})
    st.dataframe(
        [{"file": f.name, "bytes": f.size_bytes, "sha256": f.sha256} for f in v.files],
        hide_index=True, key="reg_files_table",
    )

    # Evaluations belong to core.evaluation; this section reads them when it exists.
    st.subheader("Evaluations")
    evaluations = registry.version_evaluations(ws, v.model, v.version)
    if evaluations is None:
        st.caption("Evaluations will show here once the evaluation module is available.")
    elif not evaluations:
        st.info(f"No evaluations yet: `pond evaluate --model {v.ref} --dataset NAME`.")
    else:
        st.dataframe(_rows(evaluations), hide_index=True, key="reg_evaluations_table")
    st.subheader("Human preference")
    version_win_rates(ws, v.ref, key="reg_win_rates")

with tab_actions:
    status_now = v.status
    if status_now is VersionStatus.REGISTERED and user.can("request_approval"):
        with st.form("reg_request_form", clear_on_submit=True):
            comment = st.text_area("Why should it be approved?", key="reg_request_comment")
            sent = st.form_submit_button("Request approval", type="primary",
                                         key="reg_request_submit")
        if sent:
            try:
                updated = registry.request_approval(ws, v.model, v.version, actor=user,
                                                    comment=comment)
            except PondError as exc:
                show_error(exc)
            else:
                _done(f"Approval requested for {updated.ref}.")
    elif status_now is VersionStatus.PENDING_REVIEW:
        if user.can("review") and user.name not in (v.requested_by, v.created_by):
            _decision_form("reg_version", v.model, v.version)
        else:
            st.info(f"Waiting for a reviewer other than {v.requested_by} to decide.")
    else:
        st.caption(f"{v.ref} is {status_now.value}.")

    if user.can("set_alias"):
        st.subheader("Aliases")
        if status_now.can_hold_alias():
            with st.form("reg_alias_form"):
                alias = st.text_input("Alias", value="champion", key="reg_alias_name")
                moved = st.form_submit_button(f"Point it at v{v.version}", key="reg_alias_submit")
            if moved:
                try:
                    registry.set_alias(ws, v.model, alias.strip(), v.version, actor=user)
                except PondError as exc:
                    show_error(exc)
                else:
                    _done(f"{v.model}@{alias.strip()} now points at v{v.version}.")
        else:
            st.info("Only an approved version can hold an alias.")
        held = detail.model.aliases
        if held:
            remove = st.selectbox("Remove an alias", list(held), key="reg_alias_remove",
                                  format_func=lambda a: f"{a} → v{held[a]}")
            if st.button("Remove alias", key="reg_alias_remove_submit"):
                try:
                    registry.remove_alias(ws, v.model, remove, actor=user)
                except PondError as exc:
                    show_error(exc)
                else:
                    _done(f"Removed {v.model}@{remove}.")

    if user.can("archive") and status_now.can_become(VersionStatus.ARCHIVED):
        st.subheader("Archive")
        sure = st.checkbox(f"Archive v{v.version} (it loses its aliases; this is final)",
                           key="reg_archive_confirm")
        if st.button("Archive", key="reg_archive_submit", disabled=not sure):
            try:
                registry.archive(ws, v.model, v.version, actor=user)
            except PondError as exc:
                show_error(exc)
            else:
                _done(f"Archived {v.ref}.")

with tab_compare:
    numbers = list(by_number)
    if len(numbers) < 2:
        st.info("Register a second version to compare.")
    else:
        left_col, right_col = st.columns(2)
        left = left_col.selectbox("Left", numbers, index=1, key="reg_compare_left",
                                  format_func=lambda n: f"v{n}")
        right = right_col.selectbox("Right", numbers, index=0, key="reg_compare_right",
                                    format_func=lambda n: f"v{n}")
        comparison = registry.compare(ws, model_name, left, right)
        for title, diff_rows in (("Metrics", comparison.metrics), ("Params", comparison.params),
                                 ("Lineage", comparison.lineage)):
            st.markdown(f"**{title}**")
            st.dataframe(
                [{"key": r.key, f"v{left}": str(r.left), f"v{right}": str(r.right),
                  "difference": r.delta if r.delta is not None else ("changed" if r.changed
                                                                     else "")}
                 for r in diff_rows],
                hide_index=True, key=f"reg_compare_{title.lower()}",
            )

with tab_audit:
    everything = st.toggle("All models", key="reg_audit_all")
    trail = registry.audit_trail(ws, None if everything else model_name)
    st.dataframe(
        [{"when": e.occurred_at, "who": e.actor, "action": e.action, "on": e.entity_id,
          "from": e.from_state or "", "to": e.to_state or "", "comment": e.comment or ""}
         for e in trail],
        hide_index=True, key="reg_audit_table",
    )
