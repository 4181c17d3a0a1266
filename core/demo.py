"""The demo workspace `make app` opens: real sample data from `data/`, the
accounts a newcomer signs in with, and everything the later pages show — a
trained, reviewed and approved champion model, a challenger waiting for review,
stored evaluations, requests logged by a real `pond serve` with some drift in
them, a drift report and an alert, a nightly retrain schedule with its first
run, a feature view and a model trained on it, a small fine-tuned text model
(`core.demo_text`), and a labeling project with answers from two labelers.

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

from core import auth, datasets, demo_text
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
    for step in (_users, _datasets, _models, _evaluations, _inferences, _monitoring,
                 _retraining, _features, demo_text.seed, _feedback):
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


def _retraining(ws: Workspace, say: Callable[[str], None]) -> str:
    """A nightly drift-gated retrain of the demo model, and one real run of it."""
    from core import retraining, schedules

    if any(s.name == "nightly-penguins" for s in schedules.list_schedules(ws)):
        return ""
    schedules.add_schedule(
        ws, "nightly-penguins", "0 3 * * *",
        ["retrain", "--model", DEMO_MODEL, "--only-if-drift", "--budget", "20"],
        actor=auth.get_user(ws, "admin"), run_as="ana",
    )
    # penguins:1 is what the champion learned from, so this run records a quick skip.
    retraining.retrain(ws, DEMO_MODEL, actor=auth.get_user(ws, "ana"), only_if_drift=True,
                       time_budget=20)
    return "a nightly retrain schedule and its first run"


DEMO_FEATURE_VIEW = "penguin_features"
DEMO_FEATURE_MODEL = "penguins_features"


def _features(ws: Workspace, say: Callable[[str], None]) -> str:
    """A feature view over the penguins (ratios, imputation, island flags), materialised,
    and a small model trained on it so the catalog shows which models use it."""
    from core import automl, features, registry

    if any(v.name == DEMO_FEATURE_VIEW for v in features.list_views(ws)):
        return ""
    analyst = auth.get_user(ws, "ana")
    steps = (
        {"op": "derive", "name": "bill_ratio", "expression": "bill_length_mm / bill_depth_mm"},
        {"op": "derive", "name": "mass_per_flipper",
         "expression": "body_mass_g / flipper_length_mm"},
        {"op": "impute", "columns": ["bill_ratio", "mass_per_flipper", "body_mass_g"],
         "strategy": "median"},
        {"op": "impute", "columns": ["sex"], "strategy": "mode"},
        {"op": "one_hot", "column": "island"},
        {"op": "bin", "column": "flipper_length_mm", "bins": 4},
        {"op": "select", "columns": [
            "species", "bill_ratio", "mass_per_flipper", "body_mass_g", "sex",
            "island_Biscoe", "island_Dream", "island_Torgersen", "flipper_length_mm_bin"]},
    )
    fv = features.create_view(
        ws, DEMO_FEATURE_VIEW, features.Definition(source="penguins:1", steps=steps),
        actor=analyst, description="Bill and body shape ratios with island flags, for the "
        "species models.", tags={"team": "field", "domain": "penguins"},
    )
    if not registry.list_models(ws, search=DEMO_FEATURE_MODEL).total:
        say("training a small model on the demo feature view…")
        result = automl.train_dataset(ws, f"fv:{fv.ref}", "species", actor=analyst,
                                      time_budget=6, n_trials=3, seed=0, n_jobs=1)
        automl.register(ws, result, DEMO_FEATURE_MODEL, actor=analyst,
                        comment="Species from the shared penguin_features view.")
    return f"feature view {fv.ref} and model {DEMO_FEATURE_MODEL}"


DEMO_FEEDBACK = "penguin-answers"


def _feedback(ws: Workspace, say: Callable[[str], None]) -> str:
    """A pairwise labeling project over answers two versions of an assistant gave to
    analysts' questions, with labels by ana and rita (mostly agreeing) on most items."""
    from core import feedback

    analyst, reviewer = auth.get_user(ws, "ana"), auth.get_user(ws, "rita")
    if any(p.name == DEMO_FEEDBACK for p in feedback.list_projects(ws, actor=analyst)):
        return ""
    source = DATA_DIR / "feedback_demo.jsonl"
    feedback.create_project(
        ws, DEMO_FEEDBACK,
        [feedback.default_question(feedback.PAIRWISE),
         feedback.default_question(feedback.CORRECTION),
         feedback.default_question(feedback.TAGS,
                                   options=["factual error", "unsafe advice", "off-topic"])],
        actor=analyst, labels_per_item=2, labelers=["ana", "rita"],
        description="Which assistant version answers analysts' penguin questions better?",
        guidelines="Prefer the response that is **correct** about the data, then the one "
        "that is clearer. Choose *tie* when both are equally good and *both bad* when "
        "neither should be shown to an analyst. Never reward made-up numbers.",
    )
    feedback.import_items(ws, DEMO_FEEDBACK, actor=analyst, path=source)
    # The better answer in the file is the one from analyst_helper:2.
    better = {}
    for line in source.read_text().splitlines():
        record = json.loads(line)
        better[record["prompt"]] = next(c["text"] for c in record["candidates"]
                                        if c["model"] == "analyst_helper:2")
    # rita disagrees on a few items so the review view has disputes to resolve.
    rita_differs = {3: "worse", 5: "both_bad", 8: "tie"}
    for user, differs in ((analyst, {8: "tie"}), (reviewer, rita_differs)):
        for _ in range(8):
            item = feedback.next_item(ws, DEMO_FEEDBACK, actor=user)
            good = "A" if item.responses[0] == better[item.prompt] else "B"
            choice = differs.get(item.item_id, good)
            if choice == "worse":
                choice = "B" if good == "A" else "A"
            feedback.submit(ws, DEMO_FEEDBACK, item.item_id, {"preference": choice},
                            actor=user)
    return f"labeling project {DEMO_FEEDBACK} with 16 labels"
