"""Test helpers for retraining: a real penguins champion trained once per session (copied into
each test's workspace), drifted and undrifted new versions of its data, and a `pond` child
process whose stderr log lines a test can wait for."""

from __future__ import annotations

import os
import queue
import re
import shutil
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from core import auth, automl, datasets, registry, store
from core.store import Workspace
from tests import drift_support

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data"
MODEL = "penguins_species"
# Plain log lines on stderr: "2026-01-31T03:00:04Z INFO retrain NAME: message".
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ (INFO|WARNING|ERROR) retrain \S+: .+$")


def build_champion(home: Path) -> None:
    """penguins:1, a LightGBM champion trained on it (approved by a reviewer), and a few
    requests served by that champion and logged as the server logs them."""
    ws = store.open_workspace(home)
    ana, rita = auth.get_user(ws, "ana"), auth.get_user(ws, "rita")
    datasets.ingest(ws, DATA / "penguins.csv", "penguins", actor=ana)
    result = automl.train_dataset(
        ws, "penguins:1", "species", actor=ana, time_budget=5, n_trials=4, seed=0, n_jobs=1
    )
    version = automl.register(ws, result, MODEL, actor=ana, comment="first species model")
    registry.approve(ws, MODEL, version.version, actor=rita, comment="ok")
    registry.set_alias(ws, MODEL, "champion", version.version, actor=rita)
    frame = datasets.load_frame(ws, datasets.get_version(ws, "penguins", 1)).dropna()
    records = frame.drop(columns=["species"]).head(30).to_dict(orient="records")
    drift_support.log_requests(ws, MODEL, records, datetime.now(UTC))


def penguins(ws: Workspace) -> pd.DataFrame:
    return datasets.load_frame(ws, datasets.get_version(ws, "penguins", 1))


def ingest_drifted(ws: Workspace, folder: Path) -> datasets.DatasetVersion:
    """penguins:2 with the birds' measurements shifted (the champion's splits no longer fit)."""
    frame = penguins(ws)
    for column, factor in (
        ("bill_length_mm", 1.25),
        ("flipper_length_mm", 1.15),
        ("body_mass_g", 1.3),
        ("bill_depth_mm", 0.8),
    ):
        frame[column] = frame[column] * factor
    return drift_support.ingest_frame(ws, auth.get_user(ws, "ana"), frame, "penguins", folder)


def ingest_undrifted(ws: Workspace, folder: Path) -> datasets.DatasetVersion:
    """penguins:2 holding the same rows in another order: new data, same distribution."""
    frame = penguins(ws).sample(frac=1.0, random_state=3).reset_index(drop=True)
    return drift_support.ingest_frame(ws, auth.get_user(ws, "ana"), frame, "penguins", folder)


def copy_home(template: Path, dest: Path) -> Workspace:
    shutil.copytree(template, dest)
    return store.open_workspace(dest)


class PondProcess:
    """`python -m core ARGS` in a child process; its stderr lines are collected as they come."""

    def __init__(self, ws: Workspace, *args: str, user: str = "ana") -> None:
        env = dict(os.environ, POND_HOME=str(ws.home), POND_USER=user, OMP_NUM_THREADS="1")
        env.pop("POND_RUN_ID", None)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "core", *args],
            cwd=ROOT,
            env=env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, text: str, timeout: float = 120.0) -> str:
        """The first stderr line containing `text`; fails when the process ends first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError(f"the process ended before logging {text!r}: {self.lines}")
            self.lines.append(line)
            if text in line:
                return line
        raise AssertionError(f"no line with {text!r} within {timeout}s: {self.lines}")

    def kill(self) -> int:
        self.process.kill()
        return self.process.wait(timeout=30)
