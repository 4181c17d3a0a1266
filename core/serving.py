"""The REST server (`pond serve`): every model whose `champion` alias points at
an approved version, behind bearer tokens, with every request logged.

Endpoints: `GET /health`, `GET /v1/models`, `POST /v1/models/{name}/predict`
(`{"records": [...]}` for tabular models; `{"prompts": [...]}` for text models
Pond fine-tuned, 501 for other text models), `GET /openapi.json` (each model's
input schema comes from its training contract) and `GET /docs`.

How it stays fast and safe beside the app and the jobs:

- The request path never opens `pond.duckdb`. A background thread re-reads the
  champion aliases and the active token hashes every `REFRESH_SECONDS` in one
  short read, loads any new version through `registry.version_files` (which
  re-checks every file's sha256: a tampered model is left out and logged, the
  others are served), and swaps in a new immutable `Snapshot`. A request takes
  the snapshot once, so an alias move never fails or mixes an in-flight request.
- A batch is checked against the contract's JSON types, encoded by the
  contract's own encoders (`encode_batch`) and predicted in one LightGBM call
  with one thread (one record: LightGBM's single-row fast path,
  `ServingBooster`); the server scales with worker processes (`--workers`)
  instead, because LightGBM's own threads make single-record latency collapse
  under load. Predictions go through a raw ASGI path (`_ServingApp`). The
  background refresher and log writer stay light (a refresh reads the workspace
  only when its files changed), and the GIL switch interval is short, so they
  do not stall requests.
- Every request to a served model, answered or refused, becomes one row of
  the Parquet inference log (`core.inference_log`) before its response leaves.

Errors are `PondError`s; `HTTP_STATUS` is the one table from their codes to
HTTP statuses, and every error body is `{"error": {"code", "message", ...},
"request_id"}`.
"""

from __future__ import annotations

import asyncio
import ctypes
import dataclasses
import gc
import importlib
import itertools
import logging
import math
import os
import re
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Any

import numpy as np
import orjson
import pandas as pd
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from core import features as feature_views
from core import inference_log, model_contract, registry, store
from core.errors import InvalidInput, NotFound, PondError, TamperedArtifact
from core.inference_log import InferenceLogWriter, LogRow
from core.store import Workspace
from core.store import registry as registry_rows
from core.store import tokens as token_rows
from core.tokens import hash_token

log = logging.getLogger("pond.serving")

SERVED_ALIAS = "champion"
REFRESH_SECONDS = 2.0
# A version that failed to load (tampered, unreadable) is retried this often, so
# restoring its files from a backup brings it back without a restart.
RETRY_UNAVAILABLE_SECONDS = 60.0
# A refresh reads the workspace when its files changed, and at least this often.
FULL_REFRESH_SECONDS = 30.0
# How long a thread may hold the GIL while others wait (Python's default is 5 ms). The
# log writer and the refresher run Python in the background; with the default, a request
# that releases the GIL for a socket write can wait milliseconds to get it back.
SWITCH_INTERVAL_S = 0.0005
MAX_BODY_BYTES = 10 * 1024 * 1024
MAX_RECORDS = 10_000
# Batches above this are predicted in a worker thread, so one big request does
# not hold up the small ones queued behind it on the event loop.
INLINE_RECORDS = 64
# Batches this large are encoded column by column (see `encode_batch`).
FRAME_RECORDS = 64
TABULAR_FLAVORS = frozenset({"lightgbm"})
TEXT_FLAVORS = frozenset({"transformers", "peft"})
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
DEFAULT_URL = f"http://{DEFAULT_HOST}:{DEFAULT_PORT}"
_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:\-]{1,64}$")


# --- errors and the one status table ------------------------------------------------


class MalformedRequest(InvalidInput):
    """The body is not JSON, or not a JSON object."""

    code = "malformed_request"


class RequestTooLarge(InvalidInput):
    """The body or the number of records is over the server's limit."""

    code = "request_too_large"


class InvalidRecord(InvalidInput):
    """A record lacks a field or holds a value of the wrong type."""

    code = "invalid_input"

    def __init__(
        self, message: str, *, record: int | None = None, field: str | None = None,
        expected: str | None = None,
    ) -> None:
        super().__init__(message)
        self.details = {k: v for k, v in
                        {"record": record, "field": field, "expected": expected}.items()
                        if v is not None}


class NotServed(NotFound):
    """No served model has this name."""

    code = "not_served"


class ModelUnavailable(PondError):
    """The model's champion exists but cannot be served (tampered files, bad flavor)."""

    code = "model_unavailable"


class NotAvailableYet(PondError):
    """A documented request shape whose implementation comes in a later release."""

    code = "not_implemented"


class Unauthorized(PondError):
    code = "authentication_failed"


# Error code → HTTP status. Codes not listed are server errors.
HTTP_STATUS: dict[str, int] = {
    "malformed_request": 400,
    "authentication_failed": 401,
    "permission_denied": 403,
    "not_found": 404,
    "not_served": 404,
    "method_not_allowed": 405,
    "conflict": 409,
    "request_too_large": 413,
    "invalid_input": 422,
    "internal_error": 500,
    "not_implemented": 501,
    "model_unavailable": 503,
    "tampered_artifact": 503,
    "busy": 503,
}


def http_status(code: str) -> int:
    """The HTTP status for a `PondError.code` (500 for codes the table lacks)."""
    return HTTP_STATUS.get(code, 500)


def error_body(exc: PondError, request_id: str | None) -> dict[str, Any]:
    """The JSON body of an error response."""
    error: dict[str, Any] = {"code": exc.code, "message": exc.message}
    error.update(getattr(exc, "details", {}) or {})
    return {"error": error, "request_id": request_id}


# --- what is served ----------------------------------------------------------------


class ServingBooster:
    """A LightGBM booster as the server calls it: one thread per call (see the module
    docstring), and LightGBM's single-row fast path for one-record requests.

    `Booster.predict` sets up a predictor on every call, which costs about ten times
    the prediction itself for one row (~150 µs against ~11 µs for 100 trees here).
    LightGBM's C API keeps that set-up in a "FastConfig" made once per model; the
    Python package does not wrap it, so it is called through ctypes on the
    package's own library. That call keeps the GIL (`ctypes.PyDLL`): releasing it
    for ~10 µs would let a busy background thread (the log writer) hold it for a
    whole switch interval (5 ms). Both paths run the same trees and give the same
    numbers; if the C API is not there, every call takes the normal path.
    """

    __slots__ = ("booster", "_fast", "_width", "_outputs", "_lib", "_predict_fast", "_row",
                 "_row_address", "_length", "_lock")

    def __init__(self, booster: Any, n_features: int) -> None:
        from lightgbm import basic

        self.booster = booster
        self._width = n_features
        self._outputs = int(booster.num_model_per_iteration())
        self._lib = basic
        self._fast: Any = None
        self._predict_fast: Any = None
        self._row = np.zeros(n_features, dtype=np.float64)
        self._row_address = self._row.ctypes.data
        self._length = ctypes.byref(ctypes.c_int64())
        self._lock = threading.Lock()
        try:
            self._predict_fast = ctypes.PyDLL(
                basic._LIB._name
            ).LGBM_BoosterPredictForMatSingleRowFast
            # Declared types let plain addresses through without a ctypes cast per call.
            self._predict_fast.argtypes = [ctypes.c_void_p, ctypes.c_void_p,
                                           ctypes.POINTER(ctypes.c_int64), ctypes.c_void_p]
            self._predict_fast.restype = ctypes.c_int
            self._fast = _fast_config(booster, n_features)
        except Exception as exc:  # an unusual LightGBM build: keep the normal path
            log.info("LightGBM's single-row fast path is not available: %s", exc)

    def predict(self, data: np.ndarray, **kwargs: Any) -> np.ndarray:
        """Like `Booster.predict(data, num_threads=1, **kwargs)`."""
        if self._fast is not None and not kwargs and data.shape == (1, self._width):
            return self._predict_one(data)
        return self.booster.predict(data, num_threads=1, **kwargs)

    def _predict_one(self, data: np.ndarray) -> np.ndarray:
        # One input buffer per booster, its address taken once (numpy's `.ctypes` costs
        # microseconds per call); the lock keeps two threads from sharing it.
        out = np.empty(self._outputs, dtype=np.float64)
        with self._lock:
            self._row[:] = data[0]
            self._lib._safe_call(self._predict_fast(
                self._fast, self._row_address, self._length,
                out.__array_interface__["data"][0],
            ))
        return out if self._outputs == 1 else out.reshape(1, self._outputs)

    def __del__(self) -> None:
        if getattr(self, "_fast", None) is not None:
            try:
                self._lib._LIB.LGBM_FastConfigFree(self._fast)
            except Exception:  # interpreter shutdown: the process frees it anyway
                pass


def _fast_config(booster: Any, n_features: int) -> Any:
    from lightgbm.basic import _LIB, _c_str, _safe_call

    predict_normal, float64 = 0, 1  # C_API_PREDICT_NORMAL, C_API_DTYPE_FLOAT64
    handle = ctypes.c_void_p()
    _safe_call(_LIB.LGBM_BoosterPredictForMatSingleRowFastInit(
        booster._handle, ctypes.c_int(predict_normal), ctypes.c_int(0), ctypes.c_int(-1),
        ctypes.c_int(float64), ctypes.c_int32(n_features), _c_str("num_threads=1"),
        ctypes.byref(handle),
    ))
    return handle


@dataclass(frozen=True)
class ServedModel:
    """One model version the server answers for.

    Attributes:
        kind: "tabular" (takes records) or "text" (takes prompts; reserved).
        model: the loaded booster and contract (None for text models for now).
        generator: a text model fine-tuned by `core.finetune`, answering prompts
            (None for tabular models and for text models Pond did not fine-tune).
    """

    name: str
    version: int
    task: str | None
    flavor: str
    kind: str
    model: model_contract.LoadedModel | None
    loaded_at: datetime
    generator: Any = None
    # A model trained on a feature view: its row-level steps, applied to each request.
    features: Any = None

    @property
    def contract(self) -> model_contract.Contract | None:
        return None if self.model is None else self.model.contract

    def describe(self) -> dict[str, Any]:
        """What `GET /v1/models` says about this model."""
        out: dict[str, Any] = {
            "name": self.name,
            "version": self.version,
            "alias": SERVED_ALIAS,
            "task": self.task,
            "flavor": self.flavor,
            "input": "records" if self.kind == "tabular" else "prompts",
            "ready": self.model is not None or self.generator is not None,
            "loaded_at": self.loaded_at.isoformat(),
        }
        contract = self.contract
        if contract is not None:
            out["features"] = [f.to_dict() for f in contract.features]
            out["classes"] = None if contract.classes is None else list(contract.classes)
            out["unseen_category"] = contract.unseen_category
        return out


@dataclass(frozen=True)
class Unavailable:
    """A champion the server refuses to serve, and why."""

    name: str
    version: int
    code: str
    reason: str
    checked_at: float

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "code": self.code,
                "reason": self.reason}


@dataclass(frozen=True)
class Snapshot:
    """Everything the request path needs, read in the background and swapped whole."""

    models: Mapping[str, ServedModel] = field(default_factory=lambda: MappingProxyType({}))
    unavailable: Mapping[str, Unavailable] = field(
        default_factory=lambda: MappingProxyType({})
    )
    tokens: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    refreshed_at: datetime | None = None

    @property
    def served_key(self) -> tuple[tuple[str, int], ...]:
        return tuple(sorted((m.name, m.version) for m in self.models.values()))


def _load_served(ws: Workspace, name: str, version: int) -> ServedModel | Unavailable:
    """Load one champion, or say why it cannot be served."""
    now = time.monotonic()
    try:
        found = registry.get_version(ws, name, version)
        if found.status is not registry.VersionStatus.APPROVED:
            return Unavailable(name, version, "model_unavailable",
                               f"model '{name}' version {version} is {found.status.value}, "
                               "not approved", now)
        loaded_at = datetime.now(UTC)
        if found.flavor in TEXT_FLAVORS:
            return ServedModel(name, version, found.task, found.flavor, "text", None, loaded_at,
                               _text_generator(ws, name, version))
        if found.flavor not in TABULAR_FLAVORS:
            return Unavailable(name, version, "model_unavailable",
                               f"model '{name}' version {version} has flavor "
                               f"'{found.flavor}', which Pond cannot serve", now)
        files = registry.version_files(ws, name, version)
        loaded = model_contract.load_model(files)
        wrapped = model_contract.LoadedModel(
            ServingBooster(loaded.booster, len(loaded.contract.features)), loaded.contract
        )
        return ServedModel(name, version, found.task, found.flavor, "tabular", wrapped,
                           loaded_at,
                           features=feature_views.serving_transform(ws, found, loaded.contract))
    except TamperedArtifact as exc:
        log.error("not serving model '%s' version %s: %s", name, version, exc)
        return Unavailable(name, version, exc.code, exc.message, now)
    except Exception as exc:  # one broken model must not stop the others
        log.exception("could not load model '%s' version %s", name, version)
        message = exc.message if isinstance(exc, PondError) else f"{type(exc).__name__}: {exc}"
        return Unavailable(name, version, "model_unavailable",
                           f"model '{name}' version {version} could not be loaded: {message}",
                           now)


def workspace_stamp(ws: Workspace) -> tuple[Any, ...]:
    """Size, modification time and inode of the workspace database and its WAL: any
    commit changes one of them."""
    out: list[Any] = []
    for path in (ws.db_path, ws.db_path.with_name(ws.db_path.name + ".wal")):
        try:
            info = os.stat(path)
        except FileNotFoundError:
            out.append(None)
        else:
            out.append((info.st_mtime_ns, info.st_size, info.st_ino))
    return tuple(out)


def _recent(stamp: tuple[Any, ...], seconds: float = 2.0) -> bool:
    """Whether a file changed in the last `seconds` (file times are coarse: a second
    commit within one tick could keep the same time, so recent files are re-read)."""
    newest = max((part[0] for part in stamp if part is not None), default=0)
    return time.time_ns() - newest < seconds * 1e9


def load_snapshot(ws: Workspace, previous: Snapshot | None = None) -> Snapshot:
    """Read the champions and tokens in one short read and load what changed.

    Versions already loaded in `previous` are reused (a version's files never
    change), so a refresh with nothing new costs one small query.

    Returns:
        A new snapshot; models that failed to load are in `unavailable`.
    """
    previous = previous or Snapshot()
    with store.read(ws) as con:
        champions = registry_rows.all_aliases(con, SERVED_ALIAS)
        tokens = token_rows.active_by_hash(con)
    models: dict[str, ServedModel] = {}
    unavailable: dict[str, Unavailable] = {}
    now = time.monotonic()
    for row in champions:
        name, version = row["model_name"], int(row["version"])
        held = previous.models.get(name)
        if held is not None and held.version == version:
            models[name] = held
            continue
        refused = previous.unavailable.get(name)
        if (refused is not None and refused.version == version
                and now - refused.checked_at < RETRY_UNAVAILABLE_SECONDS):
            unavailable[name] = refused
            continue
        loaded = _load_served(ws, name, version)
        if isinstance(loaded, ServedModel):
            models[name] = loaded
            log.info("serving model '%s' version %s", name, version)
        else:
            unavailable[name] = loaded
    return Snapshot(MappingProxyType(models), MappingProxyType(unavailable),
                    MappingProxyType(tokens), datetime.now(UTC))


def load_champion(ws: Workspace, name: str) -> ServedModel:
    """The champion of one model, loaded in this process (the app's "try it" without
    a server).

    Raises:
        NotServed: the model has no champion. ModelUnavailable / TamperedArtifact:
            it cannot be served.
    """
    champions = {a.model: a.version for a in registry.list_aliases(ws, SERVED_ALIAS)}
    if name not in champions:
        raise NotServed(
            f"model '{name}' has no '{SERVED_ALIAS}' alias, so it is not served; a reviewer "
            f"can set one with `pond registry set-alias {name} {SERVED_ALIAS} VERSION`"
        )
    loaded = _load_served(ws, name, champions[name])
    if isinstance(loaded, Unavailable):
        raise (TamperedArtifact if loaded.code == "tampered_artifact" else ModelUnavailable)(
            loaded.reason
        )
    return loaded


# --- one prediction ----------------------------------------------------------------


def parse_body(body: bytes | str) -> Any:
    """The JSON in a request body.

    Raises:
        MalformedRequest: not JSON (NaN and Infinity are not JSON either).
    """
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MalformedRequest(
            f"the request body is not valid JSON ({exc}); send an object like "
            '{"records": [{...}]}. NaN and Infinity are not JSON: send null for a missing '
            "value"
        ) from None


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _short(value: Any) -> str:
    text = orjson.dumps(value, default=str).decode()
    return text if len(text) <= 60 else text[:57] + "..."


# What each contract kind accepts, as JSON types, and how errors describe it.
_EXPECTED = {
    model_contract.NUMERIC: "a number or null",
    model_contract.CATEGORY: "a category (text, number or boolean) or null",
    model_contract.DATETIME: "a date-time as ISO 8601 text (years 1678 to 2261) or null",
}
# The encoder holds dates as pandas nanosecond timestamps (1677-09-21 to 2262-04-11);
# whole years 1678-2261 keep the rule easy to state. The OpenAPI schema carries the
# year part as a pattern beside `format: date-time`.
_YEARS = r"(16(7[89]|[89][0-9])|1[7-9][0-9]{2}|2[01][0-9]{2}|22[0-5][0-9]|226[01])"
DATE_TIME_YEARS = f"^{_YEARS}-"
# ISO 8601 as clients send it: a date, optionally a time, optionally an offset (none = UTC).
_DATE_TIME_RE = re.compile(
    DATE_TIME_YEARS
    + r"[0-9]{2}-[0-9]{2}([Tt ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]+)?)?)?"
    r"([Zz]|[+-][0-9]{2}(:?[0-9]{2})?)?$"
)


def _accepts(kind: str, value: Any) -> bool:
    kind_of = type(value)
    if kind == model_contract.NUMERIC:
        return (kind_of is int or kind_of is float) and math.isfinite(value)
    if kind == model_contract.CATEGORY:
        return kind_of is str or kind_of is bool or (
            (kind_of is int or kind_of is float) and math.isfinite(value)
        )
    return kind_of is str and _DATE_TIME_RE.match(value) is not None


def check_records(contract: model_contract.Contract, records: Sequence[Any]) -> None:
    """Check every record against the contract's JSON types.

    Stricter than the encoder on purpose: over REST a number must be a JSON
    number (not text, not a boolean), exactly as the OpenAPI schema says.

    Raises:
        InvalidRecord: the first record without a needed field or with a value
            of the wrong type, naming the record, the field and the expected type.
    """
    fields = [(f.name, f.kind) for f in contract.features]
    for i, record in enumerate(records):
        if type(record) is not dict:
            raise InvalidRecord(
                f"record {i} must be an object of field names to values; got "
                f"{_json_type(record)} {_short(record)}", record=i, expected="object",
            )
        for name, kind in fields:
            try:
                value = record[name]
            except KeyError:
                raise InvalidRecord(
                    f"record {i} has no field {name!r}, which the model needs: "
                    f"{_EXPECTED[kind]} (send null for a missing value)",
                    record=i, field=name, expected=_EXPECTED[kind],
                ) from None
            if value is not None and not _accepts(kind, value):
                raise InvalidRecord(
                    f"field {name!r} of record {i} must be {_EXPECTED[kind]}; got "
                    f"{_json_type(value)} {_short(value)}",
                    record=i, field=name, expected=_EXPECTED[kind],
                )


_REQUEST_FIELDS = frozenset({"records", "prompts", "explain"})


def _check_payload(served: ServedModel, payload: Any, max_records: int) -> list[Any]:
    """The records (or prompts) of a request body, after checking its shape."""
    if type(payload) is not dict:
        raise MalformedRequest(
            f"the request body must be a JSON object like {{\"records\": [...]}}; got "
            f"{_json_type(payload)}"
        )
    unknown = payload.keys() - _REQUEST_FIELDS
    if unknown:
        raise InvalidRecord(
            f"unknown request field {sorted(unknown)[0]!r}; a request takes "
            "'records' (tabular models), 'prompts' (text models) and 'explain'",
            field=sorted(unknown)[0],
        )
    key = "records" if served.kind == "tabular" else "prompts"
    other = "prompts" if key == "records" else "records"
    if other in payload:
        raise InvalidRecord(
            f"model '{served.name}' version {served.version} is a {served.kind} model: send "
            f"{{\"{key}\": [...]}}, not '{other}'", field=other,
        )
    items = payload.get(key)
    if type(items) is not list:
        raise InvalidRecord(
            f"the request needs '{key}': a list of "
            f"{'objects (one per row)' if key == 'records' else 'texts'}; got "
            f"{_json_type(items) if key in payload else 'nothing'}",
            field=key, expected="array",
        )
    if not items:
        raise InvalidRecord(f"'{key}' is empty; send at least one", field=key)
    if len(items) > max_records:
        raise RequestTooLarge(
            f"the request has {len(items):,} {key}; this server takes at most "
            f"{max_records:,} per request: split it into batches"
        )
    explain = payload.get("explain", False)
    if type(explain) is not bool:
        raise InvalidRecord(f"'explain' must be true or false; got {_short(explain)}",
                            field="explain", expected="boolean")
    return items


def encode_batch(
    contract: model_contract.Contract, records: list[Any]
) -> model_contract.Encoded:
    """The model input for checked records, through the contract's own encoders.

    Small requests go through `encode_records`; a large batch goes through
    `encode_frame` on a DataFrame of its records, the column-wise path training
    uses, about ten times faster per row and documented to give the same matrix.
    Where the frame path refuses a batch (mixed date formats in one column, say),
    the per-record path runs instead and its error names the record and field.

    Raises:
        InvalidRecord: a value the encoder cannot hold (for example a date out of range).
        InvalidInput: a value the encoder refuses.
    """
    if len(records) >= FRAME_RECORDS:
        try:
            encoded = model_contract.encode_frame(contract, pd.DataFrame.from_records(records))
        except (PondError, ValueError, TypeError, OverflowError):
            pass
        else:
            # The record path lists ignored fields sorted; keep warnings alike.
            return model_contract.Encoded(encoded.matrix, tuple(sorted(encoded.ignored_columns)),
                                          encoded.unseen_categories)
    try:
        return model_contract.encode_records(contract, records)
    except (OverflowError, ValueError):  # dates pandas cannot hold (before 1677, after 2262)
        raise _locate_encoding_error(contract, records) from None


def _locate_encoding_error(contract: model_contract.Contract, records: Sequence[Any]) -> PondError:
    """The record and field that made the encoder fail outside its own checks."""
    for i, record in enumerate(records):
        for feature in contract.features:
            alone = {f.name: None for f in contract.features} | {feature.name: record[feature.name]}
            try:
                model_contract.encode_records(contract, [alone])
            except (OverflowError, ValueError):
                expected = _EXPECTED[feature.kind]
                return InvalidRecord(
                    f"field {feature.name!r} of record {i} is out of range: it must be "
                    f"{expected}, between the years 1677 and 2262; got "
                    f"{_short(record[feature.name])}",
                    record=i, field=feature.name, expected=expected,
                )
    return InvalidRecord("a record could not be encoded for the model")


def _warnings(encoded: model_contract.Encoded, contract: model_contract.Contract) -> list[dict]:
    out: list[dict[str, Any]] = []
    if encoded.ignored_columns:
        names = ", ".join(repr(c) for c in encoded.ignored_columns)
        out.append({
            "code": "ignored_fields",
            "message": f"the model does not use {names}; ignored",
            "fields": list(encoded.ignored_columns),
        })
    if encoded.unseen_categories:
        parts = ", ".join(f"{n} in {c!r}" for c, n in encoded.unseen_categories.items())
        out.append({
            "code": "unseen_categories",
            "message": f"categories the model never saw in training ({parts}) were treated "
            f"as missing values (rule: {contract.unseen_category})",
            "counts": dict(encoded.unseen_categories),
        })
    return out


def _explainer() -> Any:
    """`core.explain.contributions`, or None in a Pond without it."""
    try:
        module = importlib.import_module("core.explain")
    except ImportError:
        return None
    return getattr(module, "contributions", None)


def explain_available() -> bool:
    """Whether `"explain": true` is answered (the OpenAPI document offers it only then)."""
    return _explainer() is not None


def _explain(served: ServedModel, records: list[Any]) -> list[dict[str, Any]]:
    contributions = _explainer()
    if contributions is None:
        raise NotAvailableYet(
            "explanations (\"explain\": true) are not available in this Pond yet; send the "
            "request without 'explain'"
        )
    assert served.model is not None
    return contributions(served.model, records)


def predict_payload(served: ServedModel, payload: Any, request_id: str,
                    *, max_records: int = MAX_RECORDS) -> dict[str, Any]:
    """Answer one request body: validate, encode, predict the batch in one call.

    This is what the server runs per request, and what the app's "try it" runs
    in-process when no server is up.

    Args:
        served: the model version answering.
        payload: the parsed JSON body.
        request_id: echoed in the answer.

    Returns:
        The response body: `model`, `version`, `request_id`, `predictions`,
        `classes` and `probabilities` for classifiers, `warnings`.

    Raises:
        MalformedRequest, InvalidRecord: the body does not fit the model's contract.
        RequestTooLarge: more than `max_records` records.
        NotAvailableYet: prompts to a text model, or explanations, not built yet.
    """
    items = _check_payload(served, payload, max_records)
    if served.kind == "text" and served.generator is not None:
        return _generate_answer(served, items, request_id)
    if served.kind == "text" or served.model is None:
        raise NotAvailableYet(
            f"model '{served.name}' version {served.version} is a text model; serving text "
            "models ({\"prompts\": [...]}) comes in a later Pond release"
        )
    contract = served.model.contract
    if served.features is not None:  # same feature view steps as training, then the contract
        items = served.features.transform(items)
    check_records(contract, items)
    encoded = encode_batch(contract, items)
    output = model_contract.raw_output(served.model.booster, contract, encoded.matrix)
    answer: dict[str, Any] = {
        "model": served.name,
        "version": served.version,
        "request_id": request_id,
    }
    if contract.classes is None:
        answer["predictions"] = output.tolist()
    else:
        classes = contract.json_classes
        answer["predictions"] = [classes[i] for i in output.argmax(axis=1).tolist()]
        answer["classes"] = classes
        answer["probabilities"] = output.tolist()
    if payload.get("explain"):
        answer["contributions"] = _explain(served, items)
    answer["warnings"] = _warnings(encoded, contract)
    return answer


# --- text models fine-tuned by core.finetune -------------------------------------------------
# The one hook between serving and fine-tuning: a text version whose files hold
# core.finetune's manifest is loaded by core.finetune and answers `{"prompts": [...]}`
# with one generation per prompt. Other text versions keep the reserved 501.


def _is_fine_tuned(version: registry.ModelVersion) -> bool:
    finetune = importlib.import_module("core.finetune")
    return finetune.is_text_model([f.name for f in version.files])


def _text_generator(ws: Workspace, name: str, version: int) -> Any:
    """The loaded fine-tuned model of a text version, or None when Pond did not fine-tune it."""
    files = registry.version_files(ws, name, version)
    finetune = importlib.import_module("core.finetune")  # torch loads only for text models
    if not finetune.is_text_model(files):
        return None
    return finetune.load_text_model(files)


def _generate_answer(served: ServedModel, prompts: list[Any], request_id: str) -> dict[str, Any]:
    for i, prompt in enumerate(prompts):
        if type(prompt) is not str or not prompt.strip():
            raise InvalidRecord(
                f"prompt {i} must be a non-empty text; got {_json_type(prompt)} {_short(prompt)}",
                record=i, field="prompts", expected="string",
            )
    limit = getattr(served.generator, "max_prompts", 64)
    if len(prompts) > limit:
        raise RequestTooLarge(
            f"the request has {len(prompts)} prompts; a text model takes at most {limit} per "
            "request: split them into batches"
        )
    return {"model": served.name, "version": served.version, "request_id": request_id,
            "predictions": served.generator.generate(prompts), "warnings": []}


def example_record(contract: model_contract.Contract) -> dict[str, Any]:
    """A record that fits the contract (first level of each category, 0 for numbers)."""
    out: dict[str, Any] = {}
    for f in contract.features:
        if f.kind == model_contract.NUMERIC:
            out[f.name] = 0.0
        elif f.kind == model_contract.CATEGORY:
            out[f.name] = model_contract.json_label(f.levels[0]) if f.levels else None
        else:
            out[f.name] = "2024-01-01T00:00:00Z"
    return out


# --- what the app's Serve page shows -----------------------------------------------------


@dataclass(frozen=True)
class LiveModel:
    """A model's champion as the registry has it (what a server would serve)."""

    name: str
    version: int
    task: str | None
    flavor: str
    set_by: str
    set_at: datetime
    servable: bool
    note: str


@dataclass(frozen=True)
class ServeOverview:
    """The Serve page's numbers: champions, and per-version traffic from the logs."""

    live: tuple[LiveModel, ...]
    stats: tuple[inference_log.ServingStats, ...]
    since: datetime | None

    @property
    def requests(self) -> int:
        return sum(s.requests for s in self.stats)

    @property
    def errors(self) -> int:
        return sum(s.errors for s in self.stats)


# The traffic windows the Serve page offers, by label.
WINDOWS: dict[str, timedelta | None] = {
    "last hour": timedelta(hours=1),
    "last day": timedelta(days=1),
    "last 7 days": timedelta(days=7),
    "all time": None,
}


def live_models(ws: Workspace) -> list[LiveModel]:
    """Every model's champion, by name, and whether a server can serve it."""
    out = []
    for alias in registry.list_aliases(ws, SERVED_ALIAS):
        found = registry.get_version(ws, alias.model, alias.version)
        if found.flavor in TABULAR_FLAVORS:
            servable, note = True, "records"
        elif found.flavor in TEXT_FLAVORS and _is_fine_tuned(found):
            servable, note = True, "prompts"
        elif found.flavor in TEXT_FLAVORS:
            servable, note = False, "text model: prompts are served in a later release"
        else:
            servable, note = False, f"flavor '{found.flavor}' cannot be served"
        out.append(LiveModel(alias.model, alias.version, found.task, found.flavor,
                             alias.set_by, alias.set_at, servable, note))
    return out


def serve_overview(ws: Workspace, window: str = "all time") -> ServeOverview:
    """Champions and traffic (requests, errors, latency percentiles) in a window.

    Args:
        window: one of `WINDOWS` ("last hour", "last day", "last 7 days", "all time").

    Raises:
        InvalidInput: an unknown window.
    """
    if window not in WINDOWS:
        raise InvalidInput(f"unknown window {window!r}; use one of {', '.join(WINDOWS)}")
    span = WINDOWS[window]
    since = None if span is None else datetime.now(UTC) - span
    return ServeOverview(tuple(live_models(ws)),
                         tuple(inference_log.serving_stats(ws, since=since)), since)


def example_request(ws: Workspace, model: str) -> str:
    """A request body (JSON text) for `model`'s champion, for the "try it" form.

    Raises:
        NotServed, ModelUnavailable, TamperedArtifact: see `load_champion`.
    """
    served = load_champion(ws, model)
    if served.contract is None:
        return orjson.dumps({"prompts": ["Hello"]}, option=orjson.OPT_INDENT_2).decode()
    record = served.features.example_record() if served.features else None  # a feature view's input
    return orjson.dumps({"records": [record or example_record(served.contract)]},
                        option=orjson.OPT_INDENT_2).decode()


@dataclass(frozen=True)
class TryResult:
    """What a "try it" request got back, and which way it went."""

    via: str
    status: int
    body: dict[str, Any]
    note: str


def try_request(
    ws: Workspace, model: str, body: str, *, url: str = DEFAULT_URL, token: str | None = None,
    timeout_s: float = 10.0,
) -> TryResult:
    """Send a request body to the server at `url`, or, when nothing answers there,
    predict in this process through `predict_payload` (not logged: no server saw it).

    Returns:
        The status and JSON body, as a client would see them, and `via`
        ("server" or "in-process") with a note saying which.
    """
    import httpx

    base = url.rstrip("/")
    try:
        httpx.get(f"{base}/health", timeout=min(timeout_s, 2.0))
    except httpx.HTTPError:
        return _try_in_process(ws, model, body, base)
    headers = {"content-type": "application/json"}
    if token:
        headers["authorization"] = f"Bearer {token.strip()}"
    try:
        response = httpx.post(f"{base}/v1/models/{model}/predict", content=body.encode(),
                              headers=headers, timeout=timeout_s)
    except httpx.HTTPError as exc:
        return TryResult("server", 0, {"error": {"code": "unreachable", "message": str(exc)}},
                         f"the server at {base} did not answer: {exc}")
    try:
        payload = response.json()
    except ValueError:
        payload = {"text": response.text[:2000]}
    return TryResult("server", response.status_code, payload,
                     f"sent to the server at {base}; it logged the request")


def _try_in_process(ws: Workspace, model: str, body: str, base: str) -> TryResult:
    request_id = uuid.uuid4().hex
    note = (f"no server answers at {base}, so this ran in the app's process with the same "
            "code (not logged)")
    try:
        answer = predict_payload(load_champion(ws, model), parse_body(body), request_id)
        return TryResult("in-process", 200, answer, note)
    except PondError as exc:
        return TryResult("in-process", http_status(exc.code), error_body(exc, request_id), note)


# --- the running server --------------------------------------------------------------


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int = MAX_BODY_BYTES
    max_records: int = MAX_RECORDS


@dataclass(frozen=True)
class Answer:
    """A finished response: status, JSON body and request id."""

    status: int
    body: bytes
    request_id: str


class ServingState:
    """The served snapshot, its refresher thread and the inference log of one process."""

    def __init__(
        self,
        ws: Workspace,
        *,
        refresh_s: float = REFRESH_SECONDS,
        limits: Limits = Limits(),
        log_flush_s: float | None = None,
    ) -> None:
        self.ws = ws
        self.refresh_s = refresh_s
        self.limits = limits
        self.snapshot = Snapshot()
        self.log = (InferenceLogWriter(ws) if log_flush_s is None
                    else InferenceLogWriter(ws, flush_s=log_flush_s))
        self.last_refresh_error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._openapi: tuple[tuple, dict[str, Any]] | None = None
        self._stamp: tuple[Any, ...] | None = None
        self._full_refresh_at = -math.inf
        self._id_prefix = uuid.uuid4().hex[:16]
        self._id_counter = itertools.count(1)

    # lifecycle

    def refresh(self, *, force: bool = False) -> Snapshot:
        """Re-read champions and tokens now; on failure keep serving the old snapshot.

        Opening the workspace costs tens of milliseconds of CPU, taken from requests
        (it holds the GIL), so a refresh first compares the database files' size and
        modification time with the last read's: nothing committed, nothing to read.
        A full read still happens every `FULL_REFRESH_SECONDS` (refused models are
        retried then), and when `force` is set.
        """
        try:
            stamp = workspace_stamp(self.ws)
            now = time.monotonic()
            if (not force and stamp == self._stamp and not _recent(stamp)
                    and now - self._full_refresh_at < FULL_REFRESH_SECONDS):
                self.snapshot = dataclasses.replace(self.snapshot, refreshed_at=datetime.now(UTC))
                self.last_refresh_error = None
                return self.snapshot
            self.snapshot = load_snapshot(self.ws, self.snapshot)
            self._stamp, self._full_refresh_at = stamp, now
            self.last_refresh_error = None
        except Exception as exc:
            self.last_refresh_error = f"{type(exc).__name__}: {exc}"
            log.warning("could not refresh the served models: %s", exc)
        return self.snapshot

    def start(self) -> None:
        """Load what is served, then start the refresher and the log writer."""
        sys.setswitchinterval(SWITCH_INTERVAL_S)
        self.refresh()
        self.log.start()
        self._thread = threading.Thread(target=self._run, name="pond-refresh", daemon=True)
        self._thread.start()
        # Everything loaded so far (pandas, LightGBM, the models) lives as long as the
        # server; keeping it out of the garbage collector's scans shortens its pauses.
        gc.freeze()

    def stop(self) -> None:
        """Stop refreshing and write every logged request still buffered."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.log.close()

    def _run(self) -> None:
        while not self._stop.wait(self.refresh_s):
            self.refresh()

    # requests

    def begin(self, headers: Mapping[str, str]) -> tuple[str, datetime, float]:
        """The request id (the client's `X-Request-ID` when it is sane), time and clock."""
        given = headers.get("x-request-id")
        if given and _REQUEST_ID_RE.match(given):
            request_id = given
        else:
            # A random prefix per process and a counter: unique across servers and
            # restarts, without a getrandom() call per request.
            request_id = f"{self._id_prefix}{next(self._id_counter):08x}"
        return request_id, datetime.now(UTC), time.perf_counter()

    def authenticate(self, snapshot: Snapshot, authorization: str | None) -> int:
        """The id of the active token in an `Authorization: Bearer` header.

        Raises:
            Unauthorized: no header, not a bearer token, or an unknown or revoked token.
        """
        if not authorization:
            raise Unauthorized(
                "this endpoint needs an API token: send 'Authorization: Bearer <token>' "
                "(an admin makes one with `pond tokens create NAME`)"
            )
        scheme, _, secret = authorization.partition(" ")
        token_id = snapshot.tokens.get(hash_token(secret.strip())) if secret else None
        if scheme.lower() != "bearer" or token_id is None:
            raise Unauthorized("the API token is unknown or revoked")
        return token_id

    async def predict(self, name: str, headers: Mapping[str, str], receive: Receive) -> Answer:
        """Answer `POST /v1/models/{name}/predict` and log it. Never raises.

        Args:
            headers: the request headers, by lower-case name.
            receive: the ASGI channel the body arrives on.
        """
        snapshot = self.snapshot
        request_id, received_at, started = self.begin(headers)
        served = snapshot.models.get(name)
        token_id: int | None = None
        payload: Any = None
        n_records = 0
        try:
            token_id = self.authenticate(snapshot, headers.get("authorization"))
            if served is None:
                raise self._not_served(snapshot, name)
            payload = parse_body(await _read_body(headers, receive, self.limits.max_body_bytes))
            items = payload.get(  # sized here so oversized requests are logged with their size
                "records" if served.kind == "tabular" else "prompts"
            ) if type(payload) is dict else None
            n_records = len(items) if type(items) is list else 0
            # Generation takes long: text requests never run on the event loop.
            if n_records > INLINE_RECORDS or served.kind == "text":
                result = await asyncio.to_thread(
                    predict_payload, served, payload, request_id,
                    max_records=self.limits.max_records,
                )
            else:
                result = predict_payload(served, payload, request_id,
                                         max_records=self.limits.max_records)
            status, body = 200, orjson.dumps(result)
        except PondError as exc:
            status, body = http_status(exc.code), orjson.dumps(error_body(exc, request_id))
        except Exception as exc:  # a bug: answer 500, keep serving
            log.exception("request %s to model '%s' failed", request_id, name)
            status, body = 500, orjson.dumps({
                "error": {"code": "internal_error",
                          "message": f"internal error ({type(exc).__name__}); see the server log"},
                "request_id": request_id,
            })
        logged = served or snapshot.unavailable.get(name)
        if logged is not None:
            self.log.append(LogRow(
                request_id=request_id, model=name, version=logged.version,
                received_at=received_at, latency_ms=(time.perf_counter() - started) * 1e3,
                status=status, error_code=None if status == 200 else _code_of(body),
                n_records=n_records,
                inputs=(payload.get("records") or payload.get("prompts")
                        if type(payload) is dict and n_records <= self.limits.max_records
                        else None),
                outputs=body, token_id=token_id,
            ))
        return Answer(status, body, request_id)

    def _not_served(self, snapshot: Snapshot, name: str) -> PondError:
        refused = snapshot.unavailable.get(name)
        if refused is not None:
            return ModelUnavailable(refused.reason)
        served = ", ".join(sorted(snapshot.models)) or "none"
        return NotServed(
            f"no model named '{name}' is served here (served: {served}); a model is served "
            f"once a reviewer points its '{SERVED_ALIAS}' alias at an approved version"
        )

    def models(self, authorization: str | None) -> dict[str, Any]:
        """`GET /v1/models`: what is served and what is refused.

        Raises:
            Unauthorized: see `authenticate`.
        """
        snapshot = self.snapshot
        self.authenticate(snapshot, authorization)
        return {
            "models": [m.describe() for _, m in sorted(snapshot.models.items())],
            "unavailable": [u.describe() for _, u in sorted(snapshot.unavailable.items())],
            "refreshed_at": snapshot.refreshed_at,
        }

    def health(self) -> dict[str, Any]:
        """`GET /health`: up, how many models, how fresh the snapshot is."""
        snapshot = self.snapshot
        age = (None if snapshot.refreshed_at is None
               else (datetime.now(UTC) - snapshot.refreshed_at).total_seconds())
        stale = age is None or age > max(10 * self.refresh_s, 30)
        return {
            "status": "degraded" if stale or self.last_refresh_error else "ok",
            "models": len(snapshot.models),
            "unavailable": len(snapshot.unavailable),
            "refreshed_at": snapshot.refreshed_at,
            "refresh_error": self.last_refresh_error,
            "log_error": self.log.last_error,
            "pid": os.getpid(),
        }

    def openapi(self) -> dict[str, Any]:
        """The OpenAPI document for what is served now (cached until that changes)."""
        snapshot = self.snapshot
        key = snapshot.served_key
        if self._openapi is None or self._openapi[0] != key:
            self._openapi = (key, openapi_document(snapshot, self.limits))
        return self._openapi[1]


def _code_of(body: bytes) -> str | None:
    try:
        return orjson.loads(body)["error"]["code"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return None


async def _read_body(headers: Mapping[str, str], receive: Receive, limit: int) -> bytes:
    """The request body, refused as soon as it is known to pass `limit` bytes."""
    length = headers.get("content-length")
    if length is not None:
        if not length.isdigit():
            raise MalformedRequest(f"the Content-Length header {length!r} is not a number")
        if int(length) > limit:
            raise RequestTooLarge(
                f"the request body has {int(length):,} bytes; this server takes at most "
                f"{limit:,} bytes per request: split the records into batches"
            )
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise MalformedRequest("the client went away before sending the whole body")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise RequestTooLarge(
                f"the request body has more than {limit:,} bytes, the most this server takes "
                "per request: split the records into batches"
            )
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


# --- the OpenAPI document ----------------------------------------------------------------


def _feature_schema(feature: model_contract.Feature) -> dict[str, Any]:
    if feature.kind == model_contract.NUMERIC:
        return {"type": ["number", "null"],
                "description": f"{feature.name}: a number ({feature.dtype} in training); "
                "null for a missing value"}
    if feature.kind == model_contract.CATEGORY:
        levels = list(feature.levels or ())
        shown = ", ".join(levels[:20]) + (f", … ({len(levels)} in all)" if len(levels) > 20
                                          else "")
        return {"type": ["string", "number", "boolean", "null"],
                "description": f"{feature.name}: a category; seen in training: {shown}. Other "
                "values are treated as missing and reported in the warnings",
                "examples": levels[:5]}
    return {"type": ["string", "null"], "format": "date-time", "pattern": DATE_TIME_YEARS,
            "description": f"{feature.name}: a date-time as ISO 8601 text, years 1678 to 2261 "
            "(a date alone, or no offset, is read as UTC); null for a missing value"}


def record_schema(contract: model_contract.Contract) -> dict[str, Any]:
    """The JSON schema of one input record, derived from a model's contract."""
    return {
        "type": "object",
        "required": contract.feature_names,
        "properties": {f.name: _feature_schema(f) for f in contract.features},
        "additionalProperties": True,
        "description": "One row. Fields the model does not use are ignored and reported in "
        "the response's warnings.",
    }


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _error_responses(*statuses: int) -> dict[str, Any]:
    words = {400: "malformed JSON or not a JSON object", 401: "no token, or an unknown or "
             "revoked one", 404: "no model of that name is served", 413: "the body or the "
             "number of records is over the limit", 422: "a record lacks a field or holds a "
             "value of the wrong type (the error names both)", 501: "a request shape that "
             "comes in a later release", 503: "the model's champion cannot be served (for "
             "example its files failed their hash check)"}
    return {str(s): {"description": words[s],
                     "content": {"application/json": {"schema": _ref("Error")}}}
            for s in statuses}


def _predict_operation(name: str | None, served: ServedModel | None,
                       limits: Limits) -> dict[str, Any]:
    statuses = (400, 401, 404, 413, 422, 501, 503)
    if served is None:
        request: dict[str, Any] = _ref("AnyPredictRequest")
        response: dict[str, Any] = _ref("PredictResponse")
        summary = "Predict with the champion of any served model"
    elif served.kind == "text" or served.contract is None:
        request = {"type": "object", "required": ["prompts"], "additionalProperties": False,
                   "properties": {"prompts": {"type": "array", "items": {"type": "string"},
                                              "minItems": 1}}}
        response = _ref("PredictResponse")
        summary = f"Generate with {name} (text models: a later release)"
    else:
        contract = served.contract
        request = {
            "type": "object", "required": ["records"], "additionalProperties": False,
            "properties": {
                # The record limit is an operational limit (413), not part of the
                # schema: a schema-valid request must never get a 4xx it did not cause.
                "records": {"type": "array", "items": _ref(f"{name}.Record"), "minItems": 1,
                            "description": f"at most {limits.max_records:,} per request"},
            },
        }
        if explain_available():
            request["properties"]["explain"] = {
                "type": "boolean", "default": False,
                "description": "add per-row feature contributions (SHAP values)"}
        if contract.classes is None:
            prediction: dict[str, Any] = {"type": "number"}
            extra: dict[str, Any] = {}
        else:
            classes = contract.json_classes
            prediction = {"enum": classes}
            extra = {
                "classes": {"type": "array", "items": {"enum": classes}},
                "probabilities": {"type": "array", "items": {
                    "type": "array", "items": {"type": "number", "minimum": 0, "maximum": 1},
                    "minItems": len(classes), "maxItems": len(classes)},
                    "description": "per record, one probability per class in `classes` order"},
            }
        response = {
            "type": "object",
            "required": ["model", "version", "request_id", "predictions", "warnings"]
            + sorted(extra),
            "properties": {
                "model": {"const": name},
                "version": {"type": "integer"},
                "request_id": {"type": "string"},
                "predictions": {"type": "array", "items": prediction},
                **extra,
                "contributions": {"type": "array", "items": _ref("Contribution"),
                                  "description": "with \"explain\": true: per record, "
                                  "each feature's SHAP value"},
                "warnings": {"type": "array", "items": _ref("Warning")},
            },
        }
        summary = f"Predict with {name} ({served.task or 'tabular'})"
    operation: dict[str, Any] = {
        "summary": summary,
        "operationId": "predict" if name is None else f"predict_{name}",
        "security": [{"bearer": []}],
        "requestBody": {"required": True, "content": {"application/json": {"schema": request}}},
        "responses": {"200": {"description": "predictions, in record order",
                              "content": {"application/json": {"schema": response}}},
                      **_error_responses(*statuses)},
    }
    if name is None:
        operation["parameters"] = [{
            "name": "name", "in": "path", "required": True,
            "schema": {"type": "string", "pattern": registry.MODEL_NAME_RE.pattern},
            "description": "the registered model's name",
        }]
    return operation


def openapi_document(snapshot: Snapshot, limits: Limits = Limits()) -> dict[str, Any]:
    """The OpenAPI 3.1 document of this server: each served model's predict path
    with the input schema derived from its contract, plus the generic path.

    Args:
        snapshot: what is served now.
        limits: the body and record limits the schemas state.

    Returns:
        The document as a dict (served as `/openapi.json`).
    """
    error = {"type": "object", "required": ["error", "request_id"], "properties": {
        "error": {"type": "object", "required": ["code", "message"], "properties": {
            "code": {"type": "string"}, "message": {"type": "string"},
            "record": {"type": "integer"}, "field": {"type": "string"},
            "expected": {"type": "string"}}},
        "request_id": {"type": ["string", "null"]}}}
    schemas: dict[str, Any] = {
        "Error": error,
        "Warning": {"type": "object", "required": ["code", "message"], "properties": {
            "code": {"enum": ["ignored_fields", "unseen_categories"]},
            "message": {"type": "string"},
            "fields": {"type": "array", "items": {"type": "string"}},
            "counts": {"type": "object", "additionalProperties": {"type": "integer"}}}},
        "AnyPredictRequest": {"type": "object", "additionalProperties": False, "properties": {
            "records": {"type": "array", "items": {"type": "object"}, "minItems": 1},
            "prompts": {"type": "array", "items": {"type": "string"}, "minItems": 1},
            "explain": {"type": "boolean"}}},
        "PredictResponse": {"type": "object", "required": [
            "model", "version", "request_id", "predictions", "warnings"], "properties": {
            "model": {"type": "string"}, "version": {"type": "integer"},
            "request_id": {"type": "string"}, "predictions": {"type": "array"},
            "classes": {"type": "array"},
            "probabilities": {"type": "array", "items": {"type": "array",
                                                         "items": {"type": "number"}}},
            "contributions": {},
            "warnings": {"type": "array", "items": _ref("Warning")}}},
        "Contribution": {"type": "object", "required": [
            "base_value", "contributions", "raw_output"], "properties": {
            "class": {"description": "the class explained (null for regression)"},
            "base_value": {"type": "number"},
            "contributions": {"type": "object", "additionalProperties": {"type": "number"}},
            "raw_output": {"type": "number", "description": "base value plus contributions "
                           "(log-odds, class score or prediction)"}}},
        "Health": {"type": "object", "required": ["status", "models"], "properties": {
            "status": {"enum": ["ok", "degraded"]}, "models": {"type": "integer"},
            "unavailable": {"type": "integer"},
            "refreshed_at": {"type": ["string", "null"]},
            "refresh_error": {"type": ["string", "null"]},
            "log_error": {"type": ["string", "null"]}, "pid": {"type": "integer"}}},
        "ModelList": {"type": "object", "required": ["models", "unavailable"], "properties": {
            "models": {"type": "array", "items": {"type": "object", "required": [
                "name", "version", "input", "ready"]}},
            "unavailable": {"type": "array", "items": {"type": "object", "required": [
                "name", "version", "code", "reason"]}},
            "refreshed_at": {"type": ["string", "null"]}}},
    }
    paths: dict[str, Any] = {
        "/health": {"get": {
            "summary": "Is the server up, and how fresh is its view of the registry",
            "operationId": "health", "security": [],
            "responses": {"200": {"description": "up", "content": {
                "application/json": {"schema": _ref("Health")}}}}}},
        "/v1/models": {"get": {
            "summary": "The served models (champions), their versions and input fields",
            "operationId": "list_models", "security": [{"bearer": []}],
            "responses": {"200": {"description": "served and refused models", "content": {
                "application/json": {"schema": _ref("ModelList")}}},
                **_error_responses(401)}}},
        "/v1/models/{name}/predict": {"post": _predict_operation(None, None, limits)},
    }
    for name, served in sorted(snapshot.models.items()):
        if served.contract is not None:
            schemas[f"{name}.Record"] = record_schema(served.contract)
        paths[f"/v1/models/{name}/predict"] = {"post": _predict_operation(name, served, limits)}
    return {
        "openapi": "3.1.0",
        "info": {"title": "Pond model serving", "version": _pond_version(),
                 "description": "Champions of Pond's model registry. Send "
                 "'Authorization: Bearer <token>' (see `pond tokens create`). At most "
                 f"{limits.max_body_bytes:,} bytes and {limits.max_records:,} records per "
                 "request."},
        "paths": paths,
        "components": {"schemas": schemas, "securitySchemes": {"bearer": {
            "type": "http", "scheme": "bearer",
            "description": "a Pond API token (`pond tokens create NAME`)"}}},
        "security": [{"bearer": []}],
    }


def _pond_version() -> str:
    from core import __version__

    return __version__


# --- the HTTP app and `pond serve` ---------------------------------------------------------


def _json(status: int, content: Any, request_id: str | None = None) -> Response:
    headers = {"x-request-id": request_id} if request_id else None
    return Response(orjson.dumps(content), status_code=status, media_type="application/json",
                    headers=headers)


def create_app(
    ws: Workspace,
    *,
    refresh_s: float = REFRESH_SECONDS,
    limits: Limits = Limits(),
    log_flush_s: float | None = None,
) -> Starlette:
    """The ASGI app serving `ws`'s champions (run it with uvicorn, or `serve`).

    Args:
        refresh_s: how often the champions and tokens are re-read.
        limits: the largest body and the most records per request.
        log_flush_s: how often the inference log is written (default 2 s).

    Returns:
        A Starlette app; `app.state.serving` is its `ServingState`.
    """
    state = ServingState(ws, refresh_s=refresh_s, limits=limits, log_flush_s=log_flush_s)

    async def health(request: Request) -> Response:
        return _json(200, state.health())

    async def models(request: Request) -> Response:
        return _json(200, state.models(request.headers.get("authorization")))

    async def predict(request: Request) -> Response:
        answer = await state.predict(request.path_params["name"], request.headers,
                                     request.receive)
        return _json_bytes(answer)

    async def openapi(request: Request) -> Response:
        return _json(200, state.openapi())

    async def docs(request: Request) -> Response:
        from fastapi.openapi.docs import get_swagger_ui_html

        return get_swagger_ui_html(openapi_url="/openapi.json", title="Pond model serving")

    async def pond_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, PondError)
        return _json(http_status(exc.code), error_body(exc, None))

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        code = "method_not_allowed" if exc.status_code == 405 else (
            "not_found" if exc.status_code == 404 else "malformed_request")
        message = {404: f"there is no endpoint at {request.url.path}; see /openapi.json",
                   405: f"{request.method} is not allowed on {request.url.path}"}.get(
            exc.status_code, str(exc.detail))
        response = _json(exc.status_code, {"error": {"code": code, "message": message},
                                           "request_id": None})
        response.headers.update(exc.headers or {})
        return response

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await asyncio.to_thread(state.start)
        try:
            yield
        finally:
            await asyncio.to_thread(state.stop)

    app = _ServingApp(
        routes=[
            Route("/health", health, methods=["GET"]),
            Route("/v1/models", models, methods=["GET"]),
            Route("/v1/models/{name}/predict", predict, methods=["POST"]),
            Route("/openapi.json", openapi, methods=["GET"]),
            Route("/docs", docs, methods=["GET"]),
        ],
        exception_handlers={HTTPException: http_error, PondError: pond_error},
        lifespan=lifespan,
    )
    app.state.serving = state
    return app


_PREDICT_PATH = re.compile(r"^/v1/models/([^/]+)/predict$")


class _ServingApp(Starlette):
    """Starlette, with `POST /v1/models/{name}/predict` handed straight to
    `ServingState.predict` before Starlette's middleware, request, routing and
    response objects (about a fifth of a one-record request's CPU). The route it
    shortcuts stays registered, so other methods still get Starlette's 405, and
    both paths answer alike; `ServingState.predict` never raises."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = (_PREDICT_PATH.match(scope["path"])
                 if scope["type"] == "http" and scope["method"] == "POST" else None)
        if match is None:
            await super().__call__(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        answer = await self.state.serving.predict(match.group(1), headers, receive)
        await send({"type": "http.response.start", "status": answer.status, "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(answer.body)).encode()),
            (b"x-request-id", answer.request_id.encode()),
        ]})
        await send({"type": "http.response.body", "body": answer.body})


def _json_bytes(answer: Answer) -> Response:
    return Response(answer.body, status_code=answer.status, media_type="application/json",
                    headers={"x-request-id": answer.request_id})


def app_from_env() -> Starlette:
    """The app for `$POND_HOME` (what each `--workers` process imports)."""
    return create_app(store.open_workspace(os.environ.get("POND_HOME")))


def check_serve_options(host: str, port: int, workers: int) -> None:
    """Raises: InvalidInput for a bad host, port or worker count."""
    if not isinstance(host, str) or not host.strip():
        raise InvalidInput("The 'host' parameter of serve must be an address like 127.0.0.1. "
                           f"Got {host!r} instead.")
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise InvalidInput("The 'port' parameter of serve must be an int in [0, 65535]. "
                           f"Got {port!r} instead.")
    if isinstance(workers, bool) or not isinstance(workers, int) or not 1 <= workers <= 64:
        raise InvalidInput("The 'workers' parameter of serve must be an int in [1, 64]. "
                           f"Got {workers!r} instead.")


def serve(ws: Workspace, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
          workers: int = 1, log_level: str = "info") -> None:
    """Run the server until SIGTERM or Ctrl-C; then write the inference log and exit.

    Args:
        workers: processes answering requests (each one predicts with one thread).

    Raises:
        InvalidInput: a bad host, port or worker count.
    """
    import copy

    import uvicorn
    from uvicorn.config import LOGGING_CONFIG

    check_serve_options(host, port, workers)
    # Pond's own messages (models loaded or refused, log write errors) print like uvicorn's.
    log_config = copy.deepcopy(LOGGING_CONFIG)
    log_config["loggers"]["pond"] = {"handlers": ["default"], "level": log_level.upper(),
                                     "propagate": False}
    options: dict[str, Any] = {
        "host": host, "port": port, "log_level": log_level, "log_config": log_config,
        # The inference log records every request; a second access log would
        # cost latency and say less.
        "access_log": False, "server_header": False, "timeout_graceful_shutdown": 30,
        # Client addresses are not logged, so rewriting them from proxy headers is
        # work for nothing on every request.
        "proxy_headers": False,
    }
    if workers == 1:
        uvicorn.run(create_app(ws), **options)
    else:
        os.environ["POND_HOME"] = str(ws.home)
        uvicorn.run("core.serving:app_from_env", factory=True, workers=workers, **options)
