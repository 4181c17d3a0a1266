"""API tokens for the REST server (`Authorization: Bearer <token>`).

An admin creates a token with a name; Pond shows the secret once and keeps only
its sha256 and last four characters. A token is 32 random bytes
(`secrets.token_urlsafe`) behind a `pond_` prefix, so a fast hash is as safe
as a slow one here and lets the server check a request with one set lookup.
Revoking is final. Every change lands in the audit log. A running server picks
up new and revoked tokens within its refresh interval (about 2 s).
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from core import store
from core.auth import User, require
from core.errors import AuthenticationFailed, IllegalTransition, InvalidInput, NotFound
from core.store import Workspace
from core.store import tokens as token_rows

PREFIX = "pond_"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.:@\-]{0,63}$")


@dataclass(frozen=True)
class TokenInfo:
    """What Pond knows about a token (never the secret itself)."""

    id: int
    name: str
    last4: str
    created_by: str
    created_at: datetime
    revoked_by: str | None = None
    revoked_at: datetime | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    @property
    def display(self) -> str:
        """How a list shows the token: `pond_…abcd`."""
        return f"{PREFIX}…{self.last4}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "token": self.display,
            "active": self.active,
            "created_by": self.created_by,
            "created_at": self.created_at,
            "revoked_by": self.revoked_by,
            "revoked_at": self.revoked_at,
        }


def hash_token(secret: str) -> str:
    """The sha256 (hex) under which a token is stored and looked up."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def _info(row: dict[str, Any]) -> TokenInfo:
    return TokenInfo(**row)


def _check_name(name: str) -> str:
    text = (name or "").strip() if isinstance(name, str) else ""
    if not _NAME_RE.match(text):
        raise InvalidInput(
            f"token name {name!r} is not allowed: use up to 64 letters, digits, spaces or "
            "_ . : @ -, starting with a letter or digit (for example 'checkout-service')"
        )
    return text


def create_token(ws: Workspace, name: str, *, actor: User) -> tuple[TokenInfo, str]:
    """Make a new API token.

    Args:
        name: what the token is for, shown in lists (names need not be unique).
        actor: an admin.

    Returns:
        The token's record and its secret. The secret is not stored and cannot
        be shown again.

    Raises:
        PermissionDenied: the actor is not an admin, or is disabled.
        InvalidInput: a bad name.
    """
    require(actor, "manage_tokens")
    text = _check_name(name)
    secret = PREFIX + secrets.token_urlsafe(32)
    with store.transaction(ws) as con:
        token_id = token_rows.insert(con, text, hash_token(secret), secret[-4:], actor.name)
        store.append_audit(
            con, actor=actor.name, action="token_created", entity_type=token_rows.ENTITY_TOKEN,
            entity_id=str(token_id), to_state="active", details={"name": text},
        )
        row = token_rows.get(con, token_id)
    assert row is not None
    return _info(row), secret


def list_tokens(ws: Workspace, *, actor: User, include_revoked: bool = True) -> list[TokenInfo]:
    """Every token, oldest first.

    Raises:
        PermissionDenied: the actor is not an admin.
    """
    require(actor, "manage_tokens")
    with store.read(ws) as con:
        rows = token_rows.list_all(con, include_revoked=include_revoked)
    return [_info(r) for r in rows]


def revoke_token(ws: Workspace, token_id: int, *, actor: User) -> TokenInfo:
    """Revoke a token for good; servers refuse it within their refresh interval.

    Raises:
        PermissionDenied: the actor is not an admin.
        NotFound: no token has this id.
        IllegalTransition: the token is already revoked.
    """
    require(actor, "manage_tokens")
    if isinstance(token_id, bool) or not isinstance(token_id, int):
        raise InvalidInput(f"The 'token_id' parameter of revoke_token must be an int. Got "
                           f"{token_id!r} instead.")
    with store.transaction(ws) as con:
        row = token_rows.get(con, token_id)
        if row is None:
            raise NotFound(f"token {token_id} does not exist; `pond tokens list` shows the ids")
        if row["revoked_at"] is not None:
            raise IllegalTransition(
                f"token {token_id} ('{row['name']}') was already revoked by "
                f"{row['revoked_by']} at {row['revoked_at']:%Y-%m-%d %H:%M}"
            )
        token_rows.revoke(con, token_id, actor.name)
        store.append_audit(
            con, actor=actor.name, action="token_revoked", entity_type=token_rows.ENTITY_TOKEN,
            entity_id=str(token_id), from_state="active", to_state="revoked",
            details={"name": row["name"]},
        )
        updated = token_rows.get(con, token_id)
    assert updated is not None
    return _info(updated)


def verify(ws: Workspace, secret: str) -> TokenInfo:
    """The active token whose secret this is.

    The server does not call this per request (it never opens the database on
    the request path); it checks `hash_token(secret)` against the hashes it
    refreshes in the background. This is for the CLI, the app and tests.

    Raises:
        AuthenticationFailed: unknown or revoked token (one message for both).
    """
    if not isinstance(secret, str) or not secret.startswith(PREFIX):
        raise AuthenticationFailed("the API token is missing, unknown or revoked")
    with store.read(ws) as con:
        row = token_rows.by_hash(con, hash_token(secret))
    if row is None or row["revoked_at"] is not None:
        raise AuthenticationFailed("the API token is missing, unknown or revoked")
    return _info(row)


def active_token_hashes(ws: Workspace) -> dict[str, int]:
    """sha256 → id of every active token (what a server accepts right now)."""
    with store.read(ws) as con:
        return token_rows.active_by_hash(con)
