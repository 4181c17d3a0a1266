"""AppTest of the Fine-tune page: pick data and a local base model, see the hardware and
memory estimate, start a short fine-tuning in the background, watch it, see the
held-out scores and samples, and register the result."""

from __future__ import annotations

import time
from pathlib import Path

from streamlit.testing.v1 import AppTest

from core import auth, datasets, registry
from tests.finetune_models import build_gpt2, corpus

ROOT = Path(__file__).resolve().parent.parent


def _page(ws) -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.session_state["user"] = auth.get_user(ws, "ana")
    at.run()
    at.switch_page("pages/finetune.py").run()
    assert not at.exception
    return at


def _labels(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def test_finetune_page_without_data_says_what_to_do(ws):
    at = _page(ws)
    assert "No datasets yet" in at.info[0].value


def test_finetune_page_start_progress_result_register(ws, analyst, tmp_path):
    build_gpt2(ws.home / "models" / "tiny-gpt2")
    path = tmp_path / "phrases.csv"
    corpus(60).to_csv(path, index=False)
    datasets.ingest(ws, path, "phrases", actor=analyst)
    at = _page(ws)
    assert "Choose the prompt and response columns" in at.info[0].value
    assert at.selectbox(key="finetune_base_model").value == "tiny-gpt2 (workspace)"

    at.selectbox(key="finetune_prompt_col").select("prompt").run()
    at.selectbox(key="finetune_response_col").select("response").run()
    assert not at.exception
    caption = " ".join(c.value for c in at.caption)
    assert "Hardware:** CPU" in caption and "GPT2LMHeadModel" in caption
    assert "Memory needed:** about" in caption
    at.radio(key="finetune_method").set_value("full")
    at.selectbox(key="finetune_lr").select(3e-3)
    at.number_input(key="finetune_epochs").set_value(2)
    at.checkbox(key="finetune_int8").uncheck()
    at.text_input(key="finetune_model_name").input("phrase_writer")
    at.button(key="finetune_start").click().run()
    assert not at.exception
    assert at.session_state["finetune_job"]

    saw_progress = False
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        time.sleep(1.0)
        at.run()
        assert not at.exception, at.exception
        labels = _labels(at)
        if "Best validation loss" in labels:
            saw_progress = True
        if "Test loss" in labels or at.error:
            break
    assert not at.error, at.error[0].value
    labels = _labels(at)
    before, after = (float(x) for x in labels["Validation loss"].split(" → "))
    assert after < before
    assert float(labels["Test loss"]) < before
    assert saw_progress or "Test loss" in labels  # a fast run may finish between two polls
    samples = at.dataframe[-1].value
    assert list(samples.columns) == ["prompt", "reference", "generated"] and len(samples) == 5

    at.selectbox(key="finetune_variant").select("weights")
    at.button(key="finetune_register").click().run()
    assert not at.exception
    assert "Registered phrase_writer version 1 (pending_review)" in at.success[0].value
    version = registry.get_version(ws, "phrase_writer", 1)
    assert version.flavor == "transformers" and version.params["method"] == "full"

    # A fresh visit lists the finished run, with its scores and held-out samples.
    again = _page(ws)
    (runs,) = [e for e in again.expander if e.label.startswith("Finished runs")]
    assert runs.label == "Finished runs in this workspace (1)"
    table = again.dataframe[0].value
    assert table["dataset"].tolist() == ["phrases:1"] and table["method"].tolist() == ["full"]
    assert table["test loss"][0] < before
    assert list(again.dataframe[1].value.columns) == ["prompt", "reference", "generated"]
