"""The workspace at a glance, for the home page: datasets, models, reviews
waiting, open alerts and recent activity. Each section is read from the domain
module that owns it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from core import datasets, store
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
    return Overview(
        datasets=sorted(latest.values(), key=lambda dv: dv.created_at, reverse=True),
        dataset_versions=len(versions),
        recent_activity=activity,
    )
