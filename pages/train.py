"""Train: AutoML on a dataset version. Watch it live, stop early, register the result.

The training runs in a worker process (`core.training_jobs`), so it survives
reruns of this page; the page only starts it, polls its progress file once a
second and renders what comes back.
"""

from __future__ import annotations

import re
from typing import Any

import streamlit as st

from core import automl, automl_charts, datasets, features, metrics, training_jobs
from core.errors import PondError
from pages._shared import followed_job, metric_row, show_error, signed_in_user, workspace

user = signed_in_user()
ws = workspace()
st.session_state.setdefault("train_job", None)
st.session_state.setdefault("train_registered", None)

st.title("Train")
st.caption(
    "AutoML: Optuna tunes LightGBM on cross-validation folds within your time budget, then the "
    "best configurations are blended, refit into one model and scored once on a holdout the "
    "search never saw."
)


@st.cache_data(show_spinner=False, max_entries=64)
def _task_guess(_ws: Any, _dv: Any, content_sha256: str, target: str) -> automl.TaskGuess:
    return automl.detect_task_in_dataset(_ws, _dv, target)


def _fmt(value: Any) -> str:
    return "–" if value is None else f"{value:.4f}"


# --- the request -------------------------------------------------------------------
versions = datasets.list_versions(ws)
if not versions:
    st.info("No datasets yet. Upload one on the Data page, or run `pond ingest PATH --name NAME`.")
    st.stop()

views = features.list_versions(ws)  # a feature view trains like a dataset ("fv:NAME")
names = sorted({v.name for v in versions}) + sorted({f"fv:{v.name}" for v in views})
left, right = st.columns([3, 1])
dataset_name = left.selectbox("Dataset or feature view", names, key="train_dataset")
numbers = [v.version for v in (views if dataset_name.startswith("fv:") else versions)
           if v.name == dataset_name.removeprefix("fv:")][::-1]
version = right.selectbox("Version", numbers, key="train_version")
view = features.training_input(ws, f"{dataset_name}:{version}", actor=user)
dv = view.data if view else next(
    v for v in versions if v.name == dataset_name and v.version == version)

columns = dv.column_names
target = st.selectbox(
    "Target column (what to predict)", columns, index=None, key="train_target",
    placeholder="Choose the column to predict",
)
if target is None:
    st.info("Choose the target column to predict.")
    st.stop()

try:
    guess = _task_guess(ws, dv, dv.content_sha256, target)
except PondError as exc:
    show_error(exc)
    st.stop()

c1, c2 = st.columns(2)
task = c1.selectbox(
    "Task",
    list(automl.TASK_CHOICES),
    format_func=lambda t: f"auto (detected: {guess.task})" if t == "auto" else t,
    key="train_task",
    help=f"Detected from the target: {guess.reason}.",
)
effective_task = guess.task if task == "auto" else task
metric_specs = metrics.metrics_for(effective_task)
labels = {s.name: s.label for s in metric_specs}
metric = c2.selectbox(
    "Metric to optimise", [s.name for s in metric_specs],
    format_func=lambda m: f"{labels[m]} ({m})",
    key=f"train_metric_{effective_task}",
)
exclude = st.multiselect(
    "Columns to leave out (IDs, values not known at prediction time)",
    [c for c in columns if c != target],
    key=f"train_exclude_{target}",
)
c1, c2, c3 = st.columns(3)
budget = c1.number_input("Time budget (seconds)", min_value=5, max_value=3600, value=60, step=5,
                         key="train_budget")
trials = c2.number_input("Max trials (0 = no cap)", min_value=0, max_value=10_000, value=0,
                         key="train_trials")
seed = c3.number_input("Seed", min_value=0, max_value=2**31 - 1, value=0, key="train_seed")
ensemble = st.toggle(
    "Blend the best trials into the final model", value=True, key="train_ensemble",
    help="Greedy ensemble selection on the trials' out-of-fold predictions: kept only where "
    "the blend scores better than the best trial alone. Off: the best trial is refit alone "
    "(fewer trees, faster to serve).",
)
default_model = re.sub(r"[^A-Za-z0-9_]+", "_", f"{dv.name}_{target}").strip("_").lower()
model_name = st.text_input("Model name to register as", value=default_model,
                           key="train_model_name")

earlier = {job.job_id: job for job in training_jobs.list_jobs(ws, actor=user.name)}
if earlier:
    with st.expander("Earlier trainings"):
        picked = st.selectbox(
            "Open an earlier training", list(earlier), index=None, key="train_open_job",
            format_func=lambda j: f"{earlier[j].request.get('dataset')} → "
            f"{earlier[j].request.get('target')} ({earlier[j].state}, {earlier[j].created_at[:16]})",
        )
        if st.button("Open", key="train_open", disabled=picked is None):
            st.session_state["train_job"] = picked
            st.session_state["train_registered"] = None
            st.rerun()

status = followed_job(ws, "train_job")
running = status is not None and not status.finished

if st.button("Start training", key="train_start", type="primary", disabled=running):
    try:
        job_id = training_jobs.start_training(
            ws, actor=user, dataset=view.ref if view else dv.ref, target=target, task=task,
            metric=metric,
            exclude=exclude, time_budget=float(budget), n_trials=int(trials) or None,
            seed=int(seed), ensemble=ensemble,
        )
    except PondError as exc:
        show_error(exc)
    else:
        st.session_state["train_job"] = job_id
        st.session_state["train_registered"] = None
        st.rerun()

if status is None:
    st.stop()


# --- live progress -----------------------------------------------------------------
@st.fragment(run_every=1.0)
def live_progress(job_id: str) -> None:
    job = training_jobs.read_progress(ws, job_id, with_result=False)
    if job.finished:
        st.rerun(scope="app")
    progress = training_jobs.progress_fields(job)
    budget_s = progress.get("budget_s")
    elapsed = f"{progress['elapsed_s']:.0f}s" + (f" of {budget_s:.0f}s" if budget_s else "")
    st.progress(float(progress.get("fraction", 0.0)),
                text=f"{progress['phase']}: {elapsed}")
    metric_row([
        ("Trials done", progress["trials_done"]),
        ("Pruned", progress["trials_pruned"]),
        (f"Best {progress.get('metric', '')}", _fmt(progress.get("best_value"))),
        ("Elapsed", elapsed),
    ])
    if progress["history"]:
        st.plotly_chart(
            automl_charts.live_history_figure(
                progress["history"], progress.get("metric", ""),
                bool(progress.get("higher_is_better")),
            ),
            key="train_live_history",
        )
    if job.stop_requested:
        st.caption("Stopping after the current trial; the best model so far is kept.")
    elif st.button("Stop and keep the best so far", key="train_stop"):
        training_jobs.request_stop(ws, job_id)
        st.rerun(scope="fragment")


st.subheader(f"Training {status.request.get('dataset', '')} → {status.request.get('target', '')}")
if not status.finished:
    live_progress(status.job_id)
    st.stop()

if status.state == training_jobs.FAILED:
    st.error(f"The training failed: {status.error}")
    st.stop()

# --- result ------------------------------------------------------------------------
result = status.result or {}
splits = result["splits"]
metric_row([
    (f"Holdout {result['metric_label']}", _fmt(result["holdout_score"])),
    (f"CV {result['metric_label']} ({splits['folds']} folds)",
     f"{_fmt(result['cv_score'])} ± {result['cv_std']:.3f}"),
    ("Baseline (holdout)", _fmt(result["baseline_score"])),
    ("Trials done / pruned", f"{result['trials_completed']} / {result['trials_pruned']}"),
])
reasons = {"time_budget": "the time budget", "trials": "the trial cap",
           "stopped": "your stop request"}
st.caption(
    f"Task {result['task']} ({result['task_reason']}). Stopped by "
    f"{reasons.get(result['stop_reason'], result['stop_reason'])} after "
    f"{result['elapsed_s']:.1f}s (search {result['search_s']:.1f}s, refit {result['refit_s']:.1f}s"
    f"). Rows: {splits['train_rows']} train and {splits['valid_rows']} validation per fold, "
    f"{splits['holdout_rows']} holdout{', stratified' if splits['stratified'] else ''}."
)
for warning in result.get("warnings", []):
    st.warning(warning)

figures = automl_charts.result_figures(result)
left, right = st.columns(2)
left.plotly_chart(figures["optimization_history"], key="train_history_chart")
if "param_importances" in figures:
    right.plotly_chart(figures["param_importances"], key="train_param_importance_chart")
left, right = st.columns(2)
if "feature_importances" in figures:
    left.plotly_chart(figures["feature_importances"], key="train_feature_importance_chart")
if "confusion_matrix" in figures:
    right.plotly_chart(figures["confusion_matrix"], key="train_confusion_chart")
if "residuals" in figures:
    right.plotly_chart(figures["residuals"], key="train_residuals_chart")

members = result.get("ensemble") or []
if len(members) > 1:
    st.caption(
        "Final model: a blend of "
        + ", ".join(f"trial {m['trial']} (weight {m['weight']:.2f})" for m in members)
        + f", merged into one LightGBM model. Out-of-fold {result['metric']}: "
        f"{result['oof_score']:.4f} for the blend, {result['oof_best_score']:.4f} for the "
        "best trial alone."
    )
params = dict(result["best_params"], refit_rounds=result["refit_rounds"])
st.dataframe(
    [{"parameter": k, "value": str(v)} for k, v in params.items()],
    key="train_best_params", hide_index=True,
)

registered = status.registered or st.session_state["train_registered"]
if registered:
    st.success(
        f"Registered {registered['model']} version {registered['version']} "
        f"({registered['status']}); a reviewer can approve it on the Registry page."
    )
elif st.button(f"Register as {model_name}", key="train_register", type="primary"):
    try:
        version = training_jobs.register_job(ws, status.job_id, model_name, actor=user)
    except PondError as exc:
        show_error(exc)
    else:
        st.session_state["train_registered"] = training_jobs.registered_summary(version)
        st.rerun()
