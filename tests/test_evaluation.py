"""Evaluation: metrics pinned against scikit-learn, stored evaluations visible through the
registry, SHAP contributions, champion-vs-challenger bootstrap intervals, the CLI and
clear messages for bad input."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import sacrebleu
from sklearn import calibration as skcal
from sklearn import metrics as skm

from core import auth, evaluation, explain, metrics, registry, store
from core.cli import main
from core.errors import InvalidInput, PermissionDenied
from core.model_contract import load_model
from core.store import artifacts
from tests import evaluation_support as es

# --- metric functions against scikit-learn ------------------------------------------------------


@pytest.fixture
def binary_case():
    rng = np.random.default_rng(7)
    y = rng.integers(0, 2, 400)
    # Rounded scores give many ties, which is where curve code usually goes wrong.
    p = np.round(np.clip(0.35 * y + rng.random(400) * 0.65, 0, 1), 2)
    return y, np.column_stack([1 - p, p])


@pytest.fixture
def multiclass_case():
    rng = np.random.default_rng(11)
    y = rng.integers(0, 3, 300)
    logits = rng.normal(size=(300, 3)) + 1.5 * np.eye(3)[y]
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return y, proba


def test_new_classification_metrics_equal_sklearn(binary_case, multiclass_case):
    y, proba = binary_case
    assert metrics.pr_auc(y, proba) == pytest.approx(skm.average_precision_score(y, proba[:, 1]))
    assert metrics.balanced_accuracy(y, proba) == pytest.approx(
        skm.balanced_accuracy_score(y, proba.argmax(1)))
    assert metrics.weighted_f1(y, proba) == pytest.approx(
        skm.f1_score(y, proba.argmax(1), average="weighted"))
    y3, proba3 = multiclass_case
    assert metrics.roc_auc_ovr(y3, proba3) == pytest.approx(
        skm.roc_auc_score(y3, proba3, multi_class="ovr", average="macro"))
    assert metrics.balanced_accuracy(y3, proba3) == pytest.approx(
        skm.balanced_accuracy_score(y3, proba3.argmax(1)))
    assert metrics.weighted_f1(y3, proba3) == pytest.approx(
        skm.f1_score(y3, proba3.argmax(1), average="weighted"))
    assert metrics.log_loss(y3, proba3) == pytest.approx(skm.log_loss(y3, proba3))


def test_metrics_pinned_on_a_tiny_input():
    y = np.array([0, 1, 1, 0, 1])
    p = np.array([0.1, 0.4, 0.35, 0.8, 0.9])
    # Hand-computed: ranks 0.9(+) 0.8(-) 0.4(+) 0.35(+) → AP = (1 + 2/3 + 3/4) / 3.
    assert metrics.pr_auc(y, p) == pytest.approx((1 + 2 / 3 + 3 / 4) / 3)
    assert metrics.mape(np.array([100.0, 200.0, 0.0]), np.array([110.0, 150.0, 0.0])) == (
        pytest.approx((0.1 + 0.25 + 0.0) / 3))
    assert metrics.mape(np.array([1.0, 0.0]), np.array([1.0, 1.0])) == pytest.approx(
        skm.mean_absolute_percentage_error([1.0, 0.0], [1.0, 1.0]))
    assert np.isnan(metrics.pr_auc(np.zeros(3), np.array([0.1, 0.2, 0.3])))


def test_new_metrics_are_in_the_one_registry():
    assert [m.name for m in metrics.metrics_for("binary")] == [
        "roc_auc", "log_loss", "macro_f1", "accuracy", "pr_auc", "balanced_accuracy",
        "weighted_f1"]
    assert {m.name for m in metrics.metrics_for("multiclass")} >= {"roc_auc_ovr", "weighted_f1"}
    assert {m.name for m in metrics.metrics_for("regression")} == {"rmse", "mae", "r2", "mape"}
    assert metrics.get_metric("mape", "regression").higher_is_better is False
    assert metrics.METRICS["pr_auc"].implementation == "core.metrics.pr_auc"
    assert "average precision" in metrics.METRICS["pr_auc"].variant
    assert metrics.text_metric().name == "rougeL"
    with pytest.raises(InvalidInput, match="must be one of bleu"):
        metrics.text_metric("meteor")


def test_curves_equal_sklearn(binary_case):
    y, proba = binary_case
    fpr, tpr, thresholds = evaluation.roc_points(y, proba[:, 1])
    sk_fpr, sk_tpr, sk_thr = skm.roc_curve(y, proba[:, 1], drop_intermediate=False)
    np.testing.assert_allclose(fpr, sk_fpr)
    np.testing.assert_allclose(tpr, sk_tpr)
    np.testing.assert_allclose(thresholds[1:], sk_thr[1:])
    precision, recall, _ = evaluation.pr_points(y, proba[:, 1])
    sk_p, sk_r, _ = skm.precision_recall_curve(y, proba[:, 1])
    # scikit-learn lists the curve from the lowest threshold and stops at full recall.
    n = len(sk_p)
    np.testing.assert_allclose(precision[:n], sk_p[::-1])
    np.testing.assert_allclose(recall[:n], sk_r[::-1])
    bins = evaluation.calibration_bins(y, proba[:, 1], n_bins=10)
    sk_true, sk_pred = skcal.calibration_curve(y, proba[:, 1], n_bins=10)
    np.testing.assert_allclose([b["observed"] for b in bins], sk_true)
    np.testing.assert_allclose([b["mean_predicted"] for b in bins], sk_pred)
    np.testing.assert_array_equal(
        evaluation.confusion_matrix(y, proba.argmax(1), 2),
        skm.confusion_matrix(y, proba.argmax(1)))


# --- bootstrap intervals --------------------------------------------------------------------------


def _planted(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Model a is right 70 % of the time and b 80 %, independently: the true accuracy
    difference b − a is 0.10."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)

    def outputs(rate: float) -> np.ndarray:
        right = rng.random(n) < rate
        p_true = np.where(right, 0.9, 0.1)
        p1 = np.where(y == 1, p_true, 1 - p_true)
        return np.column_stack([1 - p1, p1])

    return y, outputs(0.7), outputs(0.8)


def test_bootstrap_interval_contains_the_planted_difference_and_narrows_with_n():
    accuracy = metrics.METRICS["accuracy"]
    widths = []
    for n in (200, 1000, 5000):
        y, a, b = _planted(n, seed=n)
        interval = evaluation.bootstrap_difference(accuracy, y, a, b, n_boot=1000, seed=0)
        assert interval.low < 0.10 < interval.high
        assert interval.low < interval.difference < interval.high
        assert interval.difference == pytest.approx(accuracy(y, b) - accuracy(y, a))
        widths.append(interval.high - interval.low)
    assert widths[0] > widths[1] > widths[2]
    # Four times the rows halves the width, give or take resampling noise.
    assert widths[2] < 0.6 * widths[1]


def test_bootstrap_is_reproducible_and_detects_no_difference():
    y, a, _ = _planted(500, seed=3)
    accuracy = metrics.METRICS["accuracy"]
    first = evaluation.bootstrap_difference(accuracy, y, a, a.copy(), seed=5)
    assert first.difference == 0.0 and first.low == 0.0 and first.high == 0.0
    y, a, b = _planted(500, seed=3)
    one = evaluation.bootstrap_difference(accuracy, y, a, b, seed=5)
    two = evaluation.bootstrap_difference(accuracy, y, a, b, seed=5)
    assert (one.low, one.high) == (two.low, two.high)
    with pytest.raises(InvalidInput, match="'n_boot' parameter of compare must be an int"):
        evaluation.bootstrap_difference(accuracy, y, a, b, n_boot=5)
    with pytest.raises(InvalidInput, match="same, non-empty rows"):
        evaluation.bootstrap_difference(accuracy, y, a, b[:10])


# --- tabular evaluation, stored on the version ------------------------------------------------------


@pytest.fixture
def penguins(ws, analyst):
    return es.penguins(ws, analyst)


def _truth_and_prediction(ws, version, frame, target):
    loaded = load_model(registry.version_files(ws, version.model, version.version))
    kept = frame[frame[target].notna()]
    prediction = loaded.predict(kept)
    return kept, prediction


def test_binary_evaluation_is_stored_audited_and_matches_sklearn(
    ws, analyst, penguins, tmp_path
):
    version = es.register(ws, analyst, tmp_path, "sexer", es.penguins_frame(), "sex", "binary")
    found = evaluation.evaluate_model(ws, "sexer:1", "penguins", analyst, segment_column="island")

    kept, prediction = _truth_and_prediction(ws, version, es.penguins_frame(), "sex")
    y = (kept["sex"] == "male").to_numpy().astype(int)  # classes sorted: female, male
    p = prediction.probabilities[:, 1]
    assert found.rows == 333 == len(kept)
    assert found.metrics["roc_auc"] == pytest.approx(skm.roc_auc_score(y, p))
    assert found.metrics["pr_auc"] == pytest.approx(skm.average_precision_score(y, p))
    assert found.metrics["log_loss"] == pytest.approx(skm.log_loss(y, p))
    assert found.metrics["accuracy"] == pytest.approx(skm.accuracy_score(y, p > 0.5))
    assert found.metrics["balanced_accuracy"] == pytest.approx(
        skm.balanced_accuracy_score(y, p > 0.5))
    assert found.metrics["macro_f1"] == pytest.approx(skm.f1_score(y, p > 0.5, average="macro"))
    assert found.metrics["weighted_f1"] == pytest.approx(
        skm.f1_score(y, p > 0.5, average="weighted"))
    assert found.main_metric == "roc_auc" and found.task == "binary"
    assert found.warnings == ("11 rows have no value in the target 'sex' and were left out",)

    details = found.details
    assert details["positive_class"] == "male"
    assert np.array(details["confusion_matrix"]).tolist() == skm.confusion_matrix(
        y, (p > 0.5).astype(int)).tolist()
    assert details["roc"][0]["auc"] == pytest.approx(found.metrics["roc_auc"])
    assert details["calibration"]["kind"] == "positive class"
    segments = {s["segment"]: s for s in details["segments"]["rows"]}
    assert set(segments) == {"Biscoe", "Dream", "Torgersen"}
    dream = (kept["island"] == "Dream").to_numpy()
    assert segments["Dream"]["rows"] == int(dream.sum())
    assert segments["Dream"]["roc_auc"] == pytest.approx(skm.roc_auc_score(y[dream], p[dream]))
    main = [s["roc_auc"] for s in details["segments"]["rows"]]
    assert main == sorted(main)  # weakest first

    # Stored on the version: the registry (and so the Registry page and CLI) sees it.
    stored = registry.version_evaluations(ws, "sexer", 1)
    assert [e.id for e in stored] == [found.id]
    listed = stored[0]
    assert listed.dataset_ref == "penguins:1" and listed.dataset_sha256 == penguins.content_sha256
    assert listed.created_by == "ana" and listed.metrics == found.metrics
    assert listed.implementation["libraries"]["lightgbm"]
    assert listed.implementation["metrics"]["roc_auc"] == "core.metrics.roc_auc"
    assert listed.details is None and "sexer:1 on penguins:1" in str(listed)
    reloaded = evaluation.get_evaluation(ws, found.id)
    assert reloaded.details == found.details
    assert artifacts.verified_path(ws, reloaded.details_sha256).exists()
    json.dumps(listed.to_dict())  # JSON-ready for the CLI and the page
    trail = registry.audit_trail(ws, "sexer")
    assert trail[0].action == "evaluation_recorded" and trail[0].actor == "ana"
    assert trail[0].details["evaluation_id"] == found.id


def test_multiclass_and_regression_evaluations(ws, analyst, penguins, tmp_path):
    frame = es.penguins_frame()
    es.register(ws, analyst, tmp_path, "species", frame, "species", "multiclass")
    found = evaluation.evaluate_model(ws, "species", "penguins:1", analyst)
    assert found.main_metric == "log_loss"
    assert found.metrics["roc_auc_ovr"] is not None and found.metrics["accuracy"] > 0.9
    assert [c["class"] for c in found.details["roc"]] == ["Adelie", "Chinstrap", "Gentoo"]
    assert found.details["calibration"]["kind"] == "top label"
    assert sum(r["support"] for r in found.details["class_report"]) == 344

    version = es.register(ws, analyst, tmp_path, "mass", frame, "body_mass_g", "regression")
    found = evaluation.evaluate_model(ws, "mass:1", "penguins", analyst, segment_column="species")
    kept, prediction = _truth_and_prediction(ws, version, frame, "body_mass_g")
    y, yhat = kept["body_mass_g"].to_numpy(), np.asarray(prediction.values)
    assert found.metrics["rmse"] == pytest.approx(np.sqrt(skm.mean_squared_error(y, yhat)))
    assert found.metrics["mae"] == pytest.approx(skm.mean_absolute_error(y, yhat))
    assert found.metrics["mape"] == pytest.approx(skm.mean_absolute_percentage_error(y, yhat))
    assert found.metrics["r2"] == pytest.approx(skm.r2_score(y, yhat))
    residuals = found.details["residuals"]
    assert len(residuals["residual"]) == 342 and not residuals["sampled"]
    assert residuals["summary"]["mean"] == pytest.approx(float(np.mean(y - yhat)))
    assert [s["segment"] for s in found.details["segments"]["rows"]][0] in {
        "Adelie", "Chinstrap", "Gentoo"}
    assert [e.kind for e in evaluation.list_evaluations(ws, dataset="penguins")] == [
        "tabular", "tabular"]


def _ingest_frame(ws, analyst, tmp_path, frame: pd.DataFrame, name: str):
    from core import datasets

    path = tmp_path / f"{name}.csv"
    frame.to_csv(path, index=False)
    return datasets.ingest(ws, path, name, actor=analyst)


def test_bad_tabular_input_gets_clear_messages(ws, analyst, penguins, tmp_path):
    frame = es.penguins_frame()
    es.register(ws, analyst, tmp_path, "species", frame, "species", "multiclass")

    _ingest_frame(ws, analyst, tmp_path, frame.drop(columns=["island", "bill_depth_mm"]),
                  "no_island")
    with pytest.raises(InvalidInput, match=r"dataset no_island:1 lacks the input columns "
                                           r"'island', 'bill_depth_mm' that model species:1"):
        evaluation.evaluate_model(ws, "species:1", "no_island", analyst)

    _ingest_frame(ws, analyst, tmp_path, frame.drop(columns=["species"]), "no_target")
    with pytest.raises(InvalidInput, match="has no column 'species', the target"):
        evaluation.evaluate_model(ws, "species:1", "no_target", analyst)

    unseen = frame.copy()
    unseen.loc[:9, "species"] = "Emperor"
    _ingest_frame(ws, analyst, tmp_path, unseen, "emperors")
    with pytest.raises(InvalidInput, match=r"labels that model species:1 never saw in training: "
                                           r"'Emperor' \(10 rows\); it knows only 'Adelie'"):
        evaluation.evaluate_model(ws, "species:1", "emperors", analyst)

    with pytest.raises(InvalidInput, match="has no column 'continent' to segment by"):
        evaluation.evaluate_model(ws, "species:1", "penguins", analyst, segment_column="continent")
    with pytest.raises(InvalidInput, match=r"'body_mass_g' of dataset penguins:1 has 94 distinct "
                                           r"values; segments need a categorical column"):
        evaluation.evaluate_model(ws, "species:1", "penguins", analyst,
                                  segment_column="body_mass_g")

    text_model = tmp_path / "adapter.safetensors"
    text_model.write_bytes(b"not really weights")
    registry.register_version(ws, "writer", {"adapter.safetensors": text_model}, metrics={},
                              params={}, lineage={}, actor=analyst, flavor="transformers")
    with pytest.raises(InvalidInput, match="writer:1 is a transformers model; tabular"):
        evaluation.evaluate_model(ws, "writer", "penguins", analyst)

    admin = auth.get_user(ws, "admin")
    auth.set_disabled(ws, "ana", True, actor=admin)
    with pytest.raises(PermissionDenied, match="disabled"):
        evaluation.evaluate_model(ws, "species:1", "penguins", auth.get_user(ws, "ana"))
    assert evaluation.list_evaluations(ws, "species", 1) == []


# --- text evaluation ----------------------------------------------------------------------------------

PAIRS = pd.DataFrame({
    "prompt": ["Translate: chat", "Translate: chien", "Translate: maison", "Translate: arbre"],
    "generated": ["the cat sits on the mat", "a dog barks at the mailman", "this is my house",
                  "the tree is very green"],
    "reference": ["the cat sits on the mat", "the dog barks at the postman", "this is the house",
                  "a very green tree stands here"],
})


def test_text_evaluation_is_stored_on_the_model_and_equals_sacrebleu(ws, analyst, tmp_path):
    _ingest_frame(ws, analyst, tmp_path, PAIRS, "pairs")
    weights = tmp_path / "adapter.safetensors"
    weights.write_bytes(b"weights")
    registry.register_version(ws, "writer", {"adapter.safetensors": weights}, metrics={},
                              params={}, lineage={}, actor=analyst, flavor="transformers",
                              task="text_generation")
    found = evaluation.evaluate_text(ws, "pairs", "generated", "reference", analyst,
                                     model_ref="writer")
    preds, refs = PAIRS["generated"].tolist(), PAIRS["reference"].tolist()
    assert found.kind == "text" and found.model_ref == "writer:1" and found.rows == 4
    assert found.metrics["sacrebleu"] == sacrebleu.corpus_bleu(preds, [refs]).score
    assert found.metrics["chrf"] == sacrebleu.corpus_chrf(preds, [refs]).score
    assert set(found.metrics) == {"bleu", "sacrebleu", "chrf", "rouge1", "rouge2", "rougeL",
                                  "rougeLsum"}
    examples = found.details["per_example"]
    assert [e["chrf"] for e in examples] == sorted(e["chrf"] for e in examples)
    assert examples[-1]["prediction"] == "the cat sits on the mat"
    assert found.details["outputs"]["sacrebleu"]["signature"].startswith("nrefs:1|")
    assert "13a" in found.details["variants"]["bleu"]
    assert found.implementation["libraries"]["evaluate"]
    assert (ws.home / "hf" / "modules").is_dir() or found.implementation["modules"]
    assert [e.id for e in registry.version_evaluations(ws, "writer", 1)] == [found.id]

    # A text model's own generations, through the hook fine-tuning plugs into.
    answers = dict(zip(PAIRS["prompt"], PAIRS["reference"], strict=True))
    perfect = evaluation.evaluate_text(
        ws, "pairs", None, "reference", analyst, prompt_col="prompt",
        generate=lambda prompts: [answers[p] for p in prompts],
    )
    assert perfect.metrics["sacrebleu"] == pytest.approx(100.0)
    assert perfect.metrics["rougeL"] == 1.0 and perfect.columns["generated"] is True
    with pytest.raises(InvalidInput, match="the generations for column 'prompt' of dataset "
                                           "pairs:1 has 1 rows but"):
        evaluation.evaluate_text(ws, "pairs", None, "reference", analyst, prompt_col="prompt",
                                 generate=lambda prompts: ["only one"])


def test_multi_reference_text_from_a_json_dataset(ws, analyst, tmp_path):
    from core import datasets

    rows = [
        {"pred": "the cat sat", "refs": ["the cat sat down", "a cat sat"]},
        {"pred": "hello", "refs": ["hello there"]},
    ]
    path = tmp_path / "multi.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    datasets.ingest(ws, path, "multi", actor=analyst)
    found = evaluation.evaluate_text(ws, "multi", "pred", "refs", analyst)
    streams = [["the cat sat down", "hello there"], ["a cat sat", None]]
    assert found.metrics["sacrebleu"] == sacrebleu.corpus_bleu(
        ["the cat sat", "hello"], streams).score
    assert found.details["multi_reference"] is True
    assert found.details["per_example"][0]["references"] in (["hello there"],
                                                              ["the cat sat down", "a cat sat"])


def test_bad_text_columns_get_clear_messages(ws, analyst, tmp_path):
    bad = PAIRS.assign(score=[1, 2, 3, 4], generated=["the cat", None, "house", "a tree"])
    _ingest_frame(ws, analyst, tmp_path, bad, "bad_pairs")
    with pytest.raises(InvalidInput, match=r"column 'generated' of dataset bad_pairs:1 has no "
                                           r"value \(None/null\) at row 1"):
        evaluation.evaluate_text(ws, "bad_pairs", "generated", "reference", analyst)
    with pytest.raises(InvalidInput, match=r"column 'score' of dataset bad_pairs:1 holds a int "
                                           r"\(1\) at row 0, not text"):
        evaluation.evaluate_text(ws, "bad_pairs", "score", "reference", analyst)
    with pytest.raises(InvalidInput, match="dataset bad_pairs:1 has no column 'answer'"):
        evaluation.evaluate_text(ws, "bad_pairs", "answer", "reference", analyst)
    with pytest.raises(InvalidInput, match="not both"):
        evaluation.evaluate_text(ws, "bad_pairs", "generated", "reference", analyst,
                                 prompt_col="prompt", generate=lambda p: p)
    assert evaluation.list_evaluations(ws, kind="text") == []


# --- comparing versions -----------------------------------------------------------------------------


def test_compare_champion_and_challenger(ws, analyst, reviewer, penguins, tmp_path):
    frame = es.penguins_frame()
    es.register(ws, analyst, tmp_path, "sexer", frame, "sex", "binary", rounds=40)
    es.register(ws, analyst, tmp_path, "sexer", frame, "sex", "binary", rounds=2, num_leaves=2)
    for number in (1, 2):
        registry.request_approval(ws, "sexer", number, actor=analyst, comment="ready")
        registry.approve(ws, "sexer", number, actor=reviewer, comment="ok")
    registry.set_alias(ws, "sexer", "champion", 1, actor=reviewer)
    registry.set_alias(ws, "sexer", "challenger", 2, actor=reviewer)

    found = evaluation.compare(ws, "sexer@champion", "sexer@challenger", "penguins",
                               actor=reviewer)
    assert (found.model_a, found.model_b, found.metric) == ("sexer:1", "sexer:2", "roc_auc")
    assert found.difference == pytest.approx(found.score_b - found.score_a)
    assert found.low <= found.difference <= found.high
    assert found.better == "a" and "sexer:1 is better on ROC AUC" in found.verdict
    assert len(found.differences) == 1000 and found.rows == 333
    assert found.metrics_a.keys() == found.metrics_b.keys()
    again = evaluation.compare(ws, "sexer@champion", "sexer@challenger", "penguins")
    assert (again.low, again.high) == (found.low, found.high)
    accuracy = evaluation.compare(ws, "sexer:1", "sexer:2", "penguins", metric="accuracy",
                                  n_boot=200, seed=1)
    assert accuracy.metric == "accuracy" and accuracy.n_boot == 200
    assert registry.audit_trail(ws, "sexer")[0].action == "versions_compared"

    with pytest.raises(InvalidInput, match="both name sexer:1"):
        evaluation.compare(ws, "sexer@champion", "sexer:1", "penguins")
    with pytest.raises(InvalidInput, match="'metric' parameter must be one of"):
        evaluation.compare(ws, "sexer:1", "sexer:2", "penguins", metric="rmse")
    es.register(ws, analyst, tmp_path, "island", frame, "island", "multiclass")
    with pytest.raises(InvalidInput, match="binary model and island:1 a multiclass model"):
        evaluation.compare(ws, "sexer:1", "island:1", "penguins")


# --- explanations ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "task"),
    [("sex", "binary"), ("species", "multiclass"), ("body_mass_g", "regression")],
)
def test_contributions_add_up_to_the_raw_output(target, task):
    frame = es.penguins_frame()
    booster, contract = es.train(frame, target, task)
    loaded = load_model_from(booster, contract)
    rows = frame.drop(columns=[target]).head(25)
    explained = explain.contributions(loaded, rows)
    records = rows.astype(object).where(rows.notna(), None).to_dict(orient="records")
    assert explain.contributions(loaded, records) == explained
    from core.model_contract import encode_frame

    raw = booster.predict(encode_frame(contract, rows).matrix, raw_score=True)
    raw = raw.reshape(len(rows), -1)
    for i, row in enumerate(explained):
        assert list(row["contributions"]) == contract.feature_names
        k = 0 if task != "multiclass" else contract.classes.index(row["class"])
        assert row["raw_output"] == pytest.approx(raw[i, k], abs=1e-9)
        assert row["base_value"] + sum(row["contributions"].values()) == pytest.approx(raw[i, k])
    if task == "multiclass":
        assert [r["class"] for r in explained] == loaded.predict(rows).values
        gentoo = explain.contributions(loaded, rows, target_class="Gentoo")
        assert {r["class"] for r in gentoo} == {"Gentoo"}
        with pytest.raises(InvalidInput, match="'Emperor' is not a class of the model"):
            explain.contributions(loaded, rows, target_class="Emperor")

    importance = explain.global_importance(loaded, frame, max_rows=100)
    assert importance.rows == 100
    assert list(importance.mean_abs) == sorted(importance.mean_abs, reverse=True)
    assert set(importance.features) == set(contract.feature_names)
    assert (importance.per_class is not None) == (task == "multiclass")


def load_model_from(booster, contract):
    from core.model_contract import LoadedModel

    return LoadedModel(booster, contract)


def test_explain_model_on_a_registered_version(ws, analyst, penguins, tmp_path):
    es.register(ws, analyst, tmp_path, "sexer", es.penguins_frame(), "sex", "binary")
    found = explain.explain_model(ws, "sexer", "penguins", analyst, row=3)
    assert found.model == "sexer:1" and found.row == 3 and found.rows == 344
    assert found.row_contributions["class"] == "male"
    assert found.unit == "log-odds of sex = 'male'"
    assert found.row_values["island"] == "Torgersen"
    assert found.importance.features[0] in found.row_values
    json.dumps(found.to_dict())
    with pytest.raises(InvalidInput, match=r"row 344 is out of range: dataset penguins:1 has "
                                           r"344 rows \(0 to 343\)"):
        explain.explain_model(ws, "sexer", "penguins", analyst, row=344)


# --- CLI and schema ------------------------------------------------------------------------------------


def test_cli_evaluate_text_and_compare(ws, analyst, penguins, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("POND_USER", "ana")
    frame = es.penguins_frame()
    es.register(ws, analyst, tmp_path, "sexer", frame, "sex", "binary")
    es.register(ws, analyst, tmp_path, "sexer", frame, "sex", "binary", rounds=3)

    assert main(["evaluate", "--model", "sexer:1", "--dataset", "penguins", "--segment",
                 "island", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["model"] == "sexer:1" and result["dataset"] == "penguins:1"
    assert result["main_metric"] == "roc_auc" and 0.5 < result["main_score"] <= 1.0
    assert [s["segment"] for s in result["segments"]][0] in {"Biscoe", "Dream", "Torgersen"}

    assert main(["evaluate", "--model", "sexer:2", "--dataset", "penguins"]) == 0
    out = capsys.readouterr().out
    assert "sexer:2 on penguins:1 (333 rows, binary, target 'sex')" in out and "roc_auc" in out

    _ingest_frame(ws, analyst, tmp_path, PAIRS, "pairs")
    assert main(["evaluate", "--dataset", "pairs", "--predictions", "generated",
                 "--references", "reference", "--top", "2"]) == 0
    out = capsys.readouterr().out
    assert "sacreBLEU signature: nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp" in out
    assert "worst rows by chrf:" in out

    assert main(["evaluate", "compare", "--model", "sexer:1", "--model", "sexer:2",
                 "--dataset", "penguins", "--n-boot", "200", "--json"]) == 0
    compared = json.loads(capsys.readouterr().out)
    assert compared["model_a"] == "sexer:1" and compared["n_boot"] == 200
    assert compared["ci_low"] <= compared["difference"] <= compared["ci_high"]

    assert main(["evaluate", "--dataset", "penguins"]) == 1
    assert "name a model (--model" in capsys.readouterr().err
    assert main(["evaluate", "compare", "--model", "sexer:1", "--dataset", "penguins"]) == 1
    assert "exactly two versions" in capsys.readouterr().err
    assert main(["evaluate", "--model", "sexer:1", "--dataset", "nope"]) == 1
    assert "dataset 'nope' does not exist" in capsys.readouterr().err

    assert main(["registry", "show", "sexer", "1"]) == 0
    assert "evaluations: 1" in capsys.readouterr().out


def test_evaluations_table_is_a_numbered_migration(ws):
    with store.read(ws) as con:
        names = dict(con.execute("SELECT number, name FROM _migrations").fetchall())
        columns = {r[0] for r in con.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'evaluations'"
        ).fetchall()}
    assert names[3] == "evaluation"
    assert {"dataset_sha256", "metrics", "implementation", "details_sha256", "created_by",
            "created_at"} <= columns
