"""The demo workspace `make app` opens: real sample data from `data/` and the
accounts a newcomer signs in with. Seeding is idempotent: it only adds what
is missing, so re-running `make app` never duplicates anything."""

from __future__ import annotations

from pathlib import Path

from core import auth, datasets
from core.store import Workspace

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
DEMO_PASSWORD = "pond-demo"
DEMO_USERS = [("admin", auth.Role.ADMIN), ("ana", auth.Role.ANALYST), ("rita", auth.Role.REVIEWER)]
DEMO_DATASETS = [("penguins", "penguins.csv"), ("penguins_raw", "penguins_raw.csv")]


def seed(ws: Workspace) -> str:
    """Add the demo accounts and datasets that are missing.

    Returns:
        A short summary of what was added ("" when nothing was).
    """
    added: list[str] = []
    existing_users = {u.name for u in auth.list_users(ws)}
    admin = None
    for name, role in DEMO_USERS:
        if name not in existing_users:
            acting = admin or (auth.get_user(ws, "admin") if "admin" in existing_users else auth.SYSTEM)
            auth.add_user(ws, name, role, DEMO_PASSWORD, actor=acting)
            added.append(f"user {name}")
        if name == "admin":
            admin = auth.get_user(ws, "admin")
    analyst = auth.get_user(ws, "ana")

    have = {dv.name for dv in datasets.list_versions(ws)}
    for name, filename in DEMO_DATASETS:
        if name not in have:
            dv = datasets.ingest(ws, DATA_DIR / filename, name, actor=analyst)
            datasets.profile(ws, dv)
            added.append(f"dataset {dv.ref}")
    return ", ".join(added)
