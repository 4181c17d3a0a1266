"""AutoML: metrics, task detection, real trainings on small real data, the budget,
pruning, study storage (journal file and PostgreSQL workers), the preprocessing
contract, the CLI and background jobs, and every kind of bad input."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm
from sklearn.datasets import load_breast_cancer, load_diabetes, load_wine

from core import automl, datasets, model_contract, training_jobs
from core import metrics as mx
from core.cli import main as cli_main
from core.errors import InvalidInput, NotFound, PermissionDenied

ROOT = Path(__file__).resolve().parent.parent
PENGUINS = ROOT / "data" / "penguins.csv"


def _frame(loader) -> pd.DataFrame:
    return loader(as_frame=True).frame


@pytest.fixture(scope="module")
def cancer() -> pd.DataFrame:
    return _frame(load_breast_cancer)


@pytest.fixture(scope="module")
def diabetes() -> pd.DataFrame:
    return _frame(load_diabetes)


@pytest.fixture(scope="module")
def penguins() -> pd.DataFrame:
    return pd.read_csv(PENGUINS)


@pytest.fixture(scope="module")
def cancer_result(cancer) -> automl.TrainResult:
    return automl.train(cancer, "target", time_budget=None, n_trials=6, seed=0, folds=3)


@pytest.fixture(scope="module")
def penguin_result(penguins) -> automl.TrainResult:
    return automl.train(penguins, "species", time_budget=None, n_trials=3, seed=1, folds=3)


# --- metrics ----------------------------------------------------------------------------


def test_metrics_match_scikit_learn_on_fixed_inputs():
    y = np.array([0, 0, 1, 1, 1, 0])
    p1 = np.array([0.1, 0.4, 0.35, 0.8, 0.9, 0.5])
    proba = np.column_stack([1 - p1, p1])
    assert mx.roc_auc(y, proba) == pytest.approx(skm.roc_auc_score(y, p1))
    assert mx.roc_auc(y, p1) == pytest.approx(7 / 9)
    assert mx.log_loss(y, proba) == pytest.approx(skm.log_loss(y, p1))
    assert mx.accuracy(y, proba) == pytest.approx(5 / 6)  # a 0.5 tie goes to class 0
    y3 = np.array([0, 1, 2, 2, 1, 0, 2])
    p3 = np.eye(3)[[0, 2, 2, 2, 1, 1, 0]] * 0.8 + 0.2 / 3
    assert mx.macro_f1(y3, p3) == pytest.approx(skm.f1_score(y3, p3.argmax(1), average="macro"))
    assert mx.log_loss(y3, p3) == pytest.approx(skm.log_loss(y3, p3))
    t = np.array([3.0, -0.5, 2.0, 7.0])
    f = np.array([2.5, 0.0, 2.0, 8.0])
    assert mx.rmse(t, f) == pytest.approx(math.sqrt(0.375))
    assert mx.mae(t, f) == pytest.approx(0.5)
    assert mx.r2(t, f) == pytest.approx(skm.r2_score(t, f))
    assert math.isnan(mx.roc_auc(np.array([1, 1]), np.array([0.2, 0.3])))


def test_metric_registry():
    assert mx.default_metric("binary").name == "roc_auc"
    assert mx.default_metric("multiclass").name == "log_loss"
    assert mx.default_metric("regression").name == "rmse"
    assert [s.name for s in mx.metrics_for("multiclass")][0] == "log_loss"
    assert mx.get_metric("macro_f1", "multiclass").higher_is_better
    assert not mx.get_metric(None, "regression").higher_is_better
    with pytest.raises(InvalidInput, match="'metric' parameter must be one of rmse"):
        mx.get_metric("roc_auc", "regression")


# --- task detection -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "task"),
    [
        (["a", "b"] * 20, "binary"),
        ([True, False] * 20, "binary"),
        ([0, 1] * 20, "binary"),
        (["x", "y", "z"] * 20, "multiclass"),
        ([1, 2, 3, 4] * 25, "multiclass"),
        (list(np.linspace(0, 1, 60)), "regression"),
        (list(range(60)), "regression"),
    ],
)
def test_detect_task(values, task):
    assert automl.detect_task(pd.Series(values, name="y")).task == task


# --- real trainings ----------------------------------------------------------------------


def test_binary_training_beats_the_baseline(cancer_result, cancer):
    r = cancer_result
    assert (r.task, r.metric, r.higher_is_better) == ("binary", "roc_auc", True)
    assert r.baseline_score == pytest.approx(0.5)
    assert r.holdout_score > 0.95
    assert r.holdout_score > r.baseline_score + 0.4
    assert {"roc_auc", "log_loss", "macro_f1", "accuracy"} <= set(r.holdout_scores)
    assert r.cv_score > 0.95 and r.cv_std >= 0
    s = r.splits
    assert s.dev_rows + s.holdout_rows == len(cancer)
    assert s.folds == 3 and s.stratified
    assert sum(map(sum, r.confusion_matrix)) == s.holdout_rows
    assert r.classes == (0, 1)
    assert set(r.feature_importances) <= set(cancer.columns) - {"target"}
    assert list(r.feature_importances.values()) == sorted(r.feature_importances.values(), reverse=True)
    assert r.param_importances and "learning_rate" in r.param_importances
    assert len(r.history) == 6 and r.stop_reason == "trials"
    # The first trial is LightGBM's defaults, enqueued before any sampling.
    first = r.history[0]
    assert first.number == 0
    assert "optimization_history" in r.figures and "param_importances" in r.figures
    assert r.booster.current_iteration() == r.refit_rounds
    json.dumps(r.to_dict(figures=True))


def test_the_final_model_blends_the_best_trials(cancer):
    r = automl.train(cancer, "target", time_budget=None, n_trials=12, seed=0, folds=3)
    assert len(r.ensemble) >= 2, "greedy selection kept only the best trial"
    assert r.ensemble[0].trial == r.best_trial
    assert sum(m.weight for m in r.ensemble) == pytest.approx(1.0)
    # The best trial alone scores its CV value on the folds; the blend was kept
    # because it scores better there.
    assert r.oof_best_score == pytest.approx(r.cv_score)
    assert r.oof_score > r.oof_best_score
    assert r.refit_rounds == sum(m.rounds for m in r.ensemble) == r.booster.current_iteration()
    # One LightGBM model: SHAP contributions still add up to its raw score.
    x = model_contract.encode_frame(r.contract, cancer.head(20)).matrix
    contrib = r.booster.predict(x, pred_contrib=True)
    np.testing.assert_allclose(contrib.sum(axis=1), r.booster.predict(x, raw_score=True), atol=1e-9)
    assert r.to_dict()["ensemble"][0]["trial"] == r.best_trial

    single = automl.train(cancer, "target", time_budget=None, n_trials=12, seed=0, folds=3,
                          ensemble=False)
    assert single.best_trial == r.best_trial and single.oof_score is None
    assert [(m.trial, m.weight) for m in single.ensemble] == [(r.best_trial, 1.0)]
    assert single.training_config["ensemble"] is False


def test_blended_boosters_add_their_weighted_raw_scores_exactly():
    import lightgbm as lgb

    x, y = load_wine(return_X_y=True)
    common = {"objective": "multiclass", "num_class": 3, "verbosity": -1, "min_child_samples": 5}
    a = lgb.train(dict(common, num_leaves=7), lgb.Dataset(x, y), 15)
    b = lgb.train(dict(common, num_leaves=15, learning_rate=0.05), lgb.Dataset(x, y), 25)
    blended = automl.blend_boosters([(a.model_to_string(), 0.25), (b.model_to_string(), 0.75)])
    want = 0.25 * a.predict(x, raw_score=True) + 0.75 * b.predict(x, raw_score=True)
    np.testing.assert_allclose(blended.predict(x, raw_score=True), want, rtol=0, atol=1e-12)
    assert blended.current_iteration() == 40


def test_regression_training_beats_the_mean(diabetes):
    r = automl.train(diabetes, "target", time_budget=None, n_trials=4, seed=0, folds=3)
    assert (r.task, r.metric, r.higher_is_better) == ("regression", "rmse", False)
    assert r.holdout_score < 0.9 * r.baseline_score
    assert r.confusion_matrix is None
    assert len(r.residuals["actual"]) == r.splits.holdout_rows
    assert not r.splits.stratified


def test_multiclass_macro_f1_and_categories(penguin_result):
    r = penguin_result
    assert r.task == "multiclass" and r.classes == ("Adelie", "Chinstrap", "Gentoo")
    assert r.holdout_scores["macro_f1"] > 0.9
    assert r.holdout_scores["log_loss"] < r.baseline_score / 3
    kinds = {f.name: f.kind for f in r.contract.features}
    assert kinds["island"] == "category" and kinds["bill_length_mm"] == "numeric"
    wine = _frame(load_wine)
    f1 = automl.train(wine, "target", metric="macro_f1", time_budget=None, n_trials=2, folds=3)
    assert f1.metric == "macro_f1" and f1.higher_is_better
    assert f1.holdout_score > f1.baseline_score + 0.5


def test_same_seed_same_result(diabetes):
    a = automl.train(diabetes, "target", time_budget=None, n_trials=5, seed=7, folds=3)
    b = automl.train(diabetes, "target", time_budget=None, n_trials=5, seed=7, folds=3)
    assert a.best_params == b.best_params
    assert a.holdout_score == b.holdout_score
    assert [t.value for t in a.history] == [t.value for t in b.history]
    c = automl.train(diabetes, "target", time_budget=None, n_trials=5, seed=8, folds=3)
    assert c.splits == replace_seed(a.splits, 8)
    assert c.holdout_score != a.holdout_score


def replace_seed(splits: automl.Splits, seed: int) -> automl.Splits:
    from dataclasses import replace

    return replace(splits, seed=seed)


def test_time_budget_ends_the_search_and_keeps_room_for_the_refit(cancer):
    r = automl.train(cancer, "target", time_budget=4, seed=0, folds=5)
    assert r.stop_reason == "time_budget"
    assert r.budget_s == 4
    # A share of the budget was held back for the refit and scoring.
    assert r.search_deadline_s < r.budget_s
    # No trial started after the search ended, and the last one ran into the deadline.
    assert all(t.started_s <= r.search_s for t in r.history)
    last = r.history[-1]
    assert last.note == "time_budget" or last.finished_s >= r.search_deadline_s
    assert r.trials_completed >= 1 and r.booster is not None


def test_pruning_happens(diabetes):
    r = automl.train(diabetes, "target", time_budget=None, n_trials=14, seed=0, folds=3)
    pruned = [t for t in r.history if t.state == "PRUNED"]
    assert pruned, "the pruner never stopped a trial early"
    assert all(t.note is None for t in pruned)  # pruned by the pruner, not cut by time
    assert r.trials_pruned == len(pruned)


def test_stop_event_keeps_the_best_so_far(diabetes):
    stop = threading.Event()

    def on_progress(progress: automl.Progress) -> None:
        if progress.trials_done >= 2:
            stop.set()

    r = automl.train(diabetes, "target", time_budget=None, n_trials=50, seed=0, folds=3,
                     stop=stop, on_progress=on_progress)
    assert r.stop_reason == "stopped"
    # Trials already under way when the stop came are recorded too (as 'stopped').
    assert 2 <= len(r.history) < 50
    assert r.trials_completed >= 1 and r.holdout_score < r.baseline_score


def test_progress_reports_phases(diabetes):
    seen: list[automl.Progress] = []
    automl.train(diabetes, "target", time_budget=None, n_trials=2, folds=2, on_progress=seen.append)
    phases = [p.phase for p in seen]
    assert phases[0] == "search" and "refit" in phases and phases[-1] == "done"
    assert seen[-1].fraction == 1.0 and seen[-1].trials_done == 2
    assert seen[-1].best_value is not None and len(seen[-1].history) == 2


# --- study storage ---------------------------------------------------------------------------


def _ingest_frame(ws, analyst, frame: pd.DataFrame, name: str, tmp_path: Path):
    path = tmp_path / f"{name}.csv"
    frame.to_csv(path, index=False)
    return datasets.ingest(ws, path, name, actor=analyst)


def test_journal_storage_in_the_workspace_and_joining(ws, analyst, diabetes, tmp_path):
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    _ingest_frame(ws, analyst, diabetes, "diabetes", tmp_path)
    first = automl.train_dataset(ws, "diabetes", "target", actor=analyst, time_budget=None,
                                 n_trials=3, folds=2, study_name="diab")
    journal = ws.studies_dir / "diab.journal"
    assert journal.exists() and first.storage == f"journal:{journal}"
    assert first.dataset == {"name": "diabetes", "version": 1,
                             "content_sha256": datasets.get_version(ws, "diabetes").content_sha256}
    # A second run naming the study joins it: the cap counts the study's trials.
    second = automl.train_dataset(ws, "diabetes:1", "target", actor=analyst, time_budget=None,
                                  n_trials=5, folds=2, study_name="diab")
    study = optuna.load_study(study_name="diab",
                              storage=JournalStorage(JournalFileBackend(str(journal))))
    assert len(study.trials) == 5
    assert second.best_trial == study.best_trial.number
    with pytest.raises(InvalidInput, match="started with other settings"):
        automl.train_dataset(ws, "diabetes", "bmi", actor=analyst, time_budget=None, n_trials=6,
                             folds=2, study_name="diab")


def _postgres_binaries() -> tuple[Path, Path] | None:
    import glob
    import shutil

    candidates = []
    found = shutil.which("initdb"), shutil.which("pg_ctl")
    if all(found):
        candidates.append((Path(found[0]), Path(found[1])))
    for bindir in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        candidates.append((Path(bindir) / "initdb", Path(bindir) / "pg_ctl"))
    for initdb, pg_ctl in candidates:
        if initdb.exists() and pg_ctl.exists():
            return initdb, pg_ctl
    return None


def _skip_or_fail(reason: str) -> None:
    if os.environ.get("POND_REQUIRE_POSTGRES") == "1":
        pytest.fail(f"POND_REQUIRE_POSTGRES=1 but {reason}")
    pytest.skip(reason)


@pytest.fixture
def postgres_url():
    """A throwaway PostgreSQL cluster on 127.0.0.1 and a free port, removed afterwards."""
    import pwd
    import shutil
    import socket
    import tempfile

    binaries = _postgres_binaries()
    if binaries is None:
        _skip_or_fail("no PostgreSQL server is installed (initdb/pg_ctl not on PATH or in "
                      "/usr/lib/postgresql/*/bin); install Debian's postgresql")
    initdb, pg_ctl = binaries
    prefix: list[str] = []
    owner = None
    if os.geteuid() == 0:
        # PostgreSQL refuses to run as root: run it as its own account, or nobody.
        runuser = shutil.which("runuser")
        for name in ("postgres", "nobody"):
            try:
                owner = pwd.getpwnam(name)
                break
            except KeyError:
                continue
        if runuser is None or owner is None:
            _skip_or_fail("running as root without runuser or a non-root account to run "
                          "PostgreSQL as")
        prefix = [runuser, "-u", owner.pw_name, "--"]
    base = Path(tempfile.mkdtemp(prefix="pond-pg-"))
    base.chmod(0o755)
    data = base / "data"
    if owner is not None:
        os.chown(base, owner.pw_uid, owner.pw_gid)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    try:
        subprocess.run([*prefix, str(initdb), "-D", str(data), "-U", "pond", "--auth=trust",
                        "--no-sync", "-E", "UTF8"], check=True, capture_output=True, timeout=120)
        subprocess.run(
            [*prefix, str(pg_ctl), "-D", str(data), "-l", str(base / "log"), "-w", "-t", "60",
             "-o", f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off", "start"],
            check=True, capture_output=True, timeout=120,
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        log = (base / "log").read_text(errors="replace") if (base / "log").exists() else ""
        stderr = getattr(exc, "stderr", b"") or b""
        shutil.rmtree(base, ignore_errors=True)
        _skip_or_fail(f"could not start PostgreSQL: {stderr.decode(errors='replace')} {log}")
    try:
        # Trust authentication ignores the password; it is there to prove it is never recorded.
        yield f"postgresql://pond:s3cret@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*prefix, str(pg_ctl), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True, timeout=60, check=False)
        shutil.rmtree(base, ignore_errors=True)


def test_two_workers_share_one_postgresql_study(ws, analyst, cancer, tmp_path, postgres_url):
    import optuna

    from core import registry

    _ingest_frame(ws, analyst, cancer, "cancer", tmp_path)
    common = [sys.executable, "-m", "core", "train", "--dataset", "cancer", "--target", "target",
              "--study", "shared", "--storage", postgres_url, "--trials", "12",
              "--time-budget", "none", "--folds", "3", "--json", "--user", "ana"]
    env = dict(os.environ, POND_HOME=str(ws.home), OMP_NUM_THREADS="1")
    workers = [
        subprocess.Popen(common, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env),
        subprocess.Popen(common + ["--register", "cancer_model"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=env),
    ]
    outputs = [w.communicate(timeout=600) for w in workers]
    for w, (_, err) in zip(workers, outputs, strict=True):
        assert w.returncode == 0, err.decode()
    results = [json.loads(out) for out, _ in outputs]
    study = optuna.load_study(study_name="shared", storage=automl.open_storage(postgres_url)[0])
    finished = [t for t in study.trials if t.state.is_finished()]
    assert 12 <= len(finished) <= 13
    assert len({t.user_attrs["worker"] for t in finished}) == 2
    # Only the worker with --register registered, with the study in its lineage.
    assert "registered" not in results[0]
    version = registry.get_version(ws, "cancer_model", results[1]["registered"]["version"])
    assert version.status.value == "pending_review"
    assert version.lineage["optuna_study"]["name"] == "shared"
    assert "s3cret" not in json.dumps(version.lineage) and "***" in results[1]["storage"]


# --- the preprocessing contract ------------------------------------------------------------


def test_saved_model_predicts_like_the_trained_one(cancer_result, cancer, tmp_path):
    files = model_contract.save_model(cancer_result.booster, cancer_result.contract, tmp_path)
    assert set(files) == {"model.txt", "contract.json"}
    assert files["model.txt"].read_text().startswith("tree")
    loaded = model_contract.load_model(tmp_path)
    expected = cancer_result.booster.predict(
        model_contract.encode_frame(cancer_result.contract, cancer).matrix
    )
    got = loaded.predict(cancer)
    assert np.array_equal(got.probabilities[:, 1], expected)
    few = loaded.predict(json.loads(cancer.head(5).to_json(orient="records")))  # fast path
    assert np.array_equal(few.probabilities, got.probabilities[:5])
    assert got.classes == (0, 1) and set(got.values) <= {0, 1}


def test_frame_and_records_give_identical_predictions(penguin_result, penguins):
    booster, contract = penguin_result.booster, penguin_result.contract
    frame = penguins.drop(columns=["species"])
    records = json.loads(frame.to_json(orient="records"))
    by_frame = model_contract.predict(booster, contract, frame)
    by_records = model_contract.predict(booster, contract, records)
    assert np.array_equal(by_frame.probabilities, by_records.probabilities)
    assert by_frame.values == by_records.values
    # The REST server's single-row fast path gives the very same numbers.
    fast = model_contract.FastPredictor(booster, contract)
    one_by_one = [fast.predict([r]) for r in records[:40]]
    assert np.array_equal(np.vstack([p.probabilities for p in one_by_one]),
                          by_frame.probabilities[:40])
    assert fast.predict(records[:40]).values == by_frame.values[:40]
    assert frame.isna().any().any()  # missing values went through both paths
    assert model_contract.Contract.from_json(contract.to_json()) == contract


def test_missing_extra_and_unseen_columns(penguin_result, penguins):
    booster, contract = penguin_result.booster, penguin_result.contract
    row = penguins.drop(columns=["species"]).iloc[[0]]
    with pytest.raises(InvalidInput, match="no column 'island'"):
        model_contract.predict(booster, contract, row.drop(columns=["island"]))
    with pytest.raises(InvalidInput, match="record 0 has no field 'island'"):
        model_contract.predict(booster, contract, [{"bill_length_mm": 40.0}])
    extra = model_contract.predict(booster, contract, row.assign(note="hi"))
    assert extra.ignored_columns == ("note",)
    record = json.loads(row.to_json(orient="records"))[0]
    unseen = model_contract.predict(booster, contract, [dict(record, island="Atlantis")])
    as_missing = model_contract.predict(booster, contract, [dict(record, island=None)])
    assert unseen.unseen_categories == {"island": 1}
    assert np.array_equal(unseen.probabilities, as_missing.probabilities)
    with pytest.raises(InvalidInput, match="field 'bill_length_mm' of record 0 must be a number"):
        model_contract.predict(booster, contract, [dict(record, bill_length_mm="long")])
    with pytest.raises(InvalidInput, match="column 'bill_length_mm' must hold numbers"):
        model_contract.predict(booster, contract, row.assign(bill_length_mm="long"))


def test_unusual_column_names_work(cancer):
    frame = cancer.iloc[:, :6].copy()
    frame.columns = ["select", "mean radius", "größe", "from", 'a "quoted", name', "x:y"]
    frame["the target"] = cancer["target"].map({0: "malignant", 1: "benign"})
    r = automl.train(frame, "the target", time_budget=None, n_trials=2, folds=2)
    assert set(r.feature_importances) == set(frame.columns) - {"the target"}
    records = json.loads(frame.head(5).to_json(orient="records"))
    assert model_contract.predict(r.booster, r.contract, records).values == \
        model_contract.predict(r.booster, r.contract, frame.head(5)).values


# --- bad input ----------------------------------------------------------------------------


def _train(frame, target, **kw):
    kw.setdefault("time_budget", None)
    kw.setdefault("n_trials", 1)
    return automl.train(frame, target, **kw)


def test_bad_inputs_get_clear_messages(penguins, diabetes):
    with pytest.raises(InvalidInput, match="target column 'kind' is not in the dataset"):
        _train(penguins, "kind")
    with pytest.raises(InvalidInput, match="'year' is empty"):
        _train(penguins.assign(year=np.nan), "year")
    with pytest.raises(InvalidInput, match="single value"):
        _train(penguins.assign(one="x"), "one")
    with pytest.raises(InvalidInput, match="holds text.*cannot be regression"):
        _train(penguins, "species", task="regression")
    with pytest.raises(InvalidInput, match="3 distinct values, so the task cannot be binary"):
        _train(penguins, "species", task="binary")
    with pytest.raises(InvalidInput, match="the dataset has 5 rows"):
        _train(diabetes.head(5), "target")
    with pytest.raises(InvalidInput, match="'time_budget' parameter of train must be .* Got 0"):
        _train(penguins, "species", time_budget=0)
    with pytest.raises(InvalidInput, match="'n_trials' parameter of train must be an int >= 1"):
        _train(penguins, "species", n_trials=0)
    with pytest.raises(InvalidInput, match="needs a time budget or a trial count"):
        _train(penguins, "species", n_trials=None)
    with pytest.raises(InvalidInput, match="'metric' parameter must be one of rmse"):
        _train(diabetes, "target", metric="roc_auc")
    with pytest.raises(InvalidInput, match="cannot exclude 'nope'"):
        _train(penguins, "species", exclude=["nope"])
    with pytest.raises(InvalidInput, match="classes with fewer than 5 rows: 'rare'"):
        _train(penguins.assign(species=["rare"] * 3 + list(penguins.species[3:])), "species")
    with pytest.raises(InvalidInput, match="no column is left"):
        _train(penguins[["species", "island"]], "species", exclude=["island"])


def test_an_id_that_leaks_the_target_is_warned_about(cancer):
    leaky = cancer.sort_values("target").reset_index(drop=True)
    leaky["row_id"] = np.arange(len(leaky))
    r = _train(leaky, "target", folds=2)
    assert any("'row_id' predicts the target almost perfectly" in w for w in r.warnings)
    clean = _train(cancer.assign(row_id=np.arange(len(cancer))), "target", folds=2)
    assert not any("predicts the target" in w for w in clean.warnings)
    assert any("'row_id' has a different whole number on every row" in w for w in clean.warnings)


# --- CLI, registration and background jobs ----------------------------------------------------


def test_cli_train_json_and_register(ws, analyst, penguins, tmp_path, capsys):
    from core import registry

    _ingest_frame(ws, analyst, penguins, "penguins", tmp_path)
    code = cli_main(["train", "--dataset", "penguins", "--target", "species", "--trials", "2",
                     "--time-budget", "120", "--folds", "2", "--json", "--user", "ana",
                     "--register", "penguin_species", "--exclude", "year"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    assert out["task"] == "multiclass" and "year" not in out["features"]
    assert out["registered"]["status"] == "pending_review"
    version = registry.get_version(ws, "penguin_species", 1)
    assert {f.name for f in version.files} == {"model.txt", "contract.json"}
    lineage = version.lineage
    assert lineage["dataset"]["name"] == "penguins" and lineage["dataset"]["version"] == 1
    assert lineage["training_config"]["exclude"] == ["year"]
    assert lineage["ensemble"] == out["ensemble"] and out["ensemble"]
    assert "learning_rate" in lineage["search_space"]
    assert lineage["optuna_study"]["name"] == out["study_name"]
    assert version.metrics["holdout_log_loss"] == pytest.approx(out["holdout_scores"]["log_loss"])
    # The registered files predict like the trained model.
    loaded = model_contract.load_model(registry.version_files(ws, "penguin_species", 1))
    assert loaded.predict(penguins.head(3)).classes == ("Adelie", "Chinstrap", "Gentoo")


def test_cli_single_model_refits_the_best_trial_alone(ws, analyst, penguins, tmp_path, capsys):
    _ingest_frame(ws, analyst, penguins, "penguins", tmp_path)
    code = cli_main(["train", "--dataset", "penguins", "--target", "body_mass_g", "--trials", "6",
                     "--time-budget", "none", "--folds", "2", "--single-model", "--json",
                     "--user", "ana"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    assert out["training_config"]["ensemble"] is False and out["oof_score"] is None
    assert out["ensemble"] == [{"trial": out["best_trial"], "weight": 1.0,
                                "rounds": out["refit_rounds"]}]


def test_cli_bad_input_registers_nothing(ws, analyst, penguins, tmp_path, capsys):
    from core import registry

    _ingest_frame(ws, analyst, penguins, "penguins", tmp_path)
    code = cli_main(["train", "--dataset", "penguins", "--target", "species", "--time-budget",
                     "0", "--user", "ana", "--register", "m"])
    assert code == 1
    assert "'time_budget' parameter of train" in capsys.readouterr().err
    code = cli_main(["train", "--dataset", "penguins", "--target", "species", "--task",
                     "regression", "--trials", "1", "--user", "ana", "--register", "m"])
    assert code == 1
    with pytest.raises(NotFound):
        registry.get_version(ws, "m", 1)
    code = cli_main(["train", "--dataset", "penguins", "--target", "species", "--trials", "1",
                     "--user", "rita"])
    assert code == 1 and "may not train" in capsys.readouterr().err


def test_background_jobs_run_side_by_side(ws, analyst, diabetes, tmp_path):
    _ingest_frame(ws, analyst, diabetes, "diabetes", tmp_path)
    jobs = [
        training_jobs.start_training(ws, actor=analyst, dataset="diabetes", target="target",
                                     time_budget=None, n_trials=3, seed=seed)
        for seed in (1, 2)
    ]
    assert len(set(jobs)) == 2
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        states = [training_jobs.read_progress(ws, j) for j in jobs]
        if all(s.finished for s in states):
            break
        time.sleep(0.5)
    for s in states:
        assert s.state == "done", (s.error, s.job_id)
        assert s.result["trials_completed"] + s.result["trials_pruned"] == 3
        assert s.result["study_name"] == f"job-{s.job_id}"
        assert s.progress["phase"] == "done"
    assert states[0].result["holdout_score"] != states[1].result["holdout_score"]
    listed = training_jobs.list_jobs(ws, actor="ana")
    assert {j.job_id for j in listed} == set(jobs)
    with pytest.raises(PermissionDenied):
        training_jobs.register_job(ws, jobs[0], "diab", actor=__import__("core").auth.get_user(
            ws, "rita"))
    version = training_jobs.register_job(ws, jobs[0], "diab", actor=analyst)
    assert training_jobs.read_progress(ws, jobs[0]).registered["version"] == version.version


def test_a_stopped_job_keeps_its_best_model(ws, analyst, diabetes, tmp_path):
    _ingest_frame(ws, analyst, diabetes, "diabetes", tmp_path)
    job = training_jobs.start_training(ws, actor=analyst, dataset="diabetes", target="target",
                                       time_budget=600, seed=0)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        status = training_jobs.read_progress(ws, job)
        if (status.progress or {}).get("trials_done", 0) >= 1 or status.finished:
            break
        time.sleep(0.3)
    training_jobs.request_stop(ws, job)
    while time.monotonic() < deadline and not status.finished:
        time.sleep(0.3)
        status = training_jobs.read_progress(ws, job)
    assert status.state == "done", status.error
    assert status.result["stop_reason"] == "stopped"
    assert status.result["holdout_score"] < status.result["baseline_score"]


def test_pages_and_light_core_modules_do_not_import_lightgbm_or_optuna():
    code = (
        "import sys; import core.automl, core.training_jobs, core.automl_charts, "
        "core.model_contract, core.metrics; "
        "heavy = [m for m in ('lightgbm', 'optuna', 'sklearn') if m in sys.modules]; "
        "print(heavy); sys.exit(1 if heavy else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    page = (ROOT / "pages" / "train.py").read_text()
    assert "import lightgbm" not in page and "import optuna" not in page
