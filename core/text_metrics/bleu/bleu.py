"""BLEU exactly as Hugging Face evaluate's `bleu` metric computes it, shipped inside Pond.

Load it by path, never by name (the hub is not reachable):
`evaluate.load("<pond>/core/text_metrics/bleu/bleu.py")`.

The algorithm is tensorflow/nmt's `compute_bleu` (the one evaluate's `bleu`
wraps): corpus BLEU over clipped n-gram counts summed across all rows, max
n-gram order 4, optional Lin & Och (2004) add-one smoothing on every order,
and a brevity penalty against the *shortest* reference of each row. Text is
tokenized with sacrebleu's mteval-v13a tokenizer (evaluate's `bleu` carries a
copy of the same code). The score is on a 0–1 scale.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Callable, Sequence
from typing import Any

import datasets
import evaluate
from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

_DESCRIPTION = """\
Corpus BLEU as computed by Hugging Face evaluate's `bleu` (tensorflow/nmt compute_bleu,
13a tokenizer, max order 4, optional Lin & Och 2004 smoothing). Scale 0-1.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of generated texts.
    references: one reference text per prediction, or a list of reference texts each.
    tokenizer: a callable from text to tokens (default: sacrebleu's Tokenizer13a).
    max_order: the longest n-gram counted (default 4).
    smooth: apply Lin & Och (2004) add-one smoothing to every order (default False).
Returns:
    bleu, precisions (one per order), brevity_penalty, length_ratio,
    translation_length, reference_length.
"""

_CITATION = """\
@inproceedings{papineni-etal-2002-bleu,
    title = "{B}leu: a Method for Automatic Evaluation of Machine Translation",
    author = "Papineni, Kishore and Roukos, Salim and Ward, Todd and Zhu, Wei-Jing",
    booktitle = "Proceedings of ACL", year = "2002", pages = "311--318",
}
"""

Counts = collections.Counter
_13A = Tokenizer13a()


def tokenize_13a(text: str) -> list[str]:
    """mteval-v13a tokens (sacrebleu's tokenizer returns them joined by single spaces)."""
    return _13A(text).split()


def _ngrams(tokens: Sequence[str], max_order: int) -> Counts:
    """Every n-gram of `tokens` up to `max_order`, with how often it occurs."""
    counts: Counts = collections.Counter()
    for order in range(1, max_order + 1):
        for start in range(len(tokens) - order + 1):
            counts[tuple(tokens[start : start + order])] += 1
    return counts


def compute_bleu(
    reference_corpus: Sequence[Sequence[Sequence[str]]],
    translation_corpus: Sequence[Sequence[str]],
    max_order: int = 4,
    smooth: bool = False,
) -> tuple[float, list[float], float, float, int, int]:
    """tensorflow/nmt's corpus BLEU on tokenized text.

    Args:
        reference_corpus: per row, a list of tokenized references.
        translation_corpus: per row, the tokenized translation.
        max_order: the longest n-gram counted.
        smooth: add one to the matches and the possible matches of every order.

    Returns:
        (bleu, precisions, brevity penalty, length ratio, translation length,
        reference length), in that order.
    """
    matches_by_order = [0] * max_order
    possible_by_order = [0] * max_order
    reference_length = 0
    translation_length = 0
    for references, translation in zip(reference_corpus, translation_corpus, strict=True):
        reference_length += min(len(r) for r in references)
        translation_length += len(translation)
        merged: Counts = collections.Counter()
        for reference in references:
            # Clipping uses the most times an n-gram occurs in any single reference.
            merged |= _ngrams(reference, max_order)
        overlap = _ngrams(translation, max_order) & merged
        for ngram, count in overlap.items():
            matches_by_order[len(ngram) - 1] += count
        for order in range(1, max_order + 1):
            possible = len(translation) - order + 1
            if possible > 0:
                possible_by_order[order - 1] += possible

    precisions = [0.0] * max_order
    for i in range(max_order):
        if smooth:
            precisions[i] = (matches_by_order[i] + 1.0) / (possible_by_order[i] + 1.0)
        elif possible_by_order[i] > 0:
            precisions[i] = float(matches_by_order[i]) / possible_by_order[i]

    if min(precisions) > 0:
        geo_mean = math.exp(sum((1.0 / max_order) * math.log(p) for p in precisions))
    else:
        geo_mean = 0.0

    if reference_length == 0 or translation_length == 0:
        ratio = 0.0
        brevity_penalty = 0.0
    else:
        ratio = float(translation_length) / reference_length
        brevity_penalty = 1.0 if ratio > 1.0 else math.exp(1 - 1.0 / ratio)
    bleu = geo_mean * brevity_penalty
    return bleu, precisions, brevity_penalty, ratio, translation_length, reference_length


class Bleu(evaluate.Metric):
    """Corpus BLEU (evaluate's `bleu` algorithm) as an `evaluate` metric."""

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
            codebase_urls=["https://github.com/tensorflow/nmt/blob/master/nmt/scripts/bleu.py"],
            reference_urls=["https://huggingface.co/spaces/evaluate-metric/bleu"],
        )

    def _compute(
        self,
        predictions: Sequence[str],
        references: Sequence[str] | Sequence[Sequence[str]],
        tokenizer: Callable[[str], list[str]] | None = None,
        max_order: int = 4,
        smooth: bool = False,
    ) -> dict[str, Any]:
        tokenize = tokenizer if tokenizer is not None else tokenize_13a
        groups = [[r] if isinstance(r, str) else list(r) for r in references]
        bleu, precisions, bp, ratio, translation_length, reference_length = compute_bleu(
            reference_corpus=[[tokenize(r) for r in group] for group in groups],
            translation_corpus=[tokenize(p) for p in predictions],
            max_order=max_order,
            smooth=smooth,
        )
        return {
            "bleu": bleu,
            "precisions": precisions,
            "brevity_penalty": bp,
            "length_ratio": ratio,
            "translation_length": translation_length,
            "reference_length": reference_length,
        }
