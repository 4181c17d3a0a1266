"""AppTest of the Train page: pick data, start a short training in the background,
watch its progress, see the result and register it."""

from __future__ import annotations

import time
from pathlib import Path

from streamlit.testing.v1 import AppTest

from core import auth, datasets, registry, training_jobs

ROOT = Path(__file__).resolve().parent.parent


def _train_page(ws) -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.session_state["user"] = auth.get_user(ws, "ana")
    at.run()
    at.switch_page("pages/train.py").run()
    assert not at.exception
    return at


def _labels(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def test_train_page_without_data_says_what_to_do(ws):
    at = _train_page(ws)
    assert "No datasets yet" in at.info[0].value


def test_train_page_start_progress_result_register(ws, analyst):
    datasets.ingest(ws, ROOT / "data" / "penguins.csv", "penguins", actor=analyst)
    at = _train_page(ws)
    assert "Choose the target column" in at.info[0].value

    at.selectbox(key="train_target").select("species").run()
    assert not at.exception
    task = at.selectbox(key="train_task")
    assert task.value == "auto"
    assert task.options[0] == "auto (detected: multiclass)"
    assert at.selectbox(key="train_metric_multiclass").value == "log_loss"
    at.multiselect(key="train_exclude_species").select("year")
    at.number_input(key="train_budget").set_value(20)
    at.number_input(key="train_trials").set_value(3)
    at.text_input(key="train_model_name").input("penguin_species")
    at.button(key="train_start").click().run()
    assert not at.exception
    job = at.session_state["train_job"]
    assert job

    saw_progress = False
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        time.sleep(1.0)
        at.run()
        assert not at.exception
        labels = _labels(at)
        if "Trials done" in labels:
            saw_progress = True
        if any(label.startswith("Holdout") for label in labels):
            break
    labels = _labels(at)
    assert saw_progress
    holdout = float(labels["Holdout log loss"])
    baseline = float(labels["Baseline (holdout)"])
    assert holdout < baseline / 2
    done, pruned = (int(n) for n in labels["Trials done / pruned"].split(" / "))
    assert done >= 1 and done + pruned <= 3
    # AppTest does not expose a dataframe's key; the best-params table is the only one.
    params = at.dataframe[0].value
    assert "learning_rate" in set(params["parameter"])
    assert len(at.get("plotly_chart")) >= 3  # history, importances, confusion matrix

    at.button(key="train_register").click().run()
    assert not at.exception
    assert "Registered penguin_species version 1 (pending_review)" in at.success[0].value
    # The job stays listed, to reopen after the page's session is gone.
    earlier = at.selectbox(key="train_open_job").options
    assert len(earlier) == 1 and earlier[0].startswith("penguins:1 → species (done")
    version = registry.get_version(ws, "penguin_species", 1)
    assert version.lineage["training_config"]["exclude"] == ["year"]
    assert version.created_by == "ana"


def test_train_page_stop_button_keeps_the_best_so_far(ws, analyst):
    datasets.ingest(ws, ROOT / "data" / "penguins.csv", "penguins", actor=analyst)
    at = _train_page(ws)
    at.selectbox(key="train_target").select("body_mass_g").run()
    assert at.selectbox(key="train_task").options[0] == "auto (detected: regression)"
    at.number_input(key="train_budget").set_value(600)
    at.toggle(key="train_ensemble").set_value(False)
    at.button(key="train_start").click().run()
    deadline = time.monotonic() + 300
    stopped = False
    while time.monotonic() < deadline:
        time.sleep(1.0)
        at.run()
        assert not at.exception
        labels = _labels(at)
        if not stopped and labels.get("Trials done", "0") not in ("0", ""):
            at.button(key="train_stop").click().run()
            stopped = True
        if any(label.startswith("Holdout") for label in labels):
            break
    assert stopped
    assert any("Stopped by your stop request" in c.value for c in at.caption)
    assert float(_labels(at)["Holdout RMSE"]) < float(_labels(at)["Baseline (holdout)"])
    # The blend was switched off: the job refit the best trial alone.
    (job,) = training_jobs.list_jobs(ws, actor="ana")
    assert job.request["ensemble"] is False
    result = training_jobs.read_progress(ws, job.job_id).result
    assert [m["weight"] for m in result["ensemble"]] == [1.0]
