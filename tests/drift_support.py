"""Test helpers for drift monitoring: datasets from frames, a real LightGBM churn model
registered with its training dataset in the lineage, and inference logs written the way
the server writes them (its own `predict_payload` answers, at chosen times)."""

from __future__ import annotations

import uuid
from datetime import datetime
from pathlib import Path

import numpy as np
import orjson
import pandas as pd

from core import auth, datasets, inference_log, registry, serving
from core.auth import User
from core.store import Workspace
from tests import serving_models as sm


def ingest_frame(ws: Workspace, actor: User, frame: pd.DataFrame, name: str,
                 folder: Path) -> datasets.DatasetVersion:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}-{uuid.uuid4().hex[:6]}.parquet"
    frame.to_parquet(path, index=False)
    return datasets.ingest(ws, path, name, actor=actor)


def churn_training_frame() -> pd.DataFrame:
    """Exactly the rows `serving_models.train_churn` trains on, with the target."""
    frame = sm.churn_frame(seed=0)
    frame["churned"] = np.where((frame["age"] > 45) | (frame["city"] == "oslo"), "yes", "no")
    return frame


def churn_model(ws: Workspace, folder: Path, name: str = "churn") -> registry.ModelVersion:
    """A champion LightGBM churn classifier whose lineage names its training dataset."""
    ana, rita = auth.get_user(ws, "ana"), auth.get_user(ws, "rita")
    trained_on = ingest_frame(ws, ana, churn_training_frame(), "churn_train", folder)
    files = sm.train_churn(folder / "model")
    lineage = registry.make_lineage(dataset={
        "name": trained_on.name, "version": trained_on.version,
        "content_sha256": trained_on.content_sha256,
    }, training_config={"target": "churned"})
    version = registry.register_version(
        ws, name, files, metrics={"roc_auc": 0.9}, params={}, lineage=lineage, actor=ana,
        flavor="lightgbm", task="binary", request_approval=True, comment="ready",
    )
    registry.approve(ws, name, version.version, actor=rita, comment="ok")
    registry.set_alias(ws, name, "champion", version.version, actor=rita)
    return registry.get_version(ws, name, version.version)


def current_records(n: int, *, age_shift: float = 0.0, oslo_share: float | None = None,
                    seed: int = 1) -> list[dict]:
    rng = np.random.default_rng(seed)
    if oslo_share is None:
        cities = rng.choice(sm.CITIES, n)
    else:
        rest = (1 - oslo_share) / 2
        cities = rng.choice(["lisbon", "oslo", "porto"], n, p=[rest, oslo_share, rest])
    ages = rng.normal(40 + age_shift, 12, n).round(1)
    days = rng.integers(0, 365, n)
    return [
        {"age": float(a), "city": str(c),
         "signup": (pd.Timestamp("2024-01-01", tz="UTC") + pd.Timedelta(days=int(d))).isoformat()}
        for a, c, d in zip(ages, cities, days, strict=True)
    ]


def log_requests(ws: Workspace, model: str, records: list[dict], when: datetime,
                 batch: int = 10) -> list[str]:
    """Answer `records` in requests of `batch` with the champion, logged at `when`.

    Returns:
        The request ids, in order.
    """
    served = serving.load_champion(ws, model)
    writer = inference_log.InferenceLogWriter(ws)
    ids = []
    for start in range(0, len(records), batch):
        chunk = records[start:start + batch]
        request_id = uuid.uuid4().hex
        answer = serving.predict_payload(served, {"records": chunk}, request_id)
        writer.append(inference_log.LogRow(
            request_id=request_id, model=model, version=served.version, received_at=when,
            latency_ms=1.0, status=200, error_code=None, n_records=len(chunk), inputs=chunk,
            outputs=orjson.dumps(answer), token_id=None,
        ))
        ids.append(request_id)
    writer.flush()
    return ids
