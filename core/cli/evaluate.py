"""`pond evaluate`: score a model version on a dataset, score text columns with
BLEU/ROUGE/sacreBLEU/chrF, or compare two versions with a bootstrap interval."""

from __future__ import annotations

import argparse
from typing import Any

from core import evaluation
from core.cli._common import actor, add_command, emit, table, workspace
from core.errors import InvalidInput
from core.metrics import TEXT_METRICS

_MODEL_HELP = "NAME, NAME:VERSION or NAME@ALIAS (a bare NAME means its champion, else latest)"
_DATASET_HELP = "NAME or NAME:VERSION (default: the latest version)"


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub, "evaluate", _evaluate,
        help="evaluate a model version on a dataset, or text predictions against references",
        description=(
            "Tabular: pond evaluate --model NAME[@ALIAS|:VERSION] --dataset NAME[:VERSION] "
            "[--segment COL]. Text: pond evaluate --dataset NAME --predictions COL "
            "--references COL [--model REF]. Two versions: pond evaluate compare --model A "
            "--model B --dataset NAME. Results are stored on the version and audited."
        ),
    )
    p.add_argument("--model", help="the model version to evaluate: " + _MODEL_HELP
                   + "; with --predictions, the version the texts came from")
    p.add_argument("--dataset", help="the dataset version to score on: " + _DATASET_HELP)
    p.add_argument("--segment", metavar="COL",
                   help="also compute the metrics per value of this categorical column")
    p.add_argument("--predictions", metavar="COL",
                   help="column of generated texts: score them with BLEU, ROUGE, sacreBLEU, chrF")
    p.add_argument("--prompt-col", dest="prompts", metavar="COL",
                   help="with --model (a fine-tuned text model) and --references: generate "
                   "from this column of prompts and score the generations")
    p.add_argument("--references", metavar="COL",
                   help="column of reference texts (a text, or a list of texts per row)")
    p.add_argument("--smooth-bleu", action="store_true",
                   help="apply Lin & Och (2004) smoothing to BLEU (off by default, as in evaluate)")
    p.add_argument("--top", type=int, default=5,
                   help="how many segments or worst rows to print (default 5)")
    p.add_argument("--details", action="store_true",
                   help="with --json, include curves, segments and every per-row score")
    sub_eval = p.add_subparsers(dest="evaluate_command", metavar="ACTION", required=False)

    c = add_command(
        sub_eval, "compare", _compare,
        help="compare two versions (e.g. champion vs challenger) on the same dataset version",
        description=(
            "Scores both versions on the same rows and gives the difference B − A of the "
            "main metric with a paired-bootstrap confidence interval."
        ),
    )
    c.add_argument("--model", dest="models", action="append", required=True, metavar="REF",
                   help="a version to compare, given twice: first A (e.g. churn@champion), "
                   "then B (e.g. churn@challenger)")
    c.add_argument("--dataset", required=True, help="the dataset version: " + _DATASET_HELP)
    c.add_argument("--metric", help="the metric to compare (default: the task's main metric)")
    c.add_argument("--n-boot", type=int, default=evaluation.DEFAULT_N_BOOT,
                   help="bootstrap resamples (default 1000)")
    c.add_argument("--seed", type=int, default=0, help="seed of the resampling (default 0)")


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _evaluate(args: argparse.Namespace) -> None:
    if not args.dataset:
        raise InvalidInput("name a dataset: --dataset NAME[:VERSION]")
    if args.prompts is not None:
        if not args.model or args.references is None or args.predictions is not None:
            raise InvalidInput(
                "a text model's own generations need --model NAME[@ALIAS|:VERSION], "
                "--prompt-col COL and --references COL (and no --predictions)"
            )
    elif (args.predictions is None) != (args.references is None):
        raise InvalidInput("text evaluation needs both --predictions COL and --references COL")
    if args.top < 0:
        raise InvalidInput(f"The '--top' option must be an int >= 0. Got {args.top} instead.")
    ws = workspace(args)
    user = actor(args, ws)
    if args.prompts is not None:
        found = evaluation.evaluate_text_model(
            ws, args.model, args.dataset, args.prompts, args.references, user,
            smooth_bleu=args.smooth_bleu,
        )
        _print_text(args, found)
        return
    if args.predictions is not None:
        if args.segment:
            raise InvalidInput("--segment applies to tabular evaluation, not to text metrics")
        found = evaluation.evaluate_text(
            ws, args.dataset, args.predictions, args.references, user, model_ref=args.model,
            smooth_bleu=args.smooth_bleu,
        )
        _print_text(args, found)
        return
    if not args.model:
        raise InvalidInput(
            "name a model (--model NAME[@ALIAS|:VERSION]) to evaluate, or text columns "
            "(--predictions COL --references COL)"
        )
    found = evaluation.evaluate_model(ws, args.model, args.dataset, user,
                                      segment_column=args.segment)
    _print_tabular(args, found)


def _print_tabular(args: argparse.Namespace, found: evaluation.Evaluation) -> None:
    details = found.details or {}
    segments = (details.get("segments") or {}).get("rows", [])
    result = found.to_dict(details=args.details)
    if not args.details:
        result["segments"] = segments
    lines = [
        f"evaluation #{found.id}: {found.model_ref} on {found.dataset_ref} "
        f"({found.rows} rows, {found.task}, target {found.columns.get('target')!r})",
        *table([[k, _fmt(v), "main" if k == found.main_metric else ""]
                for k, v in found.metrics.items()], ["metric", "value", ""]),
    ]
    if segments:
        main = found.main_metric
        lines.append(f"weakest segments of {found.columns.get('segment')!r} by {main}:")
        lines.extend(table([[s["segment"], s["rows"], _fmt(s.get(main))]
                            for s in segments[: args.top]], ["segment", "rows", main or ""]))
    lines.extend(f"note: {w}" for w in found.warnings)
    emit(args, result, lines)


def _print_text(args: argparse.Namespace, found: evaluation.Evaluation) -> None:
    details = found.details or {}
    examples = details.get("per_example", [])
    result = found.to_dict(details=args.details)
    if not args.details:
        result["worst_examples"] = examples[: args.top]
    lines = [
        f"evaluation #{found.id}: text on {found.dataset_ref} ({found.rows} rows)"
        + (f", stored on {found.model_ref}" if found.model_ref else ""),
        *table([[spec.label, _fmt(found.metrics.get(name)), spec.scale, spec.reference]
                for name, spec in TEXT_METRICS.items()],
               ["metric", "value", "scale", "equals"]),
    ]
    signature = (details.get("outputs") or {}).get("sacrebleu", {}).get("signature")
    if signature:
        lines.append(f"sacreBLEU signature: {signature}")
    if examples and args.top:
        sort_by = details.get("sort_by", "chrf")
        lines.append(f"worst rows by {sort_by}:")
        lines.extend(table(
            [[e["row"], _fmt(e.get(sort_by)), _short(e["prediction"]), _short(e["references"])]
             for e in examples[: args.top]],
            ["row", sort_by, "prediction", "reference"],
        ))
    lines.extend(f"note: {w}" for w in found.warnings)
    emit(args, result, lines)


def _short(value: Any, width: int = 50) -> str:
    text = " | ".join(value) if isinstance(value, list) else str(value)
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _compare(args: argparse.Namespace) -> None:
    if len(args.models) != 2:
        raise InvalidInput(
            f"compare needs exactly two versions: --model A --model B; got {len(args.models)}"
        )
    ws = workspace(args)
    user = actor(args, ws)
    found = evaluation.compare(
        ws, args.models[0], args.models[1], args.dataset, metric=args.metric,
        n_boot=args.n_boot, seed=args.seed, actor=user,
    )
    names = list(found.metrics_a)
    lines = [
        f"{found.model_a} (A) vs {found.model_b} (B) on {found.dataset} ({found.rows} rows)",
        *table([[n, _fmt(found.metrics_a.get(n)), _fmt(found.metrics_b.get(n)),
                 "main" if n == found.metric else ""] for n in names],
               ["metric", "A", "B", ""]),
        found.verdict,
    ]
    lines.extend(f"note: {w}" for w in found.warnings)
    emit(args, found.to_dict(), lines)
