"""Evaluation of registered models: what a reviewer reads before approving a version.

This module owns three things. Tabular evaluation scores a LightGBM version on
a dataset version with every metric of `core.metrics` for its task, plus
curves, a confusion matrix, calibration, residuals and per-segment metrics.
Text evaluation scores generated texts against references with BLEU,
sacreBLEU, chrF and ROUGE through `core.text_metrics` (Hugging Face
`evaluate`, imported only then). Comparison scores two versions on the same
rows and puts a paired-bootstrap confidence interval on the difference.

Each evaluation is stored on the version (or on the dataset, for plain text
columns) with the dataset's content hash, the metric implementation and
library versions, who ran it and when, and is audited. Large parts (curves,
segments, per-row scores) go to a content-addressed artifact.
"""

from __future__ import annotations

import importlib.metadata
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from core import __version__, datasets, registry, store
from core import metrics as metric_registry
from core.auth import User, require
from core.errors import InvalidInput, NotFound, PondError
from core.metrics import BINARY, REGRESSION, MetricSpec
from core.model_contract import LoadedModel, json_label, level_key, load_model
from core.store import Workspace, artifacts
from core.store import evaluation as rows

TABULAR = "tabular"
TEXT = "text"
# Segments beyond this many distinct values are not segments but an ID or a number.
MAX_SEGMENTS = 50
# Curves are thinned to this many points: enough to draw, small enough to store.
CURVE_POINTS = 300
# Classes beyond this many get no ROC/PR curve of their own (the most frequent are kept).
MAX_CURVE_CLASSES = 20
RESIDUAL_POINTS = 2000
CALIBRATION_BINS = 10
MISSING_SEGMENT = "(missing)"
DEFAULT_N_BOOT = 1000
DEFAULT_CONFIDENCE = 0.95
_SHOWN = 5

GenerateFn = Callable[[list[str]], list[str]]


# --- snapshots ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Evaluation:
    """One stored evaluation.

    Attributes:
        id: its number in this workspace.
        model, version: the model version scored (None for plain text columns).
        dataset, dataset_version, dataset_sha256: exactly which rows were scored.
        kind: "tabular" or "text".
        task: binary, multiclass, regression or text_generation.
        rows: how many rows were scored.
        columns: which columns played which part (target, predictions, segment…).
        metrics: metric name → value (None where undefined, e.g. AUC on one class).
        main_metric: the number to lead with (the task's default metric).
        details_sha256: the artifact holding curves, segments and per-row scores.
        implementation: which code computed the numbers, with library versions.
        warnings: what was accepted but should be known (rows left out…).
        details: the artifact's content, when loaded (`get_evaluation`).
    """

    id: int
    model: str | None
    version: int | None
    dataset: str
    dataset_version: int
    dataset_sha256: str
    kind: str
    task: str
    rows: int
    columns: dict[str, Any]
    metrics: dict[str, float | None]
    main_metric: str | None
    details_sha256: str | None
    implementation: dict[str, Any]
    warnings: tuple[str, ...]
    created_by: str
    created_at: datetime
    details: dict[str, Any] | None = None

    @property
    def model_ref(self) -> str | None:
        return f"{self.model}:{self.version}" if self.model is not None else None

    @property
    def dataset_ref(self) -> str:
        return f"{self.dataset}:{self.dataset_version}"

    @property
    def main_score(self) -> float | None:
        return self.metrics.get(self.main_metric) if self.main_metric else None

    def to_dict(self, *, details: bool = False) -> dict[str, Any]:
        """A JSON-ready summary (with the details artifact's content when `details`)."""
        out: dict[str, Any] = {
            "id": self.id,
            "model": self.model_ref,
            "dataset": self.dataset_ref,
            "dataset_sha256": self.dataset_sha256,
            "kind": self.kind,
            "task": self.task,
            "rows": self.rows,
            "main_metric": self.main_metric,
            "main_score": self.main_score,
            "metrics": self.metrics,
            "columns": self.columns,
            "implementation": self.implementation,
            "warnings": list(self.warnings),
            "created_by": self.created_by,
            "created_at": self.created_at.isoformat(),
        }
        if details:
            out["details"] = self.details
        return out

    def __str__(self) -> str:
        numbers = ", ".join(
            f"{k}={_fmt(v)}" for k, v in list(self.metrics.items())[:6]
        )
        who = f" of {self.model_ref}" if self.model_ref else ""
        return (
            f"#{self.id} {self.kind}{who} on {self.dataset_ref} ({self.rows} rows) by "
            f"{self.created_by} at {self.created_at:%Y-%m-%d %H:%M}: {numbers}"
        )


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def _evaluation(row: Mapping[str, Any], details: dict[str, Any] | None = None) -> Evaluation:
    return Evaluation(
        id=row["id"],
        model=row["model_name"],
        version=row["version"],
        dataset=row["dataset_name"],
        dataset_version=row["dataset_version"],
        dataset_sha256=row["dataset_sha256"],
        kind=row["kind"],
        task=row["task"],
        rows=row["row_count"],
        columns=row["columns"],
        metrics=row["metrics"],
        main_metric=row["main_metric"],
        details_sha256=row["details_sha256"],
        implementation=row["implementation"],
        warnings=tuple(row["warnings"]),
        created_by=row["created_by"],
        created_at=row["created_at"],
        details=details,
    )


def _plain(value: Any) -> Any:
    """JSON-ready: NumPy values to Python ones, non-finite numbers to None."""
    if isinstance(value, dict):
        return {str(json_label(k)): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()]
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        number = float(value)
        return number if math.isfinite(number) else None
    if pd.api.types.is_scalar(value) and pd.isna(value):
        return None
    return json_label(value)


def _versions(*packages: str) -> dict[str, str]:
    out = {"pond": __version__}
    for package in packages:
        try:
            out[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            out[package] = "not installed"
    return out


# --- curves and tables (pure) ------------------------------------------------------------------


def _thin(n: int, max_points: int = CURVE_POINTS) -> np.ndarray:
    """Indices of at most `max_points` evenly spread points, first and last kept."""
    if n <= max_points:
        return np.arange(n)
    return np.unique(np.round(np.linspace(0, n - 1, max_points)).astype(np.int64))


def _ranked_counts(y: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """True and false positives at each distinct score, highest score first."""
    order = np.argsort(-score, kind="mergesort")
    ranked, hits = score[order], y[order].astype(np.float64)
    last = np.r_[np.flatnonzero(np.diff(ranked)), len(ranked) - 1]
    tps = np.cumsum(hits)[last]
    fps = (last + 1) - tps
    return tps, fps, ranked[last]


def roc_points(y: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ROC curve of a binary target (1 = positive): false and true positive rates.

    Returns:
        (fpr, tpr, thresholds), starting at (0, 0), one point per distinct score
        (scikit-learn's `roc_curve(drop_intermediate=False)`).

    Raises:
        InvalidInput: `y` holds only one class.
    """
    y = np.asarray(y) == 1
    if y.all() or not y.any():
        raise InvalidInput("a ROC curve needs rows of both classes")
    tps, fps, thresholds = _ranked_counts(y, np.asarray(score, dtype=np.float64))
    tps, fps = np.r_[0.0, tps], np.r_[0.0, fps]
    return fps / fps[-1], tps / tps[-1], np.r_[np.inf, thresholds]


def pr_points(y: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The precision-recall curve of a binary target (1 = positive).

    Returns:
        (precision, recall, thresholds) from the highest threshold down, starting
        at recall 0 with precision 1 (scikit-learn's convention).

    Raises:
        InvalidInput: `y` has no positive row.
    """
    y = np.asarray(y) == 1
    if not y.any():
        raise InvalidInput("a precision-recall curve needs positive rows")
    tps, fps, thresholds = _ranked_counts(y, np.asarray(score, dtype=np.float64))
    precision = tps / (tps + fps)
    recall = tps / tps[-1]
    return np.r_[1.0, precision], np.r_[0.0, recall], np.r_[np.inf, thresholds]


def calibration_bins(
    y: np.ndarray, probability: np.ndarray, n_bins: int = CALIBRATION_BINS
) -> list[dict[str, float]]:
    """Reliability table: equal-width probability bins, their mean prediction and hit rate.

    Matches scikit-learn's `calibration_curve(strategy="uniform")`; empty bins are left out.
    """
    probability = np.asarray(probability, dtype=np.float64)
    hits = (np.asarray(y) == 1).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    ids = np.searchsorted(edges[1:-1], probability)
    out = []
    for b in range(n_bins):
        inside = ids == b
        count = int(inside.sum())
        if count:
            out.append({
                "low": float(edges[b]),
                "high": float(edges[b + 1]),
                "mean_predicted": float(probability[inside].mean()),
                "observed": float(hits[inside].mean()),
                "count": count,
            })
    return out


def confusion_matrix(y: np.ndarray, predicted: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts of (true class, predicted class); rows are the truth."""
    matrix = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(y, dtype=np.int64), np.asarray(predicted, dtype=np.int64)), 1)
    return matrix


def _class_report(matrix: np.ndarray, classes: Sequence[Any]) -> list[dict[str, Any]]:
    out = []
    for k, label in enumerate(classes):
        tp = matrix[k, k]
        predicted = matrix[:, k].sum()
        support = matrix[k, :].sum()
        precision = tp / predicted if predicted else float("nan")
        recall = tp / support if support else float("nan")
        f1 = 2 * tp / (predicted + support) if predicted + support else float("nan")
        out.append({"class": json_label(label), "precision": precision, "recall": recall,
                    "f1": f1, "support": int(support)})
    return out


def _curves(y: np.ndarray, proba: np.ndarray, classes: Sequence[Any], task: str) -> dict[str, Any]:
    """ROC and PR curves: the positive class for binary, one-vs-rest per class otherwise."""
    if task == BINARY:
        wanted = [1]
    else:
        support = np.bincount(y, minlength=len(classes))
        wanted = sorted(np.argsort(-support, kind="mergesort")[:MAX_CURVE_CLASSES].tolist())
    roc, pr = [], []
    for k in wanted:
        hits = (y == k).astype(np.int64)
        score = proba[:, k]
        label = json_label(classes[k])
        if 0 < hits.sum() < len(hits):
            fpr, tpr, _ = roc_points(hits, score)
            keep = _thin(len(fpr))
            roc.append({"class": label, "fpr": fpr[keep], "tpr": tpr[keep],
                        "auc": metric_registry.roc_auc(hits, score)})
        if hits.sum() > 0:
            precision, recall, _ = pr_points(hits, score)
            keep = _thin(len(precision))
            pr.append({"class": label, "precision": precision[keep], "recall": recall[keep],
                       "average_precision": metric_registry.pr_auc(hits, score),
                       "prevalence": float(hits.mean())})
    return {"roc": roc, "pr": pr}


def _calibration(y: np.ndarray, proba: np.ndarray, task: str) -> dict[str, Any]:
    if task == BINARY:
        kind, hits, confidence = "positive class", y == 1, proba[:, 1]
    else:
        # Top-label calibration: is the model right as often as it is confident?
        predicted = proba.argmax(axis=1)
        kind, hits, confidence = "top label", predicted == y, proba.max(axis=1)
    bins = calibration_bins(hits.astype(np.int64), confidence)
    n = len(y)
    ece = sum(b["count"] / n * abs(b["observed"] - b["mean_predicted"]) for b in bins)
    return {"kind": kind, "bins": bins, "expected_calibration_error": ece}


def _residuals(y: np.ndarray, predicted: np.ndarray, seed: int = 0) -> dict[str, Any]:
    residual = y - predicted
    n = len(y)
    keep = np.arange(n)
    if n > RESIDUAL_POINTS:
        keep = np.sort(np.random.default_rng(seed).choice(n, RESIDUAL_POINTS, replace=False))
    quantiles = np.quantile(residual, [0.05, 0.25, 0.5, 0.75, 0.95])
    return {
        "actual": y[keep],
        "predicted": predicted[keep],
        "residual": residual[keep],
        "sampled": bool(n > RESIDUAL_POINTS),
        "summary": {
            "mean": float(residual.mean()),
            "std": float(residual.std()),
            "q05": quantiles[0], "q25": quantiles[1], "median": quantiles[2],
            "q75": quantiles[3], "q95": quantiles[4],
        },
    }


def _score_all(task: str, y: np.ndarray, output: np.ndarray) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for spec in metric_registry.metrics_for(task):
        with np.errstate(all="ignore"):
            value = float(spec(y, output)) if len(y) else float("nan")
        out[spec.name] = value if math.isfinite(value) else None
    return out


def _segment_keys(values: pd.Series) -> np.ndarray:
    keys = values.astype(object).map(level_key, na_action="ignore")
    return keys.fillna(MISSING_SEGMENT).to_numpy(dtype=object)


def _segments(
    task: str, y: np.ndarray, output: np.ndarray, keys: np.ndarray, main: MetricSpec
) -> list[dict[str, Any]]:
    """Metrics per segment, the weakest (by the main metric) first."""
    found = []
    n = len(y)
    for key in pd.unique(keys):
        inside = keys == key
        found.append({
            "segment": key,
            "rows": int(inside.sum()),
            "share": float(inside.sum() / n),
            **_score_all(task, y[inside], output[inside]),
        })

    def weakness(item: dict[str, Any]) -> tuple[int, float]:
        value = item.get(main.name)
        if value is None:
            return (1, 0.0)
        return (0, value if main.higher_is_better else -value)

    return sorted(found, key=weakness)


# --- tabular scoring (no store) -----------------------------------------------------------


@dataclass(frozen=True)
class TabularScores:
    """A model's scores on one frame.

    Attributes:
        task: binary, multiclass or regression (from the model's contract).
        target: the column compared with the predictions.
        rows: rows scored (rows without a target are left out).
        metrics: every metric of the task, by name (None where undefined).
        main_metric: the task's default metric.
        details: curves, confusion matrix, calibration, residuals, segments.
        warnings: what was accepted but should be known.
        y_true: the truth (class indices for classification).
        output: probabilities (n, k) or predicted numbers (n,).
    """

    task: str
    target: str
    rows: int
    metrics: dict[str, float | None]
    main_metric: str
    details: dict[str, Any]
    warnings: tuple[str, ...]
    y_true: np.ndarray = field(repr=False)
    output: np.ndarray = field(repr=False)


def _label_index(classes: Sequence[Any]) -> Callable[[Any], int | None]:
    exact = {json_label(c): i for i, c in enumerate(classes)}
    # A label read as 1 in one file and "1" in another is the same class.
    by_text = {level_key(c): i for i, c in enumerate(classes)}

    def index(value: Any) -> int | None:
        label = json_label(value)
        try:
            found = exact.get(label)
        except TypeError:
            found = None
        return found if found is not None else by_text.get(level_key(label))

    return index


def _truth(
    model: LoadedModel, frame: pd.DataFrame, data_name: str, model_name: str
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The target as the model's classes (or numbers), and which rows have one."""
    contract = model.contract
    target = contract.target
    if target not in frame.columns:
        raise InvalidInput(
            f"{data_name} has no column {target!r}, the target {model_name} was trained to "
            "predict; evaluation compares predictions with it. Pick a dataset version that "
            f"has it (its columns: {', '.join(repr(str(c)) for c in frame.columns[:20])})"
        )
    values = frame[target]
    present = values.notna().to_numpy()
    notes = []
    dropped = int((~present).sum())
    if dropped:
        notes.append(f"{dropped} rows have no value in the target {target!r} and were left out")
    kept = values[present]
    if not len(kept):
        raise InvalidInput(
            f"{data_name} has no row with a value in the target {target!r}; there is nothing "
            "to compare the predictions with"
        )
    if contract.task == REGRESSION:
        try:
            y = pd.to_numeric(kept, errors="raise").to_numpy(dtype=np.float64)
        except (ValueError, TypeError):
            raise InvalidInput(
                f"the target {target!r} of {data_name} must hold numbers for regression model "
                f"{model_name}; it holds text such as {kept.iloc[0]!r}"
            ) from None
        if not np.all(np.isfinite(y)):
            raise InvalidInput(
                f"the target {target!r} of {data_name} holds infinite values; fix or drop "
                "those rows"
            )
        return y, present, notes

    classes = contract.classes or ()
    index = _label_index(classes)
    codes = [index(v) for v in kept.tolist()]
    unseen: dict[str, int] = {}
    for value, code in zip(kept.tolist(), codes, strict=True):
        if code is None:
            unseen[repr(json_label(value))] = unseen.get(repr(json_label(value)), 0) + 1
    if unseen:
        listed = ", ".join(f"{label} ({n} rows)" for label, n in list(unseen.items())[:_SHOWN])
        known = ", ".join(repr(json_label(c)) for c in classes)
        raise InvalidInput(
            f"the target {target!r} of {data_name} holds labels that {model_name} never saw in "
            f"training: {listed}; it knows only {known}. Evaluate on rows with known labels, "
            "or retrain the model on data that has these labels"
        )
    return np.asarray(codes, dtype=np.int64), present, notes


def _check_inputs(model: LoadedModel, columns: Sequence[str], data_name: str,
                  model_name: str) -> None:
    missing = [n for n in model.contract.feature_names if n not in set(columns)]
    if missing:
        noun = "column" if len(missing) == 1 else "columns"
        raise InvalidInput(
            f"{data_name} lacks the input {noun} {', '.join(repr(m) for m in missing[:10])}"
            + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
            + f" that {model_name} needs; pick a dataset version with the columns it was "
            f"trained on ({', '.join(repr(n) for n in model.contract.feature_names[:10])})"
        )


def _check_segment(frame: pd.DataFrame, column: str | None, data_name: str) -> None:
    if column is None:
        return
    if column not in frame.columns:
        raise InvalidInput(
            f"{data_name} has no column {column!r} to segment by; its columns are "
            f"{', '.join(repr(str(c)) for c in frame.columns[:30])}"
        )
    distinct = frame[column].nunique(dropna=True)
    if distinct > MAX_SEGMENTS:
        fits = [str(c) for c in frame.columns
                if c != column and frame[c].nunique(dropna=True) <= MAX_SEGMENTS]
        hint = f" (for example {', '.join(repr(c) for c in fits[:5])})" if fits else ""
        raise InvalidInput(
            f"column {column!r} of {data_name} has {distinct} distinct values; segments need "
            f"a categorical column with at most {MAX_SEGMENTS}{hint}"
        )


def score_frame(
    model: LoadedModel,
    frame: pd.DataFrame,
    *,
    segment_column: str | None = None,
    data_name: str = "the data",
    model_name: str = "the model",
) -> TabularScores:
    """Score a tabular model on a frame that holds its input columns and its target.

    Args:
        model: a LightGBM model with its contract (`model_contract.load_model`).
        frame: the rows to score; rows without a target value are left out.
        segment_column: a categorical column to compute metrics per value of.
        data_name, model_name: how messages name the frame and the model.

    Returns:
        Metrics, details and warnings; see `TabularScores`.

    Raises:
        InvalidInput: an input or the target column is missing, the target holds
            labels the model never saw (or text for regression), or the segment
            column is missing or not categorical.
    """
    _check_inputs(model, [str(c) for c in frame.columns], data_name, model_name)
    _check_segment(frame, segment_column, data_name)
    contract = model.contract
    task = contract.task
    y, present, notes = _truth(model, frame, data_name, model_name)
    scored = frame[present]
    prediction = model.predict(scored)
    for column, count in prediction.unseen_categories.items():
        notes.append(
            f"column {column!r} has {count} values the model never saw in training; they "
            "were treated as missing"
        )
    main = metric_registry.default_metric(task)
    details: dict[str, Any] = {"target": contract.target}
    if task == REGRESSION:
        output = np.asarray(prediction.values, dtype=np.float64)
        details["residuals"] = _residuals(y, output)
    else:
        output = np.asarray(prediction.probabilities, dtype=np.float64)
        classes = contract.classes or ()
        predicted = output.argmax(axis=1)
        matrix = confusion_matrix(y, predicted, len(classes))
        details["classes"] = [json_label(c) for c in classes]
        details["confusion_matrix"] = matrix
        details["class_report"] = _class_report(matrix, classes)
        details.update(_curves(y, output, classes, task))
        details["calibration"] = _calibration(y, output, task)
        if task == BINARY:
            details["positive_class"] = json_label(classes[1])
    metrics = _score_all(task, y, output)
    if segment_column is not None:
        keys = _segment_keys(scored[segment_column])
        details["segments"] = {
            "column": segment_column,
            "main_metric": main.name,
            "rows": _segments(task, y, output, keys, main),
        }
    return TabularScores(
        task=task, target=contract.target, rows=len(y), metrics=metrics, main_metric=main.name,
        details=details, warnings=tuple(notes), y_true=y, output=output,
    )


# --- storing -----------------------------------------------------------------------------------


def _store(
    ws: Workspace,
    actor: User,
    *,
    version: registry.ModelVersion | None,
    dv: datasets.DatasetVersion,
    kind: str,
    task: str,
    row_count: int,
    columns: dict[str, Any],
    metrics: dict[str, float | None],
    main_metric: str | None,
    details: dict[str, Any],
    implementation: dict[str, Any],
    warnings: Sequence[str],
) -> Evaluation:
    clean_details = _plain(details)
    # Bytes first, outside the write lock; a crash before the commit leaves an orphan
    # file for `pond doctor`, never a row without its file.
    blob = json.dumps(clean_details, allow_nan=False, separators=(",", ":")).encode()
    stored = artifacts.put_bytes(ws, blob)
    row = {
        "model_name": version.model if version else None,
        "version": version.version if version else None,
        "dataset_name": dv.name,
        "dataset_version": dv.version,
        "dataset_sha256": dv.content_sha256,
        "kind": kind,
        "task": task,
        "row_count": row_count,
        "columns": _plain(columns),
        "metrics": _plain(metrics),
        "main_metric": main_metric,
        "details_sha256": stored.sha256,
        "implementation": _plain(implementation),
        "warnings": list(warnings),
        "created_by": actor.name,
    }
    entity = (
        ("model_version", f"{version.model}:{version.version}") if version
        else ("dataset", dv.ref)
    )
    with store.transaction(ws) as con:
        evaluation_id = rows.insert(con, row)
        rows.insert_artifact(con, stored.sha256, stored.size_bytes, actor.name)
        store.append_audit(
            con, actor=actor.name, action="evaluation_recorded", entity_type=entity[0],
            entity_id=entity[1],
            details={"evaluation_id": evaluation_id, "kind": kind, "dataset": dv.ref,
                     "dataset_sha256": dv.content_sha256, "main_metric": main_metric,
                     "main_score": row["metrics"].get(main_metric) if main_metric else None},
        )
        saved = rows.get(con, evaluation_id)
    assert saved is not None
    return _evaluation(saved, clean_details)


def _load_tabular(ws: Workspace, version: registry.ModelVersion) -> LoadedModel:
    if version.flavor != "lightgbm":
        raise InvalidInput(
            f"model {version.ref} is a {version.flavor} model; tabular evaluation needs a "
            "LightGBM model from Pond's AutoML. For a text model, score its generations with "
            "`pond evaluate --dataset NAME --predictions COL --references COL --model REF`"
        )
    files = registry.version_files(ws, version.model, version.version)
    try:
        return load_model(files)
    except PondError as exc:
        raise PondError(f"model {version.ref} cannot be loaded: {exc}") from None


def load_version(ws: Workspace, model_ref: str) -> tuple[registry.ModelVersion, LoadedModel]:
    """The version a reference names and its LightGBM model, files re-checked.

    Raises:
        NotFound / InvalidInput: a bad reference, or a version that is not a
            LightGBM model. TamperedArtifact: its files changed on disk.
    """
    version = registry.resolve(ws, model_ref)
    return version, _load_tabular(ws, version)


def _through_feature_view(ws: Workspace, version: Any, model: Any,
                          frame: pd.DataFrame) -> pd.DataFrame:
    """For a model trained on a feature view, the dataset's rows as that model sees them:
    the view's row-level steps applied by the code serving uses (so an evaluation scores
    what production would answer); other models get the frame unchanged."""
    from core import features

    transform = features.serving_transform(ws, version, model.contract)
    if transform is None:
        return frame
    try:
        records = json.loads(frame.to_json(orient="records", date_format="iso"))
        out = pd.DataFrame.from_records(transform.transform(records))
    finally:
        transform.close()
    # Columns the view does not output (the target, a segment) come from the dataset.
    for column in frame.columns:
        if column not in out.columns:
            out[column] = frame[column].to_numpy()
    return out


def evaluate_model(
    ws: Workspace,
    model_ref: str,
    dataset_ref: str,
    actor: User,
    segment_column: str | None = None,
) -> Evaluation:
    """Score a registered tabular model on a dataset version and store the result on it.

    Args:
        model_ref: "name@alias", "name:version" or "name" (its champion, else latest).
        dataset_ref: "name" (latest version) or "name:version".
        actor: who evaluates (analyst, reviewer or admin).
        segment_column: a categorical column to compute metrics per value of.

    Returns:
        The stored evaluation, details included.

    Raises:
        PermissionDenied: the actor may not evaluate.
        NotFound: no such model, version or dataset.
        InvalidInput: the dataset lacks the model's input or target columns, the
            target has labels the model never saw, or a bad segment column.
    """
    require(actor, "evaluate")
    version, model = load_version(ws, model_ref)
    dv = datasets.resolve(ws, dataset_ref)
    if segment_column is not None and segment_column not in dv.column_names:
        raise InvalidInput(
            f"dataset {dv.ref} has no column {segment_column!r} to segment by; its columns "
            f"are {', '.join(repr(c) for c in dv.column_names[:30])}"
        )
    frame = _through_feature_view(ws, version, model, datasets.load_frame(ws, dv))
    scores = score_frame(
        model, frame, segment_column=segment_column, data_name=f"dataset {dv.ref}",
        model_name=f"model {version.ref}",
    )
    implementation = {
        "implementation": "core.metrics",
        "metrics": {s.name: s.implementation for s in metric_registry.metrics_for(scores.task)},
        "libraries": _versions("numpy", "scipy", "lightgbm"),
    }
    return _store(
        ws, actor, version=version, dv=dv, kind=TABULAR, task=scores.task,
        row_count=scores.rows,
        columns={"target": scores.target, "segment": segment_column,
                 "features": list(model.contract.feature_names)},
        metrics=scores.metrics, main_metric=scores.main_metric, details=scores.details,
        implementation=implementation, warnings=scores.warnings,
    )


def evaluate_text(
    ws: Workspace,
    dataset_ref: str,
    predictions_col: str | None,
    references_col: str,
    actor: User,
    model_ref: str | None = None,
    *,
    prompt_col: str | None = None,
    generate: GenerateFn | None = None,
    smooth_bleu: bool = False,
) -> Evaluation:
    """BLEU, sacreBLEU, chrF and ROUGE of generated texts against references, stored.

    The generated texts come from a column (`predictions_col`) or, for a text
    model's own generations, from `generate(prompts)` on `prompt_col` (the hook
    fine-tuning plugs into). A reference cell may hold a list of texts (several
    references per row).

    Args:
        dataset_ref: "name" or "name:version".
        predictions_col: the column of generated texts (None with `generate`).
        references_col: the column of reference texts (or lists of them).
        actor: who evaluates.
        model_ref: the model version the texts came from; the evaluation is then
            stored on that version.
        prompt_col: with `generate`, the column of prompts.
        generate: a callable from a list of prompts to one text each.
        smooth_bleu: Lin & Och smoothing for `bleu` (off by default, as in evaluate).

    Returns:
        The stored evaluation; `details["per_example"]` lists rows worst first.

    Raises:
        PermissionDenied, NotFound, InvalidInput: a missing column, different
            lengths, None or non-text values, a row without a reference.
    """
    require(actor, "evaluate")
    if (predictions_col is None) == (generate is None):
        raise InvalidInput(
            "name the column of generated texts (predictions_col), or pass a generate "
            "function with a prompt column, not both"
        )
    if generate is not None and prompt_col is None:
        raise InvalidInput("generate needs prompt_col: the column whose prompts it answers")
    version = registry.resolve(ws, model_ref) if model_ref else None
    dv = datasets.resolve(ws, dataset_ref)
    wanted = [c for c in (predictions_col, references_col, prompt_col) if c is not None]
    missing = [c for c in wanted if c not in dv.column_names]
    if missing:
        raise InvalidInput(
            f"dataset {dv.ref} has no column {', '.join(repr(c) for c in missing)}; its "
            f"columns are {', '.join(repr(c) for c in dv.column_names[:30])}"
        )
    frame = datasets.load_frame(ws, dv, columns=list(dict.fromkeys(wanted)))
    if generate is not None:
        assert prompt_col is not None
        prompts = frame[prompt_col].tolist()
        bad = [i for i, p in enumerate(prompts) if not isinstance(p, str)]
        if bad:
            raise InvalidInput(
                f"column {prompt_col!r} of dataset {dv.ref} must hold text prompts; row "
                f"{bad[0]} holds {prompts[bad[0]]!r}"
            )
        predictions = list(generate(prompts))
        prediction_name = f"the generations for column {prompt_col!r} of dataset {dv.ref}"
    else:
        predictions = frame[predictions_col].tolist()
        prediction_name = f"column {predictions_col!r} of dataset {dv.ref}"

    from core import text_metrics  # keeps `evaluate` out of every other import path

    pairs = text_metrics.check_pairs(
        predictions, frame[references_col].tolist(), prediction_name=prediction_name,
        reference_name=f"column {references_col!r} of dataset {dv.ref}",
    )
    scores = text_metrics.score_texts(pairs, hf_home=ws.home / "hf", smooth_bleu=smooth_bleu)
    details = {
        "outputs": scores.outputs,
        "per_example": scores.per_example,
        "sort_by": scores.sort_by,
        "variants": {s.name: s.variant for s in metric_registry.TEXT_METRICS.values()},
        "per_example_variants": text_metrics.PER_EXAMPLE_VARIANTS,
        "multi_reference": pairs.multi_reference,
    }
    return _store(
        ws, actor, version=version, dv=dv, kind=TEXT, task=metric_registry.TEXT_GENERATION,
        row_count=len(pairs.predictions),
        columns={"predictions": predictions_col, "references": references_col,
                 "prompts": prompt_col, "generated": generate is not None},
        metrics=dict(scores.metrics), main_metric=scores.main_metric, details=details,
        implementation=scores.implementation, warnings=scores.warnings,
    )


# --- reading ------------------------------------------------------------------------------------


def list_evaluations(
    ws: Workspace,
    model: str | None = None,
    version: int | None = None,
    *,
    dataset: str | None = None,
    kind: str | None = None,
    limit: int = 100,
) -> list[Evaluation]:
    """Stored evaluations, newest first (details not loaded; see `get_evaluation`).

    Args:
        model, version: only those of this model (and version).
        dataset: only those on this dataset (any version).
        kind: "tabular" or "text".
        limit: at most this many (1–1000).

    Raises:
        InvalidInput: a bad kind or limit.
    """
    if kind is not None and kind not in (TABULAR, TEXT):
        raise InvalidInput(f"The 'kind' parameter must be tabular or text. Got {kind!r} instead.")
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 1000:
        raise InvalidInput(
            f"The 'limit' parameter of list_evaluations must be an int in [1, 1000]. "
            f"Got {limit!r} instead."
        )
    with store.read(ws) as con:
        found = rows.list_for(con, model=model, version=version, dataset=dataset, kind=kind,
                              limit=limit)
    return [_evaluation(r) for r in found]


def get_evaluation(ws: Workspace, evaluation_id: int, *, details: bool = True) -> Evaluation:
    """One stored evaluation, with its details artifact (hash re-checked) when `details`.

    Raises:
        NotFound: no such evaluation. TamperedArtifact: the details file changed on disk.
    """
    with store.read(ws) as con:
        row = rows.get(con, evaluation_id)
    if row is None:
        raise NotFound(f"there is no evaluation #{evaluation_id}; see `pond registry show`")
    loaded = None
    if details and row["details_sha256"]:
        loaded = json.loads(artifacts.read_bytes(ws, row["details_sha256"]))
    return _evaluation(row, loaded)


# --- comparing two versions -------------------------------------------------------------------


@dataclass(frozen=True)
class BootstrapInterval:
    """A paired bootstrap of the difference `b − a` of one metric on the same rows.

    Attributes:
        difference: the metric of b minus that of a, on all rows.
        low, high: the percentile interval of the resampled differences.
        confidence: e.g. 0.95.
        differences: the resampled differences (NaN resamples dropped).
        n_boot: resamples drawn; `len(differences)` of them had a defined metric.
    """

    difference: float
    low: float
    high: float
    confidence: float
    differences: np.ndarray = field(repr=False)
    n_boot: int


def bootstrap_difference(
    metric: Callable[[np.ndarray, np.ndarray], float],
    y_true: np.ndarray,
    output_a: np.ndarray,
    output_b: np.ndarray,
    *,
    y_true_b: np.ndarray | None = None,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = 0,
    confidence: float = DEFAULT_CONFIDENCE,
) -> BootstrapInterval:
    """Paired bootstrap interval for metric(b) − metric(a) on the same rows.

    Each resample draws rows with replacement and scores both models on the
    same draw, so row-to-row difficulty cancels out of the difference.

    Args:
        metric: a pure metric (a `MetricSpec` or any f(y_true, output)).
        y_true: the truth as model a encodes it.
        output_a, output_b: the two models' outputs on the same rows.
        y_true_b: the truth as model b encodes it, when its classes differ.
        n_boot: resamples (100–100,000).
        seed: seeds the resampling, so the interval is reproducible.
        confidence: the interval's coverage, in (0, 1).

    Returns:
        The difference and its interval.

    Raises:
        InvalidInput: bad n_boot, confidence, or outputs of different lengths.
    """
    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or not 100 <= n_boot <= 100_000:
        raise InvalidInput(
            f"The 'n_boot' parameter of compare must be an int in [100, 100000]. Got {n_boot!r} "
            "instead."
        )
    if not 0.0 < confidence < 1.0:
        raise InvalidInput(
            f"The 'confidence' parameter of compare must be in (0, 1). Got {confidence!r} "
            "instead."
        )
    y_a = np.asarray(y_true)
    y_b = np.asarray(y_true_b) if y_true_b is not None else y_a
    n = len(y_a)
    if not (len(output_a) == len(output_b) == len(y_b) == n) or n == 0:
        raise InvalidInput(
            "both models must be scored on the same, non-empty rows; got "
            f"{len(output_a)} and {len(output_b)} predictions for {n} rows"
        )
    with np.errstate(all="ignore"):
        difference = float(metric(y_b, output_b)) - float(metric(y_a, output_a))
        rng = np.random.default_rng(seed)
        draws = np.empty(n_boot, dtype=np.float64)
        for i in range(n_boot):
            idx = rng.integers(0, n, size=n)
            draws[i] = float(metric(y_b[idx], output_b[idx])) - float(metric(y_a[idx], output_a[idx]))
    valid = draws[np.isfinite(draws)]
    if len(valid) == 0:
        low = high = float("nan")
    else:
        alpha = (1.0 - confidence) / 2.0
        low, high = (float(q) for q in np.quantile(valid, [alpha, 1.0 - alpha]))
    return BootstrapInterval(difference, low, high, confidence, valid, n_boot)


@dataclass(frozen=True)
class Comparison:
    """Two versions scored on the same rows of one dataset version.

    `difference` is b − a of the main metric; `low`/`high` its bootstrap interval.
    """

    model_a: str
    model_b: str
    asked_a: str
    asked_b: str
    dataset: str
    dataset_sha256: str
    task: str
    metric: str
    metric_label: str
    higher_is_better: bool
    rows: int
    score_a: float | None
    score_b: float | None
    difference: float | None
    low: float | None
    high: float | None
    confidence: float
    n_boot: int
    seed: int
    metrics_a: dict[str, float | None]
    metrics_b: dict[str, float | None]
    differences: tuple[float, ...] = field(repr=False)
    warnings: tuple[str, ...] = ()

    @property
    def better(self) -> str | None:
        """"a" or "b" when the interval excludes 0, else None (no clear winner)."""
        if self.low is None or self.high is None:
            return None
        if self.low > 0:
            return "b" if self.higher_is_better else "a"
        if self.high < 0:
            return "a" if self.higher_is_better else "b"
        return None

    @property
    def verdict(self) -> str:
        if self.difference is None or self.low is None or self.high is None:
            return f"{self.metric_label} is undefined on these rows; no verdict"
        interval = (f"{self.difference:+.4g} ({self.confidence:.0%} interval "
                    f"{self.low:+.4g} to {self.high:+.4g})")
        winner = self.better
        if winner is None:
            return (f"no clear difference in {self.metric_label}: {self.model_b} − "
                    f"{self.model_a} = {interval}, which includes 0")
        name = self.model_b if winner == "b" else self.model_a
        return (f"{name} is better on {self.metric_label}: {self.model_b} − {self.model_a} = "
                f"{interval}, which excludes 0")

    def to_dict(self) -> dict[str, Any]:
        return {
            "model_a": self.model_a, "model_b": self.model_b,
            "asked_a": self.asked_a, "asked_b": self.asked_b,
            "dataset": self.dataset, "dataset_sha256": self.dataset_sha256,
            "task": self.task, "metric": self.metric, "higher_is_better": self.higher_is_better,
            "rows": self.rows, "score_a": self.score_a, "score_b": self.score_b,
            "difference": self.difference, "ci_low": self.low, "ci_high": self.high,
            "confidence": self.confidence, "n_boot": self.n_boot, "seed": self.seed,
            "better": self.better, "verdict": self.verdict,
            "metrics_a": self.metrics_a, "metrics_b": self.metrics_b,
            "warnings": list(self.warnings),
        }


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def compare(
    ws: Workspace,
    model_a_ref: str,
    model_b_ref: str,
    dataset_ref: str,
    metric: str | None = None,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = 0,
    *,
    actor: User | None = None,
    confidence: float = DEFAULT_CONFIDENCE,
) -> Comparison:
    """Compare two versions (e.g. champion vs challenger) on the same dataset version.

    Both are scored on the same rows; the difference b − a of `metric` gets a
    paired-bootstrap confidence interval.

    Args:
        model_a_ref, model_b_ref: e.g. "churn@champion" and "churn@challenger".
        dataset_ref: "name" or "name:version".
        metric: a metric of the task (default: the task's default metric).
        n_boot: bootstrap resamples (100–100,000).
        seed: seeds the resampling.
        actor: when given, the comparison is permission-checked and audited.
        confidence: the interval's coverage.

    Returns:
        Both versions' metrics side by side, the difference and its interval.

    Raises:
        InvalidInput: the same version twice, different tasks or targets, a
            metric that does not fit the task, or a dataset that does not fit.
        NotFound: no such model, version or dataset.
    """
    if actor is not None:
        require(actor, "evaluate")
    version_a, model_a = load_version(ws, model_a_ref)
    version_b, model_b = load_version(ws, model_b_ref)
    if version_a.ref == version_b.ref:
        raise InvalidInput(
            f"{model_a_ref!r} and {model_b_ref!r} both name {version_a.ref}; pick two "
            "different versions to compare"
        )
    ca, cb = model_a.contract, model_b.contract
    if ca.task != cb.task:
        raise InvalidInput(
            f"{version_a.ref} is a {ca.task} model and {version_b.ref} a {cb.task} model; "
            "only models of the same task can be compared"
        )
    if ca.target != cb.target:
        raise InvalidInput(
            f"{version_a.ref} predicts {ca.target!r} and {version_b.ref} predicts "
            f"{cb.target!r}; only models of the same target can be compared"
        )
    spec = metric_registry.get_metric(metric, ca.task)
    dv = datasets.resolve(ws, dataset_ref)
    frame = datasets.load_frame(ws, dv)
    name = f"dataset {dv.ref}"
    scores_a = score_frame(model_a, frame, data_name=name, model_name=f"model {version_a.ref}")
    scores_b = score_frame(model_b, frame, data_name=name, model_name=f"model {version_b.ref}")
    interval = bootstrap_difference(
        spec, scores_a.y_true, scores_a.output, scores_b.output, y_true_b=scores_b.y_true,
        n_boot=n_boot, seed=seed, confidence=confidence,
    )
    notes = list(dict.fromkeys(scores_a.warnings + scores_b.warnings))
    dropped = n_boot - len(interval.differences)
    if dropped:
        notes.append(f"{dropped} of {n_boot} resamples left {spec.label} undefined and were "
                     "dropped from the interval")
    comparison = Comparison(
        model_a=version_a.ref, model_b=version_b.ref, asked_a=model_a_ref, asked_b=model_b_ref,
        dataset=dv.ref, dataset_sha256=dv.content_sha256, task=ca.task, metric=spec.name,
        metric_label=spec.label, higher_is_better=spec.higher_is_better, rows=scores_a.rows,
        score_a=scores_a.metrics.get(spec.name), score_b=scores_b.metrics.get(spec.name),
        difference=_finite(interval.difference), low=_finite(interval.low),
        high=_finite(interval.high), confidence=confidence, n_boot=n_boot, seed=seed,
        metrics_a=scores_a.metrics, metrics_b=scores_b.metrics,
        differences=tuple(float(d) for d in interval.differences), warnings=tuple(notes),
    )
    if actor is not None:
        with store.transaction(ws) as con:
            store.append_audit(
                con, actor=actor.name, action="versions_compared", entity_type="model_version",
                entity_id=version_b.ref,
                details={"a": version_a.ref, "b": version_b.ref, "dataset": dv.ref,
                         "dataset_sha256": dv.content_sha256, "metric": spec.name,
                         "difference": comparison.difference, "ci_low": comparison.low,
                         "ci_high": comparison.high, "n_boot": n_boot, "seed": seed},
            )
    return comparison


# --- choices for the page and the CLI -----------------------------------------------------------


def model_choices(ws: Workspace, *, flavor: str | None = "lightgbm") -> list[str]:
    """Every version reference ("name:3") and alias ("name@champion") that can be evaluated.

    Args:
        flavor: only versions of this flavor (None: every version).
    """
    out: list[str] = []
    offset = 0
    while True:
        page = registry.list_models(ws, limit=registry.MAX_PAGE, offset=offset)
        for summary in page:
            detail = registry.get_model(ws, summary.name)
            fitting = [v for v in detail.versions if flavor is None or v.flavor == flavor]
            numbers = {v.version for v in fitting}
            out.extend(f"{summary.name}@{alias}" for alias, number in
                       sorted(summary.aliases.items()) if number in numbers)
            out.extend(v.ref for v in fitting)
        if not page.has_next:
            return out
        offset += len(page)


def dataset_choices(ws: Workspace) -> list[str]:
    """Every dataset version as "name:version", newest version of each dataset first."""
    found = datasets.list_versions(ws)
    return [dv.ref for dv in sorted(found, key=lambda d: (d.name, -d.version))]


def evaluate_text_model(
    ws: Workspace,
    model_ref: str,
    dataset_ref: str,
    prompt_col: str,
    references_col: str,
    actor: User,
    *,
    smooth_bleu: bool = False,
) -> Evaluation:
    """Score a fine-tuned text model's own generations for a column of prompts.

    The model generates one text per prompt (torch is loaded only here) and the
    texts are scored and stored on that version as `evaluate_text` does.

    Raises:
        PondError: the version is not a text model Pond fine-tuned; and as `evaluate_text`.
    """
    from core import finetune

    return evaluate_text(
        ws, dataset_ref, None, references_col, actor, model_ref=model_ref,
        prompt_col=prompt_col, generate=finetune.generator_for(ws, model_ref),
        smooth_bleu=smooth_bleu,
    )
