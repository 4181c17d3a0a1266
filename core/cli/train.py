"""`pond train`: AutoML on a dataset version (Optuna-tuned LightGBM).

Several machines can work on one study: run the same command with the same
`--study NAME --storage postgresql://...` on each. Every worker runs trials
until its own budget or the study's trial cap ends, then refits the study's
best trial; only the worker given `--register` registers it, so start that
one last (or give it the longest budget).
"""

from __future__ import annotations

import argparse
import math
import signal
import sys
import threading
from pathlib import Path
from typing import Any, TextIO

from core import automl, metrics
from core.cli import _common
from core.cli._common import actor, add_command, emit, workspace
from core.errors import PondError


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub,
        "train",
        _train,
        help="AutoML: tune LightGBM with Optuna on a dataset and score it on a holdout",
        description=__doc__,
    )
    p.add_argument("--dataset", required=True,
                   help="NAME or NAME:VERSION (default: latest), or a feature view fv:NAME[:VERSION]")
    p.add_argument("--target", required=True, help="the column to predict")
    p.add_argument("--task", default="auto", choices=automl.TASK_CHOICES,
                   help="the kind of problem (default: auto-detected from the target)")
    p.add_argument("--metric", choices=sorted(metrics.METRICS),
                   help="the metric to optimise (default: roc_auc for binary, log_loss for "
                   "multiclass, rmse for regression)")
    p.add_argument("--exclude", action="extend", nargs="+", default=[], metavar="COL",
                   help="columns not to use as features (repeatable)")
    p.add_argument("--time-budget", type=_common.seconds_or_none, default=60.0, metavar="S",
                   help="seconds for the whole run, refit included (default 60; 'none' for no "
                   "limit, then --trials is needed)")
    p.add_argument("--trials", type=int, metavar="N",
                   help="stop once the study has N finished trials (across workers)")
    p.add_argument("--seed", type=int, default=0, help="seed for splits, sampler and LightGBM")
    p.add_argument("--folds", type=int,
                   help="cross-validation folds per trial (default: by data size)")
    p.add_argument("--threads", type=int, help="LightGBM threads (default: all cores)")
    p.add_argument("--single-model", action="store_true",
                   help="refit the best trial alone (default: blend the best trials where their "
                   "out-of-fold scores say it helps)")
    p.add_argument("--study", help="Optuna study name; workers naming one study share it")
    p.add_argument("--storage",
                   help="Optuna storage URL, e.g. postgresql://user:pw@host/db (default: a "
                   "journal file in the workspace's studies/ folder)")
    p.add_argument("--register", metavar="MODEL",
                   help="register the model as a new version of MODEL, pending review")
    p.add_argument("--comment", help="the review request's comment (with --register)")
    p.add_argument("--progress-file", type=Path, help="keep a JSON progress snapshot here")
    p.add_argument("--stop-file", type=Path,
                   help="stop searching once this file exists (the best so far is kept)")
    p.add_argument("--run-dir", type=Path,
                   help="save model.txt, contract.json and result.json in this folder")


class _ProgressBar:
    """A one-line progress bar on a terminal (stderr), redrawn in place."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def __call__(self, progress: automl.Progress) -> None:
        best = "-" if progress.best_value is None else f"{progress.best_value:.4f}"
        target = f"/{progress.trials_target}" if progress.trials_target else ""
        _common.draw_progress(
            self.stream, progress.fraction, progress.elapsed_s, progress.budget_s,
            f" {progress.phase:<6} trials {progress.trials_done}{target} "
            f"({progress.trials_pruned} pruned)  best {progress.metric} {best}",
            done=progress.phase == "done",
        )


def _stop_signal(path: Path | None) -> Any:
    """Stop when the stop file appears, or on the first Ctrl-C (a second one aborts)."""
    interrupted = threading.Event()

    def on_interrupt(signum: int, frame: Any) -> None:
        if interrupted.is_set():
            raise KeyboardInterrupt
        interrupted.set()
        print("\nstopping after this trial; Ctrl-C again to abort", file=sys.stderr)

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, on_interrupt)
    return lambda: interrupted.is_set() or (path is not None and path.exists())


def _summary(result: automl.TrainResult, registered: Any | None) -> list[str]:
    fmt = "{:.4f}".format
    lines = [
        f"task {result.task} ({result.task_reason}); metric {result.metric} "
        f"({'higher' if result.higher_is_better else 'lower'} is better)",
        f"holdout {result.metric}: {fmt(result.holdout_score)}   "
        f"baseline: {fmt(result.baseline_score)}   "
        f"CV ({result.splits.folds} folds): {fmt(result.cv_score)} ± {fmt(result.cv_std)}",
        f"trials: {result.trials_completed} completed, {result.trials_pruned} pruned, "
        f"{result.trials_failed} failed; stopped by {result.stop_reason}; "
        f"{result.elapsed_s:.1f}s (search {result.search_s:.1f}s, refit {result.refit_s:.1f}s)",
        f"rows: {result.splits.train_rows} train / {result.splits.valid_rows} valid per fold, "
        f"{result.splits.holdout_rows} holdout",
        f"best trial {result.best_trial}: "
        + ", ".join(f"{k}={_short(v)}" for k, v in result.best_params.items())
        + f"; {result.refit_rounds} rounds",
        _blend_line(result),
        "top features (gain): "
        + ", ".join(list(result.feature_importances)[:8]),
        f"study {result.study_name} in {result.storage}",
    ]
    lines += [f"warning: {w}" for w in result.warnings]
    if registered is not None:
        lines.append(
            f"registered {registered.model} version {registered.version} ({registered.status})"
        )
    return lines


def _blend_line(result: automl.TrainResult) -> str:
    if len(result.ensemble) <= 1:
        return "final model: the best trial alone" + (
            "" if result.oof_score is None else " (no blend scored better out of fold)")
    members = ", ".join(f"trial {m.trial} ×{m.weight:.2f}" for m in result.ensemble)
    return (f"final model: a blend of {members}; out-of-fold {result.metric} "
            f"{result.oof_score:.4f} against {result.oof_best_score:.4f} for the best trial alone")


def _short(value: Any) -> str:
    if isinstance(value, float) and math.isfinite(value):
        return f"{value:.4g}"
    return str(value)


def _train(args: argparse.Namespace) -> None:
    from core import training_jobs

    ws = workspace(args)
    user = actor(args, ws)
    progress_writer = (
        training_jobs.ProgressFileWriter(args.progress_file) if args.progress_file else None
    )
    try:
        if args.register:
            automl.check_can_register(user, args.register)
        bar = _ProgressBar(sys.stderr) if sys.stderr.isatty() and not args.json else None
        stop = _stop_signal(args.stop_file)
        result = automl.train_dataset(
            ws,
            args.dataset,
            args.target,
            actor=user,
            task=args.task,
            metric=args.metric,
            exclude=args.exclude,
            time_budget=args.time_budget,
            n_trials=args.trials,
            seed=args.seed,
            folds=args.folds,
            storage=args.storage,
            study_name=args.study,
            on_progress=_common.Fanout(bar, progress_writer),
            stop=stop,
            n_jobs=args.threads,
            ensemble=not args.single_model,
        )
        if args.run_dir:
            automl.save_run(result, args.run_dir)
        registered = None
        if args.register:
            registered = automl.register(
                ws, result, args.register, actor=user, comment=args.comment
            )
    except PondError as exc:
        if progress_writer is not None:
            progress_writer.write(training_jobs.FAILED, error=str(exc))
        raise
    except BaseException as exc:
        if progress_writer is not None:
            progress_writer.write(
                training_jobs.FAILED, error=f"{type(exc).__name__}: {exc}".strip()
            )
        raise
    out = result.to_dict()
    if registered is not None:
        out["registered"] = training_jobs.registered_summary(registered)
    if progress_writer is not None:
        progress_writer.write(
            training_jobs.DONE,
            progress={"phase": "done", **_final_progress(result)},
            registered=out.get("registered"),
        )
    emit(args, out, _summary(result, registered))


def _final_progress(result: automl.TrainResult) -> dict[str, Any]:
    return {
        "trials_done": result.trials_completed + result.trials_pruned + result.trials_failed,
        "trials_pruned": result.trials_pruned,
        "trials_target": result.training_config.get("n_trials"),
        "best_value": result.cv_score,
        "metric": result.metric,
        "higher_is_better": result.higher_is_better,
        "elapsed_s": round(result.elapsed_s, 3),
        "budget_s": result.budget_s,
        "fraction": 1.0,
        "history": [t.to_dict() for t in result.history],
        "message": f"holdout {result.metric} {result.holdout_score:.4g}",
    }
