"""`pond migrate`, `pond app`, `pond ingest`, `pond datasets`, `pond profile`, `pond query`."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from core import datasets, query, store
from core.cli._common import actor, add_command, emit, table, workspace


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub, "migrate", _migrate, help="create the workspace or upgrade its schema in place"
    )

    p = add_command(
        sub, "app", _app, help="seed the demo workspace if empty and run the Streamlit app"
    )
    p.add_argument("--port", type=int, default=8501, help="port to serve the app on")
    p.add_argument("--no-seed", action="store_true", help="do not seed demo data")
    p.add_argument("--headless", action="store_true", help="do not open a browser")

    p = add_command(
        sub, "ingest", _ingest, help="read a CSV, TSV, Parquet, JSON/JSONL or Excel file into a "
        "new dataset version"
    )
    p.add_argument("path", help="the file to ingest")
    p.add_argument("--name", required=True, help="dataset name (letters, digits, underscores)")
    p.add_argument("--format", choices=sorted(set(datasets.FORMATS.values())),
                   help="file format (default: from the extension)")
    p.add_argument("--delimiter", help="field delimiter for CSV/TSV (default: detected)")
    p.add_argument("--encoding", default="utf-8", help="text encoding (default: utf-8)")

    p = add_command(sub, "datasets", _datasets, help="list datasets and their versions")
    p.add_argument("name", nargs="?", help="show only this dataset's versions")

    p = add_command(
        sub, "profile", _profile, help="column profile of a dataset version (DuckDB SQL)"
    )
    p.add_argument("dataset", help="NAME or NAME:VERSION (default: latest version)")
    p.add_argument("--html", metavar="FILE",
                   help="also write the ydata-profiling HTML report to FILE")
    p.add_argument("--sample-rows", type=int, default=100_000,
                   help="rows the HTML report samples above this size (default 100000)")

    p = add_command(sub, "query", _query,
                    help="run one read-only SQL SELECT over the workspace's datasets")
    p.add_argument("sql", help="the SELECT; each dataset is a view (NAME, and NAME_vK)")
    p.add_argument("--limit", type=int, default=query.DEFAULT_ROW_LIMIT, help="max rows")
    p.add_argument("--timeout", type=float, default=query.DEFAULT_TIMEOUT_S,
                   help="seconds before the query is cancelled")


def _migrate(args: argparse.Namespace) -> None:
    ws = store.Workspace(store.resolve_home(args.home))
    ws.make_dirs()
    applied = store.migrate(ws)
    result = {"home": str(ws.home), "applied": applied, "schema": store.latest_version()}
    emit(args, result, f"workspace {ws.home} at schema {store.latest_version()}"
         + (f" (applied {', '.join(map(str, applied))})" if applied else " (up to date)"))


def _app(args: argparse.Namespace) -> int:
    ws = store.open_workspace(args.home, upgrade=True)
    if not args.no_seed:
        from core import demo

        summary = demo.seed(ws)
        if summary:
            print(f"seeded the demo workspace in {ws.home}: {summary}", file=sys.stderr)
    app = Path(__file__).resolve().parents[2] / "app.py"
    env = dict(os.environ, POND_HOME=str(ws.home))
    cmd = [
        sys.executable, "-m", "streamlit", "run", str(app),
        "--server.port", str(args.port),
        "--server.headless", "true" if args.headless else "false",
    ]
    return subprocess.call(cmd, env=env)


def _ingest(args: argparse.Namespace) -> None:
    ws = workspace(args)
    dv = datasets.ingest(
        ws, args.path, args.name, actor=actor(args, ws), format=args.format,
        delimiter=args.delimiter, encoding=args.encoding,
    )
    emit(args, dv, f"ingested {dv.ref}: {dv.row_count} rows × {len(dv.columns)} columns "
         f"(sha256 {dv.content_sha256[:12]}…)")


def _datasets(args: argparse.Namespace) -> None:
    versions = datasets.list_versions(workspace(args), args.name)
    emit(
        args,
        versions,
        table(
            [[v.name, v.version, v.row_count, len(v.columns), v.source_name, v.created_by,
              v.created_at.strftime("%Y-%m-%d %H:%M")] for v in versions],
            ["dataset", "version", "rows", "columns", "source", "by", "at"],
        ),
    )


def _profile(args: argparse.Namespace) -> None:
    ws = workspace(args)
    dv = datasets.resolve(ws, args.dataset)
    prof = datasets.profile(ws, dv)
    result = {"dataset": dv.ref, "profile": prof.to_dict()}
    if args.html:
        report = datasets.ydata_report(ws, dv, actor=actor(args, ws), sample_rows=args.sample_rows)
        Path(args.html).write_text(datasets.report_html(ws, report), encoding="utf-8")
        result["html"] = {"path": args.html, "rows_used": report.rows_used,
                          "total_rows": report.total_rows}
    d = prof.to_dict()
    lines = [f"{dv.ref}: {d['n_rows']} rows × {d['n_columns']} columns, "
             f"{d['n_duplicate_rows']} duplicate rows"]
    lines += table(
        [[c["name"], c["logical_type"], c["n_missing"], c["n_distinct"],
          _fmt(c.get("min")), _fmt(c.get("max")), _fmt(c.get("mean"))] for c in d["columns"]],
        ["column", "type", "missing", "distinct", "min", "max", "mean"],
    )
    lines += [f"alert: {a['column']}: {a['message']}" for a in d["alerts"]]
    if args.html:
        lines.append(f"wrote {args.html} (ydata-profiling on {result['html']['rows_used']} of "
                     f"{result['html']['total_rows']} rows)")
    emit(args, result, lines)


def _fmt(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _query(args: argparse.Namespace) -> None:
    ws = workspace(args)
    res = query.run_query(ws, args.sql, row_limit=args.limit, timeout_s=args.timeout)
    records = res.frame.to_dict(orient="records")
    result = {"columns": res.columns, "rows": records, "truncated": res.truncated,
              "seconds": res.seconds}
    text = table(res.frame.astype(str).values.tolist(), res.columns)
    if res.truncated:
        text.append(f"(cut at {args.limit} rows)")
    emit(args, result, text)
