"""Registry webhooks: an admin subscribes a URL to registry events, and Pond
POSTs a JSON payload signed with HMAC-SHA256 under that hook's own secret.

Delivery uses an outbox. The registry change and a `pending` delivery row per
subscribed hook are written in one transaction (`enqueue`); only after it
commits does `dispatch` POST them from background threads, retrying with
backoff, and settle each row as `delivered` or `failed`. A slow or dead
endpoint therefore never blocks or rolls back the registry change, and a
delivery cut short by a killed process stays visible as `pending` (and can be
sent again with `deliver_pending`). Threads are non-daemon, so a CLI process
finishes its deliveries before it exits.

Receivers verify `X-Pond-Signature-256: sha256=<hex>` as
`hmac.new(secret, raw_body, sha256)`, the scheme GitHub uses.

Drift alerts (`core.drift`) use the same delivery: hooks may subscribe to
`drift_alert`, and an alert policy's own URL is sent through `dispatch` with a
`settle` function that records the outcome in the alert's delivery table.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import secrets
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import duckdb

from core import __version__, store
from core.auth import User, require
from core.errors import InvalidInput, NotFound
from core.store import Workspace
from core.store import webhooks as hook_rows

log = logging.getLogger(__name__)

# Seconds to wait before each retry; len + 1 attempts in all. Tests shorten it.
RETRY_DELAYS: tuple[float, ...] = (0.5, 2.0, 5.0)
# Per-attempt timeout: a hook that does not answer in this time counts as failed.
TIMEOUT_S = 5.0
MIN_SECRET_LENGTH = 16
SIGNATURE_HEADER = "X-Pond-Signature-256"


class WebhookEvent(StrEnum):
    VERSION_REGISTERED = "version_registered"
    APPROVAL_REQUESTED = "approval_requested"
    VERSION_APPROVED = "version_approved"
    VERSION_REJECTED = "version_rejected"
    ALIAS_MOVED = "alias_moved"
    VERSION_ARCHIVED = "version_archived"
    DRIFT_ALERT = "drift_alert"


class DeliveryOutcome(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


@dataclass(frozen=True)
class Webhook:
    """A subscription. The secret itself is shown once, by `add_webhook`."""

    id: int
    url: str
    events: tuple[WebhookEvent, ...]
    secret_hint: str
    created_by: str
    created_at: datetime
    removed_by: str | None = None
    removed_at: datetime | None = None


@dataclass(frozen=True)
class Delivery:
    id: int
    webhook_id: int
    event: str
    payload: dict[str, Any]
    outcome: DeliveryOutcome
    attempts: int
    response_status: int | None
    error: str | None
    created_at: datetime
    finished_at: datetime | None


@dataclass(frozen=True)
class PendingDelivery:
    """A delivery row committed as `pending`, with what is needed to send it."""

    delivery_id: int
    webhook_id: int
    url: str
    secret: str
    event: str
    payload: dict[str, Any]


def sign(secret: str, body: bytes) -> str:
    """The signature header value for `body`: `sha256=` and the hex HMAC-SHA256."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(secret: str, body: bytes, signature: str) -> bool:
    """Whether `signature` (a header value) signs `body` under `secret`."""
    return hmac.compare_digest(sign(secret, body), signature or "")


def _parse_events(events: list[str] | tuple[str, ...]) -> list[WebhookEvent]:
    if not events:
        raise InvalidInput(
            f"name at least one event; choose from {', '.join(e.value for e in WebhookEvent)}"
        )
    parsed: list[WebhookEvent] = []
    for event in events:
        try:
            parsed.append(WebhookEvent(event))
        except ValueError:
            raise InvalidInput(
                f"unknown webhook event {event!r}; "
                f"choose from {', '.join(e.value for e in WebhookEvent)}"
            ) from None
    return sorted(set(parsed), key=list(WebhookEvent).index)


def _check_url(url: str) -> str:
    parsed = urllib.parse.urlparse(url or "")
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise InvalidInput(f"webhook URL {url!r} must be an http:// or https:// URL with a host")
    return url


def _hook(row: dict[str, Any]) -> Webhook:
    return Webhook(
        id=row["id"],
        url=row["url"],
        events=tuple(WebhookEvent(e) for e in json.loads(row["events"])),
        secret_hint="…" + row["secret"][-4:],
        created_by=row["created_by"],
        created_at=row["created_at"],
        removed_by=row["removed_by"],
        removed_at=row["removed_at"],
    )


def add_webhook(
    ws: Workspace,
    url: str,
    events: list[str] | tuple[str, ...],
    *,
    actor: User,
    secret: str | None = None,
) -> tuple[Webhook, str]:
    """Subscribe `url` to registry `events`.

    Args:
        url: an http(s) URL that accepts a JSON POST.
        events: names from `WebhookEvent`.
        actor: an admin.
        secret: the signing secret (at least 16 characters); generated when omitted.

    Returns:
        The webhook and its secret; the secret is not shown again.

    Raises:
        PermissionDenied: the actor is not an admin.
        InvalidInput: bad URL, unknown event, or a short secret.
    """
    require(actor, "manage_webhooks")
    _check_url(url)
    parsed = _parse_events(events)
    if secret is None:
        secret = secrets.token_urlsafe(32)
    elif len(secret) < MIN_SECRET_LENGTH:
        raise InvalidInput(f"a webhook secret needs at least {MIN_SECRET_LENGTH} characters")
    with store.transaction(ws) as con:
        hook_id = hook_rows.insert(con, url, [e.value for e in parsed], secret, actor.name)
        store.append_audit(
            con, actor=actor.name, action="webhook_added", entity_type="webhook",
            entity_id=str(hook_id), to_state="active",
            details={"url": url, "events": [e.value for e in parsed]},
        )
        row = hook_rows.get(con, hook_id)
    assert row is not None
    return _hook(row), secret


def list_webhooks(ws: Workspace, *, actor: User, include_removed: bool = False) -> list[Webhook]:
    """Webhooks, oldest first (admins only: URLs can carry credentials).

    Raises:
        PermissionDenied: the actor is not an admin.
    """
    require(actor, "manage_webhooks")
    with store.read(ws) as con:
        rows = hook_rows.list_all(con, include_removed=include_removed)
    return [_hook(r) for r in rows]


def remove_webhook(ws: Workspace, hook_id: int, *, actor: User) -> Webhook:
    """Stop sending to a webhook; its delivery history stays.

    Raises:
        PermissionDenied: the actor is not an admin.
        NotFound: no active webhook has that id.
    """
    require(actor, "manage_webhooks")
    with store.transaction(ws) as con:
        row = hook_rows.get(con, hook_id)
        if row is None or row["removed_at"] is not None:
            raise NotFound(f"there is no active webhook {hook_id}; `pond webhooks list` shows them")
        hook_rows.mark_removed(con, hook_id, actor.name)
        store.append_audit(
            con, actor=actor.name, action="webhook_removed", entity_type="webhook",
            entity_id=str(hook_id), from_state="active", to_state="removed",
            details={"url": row["url"]},
        )
        row = hook_rows.get(con, hook_id)
    assert row is not None
    return _hook(row)


def list_deliveries(
    ws: Workspace, *, actor: User, webhook_id: int | None = None, limit: int = 50
) -> list[Delivery]:
    """Recent deliveries, newest first.

    Raises:
        PermissionDenied: the actor is not an admin.
    """
    require(actor, "manage_webhooks")
    with store.read(ws) as con:
        rows = hook_rows.list_deliveries(con, hook_id=webhook_id, limit=limit)
    return [
        Delivery(
            id=r["id"],
            webhook_id=r["webhook_id"],
            event=r["event"],
            payload=json.loads(r["payload"]),
            outcome=DeliveryOutcome(r["outcome"]),
            attempts=r["attempts"],
            response_status=r["response_status"],
            error=r["error"],
            created_at=r["created_at"],
            finished_at=r["finished_at"],
        )
        for r in rows
    ]


# --- delivery -------------------------------------------------------------------


def enqueue(
    con: duckdb.DuckDBPyConnection, event: WebhookEvent, payload: dict[str, Any]
) -> list[PendingDelivery]:
    """Write a `pending` delivery per subscribed hook, inside the caller's transaction.

    Call `dispatch` with the result after the transaction has committed.
    """
    pending: list[PendingDelivery] = []
    for hook in hook_rows.for_event(con, event.value):
        body = {
            "event": event.value,
            "occurred_at": datetime.now(UTC).isoformat(),
            "pond_version": __version__,
            **payload,
        }
        delivery_id = hook_rows.insert_delivery(con, hook["id"], event.value, body)
        body["delivery_id"] = delivery_id
        pending.append(
            PendingDelivery(delivery_id, hook["id"], hook["url"], hook["secret"], event.value, body)
        )
    return pending


_threads: set[threading.Thread] = set()
_threads_guard = threading.Lock()


# Records one finished delivery: (connection, delivery id, outcome, attempts, status, error).
Settle = Callable[
    [duckdb.DuckDBPyConnection, int, DeliveryOutcome, int, int | None, str | None], None
]


def _settle_registry(
    con: duckdb.DuckDBPyConnection, delivery_id: int, outcome: DeliveryOutcome, attempts: int,
    status: int | None, error: str | None,
) -> None:
    hook_rows.settle_delivery(
        con, delivery_id, outcome=outcome.value, attempts=attempts, response_status=status,
        error=error,
    )


def dispatch(
    ws: Workspace, pending: list[PendingDelivery], *, settle: Settle | None = None
) -> None:
    """Send committed deliveries from background threads and return at once.

    Args:
        settle: where each outcome is recorded (default: the registry's
            `webhook_deliveries`); drift alerts pass their own.
    """
    for item in pending:
        thread = threading.Thread(
            target=_deliver_and_settle, args=(ws, item, settle or _settle_registry),
            name=f"pond-webhook-{item.delivery_id}",
        )
        with _threads_guard:
            _threads.add(thread)
        thread.start()


def wait_for_deliveries(timeout: float | None = None) -> bool:
    """Wait for this process's in-flight deliveries; True when all have finished."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        with _threads_guard:
            alive = [t for t in _threads if t.is_alive()]
            _threads.difference_update(t for t in list(_threads) if not t.is_alive())
        if not alive:
            return True
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            return False
        alive[0].join(remaining)


def _opener(url: str) -> urllib.request.OpenerDirector:
    host = urllib.parse.urlparse(url).hostname or ""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    # A proxy from the environment cannot reach this machine's own loopback.
    handlers = [urllib.request.ProxyHandler({})] if loopback else []
    return urllib.request.build_opener(*handlers)


def _post(item: PendingDelivery) -> tuple[int | None, str | None]:
    """One attempt: (HTTP status or None, error text or None)."""
    body = json.dumps(item.payload, sort_keys=True, default=str).encode()
    request = urllib.request.Request(
        item.url,
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            "User-Agent": f"Pond-Webhooks/{__version__}",
            "X-Pond-Event": item.event,
            "X-Pond-Delivery": str(item.delivery_id),
            SIGNATURE_HEADER: sign(item.secret, body),
        },
    )
    try:
        with _opener(item.url).open(request, timeout=TIMEOUT_S) as response:
            return response.status, None
    except urllib.error.HTTPError as exc:
        return exc.code, f"HTTP {exc.code} {exc.reason}"
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return None, f"{type(exc).__name__}: {reason}"


def _retryable(status: int | None) -> bool:
    # Connection errors, timeouts, 5xx, 408 and 429 may pass later; other 4xx will not.
    return status is None or status >= 500 or status in (408, 429)


def deliver(item: PendingDelivery) -> tuple[DeliveryOutcome, int, int | None, str | None]:
    """POST one delivery with retries; (outcome, attempts, last status, last error)."""
    attempts = 0
    status: int | None = None
    error: str | None = None
    for delay in (0.0, *RETRY_DELAYS):
        if delay:
            time.sleep(delay)
        attempts += 1
        status, error = _post(item)
        if status is not None and 200 <= status < 300:
            return DeliveryOutcome.DELIVERED, attempts, status, None
        if not _retryable(status):
            break
    return DeliveryOutcome.FAILED, attempts, status, error


def _deliver_and_settle(
    ws: Workspace, item: PendingDelivery, settle: Settle = _settle_registry
) -> None:
    try:
        outcome, attempts, status, error = deliver(item)
        with store.transaction(ws) as con:
            settle(con, item.delivery_id, outcome, attempts, status, error)
    except Exception:  # a background thread has no caller to raise to
        log.exception("webhook delivery %s could not be settled", item.delivery_id)


def deliver_pending(ws: Workspace, *, actor: User, older_than_s: float = 60.0) -> list[int]:
    """Send again deliveries left `pending` (say, by a killed process), and wait for them.

    Args:
        older_than_s: only deliveries at least this old, so ones in flight elsewhere are left.

    Returns:
        The ids of the deliveries sent.

    Raises:
        PermissionDenied: the actor is not an admin.
    """
    require(actor, "manage_webhooks")
    with store.read(ws) as con:
        rows = hook_rows.stale_pending(con, older_than_s)
    items = [
        PendingDelivery(r["id"], r["webhook_id"], r["url"], r["secret"], r["event"],
                        {**json.loads(r["payload"]), "delivery_id": r["id"]})
        for r in rows
    ]
    for item in items:
        _deliver_and_settle(ws, item)
    return [i.delivery_id for i in items]

