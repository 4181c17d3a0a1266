"""Shared fixtures: a fresh workspace with one user per role."""

from __future__ import annotations

import os
import shutil

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_EVALUATE_OFFLINE", "1")
os.environ.setdefault("YDATA_PROFILING_NO_ANALYTICS", "True")
os.environ.setdefault("OMP_NUM_THREADS", "1")

from core import auth, store  # noqa: E402

PASSWORD = "pond-test-pw"


@pytest.fixture(scope="session")
def _template_home(tmp_path_factory):
    """One migrated workspace with the test accounts, copied for each test (scrypt is slow)."""
    home = tmp_path_factory.mktemp("template") / "pond"
    workspace = store.open_workspace(home)
    auth.add_user(workspace, "admin", "admin", PASSWORD, actor=auth.SYSTEM)
    admin = auth.get_user(workspace, "admin")
    auth.add_user(workspace, "ana", "analyst", PASSWORD, actor=admin)
    auth.add_user(workspace, "rita", "reviewer", PASSWORD, actor=admin)
    auth.add_user(workspace, "rob", "reviewer", PASSWORD, actor=admin)
    return home


@pytest.fixture
def ws(_template_home, tmp_path, monkeypatch):
    """An empty, migrated workspace with users admin, ana (analyst), rita and rob (reviewers)."""
    home = tmp_path / "pond"
    shutil.copytree(_template_home, home)
    monkeypatch.setenv("POND_HOME", str(home))
    return store.open_workspace(home)


@pytest.fixture
def admin(ws):
    return auth.get_user(ws, "admin")


@pytest.fixture
def analyst(ws):
    return auth.get_user(ws, "ana")


@pytest.fixture
def reviewer(ws):
    return auth.get_user(ws, "rita")
