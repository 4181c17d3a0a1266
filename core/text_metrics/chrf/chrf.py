"""chrF exactly as `sacrebleu.corpus_chrf` computes it, as a Hugging Face `evaluate` metric.

Load it by path, never by name (the hub is not reachable):
`evaluate.load("<pond>/core/text_metrics/chrf/chrf.py")`.

Defaults are sacrebleu's: chrF2 (character n-grams up to 6, no word n-grams,
beta 2, whitespace ignored). Rows may have different numbers of references
(missing ones are passed as None). The score is on a 0–100 scale.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import datasets
import evaluate
import sacrebleu
from sacrebleu.metrics import CHRF

_DESCRIPTION = """\
chrF (sacrebleu.corpus_chrf) with its signature; scale 0-100.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of generated texts.
    references: one reference text per prediction, or a list of reference texts each.
    char_order, word_order, beta, lowercase, whitespace, eps_smoothing: as sacrebleu's CHRF.
    per_example: also return sacrebleu.sentence_chrf of every row (default False).
Returns:
    score, char_order, word_order, beta, signature (and per_example when asked).
"""

_CITATION = """\
@inproceedings{popovic-2015-chrf,
    title = "chr{F}: character n-gram {F}-score for automatic {MT} evaluation",
    author = "Popovi{\\'c}, Maja", booktitle = "Proceedings of WMT", year = "2015",
}
"""


def reference_streams(references: Sequence[str] | Sequence[Sequence[str]]) -> list[list[str | None]]:
    """Per-row references turned into sacrebleu's reference streams, padded with None."""
    groups = [[r] if isinstance(r, str) else list(r) for r in references]
    width = max((len(g) for g in groups), default=0)
    return [[g[i] if i < len(g) else None for g in groups] for i in range(width)]


class Chrf(evaluate.Metric):
    """sacrebleu.corpus_chrf as an `evaluate` metric."""

    def _info(self) -> evaluate.MetricInfo:
        text = datasets.Value("string", id="sequence")
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=[
                datasets.Features(
                    {"predictions": text, "references": datasets.Sequence(text, id="references")}
                ),
                datasets.Features({"predictions": text, "references": text}),
            ],
            codebase_urls=["https://github.com/mjpost/sacrebleu"],
            reference_urls=["https://github.com/m-popovic/chrF"],
        )

    def _compute(
        self,
        predictions: Sequence[str],
        references: Sequence[str] | Sequence[Sequence[str]],
        char_order: int = CHRF.CHAR_ORDER,
        word_order: int = CHRF.WORD_ORDER,
        beta: int = CHRF.BETA,
        lowercase: bool = False,
        whitespace: bool = False,
        eps_smoothing: bool = False,
        per_example: bool = False,
    ) -> dict[str, Any]:
        metric = CHRF(
            char_order=char_order,
            word_order=word_order,
            beta=beta,
            lowercase=lowercase,
            whitespace=whitespace,
            eps_smoothing=eps_smoothing,
        )
        output = metric.corpus_score(list(predictions), reference_streams(references))
        result: dict[str, Any] = {
            "score": output.score,
            "char_order": output.char_order,
            "word_order": output.word_order,
            "beta": output.beta,
            "signature": str(metric.get_signature()),
        }
        if per_example:
            result["per_example"] = [
                sacrebleu.sentence_chrf(p, [r] if isinstance(r, str) else list(r)).score
                for p, r in zip(predictions, references, strict=True)
            ]
        return result
