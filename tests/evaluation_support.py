"""Small real LightGBM models for the evaluation tests, trained and registered the way
AutoML does it (native model file plus preprocessing contract, no pickle)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd

from core import datasets, registry
from core.auth import User
from core.model_contract import (
    CATEGORY,
    NUMERIC,
    Contract,
    Feature,
    encode_frame,
    json_label,
    labels_in_order,
    level_key,
    save_model,
)
from core.store import Workspace

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data"


def contract_for(frame: pd.DataFrame, target: str, task: str) -> Contract:
    features = []
    for name in frame.columns:
        if name == target:
            continue
        series = frame[name]
        if pd.api.types.is_numeric_dtype(series.dtype):
            features.append(Feature(str(name), NUMERIC, str(series.dtype)))
        else:
            levels = tuple(sorted(series.dropna().astype(object).map(level_key).unique()))
            features.append(Feature(str(name), CATEGORY, str(series.dtype), levels))
    classes = None
    if task != "regression":
        classes = labels_in_order(frame[target].dropna().astype(object).map(json_label))
    return Contract(features=tuple(features), target=target, task=task, classes=classes)


def train(
    frame: pd.DataFrame, target: str, task: str, *, rounds: int = 30, seed: int = 0,
    num_leaves: int = 7,
) -> tuple[Any, Contract]:
    """A small booster on `frame` (rows without a target are left out)."""
    frame = frame[frame[target].notna()]
    contract = contract_for(frame, target, task)
    matrix = encode_frame(contract, frame).matrix
    if task == "regression":
        y = frame[target].to_numpy(dtype=np.float64)
        params: dict[str, Any] = {"objective": "regression"}
    else:
        index = {c: i for i, c in enumerate(contract.classes or ())}
        y = frame[target].astype(object).map(json_label).map(index).to_numpy(dtype=np.int64)
        params = {"objective": "binary"} if task == "binary" else {
            "objective": "multiclass", "num_class": len(index)}
    params.update(verbosity=-1, seed=seed, num_leaves=num_leaves, min_data_in_leaf=5,
                  deterministic=True, force_col_wise=True, num_threads=1)
    booster = lgb.train(
        params,
        lgb.Dataset(matrix, label=y, categorical_feature=contract.categorical_indices or "auto",
                    free_raw_data=False),
        num_boost_round=rounds,
    )
    return booster, contract


def register(
    ws: Workspace, actor: User, tmp: Path, name: str, frame: pd.DataFrame, target: str,
    task: str, **kwargs: Any,
) -> registry.ModelVersion:
    booster, contract = train(frame, target, task, **kwargs)
    folder = tmp / f"{name}-{len(list(tmp.glob(f'{name}-*')))}"
    files = save_model(booster, contract, folder)
    return registry.register_version(
        ws, name, files, metrics={}, params={}, lineage=registry.make_lineage(),
        actor=actor, flavor="lightgbm", task=task,
    )


def penguins(ws: Workspace, actor: User) -> datasets.DatasetVersion:
    return datasets.ingest(ws, DATA / "penguins.csv", "penguins", actor=actor)


def penguins_frame() -> pd.DataFrame:
    return pd.read_csv(DATA / "penguins.csv")
