"""`pond models`, `pond registry ...`, `pond webhooks ...` and `pond doctor`:
the model registry from the shell."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from core import doctor, registry, webhooks
from core.cli._common import actor, add_command, emit, table, workspace
from core.errors import InvalidInput

_VERSION_HELP = "version number, or an alias such as champion"


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub, "models", _models,
        help="list registered models with their versions, statuses and aliases",
    )
    p.add_argument("--search", help="only models whose name contains this text")
    p.add_argument("--status", choices=[s.value for s in registry.VersionStatus],
                   help="only models with a version in this status")
    p.add_argument("--owner", help="only models created by this user")
    p.add_argument("--tag", help="only models with a version tagged KEY or KEY=VALUE")
    p.add_argument("--limit", type=int, default=50, help="models per page (1-500, default 50)")
    p.add_argument("--offset", type=int, default=0, help="models to skip (default 0)")

    reg = sub.add_parser(
        "registry", help="show, review, alias, archive, compare and audit model versions"
    )
    reg_sub = reg.add_subparsers(dest="registry_command", metavar="ACTION", required=True)

    p = add_command(reg_sub, "show", _show,
                    help="one model (its versions) or one version (lineage, metrics, evaluations)")
    p.add_argument("model", help="model name")
    p.add_argument("version", nargs="?", help=_VERSION_HELP + " (default: the whole model)")

    p = add_command(
        reg_sub, "register", _register,
        help="register model files trained outside Pond as the model's next version",
    )
    p.add_argument("model", help="model name (created on its first version)")
    p.add_argument("files", nargs="+", metavar="FILE",
                   help="PATH or NAME=PATH of each model file (no pickles)")
    p.add_argument("--flavor", required=True, help="how to load it, e.g. lightgbm, transformers")
    p.add_argument("--task", help="e.g. binary_classification, regression, text_generation")
    p.add_argument("--metric", action="append", default=[], metavar="NAME=NUMBER",
                   help="a metric (repeatable)")
    p.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                   help="a parameter; VALUE is read as JSON when it parses (repeatable)")
    p.add_argument("--tag", action="append", default=[], metavar="KEY=VALUE",
                   help="a tag (repeatable)")
    p.add_argument("--lineage", metavar="JSON", help="lineage as a JSON object")
    p.add_argument("--parent-version", type=int, help="the version this one retrains")
    p.add_argument("--description", help="a note shown with the version")
    p.add_argument("--request-approval", action="store_true",
                   help="also request approval (needs --comment)")
    p.add_argument("--comment", help="the approval request's comment")

    p = add_command(reg_sub, "request-approval", _request, help="ask reviewers to approve a version")
    p.add_argument("model", help="model name")
    p.add_argument("version", help="version number")
    p.add_argument("--comment", required=True, help="why it should be approved")

    p = add_command(reg_sub, "approve", _approve,
                    help="approve a version waiting for review (not one you requested)")
    p.add_argument("model", help="model name")
    p.add_argument("version", help="version number")
    p.add_argument("--comment", help="a note for the record")

    p = add_command(reg_sub, "reject", _reject,
                    help="reject a version waiting for review, with a reason")
    p.add_argument("model", help="model name")
    p.add_argument("version", help="version number")
    p.add_argument("--comment", required=True, help="the reason")

    p = add_command(reg_sub, "set-alias", _set_alias,
                    help="point an alias at an approved version (its previous holder is released)")
    p.add_argument("model", help="model name")
    p.add_argument("alias", help="alias name, e.g. champion or challenger")
    p.add_argument("version", help=_VERSION_HELP)
    p.add_argument("--comment", help="a note for the record")

    p = add_command(reg_sub, "remove-alias", _remove_alias, help="delete an alias")
    p.add_argument("model", help="model name")
    p.add_argument("alias", help="alias name")

    p = add_command(reg_sub, "archive", _archive,
                    help="archive a version (it loses its aliases and cannot get new ones)")
    p.add_argument("model", help="model name")
    p.add_argument("version", help=_VERSION_HELP)
    p.add_argument("--comment", help="why it is archived")

    p = add_command(reg_sub, "compare", _compare,
                    help="two versions side by side: metrics, params and lineage")
    p.add_argument("model", help="model name")
    p.add_argument("v1", help=_VERSION_HELP)
    p.add_argument("v2", help=_VERSION_HELP)

    p = add_command(reg_sub, "audit", _audit, help="the registry's audit trail, newest first")
    p.add_argument("model", nargs="?", help="only this model")
    p.add_argument("--limit", type=int, default=200, help="rows (1-500, default 200)")
    p.add_argument("--offset", type=int, default=0, help="rows to skip (default 0)")

    p = add_command(reg_sub, "pending", _pending, help="approval requests waiting for a reviewer")

    p = add_command(reg_sub, "export", _export,
                    help="copy a version's verified files into a folder under their own names")
    p.add_argument("model", help="model name")
    p.add_argument("version", help=_VERSION_HELP)
    p.add_argument("--out", required=True, help="destination folder")

    hooks = sub.add_parser("webhooks", help="POST registry events to URLs (admins)")
    hooks_sub = hooks.add_subparsers(dest="webhooks_command", metavar="ACTION", required=True)
    p = add_command(hooks_sub, "add", _hook_add,
                    help="subscribe a URL to registry events; prints its signing secret once")
    p.add_argument("url", help="http(s) URL that accepts a JSON POST")
    p.add_argument("--event", action="append", required=True,
                   choices=[e.value for e in webhooks.WebhookEvent],
                   help="an event to send (repeatable)")
    p.add_argument("--secret", help="HMAC-SHA256 signing secret (default: generated)")
    p = add_command(hooks_sub, "list", _hook_list, help="list webhooks")
    p.add_argument("--all", action="store_true", help="include removed webhooks")
    p = add_command(hooks_sub, "remove", _hook_remove, help="stop sending to a webhook")
    p.add_argument("id", type=int, help="webhook id")
    p = add_command(hooks_sub, "deliveries", _hook_deliveries,
                    help="recent deliveries and their outcomes")
    p.add_argument("--webhook", type=int, help="only this webhook id")
    p.add_argument("--limit", type=int, default=50, help="rows (default 50)")
    p = add_command(hooks_sub, "retry", _hook_retry,
                    help="send again deliveries left pending (say, by a killed process)")
    p.add_argument("--older-than", type=float, default=60.0,
                   help="only deliveries pending at least this many seconds (default 60)")

    p = add_command(
        sub, "doctor", _doctor,
        help="check artifacts against the database: orphans, tampered and missing files",
    )
    p.add_argument("--quick", action="store_true", help="skip re-hashing every stored file")


# --- helpers ----------------------------------------------------------------------------


def _pairs(items: list[str], what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InvalidInput(f"{what} {item!r} must be NAME=VALUE")
        out[key] = value
    return out


def _version_lines(v: registry.ModelVersion) -> list[str]:
    lines = [
        f"{v.ref}  {v.status.value}"
        + (f"  aliases: {', '.join(v.aliases)}" if v.aliases else ""),
        f"  flavor {v.flavor}" + (f", task {v.task}" if v.task else ""),
        f"  registered by {v.created_by} at {v.created_at:%Y-%m-%d %H:%M}",
        f"  status set by {v.status_changed_by} at {v.status_changed_at:%Y-%m-%d %H:%M}",
    ]
    if v.description:
        lines.append(f"  description: {v.description}")
    for r in v.requests:
        lines.append(f"  requested by {r.requested_by}: {r.comment}")
        if r.decision:
            lines.append(
                f"  {r.decision} by {r.decided_by}" + (f": {r.decision_comment}"
                                                       if r.decision_comment else "")
            )
    if v.metrics:
        lines.append("  metrics: " + ", ".join(f"{k}={_fmt(x)}" for k, x in v.metrics.items()))
    if v.params:
        lines.append("  params: " + json.dumps(v.params, default=str))
    if v.tags:
        lines.append("  tags: " + ", ".join(f"{k}={x}" for k, x in v.tags.items()))
    lines.append("  lineage:")
    lines.extend(f"    {k}: {json.dumps(x, default=str)}" for k, x in v.lineage.items())
    lines.append("  files:")
    lines.extend(f"    {f.name}  {f.size_bytes} bytes  sha256 {f.sha256}" for f in v.files)
    return lines


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return "" if value is None else str(value)


# --- handlers -----------------------------------------------------------------------------


def _models(args: argparse.Namespace) -> None:
    page = registry.list_models(
        workspace(args), search=args.search, status=args.status, owner=args.owner, tag=args.tag,
        limit=args.limit, offset=args.offset,
    )
    result = {"total": page.total, "limit": page.limit, "offset": page.offset,
              "models": list(page.models)}
    lines = table(
        [[m.name, m.version_count, m.latest_version,
          m.latest_status.value if m.latest_status else "",
          ", ".join(f"{a}→{v}" for a, v in m.aliases.items()), m.created_by,
          f"{m.updated_at:%Y-%m-%d %H:%M}"] for m in page],
        ["model", "versions", "latest", "latest status", "aliases", "owner", "updated"],
    )
    lines.append(f"{len(page)} of {page.total} models (offset {page.offset})")
    emit(args, result, lines)


def _show(args: argparse.Namespace) -> None:
    ws = workspace(args)
    if args.version is None:
        detail = registry.get_model(ws, args.model)
        m = detail.model
        lines = [
            f"model {m.name}: {m.version_count} versions, owner {m.created_by}",
            "aliases: " + (", ".join(f"{a}→{v}" for a, v in m.aliases.items()) or "none"),
            *table(
                [[v.version, v.status.value, ", ".join(v.aliases), v.created_by,
                  f"{v.created_at:%Y-%m-%d %H:%M}",
                  ", ".join(f"{k}={_fmt(x)}" for k, x in list(v.metrics.items())[:3])]
                 for v in detail.versions],
                ["version", "status", "aliases", "by", "registered", "metrics"],
            ),
        ]
        emit(args, {"model": m, "versions": list(detail.versions)}, lines)
        return
    version = registry.get_version(ws, args.model, args.version)
    evaluations = registry.version_evaluations(ws, version.model, version.version)
    result = {**version.to_dict(), "evaluations": evaluations}
    lines = _version_lines(version)
    if evaluations is not None:
        lines.append(f"  evaluations: {len(evaluations)}")
        lines.extend(f"    {e}" for e in evaluations)
    emit(args, result, lines)


def _register(args: argparse.Namespace) -> None:
    ws = workspace(args)
    files: dict[str, Path] = {}
    for item in args.files:
        name, sep, path = item.partition("=")
        files[name if sep else Path(item).name] = Path(path if sep else item)
    try:
        metrics = {k: float(v) for k, v in _pairs(args.metric, "--metric").items()}
    except ValueError:
        raise InvalidInput("every --metric must be NAME=NUMBER") from None
    params: dict[str, Any] = {}
    for key, raw in _pairs(args.param, "--param").items():
        try:
            params[key] = json.loads(raw)
        except json.JSONDecodeError:
            params[key] = raw
    try:
        lineage = json.loads(args.lineage) if args.lineage else {}
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"--lineage is not valid JSON: {exc}") from None
    version = registry.register_version(
        ws, args.model, files, metrics=metrics, params=params, lineage=lineage,
        actor=actor(args, ws), flavor=args.flavor, task=args.task,
        parent_version=args.parent_version, tags=_pairs(args.tag, "--tag"),
        description=args.description, request_approval=args.request_approval,
        comment=args.comment,
    )
    emit(args, version, f"registered {version.ref} ({version.status.value})")


def _request(args: argparse.Namespace) -> None:
    ws = workspace(args)
    v = registry.request_approval(ws, args.model, args.version, actor=actor(args, ws),
                                  comment=args.comment)
    emit(args, v, f"requested approval of {v.ref}; it is now {v.status.value}")


def _approve(args: argparse.Namespace) -> None:
    ws = workspace(args)
    v = registry.approve(ws, args.model, args.version, actor=actor(args, ws), comment=args.comment)
    emit(args, v, f"approved {v.ref}")


def _reject(args: argparse.Namespace) -> None:
    ws = workspace(args)
    v = registry.reject(ws, args.model, args.version, actor=actor(args, ws), comment=args.comment)
    emit(args, v, f"rejected {v.ref}")


def _set_alias(args: argparse.Namespace) -> None:
    ws = workspace(args)
    v = registry.set_alias(ws, args.model, args.alias, args.version, actor=actor(args, ws),
                           comment=args.comment)
    emit(args, v, f"{args.model}@{args.alias} now points at version {v.version}")


def _remove_alias(args: argparse.Namespace) -> None:
    ws = workspace(args)
    previous = registry.remove_alias(ws, args.model, args.alias, actor=actor(args, ws))
    emit(args, {"model": args.model, "alias": args.alias, "previous_version": previous},
         f"removed {args.model}@{args.alias} (it pointed at version {previous})")


def _archive(args: argparse.Namespace) -> None:
    ws = workspace(args)
    v = registry.archive(ws, args.model, args.version, actor=actor(args, ws), comment=args.comment)
    emit(args, v, f"archived {v.ref}")


def _compare(args: argparse.Namespace) -> None:
    c = registry.compare(workspace(args), args.model, args.v1, args.v2)
    lines = [f"{c.left.ref} ({c.left.status.value})  vs  {c.right.ref} ({c.right.status.value})"]
    for title, diff_rows in (("metrics", c.metrics), ("params", c.params),
                             ("lineage", c.lineage)):
        lines.append(f"{title}:")
        lines.extend(
            table([[r.key, _fmt(r.left), _fmt(r.right),
                    _fmt(r.delta) if r.delta is not None else ("changed" if r.changed else "")]
                   for r in diff_rows],
                  ["key", f"v{c.left.version}", f"v{c.right.version}", "difference"])
            if diff_rows else ["  (none)"]
        )
    emit(args, c, lines)


def _audit(args: argparse.Namespace) -> None:
    entries = registry.audit_trail(workspace(args), args.model, limit=args.limit,
                                   offset=args.offset)
    emit(args, entries, table(
        [[f"{e.occurred_at:%Y-%m-%d %H:%M:%S}", e.actor, e.action, e.entity_id,
          e.from_state or "", e.to_state or "", e.comment or ""] for e in entries],
        ["when", "actor", "action", "entity", "from", "to", "comment"],
    ))


def _pending(args: argparse.Namespace) -> None:
    requests = registry.pending_reviews(workspace(args))
    emit(args, requests, table(
        [[f"{r.model}:{r.version}", r.requested_by, f"{r.requested_at:%Y-%m-%d %H:%M}", r.comment]
         for r in requests],
        ["version", "requested by", "requested at", "comment"],
    ))


def _export(args: argparse.Namespace) -> None:
    dest = registry.export_version(workspace(args), args.model, args.version, args.out)
    emit(args, {"model": args.model, "version": args.version, "path": dest},
         f"wrote the files of {args.model}:{args.version} to {dest}")


def _hook_add(args: argparse.Namespace) -> None:
    ws = workspace(args)
    hook, secret = webhooks.add_webhook(ws, args.url, args.event, actor=actor(args, ws),
                                        secret=args.secret)
    emit(args, {"webhook": hook, "secret": secret},
         [f"added webhook {hook.id} → {hook.url} for {', '.join(hook.events)}",
          f"signing secret (shown once): {secret}"])


def _hook_list(args: argparse.Namespace) -> None:
    ws = workspace(args)
    hooks = webhooks.list_webhooks(ws, actor=actor(args, ws), include_removed=args.all)
    emit(args, hooks, table(
        [[h.id, h.url, ", ".join(h.events), h.secret_hint, h.created_by,
          "removed" if h.removed_at else "active"] for h in hooks],
        ["id", "url", "events", "secret", "by", "state"],
    ))


def _hook_remove(args: argparse.Namespace) -> None:
    ws = workspace(args)
    hook = webhooks.remove_webhook(ws, args.id, actor=actor(args, ws))
    emit(args, hook, f"removed webhook {hook.id} ({hook.url})")


def _hook_deliveries(args: argparse.Namespace) -> None:
    ws = workspace(args)
    found = webhooks.list_deliveries(ws, actor=actor(args, ws), webhook_id=args.webhook,
                                     limit=args.limit)
    emit(args, found, table(
        [[d.id, d.webhook_id, d.event, d.outcome.value, d.attempts, d.response_status or "",
          d.error or ""] for d in found],
        ["id", "webhook", "event", "outcome", "attempts", "status", "error"],
    ))


def _hook_retry(args: argparse.Namespace) -> None:
    ws = workspace(args)
    sent = webhooks.deliver_pending(ws, actor=actor(args, ws), older_than_s=args.older_than)
    emit(args, {"sent": sent}, f"sent {len(sent)} pending deliveries again")


def _doctor(args: argparse.Namespace) -> int:
    report = doctor.check(workspace(args), verify_hashes=not args.quick)
    lines = [f"{f.severity.value}: {f.kind.value}: {f.message}" for f in report.findings]
    lines.append(
        f"checked {report.artifacts_checked} artifacts and {report.model_files_checked} model "
        f"files{'' if report.hashes_verified else ' (hashes not re-checked)'}: "
        + ("no errors" if report.ok else "errors found")
    )
    emit(args, {"ok": report.ok, **report.__dict__}, lines)
    if report.ok:
        return 0
    errors = sum(f.severity is doctor.Severity.ERROR for f in report.findings)
    print(f"pond: error: doctor found {errors} problem(s) that need attention", file=sys.stderr)
    return 1
