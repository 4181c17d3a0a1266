"""Why a tabular model predicts what it does: SHAP values from LightGBM's own TreeSHAP.

LightGBM computes exact TreeSHAP contributions itself (`predict(pred_contrib=True)`),
so no extra dependency is needed. A row's contributions plus the base value add
up to the model's raw output: log-odds of the positive class for a binary
model, the class's raw (pre-softmax) score for a multiclass model, and the
prediction itself for regression. Global importance is the mean absolute
contribution of each feature over rows (for multiclass, summed over classes).

The REST server calls `contributions` for a request that asks `"explain": true`;
the Evaluate page calls `explain_model`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from core import datasets
from core.auth import User, require
from core.errors import InvalidInput
from core.model_contract import (
    Contract,
    LoadedModel,
    encode_frame,
    encode_records,
    json_label,
)
from core.store import Workspace

DEFAULT_MAX_ROWS = 5000

Data = pd.DataFrame | Sequence[Mapping[str, Any]]


def output_unit(contract: Contract) -> str:
    """What a contribution is measured in, for people."""
    if contract.task == "binary":
        positive = json_label((contract.classes or (None, None))[1])
        return f"log-odds of {contract.target} = {positive!r}"
    if contract.task == "multiclass":
        return "raw score of the class (before softmax; higher means more likely)"
    return f"units of {contract.target}"


def shap_values(model: LoadedModel, data: Data) -> tuple[np.ndarray, np.ndarray]:
    """Per-row, per-class SHAP values and base values.

    Args:
        model: a LightGBM model with its contract.
        data: a DataFrame or a list of record dicts with the model's input columns.

    Returns:
        (values of shape (rows, classes, features), base values of shape
        (rows, classes)); regression and binary models have one "class".

    Raises:
        InvalidInput: an input column is missing or holds the wrong kind of value.
    """
    contract = model.contract
    if isinstance(data, pd.DataFrame):
        matrix = encode_frame(contract, data).matrix
    else:
        matrix = encode_records(contract, list(data)).matrix
    n, n_features = matrix.shape
    if n == 0:
        k = len(contract.classes or ()) if contract.task == "multiclass" else 1
        return np.empty((0, k, n_features)), np.empty((0, k))
    raw = np.asarray(model.booster.predict(matrix, pred_contrib=True), dtype=np.float64)
    raw = raw.reshape(n, -1, n_features + 1)
    return raw[:, :, :n_features], raw[:, :, n_features]


@dataclass(frozen=True)
class Importance:
    """Global feature importance: mean absolute SHAP value per feature.

    Attributes:
        features: feature names, most important first.
        mean_abs: the mean |SHAP| of each, in `features` order.
        per_class: for multiclass, class label → mean |SHAP| per feature (same order).
        rows: how many rows the means are over.
        unit: what the values are measured in.
    """

    features: tuple[str, ...]
    mean_abs: tuple[float, ...]
    per_class: dict[str, tuple[float, ...]] | None
    rows: int
    unit: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "features": list(self.features),
            "mean_abs": list(self.mean_abs),
            "per_class": {k: list(v) for k, v in self.per_class.items()}
            if self.per_class is not None else None,
            "rows": self.rows,
            "unit": self.unit,
        }


def _check_max_rows(max_rows: int) -> None:
    if isinstance(max_rows, bool) or not isinstance(max_rows, int) or max_rows < 1:
        raise InvalidInput(
            f"The 'max_rows' parameter of global_importance must be an int >= 1. Got "
            f"{max_rows!r} instead."
        )


def global_importance(
    model: LoadedModel, data: pd.DataFrame, *, max_rows: int = DEFAULT_MAX_ROWS, seed: int = 0
) -> Importance:
    """Mean absolute SHAP value per feature over (a seeded sample of) the rows.

    Args:
        model: a LightGBM model with its contract.
        data: rows with the model's input columns.
        max_rows: rows beyond this are sampled, seeded by `seed`.

    Returns:
        The importance, most important feature first.

    Raises:
        InvalidInput: no rows, a bad max_rows, or missing input columns.
    """
    _check_max_rows(max_rows)
    if len(data) == 0:
        raise InvalidInput("there are no rows to explain the model on")
    sample = data
    if len(data) > max_rows:
        picked = np.sort(np.random.default_rng(seed).choice(len(data), max_rows, replace=False))
        sample = data.iloc[picked]
    values, _ = shap_values(model, sample)
    by_class = np.abs(values).mean(axis=0)  # (classes, features)
    total = by_class.sum(axis=0)
    order = np.argsort(-total, kind="mergesort")
    names = model.contract.feature_names
    per_class = None
    if model.contract.task == "multiclass":
        per_class = {
            str(json_label(label)): tuple(float(v) for v in by_class[k][order])
            for k, label in enumerate(model.contract.classes or ())
        }
    return Importance(
        features=tuple(names[j] for j in order),
        mean_abs=tuple(float(total[j]) for j in order),
        per_class=per_class,
        rows=len(sample),
        unit=output_unit(model.contract),
    )


def contributions(
    model: LoadedModel, data: Data, *, target_class: Any = None
) -> list[dict[str, Any]]:
    """Each row's per-feature contributions to the model's raw output, plus the base value.

    Args:
        model: a LightGBM model with its contract.
        data: a DataFrame or a list of record dicts (a REST request's records).
        target_class: for multiclass, the label to explain in every row (default:
            each row's predicted class).

    Returns:
        One JSON-ready dict per row: `contributions` (feature name → value, in
        the contract's feature order), `base_value`, `raw_output` (their sum:
        log-odds, class score or prediction; see `output_unit`) and `class` (the
        label explained; None for regression, the positive class for binary).

    Raises:
        InvalidInput: missing or mistyped input fields, or an unknown target_class.
    """
    contract = model.contract
    values, base = shap_values(model, data)
    names = contract.feature_names
    classes = contract.classes or ()
    if contract.task == "multiclass":
        if target_class is not None:
            labels = [json_label(c) for c in classes]
            if json_label(target_class) not in labels:
                raise InvalidInput(
                    f"target_class {target_class!r} is not a class of the model; its classes "
                    f"are {', '.join(repr(c) for c in labels)}"
                )
            chosen = np.full(len(base), labels.index(json_label(target_class)))
        else:
            raw = values.sum(axis=2) + base
            chosen = raw.argmax(axis=1)
    else:
        chosen = np.zeros(len(base), dtype=np.int64)
    out = []
    for i, k in enumerate(chosen.tolist()):
        row = values[i, k]
        label = None
        if contract.task == "multiclass":
            label = json_label(classes[k])
        elif contract.task == "binary":
            label = json_label(classes[1])
        out.append({
            "class": label,
            "base_value": float(base[i, k]),
            "contributions": {name: float(v) for name, v in zip(names, row, strict=True)},
            "raw_output": float(base[i, k] + row.sum()),
        })
    return out


@dataclass(frozen=True)
class ModelExplanation:
    """Global importance of a version on a dataset, and one row's contributions.

    Attributes:
        model: the version explained ("name:3").
        dataset: the dataset version ("name:2").
        importance: mean |SHAP| per feature.
        row: the row explained (0-based position in the dataset).
        row_values: that row's input values.
        row_contributions: see `contributions`.
        prediction: what the model predicts for that row.
        rows: rows in the dataset.
        unit: what contributions are measured in.
    """

    model: str
    dataset: str
    importance: Importance
    row: int
    row_values: dict[str, Any]
    row_contributions: dict[str, Any]
    prediction: Any
    rows: int
    unit: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model, "dataset": self.dataset,
            "importance": self.importance.to_dict(), "row": self.row,
            "row_values": self.row_values, "row_contributions": self.row_contributions,
            "prediction": self.prediction, "rows": self.rows, "unit": self.unit,
        }


def _plain_value(value: Any) -> Any:
    if pd.api.types.is_scalar(value) and pd.isna(value):
        return None
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    return json_label(value)


def explain_model(
    ws: Workspace,
    model_ref: str,
    dataset_ref: str,
    actor: User,
    *,
    row: int = 0,
    max_rows: int = DEFAULT_MAX_ROWS,
    target_class: Any = None,
) -> ModelExplanation:
    """Explain a registered LightGBM version on a dataset version.

    Args:
        model_ref: "name@alias", "name:version" or "name".
        dataset_ref: "name" or "name:version"; it needs the model's input columns.
        actor: who asks (any role that may evaluate).
        row: the row (0-based) whose contributions to show.
        max_rows: global importance is over at most this many rows (seeded sample).
        target_class: for multiclass, the class to explain (default: predicted).

    Returns:
        Global importance and the row's contributions.

    Raises:
        PermissionDenied, NotFound, InvalidInput: a bad reference, missing input
            columns, or a row out of range.
    """
    from core.evaluation import load_version  # evaluation imports nothing from here

    require(actor, "evaluate")
    version, model = load_version(ws, model_ref)
    dv = datasets.resolve(ws, dataset_ref)
    missing = [n for n in model.contract.feature_names if n not in dv.column_names]
    if missing:
        raise InvalidInput(
            f"dataset {dv.ref} lacks the input columns {', '.join(repr(m) for m in missing)} "
            f"that model {version.ref} needs; pick a dataset version with the columns it was "
            "trained on"
        )
    if isinstance(row, bool) or not isinstance(row, int) or not 0 <= row < dv.row_count:
        raise InvalidInput(
            f"row {row!r} is out of range: dataset {dv.ref} has {dv.row_count} rows "
            f"(0 to {dv.row_count - 1})"
        )
    frame = datasets.load_frame(ws, dv, columns=model.contract.feature_names)
    importance = global_importance(model, frame, max_rows=max_rows)
    one = frame.iloc[[row]]
    explained = contributions(model, one, target_class=target_class)[0]
    prediction = model.predict(one).values[0]
    return ModelExplanation(
        model=version.ref,
        dataset=dv.ref,
        importance=importance,
        row=row,
        row_values={name: _plain_value(one.iloc[0][name]) for name in model.contract.feature_names},
        row_contributions=explained,
        prediction=json_label(prediction),
        rows=dv.row_count,
        unit=output_unit(model.contract),
    )
