"""Jobs: schedules of headless `pond` commands (nightly retrains), every job run with its
outcome, exit code and log, and each model's auto-promotion policy. Admins add and remove
schedules and set policies here; everyone signed in can read. Every value comes from
`core.schedules` or `core.retraining`; this page only lays it out."""

from __future__ import annotations

import json
import shlex
from datetime import datetime
from typing import Any

import streamlit as st

from core import registry, retraining, schedules
from pages._shared import metric_row, show_error, signed_in_user, workspace

ALL = "(all models)"

user = signed_in_user()
ws = workspace()
is_admin = user.can("manage_schedules")
for _key in ("jobs_added", "jobs_policy_saved"):
    st.session_state.setdefault(_key, None)

st.title("Jobs")
st.caption(
    "Scheduled jobs run headless `pond` commands, such as a nightly `pond retrain --model NAME "
    "--only-if-drift`. `pond scheduler` runs them on machines without cron (or call the "
    "command from crontab or a systemd timer). Every run, scheduled or started by hand, is "
    "recorded here with its outcome, exit code and log. Times are UTC."
)


def _when(value: datetime | None) -> str:
    return f"{value:%Y-%m-%d %H:%M:%S}" if value else ""


def _run_row(run: schedules.JobRun) -> dict[str, Any]:
    return {
        "id": run.id,
        "started": _when(run.started_at),
        "schedule": run.schedule or "",
        "model": run.model or "",
        "outcome": run.outcome or run.status,
        "exit code": "" if run.exit_code is None else str(run.exit_code),
        "seconds": "" if run.seconds is None else f"{run.seconds:.1f}",
        "version": "" if run.model_version is None else str(run.model_version),
        "summary": run.summary or "",
        "by": run.started_by,
    }


# --- schedules ------------------------------------------------------------------------------------

st.subheader("Schedules")
found = schedules.list_schedules(ws)
if found:
    st.dataframe(
        [
            {
                "name": s.name,
                "cron (UTC)": s.cron,
                "command": s.command_line,
                "run as": s.run_as,
                "next run": _when(s.next_run_at),
                "last run": _when(s.last_run_at),
                "last outcome": (
                    f"#{s.last_run.id} {s.last_run.outcome or 'running'}" if s.last_run else ""
                ),
            }
            for s in found
        ],
        hide_index=True,
        key="jobs_schedules",
    )
else:
    st.info(
        "No schedules yet."
        + (
            " Add one below."
            if is_admin
            else " An admin can add them here or with `pond schedule add`."
        )
    )

if is_admin:
    with st.expander("Add a schedule", expanded=not found):
        name = st.text_input("Name", key="jobs_add_name", placeholder="nightly-churn")
        cron = st.text_input(
            "Cron expression (UTC)",
            value="0 3 * * *",
            key="jobs_add_cron",
            help="minute hour day-of-month month day-of-week",
        )
        command = st.text_input(
            "pond command",
            key="jobs_add_command",
            placeholder="retrain --model churn --only-if-drift",
            help="the words after `pond`",
        )
        if st.button("Add schedule", key="jobs_add", type="primary"):
            try:
                words = shlex.split(command)
            except ValueError as exc:
                st.error(f"the command {command!r} cannot be read ({exc}); check its quotes")
                st.stop()
            try:
                added = schedules.add_schedule(ws, name.strip(), cron, words, actor=user)
            except Exception as exc:  # noqa: BLE001 - shown to the user
                show_error(exc)
            else:
                st.session_state["jobs_added"] = (
                    f"Schedule {added.name}: {added.command_line}, "
                    f"next run {_when(added.next_run_at)}."
                )
                st.rerun()
    if st.session_state.get("jobs_added"):
        st.success(st.session_state.pop("jobs_added"))
    if found:
        with st.expander("Remove a schedule"):
            doomed = st.selectbox("Schedule", [s.name for s in found], key="jobs_remove_name")
            if st.button("Remove", key="jobs_remove"):
                try:
                    schedules.remove_schedule(ws, doomed, actor=user)
                except Exception as exc:  # noqa: BLE001 - shown to the user
                    show_error(exc)
                else:
                    st.rerun()

# --- runs -----------------------------------------------------------------------------------------

st.subheader("Runs")
models = [m.name for m in registry.list_models(ws, limit=500)]
chosen_model = st.selectbox("Model", [ALL, *models], key="jobs_runs_model")
runs = schedules.list_runs(ws, model=None if chosen_model == ALL else chosen_model, limit=200)
if not runs:
    st.info("No runs yet: `pond retrain --model NAME` or a scheduled job records one.")
else:
    ok = sum(1 for r in runs if r.outcome and schedules.Outcome(r.outcome).ok)
    failed = sum(1 for r in runs if r.outcome in ("failed", "crashed"))
    metric_row(
        [
            ("Runs shown", len(runs)),
            ("Succeeded", ok),
            ("Failed or crashed", failed),
            ("Running", sum(1 for r in runs if r.running)),
        ]
    )
    st.dataframe([_run_row(r) for r in runs], hide_index=True, key="jobs_runs")
    run_id = st.selectbox(
        "Run",
        [r.id for r in runs],
        key="jobs_run_choice",
        format_func=lambda i: next(
            f"#{r.id} {r.outcome or r.status}: {(r.summary or '')[:80]}" for r in runs if r.id == i
        ),
    )
    run = schedules.get_run(ws, runs[0].id if run_id is None else run_id)
    metric_row(
        [
            ("Outcome", run.outcome or run.status),
            ("Exit code", "—" if run.exit_code is None else str(run.exit_code)),
            ("New version", "—" if run.model_version is None else str(run.model_version)),
            ("Seconds", "—" if run.seconds is None else f"{run.seconds:.1f}"),
        ]
    )
    st.markdown(
        f"`{run.command_line}` by **{run.started_by}** on {run.host} "
        f"(pid {run.pid}), started {_when(run.started_at)}"
    )
    if run.outcome in ("failed", "crashed"):
        st.error(run.summary or run.outcome)
    elif run.summary:
        st.success(run.summary)
    comparison = (run.details or {}).get("comparison")
    if comparison:
        st.markdown(f"**Holdout comparison:** {comparison['verdict']}")
        st.dataframe(
            [
                {"model": comparison["baseline"], **comparison["baseline_metrics"]},
                {"model": "new version", **comparison["challenger_metrics"]},
            ],
            hide_index=True,
            key="jobs_comparison",
        )
    promotion = (run.details or {}).get("promotion")
    if promotion:
        st.caption(f"Auto-promotion: {promotion['reason']}")
    st.code(run.log or "(no log)", language=None)
    if run.details:
        with st.expander("Details (JSON)"):
            st.code(json.dumps(run.details, indent=2, default=str), language="json")

# --- auto-promotion -------------------------------------------------------------------------------

st.subheader("Auto-promotion")
st.caption(
    "Off by default: every retrained version waits for a reviewer. With a model's policy on, a "
    "retrained version that beats the champion by at least the margin on the same holdout is "
    "approved by the 'policy' actor (so named in the audit trail) and becomes champion."
)
policies = retraining.list_promotion_policies(ws)
if policies:
    st.dataframe(
        [
            {
                "model": p.model,
                "policy": p.describe(),
                "set by": p.updated_by,
                "set at": _when(p.updated_at),
            }
            for p in policies
        ],
        hide_index=True,
        key="jobs_policies",
    )
if is_admin and models:
    policy_model = st.selectbox("Model", models, key="jobs_policy_model")
    current = retraining.get_promotion_policy(ws, policy_model)
    enabled = st.toggle(
        "Auto-promote", value=bool(current and current.enabled), key="jobs_policy_enabled"
    )
    margin = st.number_input(
        "Margin (in the metric's units)",
        min_value=0.0,
        value=float(current.min_improvement) if current else 0.0,
        step=0.001,
        format="%.4f",
        key="jobs_policy_margin",
    )
    metric = st.text_input(
        "Metric (empty: the model's training metric)",
        value=(current.metric or "") if current else "",
        key="jobs_policy_metric",
    )
    if st.button("Save policy", key="jobs_policy_save"):
        try:
            saved = retraining.set_promotion_policy(
                ws,
                policy_model,
                actor=user,
                enabled=enabled,
                min_improvement=margin,
                metric=metric.strip() or None,
            )
        except Exception as exc:  # noqa: BLE001 - shown to the user
            show_error(exc)
        else:
            st.session_state["jobs_policy_saved"] = f"{saved.model}: {saved.describe()}"
            st.rerun()
    if st.session_state.get("jobs_policy_saved"):
        st.success(st.session_state.pop("jobs_policy_saved"))
elif not policies:
    st.info("No model has an auto-promotion policy.")
