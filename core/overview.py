"""The workspace at a glance, for the home page: datasets, models, reviews
waiting, open alerts and recent activity. Each section is read from the domain
module that owns it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from core import datasets, drift, registry, store
from core.store import Workspace
from core.store import audit as audit_rows


@dataclass(frozen=True)
class Overview:
    datasets: list[datasets.DatasetVersion]
    dataset_versions: int
    models: list[Any] = field(default_factory=list)
    pending_reviews: list[Any] = field(default_factory=list)
    alerts: list[Any] = field(default_factory=list)
    recent_activity: list[dict[str, Any]] = field(default_factory=list)


def workspace_overview(ws: Workspace, *, activity_limit: int = 15) -> Overview:
    """Everything the home page shows, read in a few short queries."""
    versions = datasets.list_versions(ws)
    latest = {dv.name: dv for dv in versions}
    with store.read(ws) as con:
        activity = audit_rows.recent(con, activity_limit)
    models = [
        {
            "model": m.name,
            "versions": m.version_count,
            "latest": m.latest_version,
            "latest status": m.latest_status.value if m.latest_status else None,
            "aliases": ", ".join(f"{a}→v{v}" for a, v in sorted(m.aliases.items())),
            "updated": m.updated_at,
        }
        for m in registry.list_models(ws, limit=20)
    ]
    reviews = [
        {
            "model": r.model,
            "version": r.version,
            "requested by": r.requested_by,
            "at": r.requested_at,
            "comment": r.comment,
        }
        for r in registry.pending_reviews(ws, limit=20)
    ]
    return Overview(
        datasets=sorted(latest.values(), key=lambda dv: dv.created_at, reverse=True),
        dataset_versions=len(versions),
        models=models,
        pending_reviews=reviews,
        alerts=drift.open_alerts(ws),
        recent_activity=activity,
    )
