"""AutoML for tables: an Optuna study over LightGBM, its best trials blended, scored on a holdout.

This module owns the whole training recipe. `prepare` checks the frame and
turns it into a numeric matrix under a preprocessing contract
(`core.model_contract`); `train` splits off an untouched, stratified holdout,
runs a seeded multivariate-TPE study whose trials are k-fold cross-validated
LightGBM fits with native early stopping and step-wise pruning, starting from
LightGBM's defaults and a few known-good configurations so a short budget is
never worse than the defaults. Greedy ensemble selection on the trials'
validation-fold predictions then picks a weighted blend of the best trials
(only where it beats the best trial alone there); each member is refit on all
non-holdout rows with its chosen number of rounds, the members are merged into
one LightGBM model, and that model is scored once on the holdout. The time
budget covers the refits: the search stops early enough to leave room for
them, a member that no longer fits is left out, and a refit stops adding
trees at the deadline.

Distributed trials: every worker that names the same study (`study_name`) on a
shared Optuna storage (PostgreSQL through Optuna's RDB storage, or one journal
file on one machine) runs trials until *its own* budget, trial cap or stop
request ends, where the trial cap counts the study's finished trials across
workers. Each worker then refits the study's best trial so far (blended with
its own best trials when the best is one of its own); the splits are
derived from the seed and the data, which every joining worker must share (a
study records its settings and refuses a worker whose settings differ). Only a
worker asked to register (`pond train --register`) registers its model, so
start that one last or give it the longest budget.

`lightgbm`, `optuna` and scikit-learn are imported inside the functions that
need them: importing this module is cheap for the app's pages.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import secrets
import socket
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core import auth
from core import metrics as metric_registry
from core.errors import InvalidInput, NotFound, PondError
from core.metrics import BINARY, MULTICLASS, REGRESSION, MetricSpec
from core.model_contract import (
    CATEGORY,
    DATETIME,
    NUMERIC,
    Contract,
    Feature,
    encode_frame,
    json_label,
    labels_in_order,
    level_key,
    raw_output,
    save_model,
)
from core.store import Workspace

# --- limits and defaults ---------------------------------------------------------

MIN_ROWS = 20
MIN_CLASS_ROWS = 5
MAX_CLASSES = 100
# Levels past this many (the rarest) are treated as missing: LightGBM's
# categorical splits get slow and overfit with thousands of levels.
MAX_LEVELS = 1000
HOLDOUT_FRACTION = 0.2
MAX_ROUNDS = 5000
# Rounds between reports to the pruner. A shared database answers each pruning
# check by reading every trial of the study (tens of milliseconds), so report
# less often there.
REPORT_INTERVAL = 5
REPORT_INTERVAL_REMOTE = 25
RESIDUAL_SAMPLE = 2000
TASK_CHOICES = ("auto", BINARY, MULTICLASS, REGRESSION)
_STUDY_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}$")

ProgressCallback = Callable[["Progress"], None]
StopSignal = threading.Event | Callable[[], bool]


# --- task detection ----------------------------------------------------------------


@dataclass(frozen=True)
class TaskGuess:
    """What the target column looks like: the task Pond would choose and why."""

    task: str
    reason: str
    distinct: int


def _is_text(series: pd.Series) -> bool:
    return not (
        pd.api.types.is_numeric_dtype(series.dtype)
        or pd.api.types.is_bool_dtype(series.dtype)
        or pd.api.types.is_datetime64_any_dtype(series.dtype)
    )


def detect_task(target: pd.Series) -> TaskGuess:
    """The task a target column implies.

    Text, booleans and categories are classification; numbers with two
    distinct values are binary; whole numbers with few distinct values
    (at most 20, and at most 5% of the rows but at least 3) are multiclass;
    other numbers are regression.

    Raises:
        InvalidInput: the column has no values, or only one distinct value.
    """
    name = target.name
    values = target.dropna()
    if values.empty:
        raise InvalidInput(
            f"the target column {name!r} is empty (every value is null); "
            "choose a column that holds the value to predict"
        )
    distinct = int(values.astype(object).map(level_key).nunique())
    if distinct < 2:
        only = json_label(values.iloc[0])
        raise InvalidInput(
            f"the target column {name!r} has a single value ({only!r}) in every row, so "
            "there is nothing to learn; choose another target or add rows of other classes"
        )
    if _is_text(values) or pd.api.types.is_bool_dtype(values.dtype):
        task = BINARY if distinct == 2 else MULTICLASS
        kind = "boolean" if pd.api.types.is_bool_dtype(values.dtype) else "text"
        return TaskGuess(task, f"{kind} target with {distinct} distinct values", distinct)
    if pd.api.types.is_datetime64_any_dtype(values.dtype):
        raise InvalidInput(
            f"the target column {name!r} holds dates; predict a number or a class instead"
        )
    if distinct == 2:
        return TaskGuess(BINARY, "numeric target with 2 distinct values", distinct)
    numbers = values.to_numpy(dtype=np.float64)
    integral = bool(np.all(np.isfinite(numbers)) and np.all(numbers == np.round(numbers)))
    few = max(3, int(0.05 * len(values)))
    if integral and distinct <= min(20, few):
        return TaskGuess(
            MULTICLASS, f"whole-number target with only {distinct} distinct values", distinct
        )
    return TaskGuess(REGRESSION, f"numeric target with {distinct} distinct values", distinct)


def detect_task_in_dataset(ws: Workspace, dataset: Any, target: str) -> TaskGuess:
    """`detect_task` on one column of a dataset version (reads only that column).

    Raises:
        InvalidInput: no such column, or one that cannot be a target.
    """
    from core import datasets

    if target not in dataset.column_names:
        raise InvalidInput(_no_target_message(target, dataset.column_names))
    frame = datasets.load_frame(ws, dataset, [target])
    return detect_task(frame[target])


def _no_target_message(target: str, columns: Sequence[str]) -> str:
    listed = ", ".join(repr(c) for c in list(columns)[:30])
    more = " …" if len(columns) > 30 else ""
    return f"the target column {target!r} is not in the dataset; its columns are {listed}{more}"


# --- preparing the data --------------------------------------------------------------


@dataclass(frozen=True)
class PreparedData:
    """The frame turned into what LightGBM trains on, plus the contract that did it."""

    matrix: np.ndarray
    y: np.ndarray
    contract: Contract
    task: str
    task_reason: str
    metric: MetricSpec
    warnings: tuple[str, ...]
    lightgbm_names: tuple[str, ...]
    dropped_rows: int

    @property
    def n_rows(self) -> int:
        return int(self.matrix.shape[0])

    @property
    def n_classes(self) -> int:
        return len(self.contract.classes or ())


def _feature_kind(series: pd.Series) -> str | None:
    dtype = series.dtype
    if pd.api.types.is_bool_dtype(dtype) or pd.api.types.is_numeric_dtype(dtype):
        return NUMERIC
    if pd.api.types.is_datetime64_any_dtype(dtype):
        return DATETIME
    sample = series.dropna().head(200)
    if len(sample) and all(isinstance(v, datetime | pd.Timestamp) for v in sample):
        return DATETIME
    if len(sample) and all(isinstance(v, list | dict | np.ndarray | tuple) for v in sample):
        return None
    return CATEGORY


def _lightgbm_name(index: int, name: str) -> str:
    # LightGBM refuses JSON-special characters in feature names; the contract
    # keeps the real name, the model file gets a safe one that still hints at it.
    slug = re.sub(r"[^A-Za-z0-9_]+", "_", name).strip("_")[:40]
    return f"f{index}_{slug}" if slug else f"f{index}"


def _levels(series: pd.Series) -> tuple[tuple[str, ...], int]:
    """Levels by frequency (most common first), and how many rare ones were cut."""
    counts = series.dropna().astype(object).map(level_key).value_counts()
    ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    kept = tuple(level for level, _ in ordered[:MAX_LEVELS])
    return kept, max(0, len(ordered) - MAX_LEVELS)


def _leak_warnings(
    matrix: np.ndarray, y: np.ndarray, features: Sequence[Feature], task: str, seed: int
) -> list[str]:
    """Warn about number columns that alone predict the target almost perfectly.

    Such a column is usually an ID or timestamp that the rows were sorted by, or
    a value computed from the target; it would score well here and fail later.
    """
    from scipy.stats import spearmanr

    rng = np.random.default_rng(seed)
    rows = np.arange(len(y))
    if len(rows) > 20_000:
        rows = np.sort(rng.choice(rows, 20_000, replace=False))
    found: list[str] = []
    for j, feature in enumerate(features):
        if feature.kind == CATEGORY:
            continue
        column = matrix[rows, j]
        present = ~np.isnan(column)
        values, target = column[present], y[rows][present]
        if len(values) < MIN_ROWS or len(np.unique(values)) < 10:
            continue
        if task == REGRESSION:
            with np.errstate(all="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                rho = spearmanr(values, target).statistic
            leaks = bool(np.isfinite(rho) and abs(rho) >= 0.995)
        else:
            # Neighbours in the column's order share a class far more often than chance.
            order = np.lexsort((rng.random(len(values)), values))
            ordered = target[order]
            agreement = float(np.mean(ordered[1:] == ordered[:-1]))
            shares = np.bincount(target.astype(np.int64)) / len(target)
            chance = float(np.sum(shares**2))
            leaks = chance < 1.0 and (agreement - chance) / (1.0 - chance) >= 0.95
        if leaks:
            found.append(
                f"column {feature.name!r} predicts the target almost perfectly on its own; it "
                "may leak the answer (an ID the rows were sorted by, or a value computed from "
                f"the target). Exclude it unless it will really be known at prediction time."
            )
        elif (
            feature.kind == NUMERIC
            and len(np.unique(values)) == len(values)
            and np.all(values == np.round(values))
        ):
            found.append(
                f"column {feature.name!r} has a different whole number on every row, like a "
                "row ID; IDs rarely generalise, so consider excluding it"
            )
    return found


def prepare(
    frame: pd.DataFrame,
    target: str,
    *,
    task: str = "auto",
    metric: str | None = None,
    exclude: Sequence[str] = (),
    seed: int = 0,
) -> PreparedData:
    """Check a frame and encode it for training.

    Args:
        frame: the training data, one row per example.
        target: the column to predict.
        task: "auto" (detect), "binary", "multiclass" or "regression".
        metric: a metric name from `core.metrics` for the task (None: its default).
        exclude: columns not to use as features.
        seed: seeds the sampling of the leak check.

    Returns:
        The feature matrix, encoded labels, contract, chosen task and metric, and
        warnings (dropped columns, rows without a target, suspected leaks).

    Raises:
        InvalidInput: with a message naming the input and what to do, for a
            missing or empty target, a single-class target, a text target for
            regression, too few rows or too few rows of a class, unknown
            excluded columns, or no usable feature.
    """
    if not isinstance(frame, pd.DataFrame):
        raise InvalidInput("The 'frame' parameter of train must be a pandas DataFrame.")
    columns = [str(c) for c in frame.columns]
    if target not in columns:
        raise InvalidInput(_no_target_message(target, columns))
    if task not in TASK_CHOICES:
        raise InvalidInput(
            f"The 'task' parameter of train must be one of {', '.join(TASK_CHOICES)}. "
            f"Got {task!r} instead."
        )
    unknown = [c for c in exclude if c not in columns]
    if unknown:
        raise InvalidInput(
            f"cannot exclude {', '.join(repr(c) for c in unknown)}: no such column; "
            f"the columns are {', '.join(repr(c) for c in columns)}"
        )
    if target in exclude:
        raise InvalidInput(f"the target column {target!r} cannot also be excluded")

    notes: list[str] = []
    guess = detect_task(frame[target])
    labelled = frame[frame[target].notna()]
    dropped = len(frame) - len(labelled)
    if dropped:
        notes.append(f"{dropped} rows have no value in the target {target!r} and were left out")
    chosen = guess.task if task == "auto" else task
    reason = guess.reason if task == "auto" else f"chosen by you ({guess.reason})"
    y_raw = labelled[target]
    if chosen == REGRESSION and (_is_text(y_raw) or pd.api.types.is_bool_dtype(y_raw.dtype)):
        raise InvalidInput(
            f"the target column {target!r} holds text or true/false values, so the task "
            f"cannot be regression; choose binary or multiclass (or auto, which detects "
            f"{guess.task})"
        )
    if chosen == BINARY and guess.distinct != 2:
        raise InvalidInput(
            f"the target column {target!r} has {guess.distinct} distinct values, so the task "
            f"cannot be binary; choose multiclass (or auto, which detects {guess.task})"
        )
    if chosen == MULTICLASS and guess.distinct > MAX_CLASSES:
        raise InvalidInput(
            f"the target column {target!r} has {guess.distinct} distinct values, more than "
            f"the {MAX_CLASSES} classes Pond handles; choose regression if it is a number"
        )
    spec = metric_registry.get_metric(metric, chosen)

    if len(labelled) < MIN_ROWS:
        raise InvalidInput(
            f"the dataset has {len(labelled)} rows with a target value; AutoML needs at "
            f"least {MIN_ROWS} to train, validate and keep a holdout. Add rows and try again."
        )

    classes: tuple[Any, ...] | None = None
    if chosen == REGRESSION:
        y = pd.to_numeric(y_raw, errors="raise").to_numpy(dtype=np.float64)
        if not np.all(np.isfinite(y)):
            raise InvalidInput(
                f"the target column {target!r} holds infinite values; fix or drop those rows"
            )
    else:
        keys = y_raw.astype(object).map(json_label)
        classes = labels_in_order(keys)
        index = {label: i for i, label in enumerate(classes)}
        y = keys.map(index).to_numpy(dtype=np.int64)
        counts = np.bincount(y, minlength=len(classes))
        rare = [(classes[i], int(c)) for i, c in enumerate(counts) if c < MIN_CLASS_ROWS]
        if rare:
            listed = ", ".join(f"{label!r} ({n} rows)" for label, n in rare[:5])
            raise InvalidInput(
                f"the target {target!r} has classes with fewer than {MIN_CLASS_ROWS} rows: "
                f"{listed}; add rows of those classes, merge them into others, or drop them"
            )

    features: list[Feature] = []
    for name in columns:
        if name == target or name in exclude:
            continue
        series = labelled[name]
        kind = _feature_kind(series)
        if kind is None:
            notes.append(f"column {name!r} holds lists or objects and was left out")
            continue
        if series.isna().all():
            notes.append(f"column {name!r} is empty in every row and was left out")
            continue
        levels: tuple[str, ...] | None = None
        if kind == CATEGORY:
            levels, cut = _levels(series)
            if len(labelled) >= 50 and len(levels) >= 0.95 * series.notna().sum():
                notes.append(
                    f"column {name!r} has a different text value on almost every row (like a "
                    "name or an ID), so it cannot generalise and was left out"
                )
                continue
            if cut:
                notes.append(
                    f"column {name!r} has {len(levels) + cut} categories; the {cut} rarest "
                    "are treated as missing"
                )
        features.append(Feature(name=name, kind=kind, dtype=str(series.dtype), levels=levels))
    if not features:
        raise InvalidInput(
            f"no column is left to learn from once the target {target!r} and excluded columns "
            "are set aside; keep at least one feature column"
        )
    contract = Contract(features=tuple(features), target=target, task=chosen, classes=classes)
    matrix = encode_frame(contract, labelled).matrix
    notes.extend(_leak_warnings(matrix, y, features, chosen, seed))
    return PreparedData(
        matrix=matrix,
        y=y,
        contract=contract,
        task=chosen,
        task_reason=reason,
        metric=spec,
        warnings=tuple(notes),
        lightgbm_names=tuple(_lightgbm_name(i, f.name) for i, f in enumerate(features)),
        dropped_rows=dropped,
    )


# --- splits ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Splits:
    """How the rows were used.

    `train_rows`/`valid_rows` are per fold; `dev_rows` (train + valid) is what
    the final model is refit on; `holdout_rows` are only ever used once, to
    score that final model.
    """

    train_rows: int
    valid_rows: int
    holdout_rows: int
    folds: int
    stratified: bool
    seed: int

    @property
    def dev_rows(self) -> int:
        return self.train_rows + self.valid_rows

    def to_dict(self) -> dict[str, Any]:
        return {
            "train_rows": self.train_rows,
            "valid_rows": self.valid_rows,
            "holdout_rows": self.holdout_rows,
            "dev_rows": self.dev_rows,
            "folds": self.folds,
            "stratified": self.stratified,
            "seed": self.seed,
        }


def default_folds(dev_rows: int, features: int = 1, classes: int = 1) -> int:
    """Cross-validation folds per trial: more where data is scarce and fits are cheap.

    The cost of a fit grows with rows x features x trees per round (one per
    class for multiclass); 5 folds while that is small, 3 for medium data, and
    one 80/20 train/validation split for large data, where a single
    validation set is already reliable and CV would leave time for few trials.
    """
    cells = dev_rows * max(1, features) * max(1, classes)
    if dev_rows <= 5_000 and cells <= 300_000:
        return 5
    if dev_rows <= 30_000 and cells <= 3_000_000:
        return 3
    return 1


@dataclass(frozen=True)
class _SplitPlan:
    x_dev: np.ndarray
    y_dev: np.ndarray
    x_holdout: np.ndarray
    y_holdout: np.ndarray
    folds: list[tuple[np.ndarray, np.ndarray]]
    splits: Splits


def _holdout_arrays(data: PreparedData, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """A separate holdout frame encoded like the training data."""
    target = data.contract.target
    if target not in frame.columns:
        raise InvalidInput(f"the holdout frame has no target column {target!r}")
    labelled = frame[frame[target].notna()]
    if labelled.empty:
        raise InvalidInput(f"the holdout frame has no rows with a value in {target!r}")
    matrix = encode_frame(data.contract, labelled).matrix
    if data.task == REGRESSION:
        return matrix, pd.to_numeric(labelled[target], errors="raise").to_numpy(np.float64)
    index = {label: i for i, label in enumerate(data.contract.classes or ())}
    keys = labelled[target].astype(object).map(json_label)
    unknown = sorted({str(k) for k in keys if k not in index})
    if unknown:
        raise InvalidInput(
            f"the holdout frame has classes the training data lacks: {', '.join(unknown[:5])}"
        )
    return matrix, keys.map(index).to_numpy(dtype=np.int64)


def _split(
    data: PreparedData, seed: int, folds: int | None, holdout: pd.DataFrame | None = None
) -> _SplitPlan:
    from sklearn.model_selection import KFold, StratifiedKFold, train_test_split

    stratify = data.task != REGRESSION
    if holdout is None:
        rows = np.arange(data.n_rows)
        dev, kept = train_test_split(
            rows,
            test_size=HOLDOUT_FRACTION,
            random_state=seed,
            stratify=data.y if stratify else None,
        )
        dev, kept = np.sort(dev), np.sort(kept)
        x_dev, y_dev = data.matrix[dev], data.y[dev]
        x_hold, y_hold = data.matrix[kept], data.y[kept]
    else:
        x_dev, y_dev = data.matrix, data.y
        x_hold, y_hold = _holdout_arrays(data, holdout)
    classes = data.n_classes if data.task == MULTICLASS else 1
    k = default_folds(len(y_dev), x_dev.shape[1], classes) if folds is None else folds
    if stratify:
        k = max(1, min(k, int(np.bincount(y_dev).min())))
    positions = np.arange(len(y_dev))
    plan: list[tuple[np.ndarray, np.ndarray]]
    if k == 1:
        train_pos, valid_pos = train_test_split(
            positions, test_size=0.2, random_state=seed, stratify=y_dev if stratify else None
        )
        plan = [(np.sort(train_pos), np.sort(valid_pos))]
    else:
        splitter = (StratifiedKFold if stratify else KFold)(k, shuffle=True, random_state=seed)
        plan = [(tr, va) for tr, va in splitter.split(positions, y_dev if stratify else None)]
    valid_rows = int(round(np.mean([len(va) for _, va in plan])))
    splits = Splits(
        train_rows=len(y_dev) - valid_rows,
        valid_rows=valid_rows,
        holdout_rows=len(y_hold),
        folds=k,
        stratified=stratify,
        seed=seed,
    )
    return _SplitPlan(x_dev, y_dev, x_hold, y_hold, plan, splits)


# --- search space ---------------------------------------------------------------------


def search_space(data: PreparedData, splits: Splits) -> dict[str, dict[str, Any]]:
    """The hyperparameters the study tunes, as plain data (recorded in lineage).

    Ranges follow LightGBM's tuning guide; `min_child_samples` is capped by the
    fold size so small data can still grow trees.
    """
    min_child_high = int(np.clip(splits.train_rows // 8, 5, 200))
    space: dict[str, dict[str, Any]] = {
        "learning_rate": {"type": "float", "low": 0.01, "high": 0.3, "log": True},
        "num_leaves": {"type": "int", "low": 4, "high": 256, "log": True},
        "min_child_samples": {"type": "int", "low": 2, "high": min_child_high, "log": True},
        "feature_fraction": {"type": "float", "low": 0.3, "high": 1.0},
        "bagging_fraction": {"type": "float", "low": 0.5, "high": 1.0},
        "bagging_freq": {"type": "int", "low": 0, "high": 5},
        "lambda_l1": {"type": "float", "low": 1e-8, "high": 10.0, "log": True},
        "lambda_l2": {"type": "float", "low": 1e-8, "high": 10.0, "log": True},
        "max_bin": {"type": "categorical", "choices": [63, 127, 255]},
        "extra_trees": {"type": "categorical", "choices": [False, True]},
    }
    if data.contract.categorical_indices:
        space["cat_smooth"] = {"type": "float", "low": 1.0, "high": 100.0, "log": True}
        space["cat_l2"] = {"type": "float", "low": 1.0, "high": 100.0, "log": True}
    if data.task != REGRESSION:
        counts = np.bincount(data.y)
        if counts.min() / counts.max() < 0.5:
            space["class_weight"] = {"type": "categorical", "choices": ["none", "balanced"]}
    return space


# LightGBM's defaults first, then configurations that do well across many
# tabular benchmarks (smaller steps with some bagging and L2; extremely
# randomised trees; a larger tree for bigger data; a small regularised one).
_STARTING_POINTS: tuple[dict[str, Any], ...] = (
    {
        "learning_rate": 0.1, "num_leaves": 31, "min_child_samples": 20,
        "feature_fraction": 1.0, "bagging_fraction": 1.0, "bagging_freq": 0,
        "lambda_l1": 1e-8, "lambda_l2": 1e-8, "max_bin": 255, "extra_trees": False,
        "cat_smooth": 10.0, "cat_l2": 10.0, "class_weight": "none",
    },
    {
        "learning_rate": 0.05, "num_leaves": 15, "min_child_samples": 10,
        "feature_fraction": 0.8, "bagging_fraction": 0.8, "bagging_freq": 1,
        "lambda_l1": 1e-8, "lambda_l2": 1.0, "max_bin": 255, "extra_trees": False,
        "cat_smooth": 10.0, "cat_l2": 10.0, "class_weight": "none",
    },
    {
        "learning_rate": 0.05, "num_leaves": 31, "min_child_samples": 20,
        "feature_fraction": 0.9, "bagging_fraction": 1.0, "bagging_freq": 0,
        "lambda_l1": 1e-8, "lambda_l2": 1e-8, "max_bin": 255, "extra_trees": True,
        "cat_smooth": 10.0, "cat_l2": 10.0, "class_weight": "none",
    },
    {
        "learning_rate": 0.03, "num_leaves": 128, "min_child_samples": 3,
        "feature_fraction": 0.9, "bagging_fraction": 1.0, "bagging_freq": 0,
        "lambda_l1": 1e-8, "lambda_l2": 1e-8, "max_bin": 255, "extra_trees": False,
        "cat_smooth": 10.0, "cat_l2": 10.0, "class_weight": "none",
    },
    {
        "learning_rate": 0.03, "num_leaves": 8, "min_child_samples": 30,
        "feature_fraction": 0.6, "bagging_fraction": 0.7, "bagging_freq": 1,
        "lambda_l1": 0.1, "lambda_l2": 3.0, "max_bin": 127, "extra_trees": False,
        "cat_smooth": 20.0, "cat_l2": 10.0, "class_weight": "balanced",
    },
)


def _starting_points(space: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    points = []
    for raw in _STARTING_POINTS:
        point: dict[str, Any] = {}
        for name, spec in space.items():
            value = raw[name]
            if spec["type"] != "categorical":
                value = type(spec["low"])(np.clip(value, spec["low"], spec["high"]))
            point[name] = value
        if point not in points:
            points.append(point)
    return points


def _suggest(trial: Any, space: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for name, spec in space.items():
        if spec["type"] == "float":
            params[name] = trial.suggest_float(name, spec["low"], spec["high"], log=spec.get("log", False))
        elif spec["type"] == "int":
            params[name] = trial.suggest_int(name, spec["low"], spec["high"], log=spec.get("log", False))
        else:
            params[name] = trial.suggest_categorical(name, spec["choices"])
    return params


def _stopping_rounds(learning_rate: float) -> int:
    # Smaller steps improve slowly: give them more patience before stopping.
    return int(np.clip(3.0 / learning_rate, 20, 100))


def _min_delta(es_metric: str, y: np.ndarray) -> float:
    # Log loss and L2 keep creeping down on separable data for thousands of
    # rounds; count only improvements that matter.
    if es_metric.endswith("logloss"):
        return 1e-4
    if es_metric in ("rmse", "l1"):
        return 1e-5 * float(np.std(y))
    if es_metric == "l2":
        return 1e-5 * float(np.var(y))
    return 0.0


def _early_stopping_metric(spec: MetricSpec, task: str) -> str:
    """What early stopping watches: log loss for classification, the metric's own loss for regression.

    Stopping where a ranking or counting metric (ROC AUC, F1) peaks on the very
    fold that then scores the trial picks that fold's lucky round, which flatters
    the cross-validated score and favours configurations that got lucky; log loss
    is smooth and moves with them.
    """
    if task == REGRESSION and task in spec.lightgbm:
        return spec.lightgbm[task]
    return {BINARY: "binary_logloss", MULTICLASS: "multi_logloss", REGRESSION: "l2"}[task]


def _lightgbm_params(
    tuned: Mapping[str, Any], data: PreparedData, seed: int, n_jobs: int | None
) -> dict[str, Any]:
    params = {k: v for k, v in tuned.items() if k != "class_weight"}
    params.update(
        objective={BINARY: "binary", MULTICLASS: "multiclass", REGRESSION: "regression"}[data.task],
        metric=_early_stopping_metric(data.metric, data.task),
        verbosity=-1,
        seed=seed,
        deterministic=True,
        force_col_wise=True,
        feature_pre_filter=False,
        num_threads=n_jobs or 0,
    )
    if data.task == MULTICLASS:
        params["num_class"] = data.n_classes
    return params


def _balanced_weights(y: np.ndarray) -> np.ndarray:
    counts = np.bincount(y)
    return (len(y) / (len(counts) * counts))[y]


# --- progress, history, result ------------------------------------------------------


@dataclass(frozen=True)
class TrialRecord:
    """One finished trial as the history shows it (times in seconds since start)."""

    number: int
    state: str
    value: float | None
    best_value: float | None
    started_s: float
    finished_s: float
    worker: str | None = None
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "state": self.state,
            "value": self.value,
            "best_value": self.best_value,
            "started_s": round(self.started_s, 3),
            "finished_s": round(self.finished_s, 3),
            "worker": self.worker,
            "note": self.note,
        }


@dataclass(frozen=True)
class Progress:
    """A snapshot of a running training, for progress bars and live charts.

    `phase` is "search", "refit" or "done"; `trials_target` is the trial cap
    (None without one); `budget_s` is the time budget (None without one).
    """

    phase: str
    trials_done: int
    trials_pruned: int
    trials_target: int | None
    best_value: float | None
    metric: str
    higher_is_better: bool
    elapsed_s: float
    budget_s: float | None
    history: tuple[TrialRecord, ...]
    message: str = ""

    @property
    def fraction(self) -> float:
        """How far along, 0..1, by time or by trials, whichever is further."""
        parts = [0.0]
        if self.budget_s:
            parts.append(self.elapsed_s / self.budget_s)
        if self.trials_target:
            parts.append(self.trials_done / self.trials_target)
        return 1.0 if self.phase == "done" else float(min(0.99, max(parts)))

    def to_dict(self) -> dict[str, Any]:
        return {
            "phase": self.phase,
            "trials_done": self.trials_done,
            "trials_pruned": self.trials_pruned,
            "trials_target": self.trials_target,
            "best_value": self.best_value,
            "metric": self.metric,
            "higher_is_better": self.higher_is_better,
            "elapsed_s": round(self.elapsed_s, 3),
            "budget_s": self.budget_s,
            "fraction": round(self.fraction, 4),
            "history": [t.to_dict() for t in self.history],
            "message": self.message,
        }


@dataclass(frozen=True)
class EnsembleMember:
    """One trial in the final blend: its weight and the rounds of its refit."""

    trial: int
    weight: float
    rounds: int

    def to_dict(self) -> dict[str, Any]:
        return {"trial": self.trial, "weight": round(self.weight, 6), "rounds": self.rounds}


@dataclass(frozen=True)
class TrainResult:
    """Everything a training produced.

    Scores are in the metric's own direction (`higher_is_better`). The holdout
    was never seen by the search or the refit; `cv_score` is the best trial's
    mean over its validation folds. `booster` is the refit LightGBM model and
    `contract` its preprocessing contract (see `core.model_contract`).
    """

    target: str
    task: str
    task_reason: str
    metric: str
    metric_label: str
    higher_is_better: bool
    holdout_score: float
    holdout_scores: dict[str, float]
    baseline_score: float
    cv_score: float
    cv_std: float
    best_params: dict[str, Any]
    lightgbm_params: dict[str, Any]
    best_trial: int
    best_iteration: int
    refit_rounds: int
    param_importances: dict[str, float]
    feature_importances: dict[str, float]
    classes: tuple[Any, ...] | None
    confusion_matrix: tuple[tuple[int, ...], ...] | None
    residuals: dict[str, list[float]] | None
    history: tuple[TrialRecord, ...]
    splits: Splits
    trials_completed: int
    trials_pruned: int
    trials_failed: int
    stop_reason: str
    budget_s: float | None
    search_deadline_s: float | None
    search_s: float
    refit_s: float
    elapsed_s: float
    refit_cut: bool
    warnings: tuple[str, ...]
    study_name: str
    storage: str
    seed: int
    training_config: dict[str, Any]
    search_space: dict[str, Any]
    features: tuple[str, ...]
    started_at: datetime
    ensemble: tuple[EnsembleMember, ...] = ()
    oof_score: float | None = None
    oof_best_score: float | None = None
    dataset: dict[str, Any] | None = None
    figures: dict[str, str] = field(default_factory=dict, repr=False, compare=False)
    contract: Contract | None = field(default=None, repr=False, compare=False)
    booster: Any = field(default=None, repr=False, compare=False)

    def metrics_for_registry(self) -> dict[str, float]:
        """The scores a registered version records, by name."""
        out = {f"holdout_{k}": v for k, v in self.holdout_scores.items()}
        out[f"cv_{self.metric}"] = self.cv_score
        out[f"cv_{self.metric}_std"] = self.cv_std
        out[f"baseline_{self.metric}"] = self.baseline_score
        return out

    def to_dict(self, *, figures: bool = False) -> dict[str, Any]:
        """Plain JSON-ready data (no booster; the contract as a dict)."""
        out: dict[str, Any] = {
            "target": self.target,
            "task": self.task,
            "task_reason": self.task_reason,
            "metric": self.metric,
            "metric_label": self.metric_label,
            "higher_is_better": self.higher_is_better,
            "holdout_score": self.holdout_score,
            "holdout_scores": self.holdout_scores,
            "baseline_score": self.baseline_score,
            "cv_score": self.cv_score,
            "cv_std": self.cv_std,
            "best_params": self.best_params,
            "lightgbm_params": self.lightgbm_params,
            "best_trial": self.best_trial,
            "best_iteration": self.best_iteration,
            "refit_rounds": self.refit_rounds,
            "param_importances": self.param_importances,
            "feature_importances": self.feature_importances,
            "classes": None if self.classes is None else list(self.classes),
            "confusion_matrix": None
            if self.confusion_matrix is None
            else [list(r) for r in self.confusion_matrix],
            "residuals": self.residuals,
            "history": [t.to_dict() for t in self.history],
            "splits": self.splits.to_dict(),
            "trials_completed": self.trials_completed,
            "trials_pruned": self.trials_pruned,
            "trials_failed": self.trials_failed,
            "stop_reason": self.stop_reason,
            "budget_s": self.budget_s,
            "search_deadline_s": self.search_deadline_s,
            "search_s": round(self.search_s, 3),
            "refit_s": round(self.refit_s, 3),
            "elapsed_s": round(self.elapsed_s, 3),
            "refit_cut": self.refit_cut,
            "ensemble": [m.to_dict() for m in self.ensemble],
            "oof_score": self.oof_score,
            "oof_best_score": self.oof_best_score,
            "warnings": list(self.warnings),
            "study_name": self.study_name,
            "storage": self.storage,
            "seed": self.seed,
            "training_config": self.training_config,
            "search_space": self.search_space,
            "features": list(self.features),
            "started_at": self.started_at.isoformat(),
            "dataset": self.dataset,
            "contract": None if self.contract is None else self.contract.to_dict(),
        }
        if figures:
            out["figures"] = self.figures
        return out


# --- the search -------------------------------------------------------------------------


def _redacted(url: str) -> str:
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - a URL sqlalchemy can't parse is shown without secrets
        return re.sub(r"//[^@/]*@", "//***@", url)


def _database_url(url: str) -> str:
    """The URL with a driver SQLAlchemy can load for PostgreSQL.

    SQLAlchemy 2.1 reads plain `postgresql://` as psycopg 3; Pond ships psycopg2,
    so name it unless psycopg 3 is installed. `postgres://` is accepted too.
    """
    import importlib.util

    scheme, rest = url.split("://", 1)
    if scheme == "postgres":
        scheme = "postgresql"
    if (
        scheme == "postgresql"
        and importlib.util.find_spec("psycopg") is None
        and importlib.util.find_spec("psycopg2") is not None
    ):
        scheme = "postgresql+psycopg2"
    return f"{scheme}://{rest}"


def _rdb_storage(url: str) -> Any:
    """Optuna's RDB storage, retrying the race of workers creating its tables at once."""
    import optuna

    for attempt in range(5):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                # Heartbeats let the study mark trials of a crashed worker as failed.
                return optuna.storages.RDBStorage(
                    url, engine_kwargs={"pool_pre_ping": True}, heartbeat_interval=30,
                    grace_period=120,
                )
        except Exception as exc:  # noqa: BLE001 - sqlalchemy wraps the driver's error
            racing = "duplicate key" in str(exc) or "already exists" in str(exc)
            if not racing or attempt == 4:
                raise
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


def open_storage(storage: Any) -> tuple[Any, str]:
    """An Optuna storage and a printable description of it (passwords hidden).

    Args:
        storage: None (in memory), an Optuna storage object, a journal file
            path, or a database URL (`postgresql://user:password@host/db`).

    Raises:
        InvalidInput: an unsupported URL scheme.
        PondError: the database cannot be reached.
    """
    import optuna

    if storage is None:
        return optuna.storages.InMemoryStorage(), "memory"
    if isinstance(storage, str | os.PathLike):
        text = str(storage)
        if "://" in text:
            if not text.split("://", 1)[0].startswith(("postgres", "mysql", "sqlite")):
                raise InvalidInput(
                    f"storage {_redacted(text)!r} is not supported; use postgresql://USER:PASS@"
                    "HOST/DB (or leave it out for a journal file in the workspace)"
                )
            try:
                return _rdb_storage(_database_url(text)), _redacted(text)
            except Exception as exc:  # noqa: BLE001 - driver errors vary; the message matters
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise PondError(
                    f"cannot open the study storage {_redacted(text)}: {first}"
                ) from exc
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        path = Path(text)
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path))), f"journal:{path}"
    return storage, type(storage).__name__


def _charts_seconds() -> float:
    # Scoring and Optuna's charts after the refit (the charts import matplotlib
    # the first time, seconds on a busy machine).
    return 1.0 if "optuna.visualization" in sys.modules else 2.5


class _Run:
    """State shared by the trial callbacks of one worker's search."""

    def __init__(
        self,
        *,
        started: float,
        budget: float | None,
        stop: StopSignal | None,
        on_progress: ProgressCallback | None,
        metric: MetricSpec,
        trials_target: int | None,
        refits: float = 1.0,
    ) -> None:
        self.started = started
        self.budget = budget
        self.stop = stop
        self.on_progress = on_progress
        self.metric = metric
        self.trials_target = trials_target
        self.history: list[TrialRecord] = []
        self.best: float | None = None
        self.completed = 0
        self.pruned = 0
        self.failed = 0
        self.stop_reason: str | None = None
        # Until a trial tells us what a refit costs, keep a modest share back.
        self.reserve = 0.0 if budget is None else min(0.15 * budget, 5.0)
        # Refits the final model is expected to need (a blend refits a few trials).
        self.refits = refits
        self._last_tick = 0.0
        self._last_stop_check = 0.0
        self._stop_seen = False

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    @property
    def search_deadline(self) -> float | None:
        return None if self.budget is None else self.budget - self.reserve

    def stop_requested(self) -> bool:
        if self._stop_seen:
            return True
        now = time.monotonic()
        if now - self._last_stop_check < 0.2:
            return False
        self._last_stop_check = now
        if self.stop is None:
            return False
        seen = self.stop.is_set() if isinstance(self.stop, threading.Event) else bool(self.stop())
        self._stop_seen = seen
        return seen

    def cut_reason(self) -> str | None:
        """Why the running trial must end now, if it must."""
        if self.stop_requested():
            return "stopped"
        deadline = self.search_deadline
        if deadline is not None and self.elapsed() >= deadline:
            return "time_budget"
        return None

    def update_reserve(self, refit_estimate: float) -> None:
        if self.budget is not None:
            # Estimates are rough (machine load, tree sizes): keep a quarter more for
            # each expected refit (a blend refits a few trials), plus time for scoring
            # and charts, and never more than 40% of the budget. A refit stops adding
            # trees at the deadline, so a low estimate costs trees, not time.
            self.reserve = min(
                0.4 * self.budget,
                1.25 * self.refits * refit_estimate + _charts_seconds() + 0.2 * self.refits,
            )

    def progress(self, phase: str, message: str = "") -> Progress:
        return Progress(
            phase=phase,
            trials_done=self.completed + self.pruned + self.failed,
            trials_pruned=self.pruned,
            trials_target=self.trials_target,
            best_value=self.best,
            metric=self.metric.name,
            higher_is_better=self.metric.higher_is_better,
            elapsed_s=self.elapsed(),
            budget_s=self.budget,
            history=tuple(self.history),
            message=message,
        )

    def emit(self, phase: str, message: str = "") -> None:
        if self.on_progress is not None:
            self.on_progress(self.progress(phase, message))

    def tick(self) -> None:
        """A progress update during a long trial, at most once a second."""
        now = time.monotonic()
        if self.on_progress is not None and now - self._last_tick >= 1.0:
            self._last_tick = now
            self.emit("search")


class _TrialWatch:
    """LightGBM callback: reports to the pruner, and ends a fit at the deadline or on stop.

    It does what `optuna_integration.LightGBMPruningCallback` does for the
    trial's first fold (reporting every `interval` rounds), and also reports a
    metric whose direction differs from the study's (log loss while
    maximising macro F1) with its sign flipped, so the pruner compares like
    with like. On every fold it watches the deadline and the stop signal.
    """

    order = 40  # after LightGBM's early stopping (order 30)

    def __init__(
        self, trial: Any, run: _Run, metric_name: str, maximize: bool, interval: int
    ) -> None:
        import lightgbm as lgb
        import optuna

        self._pruned = optuna.TrialPruned
        self._early_stop = lgb.callback.EarlyStopException
        self.trial = trial
        self.run = run
        self.metric_name = metric_name
        self.maximize = maximize
        self.interval = interval
        self.report = True
        self.cut: str | None = None
        self.start_fold(report=True)

    def start_fold(self, *, report: bool) -> None:
        self.report = report
        self.best_iteration = 0
        self.best_value: float | None = None
        self.best_entry: list[Any] = []

    def __call__(self, env: Any) -> None:
        entry = next(e for e in env.evaluation_result_list if e[1] == self.metric_name)
        value, higher = float(entry[2]), bool(entry[3])
        if self.best_value is None or (value > self.best_value if higher else value < self.best_value):
            self.best_value, self.best_iteration = value, env.iteration
            self.best_entry = list(env.evaluation_result_list)
        step = env.iteration + 1
        if self.report and step % self.interval == 0:
            self.trial.report(value if higher == self.maximize else -value, step)
            if self.trial.should_prune():
                raise self._pruned(f"pruned at round {step}")
        reason = self.run.cut_reason()
        if reason is not None:
            self.cut = reason
            self.trial.set_user_attr("cut", reason)
            if self.run.completed > 0:
                raise self._pruned(f"cut at round {step}: {reason}")
            # No finished trial to fall back on: keep what this one learned so far.
            raise self._early_stop(self.best_iteration, self.best_entry)
        self.run.tick()


def _output_from_raw(task: str, raw: np.ndarray) -> np.ndarray:
    """What the metric scores, from LightGBM's raw scores (as its objectives transform them)."""
    if task == BINARY:
        p = 1.0 / (1.0 + np.exp(-raw))
        return np.column_stack([1.0 - p, p])
    if task == MULTICLASS:
        shifted = np.exp(raw - raw.max(axis=1, keepdims=True))
        return shifted / shifted.sum(axis=1, keepdims=True)
    return raw


# Steps at which a trial reports its running cross-validation score after each
# fold; above any boosting round, so they never mix with the per-round reports.
_FOLD_STEP = MAX_ROUNDS + 1


def _trial_objective(
    data: PreparedData,
    plan: _SplitPlan,
    space: Mapping[str, Mapping[str, Any]],
    run: _Run,
    seed: int,
    n_jobs: int | None,
    worker: str,
    maximize: bool,
    interval: int,
    oof: _OutOfFold | None = None,
) -> Callable[[Any], float]:
    """One trial: fit the folds one after another, each with native early stopping.

    The pruner sees the first fold round by round, then the running mean score
    after each fold, so a poor configuration usually costs a fraction of one fold.
    """
    import lightgbm as lgb
    import optuna

    x_dev, y_dev = plan.x_dev, plan.y_dev
    datasets: dict[tuple[int, bool], lgb.Dataset] = {}
    es_metric = _early_stopping_metric(data.metric, data.task)
    min_delta = _min_delta(es_metric, y_dev)

    def dataset(max_bin: int, balanced: bool) -> lgb.Dataset:
        key = (max_bin, balanced)
        if key not in datasets:
            datasets[key] = lgb.Dataset(
                x_dev,
                label=y_dev,
                weight=_balanced_weights(y_dev) if balanced else None,
                feature_name=list(data.lightgbm_names),
                categorical_feature=data.contract.categorical_indices or "auto",
                params={"max_bin": max_bin, "feature_pre_filter": False, "verbosity": -1,
                        "data_random_seed": seed, "num_threads": n_jobs or 0},
                free_raw_data=False,
            ).construct()
        return datasets[key]

    def objective(trial: Any) -> float:
        tuned = _suggest(trial, space)
        params = _lightgbm_params(tuned, data, seed, n_jobs)
        balanced = tuned.get("class_weight") == "balanced"
        trial.set_user_attr("worker", worker)
        trial.set_user_attr("lightgbm_params", params)
        full = dataset(int(tuned["max_bin"]), balanced)
        watch = _TrialWatch(trial, run, es_metric, maximize, interval)
        patience = _stopping_rounds(tuned["learning_rate"])
        fold_scores: list[float] = []
        fold_raw: list[np.ndarray] = []
        best_iterations: list[int] = []
        row_rounds = 0
        began = time.monotonic()
        for j, (train_rows, valid_rows) in enumerate(plan.folds):
            watch.start_fold(report=j == 0)
            booster = lgb.train(
                params,
                full.subset(train_rows),
                num_boost_round=MAX_ROUNDS,
                valid_sets=[full.subset(valid_rows)],
                valid_names=["valid"],
                callbacks=[
                    lgb.early_stopping(patience, verbose=False, min_delta=min_delta),
                    watch,
                ],
            )
            best = booster.best_iteration or booster.current_iteration()
            raw = booster.predict(x_dev[valid_rows], num_iteration=best, raw_score=True)
            fold_raw.append(raw)
            fold_scores.append(data.metric(y_dev[valid_rows], _output_from_raw(data.task, raw)))
            best_iterations.append(best)
            row_rounds += booster.current_iteration() * len(train_rows)
            if watch.cut is not None:
                # Only a first trial gets here (later ones are pruned when cut). Its
                # unfinished fold would understate the rounds needed: drop it when an
                # earlier fold finished.
                if j > 0:
                    fold_scores.pop()
                    best_iterations.pop()
                break
            if j < len(plan.folds) - 1:
                trial.report(float(np.mean(fold_scores)), _FOLD_STEP + j)
                if trial.should_prune():
                    raise optuna.TrialPruned(f"pruned after fold {j + 1}")
        fit_seconds = time.monotonic() - began
        trial.set_user_attr("best_iteration", int(round(np.mean(best_iterations))))
        trial.set_user_attr("folds_done", len(fold_scores))
        trial.set_user_attr("fold_scores", [float(v) for v in fold_scores])
        trial.set_user_attr("cv_std", float(np.std(fold_scores)))
        trial.set_user_attr("fit_seconds", fit_seconds)
        # Seconds per boosting round per training row: what the refit's cost is estimated from.
        trial.set_user_attr("round_row_seconds", fit_seconds / max(1, row_rounds))
        value = float(np.mean(fold_scores))
        if oof is not None and len(fold_raw) == len(plan.folds):
            oof.add(trial.number, value, np.concatenate(fold_raw))
        return value

    return objective


def _refit_rounds(best_iteration: int, splits: Splits) -> int:
    # The refit sees more rows than each fold did; grow it a little, as is usual.
    ratio = splits.dev_rows / max(1, splits.train_rows)
    return max(1, int(round(best_iteration * math.sqrt(ratio))))


def _refit_estimate(trial: Any, splits: Splits) -> float:
    per = float(trial.user_attrs.get("round_row_seconds", 0.0))
    rounds = _refit_rounds(int(trial.user_attrs.get("best_iteration", 1)), splits)
    return per * rounds * splits.dev_rows


def _config_fingerprint(data: PreparedData) -> str:
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(data.matrix).tobytes())
    digest.update(np.ascontiguousarray(data.y).tobytes())
    digest.update(data.contract.to_json().encode())
    return digest.hexdigest()[:32]


def _check_joined_study(study: Any, config: Mapping[str, Any], study_name: str) -> None:
    recorded = study.user_attrs.get("pond_config")
    if recorded is None:
        return
    keys = ("data_fingerprint", "target", "task", "metric", "seed", "folds", "exclude")
    differ = [k for k in keys if recorded.get(k) != config.get(k)]
    if differ:
        was = ", ".join(f"{k}={recorded.get(k)!r}" for k in differ if k != "data_fingerprint")
        if "data_fingerprint" in differ:
            was = (was + ", " if was else "") + "different data"
        raise InvalidInput(
            f"study {study_name!r} was started with other settings ({was}); every worker of a "
            "study must use the same dataset version, target, task, metric, exclusions and "
            "seed. Use those, or pick a new --study name."
        )


def _stop_signal(stop: StopSignal | None) -> StopSignal | None:
    if stop is None or isinstance(stop, threading.Event) or callable(stop):
        return stop
    raise InvalidInput("The 'stop' parameter of train must be a threading.Event or a callable.")


def _check_numbers(time_budget: float | None, n_trials: int | None, seed: int) -> None:
    if time_budget is not None and (
        isinstance(time_budget, bool)
        or not isinstance(time_budget, int | float)
        or not math.isfinite(time_budget)
        or time_budget <= 0
    ):
        raise InvalidInput(
            "The 'time_budget' parameter of train must be a number of seconds > 0 "
            f"(or None for no time limit). Got {time_budget!r} instead."
        )
    if n_trials is not None and (
        isinstance(n_trials, bool) or not isinstance(n_trials, int) or n_trials < 1
    ):
        raise InvalidInput(
            f"The 'n_trials' parameter of train must be an int >= 1 (or None for no cap). "
            f"Got {n_trials!r} instead."
        )
    if time_budget is None and n_trials is None:
        raise InvalidInput(
            "train needs a time budget or a trial count (or both); set time_budget or n_trials."
        )
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise InvalidInput(f"The 'seed' parameter of train must be an int >= 0. Got {seed!r} instead.")


def _worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def train(
    frame: pd.DataFrame,
    target: str,
    *,
    task: str = "auto",
    metric: str | None = None,
    exclude: Sequence[str] = (),
    time_budget: float | None = 60.0,
    n_trials: int | None = None,
    seed: int = 0,
    folds: int | None = None,
    storage: Any = None,
    study_name: str | None = None,
    on_progress: ProgressCallback | None = None,
    stop: StopSignal | None = None,
    n_jobs: int | None = None,
    holdout: pd.DataFrame | None = None,
    space: Mapping[str, Mapping[str, Any]] | None = None,
    warm_start: Mapping[str, Any] | None = None,
    ensemble: bool = True,
) -> TrainResult:
    """Find, refit and score the best LightGBM model for `target` within a budget.

    Args:
        frame: training data (held in memory).
        target: the column to predict.
        task: "auto", "binary", "multiclass" or "regression".
        metric: metric name from `core.metrics` (None: the task's default).
        exclude: columns not to use as features.
        time_budget: seconds for everything, refit included (None: no limit).
        n_trials: cap on the study's finished trials, across workers (None: no cap).
        seed: seeds the splits, the sampler and LightGBM; with `n_trials` and no
            binding time budget, one seed gives one result.
        folds: cross-validation folds per trial (None: by data size; 1 = one split).
        storage: None (in memory), an Optuna storage, a journal file path, or a
            `postgresql://` URL.
        study_name: join this study if it exists (see the module docstring).
        on_progress: called with a `Progress` after each trial and about once a second.
        stop: a `threading.Event` or a callable; once set/true the search ends and
            the best trial so far is refit and scored.
        n_jobs: LightGBM threads (None: OpenMP's default).
        holdout: score on this frame instead of splitting a holdout off `frame`
            (then every row of `frame` is used for the search and the refit).
        space: the search space to tune (None: `search_space` for this data); a retrain
            passes the one its parent version recorded.
        warm_start: parameters tried first (a retrain passes its parent's best), before
            the usual starting points; they must lie inside the space.
        ensemble: blend the best trials into the final model where their
            out-of-fold scores say the blend is better (greedy ensemble selection);
            False refits the best trial alone.

    Returns:
        The `TrainResult`, with the refit booster and its contract.

    Raises:
        InvalidInput: bad data or arguments (see `prepare`), or a study joined
            with different settings.
        PondError: the study storage cannot be opened, or LightGBM failed.
    """
    import optuna

    started_wall = datetime.now(UTC)
    started = time.monotonic()
    _check_numbers(time_budget, n_trials, seed)
    if folds is not None and (not isinstance(folds, int) or isinstance(folds, bool) or folds < 1):
        raise InvalidInput(f"The 'folds' parameter of train must be an int >= 1. Got {folds!r} instead.")
    if study_name is not None and not _STUDY_NAME_RE.match(study_name):
        raise InvalidInput(
            f"study name {study_name!r} is not allowed: use up to 100 letters, digits, '.', "
            "'_' or '-', starting with a letter or digit"
        )
    stop = _stop_signal(stop)
    data = prepare(frame, target, task=task, metric=metric, exclude=exclude, seed=seed)
    plan = _split(data, seed, folds, holdout)
    space = search_space(data, plan.splits) if space is None else {k: dict(v) for k, v in space.items()}
    spec = data.metric
    maximize = spec.higher_is_better
    name = study_name or f"pond-{datetime.now(UTC):%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"
    config = {
        "target": target,
        "task": data.task,
        "metric": spec.name,
        "exclude": sorted(exclude),
        "seed": seed,
        "folds": plan.splits.folds,
        "holdout_fraction": HOLDOUT_FRACTION,
        "time_budget": time_budget,
        "n_trials": n_trials,
        "data_fingerprint": _config_fingerprint(data),
        "ensemble": ensemble,
    }

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage_obj, storage_text = open_storage(storage)
    worker = _worker_id()
    remote = type(storage_obj).__name__ == "RDBStorage"
    interval = REPORT_INTERVAL_REMOTE if remote else REPORT_INTERVAL
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        direction = "maximize" if maximize else "minimize"
        try:
            study = optuna.create_study(
                storage=storage_obj, study_name=name, direction=direction, load_if_exists=False
            )
            created = True
        except optuna.exceptions.DuplicatedStudyError:
            study = optuna.load_study(study_name=name, storage=storage_obj)
            created = False
        if not created:
            _check_joined_study(study, config, name)
            if study.direction.name.lower() != direction:
                raise InvalidInput(
                    f"study {name!r} {study.direction.name.lower()}s its objective, but metric "
                    f"{spec.name!r} needs {direction}; use the study's metric or a new --study name"
                )
        # A joining worker must not replay the creator's random draws.
        sampler_seed = seed if created else (seed * 1_000_003 + os.getpid()) % (2**31)
        study.sampler = optuna.samplers.TPESampler(
            seed=sampler_seed, multivariate=True, constant_liar=True, n_startup_trials=8
        )
        study.pruner = optuna.pruners.PercentilePruner(
            75.0, n_startup_trials=5, n_warmup_steps=20, interval_steps=1
        )
        if created:
            study.set_user_attr("pond_config", config)
            if warm_start:
                study.enqueue_trial(dict(warm_start), skip_if_exists=True)
            for point in _starting_points(space):
                study.enqueue_trial(point, skip_if_exists=True)

        run = _Run(
            started=started,
            budget=float(time_budget) if time_budget is not None else None,
            stop=stop,
            on_progress=on_progress,
            metric=spec,
            trials_target=n_trials,
            refits=3.0 if ensemble else 1.0,
        )
        finished_states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
        existing = study.get_trials(deepcopy=False, states=finished_states)
        run.completed = sum(t.state == optuna.trial.TrialState.COMPLETE for t in existing)
        if run.completed:
            best_existing = study.best_trial
            run.best = best_existing.value
            run.update_reserve(_refit_estimate(best_existing, plan.splits))

        def after_trial(study: Any, trial: Any) -> None:
            state = trial.state.name
            if state == "COMPLETE":
                run.completed += 1
                if run.best is None or spec.better(trial.value, run.best):
                    run.best = trial.value
                    run.update_reserve(_refit_estimate(trial, plan.splits))
            elif state == "PRUNED":
                run.pruned += 1
            else:
                run.failed += 1
            start_s = (trial.datetime_start.timestamp() - started_wall.timestamp()
                       if trial.datetime_start else 0.0)
            run.history.append(
                TrialRecord(
                    number=trial.number,
                    state=state,
                    value=trial.value if state == "COMPLETE" else None,
                    best_value=run.best,
                    started_s=start_s,
                    finished_s=run.elapsed(),
                    worker=worker,
                    note=trial.user_attrs.get("cut"),
                )
            )
            run.emit("search")
            reason = run.cut_reason()
            if reason is None and n_trials is not None:
                if len(study.get_trials(deepcopy=False, states=finished_states)) >= n_trials:
                    reason = "trials"
            if reason is not None:
                run.stop_reason = reason
                study.stop()

        oof = _OutOfFold(plan, spec, seed) if ensemble else None
        run.emit("search", "starting")
        remaining = None
        if n_trials is not None:
            remaining = n_trials - len(existing)
        if remaining is None or remaining > 0:
            try:
                study.optimize(
                    _trial_objective(
                        data, plan, space, run, seed, n_jobs, worker, maximize, interval, oof
                    ),
                    n_trials=remaining,
                    callbacks=[after_trial],
                    gc_after_trial=False,
                )
            except PondError:
                raise
            except Exception as exc:
                if type(exc).__module__.startswith("lightgbm"):
                    raise PondError(f"LightGBM failed while training: {exc}") from exc
                raise
        else:
            run.stop_reason = "trials"
        if run.stop_reason is None:
            run.stop_reason = "trials"
        search_seconds = run.elapsed()

        completed = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        if not completed:
            raise PondError(
                f"no trial of study {name!r} finished, so there is no model to refit; "
                "give it more time or trials"
            )
        best = study.best_trial
        weights: dict[int, float] = {best.number: 1.0}
        blend_scores: tuple[float, float] | None = None
        if oof is not None and best.number in oof.raw:
            # Only this worker's trials have fold predictions here: when another
            # worker of a shared study found the best, it is refit alone.
            weights, blend_score, single_score = _select_ensemble(oof, best.number, data.task)
            blend_scores = (blend_score, single_score)
        booster, members, refit_cut, refit_seconds = _refit_blend(data, plan, study, best, weights, run)
        refit_rounds = sum(m.rounds for m in members)
        result = _score(
            data=data,
            plan=plan,
            study=study,
            best=best,
            booster=booster,
            refit_rounds=refit_rounds,
            refit_cut=refit_cut,
            refit_seconds=refit_seconds,
            members=members,
            blend_scores=blend_scores,
            search_seconds=search_seconds,
            run=run,
            space=space,
            config=config,
            name=name,
            storage_text=storage_text,
            seed=seed,
            started_wall=started_wall,
        )
    run.emit("done", f"holdout {spec.name} {result.holdout_score:.4g}")
    return result


# --- ensemble of the best trials -------------------------------------------------------

ENSEMBLE_CANDIDATES = 12
ENSEMBLE_STEPS = 20
ENSEMBLE_ROWS = 20_000


class _OutOfFold:
    """The validation-fold raw scores of this worker's best finished trials.

    Every fold predicts its own validation rows, so a trial's concatenated fold
    predictions cover the same rows in the same order as every other trial's:
    blends of trials can be scored on them without refitting anything. At most
    ENSEMBLE_ROWS of those rows (a seeded sample, chosen once) and the best
    `keep` trials are held, so memory stays small on large data.
    """

    def __init__(self, plan: _SplitPlan, spec: MetricSpec, seed: int, keep: int = ENSEMBLE_CANDIDATES) -> None:
        rows = np.concatenate([valid for _, valid in plan.folds])
        picked = np.arange(len(rows))
        if len(picked) > ENSEMBLE_ROWS:
            picked = np.sort(np.random.default_rng(seed).choice(picked, ENSEMBLE_ROWS, replace=False))
        bounds = np.cumsum([len(valid) for _, valid in plan.folds])[:-1]
        cuts = np.searchsorted(picked, bounds)
        self.picked = picked
        self.y = plan.y_dev[rows[picked]]
        # Each fold's span within the held rows, to score blends fold by fold.
        self.folds = [(a, b) for a, b in zip(np.r_[0, cuts], np.r_[cuts, len(picked)], strict=True) if b > a]
        self.spec = spec
        self.keep = keep
        self.raw: dict[int, tuple[float, np.ndarray]] = {}

    def add(self, number: int, value: float, raw: np.ndarray) -> None:
        self.raw[number] = (value, raw[self.picked])
        if len(self.raw) > 2 * self.keep:
            ranked = sorted(self.raw, key=lambda n: self.raw[n][0], reverse=self.spec.higher_is_better)
            for dropped in ranked[self.keep:]:
                del self.raw[dropped]


def _select_ensemble(oof: _OutOfFold, best: int, task: str) -> tuple[dict[int, float], float, float]:
    """Greedy ensemble selection with replacement (Caruana et al., 2004) over the kept trials.

    Starting from the best trial alone, each step adds (again, possibly) the
    trial whose raw scores, averaged in, most improve the metric on the
    validation folds (the mean over folds, as trials are scored); the blend
    kept is the best prefix, so it is never worse there than the best trial
    alone. Blending the best few configurations takes out part of the luck in
    which one won the search, which a refit of the single winner keeps.
    Returns weights by trial number, the blend's and the best trial's scores.
    """
    spec, y, folds = oof.spec, oof.y, oof.folds
    ranked = sorted(oof.raw, key=lambda n: oof.raw[n][0], reverse=spec.higher_is_better)
    candidates = ranked[: oof.keep]
    raws = {n: oof.raw[n][1] for n in candidates}

    def score(total: np.ndarray, count: int) -> float:
        output = _output_from_raw(task, total / count)
        return float(np.mean([spec(y[a:b], output[a:b]) for a, b in folds]))

    counts = {best: 1}
    total = raws[best].copy()
    single = best_score = score(total, 1)
    best_counts = dict(counts)
    if len(candidates) < 2:
        return {best: 1.0}, single, single
    for step in range(2, ENSEMBLE_STEPS + 1):
        scored = [(score(total + raws[n], step), n) for n in candidates]
        value, chosen = (max if spec.higher_is_better else min)(scored, key=lambda t: t[0])
        total += raws[chosen]
        counts[chosen] = counts.get(chosen, 0) + 1
        if spec.better(value, best_score):
            best_score, best_counts = value, dict(counts)
    size = sum(best_counts.values())
    return {n: c / size for n, c in best_counts.items()}, best_score, single


def blend_boosters(models: Sequence[tuple[str, float]]) -> Any:
    """One LightGBM booster whose raw output is the weighted sum of the models' raw outputs.

    `models` are (text from `Booster.model_to_string`, weight) pairs with the same
    features and objective. A tree ensemble's raw output is the sum of its trees,
    so concatenating the trees with every leaf and internal value multiplied by
    the model's weight gives the blend exactly; prediction, SHAP contributions
    and the single-row fast path work on it unchanged. Multiclass models keep
    whole iterations, so trees stay with their class.
    """
    import lightgbm as lgb

    header = tail = ""
    trees: list[str] = []
    for k, (text, weight) in enumerate(models):
        start, end = text.index("\nTree=0\n") + 1, text.index("\nend of trees")
        if k == 0:
            header = "\n".join(
                line for line in text[:start].split("\n") if not line.startswith("tree_sizes=")
            )
            tail = text[end:]
        for block in re.split(r"(?m)^Tree=\d+\n", text[start:end])[1:]:
            lines = []
            for line in block.rstrip("\n").split("\n"):
                key, sep, values = line.partition("=")
                if sep and key in ("leaf_value", "internal_value"):
                    line = key + "=" + " ".join(repr(float(v) * weight) for v in values.split(" ") if v)
                lines.append(line)
            trees.append("\n".join(lines))
    body = "".join(f"Tree={i}\n{tree}\n\n" for i, tree in enumerate(trees))
    return lgb.Booster(model_str=header + body + tail.lstrip("\n"))


def _refit_blend(
    data: PreparedData, plan: _SplitPlan, study: Any, best: Any, weights: Mapping[int, float], run: _Run
) -> tuple[Any, tuple[EnsembleMember, ...], bool, float]:
    """Refit the blend's trials on all dev rows, heaviest first, and merge them.

    The best trial is always refit (cut at the deadline if it must be, as a
    single model would be). Another member is refit only if its estimated cost
    fits in what is left of the budget and is dropped if the deadline still cuts
    it; the weights of the members kept are renormalised.
    """
    by_number = {t.number: t for t in study.get_trials(deepcopy=False)}
    order = sorted(weights, key=lambda n: (n != best.number, -weights[n], n))
    kept: list[tuple[int, Any, int, float]] = []
    cut_any = False
    seconds = 0.0
    for number in order:
        trial = by_number[number]
        if kept and run.budget is not None:
            left = run.budget - run.elapsed() - _charts_seconds()
            if 1.25 * _refit_estimate(trial, plan.splits) > left:
                continue
        run.emit("refit", f"refitting trial {number} on {len(plan.y_dev)} rows")
        booster, rounds, cut, took = _refit(data, plan, trial, run)
        seconds += took
        if cut and kept:
            continue
        cut_any = cut_any or cut
        kept.append((number, booster, rounds, weights[number]))
    if len(kept) == 1:
        _, booster, rounds, _ = kept[0]
        return booster, (EnsembleMember(best.number, 1.0, rounds),), cut_any, seconds
    total = sum(w for *_, w in kept)
    members = tuple(EnsembleMember(n, w / total, rounds) for n, _, rounds, w in kept)
    blended = blend_boosters([(b.model_to_string(), w / total) for _, b, _, w in kept])
    return blended, members, cut_any, seconds


def _refit(data: PreparedData, plan: _SplitPlan, best: Any, run: _Run) -> tuple[Any, int, bool, float]:
    import lightgbm as lgb

    params = dict(best.user_attrs["lightgbm_params"])
    rounds = _refit_rounds(int(best.user_attrs["best_iteration"]), plan.splits)
    balanced = best.params.get("class_weight") == "balanced"
    y_dev = plan.y_dev
    dev = lgb.Dataset(
        plan.x_dev,
        label=y_dev,
        weight=_balanced_weights(y_dev) if balanced else None,
        feature_name=list(data.lightgbm_names),
        categorical_feature=data.contract.categorical_indices or "auto",
        params={"max_bin": params["max_bin"], "feature_pre_filter": False, "verbosity": -1,
                "data_random_seed": params["seed"]},
    )
    cut = {"done": False}

    def deadline(env: Any) -> None:
        # The refit stops adding trees at the budget's end; the model keeps what it has.
        if run.budget is not None and run.elapsed() >= run.budget - 0.5:
            cut["done"] = True
            raise lgb.callback.EarlyStopException(env.iteration, [])
        run.tick()

    began = time.monotonic()
    booster = lgb.train(
        {k: v for k, v in params.items() if k != "metric"},
        dev,
        num_boost_round=rounds,
        callbacks=[deadline],
        keep_training_booster=False,
    )
    return booster, booster.current_iteration(), cut["done"], time.monotonic() - began


def _score(
    *,
    data: PreparedData,
    plan: _SplitPlan,
    study: Any,
    best: Any,
    booster: Any,
    refit_rounds: int,
    refit_cut: bool,
    refit_seconds: float,
    members: tuple[EnsembleMember, ...],
    blend_scores: tuple[float, float] | None,
    search_seconds: float,
    run: _Run,
    space: dict[str, Any],
    config: dict[str, Any],
    name: str,
    storage_text: str,
    seed: int,
    started_wall: datetime,
) -> TrainResult:
    import optuna

    contract = data.contract
    y_hold = plan.y_holdout
    output = raw_output(booster, contract, plan.x_holdout)
    spec = data.metric
    holdout_scores = metric_registry.score_all(data.task, y_hold, output)
    y_dev = plan.y_dev
    if data.task == REGRESSION:
        baseline_output = np.full(len(y_hold), float(np.mean(y_dev)))
    else:
        prior = np.bincount(y_dev, minlength=data.n_classes) / len(y_dev)
        baseline_output = np.tile(prior, (len(y_hold), 1))
    baseline = spec(y_hold, baseline_output)

    confusion = None
    residuals = None
    if data.task == REGRESSION:
        rng = np.random.default_rng(seed)
        picked = np.arange(len(y_hold))
        if len(picked) > RESIDUAL_SAMPLE:
            picked = np.sort(rng.choice(picked, RESIDUAL_SAMPLE, replace=False))
        residuals = {
            "actual": [float(v) for v in y_hold[picked]],
            "predicted": [float(v) for v in output[picked]],
        }
    else:
        k = data.n_classes
        matrix = np.zeros((k, k), dtype=np.int64)
        np.add.at(matrix, (y_hold, output.argmax(axis=1)), 1)
        confusion = tuple(tuple(int(v) for v in row) for row in matrix)

    gains = booster.feature_importance(importance_type="gain")
    feature_importances = dict(
        sorted(
            ((f.name, float(g)) for f, g in zip(contract.features, gains, strict=True)),
            key=lambda kv: -kv[1],
        )
    )
    warnings_out = list(data.warnings)
    param_importances: dict[str, float] = {}
    completed = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if len(completed) >= 2:
        try:
            param_importances = {
                k: float(v) for k, v in optuna.importance.get_param_importances(study).items()
            }
        except Exception as exc:  # noqa: BLE001 - importances are a nice-to-have
            warnings_out.append(f"parameter importances could not be computed: {exc}")
    else:
        warnings_out.append(
            "only one trial finished, so parameter importances are not available; "
            "give the search more time or trials"
        )
    if refit_cut:
        warnings_out.append(
            f"the time budget ended during the refit; the model has {refit_rounds} trees "
            "instead of the planned number"
        )
    figures: dict[str, str] = {}
    try:
        from core import automl_charts

        figures = automl_charts.study_figures_json(study)
    except Exception as exc:  # noqa: BLE001 - charts must never lose a trained model
        warnings_out.append(f"the optimisation charts could not be drawn: {exc}")

    history = _study_history(study, started_wall, spec)
    states = [t.state.name for t in study.get_trials(deepcopy=False)]
    tuned = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in best.params.items()}
    return TrainResult(
        target=contract.target,
        task=data.task,
        task_reason=data.task_reason,
        metric=spec.name,
        metric_label=spec.label,
        higher_is_better=spec.higher_is_better,
        holdout_score=holdout_scores[spec.name],
        holdout_scores=holdout_scores,
        baseline_score=baseline,
        cv_score=float(best.value),
        cv_std=float(best.user_attrs.get("cv_std", 0.0)),
        best_params=tuned,
        lightgbm_params=dict(best.user_attrs["lightgbm_params"]),
        best_trial=best.number,
        best_iteration=int(best.user_attrs["best_iteration"]),
        refit_rounds=refit_rounds,
        param_importances=param_importances,
        feature_importances=feature_importances,
        classes=contract.classes,
        confusion_matrix=confusion,
        residuals=residuals,
        history=history,
        splits=plan.splits,
        trials_completed=states.count("COMPLETE"),
        trials_pruned=states.count("PRUNED"),
        trials_failed=states.count("FAIL"),
        stop_reason=run.stop_reason or "trials",
        budget_s=run.budget,
        search_deadline_s=run.search_deadline,
        search_s=search_seconds,
        refit_s=refit_seconds,
        elapsed_s=run.elapsed(),
        refit_cut=refit_cut,
        ensemble=members,
        oof_score=None if blend_scores is None else blend_scores[0],
        oof_best_score=None if blend_scores is None else blend_scores[1],
        warnings=tuple(warnings_out),
        study_name=name,
        storage=storage_text,
        seed=seed,
        training_config=config,
        search_space=space,
        features=tuple(contract.feature_names),
        started_at=started_wall,
        figures=figures,
        contract=contract,
        booster=booster,
    )


def _study_history(study: Any, started_wall: datetime, spec: MetricSpec) -> tuple[TrialRecord, ...]:
    """Every finished trial of the study (all workers), in finishing order."""
    trials = [t for t in study.get_trials(deepcopy=False) if t.state.is_finished()]
    trials.sort(key=lambda t: (t.datetime_complete or t.datetime_start or started_wall, t.number))
    origin = started_wall.timestamp()
    best: float | None = None
    records = []
    for t in trials:
        if t.state.name == "COMPLETE" and (best is None or spec.better(t.value, best)):
            best = t.value
        records.append(
            TrialRecord(
                number=t.number,
                state=t.state.name,
                value=t.value if t.state.name == "COMPLETE" else None,
                best_value=best,
                started_s=(t.datetime_start.timestamp() - origin) if t.datetime_start else 0.0,
                finished_s=(t.datetime_complete.timestamp() - origin)
                if t.datetime_complete
                else 0.0,
                worker=t.user_attrs.get("worker"),
                note=t.user_attrs.get("cut"),
            )
        )
    return tuple(records)


# --- workspace entry points -------------------------------------------------------------


def study_storage_path(ws: Workspace, study_name: str) -> Path:
    """Where a study's journal lives when no --storage URL is given."""
    return ws.studies_dir / f"{study_name}.journal"


def new_study_name(dataset: str, target: str) -> str:
    """A fresh, readable study name: dataset, target, UTC time and a random suffix."""
    slug = re.sub(r"[^A-Za-z0-9]+", "-", target).strip("-")[:30] or "target"
    return f"{dataset}-{slug}-{datetime.now(UTC):%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


def train_dataset(
    ws: Workspace,
    dataset: str | Any,
    target: str,
    *,
    actor: auth.User,
    task: str = "auto",
    metric: str | None = None,
    exclude: Sequence[str] = (),
    time_budget: float | None = 60.0,
    n_trials: int | None = None,
    seed: int = 0,
    folds: int | None = None,
    storage: str | None = None,
    study_name: str | None = None,
    on_progress: ProgressCallback | None = None,
    stop: StopSignal | None = None,
    n_jobs: int | None = None,
    ensemble: bool = True,
) -> TrainResult:
    """`train` on a dataset version of the workspace, as `actor`.

    The workspace is only read briefly (the dataset's row and its Parquet
    file); no connection is held while training. The study lives in a journal
    file under the workspace's `studies/` unless `storage` names a database.

    Args:
        dataset: "name", "name:version" or a `DatasetVersion`.
        storage: None (journal file in the workspace) or a `postgresql://` URL.
        Others: as for `train`.

    Returns:
        The result, with `dataset` set to the version's name, number and hash.

    Raises:
        PermissionDenied: the actor may not train.
        NotFound: no such dataset or version.
        InvalidInput: see `train`.
    """
    from core import datasets

    auth.require(actor, "train")
    _check_numbers(time_budget, n_trials, seed)
    # Optuna's charts import matplotlib: seconds on a busy machine. Pay for it
    # before the budget's clock starts rather than after the refit.
    import optuna.visualization  # noqa: F401

    from core import features  # a feature view version trains like a dataset version

    view = features.training_input(ws, dataset, actor=actor)
    dv = view.data if view else datasets.resolve(ws, dataset) if isinstance(dataset, str) else dataset
    exclude = tuple(exclude) + (view.excluded(target, exclude) if view else ())
    if target not in dv.column_names:
        raise InvalidInput(_no_target_message(target, dv.column_names))
    name = study_name or new_study_name(dv.name, target)
    if not _STUDY_NAME_RE.match(name):
        raise InvalidInput(
            f"study name {name!r} is not allowed: use up to 100 letters, digits, '.', "
            "'_' or '-', starting with a letter or digit"
        )
    frame = datasets.load_frame(ws, dv)
    result = train(
        frame,
        target,
        task=task,
        metric=metric,
        exclude=exclude,
        time_budget=time_budget,
        n_trials=n_trials,
        seed=seed,
        folds=folds,
        storage=storage if storage is not None else study_storage_path(ws, name),
        study_name=name,
        on_progress=on_progress,
        stop=stop,
        n_jobs=n_jobs,
        ensemble=ensemble,
    )
    lineage = view.lineage if view else {
        "name": dv.name, "version": dv.version, "content_sha256": dv.content_sha256}
    config = dict(result.training_config, dataset=view.ref if view else f"{dv.name}:{dv.version}")
    return replace(result, dataset=lineage, training_config=config)


# --- saved runs and registration -----------------------------------------------------------

RESULT_FILE = "result.json"


def save_run(result: TrainResult, directory: str | os.PathLike[str]) -> dict[str, Path]:
    """Write the model (`model.txt`), its contract and `result.json` into `directory`.

    Returns:
        The files by name; `model.txt` and `contract.json` are what a
        registered version stores.
    """
    if result.booster is None or result.contract is None:
        raise PondError("this result has no model to save (it was loaded from JSON)")
    folder = Path(directory)
    files = save_model(result.booster, result.contract, folder)
    tmp = folder / f".{RESULT_FILE}.tmp"
    tmp.write_text(json.dumps(result.to_dict(figures=True), default=str), encoding="utf-8")
    os.replace(tmp, folder / RESULT_FILE)
    files[RESULT_FILE] = folder / RESULT_FILE
    return files


def load_run_result(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """The `result.json` of a saved run, as a dict.

    Raises:
        NotFound: the folder holds no saved run.
    """
    path = Path(directory) / RESULT_FILE
    if not path.exists():
        raise NotFound(f"no finished training in {directory}")
    return json.loads(path.read_text(encoding="utf-8"))


def lineage_for(result: Mapping[str, Any], parent_version: int | None = None) -> dict[str, Any]:
    """The lineage a registered version records, from a result dict.

    The registry adds the package version and git commit when it registers.
    """
    return {
        "dataset": result.get("dataset"),
        "feature_view": (result.get("dataset") or {}).get("feature_view"),
        "training_config": result["training_config"],
        "search_space": result["search_space"],
        "optuna_study": {"storage": result["storage"], "name": result["study_name"]},
        "ensemble": result.get("ensemble") or [],
        "parent_version": parent_version,
    }


def check_can_register(actor: auth.User, model_name: str) -> None:
    """Fail fast, before a long training, when its model could not be registered.

    Raises:
        PondError: the model registry is not part of this Pond build.
        PermissionDenied: the actor may not register or request approval.
        InvalidInput: the model name is not allowed.
    """
    try:
        from core import registry
    except ImportError as exc:
        raise PondError(
            "the model registry (core.registry) is not available in this Pond build, so "
            "the model cannot be registered; train without --register"
        ) from exc
    auth.require(actor, "register")
    auth.require(actor, "request_approval")
    check_name = getattr(registry, "_check_model_name", None)
    if check_name is not None:
        check_name(model_name)


def register_run(
    ws: Workspace,
    directory: str | os.PathLike[str],
    model_name: str,
    *,
    actor: auth.User,
    comment: str | None = None,
    parent_version: int | None = None,
    tags: dict[str, str] | None = None,
) -> Any:
    """Register a saved run as a new model version, pending review.

    Args:
        directory: a folder written by `save_run`.
        model_name: the registered model to add a version to.

    Returns:
        The registry's `ModelVersion`, pending review. Without `comment`, the
        review request says what was trained on what, and how well it scored.

    Raises:
        PondError: the model registry is not part of this Pond build.
        NotFound: the folder holds no saved run.
        PermissionDenied / InvalidInput: from the registry.
    """
    try:
        from core import registry
    except ImportError as exc:
        raise PondError(
            "the model registry (core.registry) is not available in this Pond build, so "
            "the model cannot be registered; train without --register"
        ) from exc
    auth.require(actor, "register")
    folder = Path(directory)
    result = load_run_result(folder)
    files = {
        name: folder / name for name in ("model.txt", "contract.json")
    }
    for path in files.values():
        if not path.exists():
            raise NotFound(f"the saved run in {folder} has no {path.name}")
    metrics = {f"holdout_{k}": v for k, v in result["holdout_scores"].items()}
    metrics[f"cv_{result['metric']}"] = result["cv_score"]
    metrics[f"cv_{result['metric']}_std"] = result["cv_std"]
    metrics[f"baseline_{result['metric']}"] = result["baseline_score"]
    params = dict(result["best_params"], num_boost_round=result["refit_rounds"])
    if not comment:
        source = result.get("dataset") or {}
        where = f" on {source['name']}:{source['version']}" if source else ""
        comment = (
            f"AutoML{where}: holdout {result['metric']} {result['holdout_score']:.4g} "
            f"(baseline {result['baseline_score']:.4g}, CV {result['cv_score']:.4g})"
        )
    return registry.register_version(
        ws,
        model_name,
        files,
        metrics=metrics,
        params=params,
        lineage=lineage_for(result, parent_version),
        actor=actor,
        task=result["task"],
        flavor="lightgbm",
        parent_version=parent_version,
        tags=tags,
        request_approval=True,
        comment=comment,
    )


def register(
    ws: Workspace,
    result: TrainResult,
    model_name: str,
    *,
    actor: auth.User,
    comment: str | None = None,
    parent_version: int | None = None,
    tags: dict[str, str] | None = None,
) -> Any:
    """Register a fresh training result (saved to a temporary folder first).

    Returns and raises as `register_run`.
    """
    ws.tmp_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="run-", dir=ws.tmp_dir) as tmp:
        save_run(result, tmp)
        return register_run(
            ws, tmp, model_name, actor=actor, comment=comment, parent_version=parent_version,
            tags=tags,
        )
