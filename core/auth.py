"""Accounts, roles and what each role may do.

Roles (DESIGN.md): `analyst` ingests, trains, requests approval and labels;
`reviewer` approves or rejects (never a version they requested); `admin`
manages users and tokens and may do everything else. The rules are enforced
here, in `core`, so the CLI, the REST server and the app all obey them.
Passwords are stored as salted scrypt hashes from the standard library.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from core import store
from core.errors import (
    AlreadyExists,
    AuthenticationFailed,
    InvalidInput,
    NotFound,
    PermissionDenied,
)
from core.store import Workspace
from core.store import users as user_rows


class Role(StrEnum):
    ANALYST = "analyst"
    REVIEWER = "reviewer"
    ADMIN = "admin"


# What each action needs. Admin may do everything.
_ALLOWED: dict[str, frozenset[Role]] = {
    "ingest": frozenset({Role.ANALYST}),
    "train": frozenset({Role.ANALYST}),
    "register": frozenset({Role.ANALYST}),
    "request_approval": frozenset({Role.ANALYST}),
    "evaluate": frozenset({Role.ANALYST, Role.REVIEWER}),
    "label": frozenset({Role.ANALYST, Role.REVIEWER}),
    "review": frozenset({Role.REVIEWER}),
    "set_alias": frozenset({Role.REVIEWER}),
    "archive": frozenset({Role.REVIEWER}),
    "monitor": frozenset({Role.ANALYST, Role.REVIEWER}),
    "manage_users": frozenset(),
    "manage_tokens": frozenset(),
    "manage_webhooks": frozenset(),
    "manage_schedules": frozenset(),
    "manage_promotion": frozenset(),
}

_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.\-]{0,63}$")
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**14, 8, 1
MIN_PASSWORD_LENGTH = 8


@dataclass(frozen=True)
class User:
    name: str
    role: Role
    disabled: bool = False
    created_at: datetime | None = None

    def can(self, action: str) -> bool:
        return allowed(self.role, action)


# The actor recorded when Pond itself acts (migrations, seeding, policies).
SYSTEM = User("system", Role.ADMIN)
# The actor recorded when a model's auto-promotion policy approves a retrained version and
# moves its champion alias; a reviewer's rights, never an account anyone signs in with.
POLICY = User("policy", Role.REVIEWER)
BUILTIN_ACTORS = (SYSTEM, POLICY)


def allowed(role: Role, action: str) -> bool:
    if action not in _ALLOWED:
        raise KeyError(f"unknown action {action!r}")
    return role is Role.ADMIN or role in _ALLOWED[action]


def require(user: User, action: str) -> None:
    """Raise `PermissionDenied` unless `user` may perform `action`."""
    if user.disabled:
        raise PermissionDenied(f"user '{user.name}' is disabled; ask an admin to enable the account")
    if not allowed(user.role, action):
        roles = sorted(r.value for r in _ALLOWED[action] | {Role.ADMIN})
        raise PermissionDenied(
            f"user '{user.name}' (role {user.role.value}) may not {action.replace('_', ' ')}; "
            f"this needs the role {' or '.join(roles)}"
        )


def hash_password(password: str) -> str:
    salt = os.urandom(16)
    digest = hashlib.scrypt(
        password.encode(), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P, dklen=32
    )
    b64 = base64.b64encode
    return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(password: str, encoded: str) -> bool:
    try:
        scheme, n, r, p, salt_b64, digest_b64 = encoded.split("$")
    except ValueError:
        return False
    if scheme != "scrypt":
        return False
    digest = hashlib.scrypt(
        password.encode(),
        salt=base64.b64decode(salt_b64),
        n=int(n),
        r=int(r),
        p=int(p),
        dklen=32,
    )
    return hmac.compare_digest(digest, base64.b64decode(digest_b64))


def _parse_role(role: str | Role) -> Role:
    try:
        return Role(role)
    except ValueError:
        raise InvalidInput(
            f"unknown role {role!r}; use one of {', '.join(r.value for r in Role)}"
        ) from None


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidInput(f"the password must have at least {MIN_PASSWORD_LENGTH} characters")


def _row_to_user(row: tuple) -> User:
    return User(name=row[0], role=Role(row[1]), disabled=row[2], created_at=row[3])


def count_users(ws: Workspace) -> int:
    with store.read(ws) as con:
        return user_rows.count(con)


def add_user(ws: Workspace, name: str, role: str | Role, password: str, *, actor: User) -> User:
    """Create a local account.

    The first account of a workspace may be created by anyone with shell
    access (that is how a workspace gets its first admin); later ones need an admin.

    Raises:
        InvalidInput: bad name, role or password. AlreadyExists: the name is taken.
        PermissionDenied: the actor is not an admin.
    """
    if not _NAME_RE.match(name or ""):
        raise InvalidInput(
            f"user name {name!r} is not allowed: use letters, digits, '.', '_' or '-', "
            "starting with a letter"
        )
    if name in {a.name for a in BUILTIN_ACTORS}:
        raise InvalidInput(
            f"user name {name!r} is reserved for Pond's own actions in the audit trail; "
            "pick another name"
        )
    parsed = _parse_role(role)
    _check_password(password)
    encoded = hash_password(password)
    with store.transaction(ws) as con:
        if user_rows.count(con) > 0:
            require(actor, "manage_users")
        if user_rows.get(con, name) is not None:
            raise AlreadyExists(f"user '{name}' already exists")
        user_rows.insert(con, name, parsed.value, encoded, actor.name)
        store.append_audit(
            con, actor=actor.name, action="user_added", entity_type="user", entity_id=name,
            to_state=parsed.value,
        )
    return get_user(ws, name)


def get_user(ws: Workspace, name: str) -> User:
    """Raises: NotFound when there is no such account."""
    with store.read(ws) as con:
        row = user_rows.get(con, name)
    if row is None:
        raise NotFound(f"user '{name}' does not exist; an admin can add it with `pond users add`")
    return _row_to_user(row[:4])


def list_users(ws: Workspace) -> list[User]:
    with store.read(ws) as con:
        rows = user_rows.list_all(con)
    return [_row_to_user(r) for r in rows]


def authenticate(ws: Workspace, name: str, password: str) -> User:
    """The account for `name` when `password` matches and it is enabled.

    Raises:
        AuthenticationFailed: unknown name, wrong password or disabled account
            (one message for all, so names cannot be probed).
    """
    with store.read(ws) as con:
        row = user_rows.get(con, name)
    if row is None:
        verify_password(password, hash_password("timing-equaliser"))
        raise AuthenticationFailed("wrong user name or password")
    user = _row_to_user(row[:4])
    if not verify_password(password, row[4]) or user.disabled:
        raise AuthenticationFailed("wrong user name or password")
    return user


def acting_user(ws: Workspace, name: str | None) -> User:
    """The enabled account a CLI call or job acts as (`--user` / `POND_USER`).

    Raises:
        InvalidInput: no name given. NotFound: unknown name. PermissionDenied: disabled.
    """
    if not name:
        raise InvalidInput("say who is acting: pass --user NAME or set POND_USER")
    user = get_user(ws, name)
    if user.disabled:
        raise PermissionDenied(f"user '{name}' is disabled; ask an admin to enable the account")
    return user


def set_disabled(ws: Workspace, name: str, disabled: bool, *, actor: User) -> User:
    require(actor, "manage_users")
    before = get_user(ws, name)
    with store.transaction(ws) as con:
        user_rows.update(con, name, disabled=disabled)
        store.append_audit(
            con, actor=actor.name, action="user_disabled" if disabled else "user_enabled",
            entity_type="user", entity_id=name,
            from_state="disabled" if before.disabled else "enabled",
            to_state="disabled" if disabled else "enabled",
        )
    return get_user(ws, name)


def set_password(ws: Workspace, name: str, password: str, *, actor: User) -> None:
    if actor.name != name:
        require(actor, "manage_users")
    _check_password(password)
    get_user(ws, name)
    encoded = hash_password(password)
    with store.transaction(ws) as con:
        user_rows.update(con, name, password_hash=encoded)
        store.append_audit(
            con, actor=actor.name, action="password_changed", entity_type="user", entity_id=name
        )


def set_role(ws: Workspace, name: str, role: str | Role, *, actor: User) -> User:
    require(actor, "manage_users")
    parsed = _parse_role(role)
    before = get_user(ws, name)
    with store.transaction(ws) as con:
        user_rows.update(con, name, role=parsed.value)
        store.append_audit(
            con, actor=actor.name, action="role_changed", entity_type="user", entity_id=name,
            from_state=before.role.value, to_state=parsed.value,
        )
    return get_user(ws, name)
