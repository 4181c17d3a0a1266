"""The demo workspace `make app` opens: real sample data from `data/`, the
accounts a newcomer signs in with, and everything the later pages show — a
trained, reviewed and approved champion model, a challenger waiting for review,
stored evaluations, requests logged by a real `pond serve` with some drift in
them, a drift report and an alert.

Seeding is idempotent: each step checks whether its result exists and only
adds what is missing, so re-running `make app` never duplicates anything.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from core import auth, datasets
from core.store import Workspace

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
DEMO_PASSWORD = "pond-demo"
DEMO_USERS = [("admin", auth.Role.ADMIN), ("ana", auth.Role.ANALYST), ("rita", auth.Role.REVIEWER)]
DEMO_DATASETS = [("penguins", "penguins.csv"), ("penguins_raw", "penguins_raw.csv")]
DEMO_MODEL = "penguins_species"
DEMO_REQUESTS = 240


def seed(ws: Workspace, *, log: Callable[[str], None] | None = None) -> str:
    """Add whatever part of the demo workspace is missing.

    Returns:
        A short summary of what was added ("" when nothing was).
    """
    say = log or (lambda _msg: None)
    added: list[str] = []
    for step in (_users, _datasets, _models, _evaluations, _inferences, _monitoring):
        result = step(ws, say)
        if result:
            added.append(result)
    return ", ".join(added)


def _users(ws: Workspace, say: Callable[[str], None]) -> str:
    existing = {u.name for u in auth.list_users(ws)}
    added = []
    for name, role in DEMO_USERS:
        if name in existing:
            continue
        acting = auth.get_user(ws, "admin") if "admin" in existing | set(added) else auth.SYSTEM
        auth.add_user(ws, name, role, DEMO_PASSWORD, actor=acting)
        added.append(name)
    return f"users {', '.join(added)}" if added else ""


def _datasets(ws: Workspace, say: Callable[[str], None]) -> str:
    analyst = auth.get_user(ws, "ana")
    have = {dv.name for dv in datasets.list_versions(ws)}
    added = []
    for name, filename in DEMO_DATASETS:
        if name not in have:
            dv = datasets.ingest(ws, DATA_DIR / filename, name, actor=analyst)
            datasets.profile(ws, dv)
            added.append(dv.ref)
    return f"datasets {', '.join(added)}" if added else ""


def _models(ws: Workspace, say: Callable[[str], None]) -> str:
    """Champion v1 (approved), challenger v2 waiting for review."""
    from core import automl, registry

    if registry.list_models(ws, search=DEMO_MODEL).total:
        return ""
    analyst, reviewer = auth.get_user(ws, "ana"), auth.get_user(ws, "rita")
    say("training the demo model (a few seconds)…")
    first = automl.train_dataset(
        ws, "penguins:1", "species", actor=analyst, time_budget=20, n_trials=12, seed=0, n_jobs=1
    )
    v1 = automl.register(
        ws, first, DEMO_MODEL, actor=analyst,
        comment="First species classifier for the field team; holdout looks solid.",
    )
    registry.approve(ws, DEMO_MODEL, v1.version, actor=reviewer,
                     comment="Lineage and holdout checked; approved for serving.")
    registry.set_alias(ws, DEMO_MODEL, "champion", v1.version, actor=reviewer)
    second = automl.train_dataset(
        ws, "penguins:1", "species", actor=analyst, exclude=["island"], time_budget=20,
        n_trials=12, seed=1, n_jobs=1,
    )
    automl.register(
        ws, second, DEMO_MODEL, actor=analyst,
        comment="Challenger without the island column, so it generalises to new colonies.",
    )
    return f"model {DEMO_MODEL} (v1 champion, v2 waiting for review)"


def _evaluations(ws: Workspace, say: Callable[[str], None]) -> str:
    from core import evaluation, registry

    champion = registry.resolve(ws, f"{DEMO_MODEL}@champion")
    if evaluation.list_evaluations(ws, DEMO_MODEL, champion.version):
        return ""
    analyst = auth.get_user(ws, "ana")
    evaluation.evaluate_model(ws, f"{DEMO_MODEL}@champion", "penguins", analyst,
                              segment_column="island")
    evaluation.evaluate_model(ws, f"{DEMO_MODEL}:2", "penguins", analyst, segment_column="island")
    return "evaluations of v1 and v2"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _demo_records(ws: Workspace, rng: random.Random) -> list[dict]:
    """Real penguins, and a later stretch of heavier Biscoe birds (planted drift)."""
    frame = datasets.load_frame(ws, datasets.get_version(ws, "penguins"))
    rows = frame.drop(columns=["species"]).to_dict(orient="records")
    records = []
    for i in range(DEMO_REQUESTS):
        row = dict(rng.choice(rows))
        if i >= DEMO_REQUESTS // 2:
            row["island"] = "Biscoe"
            for column, shift in (("body_mass_g", 1.18), ("flipper_length_mm", 1.05)):
                if _present(row.get(column)):
                    row[column] = round(row[column] * shift)
        records.append({k: (v if _present(v) else None) for k, v in row.items()})
    return records


def _present(value: object) -> bool:
    return value is not None and value == value  # NaN is the one value unequal to itself


def _inferences(ws: Workspace, say: Callable[[str], None]) -> str:
    """Requests answered and logged by a real `pond serve` on loopback."""
    from core import inference_log, tokens

    if inference_log.inference_rows(ws, DEMO_MODEL) is not None and len(
        inference_log.inference_rows(ws, DEMO_MODEL)
    ):
        return ""
    say("serving the champion and logging demo requests…")
    admin = auth.get_user(ws, "admin")
    _, secret = tokens.create_token(ws, "demo-client", actor=admin)
    port = _free_port()
    env = dict(os.environ, POND_HOME=str(ws.home))
    server = subprocess.Popen(
        [sys.executable, "-m", "core", "serve", "--host", "127.0.0.1", "--port", str(port),
         "--log-level", "warning"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(base + "/health", timeout=1):
                    break
            except OSError:
                time.sleep(0.2)
        for record in _demo_records(ws, random.Random(7)):
            request = urllib.request.Request(
                f"{base}/v1/models/{DEMO_MODEL}/predict",
                data=json.dumps({"records": [record]}).encode(),
                headers={"Authorization": f"Bearer {secret}",
                         "Content-Type": "application/json"},
            )
            with urllib.request.urlopen(request, timeout=10) as response:
                response.read()
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
    return f"{DEMO_REQUESTS} logged requests"


def _monitoring(ws: Workspace, say: Callable[[str], None]) -> str:
    from core import drift

    if drift.list_reports(ws, model=DEMO_MODEL):
        return ""
    analyst = auth.get_user(ws, "ana")
    drift.set_policy(
        ws, DEMO_MODEL, actor=auth.get_user(ws, "admin"), max_drift_share=0.25,
        watched_columns=["body_mass_g"],
    )
    drift.drift_report(ws, model=DEMO_MODEL, actor=analyst)
    return "a drift report and an alert"
