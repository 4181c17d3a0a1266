"""Text-generation metrics (BLEU, sacreBLEU, chrF, ROUGE) through Hugging Face `evaluate`,
with metric modules that ship inside Pond.

Each metric is an `evaluate.Metric` subclass in `core/text_metrics/<name>/<name>.py`
and is always loaded by its file path, so `evaluate` never consults the hub (it is
unreachable here and for many users). `import evaluate` costs seconds, so it
happens only inside `load` / `score_texts`, never when this package is imported.
Before that first import the process is set offline (`HF_EVALUATE_OFFLINE=1`) and
`HF_HOME` points at a folder inside the workspace, where `evaluate` copies the
modules it imports. The descriptors (what each number is, exactly) live in
`core.metrics.TEXT_METRICS`.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core.errors import InvalidInput, PondError
from core.metrics import DEFAULT_TEXT_METRIC, TEXT_METRICS, text_modules

MODULES_DIR = Path(__file__).resolve().parent
# Rows go to `evaluate` in batches through `add_batch`, as its API intends for large sets.
BATCH_SIZE = 1000
# How many row numbers an error message lists before "and N more".
_SHOWN = 5

# The sentence-level scores shown per row; corpus numbers are not averages of these.
PER_EXAMPLE_VARIANTS: dict[str, str] = {
    "chrf": "sentence chrF2 (sacrebleu.sentence_chrf defaults), 0–100",
    "sentence_bleu": "sentence BLEU (sacrebleu.sentence_bleu: exp smoothing, effective order), "
    "0–100",
    "rouge1": "ROUGE-1 F1 of the row (rouge_score, no stemming), 0–1",
    "rouge2": "ROUGE-2 F1 of the row, 0–1",
    "rougeL": "ROUGE-L F1 of the row, 0–1",
    "rougeLsum": "ROUGE-Lsum F1 of the row, 0–1",
}
DEFAULT_SORT = "chrf"

References = list[str]


def module_path(name: str) -> Path:
    """The file of Pond's `evaluate` module `name` (bleu, rouge, sacrebleu or chrf).

    Raises:
        InvalidInput: unknown module. PondError: the file is missing from this install.
    """
    if name not in text_modules():
        raise InvalidInput(
            f"unknown text metric module {name!r}; Pond ships {', '.join(text_modules())}"
        )
    path = MODULES_DIR / name / f"{name}.py"
    if not path.is_file():
        raise PondError(f"Pond's metric module {path} is missing; reinstall Pond")
    return path


def module_sha256(name: str) -> str:
    """The sha256 of a metric module's file, recorded with each evaluation."""
    return hashlib.sha256(module_path(name).read_bytes()).hexdigest()


def _import_evaluate(hf_home: Path | None) -> Any:
    """`import evaluate`, offline, with its caches under `hf_home` when this is the first import.

    Environment variables are read by `evaluate` at import time; once it is
    imported in this process its caches stay where they were first put.
    """
    if "evaluate" not in sys.modules:
        os.environ["HF_EVALUATE_OFFLINE"] = "1"
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
        if hf_home is not None:
            hf_home.mkdir(parents=True, exist_ok=True)
            os.environ["HF_HOME"] = str(hf_home)
    import datasets
    import evaluate

    evaluate.config.HF_EVALUATE_OFFLINE = True
    evaluate.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    return evaluate


def load(name: str, hf_home: Path | None = None) -> Any:
    """Pond's metric module `name` as an `evaluate.EvaluationModule`, loaded by file path.

    Args:
        name: bleu, rouge, sacrebleu or chrf.
        hf_home: the folder for `evaluate`'s caches (the workspace's `hf/`).

    Returns:
        A fresh module instance that keeps its data in memory.

    Raises:
        InvalidInput: unknown module.
    """
    path = module_path(name)
    evaluate = _import_evaluate(hf_home)
    # A path to an existing file is always loaded locally; a bare name would go to the hub.
    return evaluate.load(str(path), keep_in_memory=True)


def library_versions() -> dict[str, str]:
    """Versions of the libraries behind the text metrics, recorded with each evaluation."""
    out: dict[str, str] = {}
    for package in ("evaluate", "sacrebleu", "rouge-score", "nltk", "datasets"):
        try:
            out[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            out[package] = "not installed"
    return out


# --- input checks -------------------------------------------------------------------------


def _rows_text(rows: Sequence[Any]) -> str:
    shown = ", ".join(str(r) for r in rows[:_SHOWN])
    return shown + (f" and {len(rows) - _SHOWN} more" if len(rows) > _SHOWN else "")


def _is_missing(value: Any) -> bool:
    """None, NaN, pd.NA or NaT (a list of references is never missing as a whole)."""
    if isinstance(value, list | tuple | np.ndarray):
        return False
    return bool(pd.isna(value))


def _as_reference_group(value: Any) -> list[Any] | None:
    """A list of references when `value` holds several, else None."""
    if isinstance(value, list | tuple):
        return list(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    return None


@dataclass(frozen=True)
class TextPairs:
    """Checked input: one prediction and its references per row.

    Attributes:
        predictions: the generated texts.
        references: per row, one or more reference texts (never empty).
        rows: the row number of each pair in the caller's data.
        multi_reference: whether any row has more than one reference.
        warnings: what was accepted but should be known (empty predictions…).
    """

    predictions: list[str]
    references: list[References]
    rows: list[int]
    multi_reference: bool
    warnings: tuple[str, ...] = field(default=())


def check_pairs(
    predictions: Sequence[Any],
    references: Sequence[Any],
    *,
    prediction_name: str = "predictions",
    reference_name: str = "references",
    rows: Sequence[int] | None = None,
) -> TextPairs:
    """Check generated texts against their references before any metric sees them.

    A reference cell may hold one text or a list of texts (several references,
    supported by every metric). An empty prediction is allowed (it scores 0)
    and reported in the warnings.

    Args:
        predictions: one generated text per row.
        references: per row, a reference text or a list of them.
        prediction_name, reference_name: how the messages name the two inputs
            (e.g. "column 'summary' of dataset news:2").
        rows: the row numbers the messages use (default 0, 1, 2…).

    Returns:
        The checked pairs.

    Raises:
        InvalidInput: different lengths, nothing to score, a missing (None/NaN)
            or non-text prediction, or a row without any non-empty reference
            text; the message names the input and the rows.
    """
    predictions = list(predictions)
    references = list(references)
    if len(predictions) != len(references):
        raise InvalidInput(
            f"{prediction_name} has {len(predictions)} rows but {reference_name} has "
            f"{len(references)}; give exactly one reference (or one list of references) "
            "per prediction"
        )
    if not predictions:
        raise InvalidInput(
            f"there is nothing to score: {prediction_name} and {reference_name} are empty"
        )
    numbers = list(rows) if rows is not None else list(range(len(predictions)))

    missing = [numbers[i] for i, p in enumerate(predictions) if _is_missing(p)]
    if missing:
        raise InvalidInput(
            f"{prediction_name} has no value (None/null) at row {_rows_text(missing)}; every "
            "row needs a generated text: fill those rows with '' to score them as empty, or "
            "leave them out"
        )
    wrong = [(numbers[i], p) for i, p in enumerate(predictions) if not isinstance(p, str)]
    if wrong:
        row, value = wrong[0]
        raise InvalidInput(
            f"{prediction_name} holds a {type(value).__name__} ({value!r}) at row {row}, not "
            f"text ({len(wrong)} such rows); text metrics compare strings: convert the column "
            "to text first"
        )

    groups: list[References] = []
    empty_refs: list[int] = []
    multi = False
    for i, value in enumerate(references):
        group = _as_reference_group(value)
        if group is None:
            if _is_missing(value):
                empty_refs.append(numbers[i])
                continue
            group = [value]
        else:
            multi = multi or len(group) > 1
        bad = [r for r in group if r is not None and not isinstance(r, str)]
        if bad:
            raise InvalidInput(
                f"{reference_name} holds a {type(bad[0]).__name__} ({bad[0]!r}) at row "
                f"{numbers[i]}, not text; a reference is a text or a list of texts (several "
                "references)"
            )
        texts = [r for r in group if r is not None and r.strip()]
        if not texts:
            empty_refs.append(numbers[i])
            continue
        groups.append(texts)
    if empty_refs:
        raise InvalidInput(
            f"{reference_name} is empty (no reference text) at row {_rows_text(empty_refs)}; "
            "every row needs at least one non-empty reference: fill or leave out those rows"
        )

    notes: list[str] = []
    # A CSV cannot hold lists, so several references sometimes arrive as JSON text.
    listy = [numbers[i] for i, g in enumerate(groups)
             if len(g) == 1 and g[0].lstrip().startswith("[") and g[0].rstrip().endswith("]")]
    if listy:
        notes.append(
            f"{reference_name} holds text that looks like a JSON list at row {_rows_text(listy)}; "
            "it was scored as one reference. To give several references per row, store them "
            "as a list column (ingest JSON Lines or Parquet)"
        )
    blank = [numbers[i] for i, p in enumerate(predictions) if not p.strip()]
    if blank:
        notes.append(
            f"{len(blank)} of {len(predictions)} predictions are empty (row "
            f"{_rows_text(blank)}); they score 0"
        )
    return TextPairs(predictions, groups, numbers, multi, tuple(notes))


# --- computing ------------------------------------------------------------------------------


@dataclass(frozen=True)
class TextScores:
    """Corpus text metrics and per-row scores of one set of predictions.

    Attributes:
        metrics: by `core.metrics.TEXT_METRICS` name (bleu, sacrebleu, chrf, rouge…).
        outputs: each module's full output (precisions, brevity penalty, signatures…).
        per_example: one dict per row (row, prediction, references and the
            `PER_EXAMPLE_VARIANTS` scores), worst first by `sort_by`.
        sort_by: the per-row score the rows are ordered by (ascending).
        warnings: what was accepted but should be known.
        implementation: library versions and the sha256 of each module file.
    """

    metrics: dict[str, float]
    outputs: dict[str, dict[str, Any]]
    per_example: list[dict[str, Any]]
    sort_by: str
    warnings: tuple[str, ...]
    implementation: dict[str, Any]

    @property
    def main_metric(self) -> str:
        return DEFAULT_TEXT_METRIC


def _compute(module: Any, pairs: TextPairs, **kwargs: Any) -> dict[str, Any]:
    for start in range(0, len(pairs.predictions), BATCH_SIZE):
        module.add_batch(
            predictions=pairs.predictions[start : start + BATCH_SIZE],
            references=pairs.references[start : start + BATCH_SIZE],
        )
    return module.compute(**kwargs)


def score_texts(
    pairs: TextPairs,
    *,
    hf_home: Path | None = None,
    per_example: bool = True,
    sort_by: str = DEFAULT_SORT,
    smooth_bleu: bool = False,
) -> TextScores:
    """BLEU, sacreBLEU, chrF and ROUGE of checked pairs, through Pond's `evaluate` modules.

    Args:
        pairs: from `check_pairs`.
        hf_home: where `evaluate` keeps its caches (the workspace's `hf/`).
        per_example: also score every row on its own.
        sort_by: the per-row score to order rows by, worst first.
        smooth_bleu: Lin & Och smoothing for `bleu` (off, as in evaluate's default).

    Returns:
        The scores; see `TextScores`.

    Raises:
        InvalidInput: unknown `sort_by`.
    """
    if sort_by not in PER_EXAMPLE_VARIANTS:
        raise InvalidInput(
            f"The 'sort_by' parameter must be one of {', '.join(PER_EXAMPLE_VARIANTS)}. "
            f"Got {sort_by!r} instead."
        )
    kwargs: dict[str, dict[str, Any]] = {
        "bleu": {"smooth": smooth_bleu},
        "sacrebleu": {"per_example": per_example},
        "chrf": {"per_example": per_example},
        "rouge": {"per_example": per_example},
    }
    outputs: dict[str, dict[str, Any]] = {}
    per_row: dict[str, list[float]] = {}
    for name in text_modules():
        output = dict(_compute(load(name, hf_home), pairs, **kwargs[name]))
        rows = output.pop("per_example", None)
        if isinstance(rows, dict):
            per_row.update(rows)
        elif rows is not None:
            per_row["sentence_bleu" if name == "sacrebleu" else name] = rows
        outputs[name] = output
    metrics = {
        spec.name: float(outputs[spec.module][spec.output_key]) for spec in TEXT_METRICS.values()
    }

    examples: list[dict[str, Any]] = []
    if per_example:
        for i, row in enumerate(pairs.rows):
            refs = pairs.references[i]
            item: dict[str, Any] = {
                "row": row,
                "prediction": pairs.predictions[i],
                "references": refs if pairs.multi_reference else refs[0],
            }
            for key in PER_EXAMPLE_VARIANTS:
                if key in per_row:
                    item[key] = float(per_row[key][i])
            examples.append(item)
        examples.sort(key=lambda e: (e[sort_by], e.get("rougeL", 0.0), e["row"]))

    implementation = {
        "implementation": "Hugging Face evaluate with Pond's metric modules",
        "modules": {name: module_sha256(name) for name in text_modules()},
        "libraries": library_versions(),
        "bleu_smooth": smooth_bleu,
        "rouge_seed": 0,
    }
    return TextScores(metrics, outputs, examples, sort_by, pairs.warnings, implementation)

