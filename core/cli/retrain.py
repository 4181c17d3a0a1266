"""`pond retrain`, `pond promotion-policy`, `pond schedule`, `pond scheduler` and `pond runs`:
headless retraining, its schedules, the loop that runs them, and the record of every run."""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import UTC, datetime
from typing import Any

from core import retraining, schedules
from core.cli._common import actor, add_command, emit, table, to_jsonable, workspace
from core.errors import InvalidInput

_EXIT_TABLE = "exit codes:\n" + "\n".join(
    f"  {code:<3} {text}" for code, text in retraining.EXIT_CODES.items()
)


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub,
        "retrain",
        _retrain,
        help="retrain a model on its newest data, compare with the champion, register for review",
        description=(
            "Reruns the model's recorded training (same target, task, metric and search space, "
            "warm-started from the previous best parameters) on the newest version of its "
            "training dataset, scores the new model and the champion on the same new holdout, "
            "and registers the new version pending review with its parent in the lineage. "
            "With --only-if-drift it first checks the new data for drift against the data "
            "the model was trained on and does nothing (exit 0) when there is none. One run "
            "per model at a time; every run is recorded (`pond runs`); log lines go to "
            "stderr, and --json prints one summary object on stdout."
        ),
    )
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = _EXIT_TABLE
    p.add_argument("--model", required=True, help="the registered model's name")
    p.add_argument(
        "--dataset",
        help="train on this dataset, NAME or NAME:VERSION (default: the "
        "newest version of the dataset the model was trained on)",
    )
    p.add_argument(
        "--only-if-drift",
        action="store_true",
        help="first run the drift check; stop with exit 0 when there is no drift or no new data",
    )
    p.add_argument(
        "--budget",
        type=float,
        metavar="S",
        help="training seconds (default: the recorded budget, else 60)",
    )
    p.add_argument("--trials", type=int, metavar="N", help="trial cap (default: the recorded one)")
    p.add_argument(
        "--drift-share",
        type=float,
        help="dataset drift when at least this share of columns drifted (default 0.5)",
    )
    p.add_argument("--threads", type=int, help="LightGBM threads (default: all cores)")

    pol = sub.add_parser(
        "promotion-policy", help="a model's auto-promotion policy for retrained versions"
    )
    pol_sub = pol.add_subparsers(dest="policy_command", metavar="ACTION", required=True)
    a = add_command(
        pol_sub,
        "set",
        _policy_set,
        help="turn auto-promotion on or off for a model (admin)",
        description="With the policy on, a retrained version that beats the "
        "champion by at least --margin on the same holdout is approved by the "
        "'policy' actor and takes the champion alias; otherwise it waits for a "
        "reviewer. Off by default.",
    )
    a.add_argument("model", help="model name")
    onoff = a.add_mutually_exclusive_group(required=True)
    onoff.add_argument(
        "--on",
        dest="enabled",
        action="store_true",
        default=None,
        help="let the policy approve and promote",
    )
    onoff.add_argument(
        "--off",
        dest="enabled",
        action="store_false",
        help="every retrained version waits for a reviewer",
    )
    a.add_argument(
        "--margin",
        type=float,
        default=0.0,
        help="how much better than the champion, in the metric's units (default 0)",
    )
    a.add_argument("--metric", help="the metric compared (default: the model's training metric)")
    a = add_command(pol_sub, "show", _policy_show, help="one model's policy, or every policy")
    a.add_argument("model", nargs="?", help="model name (default: every policy)")

    sch = sub.add_parser("schedule", help="schedule pond commands on cron expressions (admin)")
    sch_sub = sch.add_subparsers(
        dest="schedule_command", metavar="ACTION", required=True, parser_class=_CommandAfterDashes
    )
    a = add_command(
        sch_sub,
        "add",
        _schedule_add,
        help="schedule a pond command: NAME --cron EXPR -- COMMAND",
        description="pond schedule add nightly-churn --cron '0 3 * * *' -- retrain --model "
        "churn --only-if-drift. Times are UTC. `pond scheduler` (or cron/systemd calling the "
        "command directly) runs it.",
    )
    a.add_argument("name", help="the schedule's name")
    a.add_argument(
        "--cron", required=True, help="five cron fields in UTC, e.g. '0 3 * * *' (03:00 daily)"
    )
    a.add_argument("--run-as", help="the account the job acts as (default: you)")
    a.add_argument(
        "job", nargs="*", help="after --, the pond command to run, e.g. retrain --model churn"
    )
    add_command(sch_sub, "list", _schedule_list, help="schedules, their next and last runs")
    a = add_command(sch_sub, "remove", _schedule_remove, help="delete a schedule (runs stay)")
    a.add_argument("name", help="the schedule's name")

    p = add_command(
        sub,
        "scheduler",
        _scheduler,
        help="long-running loop that runs due schedules (for machines without cron)",
        description="Every --tick seconds, starts each due schedule as a child process and "
        "records its run; stops on SIGTERM/Ctrl-C (waiting for running jobs), after "
        "--max-iterations ticks or at --until. One scheduler per workspace.",
    )
    p.add_argument(
        "--tick",
        type=float,
        default=schedules.DEFAULT_TICK_S,
        help="seconds between looks at the schedules (default 30)",
    )
    p.add_argument("--max-iterations", type=int, help="stop after this many ticks")
    p.add_argument("--until", help="stop at this UTC time (ISO 8601, e.g. 2026-01-31T04:00)")

    p = add_command(
        sub,
        "runs",
        _runs,
        help="job runs (retrains, scheduled commands), newest first, with outcome and exit code",
    )
    p.add_argument("--model", help="only this model's runs")
    p.add_argument("--schedule", help="only this schedule's runs")
    p.add_argument("--limit", type=int, default=20, help="runs to list (1-1000, default 20)")
    runs_sub = p.add_subparsers(dest="runs_command", metavar="ACTION", required=False)
    a = add_command(runs_sub, "show", _runs_show, help="one run with its details and log")
    a.add_argument("id", type=int, help="run id (see `pond runs`)")


class _CommandAfterDashes(argparse.ArgumentParser):
    """Takes every word after `--` as the scheduled command. A subcommand's positionals are
    matched before its options are read, so argparse alone refuses words after `--` that
    follow an option (`schedule add NAME --cron EXPR -- retrain ...`)."""

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        words = list(sys.argv[1:] if args is None else args)
        if "--" not in words:
            return super().parse_known_args(words, namespace)
        cut = words.index("--")
        parsed, extras = super().parse_known_args(words[:cut], namespace)
        parsed.job = words[cut + 1 :]
        return parsed, extras


# --- retrain ----------------------------------------------------------------------------------


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _run_id_from_env() -> int | None:
    raw = os.environ.get("POND_RUN_ID")
    if not raw:
        return None
    if not raw.isdigit():
        raise InvalidInput(f"POND_RUN_ID must be a run id (a number); got {raw!r}")
    return int(raw)


def _retrain(args: argparse.Namespace) -> int:
    ws = workspace(args)
    user = actor(args, ws)
    try:
        result = retraining.retrain(
            ws,
            args.model,
            actor=user,
            dataset=args.dataset,
            only_if_drift=args.only_if_drift,
            time_budget=args.budget,
            n_trials=args.trials,
            drift_share=args.drift_share,
            run_id=_run_id_from_env(),
            echo=_stderr,
            n_jobs=args.threads,
        )
    except (retraining.RetrainFailed, retraining.RetrainBusy) as exc:
        if args.json:
            summary = exc.result.to_dict() if exc.result else {}
            print(json.dumps(to_jsonable({**summary, "error": str(exc)}), default=str))
        _stderr(f"pond: error: {str(exc).splitlines()[0]}")
        return exc.exit_code
    emit(args, result.to_dict(), result.summary)
    return retraining.EXIT_OK


# --- promotion policy ---------------------------------------------------------------------------


def _policy_set(args: argparse.Namespace) -> Any:
    ws = workspace(args)
    policy = retraining.set_promotion_policy(
        ws,
        args.model,
        actor=actor(args, ws),
        enabled=args.enabled,
        min_improvement=args.margin,
        metric=args.metric,
    )
    emit(args, policy, f"{policy.model}: {policy.describe()}")


def _policy_show(args: argparse.Namespace) -> Any:
    ws = workspace(args)
    if args.model:
        found = retraining.get_promotion_policy(ws, args.model)
        emit(args, found, f"{args.model}: " + (found.describe() if found else "off (no policy)"))
        return
    policies = retraining.list_promotion_policies(ws)
    emit(
        args,
        policies,
        table(
            [
                [
                    p.model,
                    "on" if p.enabled else "off",
                    p.metric or "(training metric)",
                    f"{p.min_improvement:g}",
                    p.updated_by,
                ]
                for p in policies
            ],
            ["model", "auto-promotion", "metric", "margin", "set by"],
        )
        if policies
        else "no auto-promotion policies (retrained versions wait for a reviewer)",
    )


# --- schedules ----------------------------------------------------------------------------------


def _schedule_add(args: argparse.Namespace) -> Any:
    ws = workspace(args)
    schedule = schedules.add_schedule(
        ws, args.name, args.cron, args.job, actor=actor(args, ws), run_as=args.run_as
    )
    emit(
        args,
        schedule,
        f"schedule {schedule.name}: {schedule.command_line} at "
        f"'{schedule.cron}' (UTC) as {schedule.run_as}; next run "
        f"{schedule.next_run_at:%Y-%m-%d %H:%M}Z",
    )


def _when(value: datetime | None) -> str:
    return f"{value:%Y-%m-%d %H:%M}Z" if value else ""


def _schedule_list(args: argparse.Namespace) -> Any:
    found = schedules.list_schedules(workspace(args))
    emit(
        args,
        found,
        table(
            [
                [
                    s.name,
                    s.cron,
                    s.command_line,
                    s.run_as,
                    _when(s.next_run_at),
                    _when(s.last_run_at),
                    (f"#{s.last_run.id} {s.last_run.outcome or 'running'}" if s.last_run else ""),
                ]
                for s in found
            ],
            ["name", "cron", "command", "run as", "next run", "last run", "last outcome"],
        )
        if found
        else "no schedules; add one with `pond schedule add NAME --cron EXPR -- COMMAND`",
    )


def _schedule_remove(args: argparse.Namespace) -> Any:
    ws = workspace(args)
    removed = schedules.remove_schedule(ws, args.name, actor=actor(args, ws))
    emit(args, removed, f"removed schedule {removed.name} ({removed.command_line})")


def _scheduler(args: argparse.Namespace) -> Any:
    ws = workspace(args)
    until = None
    if args.until:
        try:
            until = datetime.fromisoformat(args.until)
        except ValueError:
            raise InvalidInput(
                f"--until {args.until!r} is not an ISO 8601 time; write e.g. 2026-01-31T04:00"
            ) from None
        until = until.replace(tzinfo=UTC) if until.tzinfo is None else until
    report = schedules.run_scheduler(
        ws,
        tick_s=args.tick,
        max_iterations=args.max_iterations,
        until=until,
        echo=_stderr,
        stop=schedules.stop_on_signals(),
    )
    emit(
        args,
        report,
        f"{report.iterations} tick(s), {len(report.started)} run(s) started, "
        f"{len(report.finished)} finished",
    )


# --- runs ---------------------------------------------------------------------------------------


def _runs(args: argparse.Namespace) -> Any:
    found = schedules.list_runs(
        workspace(args), model=args.model, schedule=args.schedule, limit=args.limit
    )
    emit(
        args,
        [r.to_dict() for r in found],
        table(
            [
                [
                    r.id,
                    _when(r.started_at),
                    r.schedule or "",
                    r.model or "",
                    r.outcome or r.status,
                    "" if r.exit_code is None else r.exit_code,
                    "" if r.seconds is None else f"{r.seconds:.1f}s",
                    (r.summary or "")[:100],
                ]
                for r in found
            ],
            ["id", "started", "schedule", "model", "outcome", "exit", "took", "summary"],
        )
        if found
        else "no runs yet",
    )


def _runs_show(args: argparse.Namespace) -> Any:
    run = schedules.get_run(workspace(args), args.id)
    lines = [
        f"run #{run.id} ({run.kind}) {run.command_line}",
        f"  started {run.started_at:%Y-%m-%d %H:%M:%S}Z by {run.started_by} on {run.host} "
        f"(pid {run.pid})",
        f"  {run.status}: {run.outcome or '-'} exit {run.exit_code}; {run.summary or ''}",
        "",
        run.log or "(no log)",
    ]
    emit(args, run.to_dict(log=True), lines)
