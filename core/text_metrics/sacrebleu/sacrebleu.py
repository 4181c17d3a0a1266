"""sacreBLEU exactly as `sacrebleu.corpus_bleu` computes it, as a Hugging Face `evaluate` metric.

Load it by path, never by name (the hub is not reachable):
`evaluate.load("<pond>/core/text_metrics/sacrebleu/sacrebleu.py")`.

Unlike evaluate's own `sacrebleu` module, rows may have different numbers of
references: missing ones are passed to sacrebleu as None, which it skips (its
signature then says `nrefs:var`). The score is on a 0–100 scale and comes with
sacrebleu's signature, which says exactly how it was computed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import datasets
import evaluate

# The sacrebleu library, not this file: evaluate imports this file inside a package.
from sacrebleu.metrics import BLEU

_DESCRIPTION = """\
sacreBLEU (sacrebleu.corpus_bleu) with its signature; scale 0-100.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of generated texts.
    references: one reference text per prediction, or a list of reference texts each.
    smooth_method, smooth_value, force, lowercase, tokenize, use_effective_order:
        as sacrebleu.corpus_bleu (defaults: exp smoothing, 13a tokenizer, mixed case).
    per_example: also return sacrebleu.sentence_bleu of every row (default False).
Returns:
    score, counts, totals, precisions, bp, sys_len, ref_len, signature
    (and per_example when asked).
"""

_CITATION = """\
@inproceedings{post-2018-call,
    title = "A Call for Clarity in Reporting {BLEU} Scores",
    author = "Post, Matt", booktitle = "Proceedings of WMT", year = "2018", pages = "186--191",
}
"""


def reference_streams(references: Sequence[str] | Sequence[Sequence[str]]) -> list[list[str | None]]:
    """Per-row references turned into sacrebleu's reference streams, padded with None."""
    groups = [[r] if isinstance(r, str) else list(r) for r in references]
    width = max((len(g) for g in groups), default=0)
    return [[g[i] if i < len(g) else None for g in groups] for i in range(width)]


class Sacrebleu(evaluate.Metric):
    """sacrebleu.corpus_bleu as an `evaluate` metric."""

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
            reference_urls=["https://github.com/mjpost/sacrebleu"],
        )

    def _compute(
        self,
        predictions: Sequence[str],
        references: Sequence[str] | Sequence[Sequence[str]],
        smooth_method: str = "exp",
        smooth_value: float | None = None,
        force: bool = False,
        lowercase: bool = False,
        tokenize: str | None = None,
        use_effective_order: bool = False,
        per_example: bool = False,
    ) -> dict[str, Any]:
        metric = BLEU(
            lowercase=lowercase,
            force=force,
            tokenize=tokenize,
            smooth_method=smooth_method,
            smooth_value=smooth_value,
            effective_order=use_effective_order,
        )
        output = metric.corpus_score(list(predictions), reference_streams(references))
        result: dict[str, Any] = {
            "score": output.score,
            "counts": output.counts,
            "totals": output.totals,
            "precisions": output.precisions,
            "bp": output.bp,
            "sys_len": output.sys_len,
            "ref_len": output.ref_len,
            "signature": str(metric.get_signature()),
        }
        if per_example:
            # What sacrebleu.sentence_bleu computes with its defaults (effective order on).
            sentence = BLEU(effective_order=True)
            result["per_example"] = [
                sentence.sentence_score(p, [r] if isinstance(r, str) else list(r)).score
                for p, r in zip(predictions, references, strict=True)
            ]
        return result
