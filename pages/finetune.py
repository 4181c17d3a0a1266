"""Fine-tune: adapt a local foundation model to the team's prompt/response data.

The training runs in a worker process (`core.training_jobs`), so it survives
reruns of this page; the page starts it, polls its progress file once a second
and renders what comes back. torch is never imported here.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import streamlit as st

from core import datasets, feedback, finetune, training_jobs
from core.errors import PondError
from pages._shared import followed_job, metric_row, show_error, signed_in_user, workspace

user = signed_in_user()
ws = workspace()
st.session_state.setdefault("finetune_job", None)
st.session_state.setdefault("finetune_registered", None)

st.title("Fine-tune")
st.caption(
    "Adapt a foundation model from this machine to your prompt/response pairs: LoRA adapters "
    "by default, full fine-tuning for small models. A held-out split scores the result with "
    "BLEU and ROUGE before you register it for review."
)

LEARNING_RATES = [None, 1e-5, 3e-5, 1e-4, 2e-4, 5e-4, 1e-3, 3e-3]
CUSTOM = "A folder on this machine…"


def _fmt(value: Any, digits: int = 4) -> str:
    return "–" if value is None else f"{value:.{digits}g}"


def _mib(value: Any) -> str:
    return "–" if value is None else f"{value / 2**20:,.0f} MiB"


# --- runs already finished ---------------------------------------------------------
finished = finetune.finished_runs(ws)
if finished:
    with st.expander(f"Finished runs in this workspace ({len(finished)})",
                     expanded=not st.session_state["finetune_job"]):
        st.dataframe([{
            "dataset": (f"{r['dataset']['name']}:{r['dataset']['version']}"
                        if r.get("dataset") else "–"),
            "base model": Path(str(r["base_model"].get("reference", "?"))).name,
            "method": r["method"], "val loss": r.get("val_loss"),
            "test loss": r.get("test_loss"),
            "BLEU": (r.get("text_metrics") or {}).get("bleu"),
            "ROUGE-L": (r.get("text_metrics") or {}).get("rougeL"),
            "train seconds": r.get("train_seconds"),
        } for r in finished], hide_index=True)
        if finished[0].get("samples"):
            st.caption("The newest run on held-out rows it never trained on:")
            st.dataframe(finished[0]["samples"], hide_index=True)

# --- the request -------------------------------------------------------------------
labeled = [p for p in feedback.list_projects(ws, actor=user) if p.rating or p.correction]
if labeled and user.can("ingest"):
    with st.expander("Start from a feedback export (corrected or top-rated responses)"):
        left, right = st.columns(2)
        source = left.selectbox("Labeling project", [p.name for p in labeled],
                                key="finetune_feedback_project")
        sft_name = right.text_input("Dataset to make", value=re.sub(
            r"[^A-Za-z0-9_]+", "_", f"{source}_sft").lower(), key="finetune_feedback_dataset")
        if st.button("Make the dataset and use it", key="finetune_feedback_run"):
            try:
                made = feedback.export_dataset(ws, source, sft_name, actor=user)
            except PondError as exc:
                show_error(exc)
            else:
                st.session_state.update(finetune_dataset=made.name,
                                        finetune_prompt_col="prompt",
                                        finetune_response_col="response")
                st.session_state.pop("finetune_version", None)
                st.rerun()
versions = datasets.list_versions(ws)
if not versions:
    st.info("No datasets yet. Upload prompt/response pairs on the Data page, or run "
            "`pond ingest PATH --name NAME`.")
    st.stop()

names = sorted({v.name for v in versions})
left, right = st.columns([3, 1])
dataset_name = left.selectbox("Dataset", names, key="finetune_dataset")
numbers = [v.version for v in versions if v.name == dataset_name][::-1]
version = right.selectbox("Version", numbers, key="finetune_version")
dv = next(v for v in versions if v.name == dataset_name and v.version == version)

text_columns = [c.name for c in dv.columns if c.type.upper() in ("VARCHAR", "TEXT", "STRING")]
if len(text_columns) < 2:
    st.info(f"Dataset {dv.ref} needs two text columns (prompts and responses); it has "
            f"{len(text_columns)}.")
    st.stop()
c1, c2 = st.columns(2)
prompt_col = c1.selectbox("Prompt column (the model's input)", text_columns, index=None,
                          key="finetune_prompt_col", placeholder="Choose the prompt column")
response_col = c2.selectbox("Response column (what to learn)",
                            [c for c in text_columns if c != prompt_col], index=None,
                            key="finetune_response_col",
                            placeholder="Choose the response column")

choices = finetune.list_base_models(ws)
labels = [f"{c.label} ({c.source})" for c in choices] + [CUSTOM]
picked = st.selectbox("Base model", labels, key="finetune_base_model",
                      help="Models in POND_HOME/models/ and in the local Hugging Face cache. "
                      "Nothing is downloaded.")
if picked == CUSTOM:
    base_path = st.text_input("Model folder (config.json, *.safetensors, tokenizer files)",
                              key="finetune_base_path").strip()
else:
    base_path = choices[labels.index(picked)].path

if prompt_col is None or response_col is None or not base_path:
    st.info("Choose the prompt and response columns and a base model.")
    st.stop()

c1, c2, c3 = st.columns(3)
method = c1.radio("Method", finetune.METHODS, key="finetune_method", horizontal=True,
                  format_func=lambda m: {"lora": "LoRA (adapters)", "full": "Full"}[m])
prompt_format = c2.selectbox("Prompt format", finetune.PROMPT_FORMATS, key="finetune_format",
                             format_func=lambda f: {"plain": "plain: prompt, newline, response",
                                                    "chat": "the tokenizer's chat template"}[f])
learning_rate = c3.selectbox("Learning rate", LEARNING_RATES, key="finetune_lr",
                             format_func=lambda v: "default" if v is None else f"{v:g}")
c1, c2, c3, c4 = st.columns(4)
epochs = c1.number_input("Epochs (at most)", min_value=1, max_value=100, value=3,
                         key="finetune_epochs")
batch = c2.number_input("Batch size (0 = auto)", min_value=0, max_value=1024, value=0,
                        key="finetune_batch")
max_length = c3.number_input("Max tokens (0 = auto)", min_value=0, max_value=32768, value=0,
                             key="finetune_max_length")
trials = c4.number_input("Optuna trials (0 = none)", min_value=0, max_value=200, value=0,
                         key="finetune_trials")
c1, c2 = st.columns(2)
budget = c1.number_input("Time budget, seconds (0 = none)", min_value=0, max_value=7 * 86400,
                         value=0, step=60, key="finetune_budget")
compare_int8 = c2.checkbox("Measure an int8 CPU variant after training", value=True,
                           key="finetune_int8")
with st.expander("LoRA settings"):
    c1, c2, c3 = st.columns(3)
    lora_r = c1.number_input("Rank r", min_value=1, max_value=256, value=8, key="finetune_lora_r")
    lora_alpha = c2.number_input("Alpha", min_value=1, max_value=512, value=16,
                                 key="finetune_lora_alpha")
    lora_dropout = c3.number_input("Dropout", min_value=0.0, max_value=0.9, value=0.05,
                                   step=0.05, key="finetune_lora_dropout")

config = finetune.FinetuneConfig(
    method=method, epochs=int(epochs), learning_rate=learning_rate,
    batch_size=int(batch) or None, max_length=int(max_length) or None,
    lora_r=int(lora_r), lora_alpha=int(lora_alpha), lora_dropout=float(lora_dropout),
    n_trials=int(trials) or None, time_budget=float(budget) or None,
    prompt_format=prompt_format, compare_int8=compare_int8,
)
try:
    planned = finetune.plan(ws, dv.ref, base_path, config)
except PondError as exc:
    show_error(exc)
    st.stop()

base = planned.base_model
st.caption(
    f"**Hardware:** {planned.hardware.describe()}. **Model:** {base.architecture}, "
    f"{base.n_params / 1e6:,.1f}M parameters, "
    f"{'context ' + str(base.context_length) + ' tokens' if base.context_length else 'no fixed context'}"
    f". **Memory needed:** {planned.estimate.describe()}."
)
for note in planned.notes:
    st.warning(note)

default_model = re.sub(r"[^A-Za-z0-9_]+", "_", f"{dv.name}_{response_col}").strip("_").lower()
model_name = st.text_input("Model name to register as", value=default_model,
                           key="finetune_model_name")

status = followed_job(ws, "finetune_job")
running = status is not None and not status.finished

if st.button("Start fine-tuning", key="finetune_start", type="primary", disabled=running):
    try:
        job_id = finetune.start_finetune(
            ws, actor=user, dataset=dv.ref, base_model=base_path, prompt_col=prompt_col,
            response_col=response_col, config=config,
        )
    except PondError as exc:
        show_error(exc)
    else:
        st.session_state["finetune_job"] = job_id
        st.session_state["finetune_registered"] = None
        st.rerun()

if status is None:
    st.stop()


def _trials_table(trials: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{
        "trial": t["number"], "state": t["state"], "val loss": t["best_val_loss"],
        "learning rate": t["params"].get("learning_rate"), "epochs": t["params"].get("epochs"),
        "batch": t["params"].get("batch_size"), "LoRA r": t["params"].get("lora_r"),
        "GPU-s": t["gpu_seconds"], "seconds": t["seconds"], "tokens/s": t["tokens_per_s"],
        "peak memory": _mib(t["peak_memory_bytes"]),
    } for t in trials]


# --- live progress -----------------------------------------------------------------
@st.fragment(run_every=1.0)
def live_progress(job_id: str) -> None:
    job = training_jobs.read_progress(ws, job_id, with_result=False)
    if job.finished:
        st.rerun(scope="app")
    progress = job.progress or {}
    budget_s = progress.get("budget_s")
    elapsed = f"{progress.get('elapsed_s', 0.0):.0f}s" + (
        f" of {budget_s:.0f}s" if budget_s else "")
    st.progress(float(progress.get("fraction", 0.0)),
                text=f"{progress.get('phase', 'starting')}: {progress.get('message', '')}")
    metric_row([
        ("Train loss", _fmt(progress.get("train_loss"))),
        ("Validation loss", _fmt(progress.get("val_loss"))),
        ("Best validation loss", _fmt(progress.get("best_val_loss"))),
        ("Tokens/s", _fmt(progress.get("tokens_per_s"), 5)),
        ("Elapsed", elapsed),
    ])
    if progress.get("hardware"):
        st.caption(f"Training on {progress['hardware']['description']}.")
    rows = finetune.history_rows(progress.get("history", []))
    if rows:
        st.line_chart(rows, x="elapsed_s", y="loss", color="series",
                      x_label="seconds", y_label="loss")
    if progress.get("trials"):
        st.dataframe(_trials_table(progress["trials"]), hide_index=True,
                     key="finetune_live_trials")
    if job.stop_requested:
        st.caption("Stopping: the best checkpoint so far is kept, then evaluated.")
    elif st.button("Stop and keep the best checkpoint", key="finetune_stop"):
        training_jobs.request_stop(ws, job_id)
        st.rerun(scope="fragment")


request = status.request
st.subheader(f"Fine-tuning {request.get('base_model', '')} on {request.get('dataset', '')}")
if not status.finished:
    live_progress(status.job_id)
    st.stop()

if status.state == training_jobs.FAILED:
    st.error(f"The fine-tuning failed: {status.error}")
    st.stop()

# --- result ------------------------------------------------------------------------
result = status.result or {}
text = result.get("text_metrics", {})
metric_row([
    ("Validation loss", f"{_fmt(result.get('initial_val_loss'))} → {_fmt(result['val_loss'])}"),
    ("Test loss", _fmt(result["test_loss"])),
    ("Perplexity", _fmt(result.get("perplexity"))),
    ("sacreBLEU", _fmt(text.get("sacrebleu"))),
    ("ROUGE-L", _fmt(text.get("rougeL"))),
])
best = next(t for t in result["trials"] if t["number"] == result["best_trial"])
st.caption(
    f"{result['method'].upper()} on {result['hardware'].get('description', '')} "
    f"({result['precision']}). Rows: {result['splits']['train']} train, "
    f"{result['splits']['validation']} validation, {result['splits']['test']} test. Best trial "
    f"{result['best_trial']} stopped by {best['stopped_by']}; training took "
    f"{result['train_seconds']:.1f}s at {best['tokens_per_s']:,.0f} tokens/s."
)
for warning in result.get("warnings", []):
    st.warning(warning)

rows = finetune.history_rows(result.get("history", []))
if rows:
    st.line_chart(rows, x="elapsed_s", y="loss", color="series", x_label="seconds",
                  y_label="loss")
if len(result["trials"]) > 1:
    st.markdown("**Trials** — quality beside cost: a cheaper trial of nearly equal loss may do.")
    st.dataframe(_trials_table(result["trials"]), hide_index=True, key="finetune_trials_table")

st.markdown("**Held-out samples**")
st.dataframe(list(result.get("samples", [])), hide_index=True, key="finetune_samples")

quant = result.get("int8")
if quant:
    st.markdown("**Inference cost on a CPU: merged fp32 against dynamic int8**")
    st.dataframe([
        {"variant": label, "latency ms/prompt": quant[label]["latency_ms"],
         "size": _mib(quant[label]["size_bytes"]),
         **{k: quant[label]["metrics"].get(k) for k in ("sacrebleu", "chrf", "rougeL")}}
        for label in ("fp32", "int8")
    ], hide_index=True, key="finetune_int8_table")

registered = status.registered or st.session_state["finetune_registered"]
if registered:
    st.success(
        f"Registered {registered['model']} version {registered['version']} "
        f"({registered['status']}); a reviewer can approve it on the Registry page."
    )
else:
    variant = st.selectbox(
        "What to register", finetune.VARIANTS, key="finetune_variant",
        format_func=lambda v: {"weights": "the trained weights (LoRA adapter or full model)",
                               "merged": "the merged standalone model",
                               "int8": "the merged model, served int8 on a CPU"}[v],
    )
    if st.button(f"Register as {model_name}", key="finetune_register", type="primary"):
        try:
            version_made = finetune.register_job(ws, status.job_id, model_name, actor=user,
                                                 variant=variant)
        except PondError as exc:
            show_error(exc)
        else:
            st.session_state["finetune_registered"] = training_jobs.registered_summary(
                version_made)
            st.rerun()
