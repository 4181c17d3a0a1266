"""Shared fixtures: a fresh workspace with one user per role."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_EVALUATE_OFFLINE", "1")
os.environ.setdefault("YDATA_PROFILING_NO_ANALYTICS", "True")
os.environ.setdefault("OMP_NUM_THREADS", "1")

from core import auth, store  # noqa: E402

PASSWORD = "pond-test-pw"


@pytest.fixture
def ws(tmp_path, monkeypatch):
    """An empty, migrated workspace with users admin, ana (analyst), rita and rob (reviewers)."""
    home = tmp_path / "pond"
    monkeypatch.setenv("POND_HOME", str(home))
    workspace = store.open_workspace(home)
    auth.add_user(workspace, "admin", "admin", PASSWORD, actor=auth.SYSTEM)
    admin = auth.get_user(workspace, "admin")
    auth.add_user(workspace, "ana", "analyst", PASSWORD, actor=admin)
    auth.add_user(workspace, "rita", "reviewer", PASSWORD, actor=admin)
    auth.add_user(workspace, "rob", "reviewer", PASSWORD, actor=admin)
    return workspace


@pytest.fixture
def admin(ws):
    return auth.get_user(ws, "admin")


@pytest.fixture
def analyst(ws):
    return auth.get_user(ws, "ana")


@pytest.fixture
def reviewer(ws):
    return auth.get_user(ws, "rita")
