"""`pond feedback ...`: human-feedback labeling projects from the shell — create a
project, import or generate its items, assign labelers, follow its progress and
agreement, compare model versions by win rate, and export the labels as DPO
pairs, SFT rows or raw answers."""

from __future__ import annotations

import argparse
from pathlib import Path

from core import feedback
from core.cli._common import actor, add_command, emit, table, workspace
from core.errors import InvalidInput

_PROJECT_HELP = "the labeling project's name"


def register(sub: argparse._SubParsersAction) -> None:
    top = sub.add_parser(
        "feedback",
        help="human-feedback labeling: projects, items, labelers, exports",
        description="Ratings and preference pairs labeled on the Label page, turned into "
        "training data. Labels are rows in the workspace; each export records which model "
        "versions produced the candidates.",
    )
    fsub = top.add_subparsers(dest="feedback_command", metavar="ACTION", required=True)

    p = add_command(fsub, "create", _create, help="create a labeling project")
    p.add_argument("project", help="project name (letters, digits, '.', '_', '-')")
    p.add_argument(
        "--pairwise",
        action="store_true",
        help="ask which of two responses is better (A, B, tie, both bad)",
    )
    p.add_argument("--rating", action="store_true", help="ask for a 1-5 rating of each response")
    p.add_argument(
        "--rubric",
        metavar="FILE",
        help="the rating rubric: a text file with five lines, for scores 1 to 5",
    )
    p.add_argument(
        "--correction",
        action="store_true",
        help="let labelers rewrite a response (optional for them)",
    )
    p.add_argument(
        "--tags",
        metavar="TAG,TAG",
        help="comma-separated tags labelers may apply (optional for them)",
    )
    p.add_argument(
        "--labels-per-item",
        type=int,
        default=1,
        help="how many different labelers answer each item (default 1)",
    )
    p.add_argument(
        "--labeler",
        action="append",
        default=[],
        metavar="USER",
        help="a user assigned to label (repeatable)",
    )
    p.add_argument("--guidelines", help="labeling guidelines shown beside every item")
    p.add_argument(
        "--guidelines-file", metavar="FILE", help="read the guidelines (Markdown) from this file"
    )
    p.add_argument("--description", help="one line about the project")
    p.add_argument(
        "--claim-minutes",
        type=float,
        default=feedback.DEFAULT_CLAIM_MINUTES,
        help="how long an item shown to a labeler stays reserved for them "
        f"(default {feedback.DEFAULT_CLAIM_MINUTES})",
    )

    p = add_command(fsub, "list", _list, help="the labeling projects you may see")

    p = add_command(
        fsub,
        "import",
        _import,
        help="add items (a prompt and candidate responses) from a file or a dataset version",
        description="Rows need a prompt and candidates: a 'candidates' list (texts, or "
        "{text, model} objects) or a 'response' column, or the columns named with "
        "--candidate-col. Rows already in the project are skipped and counted.",
    )
    p.add_argument("project", help=_PROJECT_HELP)
    p.add_argument("source", nargs="?", help="a JSONL, JSON or CSV file")
    p.add_argument("--dataset", help="import from this dataset version (NAME or NAME:VERSION)")
    p.add_argument("--prompt-col", default="prompt", help="the prompt column (default prompt)")
    p.add_argument(
        "--candidate-col",
        action="append",
        metavar="COL",
        help="a column holding one candidate response (repeat for each)",
    )
    p.add_argument(
        "--model-col",
        action="append",
        metavar="COL",
        help="the column naming the model version of each --candidate-col, in order",
    )
    p.add_argument(
        "--model",
        action="append",
        metavar="REF",
        help="the model version that wrote each candidate position, in order",
    )

    p = add_command(
        fsub,
        "generate",
        _generate,
        help="make items by letting one or two registered text models answer prompts",
    )
    p.add_argument("project", help=_PROJECT_HELP)
    p.add_argument("--dataset", required=True, help="dataset version with the prompts")
    p.add_argument("--prompt-col", required=True, help="the prompt column")
    p.add_argument(
        "--model",
        action="append",
        required=True,
        metavar="REF",
        help="a text model version (NAME:VERSION or NAME@ALIAS); give it twice "
        "for pairwise projects",
    )
    p.add_argument("--limit", type=int, help="use at most this many prompts")
    p.add_argument("--max-new-tokens", type=int, help="longest response to generate")

    for name, handler, text in (
        ("add-labeler", _add_labeler, "assign a user to label the project"),
        (
            "remove-labeler",
            _remove_labeler,
            "unassign a labeler; their labels stay, their open item goes to someone else",
        ),
    ):
        p = add_command(fsub, name, handler, help=text)
        p.add_argument("project", help=_PROJECT_HELP)
        p.add_argument("labeler", help="the user's name")

    p = add_command(
        fsub, "status", _status, help="progress, agreement between labelers and their throughput"
    )
    p.add_argument("project", help=_PROJECT_HELP)

    p = add_command(
        fsub,
        "export",
        _export,
        help="write the labels as DPO pairs, SFT rows or raw answers",
        description="dpo: {prompt, chosen, rejected, chosen_model, rejected_model} per item "
        "whose pairwise decision picks a response; ties, 'both bad' and items without a "
        "majority are left out. sft: {prompt, response, model, source} from corrected or "
        "top-rated responses. raw: every answer.",
    )
    p.add_argument("--project", required=True, help=_PROJECT_HELP)
    p.add_argument("--format", required=True, choices=feedback.FORMATS, help="dpo, sft or raw")
    p.add_argument("--out", help="the JSONL file to write")
    p.add_argument(
        "--dataset",
        help="with --format sft: ingest the rows as this dataset "
        "instead of (or as well as) writing --out, ready for `pond finetune`",
    )
    p.add_argument(
        "--min-rating",
        type=float,
        default=feedback.DEFAULT_MIN_RATING,
        help="sft: the lowest mean rating a top-rated response needs (default 4)",
    )

    p = add_command(
        fsub,
        "win-rate",
        _win_rate,
        help="how often labelers preferred model version A's response over B's",
    )
    p.add_argument("model_a", help="version A (NAME:VERSION, NAME@ALIAS or an outside name)")
    p.add_argument("model_b", help="version B")
    p.add_argument(
        "--confidence",
        type=float,
        default=feedback.DEFAULT_CONFIDENCE,
        help="confidence of the interval (default 0.95)",
    )


def _create(args: argparse.Namespace) -> None:
    questions: list[feedback.Question] = []
    if args.pairwise:
        questions.append(feedback.default_question(feedback.PAIRWISE))
    if args.rating:
        rubric = ()
        if args.rubric:
            rubric = tuple(
                line.strip() for line in Path(args.rubric).read_text().splitlines() if line.strip()
            )
        questions.append(feedback.default_question(feedback.RATING, rubric=rubric))
    if args.correction:
        questions.append(feedback.default_question(feedback.CORRECTION))
    if args.tags:
        questions.append(
            feedback.default_question(
                feedback.TAGS, options=[t.strip() for t in args.tags.split(",")]
            )
        )
    if not questions:
        raise InvalidInput(
            "say what labelers answer: --pairwise, --rating, --correction and/or --tags TAG,TAG"
        )
    guidelines = args.guidelines or ""
    if args.guidelines_file:
        guidelines = Path(args.guidelines_file).read_text()
    ws = workspace(args)
    made = feedback.create_project(
        ws,
        args.project,
        questions,
        actor=actor(args, ws),
        guidelines=guidelines,
        description=args.description or "",
        labels_per_item=args.labels_per_item,
        labelers=args.labeler,
        claim_minutes=args.claim_minutes,
    )
    emit(
        args,
        made,
        f"created labeling project {made.name} "
        f"({', '.join(q.name for q in made.questions)}; {made.labels_per_item} label(s) per "
        f"item; labelers: {', '.join(made.labelers) or 'none yet'})",
    )


def _list(args: argparse.Namespace) -> None:
    ws = workspace(args)
    found = feedback.list_projects(ws, actor=actor(args, ws))
    emit(
        args,
        found,
        table(
            [
                [
                    p.name,
                    p.items,
                    p.labels_per_item,
                    ", ".join(q.name for q in p.questions),
                    ", ".join(p.labelers),
                    p.created_by,
                ]
                for p in found
            ],
            ["project", "items", "labels/item", "questions", "labelers", "owner"],
        ),
    )


def _import(args: argparse.Namespace) -> None:
    if (args.source is None) == (args.dataset is None):
        raise InvalidInput(
            "import from a file (SOURCE) or a dataset version (--dataset), not both or neither"
        )
    ws = workspace(args)
    result = feedback.import_items(
        ws,
        args.project,
        actor=actor(args, ws),
        path=args.source,
        dataset=args.dataset,
        prompt_col=args.prompt_col,
        candidate_cols=args.candidate_col,
        model_cols=args.model_col,
        models=args.model,
    )
    emit(
        args,
        result,
        f"imported {result.imported} item(s) into {result.project} from "
        f"{result.source}; {result.duplicates_skipped} duplicate(s) skipped"
        + (f"; models: {', '.join(result.model_versions)}" if result.model_versions else ""),
    )


def _generate(args: argparse.Namespace) -> None:
    ws = workspace(args)
    result = feedback.generate_items(
        ws,
        args.project,
        dataset=args.dataset,
        prompt_col=args.prompt_col,
        models=args.model,
        actor=actor(args, ws),
        limit=args.limit,
        max_new_tokens=args.max_new_tokens,
    )
    emit(
        args,
        result,
        f"generated {result.imported} item(s) into {result.project} "
        f"({result.source}); {result.duplicates_skipped} duplicate(s) skipped",
    )


def _add_labeler(args: argparse.Namespace) -> None:
    ws = workspace(args)
    made = feedback.add_labeler(ws, args.project, args.labeler, actor=actor(args, ws))
    emit(args, made, f"{args.labeler} labels {made.name}; labelers: {', '.join(made.labelers)}")


def _remove_labeler(args: argparse.Namespace) -> None:
    ws = workspace(args)
    made = feedback.remove_labeler(ws, args.project, args.labeler, actor=actor(args, ws))
    emit(args, made, f"{args.labeler} no longer labels {made.name}; their labels stay")


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _status(args: argparse.Namespace) -> None:
    ws = workspace(args)
    user = actor(args, ws)
    done = feedback.progress(ws, args.project, actor=user)
    result: dict = {"progress": done}
    lines = [
        f"{args.project}: {done.items_complete}/{done.items} items complete, "
        f"{done.labels_given}/{done.labels_needed} labels; yours: {done.mine_answered} "
        f"answered, {done.mine_skipped} skipped, {done.mine_left} left"
    ]
    if (
        user.can("review")
        or feedback.get_project(ws, args.project, actor=user).created_by == user.name
    ):
        stats = feedback.agreement(ws, args.project, actor=user)
        speed = feedback.throughput(ws, args.project, actor=user)
        result.update(agreement=stats, throughput=speed)
        lines += [
            "",
            *table(
                [[a.question, a.level, _fmt(a.alpha), _fmt(a.kappa), a.units] for a in stats],
                ["question", "level", "krippendorff alpha", "cohen kappa", "units"],
            ),
        ]
        lines += [
            "",
            *table(
                [
                    [
                        s.labeler,
                        s.answered,
                        s.skipped,
                        _fmt(s.median_seconds),
                        _fmt(s.items_per_hour),
                        "yes" if s.active else "removed",
                    ]
                    for s in speed
                ],
                ["labeler", "answered", "skipped", "median s", "per hour", "active"],
            ),
        ]
    emit(args, result, lines)


def _export(args: argparse.Namespace) -> None:
    if not args.out and not args.dataset:
        raise InvalidInput(
            "say where the export goes: --out FILE (or --dataset NAME with --format sft)"
        )
    if args.dataset and args.format != "sft":
        raise InvalidInput("--dataset takes SFT rows only; use --format sft")
    ws = workspace(args)
    user = actor(args, ws)
    result: dict = {}
    lines = []
    if args.out:
        done = feedback.export(
            ws, args.project, args.format, args.out, actor=user, min_rating=args.min_rating
        )
        result["export"] = done
        left_out = ", ".join(f"{n} {why}" for why, n in sorted(done.excluded.items()))
        lines.append(
            f"wrote {done.records} {done.format} record(s) to {done.path}"
            + (f"; left out: {left_out}" if left_out else "")
            + (f"; models: {', '.join(done.model_versions)}" if done.model_versions else "")
        )
    if args.dataset:
        dv = feedback.export_dataset(
            ws, args.project, args.dataset, actor=user, min_rating=args.min_rating
        )
        result["dataset"] = dv
        lines.append(f"ingested {dv.row_count} SFT row(s) as dataset {dv.ref}")
    emit(args, result, lines)


def _win_rate(args: argparse.Namespace) -> None:
    ws = workspace(args)
    actor(args, ws)
    found = feedback.win_rate(ws, args.model_a, args.model_b, confidence=args.confidence)
    emit(args, found, found.describe())
