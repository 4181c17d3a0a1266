"""Accounts, password hashing and role rules."""

from __future__ import annotations

import pytest

from core import auth, store
from core.errors import AlreadyExists, AuthenticationFailed, InvalidInput, PermissionDenied

PASSWORD = "pond-test-pw"  # the fixtures' password (conftest.py)


def test_passwords_are_stored_as_salted_scrypt(ws):
    with store.read(ws) as con:
        hashes = [r[0] for r in con.execute("SELECT password_hash FROM users").fetchall()]
    assert all(h.startswith("scrypt$") for h in hashes)
    assert PASSWORD not in "".join(hashes)
    assert len(set(hashes)) == len(hashes)  # same password, different salts


def test_authenticate(ws):
    assert auth.authenticate(ws, "ana", PASSWORD).role is auth.Role.ANALYST
    for name, password in [("ana", "wrong-password"), ("nobody", PASSWORD)]:
        with pytest.raises(AuthenticationFailed, match="wrong user name or password"):
            auth.authenticate(ws, name, password)


def test_disabled_user_cannot_sign_in_or_act(ws, admin):
    auth.set_disabled(ws, "ana", True, actor=admin)
    with pytest.raises(AuthenticationFailed):
        auth.authenticate(ws, "ana", PASSWORD)
    with pytest.raises(PermissionDenied, match="disabled"):
        auth.acting_user(ws, "ana")


def test_only_admins_manage_users(ws, analyst, admin):
    with pytest.raises(PermissionDenied, match="ana"):
        auth.add_user(ws, "eve", "admin", PASSWORD, actor=analyst)
    auth.add_user(ws, "eve", "analyst", PASSWORD, actor=admin)
    with pytest.raises(AlreadyExists):
        auth.add_user(ws, "eve", "analyst", PASSWORD, actor=admin)


@pytest.mark.parametrize(
    "name,role,password,match",
    [
        ("../x", "analyst", PASSWORD, "not allowed"),
        ("bob", "superuser", PASSWORD, "unknown role"),
        ("bob", "analyst", "short", "at least"),
    ],
)
def test_bad_account_input(ws, admin, name, role, password, match):
    with pytest.raises(InvalidInput, match=match):
        auth.add_user(ws, name, role, password, actor=admin)


def test_role_rules():
    assert auth.allowed(auth.Role.ANALYST, "ingest")
    assert not auth.allowed(auth.Role.ANALYST, "review")
    assert auth.allowed(auth.Role.REVIEWER, "review")
    assert not auth.allowed(auth.Role.REVIEWER, "ingest")
    assert all(auth.allowed(auth.Role.ADMIN, a) for a in ["ingest", "review", "manage_users"])


def test_user_changes_are_audited(ws, admin):
    auth.set_role(ws, "ana", "reviewer", actor=admin)
    with store.read(ws) as con:
        rows = con.execute(
            "SELECT action, from_state, to_state FROM audit_log WHERE entity_id = 'ana'"
            " ORDER BY id"
        ).fetchall()
    assert rows == [("user_added", None, "analyst"), ("role_changed", "analyst", "reviewer")]
