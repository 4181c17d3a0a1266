"""`pond features ...`: build, preview, save, list, show and materialise feature views."""

from __future__ import annotations

import argparse
from typing import Any

from core import features
from core.cli._common import actor, add_command, emit, table, workspace
from core.errors import InvalidInput


def register(sub: argparse._SubParsersAction) -> None:
    fs = sub.add_parser(
        "features", help="feature views: versioned data prep shared by training and serving"
    )
    fs_sub = fs.add_subparsers(dest="features_command", metavar="ACTION", required=True)

    add_command(fs_sub, "list", _list, help="every feature view (latest version) in the catalog")

    p = add_command(
        fs_sub,
        "show",
        _show,
        help="one feature view version: columns, lineage, SQL, profile, models",
    )
    p.add_argument("view", help="NAME or NAME:VERSION (default: latest version)")
    p.add_argument("--no-profile", action="store_true", help="skip the output profile")

    p = add_command(
        fs_sub,
        "materialize",
        _materialize,
        help="write a version's training table and latest entity values (Parquet)",
    )
    p.add_argument("view", help="NAME or NAME:VERSION (default: latest version)")

    p = add_command(
        fs_sub,
        "preview",
        _preview,
        help="compile steps or SQL and show the SQL and a sample (saves nothing)",
    )
    _definition_options(p)
    p.add_argument("--rows", type=int, default=10, help="sample rows to show (default 10)")

    p = add_command(
        fs_sub,
        "create",
        _create,
        help="save steps or SQL as a feature view (a new version if NAME exists)",
    )
    p.add_argument("name", help="feature view name (letters, digits, underscores)")
    _definition_options(p)
    p.add_argument("--description", default="", help="what the view is for")
    p.add_argument("--entity-key", help="output column naming the entity (e.g. customer_id)")
    p.add_argument("--timestamp-column", help="output column with each row's time")
    p.add_argument(
        "--tag", action="append", default=[], metavar="KEY=VALUE", help="a tag (repeatable)"
    )
    p.add_argument("--owner", help="who answers for the view (default: you)")
    p.add_argument(
        "--no-materialize", action="store_true", help="save the definition only; materialise later"
    )


def _definition_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--from-json",
        metavar="FILE",
        help='steps as JSON: {"source": "DATASET", "steps": [...]} or a list of steps',
    )
    p.add_argument("--sql", help="a SELECT over datasets (instead of, or before, steps)")
    p.add_argument("--source", help="dataset to start from: NAME, NAME:VERSION or fv:NAME")


def _definition(args: argparse.Namespace) -> features.Definition:
    if not args.from_json and not args.sql and not args.source:
        raise InvalidInput("give --from-json FILE, --sql SELECT or --source DATASET")
    base = features.load_definition(args.from_json) if args.from_json else features.Definition()
    source = args.source or base.source
    sql = args.sql or base.sql
    if sql and args.sql and source and not args.source:
        source = None  # --sql replaces the file's source
    return features.Definition(source=None if sql else source, sql=sql, steps=base.steps)


def _tags(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise InvalidInput(f"--tag {pair!r} must be KEY=VALUE")
        out[key] = value
    return out


def _list(args: argparse.Namespace) -> None:
    ws = workspace(args)
    views = features.list_views(ws)
    rows = [
        [
            v.name,
            v.version,
            v.owner,
            v.entity_key or "",
            len(v.columns),
            v.row_count if v.row_count is not None else "not materialised",
            ", ".join(f"{s['name']}:{s['version']}" for s in v.sources),
        ]
        for v in views
    ]
    emit(
        args,
        [v.to_dict() for v in views],
        table(rows, ["name", "version", "owner", "entity key", "columns", "rows", "sources"])
        if views
        else "no feature views yet; create one with `pond features create`",
    )


def _show(args: argparse.Namespace) -> None:
    ws = workspace(args)
    entry = features.catalog_entry(ws, args.view, with_profile=not args.no_profile)
    fv = entry.view
    lines = [
        f"feature view {fv.ref} (versions {', '.join(map(str, entry.versions))})",
        f"owner {fv.owner}; created by {fv.created_by} at {fv.created_at:%Y-%m-%d %H:%M}",
        f"description: {fv.description or '—'}",
        f"entity key: {fv.entity_key or '—'}; timestamp: {fv.timestamp_column or '—'}",
        f"tags: {', '.join(f'{k}={v}' for k, v in fv.tags.items()) or '—'}",
        "sources: " + ", ".join(f"{s['name']}:{s['version']}" for s in fv.sources),
        f"steps: {', '.join(s['op'] for s in fv.steps) or '—'}",
        "materialised: "
        + (
            f"{fv.row_count} rows ({fv.materialized_sha256[:12]}…)"
            if fv.materialized_sha256
            else "no"
        ),
        "columns:",
        *table([[c["name"], c["type"]] for c in fv.columns], ["column", "type"]),
        "models: "
        + (
            ", ".join(f"{m['model']} v{m['version']} ({m['status']})" for m in entry.models)
            or "none yet"
        ),
        "SQL:",
        fv.sql,
    ]
    emit(args, entry.to_dict(), lines)


def _materialize(args: argparse.Namespace) -> None:
    ws = workspace(args)
    fv = features.materialize_view(ws, args.view, actor=actor(args, ws))
    emit(
        args,
        fv.to_dict(),
        f"materialised {fv.ref}: {fv.row_count} rows ({fv.materialized_sha256[:12]}…)"
        if fv.materialized_sha256
        else "",
    )


def _preview(args: argparse.Namespace) -> None:
    ws = workspace(args)
    if args.rows < 1:
        raise InvalidInput(f"The 'rows' parameter must be an int >= 1. Got {args.rows} instead.")
    result = features.preview(ws, _definition(args), rows_=args.rows)
    lines: list[str] = [result.sql, ""]
    lines += [f"warning: {w}" for w in result.warnings]
    lines.append(result.frame.head(args.rows).to_string())
    emit(args, result.to_dict(), lines)


def _create(args: argparse.Namespace) -> Any:
    ws = workspace(args)
    user = actor(args, ws)
    fv = features.create_view(
        ws,
        args.name,
        _definition(args),
        actor=user,
        description=args.description,
        entity_key=args.entity_key,
        timestamp_column=args.timestamp_column,
        tags=_tags(args.tag),
        owner=args.owner,
        materialize=not args.no_materialize,
    )
    emit(
        args,
        fv.to_dict(),
        f"saved feature view {fv.ref} ({len(fv.columns)} columns"
        + (f", {fv.row_count} rows materialised)" if fv.row_count is not None else ")"),
    )
