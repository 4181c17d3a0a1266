"""`pond drift ...` and `pond alerts ...`: drift reports (a model's training data
against its logged inferences, or two dataset versions), drift and performance
over time, alert policies and the alerts they fired."""

from __future__ import annotations

import argparse
from typing import Any

from core import drift
from core import drift_stats as ds
from core.cli._common import actor, add_command, emit, table, workspace
from core.errors import InvalidInput

_MODEL_HELP = "NAME, NAME:VERSION or NAME@ALIAS (a bare NAME means its champion, else latest)"
_DATASET_HELP = "NAME or NAME:VERSION (default: the latest version)"
_WINDOW_HELP = "only the last 30m, 12h, 1d, 7d, 2w… of the inference log (default: all of it)"


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub, "drift", _drift,
        help="drift report: a model's training data vs its logged inferences, or two datasets",
        description=(
            "pond drift --model NAME [--window 7d] compares the model's training dataset "
            "version with its logged inferences; pond drift --reference DS[:V] --current DS[:V] "
            "compares two dataset versions. Tests and thresholds are Evidently 0.7's defaults "
            "(K-S / chi-square / Z up to 1000 reference rows, normed Wasserstein / "
            "Jensen-Shannon above), with PSI beside. Every report is stored; a model's alert "
            "policy is checked."
        ),
    )
    p.add_argument("--model", help="the model: " + _MODEL_HELP)
    p.add_argument("--reference", help="reference dataset: " + _DATASET_HELP
                   + "; default: the model's training dataset version")
    p.add_argument("--current", help="current dataset: " + _DATASET_HELP
                   + "; default: the model's logged inferences")
    p.add_argument("--window", help=_WINDOW_HELP)
    p.add_argument("--test", action="append", default=[], metavar="COL=TEST[:THRESHOLD]",
                   help="another test or threshold for a column, e.g. age=psi:0.2 or "
                   f"city=chisquare (tests: {', '.join(ds.STAT_TESTS)}; repeatable)")
    p.add_argument("--column", action="append", default=None, metavar="COL",
                   help="compare only this column (repeatable; default: the model's features, "
                   "else every column)")
    p.add_argument("--drift-share", type=float, default=ds.DEFAULT_DRIFT_SHARE,
                   help="dataset drift when at least this share of columns drifted (default 0.5)")
    p.add_argument("--fail-on-drift", action="store_true",
                   help="exit with status 3 when the report finds dataset drift (for schedulers)")
    p.add_argument("--distributions", action="store_true",
                   help="with --json, include each column's binned distributions")
    actions = p.add_subparsers(dest="drift_command", metavar="ACTION", required=False)

    r = add_command(actions, "reports", _reports, help="list stored drift reports, newest first")
    r.add_argument("--model", help="only this model's reports (its name)")
    r.add_argument("--limit", type=int, default=20, help="reports to list (1-1000, default 20)")

    r = add_command(actions, "show", _show, help="show one stored drift report")
    r.add_argument("id", type=int, help="report id (see `pond drift reports`)")
    r.add_argument("--distributions", action="store_true",
                   help="with --json, include each column's binned distributions")

    r = add_command(actions, "over-time", _over_time,
                    help="drift scores of a model's logged inputs per day, week or hour")
    r.add_argument("--model", required=True, help="the model: " + _MODEL_HELP)
    r.add_argument("--freq", choices=list(drift.FREQUENCIES), default="day",
                   help="period length (default day)")
    r.add_argument("--window", help=_WINDOW_HELP)
    r.add_argument("--reference", help="reference dataset: " + _DATASET_HELP
                   + "; default: the model's training dataset version")

    r = add_command(actions, "performance", _performance,
                    help="model quality per period from logged predictions and later labels")
    r.add_argument("--model", required=True, help="the model: " + _MODEL_HELP)
    r.add_argument("--labels", required=True,
                   help="dataset holding the true values: " + _DATASET_HELP)
    r.add_argument("--key", default="request_id",
                   help="join on request_id (plus a 0-based `record` column for multi-record "
                   "requests), or on a column of the logged records (default request_id)")
    r.add_argument("--label-column", help="column of true values (default: the model's target)")
    r.add_argument("--freq", choices=list(drift.FREQUENCIES), default="day",
                   help="period length (default day)")
    r.add_argument("--window", help=_WINDOW_HELP)
    r.add_argument("--check-policy", action="store_true",
                   help="fire an alert when the latest period breaks the model's metric policy")

    alerts = sub.add_parser("alerts", help="drift alerts: list, acknowledge, set policies")
    alert_actions = alerts.add_subparsers(dest="alerts_command", metavar="ACTION", required=True)
    a = add_command(alert_actions, "list", _alerts_list, help="fired alerts, newest first")
    a.add_argument("--model", help="only this model's alerts")
    a.add_argument("--all", action="store_true", help="include acknowledged alerts")
    a.add_argument("--limit", type=int, default=50, help="alerts to list (default 50)")
    a = add_command(alert_actions, "ack", _alerts_ack, help="acknowledge an alert")
    a.add_argument("id", type=int, help="alert id (see `pond alerts list`)")
    a.add_argument("--comment", help="what was done about it")
    a = add_command(alert_actions, "deliveries", _alerts_deliveries,
                    help="webhook deliveries of alerts and their outcomes")
    a.add_argument("--alert", type=int, help="only this alert's deliveries")
    a.add_argument("--limit", type=int, default=50, help="rows (default 50)")

    policy = alert_actions.add_parser("policy", help="a model's alert policy")
    policy_actions = policy.add_subparsers(dest="policy_command", metavar="ACTION",
                                           required=True)
    a = add_command(policy_actions, "set", _policy_set,
                    help="set or replace a model's alert policy (at least one condition)")
    a.add_argument("model", help="model name")
    a.add_argument("--drift-share", type=float,
                   help="alert when a report's share of drifted columns is at least this (0-1]")
    a.add_argument("--column", action="append", default=[], metavar="COL",
                   help="alert when this column (or 'prediction') drifted (repeatable)")
    a.add_argument("--metric", help="alert on this metric from `pond drift performance` "
                   "(e.g. accuracy, roc_auc, rmse)")
    a.add_argument("--limit", type=float, dest="metric_limit",
                   help="the metric's limit: alert below it (accuracy…) or above it (rmse…)")
    a.add_argument("--webhook", help="POST alerts here as JSON with a Slack-compatible text")
    a.add_argument("--secret", help="sign webhook bodies with this HMAC-SHA256 secret")
    a.add_argument("--disable", action="store_true", help="keep the policy but stop it firing")
    a = add_command(policy_actions, "show", _policy_show,
                    help="show one model's policy, or every policy")
    a.add_argument("model", nargs="?", help="model name (default: every policy)")


# --- printing ----------------------------------------------------------------------------


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return "n/a" if value != value else f"{value:.4g}"
    return str(value)


def _report_lines(report: drift.DriftReport) -> list[str]:
    window = f" (last {report.window})" if report.window else ""
    model = f"model {report.model_ref}: " if report.model else ""
    verdict = "DATASET DRIFT" if report.dataset_drift else "no dataset drift"
    lines = [
        f"drift report #{report.id}: {model}{report.reference} ({report.reference_rows} rows) vs "
        f"{report.current}{window} ({report.current_rows} rows)",
        f"{verdict}: {len(report.drifted_columns)} of {len(report.columns)} columns drifted "
        f"(share {_fmt(report.drifted_share)}, threshold {report.drift_share_threshold:g})",
    ]
    results = [*report.columns, *([report.prediction] if report.prediction else [])]
    lines += table(
        [[r.column, r.kind, r.test_label, _fmt(r.score), f"{r.threshold:g}",
          "DRIFT" if r.drifted else "-", _fmt(r.psi), r.psi_band or ""] for r in results],
        ["column", "kind", "test", "score", "threshold", "drift", "psi", "psi band"],
    )
    for s in report.skipped:
        lines.append(f"skipped {s.column}: {s.reason}")
    lines += [f"warning: {w}" for w in report.warnings]
    for r in results:
        lines += [f"note ({r.column}): {n}" for n in r.notes]
    if report.alerts:
        lines.append("alerts fired: " + ", ".join(f"#{a}" for a in report.alerts)
                     + " (see `pond alerts list`)")
    return lines


# --- handlers ------------------------------------------------------------------------------


def _drift(args: argparse.Namespace) -> int:
    tests: dict[str, Any] = {}
    for spec in args.test:
        column, name, threshold = ds.parse_column_test(spec)
        tests[column] = {"test": name, "threshold": threshold}
    ws = workspace(args)
    report = drift.drift_report(
        ws, reference=args.reference, current=args.current, model=args.model,
        window=args.window, actor=actor(args, ws), column_tests=tests or None,
        columns=args.column, drift_share=args.drift_share,
    )
    emit(args, report.to_dict(distributions=args.distributions), _report_lines(report))
    return 3 if args.fail_on_drift and report.dataset_drift else 0


def _reports(args: argparse.Namespace) -> None:
    found = drift.list_reports(workspace(args), args.model, limit=args.limit)
    emit(args, found, table(
        [[r.id, f"{r.created_at:%Y-%m-%d %H:%M}", r.created_by,
          f"{r.model}:{r.model_version}" if r.model else "", r.reference, r.current,
          r.window or "", f"{r.columns_drifted}/{r.columns_tested}",
          "yes" if r.dataset_drift else "no"] for r in found],
        ["id", "created", "by", "model", "reference", "current", "window", "drifted",
         "dataset drift"],
    ))


def _show(args: argparse.Namespace) -> None:
    report = drift.get_report(workspace(args), args.id)
    emit(args, report.to_dict(distributions=args.distributions), _report_lines(report))


def _over_time(args: argparse.Namespace) -> None:
    ws = workspace(args)
    timeline = drift.drift_over_time(ws, args.model, args.freq, reference=args.reference,
                                     window=args.window, actor=actor(args, ws))
    columns: list[str] = []
    for point in timeline.points:
        columns += [c for c in point.scores if c not in columns]
    lines = [f"drift of {timeline.model}:{timeline.model_version} per {timeline.freq} against "
             f"{timeline.reference}"]
    lines += table(
        [[f"{p.start:%Y-%m-%d %H:%M}", p.rows, _fmt(p.drifted_share),
          *[_fmt(p.scores.get(c)) + ("*" if p.drifted.get(c) else "") for c in columns],
          _fmt(p.prediction_score)] for p in timeline.points],
        ["period", "rows", "drifted share", *columns, "prediction"],
    )
    lines.append("* drifted")
    emit(args, timeline, lines)


def _performance(args: argparse.Namespace) -> None:
    ws = workspace(args)
    user = actor(args, ws) if args.check_policy else None
    timeline = drift.performance_over_time(
        ws, args.model, args.labels, key=args.key, label_column=args.label_column,
        freq=args.freq, window=args.window, actor=user,
    )
    names = list(timeline.points[0].metrics) if timeline.points else []
    lines = [f"{timeline.model}:{timeline.model_version} per {timeline.freq}: "
             f"{timeline.matched_rows} of {timeline.logged_rows} logged predictions labelled "
             f"by {timeline.labels}"]
    lines += table([[f"{p.start:%Y-%m-%d %H:%M}", p.rows, *[_fmt(p.metrics[n]) for n in names]]
                    for p in timeline.points], ["period", "rows", *names])
    if timeline.alerts:
        lines.append("alerts fired: " + ", ".join(f"#{a}" for a in timeline.alerts))
    emit(args, timeline, lines)


def _alerts_list(args: argparse.Namespace) -> None:
    found = drift.list_alerts(workspace(args), args.model, open_only=not args.all,
                              limit=args.limit)
    emit(args, found, table(
        [[a.id, f"{a.fired_at:%Y-%m-%d %H:%M}", a.model, a.condition, a.message,
          "open" if a.is_open else f"acked by {a.acknowledged_by}"] for a in found],
        ["id", "fired", "model", "condition", "message", "state"],
    ))


def _alerts_ack(args: argparse.Namespace) -> None:
    ws = workspace(args)
    found = drift.acknowledge(ws, args.id, actor=actor(args, ws), comment=args.comment)
    emit(args, found, f"alert #{found.id} acknowledged by {found.acknowledged_by}")


def _alerts_deliveries(args: argparse.Namespace) -> None:
    found = drift.alert_deliveries(workspace(args), args.alert, limit=args.limit)
    emit(args, found, table(
        [[d.id, d.alert_id, d.url, d.outcome, d.attempts, _fmt(d.response_status),
          d.error or ""] for d in found],
        ["id", "alert", "url", "outcome", "attempts", "status", "error"],
    ))


def _policy_lines(policy: drift.AlertPolicy) -> list[str]:
    state = "enabled" if policy.enabled else "disabled"
    lines = [f"alert policy of {policy.model} ({state}, set by {policy.updated_by} at "
             f"{policy.updated_at:%Y-%m-%d %H:%M}): alert when "
             + " or ".join(policy.describe())]
    if policy.webhook_url:
        signed = f", signed with secret {policy.secret_hint}" if policy.secret_hint else ""
        lines.append(f"  POSTs to {policy.webhook_url}{signed}")
    return lines


def _policy_set(args: argparse.Namespace) -> None:
    ws = workspace(args)
    found = drift.set_policy(
        ws, args.model, actor=actor(args, ws), max_drift_share=args.drift_share,
        watched_columns=args.column, metric=args.metric, metric_limit=args.metric_limit,
        webhook_url=args.webhook, webhook_secret=args.secret, enabled=not args.disable,
    )
    emit(args, found, _policy_lines(found))


def _policy_show(args: argparse.Namespace) -> None:
    ws = workspace(args)
    if args.model:
        found = drift.get_policy(ws, args.model)
        if found is None:
            raise InvalidInput(f"model {args.model!r} has no alert policy; set one with "
                               f"`pond alerts policy set {args.model} --drift-share 0.5`")
        emit(args, found, _policy_lines(found))
        return
    policies = drift.list_policies(ws)
    lines = [line for p in policies for line in _policy_lines(p)] or ["no alert policies"]
    emit(args, policies, lines)
