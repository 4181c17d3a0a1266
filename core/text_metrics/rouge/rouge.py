"""ROUGE exactly as Hugging Face evaluate's `rouge` computes it, shipped inside Pond.

Load it by path, never by name (the hub is not reachable):
`evaluate.load("<pond>/core/text_metrics/rouge/rouge.py")`.

It wraps Google's `rouge_score` like evaluate's `rouge`: RougeScorer with
rouge1, rouge2, rougeL and rougeLsum, stemming off by default, the default
tokenizer, `score_multi` (the best-matching reference) when rows have several
references, and the F1 of the BootstrapAggregator's `mid`. That aggregator
draws bootstrap samples from NumPy's global generator, so the same input can
give slightly different numbers from run to run; Pond seeds it (seed=0 by
default, None leaves it unseeded as evaluate's module does) and restores the
generator's state afterwards. Scores are on a 0–1 scale.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

import absl  # noqa: F401  (rouge_score needs it; a missing one fails early and clearly)
import datasets
import evaluate
import nltk  # noqa: F401  (rouge_score needs it for the Porter stemmer)
import numpy as np
from rouge_score import rouge_scorer, scoring

_DEFAULT_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")
# The seeding below touches NumPy's process-wide generator; one computation at a time.
_RNG_LOCK = threading.Lock()

_DESCRIPTION = """\
ROUGE (Google's rouge_score) F1 of the BootstrapAggregator's mid, as evaluate's `rouge`.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of generated texts.
    references: one reference text per prediction, or a list of reference texts each.
    rouge_types: which scores (default rouge1, rouge2, rougeL, rougeLsum).
    use_stemmer: strip word suffixes with the Porter stemmer (default False).
    use_aggregator: aggregate with BootstrapAggregator (mid F1) instead of per-row F1 lists.
    tokenizer: a callable from text to tokens (default: rouge_score's tokenizer).
    seed: seed for the aggregator's bootstrap (default 0; None leaves NumPy unseeded).
    per_example: with the aggregator, also return per-row F1 lists (default False).
Returns:
    rouge1, rouge2, rougeL, rougeLsum (and per_example when asked).
"""

_CITATION = """\
@inproceedings{lin-2004-rouge,
    title = "{ROUGE}: A Package for Automatic Evaluation of Summaries",
    author = "Lin, Chin-Yew", booktitle = "Text Summarization Branches Out", year = "2004",
}
"""


class _Tokenizer:
    """Wraps a callable into the object with a `tokenize` method rouge_score expects."""

    def __init__(self, fn: Callable[[str], list[str]]) -> None:
        self.fn = fn

    def tokenize(self, text: str) -> list[str]:
        return self.fn(text)


class Rouge(evaluate.Metric):
    """rouge_score with the bootstrap aggregator, as an `evaluate` metric."""

    def _info(self) -> evaluate.MetricInfo:
        text = datasets.Value("string", id="sequence")
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=[
                datasets.Features({"predictions": text, "references": datasets.Sequence(text)}),
                datasets.Features({"predictions": text, "references": text}),
            ],
            codebase_urls=["https://github.com/google-research/google-research/tree/master/rouge"],
            reference_urls=["https://huggingface.co/spaces/evaluate-metric/rouge"],
        )

    def _compute(
        self,
        predictions: Sequence[str],
        references: Sequence[str] | Sequence[Sequence[str]],
        rouge_types: Sequence[str] | None = None,
        use_aggregator: bool = True,
        use_stemmer: bool = False,
        tokenizer: Callable[[str], list[str]] | None = None,
        seed: int | None = 0,
        per_example: bool = False,
    ) -> dict[str, Any]:
        types = list(rouge_types) if rouge_types is not None else list(_DEFAULT_TYPES)
        scorer = rouge_scorer.RougeScorer(
            rouge_types=types,
            use_stemmer=use_stemmer,
            tokenizer=_Tokenizer(tokenizer) if tokenizer is not None else None,
        )
        scores = [
            scorer.score(r, p) if isinstance(r, str) else scorer.score_multi(list(r), p)
            for r, p in zip(references, predictions, strict=True)
        ]
        per_row = {key: [s[key].fmeasure for s in scores] for key in types}
        if not use_aggregator:
            return per_row

        aggregator = scoring.BootstrapAggregator()
        for score in scores:
            aggregator.add_scores(score)
        with _RNG_LOCK:
            state = np.random.get_state() if seed is not None else None
            try:
                if seed is not None:
                    np.random.seed(seed)
                aggregated = aggregator.aggregate()
            finally:
                if state is not None:
                    np.random.set_state(state)
        result: dict[str, Any] = {key: aggregated[key].mid.fmeasure for key in types}
        if per_example:
            result["per_example"] = per_row
        return result
