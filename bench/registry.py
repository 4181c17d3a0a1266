"""Registry at scale: 1,000 models × 5 versions, then list, search, filter and show.

Run: .venv/bin/python bench/registry.py [--models 1000] [--versions 5] [--repeats 7]

Rows are bulk-inserted through the store into a temporary workspace; every
timed call is the public `core.registry` function the Registry page and
`pond models` use, including opening and closing the workspace connection
(the multi-process rule), and the figure printed is the median of the repeats.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core import auth, registry, store  # noqa: E402
from core.store import registry as rows  # noqa: E402

STATUSES = ["registered", "pending_review", "approved", "rejected", "archived"]
OWNERS = ["ana", "ben", "chloe", "dev"]
TEAMS = ["risk", "growth", "ops"]


def populate(ws: store.Workspace, n_models: int, n_versions: int) -> None:
    models, versions, tags, aliases = [], [], [], []
    for i in range(n_models):
        name = f"model-{i:04d}"
        owner = OWNERS[i % len(OWNERS)]
        models.append((name, owner))
        for v in range(1, n_versions + 1):
            status = STATUSES[(i + v) % len(STATUSES)]
            versions.append({
                "model_name": name, "version": v, "status": status,
                "task": "binary_classification", "flavor": "lightgbm",
                "metrics": {"auc": 0.7 + (i % 30) / 100, "logloss": 0.5 - v / 100},
                "params": {"num_leaves": 16 + v, "learning_rate": 0.05},
                "lineage": {"dataset": {"name": f"ds-{i % 50}", "version": v,
                                        "content_sha256": f"{i:064x}"}},
                "created_by": owner,
            })
            tags.append((name, v, "team", TEAMS[i % len(TEAMS)]))
            if status == "approved":
                aliases.append((name, "champion", v, "rita"))
    # One alias name per model: keep the last approved version as the champion.
    champions = {a[0]: a for a in aliases}
    with store.transaction(ws) as con:
        rows.bulk_insert(con, models=models, versions=versions, tags=tags,
                         aliases=list(champions.values()))


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm the page cache and DuckDB's catalog once
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=1000, help="models to create")
    parser.add_argument("--versions", type=int, default=5, help="versions per model")
    parser.add_argument("--repeats", type=int, default=7, help="timed repeats per call")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        ws = store.open_workspace(Path(tmp) / "pond")
        auth.add_user(ws, "admin", "admin", "bench-password", actor=auth.SYSTEM)
        start = time.perf_counter()
        populate(ws, args.models, args.versions)
        print(f"created {args.models} models × {args.versions} versions in "
              f"{time.perf_counter() - start:.2f} s")

        def first_page() -> object:
            return registry.list_models(ws, limit=50)

        cases: list[tuple[str, Callable[[], object]]] = [
            ("open + close a read connection (floor of every call)", lambda: _open_close(ws)),
            ("list: first page of 50", first_page),
            ("list: page at offset 950", lambda: registry.list_models(ws, limit=50, offset=950)),
            ("search: name contains '-09'", lambda: registry.list_models(ws, search="-09")),
            ("search: no match", lambda: registry.list_models(ws, search="zzz")),
            ("filter: status=pending_review",
             lambda: registry.list_models(ws, status="pending_review")),
            ("filter: owner=chloe", lambda: registry.list_models(ws, owner="chloe")),
            ("filter: tag team=growth", lambda: registry.list_models(ws, tag="team=growth")),
            ("filter: all three + search",
             lambda: registry.list_models(ws, search="model-0", status="approved", owner="ana",
                                          tag="team=risk")),
            ("show: model with its 5 versions", lambda: registry.get_model(ws, "model-0500")),
            ("show: one version", lambda: registry.get_version(ws, "model-0500", 3)),
            ("resolve: name@champion", lambda: registry.resolve(ws, "model-0500@champion")),
            ("audit trail (latest 200)", lambda: registry.audit_trail(ws)),
        ]
        page = first_page()
        print(f"first page: {len(page)} of {page.total} models; "
              f"{page.models[0].name} has {page.models[0].version_count} versions, "
              f"aliases {page.models[0].aliases}")
        width = max(len(label) for label, _ in cases)
        print(f"{'call':<{width}}  median ms ({args.repeats} repeats)")
        for label, fn in cases:
            print(f"{label:<{width}}  {median_ms(fn, args.repeats):9.1f}")

        # The same list queries inside one open connection: the SQL's own cost,
        # without the per-call open/close that the multi-process rule adds.
        sql_cases = [
            ("SQL only: first page", {}),
            ("SQL only: offset 950", {"offset": 950}),
            ("SQL only: search '-09'", {"search": "-09"}),
            ("SQL only: status filter", {"status": "pending_review"}),
            ("SQL only: owner filter", {"owner": "chloe"}),
            ("SQL only: tag filter", {"tag": ("team", "growth")}),
        ]
        with store.read(ws) as con:
            for label, kwargs in sql_cases:
                ms = median_ms(lambda kw=kwargs: rows.list_models(con, limit=50, **kw),
                               args.repeats)
                print(f"{label:<{width}}  {ms:9.1f}")


def _open_close(ws: store.Workspace) -> None:
    with store.read(ws) as con:
        con.execute("SELECT 1").fetchall()


if __name__ == "__main__":
    main()
