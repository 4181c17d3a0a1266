"""Pond's text metrics equal their reference implementations exactly, load only from
Pond's own files (never the hub), and refuse bad input with clear messages."""

from __future__ import annotations

import collections
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import sacrebleu
from rouge_score import rouge_scorer, scoring
from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

from core import text_metrics
from core.errors import InvalidInput
from core.metrics import TEXT_METRICS

ROOT = Path(__file__).resolve().parent.parent

PREDICTIONS = [
    "The cat sat on the mat.",
    "There is a dog in the garden, barking loudly!",
    "It's 3.5 degrees warmer than yesterday (a record).",
    "hello there general kenobi",
    "foo bar foobar",
    "A completely unrelated sentence about trains.",
]
REFERENCES = [
    "The cat is sitting on the mat.",
    "A dog is barking loudly in the garden.",
    "It is 3.5 degrees warmer than yesterday, a record.",
    "hello there general kenobi",
    "foo bar foobar",
    "The weather was pleasant all week.",
]
# Rows with several references, and a different number of them per row.
MULTI_REFERENCES = [
    ["The cat is sitting on the mat.", "A cat sat on the mat."],
    ["A dog is barking loudly in the garden."],
    ["It is 3.5 degrees warmer than yesterday, a record.", "Warmer than yesterday by 3.5."],
    ["hello there general kenobi", "hello there!"],
    ["foo bar foobar"],
    ["The weather was pleasant all week.", "Nice weather.", "It was sunny."],
]


# --- reference implementations ---------------------------------------------------------------
#
# tensorflow/nmt nmt/scripts/bleu.py `compute_bleu` (Apache-2.0, Google), the function
# Hugging Face evaluate's `bleu` metric calls, kept here line for line as the yardstick.
# evaluate's `tokenizer_13a.py` is a copy of sacrebleu's Tokenizer13a that returns the
# tokens as a list, which is what `_hf_tokenize` does.


def _get_ngrams(segment, max_order):
    ngram_counts = collections.Counter()
    for order in range(1, max_order + 1):
        for i in range(0, len(segment) - order + 1):
            ngram = tuple(segment[i : i + order])
            ngram_counts[ngram] += 1
    return ngram_counts


def _nmt_compute_bleu(reference_corpus, translation_corpus, max_order=4, smooth=False):
    matches_by_order = [0] * max_order
    possible_matches_by_order = [0] * max_order
    reference_length = 0
    translation_length = 0
    for references, translation in zip(reference_corpus, translation_corpus, strict=True):
        reference_length += min(len(r) for r in references)
        translation_length += len(translation)
        merged_ref_ngram_counts = collections.Counter()
        for reference in references:
            merged_ref_ngram_counts |= _get_ngrams(reference, max_order)
        translation_ngram_counts = _get_ngrams(translation, max_order)
        overlap = translation_ngram_counts & merged_ref_ngram_counts
        for ngram in overlap:
            matches_by_order[len(ngram) - 1] += overlap[ngram]
        for order in range(1, max_order + 1):
            possible_matches = len(translation) - order + 1
            if possible_matches > 0:
                possible_matches_by_order[order - 1] += possible_matches
    precisions = [0] * max_order
    for i in range(0, max_order):
        if smooth:
            precisions[i] = (matches_by_order[i] + 1.0) / (possible_matches_by_order[i] + 1.0)
        else:
            if possible_matches_by_order[i] > 0:
                precisions[i] = float(matches_by_order[i]) / possible_matches_by_order[i]
            else:
                precisions[i] = 0.0
    if min(precisions) > 0:
        p_log_sum = sum((1.0 / max_order) * math.log(p) for p in precisions)
        geo_mean = math.exp(p_log_sum)
    else:
        geo_mean = 0
    if reference_length == 0 or translation_length == 0:
        ratio = 0.0
        bp = 0.0
    else:
        ratio = float(translation_length) / reference_length
        bp = 1.0 if ratio > 1.0 else math.exp(1 - 1.0 / ratio)
    bleu = geo_mean * bp
    return (bleu, precisions, bp, ratio, translation_length, reference_length)


_13A = Tokenizer13a()


def _hf_tokenize(text: str) -> list[str]:
    return _13A(text).split()


def _hf_bleu(predictions, references, max_order=4, smooth=False):
    if isinstance(references[0], str):
        references = [[ref] for ref in references]
    refs = [[_hf_tokenize(r) for r in ref] for ref in references]
    preds = [_hf_tokenize(p) for p in predictions]
    return _nmt_compute_bleu(refs, preds, max_order=max_order, smooth=smooth)


def _rouge_reference(predictions, references, seed=0, use_stemmer=False):
    """evaluate's `rouge` algorithm: rouge_score + BootstrapAggregator mid F1, NumPy seeded."""
    types = ["rouge1", "rouge2", "rougeL", "rougeLsum"]
    scorer = rouge_scorer.RougeScorer(types, use_stemmer=use_stemmer)
    aggregator = scoring.BootstrapAggregator()
    per_row = []
    for ref, pred in zip(references, predictions, strict=True):
        score = scorer.score(ref, pred) if isinstance(ref, str) else scorer.score_multi(ref, pred)
        aggregator.add_scores(score)
        per_row.append(score)
    np.random.seed(seed)
    result = aggregator.aggregate()
    return {k: result[k].mid.fmeasure for k in types}, per_row


# --- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hf_home(tmp_path_factory):
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_EVALUATE_OFFLINE"] = "1"
    return tmp_path_factory.mktemp("hf")


@pytest.fixture(scope="module")
def metric(hf_home):
    def load(name: str):
        return text_metrics.load(name, hf_home)

    return load


# --- equality with the references ----------------------------------------------------------------


@pytest.mark.parametrize("smooth", [False, True])
@pytest.mark.parametrize("references", [REFERENCES, MULTI_REFERENCES], ids=["one", "several"])
def test_bleu_equals_hf_bleu_algorithm(metric, references, smooth):
    got = metric("bleu").compute(predictions=PREDICTIONS, references=references, smooth=smooth)
    bleu, precisions, bp, ratio, hyp_len, ref_len = _hf_bleu(PREDICTIONS, references,
                                                             smooth=smooth)
    assert got["bleu"] == bleu
    assert got["precisions"] == precisions
    assert got["brevity_penalty"] == bp
    assert got["length_ratio"] == ratio
    assert (got["translation_length"], got["reference_length"]) == (hyp_len, ref_len)


def test_bleu_max_order_and_pinned_value(metric):
    got = metric("bleu").compute(predictions=PREDICTIONS, references=REFERENCES, max_order=2)
    assert got["bleu"] == _hf_bleu(PREDICTIONS, REFERENCES, max_order=2)[0]
    default = metric("bleu").compute(predictions=PREDICTIONS, references=REFERENCES)
    # Pinned on this fixed text so a silent change of tokenizer or algorithm shows.
    assert default["bleu"] == pytest.approx(0.346373, abs=1e-6)
    assert default["precisions"] == pytest.approx([29 / 43, 17 / 37, 9 / 31, 4 / 25])
    assert default["translation_length"] == 43 and default["reference_length"] == 42


def test_bleu_equals_nltk_corpus_bleu_for_one_reference(metric):
    """An independent implementation agrees where the two definitions coincide: one
    reference per row (closest and shortest reference length are the same) and no
    prediction shorter than 4 tokens (NLTK counts at least one possible n-gram)."""
    from nltk.translate.bleu_score import corpus_bleu

    keep = [i for i, p in enumerate(PREDICTIONS) if len(_hf_tokenize(p)) >= 4]
    predictions = [PREDICTIONS[i] for i in keep]
    references = [REFERENCES[i] for i in keep]
    got = metric("bleu").compute(predictions=predictions, references=references)
    expected = corpus_bleu([[_hf_tokenize(r)] for r in references],
                           [_hf_tokenize(p) for p in predictions])
    assert got["bleu"] == pytest.approx(expected, rel=1e-12)


def test_bleu_of_identical_text_is_one_and_of_empty_predictions_zero(metric):
    assert metric("bleu").compute(predictions=REFERENCES, references=REFERENCES)["bleu"] == 1.0
    empty = metric("bleu").compute(predictions=["", ""], references=["a b c d", "e f g h"])
    assert empty["bleu"] == 0.0 and empty["brevity_penalty"] == 0.0


@pytest.mark.parametrize("references", [REFERENCES, MULTI_REFERENCES], ids=["one", "several"])
def test_sacrebleu_equals_corpus_bleu_exactly(metric, references):
    got = metric("sacrebleu").compute(predictions=PREDICTIONS, references=references)
    groups = [[r] if isinstance(r, str) else r for r in references]
    width = max(len(g) for g in groups)
    streams = [[g[i] if i < len(g) else None for g in groups] for i in range(width)]
    expected = sacrebleu.corpus_bleu(PREDICTIONS, streams)
    assert got["score"] == expected.score
    assert got["counts"] == expected.counts and got["totals"] == expected.totals
    assert got["bp"] == expected.bp
    assert (got["sys_len"], got["ref_len"]) == (expected.sys_len, expected.ref_len)
    assert got["signature"].startswith("nrefs:" + ("1" if width == 1 else "var"))
    assert "tok:13a" in got["signature"] and "smooth:exp" in got["signature"]


def test_sacrebleu_options_and_sentence_scores(metric):
    got = metric("sacrebleu").compute(
        predictions=PREDICTIONS, references=REFERENCES, lowercase=True,
        smooth_method="floor", smooth_value=0.1, per_example=True,
    )
    expected = sacrebleu.corpus_bleu(PREDICTIONS, [REFERENCES], lowercase=True,
                                     smooth_method="floor", smooth_value=0.1)
    assert got["score"] == expected.score
    assert got["per_example"] == [
        sacrebleu.sentence_bleu(p, [r]).score for p, r in zip(PREDICTIONS, REFERENCES, strict=True)
    ]


@pytest.mark.parametrize("references", [REFERENCES, MULTI_REFERENCES], ids=["one", "several"])
def test_chrf_equals_corpus_chrf_exactly(metric, references):
    got = metric("chrf").compute(predictions=PREDICTIONS, references=references,
                                 per_example=True)
    groups = [[r] if isinstance(r, str) else r for r in references]
    width = max(len(g) for g in groups)
    streams = [[g[i] if i < len(g) else None for g in groups] for i in range(width)]
    assert got["score"] == sacrebleu.corpus_chrf(PREDICTIONS, streams).score
    assert got["per_example"] == [
        sacrebleu.sentence_chrf(p, g).score for p, g in zip(PREDICTIONS, groups, strict=True)
    ]


@pytest.mark.parametrize("references", [REFERENCES, MULTI_REFERENCES], ids=["one", "several"])
def test_rouge_equals_rouge_score_with_bootstrap_aggregator(metric, references):
    got = metric("rouge").compute(predictions=PREDICTIONS, references=references,
                                  per_example=True)
    expected, per_row = _rouge_reference(PREDICTIONS, references, seed=0)
    for key, value in expected.items():
        assert got[key] == value
        assert got["per_example"][key] == [s[key].fmeasure for s in per_row]


def test_rouge_stemmer_seed_and_unaggregated_output(metric):
    stemmed = metric("rouge").compute(predictions=PREDICTIONS, references=REFERENCES,
                                      use_stemmer=True, seed=7)
    assert stemmed["rouge1"] == _rouge_reference(PREDICTIONS, REFERENCES, seed=7,
                                                 use_stemmer=True)[0]["rouge1"]
    rows = metric("rouge").compute(predictions=PREDICTIONS, references=REFERENCES,
                                   use_aggregator=False)
    assert rows["rougeL"][3] == 1.0 and len(rows["rougeL"]) == len(PREDICTIONS)


def test_rouge_leaves_numpy_random_state_as_it_was(metric):
    np.random.seed(123)
    expected_next = np.random.random()
    np.random.seed(123)
    metric("rouge").compute(predictions=PREDICTIONS, references=REFERENCES)
    assert np.random.random() == expected_next


# --- loading ------------------------------------------------------------------------------------


def test_modules_load_from_pond_files_and_never_from_the_hub(hf_home, monkeypatch):
    import evaluate.loading

    def refuse(*args, **kwargs):
        raise AssertionError(f"evaluate tried the hub: {args}")

    monkeypatch.setattr(evaluate.loading, "HubEvaluationModuleFactory", refuse)
    monkeypatch.setattr(evaluate.loading, "CachedEvaluationModuleFactory", refuse)
    for name in ("bleu", "rouge", "sacrebleu", "chrf"):
        module = text_metrics.load(name, hf_home)
        assert module.name == name
    assert {spec.module for spec in TEXT_METRICS.values()} == {"bleu", "rouge", "sacrebleu",
                                                             "chrf"}
    with pytest.raises(InvalidInput, match="unknown text metric module 'meteor'"):
        text_metrics.load("meteor", hf_home)


def test_importing_pond_does_not_import_evaluate():
    code = (
        "import sys; import core.evaluation, core.text_metrics, core.explain, "
        "core.evaluation_charts, core.cli; core.cli.build_parser(); "
        "assert 'evaluate' not in sys.modules and 'datasets' not in sys.modules, 'imported'"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


def test_every_text_metric_says_which_variant_it_is():
    for spec in TEXT_METRICS.values():
        assert spec.variant and spec.reference and spec.scale in ("0–1", "0–100")
        assert text_metrics.module_path(spec.module).is_file()
    assert "13a" in TEXT_METRICS["bleu"].variant and "no smoothing" in TEXT_METRICS["bleu"].variant
    assert "use_stemmer=False" in TEXT_METRICS["rougeL"].variant
    assert "mid" in TEXT_METRICS["rouge1"].variant


# --- scoring pairs and bad input ------------------------------------------------------------------


def test_score_texts_matches_the_references_and_orders_rows_worst_first(hf_home):
    pairs = text_metrics.check_pairs(PREDICTIONS, MULTI_REFERENCES)
    scores = text_metrics.score_texts(pairs, hf_home=hf_home)
    groups = MULTI_REFERENCES
    assert scores.metrics["bleu"] == _hf_bleu(PREDICTIONS, groups)[0]
    streams = [[g[i] if i < len(g) else None for g in groups] for i in range(3)]
    assert scores.metrics["sacrebleu"] == sacrebleu.corpus_bleu(PREDICTIONS, streams).score
    assert scores.metrics["chrf"] == sacrebleu.corpus_chrf(PREDICTIONS, streams).score
    assert scores.metrics["rougeLsum"] == _rouge_reference(PREDICTIONS, groups)[0]["rougeLsum"]
    chrf = [e["chrf"] for e in scores.per_example]
    assert chrf == sorted(chrf)
    assert scores.per_example[0]["row"] == 5  # the unrelated sentence
    assert scores.per_example[-1]["chrf"] == 100.0
    assert set(scores.implementation["modules"]) == {"bleu", "rouge", "sacrebleu", "chrf"}
    assert scores.implementation["libraries"]["sacrebleu"] == sacrebleu.__version__


@pytest.mark.parametrize(
    ("predictions", "references", "message"),
    [
        (["a", "b"], ["a"], "predictions has 2 rows but references has 1"),
        ([], [], "there is nothing to score"),
        (["a", None, "c"], ["a", "b", "c"], r"no value \(None/null\) at row 1"),
        (["a", float("nan")], ["a", "b"], r"no value \(None/null\) at row 1"),
        (["a", 42], ["a", "b"], r"holds a int \(42\) at row 1, not text"),
        (["a", "b"], ["a", ""], "references is empty .* at row 1"),
        (["a", "b"], ["a", None], "references is empty .* at row 1"),
        (["a", "b"], ["a", ["", "  "]], "references is empty .* at row 1"),
        (["a", "b"], ["a", []], "references is empty .* at row 1"),
        (["a", "b"], ["a", ["x", 3]], r"holds a int \(3\) at row 1, not text"),
        (["a", "b"], [1.5, "b"], r"holds a float \(1.5\) at row 0, not text"),
    ],
    ids=["lengths", "nothing", "none", "nan", "number", "empty-ref", "none-ref",
         "blank-refs", "no-refs", "number-in-list", "number-ref"],
)
def test_bad_text_input_is_refused_with_a_clear_message(predictions, references, message):
    with pytest.raises(InvalidInput, match=message):
        text_metrics.check_pairs(predictions, references)


def test_empty_predictions_are_scored_and_reported():
    pairs = text_metrics.check_pairs(["", "the cat"], ["a dog", ["the cat", "a cat"]],
                                     rows=[10, 11])
    assert pairs.warnings == ("1 of 2 predictions are empty (row 10); they score 0",)
    assert pairs.multi_reference and pairs.references == [["a dog"], ["the cat", "a cat"]]
    named = pytest.raises(InvalidInput, match="column 'pred' of dataset d:1 has 1 rows")
    with named:
        text_metrics.check_pairs(["a"], ["a", "b"], prediction_name="column 'pred' of dataset d:1")


def test_references_written_as_json_text_are_flagged():
    pairs = text_metrics.check_pairs(["a b"], ['["a b", "a c"]'])
    assert pairs.references == [['["a b", "a c"]']]
    assert "looks like a JSON list at row 0" in pairs.warnings[0]
    assert "list column" in pairs.warnings[0]
