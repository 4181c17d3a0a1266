"""Test helpers for serving: small real LightGBM models with Pond contracts, published
as champions through the registry, and a real uvicorn server on a loopback port."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import lightgbm as lgb
import numpy as np
import pandas as pd
import uvicorn

from core import auth, model_contract, registry, serving
from core.model_contract import Contract, Feature
from core.store import Workspace

ROOT = Path(__file__).resolve().parent.parent
CITIES = ("lisbon", "oslo", "porto")


def churn_frame(n: int = 400, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "age": rng.normal(40, 12, n).round(1),
        "city": rng.choice(CITIES, n),
        "signup": pd.Timestamp("2024-01-01", tz="UTC")
        + pd.to_timedelta(rng.integers(0, 365, n), unit="D"),
    })


def train_churn(folder: Path, *, seed: int = 0, rounds: int = 20) -> dict[str, Path]:
    """A binary classifier on a number, a category and a date (classes "no", "yes")."""
    frame = churn_frame(seed=seed)
    contract = Contract(
        features=(Feature("age", "numeric", "float64"),
                  Feature("city", "category", "object", CITIES),
                  Feature("signup", "datetime", "datetime64[ns, UTC]")),
        target="churned", task="binary", classes=("no", "yes"),
    )
    frame["churned"] = np.where((frame["age"] > 45) | (frame["city"] == "oslo"), "yes", "no")
    matrix = model_contract.encode_frame(contract, frame).matrix
    label = (frame["churned"] == "yes").astype(int).to_numpy()
    booster = lgb.train(
        {"objective": "binary", "verbose": -1, "num_leaves": 7, "seed": seed,
         "min_data_in_leaf": 5},
        lgb.Dataset(matrix, label, categorical_feature=contract.categorical_indices),
        num_boost_round=rounds,
    )
    return model_contract.save_model(booster, contract, folder)


def train_price(folder: Path, *, seed: int = 0) -> dict[str, Path]:
    """A regression on two numbers."""
    rng = np.random.default_rng(seed)
    rooms = rng.integers(1, 6, 300).astype(float)
    area = rng.normal(80, 20, 300)
    contract = Contract(
        features=(Feature("rooms", "numeric", "int64"), Feature("area", "numeric", "float64")),
        target="price", task="regression",
    )
    booster = lgb.train(
        {"objective": "regression", "verbose": -1, "num_leaves": 7, "min_data_in_leaf": 5},
        lgb.Dataset(np.column_stack([rooms, area]), rooms * 50 + area * 3),
        num_boost_round=15,
    )
    return model_contract.save_model(booster, contract, folder)


def publish(
    ws: Workspace, name: str, files: dict[str, Path], *, task: str, champion: bool = True,
    flavor: str = "lightgbm",
) -> registry.ModelVersion:
    """Register as ana, approve as rita, and (by default) make it the champion."""
    ana, rita = auth.get_user(ws, "ana"), auth.get_user(ws, "rita")
    version = registry.register_version(
        ws, name, files, metrics={"auc": 0.9}, params={"num_leaves": 7}, lineage={},
        actor=ana, flavor=flavor, task=task, request_approval=True, comment="ready for review",
    )
    registry.approve(ws, name, version.version, actor=rita, comment="looks good")
    if champion:
        registry.set_alias(ws, name, "champion", version.version, actor=rita)
    return registry.get_version(ws, name, version.version)


@dataclass(frozen=True)
class Live:
    """A running server: its URL and its in-process state (thread servers only)."""

    url: str
    state: serving.ServingState | None = None

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60)


@contextmanager
def thread_server(ws: Workspace, **options: object) -> Iterator[Live]:
    """uvicorn serving `create_app(ws, **options)` in a thread, on a free loopback port.

    Leaving the block shuts it down gracefully, which writes the inference log.
    """
    app = serving.create_app(ws, **options)  # type: ignore[arg-type]
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    try:
        yield Live(f"http://127.0.0.1:{port}", app.state.serving)
    finally:
        server.should_exit = True
        thread.join(timeout=60)
        sock.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_process_server(home: Path, port: int, *extra: str) -> subprocess.Popen:
    """`pond serve` in a child process; returns once /health answers."""
    env = {**os.environ, "POND_HOME": str(home), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "core", "serve", "--port", str(port), "--log-level", "warning",
         *extra],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"pond serve exited: {proc.stdout.read().decode()}")  # type: ignore[union-attr]
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("pond serve did not start within 120 s")
