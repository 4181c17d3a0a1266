"""Model-quality metrics for tabular tasks: pure functions plus a small registry.

Each metric is a pure function of the true targets and the model's output and
is described by a `MetricSpec` (name, the tasks it applies to, whether higher
is better, LightGBM's name for it). AutoML, evaluation and retraining look
metrics up here, so a score means the same thing everywhere in Pond.

Conventions: for classification `y_true` holds class indices 0..k-1 and
`y_score` is an (n, k) matrix of class probabilities; for regression both are
1-D arrays of numbers. Only NumPy and SciPy are used, so importing this module
is cheap.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.stats import rankdata

from core.errors import InvalidInput

BINARY = "binary"
MULTICLASS = "multiclass"
REGRESSION = "regression"
TASKS = (BINARY, MULTICLASS, REGRESSION)

# Probabilities are clipped before taking logs so one confident mistake costs a
# large but finite amount (the same epsilon scikit-learn used for years).
_EPS = 1e-15


def _as_proba(y_score: np.ndarray) -> np.ndarray:
    scores = np.asarray(y_score, dtype=np.float64)
    if scores.ndim == 1:
        # A binary model's probability of the positive class.
        scores = np.column_stack([1.0 - scores, scores])
    return scores


def roc_auc(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """Area under the ROC curve of a binary classifier (ties count half).

    Returns NaN when `y_true` holds only one class, where the AUC is undefined.
    """
    y = np.asarray(y_true)
    positive = _as_proba(y_score)[:, 1]
    n_pos = int((y == 1).sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(positive)
    return float((ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def log_loss(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """Mean negative log-likelihood of the true class."""
    y = np.asarray(y_true, dtype=np.int64)
    proba = np.clip(_as_proba(y_score), _EPS, 1.0)
    proba = proba / proba.sum(axis=1, keepdims=True)
    return float(-np.log(proba[np.arange(len(y)), y]).mean())


def _predicted_class(y_score: np.ndarray) -> np.ndarray:
    return _as_proba(y_score).argmax(axis=1)


def accuracy(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """Share of rows whose most probable class is the true one."""
    return float((np.asarray(y_true) == _predicted_class(y_score)).mean())


def macro_f1(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """Unweighted mean of per-class F1 over the classes seen in truth or prediction."""
    y = np.asarray(y_true, dtype=np.int64)
    pred = _predicted_class(y_score)
    scores = []
    for label in np.union1d(y, pred):
        tp = int(((pred == label) & (y == label)).sum())
        fp = int(((pred == label) & (y != label)).sum())
        fn = int(((pred != label) & (y == label)).sum())
        denominator = 2 * tp + fp + fn
        scores.append(2 * tp / denominator if denominator else 0.0)
    return float(np.mean(scores))


def rmse(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """Root mean squared error."""
    diff = np.asarray(y_true, dtype=np.float64) - np.asarray(y_score, dtype=np.float64)
    return float(np.sqrt(np.mean(diff**2)))


def mae(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """Mean absolute error."""
    diff = np.asarray(y_true, dtype=np.float64) - np.asarray(y_score, dtype=np.float64)
    return float(np.mean(np.abs(diff)))


def r2(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """Coefficient of determination (1 is perfect, 0 is predicting the mean)."""
    y = np.asarray(y_true, dtype=np.float64)
    residual = float(np.sum((y - np.asarray(y_score, dtype=np.float64)) ** 2))
    total = float(np.sum((y - y.mean()) ** 2))
    if total == 0.0:
        return 1.0 if residual == 0.0 else 0.0
    return 1.0 - residual / total


def pr_auc(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """Area under the precision-recall curve of a binary classifier, as average precision.

    The step-wise sum of precision times each gain in recall over the distinct
    scores (scikit-learn's `average_precision_score`), not the trapezoidal area,
    which overstates a curve with few points. NaN when there is no positive row.
    """
    y = np.asarray(y_true) == 1
    n_pos = int(y.sum())
    if n_pos == 0:
        return float("nan")
    positive = _as_proba(y_score)[:, 1]
    order = np.argsort(-positive, kind="mergesort")
    ranked, hits = positive[order], y[order]
    # The last row of each run of tied scores: a threshold admits the whole run.
    last = np.r_[np.flatnonzero(np.diff(ranked)), len(ranked) - 1]
    tps = np.cumsum(hits)[last]
    precision = tps / (last + 1)
    recall = tps / n_pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def roc_auc_ovr(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """Macro mean of one-vs-rest ROC AUC over the classes (multiclass).

    Classes absent from `y_true` (or the only one present) have no AUC and are
    left out of the mean; NaN when no class has one.
    """
    y = np.asarray(y_true, dtype=np.int64)
    proba = _as_proba(y_score)
    scores = []
    for k in range(proba.shape[1]):
        score = roc_auc((y == k).astype(np.int64), proba[:, k])
        if not np.isnan(score):
            scores.append(score)
    return float(np.mean(scores)) if scores else float("nan")


def _per_class_counts(
    y_true: np.ndarray, y_score: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """True positives, false positives, false negatives and support per label seen."""
    y = np.asarray(y_true, dtype=np.int64)
    pred = _predicted_class(y_score)
    labels = np.union1d(y, pred)
    tp = np.array([int(((pred == k) & (y == k)).sum()) for k in labels])
    fp = np.array([int(((pred == k) & (y != k)).sum()) for k in labels])
    fn = np.array([int(((pred != k) & (y == k)).sum()) for k in labels])
    support = np.array([int((y == k).sum()) for k in labels])
    return tp, fp, fn, support


def balanced_accuracy(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """Mean recall over the classes present in `y_true` (accuracy that ignores class sizes)."""
    tp, _, fn, support = _per_class_counts(y_true, y_score)
    present = support > 0
    return float(np.mean(tp[present] / (tp[present] + fn[present])))


def weighted_f1(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """Per-class F1 averaged with each class weighted by its number of true rows."""
    tp, fp, fn, support = _per_class_counts(y_true, y_score)
    denominator = 2 * tp + fp + fn
    f1 = np.divide(2 * tp, denominator, out=np.zeros(len(tp)), where=denominator > 0)
    return float(np.sum(f1 * support) / np.sum(support))


def mape(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """Mean absolute percentage error, as a fraction (0.1 is 10 %).

    A true value of 0 is divided by machine epsilon instead (scikit-learn's
    convention), so such rows dominate: read MAPE with care near zero.
    """
    y = np.asarray(y_true, dtype=np.float64)
    diff = np.abs(y - np.asarray(y_score, dtype=np.float64))
    return float(np.mean(diff / np.maximum(np.abs(y), np.finfo(np.float64).eps)))


@dataclass(frozen=True)
class MetricSpec:
    """What a metric is: its name, where it applies and which way is better.

    `lightgbm` is LightGBM's built-in metric with the same meaning (per task),
    used for early stopping; None means LightGBM has no smooth equivalent and
    AutoML early-stops on the task's log loss or L2 instead.
    """

    name: str
    label: str
    tasks: frozenset[str]
    higher_is_better: bool
    fn: Callable[[np.ndarray, np.ndarray], float]
    lightgbm: dict[str, str]
    variant: str = ""

    @property
    def implementation(self) -> str:
        """The pure function that computes it, e.g. `core.metrics.roc_auc`."""
        return f"{self.fn.__module__}.{self.fn.__name__}"

    def __call__(self, y_true: np.ndarray, y_score: np.ndarray) -> float:
        return self.fn(y_true, y_score)

    def better(self, a: float, b: float) -> bool:
        """True when score `a` is strictly better than score `b`."""
        return a > b if self.higher_is_better else a < b


METRICS: dict[str, MetricSpec] = {
    spec.name: spec
    for spec in (
        MetricSpec("roc_auc", "ROC AUC", frozenset({BINARY}), True, roc_auc, {BINARY: "auc"}),
        MetricSpec(
            "log_loss",
            "log loss",
            frozenset({BINARY, MULTICLASS}),
            False,
            log_loss,
            {BINARY: "binary_logloss", MULTICLASS: "multi_logloss"},
        ),
        MetricSpec("macro_f1", "macro F1", frozenset({BINARY, MULTICLASS}), True, macro_f1, {}),
        MetricSpec("accuracy", "accuracy", frozenset({BINARY, MULTICLASS}), True, accuracy, {}),
        MetricSpec("rmse", "RMSE", frozenset({REGRESSION}), False, rmse, {REGRESSION: "rmse"}),
        MetricSpec("mae", "MAE", frozenset({REGRESSION}), False, mae, {REGRESSION: "l1"}),
        MetricSpec("r2", "R²", frozenset({REGRESSION}), True, r2, {}),
        MetricSpec(
            "pr_auc", "PR AUC", frozenset({BINARY}), True, pr_auc, {BINARY: "average_precision"},
            "average precision: step-wise area under the precision-recall curve of the second "
            "class (sklearn average_precision_score)",
        ),
        MetricSpec(
            "roc_auc_ovr", "ROC AUC (one-vs-rest)", frozenset({MULTICLASS}), True, roc_auc_ovr,
            {}, "macro mean over classes of one-vs-rest ROC AUC (sklearn multi_class='ovr')",
        ),
        MetricSpec(
            "balanced_accuracy", "balanced accuracy", frozenset({BINARY, MULTICLASS}), True,
            balanced_accuracy, {}, "mean per-class recall (sklearn balanced_accuracy_score)",
        ),
        MetricSpec(
            "weighted_f1", "weighted F1", frozenset({BINARY, MULTICLASS}), True, weighted_f1, {},
            "per-class F1 weighted by true-row count (sklearn f1_score average='weighted')",
        ),
        MetricSpec(
            # LightGBM's own mape divides by max(1, |true|), a different number: no mapping.
            "mape", "MAPE", frozenset({REGRESSION}), False, mape, {},
            "mean |error| / max(|true|, machine epsilon), a fraction "
            "(sklearn mean_absolute_percentage_error)",
        ),
    )
}

# The default per task: threshold-free ranking quality for binary, the proper
# scoring rule for multiclass, and RMSE in the target's own unit for regression.
_DEFAULTS = {BINARY: "roc_auc", MULTICLASS: "log_loss", REGRESSION: "rmse"}


def check_task(task: str) -> str:
    """Raises: InvalidInput unless `task` is binary, multiclass or regression."""
    if task not in TASKS:
        raise InvalidInput(
            f"The 'task' parameter must be one of {', '.join(TASKS)}. Got {task!r} instead."
        )
    return task


def default_metric(task: str) -> MetricSpec:
    """The metric Pond optimises for `task` when the user names none."""
    return METRICS[_DEFAULTS[check_task(task)]]


def metrics_for(task: str) -> list[MetricSpec]:
    """Every metric that applies to `task`, the default first."""
    check_task(task)
    default = _DEFAULTS[task]
    specs = [s for s in METRICS.values() if task in s.tasks]
    return sorted(specs, key=lambda s: s.name != default)


def get_metric(name: str | None, task: str) -> MetricSpec:
    """The metric called `name` for `task` (the task's default when None).

    Raises:
        InvalidInput: unknown metric, or one that does not apply to the task.
    """
    if name is None:
        return default_metric(task)
    spec = METRICS.get(name)
    if spec is None or task not in spec.tasks:
        names = ", ".join(s.name for s in metrics_for(task))
        raise InvalidInput(
            f"The 'metric' parameter must be one of {names} for a {task} task. "
            f"Got {name!r} instead."
        )
    return spec


def score_all(task: str, y_true: np.ndarray, y_score: np.ndarray) -> dict[str, float]:
    """Every metric of `task` on one set of predictions, by name."""
    return {spec.name: spec(y_true, y_score) for spec in metrics_for(task)}


# --- text generation ------------------------------------------------------------------
#
# Text metrics are not plain functions of arrays: they are computed through the
# Hugging Face `evaluate` API with modules that ship inside Pond
# (core/text_metrics/<module>/<module>.py). Their descriptors live here with the
# tabular ones so the page, the CLI, fine-tuning and retraining name and order
# them the same way, and so every number says exactly which variant it is.

TEXT_GENERATION = "text_generation"


@dataclass(frozen=True)
class TextMetricSpec:
    """What a text-generation metric is and which implementation computes it.

    Attributes:
        name: the key of the number in Pond's results (e.g. "rougeL").
        label: how people read it.
        module: Pond's `evaluate` module that computes it (core/text_metrics/<module>).
        output_key: the key of the number in that module's `compute()` output.
        higher_is_better: which way is better.
        scale: the range of the number ("0–1" or "0–100").
        variant: exactly which variant of the metric this is.
        reference: the reference implementation whose numbers it equals.
    """

    name: str
    label: str
    module: str
    output_key: str
    higher_is_better: bool
    scale: str
    variant: str
    reference: str
    tasks: frozenset[str] = frozenset({TEXT_GENERATION})

    @property
    def implementation(self) -> str:
        return f"evaluate module core/text_metrics/{self.module}/{self.module}.py"


_ROUGE_VARIANT = (
    "Google's rouge_score RougeScorer, use_stemmer=False, default tokenizer (lower-case, "
    "only a–z and 0–9 kept, so text in other scripts scores 0), F1 of the "
    "BootstrapAggregator's mid (median of 1,000 bootstrap means, NumPy seeded with 0); "
    "several references per row take the best-matching one (score_multi)"
)

TEXT_METRICS: dict[str, TextMetricSpec] = {
    spec.name: spec
    for spec in (
        TextMetricSpec(
            "bleu", "BLEU", "bleu", "bleu", True, "0–1",
            "Hugging Face evaluate's `bleu`: tensorflow/nmt compute_bleu corpus BLEU, "
            "mteval 13a tokenizer, max n-gram order 4, no smoothing unless asked (Lin & Och "
            "2004 add-one), brevity penalty against the shortest reference of each row",
            "evaluate.load('bleu') (tensorflow/nmt compute_bleu)",
        ),
        TextMetricSpec(
            "sacrebleu", "sacreBLEU", "sacrebleu", "score", True, "0–100",
            "sacrebleu.corpus_bleu with its defaults (13a tokenizer, exp smoothing, mixed "
            "case, closest reference length); the signature is stored with the number",
            "sacrebleu.corpus_bleu",
        ),
        TextMetricSpec(
            "chrf", "chrF", "chrf", "score", True, "0–100",
            "sacrebleu.corpus_chrf with its defaults: chrF2 (character n-grams up to 6, "
            "no word n-grams, beta 2, whitespace ignored)",
            "sacrebleu.corpus_chrf",
        ),
        TextMetricSpec(
            "rouge1", "ROUGE-1", "rouge", "rouge1", True, "0–1",
            "unigram overlap; " + _ROUGE_VARIANT,
            "rouge_score + scoring.BootstrapAggregator (mid F1)",
        ),
        TextMetricSpec(
            "rouge2", "ROUGE-2", "rouge", "rouge2", True, "0–1",
            "bigram overlap; " + _ROUGE_VARIANT,
            "rouge_score + scoring.BootstrapAggregator (mid F1)",
        ),
        TextMetricSpec(
            "rougeL", "ROUGE-L", "rouge", "rougeL", True, "0–1",
            "longest common subsequence over the whole text; " + _ROUGE_VARIANT,
            "rouge_score + scoring.BootstrapAggregator (mid F1)",
        ),
        TextMetricSpec(
            "rougeLsum", "ROUGE-Lsum", "rouge", "rougeLsum", True, "0–1",
            "summary-level LCS over sentences split at newlines (text without newlines "
            "scores as rougeL); " + _ROUGE_VARIANT,
            "rouge_score + scoring.BootstrapAggregator (mid F1)",
        ),
    )
}

# The number a text evaluation leads with: ROUGE-L reads well for both short
# answers and summaries and is on a 0–1 scale like the tabular scores.
DEFAULT_TEXT_METRIC = "rougeL"


def text_metric(name: str | None = None) -> TextMetricSpec:
    """The text metric called `name` (the default, ROUGE-L, when None).

    Raises:
        InvalidInput: unknown name.
    """
    if name is None:
        return TEXT_METRICS[DEFAULT_TEXT_METRIC]
    spec = TEXT_METRICS.get(name)
    if spec is None:
        raise InvalidInput(
            f"The 'metric' parameter must be one of {', '.join(TEXT_METRICS)} for text "
            f"generation. Got {name!r} instead."
        )
    return spec


def text_modules() -> list[str]:
    """Pond's `evaluate` modules that together compute every text metric, in order."""
    return list(dict.fromkeys(spec.module for spec in TEXT_METRICS.values()))
