"""AppTest of the Evaluate page: a tabular evaluation with charts and segments, text
metrics, an explanation and a champion-vs-challenger comparison, then the stored
evaluation on the Registry page."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from core import auth, datasets, evaluation
from tests import evaluation_support as es

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 180


@pytest.fixture
def workspace_with_models(ws, analyst, tmp_path):
    es.penguins(ws, analyst)
    frame = es.penguins_frame()
    es.register(ws, analyst, tmp_path, "sexer", frame, "sex", "binary")
    es.register(ws, analyst, tmp_path, "sexer", frame, "sex", "binary", rounds=3)
    pairs = pd.DataFrame({
        "generated": ["the cat sits on the mat", "a dog barks at the mailman", "my house"],
        "reference": ["the cat sits on the mat", "the dog barks at the postman",
                      "this is the house"],
    })
    path = tmp_path / "pairs.csv"
    pairs.to_csv(path, index=False)
    datasets.ingest(ws, path, "pairs", actor=analyst)
    return ws


def _evaluate_page(ws, name: str = "ana") -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT)
    at.session_state["user"] = auth.get_user(ws, name)
    at.run()
    at.switch_page("pages/evaluate.py").run()
    assert not at.exception
    return at


def _table(at: AppTest, *columns: str) -> pd.DataFrame:
    for frame in at.dataframe:
        value = frame.value
        if tuple(value.columns[: len(columns)]) == columns:
            return value
    raise AssertionError(f"no table with columns {columns} on the page")


def test_evaluate_page_end_to_end(workspace_with_models):
    ws = workspace_with_models
    at = _evaluate_page(ws)
    assert at.title[0].value == "Evaluate"
    assert at.selectbox(key="eval_model").options == ["sexer:2", "sexer:1"]  # newest first

    # Tabular: metrics, charts and segments of a real evaluation.
    at.selectbox(key="eval_model").select("sexer:1")
    at.selectbox(key="eval_dataset").select("penguins:1").run()
    at.selectbox(key="eval_segment").select("island")
    at.button(key="eval_run").click().run()
    assert not at.exception
    stored = evaluation.list_evaluations(ws, "sexer", 1)
    assert len(stored) == 1
    assert any(f"Stored as evaluation #{stored[0].id} of sexer:1" in s.value for s in at.success)
    shown = {m.label: m.value for m in at.metric}
    assert shown["ROC AUC (main)"] == f"{stored[0].metrics['roc_auc']:.4g}"
    assert float(shown["accuracy"]) > 0.8
    segments = _table(at, "segment", "rows")
    assert set(segments["segment"]) == {"Biscoe", "Dream", "Torgersen"}
    assert segments["rows"].sum() == 333
    assert len(at.get("plotly_chart")) >= 5  # ROC, PR, calibration, confusion, segments

    # Text metrics: every number with its variant, rows worst first.
    at.selectbox(key="eval_text_dataset").select("pairs:1")
    at.selectbox(key="eval_text_predictions").select("generated")
    at.selectbox(key="eval_text_references").select("reference")
    at.button(key="eval_text_run").click().run()
    assert not at.exception
    text = evaluation.list_evaluations(ws, kind="text")[0]
    metrics = _table(at, "metric", "value", "scale")
    values = dict(zip(metrics["metric"], metrics["value"], strict=True))
    assert values["sacreBLEU"] == pytest.approx(text.metrics["sacrebleu"])
    assert values["ROUGE-L"] == pytest.approx(text.metrics["rougeL"])
    variants = dict(zip(metrics["metric"], metrics["variant"], strict=True))
    assert "13a" in variants["BLEU"] and "use_stemmer=False" in variants["ROUGE-L"]
    rows = _table(at, "row", "prediction")
    assert rows["chrf"].tolist() == sorted(rows["chrf"].tolist())
    assert rows["prediction"].iloc[-1] == "the cat sits on the mat"

    # Explain one row.
    at.selectbox(key="eval_explain_model").select("sexer:1")
    at.selectbox(key="eval_explain_dataset").select("penguins:1")
    at.number_input(key="eval_explain_row").set_value(3)
    at.button(key="eval_explain_run").click().run()
    assert not at.exception
    contributions = _table(at, "feature", "value", "contribution")
    assert len(contributions) == 7 and contributions["contribution"].abs().max() > 0

    # Compare the two versions with a bootstrap interval.
    at.selectbox(key="eval_cmp_a").select("sexer:1")
    at.selectbox(key="eval_cmp_b").select("sexer:2")
    at.selectbox(key="eval_cmp_dataset").select("penguins:1")
    at.number_input(key="eval_cmp_nboot").set_value(200)
    at.button(key="eval_cmp_run").click().run()
    assert not at.exception
    shown = {m.label: m.value for m in at.metric}
    assert float(shown["B − A"]) < 0
    assert any("sexer:1 is better on ROC AUC" in s.value for s in at.success)
    side = _table(at, "metric", "A", "B")
    assert "roc_auc" in side["metric"].tolist()

    # Bad input gets a clear message, not a traceback.
    at.selectbox(key="eval_segment").select("(none)").run()
    at.selectbox(key="eval_dataset").select("pairs:1")
    at.button(key="eval_run").click().run()
    assert not at.exception
    assert any("dataset pairs:1 lacks the input columns" in e.value for e in at.error)


def test_stored_evaluation_shows_on_the_registry_page(workspace_with_models, analyst):
    ws = workspace_with_models
    found = evaluation.evaluate_model(ws, "sexer:1", "penguins", analyst)
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT)
    at.session_state["user"] = auth.get_user(ws, "rita")
    at.run()
    at.switch_page("pages/registry.py").run()
    at.selectbox(key="reg_model").set_value("sexer").run()
    at.selectbox(key="reg_version").set_value(1).run()
    assert not at.exception
    table = _table(at, "id", "model", "dataset")
    assert table["id"].tolist() == [found.id]
    assert table["dataset"].tolist() == ["penguins:1"]
    assert table["main_score"].tolist() == [pytest.approx(found.metrics["roc_auc"])]


def test_page_load_does_not_import_evaluate(workspace_with_models):
    """`import evaluate` costs seconds: the page must not pay it until text is scored."""
    code = f"""
import sys
from streamlit.testing.v1 import AppTest
from core import auth, store
at = AppTest.from_file({str(ROOT / "app.py")!r}, default_timeout={TIMEOUT})
at.session_state["user"] = auth.get_user(store.open_workspace(), "ana")
at.run()
at.switch_page("pages/evaluate.py").run()
assert not at.exception, at.exception
assert at.title[0].value == "Evaluate"
assert "evaluate" not in sys.modules, "the Evaluate page imported evaluate"
"""
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=TIMEOUT)


def test_empty_workspace_says_what_to_do(ws):
    at = _evaluate_page(ws)
    assert any("No datasets yet" in i.value for i in at.info)
