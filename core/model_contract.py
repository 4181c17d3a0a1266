"""The preprocessing contract of a tabular model and the one encoder that obeys it.

A trained Pond model is two files: LightGBM's native text model
(`model.txt`) and this contract (`contract.json`): the feature columns in
order, what kind each is (number, category, date-time), the fixed category
levels, and for classification the labels in class order. Training encodes
its frame with `encode_frame`, and predicting goes through the same code, so
serving reproduces training exactly. Nothing is pickled.

Behaviour at prediction time:

- a feature column missing from the input is an error naming it;
- an extra column is ignored and reported in `Prediction.ignored_columns`;
- a category never seen in training is treated as a missing value (NaN),
  which LightGBM sends down each split's missing-value branch, and counted in
  `Prediction.unseen_categories`;
- `None`/NaN is a missing value in any column;
- a number column given text that is not a number is an error naming the column.

`encode_records` is the fast path for a list of record dicts (a REST request):
it fills a NumPy array directly without building a DataFrame. Both paths give
identical arrays for the same data.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core.errors import InvalidInput, PondError

FORMAT_VERSION = 1
NUMERIC = "numeric"
CATEGORY = "category"
DATETIME = "datetime"
KINDS = (NUMERIC, CATEGORY, DATETIME)
MODEL_FILE = "model.txt"
CONTRACT_FILE = "contract.json"

_EPOCH = pd.Timestamp(0, tz="UTC")
_SECOND = pd.Timedelta(seconds=1)


def level_key(value: Any) -> str:
    """The text a category value is known by.

    Integral floats drop their ".0" so a code read as 7 in one file and 7.0 in
    another is one level.
    """
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, np.floating) and float(value).is_integer():
        return str(int(value))
    return str(value)


def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float | np.floating):
        return math.isnan(value)
    return value is pd.NA or value is pd.NaT


@dataclass(frozen=True)
class Feature:
    """One input column of a model.

    Attributes:
        name: the column's name in the user's data (any text).
        kind: "numeric", "category" or "datetime" (seconds since 1970, UTC).
        dtype: the column's type in the training data, for people.
        levels: the fixed category levels (codes are their positions).
    """

    name: str
    kind: str
    dtype: str
    levels: tuple[str, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "kind": self.kind, "dtype": self.dtype}
        if self.levels is not None:
            out["levels"] = list(self.levels)
        return out


@dataclass(frozen=True)
class Contract:
    """What a model expects as input and what its outputs mean.

    Attributes:
        features: the input columns in the order the model sees them.
        target: the name of the predicted column.
        task: "binary", "multiclass" or "regression".
        classes: for classification, the original labels; class i of the
            model's probabilities is `classes[i]`.
    """

    features: tuple[Feature, ...]
    target: str
    task: str
    classes: tuple[Any, ...] | None = None
    format_version: int = FORMAT_VERSION
    unseen_category: str = "missing"

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    @property
    def categorical_indices(self) -> list[int]:
        return [i for i, f in enumerate(self.features) if f.kind == CATEGORY]

    @cached_property
    def _level_codes(self) -> tuple[dict[str, float] | None, ...]:
        return tuple(
            {level: float(code) for code, level in enumerate(f.levels)}
            if f.kind == CATEGORY and f.levels is not None
            else None
            for f in self.features
        )

    @cached_property
    def _record_plan(self) -> tuple[tuple[Feature, int, dict[str, float] | None], ...]:
        """Per feature: itself, its kind as 0 numeric / 1 category / 2 datetime, its codes."""
        kinds = {NUMERIC: 0, CATEGORY: 1, DATETIME: 2}
        return tuple(
            (f, kinds[f.kind], codes) for f, codes in zip(self.features, self._level_codes, strict=True)
        )

    @cached_property
    def json_classes(self) -> list[Any] | None:
        """The classes as JSON values (see `json_label`), made once; do not modify."""
        return None if self.classes is None else [json_label(c) for c in self.classes]

    @cached_property
    def _known_fields(self) -> frozenset[str]:
        return frozenset(self.feature_names) | {self.target}

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": self.format_version,
            "target": self.target,
            "task": self.task,
            "classes": None if self.classes is None else list(self.classes),
            "unseen_category": self.unseen_category,
            "features": [f.to_dict() for f in self.features],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Contract:
        """Raises: PondError when the contract was written by a newer Pond."""
        version = int(data.get("format_version", 0))
        if version > FORMAT_VERSION:
            raise PondError(
                f"this model's contract has format {version}, newer than this Pond reads "
                f"({FORMAT_VERSION}); upgrade Pond"
            )
        return cls(
            features=tuple(
                Feature(
                    name=f["name"],
                    kind=f["kind"],
                    dtype=f.get("dtype", ""),
                    levels=tuple(f["levels"]) if f.get("levels") is not None else None,
                )
                for f in data["features"]
            ),
            target=data["target"],
            task=data["task"],
            classes=tuple(data["classes"]) if data.get("classes") is not None else None,
            format_version=version,
            unseen_category=data.get("unseen_category", "missing"),
        )

    @classmethod
    def from_json(cls, text: str) -> Contract:
        return cls.from_dict(json.loads(text))


@dataclass(frozen=True)
class Encoded:
    """A frame or records turned into the model's input matrix."""

    matrix: np.ndarray
    ignored_columns: tuple[str, ...]
    unseen_categories: dict[str, int] = field(default_factory=dict)


def _missing_columns_error(missing: Sequence[str], contract: Contract) -> InvalidInput:
    names = ", ".join(repr(m) for m in missing)
    noun = "column" if len(missing) == 1 else "columns"
    return InvalidInput(
        f"the input has no {noun} {names}, which the model needs; it expects the columns "
        f"{', '.join(repr(n) for n in contract.feature_names)} (missing values may be null)"
    )


def _numeric_series(values: pd.Series, name: str) -> np.ndarray:
    if values.dtype == bool:
        return values.to_numpy(dtype=np.float64)
    try:
        return pd.to_numeric(values, errors="raise").to_numpy(dtype=np.float64, na_value=np.nan)
    except (ValueError, TypeError) as exc:
        raise InvalidInput(
            f"column {name!r} must hold numbers, as in training; {exc}"
        ) from None


def _datetime_series(values: pd.Series, name: str) -> np.ndarray:
    try:
        stamps = pd.to_datetime(values, utc=True, errors="raise")
    except (ValueError, TypeError) as exc:
        raise InvalidInput(f"column {name!r} must hold dates or times; {exc}") from None
    return ((stamps - _EPOCH) / _SECOND).to_numpy(dtype=np.float64, na_value=np.nan)


def _category_series(values: pd.Series, codes: dict[str, float]) -> tuple[np.ndarray, int]:
    values = values.astype(object)
    mask = values.isna().to_numpy()
    keys = values.map(level_key, na_action="ignore")
    out = keys.map(codes).to_numpy(dtype=np.float64, na_value=np.nan)
    unseen = int((np.isnan(out) & ~mask).sum())
    return out, unseen


def encode_frame(contract: Contract, frame: pd.DataFrame) -> Encoded:
    """The model input for a DataFrame (the path training itself uses).

    Raises:
        InvalidInput: a feature column is missing, or holds values of the wrong kind.
    """
    missing = [n for n in contract.feature_names if n not in frame.columns]
    if missing:
        raise _missing_columns_error(missing, contract)
    wanted = set(contract.feature_names) | {contract.target}
    ignored = tuple(str(c) for c in frame.columns if c not in wanted)
    matrix = np.empty((len(frame), len(contract.features)), dtype=np.float64)
    unseen: dict[str, int] = {}
    for j, feature in enumerate(contract.features):
        values = frame[feature.name]
        if feature.kind == NUMERIC:
            matrix[:, j] = _numeric_series(values, feature.name)
        elif feature.kind == DATETIME:
            matrix[:, j] = _datetime_series(values, feature.name)
        else:
            codes = contract._level_codes[j]
            assert codes is not None
            matrix[:, j], count = _category_series(values, codes)
            if count:
                unseen[feature.name] = count
    return Encoded(matrix, ignored, unseen)


def _number(value: Any, name: str, row: int) -> float:
    if isinstance(value, bool | int | float | np.number):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    raise InvalidInput(
        f"field {name!r} of record {row} must be a number or null; got {value!r}"
    )


def _seconds(value: Any, name: str, row: int) -> float:
    if not isinstance(value, str | datetime | date | pd.Timestamp | np.datetime64):
        raise InvalidInput(
            f"field {name!r} of record {row} must be a date or time (ISO 8601 text) or null; "
            f"got {value!r}"
        )
    try:
        stamp = pd.Timestamp(value)
    except (ValueError, TypeError):
        raise InvalidInput(
            f"field {name!r} of record {row} must be a date or time (ISO 8601 text) or null; "
            f"got {value!r}"
        ) from None
    if pd.isna(stamp):
        return math.nan
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    return float((stamp - _EPOCH) / _SECOND)


def _missing_field(contract: Contract, record: Mapping[str, Any], i: int) -> InvalidInput:
    missing = [n for n in contract.feature_names if n not in record]
    return InvalidInput(
        f"record {i} has no field {missing[0]!r}, which the model needs"
        + (f" (also missing: {', '.join(map(repr, missing[1:]))})" if missing[1:] else "")
        + "; send null for a missing value"
    )


def _slow_value(feature: Feature, codes: dict[str, float] | None, value: Any, i: int,
                unseen: dict[str, int]) -> float:
    """One value of a kind the fast paths of `encode_records` do not take."""
    if _is_missing(value):
        return math.nan
    if feature.kind == NUMERIC:
        return _number(value, feature.name, i)
    if feature.kind == CATEGORY:
        code = codes.get(level_key(value))  # type: ignore[union-attr]
        if code is None:
            unseen[feature.name] = unseen.get(feature.name, 0) + 1
            return math.nan
        return code
    return _seconds(value, feature.name, i)


def encode_records(contract: Contract, records: Sequence[Mapping[str, Any]]) -> Encoded:
    """The model input for a list of record dicts, without building a DataFrame.

    Gives the same matrix as `encode_frame` on a frame of the same records. This
    is the serving path for a few records, so the common JSON types (float, int,
    str, None) take a direct branch per value and the matrix is built once from
    a flat list; anything else goes through the general rules of `_slow_value`.

    Raises:
        InvalidInput: a record lacks a feature field (the message names it and
            the record), or a field holds a value of the wrong kind.
    """
    plan = contract._record_plan
    known = contract._known_fields
    nan = math.nan
    flat: list[float] = []
    put = flat.append
    unseen: dict[str, int] = {}
    extra: set[str] = set()
    for i, record in enumerate(records):
        if not isinstance(record, Mapping):
            raise InvalidInput(f"record {i} must be an object of field names to values")
        if len(record) != len(plan) or not known.issuperset(record):
            extra.update(record.keys() - known)
        for feature, kind, codes in plan:
            try:
                value = record[feature.name]
            except KeyError:
                raise _missing_field(contract, record, i) from None
            kind_of = type(value)
            if value is None:
                put(nan)
            elif kind == 0 and kind_of is float:
                put(value)
            elif kind == 0 and kind_of is int:
                put(float(value))
            elif kind == 1 and kind_of is str:
                code = codes.get(value)  # type: ignore[union-attr]
                if code is None:
                    unseen[feature.name] = unseen.get(feature.name, 0) + 1
                    put(nan)
                else:
                    put(code)
            else:
                put(_slow_value(feature, codes, value, i, unseen))
    matrix = np.array(flat, dtype=np.float64).reshape(len(records), len(plan))
    return Encoded(matrix, tuple(sorted(extra)), unseen)


@dataclass(frozen=True)
class Prediction:
    """What a model said about some rows.

    Attributes:
        values: the predicted label (classification) or number (regression) per row.
        probabilities: for classification, an (n, k) array; column i is `classes[i]`.
        classes: the labels in probability-column order.
        ignored_columns: input columns the model does not use.
        unseen_categories: per column, how many values were categories the model
            never saw in training (treated as missing).
    """

    values: list[Any]
    probabilities: np.ndarray | None
    classes: tuple[Any, ...] | None
    ignored_columns: tuple[str, ...]
    unseen_categories: dict[str, int]


def raw_output(booster: Any, contract: Contract, matrix: np.ndarray) -> np.ndarray:
    """The booster's output on an encoded matrix: (n, k) probabilities or (n,) numbers."""
    raw = np.asarray(booster.predict(matrix), dtype=np.float64)
    if contract.task == "binary":
        return binary_columns(raw)
    return raw


def binary_columns(raw: np.ndarray) -> np.ndarray:
    """(n, 2) probabilities [1 - p, p] from a binary model's (n,) output p
    (what `np.column_stack([1 - p, p])` gives, without its overhead on small inputs)."""
    out = np.empty((raw.shape[0], 2), dtype=np.float64)
    np.subtract(1.0, raw, out=out[:, 0])
    out[:, 1] = raw
    return out


def _prediction(contract: Contract, encoded: Encoded, output: np.ndarray) -> Prediction:
    if contract.classes is None:
        return Prediction(output.tolist(), None, None, encoded.ignored_columns,
                          encoded.unseen_categories)
    classes = contract.classes
    values = [classes[i] for i in output.argmax(axis=1)]
    return Prediction(values, output, classes, encoded.ignored_columns,
                      encoded.unseen_categories)


def _empty(contract: Contract, encoded: Encoded) -> Prediction:
    empty = np.empty((0, len(contract.classes or ())), dtype=np.float64)
    return Prediction([], empty if contract.classes else None, contract.classes,
                      encoded.ignored_columns, encoded.unseen_categories)


def predict(
    booster: Any,
    contract: Contract,
    data: pd.DataFrame | Sequence[Mapping[str, Any]],
) -> Prediction:
    """Predict with a LightGBM booster under its contract.

    Args:
        booster: a `lightgbm.Booster` (see `load_model`).
        contract: the model's preprocessing contract.
        data: a DataFrame, or a list of record dicts (encoded without pandas).

    Returns:
        Predicted labels or numbers, class probabilities, and what was ignored
        or unseen. A DataFrame and the same rows as records give identical output.

    Raises:
        InvalidInput: a required column is missing or holds the wrong kind of value.
    """
    if isinstance(data, pd.DataFrame):
        encoded = encode_frame(contract, data)
    else:
        encoded = encode_records(contract, list(data))
    if encoded.matrix.shape[0] == 0:
        return _empty(contract, encoded)
    return _prediction(contract, encoded, raw_output(booster, contract, encoded.matrix))


class FastPredictor:
    """Low-latency predictions for a few records at a time (the REST server's path).

    `Booster.predict` sets up a predictor on every call, which dominates the
    cost of a single row. This keeps LightGBM's single-row "fast" prediction
    handle (`LGBM_BoosterPredictForMatSingleRowFast`, one thread) open and
    feeds it rows encoded by `encode_records`; the numbers are the ones
    `predict` gives. Calls are serialised by a lock (the handle shares buffers);
    give each worker thread its own predictor for parallelism. Falls back to
    `Booster.predict` when this LightGBM build lacks the fast API.
    """

    def __init__(self, booster: Any, contract: Contract) -> None:
        import ctypes
        import threading

        self.booster = booster
        self.contract = contract
        self._lock = threading.Lock()
        self._ctypes = ctypes
        self._handle: Any = None
        # One output per class for multiclass, else one (probability or value).
        self._width = len(contract.classes or ()) if contract.task == "multiclass" else 1
        self._out = np.empty(self._width, dtype=np.float64)
        self._out_len = ctypes.c_int64(0)
        try:
            from lightgbm.basic import _LIB, _safe_call

            handle = ctypes.c_void_p()
            _safe_call(
                _LIB.LGBM_BoosterPredictForMatSingleRowFastInit(
                    booster._handle,
                    ctypes.c_int(0),  # normal prediction (probabilities / values)
                    ctypes.c_int(0),  # from the first iteration
                    ctypes.c_int(-1),  # to the last (or best) one
                    ctypes.c_int(1),  # C_API_DTYPE_FLOAT64
                    ctypes.c_int32(len(contract.features)),
                    ctypes.c_char_p(b"num_threads=1"),
                    ctypes.byref(handle),
                )
            )
            self._lib, self._safe_call, self._handle = _LIB, _safe_call, handle
        except Exception:  # noqa: BLE001 - an older or unusual LightGBM: use Booster.predict
            self._handle = None

    def _raw(self, matrix: np.ndarray) -> np.ndarray:
        if self._handle is None:
            return np.asarray(self.booster.predict(matrix), dtype=np.float64)
        ctypes = self._ctypes
        out = np.empty((matrix.shape[0], self._width), dtype=np.float64)
        pointer = self._out.ctypes.data_as(ctypes.POINTER(ctypes.c_double))
        with self._lock:
            for i in range(matrix.shape[0]):
                row = np.ascontiguousarray(matrix[i])
                self._safe_call(
                    self._lib.LGBM_BoosterPredictForMatSingleRowFast(
                        self._handle, row.ctypes.data_as(ctypes.c_void_p),
                        ctypes.byref(self._out_len), pointer,
                    )
                )
                out[i] = self._out
        return out[:, 0] if self._width == 1 else out

    def predict(self, records: Sequence[Mapping[str, Any]]) -> Prediction:
        """Like `predict(booster, contract, records)`, with less overhead per call.

        Raises:
            InvalidInput: as `encode_records`.
        """
        encoded = encode_records(self.contract, records)
        if encoded.matrix.shape[0] == 0:
            return _empty(self.contract, encoded)
        raw = self._raw(encoded.matrix)
        output = binary_columns(raw) if self.contract.task == "binary" else raw
        return _prediction(self.contract, encoded, output)

    def close(self) -> None:
        """Free LightGBM's handle (also done when the predictor is collected)."""
        if self._handle is not None:
            self._lib.LGBM_FastConfigFree(self._handle)
            self._handle = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass


def save_model(booster: Any, contract: Contract, directory: str | os.PathLike[str]) -> dict[str, Path]:
    """Write `model.txt` (LightGBM's text format) and `contract.json` into `directory`.

    Returns:
        The two files by name, as `registry.register_version` takes them.
    """
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    model_path = folder / MODEL_FILE
    contract_path = folder / CONTRACT_FILE
    booster.save_model(str(model_path))
    contract_path.write_text(contract.to_json(), encoding="utf-8")
    return {MODEL_FILE: model_path, CONTRACT_FILE: contract_path}


@dataclass(frozen=True)
class LoadedModel:
    """A booster and its contract, ready to predict."""

    booster: Any
    contract: Contract

    @cached_property
    def fast(self) -> FastPredictor:
        """The low-latency single-row predictor (made on first use)."""
        return FastPredictor(self.booster, self.contract)

    def predict(self, data: pd.DataFrame | Sequence[Mapping[str, Any]]) -> Prediction:
        """Predict a DataFrame (batch) or records (a few: the fast path; many: batch)."""
        if not isinstance(data, pd.DataFrame) and len(data) <= 32:
            return self.fast.predict(data)
        return predict(self.booster, self.contract, data)


def load_model(files: Mapping[str, str | os.PathLike[str]] | str | os.PathLike[str]) -> LoadedModel:
    """Load a model saved by `save_model`, from its folder or its files by name.

    Raises:
        NotFound-like PondError: a file is missing.
    """
    import lightgbm as lgb  # heavy; only where a model is really loaded

    if isinstance(files, str | os.PathLike):
        folder = Path(files)
        paths = {MODEL_FILE: folder / MODEL_FILE, CONTRACT_FILE: folder / CONTRACT_FILE}
    else:
        paths = {k: Path(v) for k, v in files.items()}
    for name in (MODEL_FILE, CONTRACT_FILE):
        if name not in paths or not Path(paths[name]).exists():
            raise PondError(f"the model has no {name}; it was not saved by Pond's AutoML")
    contract = Contract.from_json(Path(paths[CONTRACT_FILE]).read_text(encoding="utf-8"))
    booster = lgb.Booster(model_file=str(paths[MODEL_FILE]))
    return LoadedModel(booster, contract)


def json_label(value: Any) -> Any:
    """A class label as a plain JSON value (NumPy scalars become Python ones)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    return value


def labels_in_order(values: Iterable[Any]) -> tuple[Any, ...]:
    """Distinct labels sorted naturally (numbers by value, text alphabetically)."""
    distinct = {json_label(v) for v in values}
    try:
        return tuple(sorted(distinct))
    except TypeError:
        return tuple(sorted(distinct, key=str))
