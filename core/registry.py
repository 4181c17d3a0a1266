"""The model registry: named models, their numbered versions with files,
metrics, params and lineage, the review workflow, aliases and the audit trail.

Lifecycle of a version (`VersionStatus`)::

    registered ──request──▶ pending_review ──approve──▶ approved ──archive──▶ archived
        │                         └─────────reject────▶ rejected ──archive──▶ archived
        └──────────────────archive────────────────────────────────────────▶ archived

A version is `registered` when training code stores it; an analyst then
requests review with a comment (training code may do both in one call with
`register_version(..., request_approval=True)`). A reviewer other than the
person who requested or registered it approves, or rejects with a reason.
Only an `approved` version can hold an alias (`champion`, `challenger`, …);
moving an alias releases its previous holder in the same transaction, and
archiving a version releases its aliases. `archived` is final, and so is a
rejection except for archiving: to try again, register a new version.

Every call validates its input first, then makes its change in one
transaction that re-reads the state (so concurrent reviewers cannot both
win), re-checks the acting account (so a reviewer disabled mid-request is
refused), writes exactly one audit row per change and queues webhook
deliveries, which are sent only after the commit.
"""

from __future__ import annotations

import functools
import importlib
import json
import math
import numbers
import pickletools
import re
import shutil
import subprocess
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from pathlib import Path, PurePosixPath
from typing import Any

import duckdb

from core import __version__, store, webhooks
from core.auth import BUILTIN_ACTORS, Role, User, require
from core.errors import (
    IllegalTransition,
    InvalidInput,
    NotFound,
    PermissionDenied,
    PondError,
    TamperedArtifact,
)
from core.store import Workspace, artifacts
from core.store import registry as rows
from core.store import users as user_rows
from core.webhooks import WebhookEvent

MODEL_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.\-]{0,127}$")
ALIAS_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_\-]{0,63}$")
FLAVOR_RE = re.compile(r"^[a-z][a-z0-9_.\-]{0,31}$")
TAG_KEY_RE = re.compile(r"^[A-Za-z0-9_.\-:/]{1,64}$")
FILE_NAME_RE = re.compile(r"^[A-Za-z0-9_.\-+/ ]{1,255}$")
MAX_TAG_VALUE = 256
MAX_PAGE = 500
# `name@latest` means the newest version that is not archived, as in MLflow.
LATEST = "latest"
DEFAULT_ALIAS = "champion"
# Native formats only: these suffixes always hold Python pickles.
PICKLE_SUFFIXES = frozenset({".pkl", ".pickle", ".joblib", ".pt", ".pth", ".ckpt"})


class VersionStatus(StrEnum):
    REGISTERED = "registered"
    PENDING_REVIEW = "pending_review"
    APPROVED = "approved"
    REJECTED = "rejected"
    ARCHIVED = "archived"

    def allowed_next(self) -> frozenset[VersionStatus]:
        """The statuses this one may change to."""
        return _TRANSITIONS[self]

    def can_become(self, other: VersionStatus) -> bool:
        return other in _TRANSITIONS[self]

    def can_hold_alias(self) -> bool:
        return self is VersionStatus.APPROVED

    def is_final(self) -> bool:
        return not _TRANSITIONS[self]


_TRANSITIONS: dict[VersionStatus, frozenset[VersionStatus]] = {
    VersionStatus.REGISTERED: frozenset({VersionStatus.PENDING_REVIEW, VersionStatus.ARCHIVED}),
    VersionStatus.PENDING_REVIEW: frozenset({VersionStatus.APPROVED, VersionStatus.REJECTED}),
    VersionStatus.APPROVED: frozenset({VersionStatus.ARCHIVED}),
    VersionStatus.REJECTED: frozenset({VersionStatus.ARCHIVED}),
    VersionStatus.ARCHIVED: frozenset(),
}

# What each status change is called in the audit log and in webhook events.
_ACTIONS: dict[VersionStatus, tuple[str, WebhookEvent]] = {
    VersionStatus.PENDING_REVIEW: ("approval_requested", WebhookEvent.APPROVAL_REQUESTED),
    VersionStatus.APPROVED: ("version_approved", WebhookEvent.VERSION_APPROVED),
    VersionStatus.REJECTED: ("version_rejected", WebhookEvent.VERSION_REJECTED),
    VersionStatus.ARCHIVED: ("version_archived", WebhookEvent.VERSION_ARCHIVED),
}


@dataclass(frozen=True)
class ModelFile:
    """One stored file of a version: its name inside the model and its content hash."""

    name: str
    sha256: str
    size_bytes: int


@dataclass(frozen=True)
class ApprovalRequest:
    id: int
    model: str
    version: int
    requested_by: str
    requested_at: datetime
    comment: str
    decision: str | None = None
    decided_by: str | None = None
    decided_at: datetime | None = None
    decision_comment: str | None = None

    @property
    def is_open(self) -> bool:
        return self.decision is None


@dataclass(frozen=True)
class ModelVersion:
    """A snapshot of one registered version."""

    model: str
    version: int
    status: VersionStatus
    flavor: str
    task: str | None
    description: str | None
    metrics: dict[str, float | None]
    params: dict[str, Any]
    lineage: dict[str, Any]
    tags: dict[str, str]
    files: tuple[ModelFile, ...]
    aliases: tuple[str, ...]
    parent_version: int | None
    created_by: str
    created_at: datetime
    status_changed_by: str
    status_changed_at: datetime
    requests: tuple[ApprovalRequest, ...] = ()

    @property
    def ref(self) -> str:
        """`name:version`, the form `resolve` and the CLI accept."""
        return f"{self.model}:{self.version}"

    @property
    def dataset(self) -> dict[str, Any] | None:
        """The lineage's dataset (name, version, content_sha256), if recorded."""
        return self.lineage.get("dataset")

    @property
    def last_request(self) -> ApprovalRequest | None:
        return self.requests[-1] if self.requests else None

    @property
    def requested_by(self) -> str | None:
        return self.last_request.requested_by if self.last_request else None

    @property
    def reviewed_by(self) -> str | None:
        return self.last_request.decided_by if self.last_request else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "version": self.version,
            "ref": self.ref,
            "status": self.status.value,
            "flavor": self.flavor,
            "task": self.task,
            "description": self.description,
            "metrics": self.metrics,
            "params": self.params,
            "lineage": self.lineage,
            "tags": self.tags,
            "files": [f.__dict__ for f in self.files],
            "aliases": list(self.aliases),
            "parent_version": self.parent_version,
            "created_by": self.created_by,
            "created_at": self.created_at,
            "status_changed_by": self.status_changed_by,
            "status_changed_at": self.status_changed_at,
            "requested_by": self.requested_by,
            "reviewed_by": self.reviewed_by,
            "requests": [r.__dict__ for r in self.requests],
        }


@dataclass(frozen=True)
class RegisteredModel:
    """A model with a summary of its versions, as listed."""

    name: str
    created_by: str
    created_at: datetime
    updated_at: datetime
    version_count: int
    latest_version: int | None
    latest_status: VersionStatus | None
    status_counts: dict[str, int]
    aliases: dict[str, int]


@dataclass(frozen=True)
class ModelPage:
    """One page of `list_models`; iterating it yields the models."""

    models: tuple[RegisteredModel, ...]
    total: int
    limit: int
    offset: int

    def __iter__(self) -> Iterator[RegisteredModel]:
        return iter(self.models)

    def __len__(self) -> int:
        return len(self.models)

    @property
    def has_next(self) -> bool:
        return self.offset + len(self.models) < self.total


@dataclass(frozen=True)
class ModelDetail:
    """A model and all of its versions, newest first."""

    model: RegisteredModel
    versions: tuple[ModelVersion, ...]


@dataclass(frozen=True)
class Alias:
    model: str
    alias: str
    version: int
    set_by: str
    set_at: datetime


@dataclass(frozen=True)
class DiffRow:
    """One key of a comparison; `delta` is right − left for numbers."""

    key: str
    left: Any
    right: Any
    changed: bool
    delta: float | None = None


@dataclass(frozen=True)
class VersionComparison:
    model: str
    left: ModelVersion
    right: ModelVersion
    metrics: tuple[DiffRow, ...]
    params: tuple[DiffRow, ...]
    lineage: tuple[DiffRow, ...]


@dataclass(frozen=True)
class AuditEntry:
    id: int
    occurred_at: datetime
    actor: str
    action: str
    entity_type: str
    entity_id: str
    from_state: str | None
    to_state: str | None
    comment: str | None
    details: dict[str, Any] | None = field(default=None)


# --- validation -------------------------------------------------------------------


def _check_model_name(name: str) -> str:
    if not isinstance(name, str) or not MODEL_NAME_RE.match(name):
        raise InvalidInput(
            f"model name {name!r} is not allowed: use up to 128 letters, digits, '.', '_' or '-',"
            " starting with a letter"
        )
    return name


def _check_alias(alias: str) -> str:
    if not isinstance(alias, str) or not ALIAS_RE.match(alias):
        raise InvalidInput(
            f"alias {alias!r} is not allowed: use up to 64 letters, digits, '_' or '-', "
            "starting with a letter (for example champion or challenger)"
        )
    if alias == LATEST:
        raise InvalidInput(
            f"'{LATEST}' is reserved: `name@{LATEST}` always means the newest version that is "
            "not archived; pick another alias"
        )
    return alias


def _check_page(fn: str, limit: int, offset: int) -> None:
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_PAGE:
        raise InvalidInput(
            f"The 'limit' parameter of {fn} must be an int in [1, {MAX_PAGE}]. Got {limit!r} "
            "instead."
        )
    if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
        raise InvalidInput(
            f"The 'offset' parameter of {fn} must be an int >= 0. Got {offset!r} instead."
        )


def _comment(comment: str | None, *, required: str | None = None) -> str | None:
    text = (comment or "").strip()
    if not text:
        if required:
            raise InvalidInput(required)
        return None
    return text


def _parse_status(status: str | VersionStatus) -> VersionStatus:
    try:
        return VersionStatus(status)
    except ValueError:
        raise InvalidInput(
            f"unknown status {status!r}; use one of {', '.join(s.value for s in VersionStatus)}"
        ) from None


def _metrics(model: str, metrics: Mapping[str, Any]) -> dict[str, float | None]:
    if not isinstance(metrics, Mapping):
        raise InvalidInput(f"metrics of model '{model}' must be a dict of name → number")
    out: dict[str, float | None] = {}
    for key, value in metrics.items():
        if not isinstance(key, str) or not key:
            raise InvalidInput(f"metric names of model '{model}' must be non-empty strings")
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise InvalidInput(
                f"metric '{key}' of model '{model}' must be a number; got {value!r}"
            )
        number = float(value)
        # JSON has no NaN or infinity; an undefined metric (AUC on one class) is stored as null.
        out[key] = number if math.isfinite(number) else None
    return out


def _jsonable(model: str, what: str, value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidInput(f"{what} of model '{model}' must be a dict; got {type(value).__name__}")
    try:
        # default=str keeps paths, dates and numpy scalars readable instead of failing.
        return json.loads(json.dumps(dict(value), default=str, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"{what} of model '{model}' cannot be stored as JSON: {exc}") from None


def _tags(model: str, tags: Mapping[str, Any] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in (tags or {}).items():
        if not isinstance(key, str) or not TAG_KEY_RE.match(key):
            raise InvalidInput(
                f"tag {key!r} of model '{model}' is not allowed: use up to 64 letters, digits "
                "and . _ - : /"
            )
        text = "" if value is None else str(value)
        if len(text) > MAX_TAG_VALUE:
            raise InvalidInput(
                f"tag '{key}' of model '{model}' is {len(text)} characters; at most "
                f"{MAX_TAG_VALUE} are allowed"
            )
        out[key] = text
    return out


# Every pickle opcode byte; a file whose third byte is not one is not a pickle.
_PICKLE_OPCODES = frozenset(
    ord(op.code) if isinstance(op.code, str) else op.code for op in pickletools.opcodes
)


def _looks_like_pickle(path: Path) -> bool:
    with open(path, "rb") as fh:
        head = fh.read(4)
    # Pickle protocols 2–5 open with PROTO (0x80), the protocol number, then an
    # opcode. The opcode check keeps a safetensors file, whose 8-byte header
    # length may happen to start with 0x80 0x02, from being mistaken for one.
    if len(head) >= 3 and head[0] == 0x80 and 2 <= head[1] <= 5 and head[2] in _PICKLE_OPCODES:
        return True
    # torch.save writes a zip whose payload is a pickle ("…/data.pkl").
    if head == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(path) as zf:
                return any(n.endswith(".pkl") for n in zf.namelist())
        except zipfile.BadZipFile:
            return False
    return False


def _files(model: str, artifact_files: Mapping[str, str | Path]) -> dict[str, Path]:
    if not isinstance(artifact_files, Mapping) or not artifact_files:
        raise InvalidInput(
            f"register at least one file for model '{model}': pass artifact_files as "
            "{'model.txt': Path(...)}"
        )
    out: dict[str, Path] = {}
    for name, raw in artifact_files.items():
        pure = PurePosixPath(name) if isinstance(name, str) else None
        if (
            pure is None
            or not FILE_NAME_RE.match(name)
            or pure.is_absolute()
            or any(part in ("", ".", "..") for part in name.split("/"))
        ):
            raise InvalidInput(
                f"file name {name!r} of model '{model}' is not allowed: use a relative path like "
                "'model.txt' or 'adapter/adapter_config.json' without '..'"
            )
        path = Path(raw)
        if not path.is_file():
            raise InvalidInput(f"file '{name}' of model '{model}' does not exist at {path}")
        if path.suffix.lower() in PICKLE_SUFFIXES or _looks_like_pickle(path):
            raise InvalidInput(
                f"file '{name}' of model '{model}' is a Python pickle, which can run code when "
                "loaded; store the model in its library's native format instead (LightGBM "
                "text model, safetensors for torch) and leave pickled files out"
            )
        out[name] = path
    return out


def _lineage(
    model: str, lineage: Mapping[str, Any] | None, parent_version: int | None
) -> dict[str, Any]:
    data = _jsonable(model, "lineage", lineage)
    dataset = data.get("dataset")
    if dataset is not None:
        if not isinstance(dataset, dict) or not {"name", "version"} <= set(dataset):
            raise InvalidInput(
                f"lineage.dataset of model '{model}' must be a dict with name, version and "
                f"content_sha256; got {dataset!r}"
            )
        if isinstance(dataset["version"], bool) or not isinstance(dataset["version"], int):
            raise InvalidInput(
                f"lineage.dataset.version of model '{model}' must be an int; "
                f"got {dataset['version']!r}"
            )
    given_parent = data.get("parent_version")
    if given_parent is not None and parent_version is not None and given_parent != parent_version:
        raise InvalidInput(
            f"lineage.parent_version ({given_parent}) and parent_version ({parent_version}) of "
            f"model '{model}' disagree; pass one"
        )
    data["parent_version"] = parent_version if parent_version is not None else given_parent
    data.setdefault("package_version", __version__)
    if "git_commit" not in data:
        data["git_commit"] = git_commit()
    return data


@functools.lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The commit of the Pond checkout this process runs from, or None when unknown.

    Best effort: no git, no repository, no commit yet or a slow disk all give None.
    """
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=2,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    sha = result.stdout.strip()
    return sha if result.returncode == 0 and re.fullmatch(r"[0-9a-f]{40,64}", sha) else None


def make_lineage(
    *,
    dataset: Mapping[str, Any] | None = None,
    feature_view: Mapping[str, Any] | None = None,
    training_config: Mapping[str, Any] | None = None,
    search_space: Mapping[str, Any] | None = None,
    optuna_study: Mapping[str, Any] | str | None = None,
    parent_version: int | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A lineage dict with the keys the registry shows; training code may add more.

    Args:
        dataset: {"name", "version", "content_sha256"} of the training data.
        feature_view: {"name", "version"} when a feature view was used.
        training_config: what the run was asked to do (target, budget, …).
        search_space: the hyper-parameter space searched.
        optuna_study: the study's name and storage, or just its name.
        parent_version: the version this one retrains.

    Returns:
        The dict to pass as `register_version(lineage=...)`; package version and
        git commit are filled in at registration.
    """
    return {
        "dataset": dict(dataset) if dataset is not None else None,
        "feature_view": dict(feature_view) if feature_view is not None else None,
        "training_config": dict(training_config or {}),
        "search_space": dict(search_space or {}),
        "optuna_study": optuna_study,
        "parent_version": parent_version,
        **extra,
    }


# --- assembling snapshots ------------------------------------------------------------


def _request(row: dict[str, Any]) -> ApprovalRequest:
    return ApprovalRequest(
        id=row["id"],
        model=row["model_name"],
        version=row["version"],
        requested_by=row["requested_by"],
        requested_at=row["requested_at"],
        comment=row["comment"],
        decision=row["decision"],
        decided_by=row["decided_by"],
        decided_at=row["decided_at"],
        decision_comment=row["decision_comment"],
    )


def _versions(
    con: duckdb.DuckDBPyConnection, model: str, version: int | None = None
) -> list[ModelVersion]:
    """Snapshots of one version or of all versions of `model` (newest first)."""
    if version is None:
        version_rows = rows.list_versions(con, model)
    else:
        one = rows.get_version(con, model, version)
        version_rows = [one] if one else []
    if not version_rows:
        return []
    files: dict[int, list[ModelFile]] = {}
    for f in rows.files_of(con, model, version):
        files.setdefault(f["version"], []).append(
            ModelFile(f["name"], f["sha256"], f["size_bytes"])
        )
    tags: dict[int, dict[str, str]] = {}
    for t in rows.tags_of(con, model, version):
        tags.setdefault(t["version"], {})[t["key"]] = t["value"]
    aliases: dict[int, list[str]] = {}
    for a in rows.aliases_of_model(con, model):
        aliases.setdefault(a["version"], []).append(a["alias"])
    requests: dict[int, list[ApprovalRequest]] = {}
    for r in rows.requests_of(con, model, version):
        requests.setdefault(r["version"], []).append(_request(r))
    return [
        ModelVersion(
            model=r["model_name"],
            version=r["version"],
            status=VersionStatus(r["status"]),
            flavor=r["flavor"],
            task=r["task"],
            description=r["description"],
            metrics=json.loads(r["metrics"]),
            params=json.loads(r["params"]),
            lineage=json.loads(r["lineage"]),
            tags=tags.get(r["version"], {}),
            files=tuple(files.get(r["version"], [])),
            aliases=tuple(aliases.get(r["version"], [])),
            parent_version=r["parent_version"],
            created_by=r["created_by"],
            created_at=r["created_at"],
            status_changed_by=r["status_changed_by"],
            status_changed_at=r["status_changed_at"],
            requests=tuple(requests.get(r["version"], [])),
        )
        for r in version_rows
    ]


def _summary(row: dict[str, Any]) -> RegisteredModel:
    return RegisteredModel(
        name=row["name"],
        created_by=row["created_by"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        version_count=row["version_count"],
        latest_version=row["latest_version"],
        latest_status=VersionStatus(row["latest_status"]) if row["latest_status"] else None,
        status_counts=json.loads(row["status_counts"]) if row["status_counts"] else {},
        aliases=json.loads(row["aliases"]) if row["aliases"] else {},
    )


def _require_model(con: duckdb.DuckDBPyConnection, model: str) -> dict[str, Any]:
    row = rows.get_model(con, model)
    if row is None:
        raise NotFound(
            f"there is no registered model '{model}'; `pond models --search {model[:20]}` "
            "lists similar names"
        )
    return row


def _version_number(con: duckdb.DuckDBPyConnection, model: str, ref: int | str) -> int:
    """The version number that `ref` (a number, digits, an alias or `latest`) names."""
    _require_model(con, model)
    if isinstance(ref, int) and not isinstance(ref, bool):
        number: int | None = ref
    elif isinstance(ref, str) and ref.strip().isdigit():
        number = int(ref.strip())
    elif isinstance(ref, str) and ref == LATEST:
        number = rows.latest_version(con, model, exclude_status=[VersionStatus.ARCHIVED.value])
        if number is None:
            raise NotFound(f"model '{model}' has no version that is not archived")
        return number
    elif isinstance(ref, str) and ALIAS_RE.match(ref):
        number = rows.alias_target(con, model, ref)
        if number is None:
            held = [a["alias"] for a in rows.aliases_of_model(con, model)]
            raise NotFound(
                f"model '{model}' has no alias '{ref}'; "
                + (f"its aliases are {', '.join(held)}" if held else "it has no aliases yet")
            )
        return number
    else:
        raise InvalidInput(
            f"{ref!r} is neither a version number nor an alias of model '{model}'"
        )
    if rows.get_version(con, model, number) is None:
        have = rows.version_numbers(con, model)
        span = f"its versions are 1–{max(have)}" if have else "it has no versions"
        raise NotFound(f"model '{model}' has no version {number}; {span}")
    return number


def _live_actor(con: duckdb.DuckDBPyConnection, actor: User, action: str) -> User:
    """The actor as the database has it now, allowed to do `action`.

    Re-reading inside the transaction means an account disabled, or demoted,
    after the caller signed in is refused.
    """
    row = user_rows.get(con, actor.name)
    if row is None:
        if actor in BUILTIN_ACTORS:
            return actor
        raise PermissionDenied(f"user '{actor.name}' no longer exists")
    fresh = User(name=row[0], role=Role(row[1]), disabled=row[2], created_at=row[3])
    require(fresh, action)
    return fresh


def _transition(
    con: duckdb.DuckDBPyConnection, model: str, version: int, to: VersionStatus
) -> ModelVersion:
    """The current snapshot, after checking that it may move to `to`."""
    current = _versions(con, model, version)[0]
    if current.status is to:
        by = current.status_changed_by
        raise IllegalTransition(
            f"model '{model}' version {version} is already {to.value} "
            f"(by {by} at {current.status_changed_at:%Y-%m-%d %H:%M})"
        )
    if not current.status.can_become(to):
        allowed = sorted(s.value for s in current.status.allowed_next())
        then = (
            f"from {current.status.value} it may only become {' or '.join(allowed)}"
            if allowed
            else f"{current.status.value} is final"
        )
        raise IllegalTransition(
            f"model '{model}' version {version} is {current.status.value}, so it cannot become "
            f"{to.value}; {then}"
        )
    return current


def _payload(version: ModelVersion, actor: User, **extra: Any) -> dict[str, Any]:
    return {
        "model": version.model,
        "version": version.version,
        "actor": actor.name,
        **extra,
    }


# --- registering ---------------------------------------------------------------------


def register_version(
    ws: Workspace,
    model_name: str,
    artifact_files: Mapping[str, str | Path],
    *,
    metrics: Mapping[str, Any],
    params: Mapping[str, Any],
    lineage: Mapping[str, Any],
    actor: User,
    flavor: str,
    task: str | None = None,
    parent_version: int | None = None,
    tags: Mapping[str, Any] | None = None,
    description: str | None = None,
    request_approval: bool = False,
    comment: str | None = None,
) -> ModelVersion:
    """Store a trained model's files and record them as the model's next version.

    The files are copied into the artifact store first (content-addressed, each
    sha256 recorded), then the version, its files, tags and audit row are
    committed in one transaction. A failure before the commit leaves no
    version; files already copied stay as orphans that `pond doctor` reports.

    Args:
        model_name: the model; created on its first version.
        artifact_files: file name inside the model (e.g. "model.txt",
            "adapter/adapter_model.safetensors") → path on disk. Pickles are refused.
        metrics: metric name → number (non-finite numbers are stored as null).
        params: hyper-parameters (any JSON-able values).
        lineage: see `make_lineage`; package version and git commit are added.
        actor: the analyst (or admin) registering.
        flavor: how to load it, e.g. "lightgbm" or "transformers".
        task: e.g. "binary_classification", "regression", "text_generation".
        parent_version: the version of the same model this one retrains.
        tags: free key → value labels, searchable with `list_models(tag=...)`.
        description: a note shown with the version.
        request_approval: also request review, in the same transaction.
        comment: the request's comment (required with `request_approval`).

    Returns:
        The new version (status `registered`, or `pending_review` when requested).

    Raises:
        PermissionDenied: the actor may not register (or request approval).
        InvalidInput: a bad name, file, metric, tag or lineage entry.
        NotFound: `parent_version` does not exist.
    """
    require(actor, "register")
    _check_model_name(model_name)
    if request_approval:
        require(actor, "request_approval")
        comment = _comment(
            comment, required=f"say why model '{model_name}' should be approved: pass a comment"
        )
    if not isinstance(flavor, str) or not FLAVOR_RE.match(flavor):
        raise InvalidInput(
            f"flavor {flavor!r} of model '{model_name}' is not allowed: use a short lowercase "
            "name such as lightgbm or transformers"
        )
    if task is not None and (not isinstance(task, str) or not 0 < len(task) <= 64):
        raise InvalidInput(f"task of model '{model_name}' must be a short name; got {task!r}")
    if parent_version is not None and (
        isinstance(parent_version, bool) or not isinstance(parent_version, int)
    ):
        raise InvalidInput(
            f"parent_version of model '{model_name}' must be an int; got {parent_version!r}"
        )
    files = _files(model_name, artifact_files)
    clean_metrics = _metrics(model_name, metrics)
    clean_params = _jsonable(model_name, "params", params)
    clean_lineage = _lineage(model_name, lineage, parent_version)
    clean_tags = _tags(model_name, tags)
    dataset = clean_lineage.get("dataset") or {}

    # Copy the bytes before taking the write lock: large files must not block others.
    stored: list[tuple[str, artifacts.Artifact]] = []
    for name, path in files.items():
        try:
            stored.append((name, artifacts.put_file(ws, path)))
        except OSError as exc:
            raise PondError(
                f"could not store file '{name}' of model '{model_name}' from {path}: {exc}; "
                "nothing was registered"
            ) from exc

    with store.transaction(ws) as con:
        live = _live_actor(con, actor, "register")
        if request_approval:
            require(live, "request_approval")
        new_model = rows.get_model(con, model_name) is None
        if new_model:
            rows.insert_model(con, model_name, live.name)
        parent = clean_lineage.get("parent_version")
        if parent is not None and rows.get_version(con, model_name, parent) is None:
            raise NotFound(
                f"model '{model_name}' has no version {parent} to be the parent of a retrain"
            )
        number = rows.next_version(con, model_name)
        rows.insert_version(
            con,
            {
                "model_name": model_name,
                "version": number,
                "status": VersionStatus.REGISTERED.value,
                "task": task,
                "flavor": flavor,
                "description": _comment(description),
                "metrics": clean_metrics,
                "params": clean_params,
                "lineage": clean_lineage,
                "dataset_name": dataset.get("name"),
                "dataset_version": dataset.get("version"),
                "parent_version": parent,
                "created_by": live.name,
            },
        )
        rows.insert_files(
            con, model_name, number, [(n, a.sha256, a.size_bytes) for n, a in stored]
        )
        rows.insert_artifacts(
            con, {(a.sha256, a.size_bytes) for _, a in stored}, kind="model_file",
            created_by=live.name,
        )
        rows.insert_tags(con, model_name, number, clean_tags)
        store.append_audit(
            con, actor=live.name, action="version_registered", entity_type=rows.ENTITY_VERSION,
            entity_id=f"{model_name}:{number}", to_state=VersionStatus.REGISTERED.value,
            comment=_comment(description),
            details={
                "model": model_name, "version": number, "new_model": new_model,
                "flavor": flavor, "files": {n: a.sha256 for n, a in stored},
                "dataset": clean_lineage.get("dataset"), "parent_version": parent,
            },
        )
        pending = webhooks.enqueue(
            con, WebhookEvent.VERSION_REGISTERED,
            {"model": model_name, "version": number, "actor": live.name,
             "to_status": VersionStatus.REGISTERED.value, "metrics": clean_metrics},
        )
        if request_approval:
            assert comment is not None
            pending += _request_in(con, model_name, number, live, comment)
        version = _versions(con, model_name, number)[0]
    webhooks.dispatch(ws, pending)
    return version


# --- reading --------------------------------------------------------------------------


def get_version(ws: Workspace, model: str, version_or_alias: int | str) -> ModelVersion:
    """One version by number (or digits), alias, or `latest`.

    Raises:
        NotFound: no such model, version or alias (the message says what exists).
        InvalidInput: `version_or_alias` is neither a number nor an alias name.
    """
    with store.read(ws) as con:
        number = _version_number(con, model, version_or_alias)
        return _versions(con, model, number)[0]


def parse_ref(ref: str) -> tuple[str, str | None]:
    """Split "name@alias" / "name:3" / "name" into (model, alias-or-version-or-None).

    Raises:
        InvalidInput: an empty part, or a malformed reference.
    """
    if not isinstance(ref, str) or not ref.strip():
        raise InvalidInput("name a model: NAME, NAME:VERSION or NAME@ALIAS")
    ref = ref.strip()
    for sep in ("@", ":"):
        if sep in ref:
            model, _, rest = ref.partition(sep)
            if not model or not rest or (sep == ":" and not rest.isdigit()):
                raise InvalidInput(
                    f"model reference {ref!r} is malformed; use NAME, NAME:VERSION (a number) "
                    "or NAME@ALIAS"
                )
            return _check_model_name(model), rest
    return _check_model_name(ref), None


def resolve(ws: Workspace, ref: str) -> ModelVersion:
    """The version a reference names: "name@alias", "name:3", or a bare "name".

    A bare name means the `champion` alias when the model has one, else the
    newest version that is not archived (MLflow's "latest").

    Raises:
        InvalidInput: a malformed reference. NotFound: nothing matches.
    """
    model, rest = parse_ref(ref)
    with store.read(ws) as con:
        if rest is None:
            _require_model(con, model)
            rest = DEFAULT_ALIAS if rows.alias_target(con, model, DEFAULT_ALIAS) else LATEST
        number = _version_number(con, model, rest)
        return _versions(con, model, number)[0]


def get_model(ws: Workspace, name: str) -> ModelDetail:
    """A model with its summary and every version, newest first.

    Raises:
        NotFound: no such model.
    """
    with store.read(ws) as con:
        model_row = _require_model(con, name)
        versions = _versions(con, name)
        alias_rows = rows.aliases_of_model(con, name)
    counts: dict[str, int] = {}
    for v in versions:
        counts[v.status.value] = counts.get(v.status.value, 0) + 1
    latest = versions[0] if versions else None
    summary = RegisteredModel(
        name=name,
        created_by=model_row["created_by"],
        created_at=model_row["created_at"],
        updated_at=max(
            [model_row["created_at"]]
            + [max(v.created_at, v.status_changed_at) for v in versions]
        ),
        version_count=len(versions),
        latest_version=latest.version if latest else None,
        latest_status=latest.status if latest else None,
        status_counts=counts,
        aliases={a["alias"]: a["version"] for a in alias_rows},
    )
    return ModelDetail(summary, tuple(versions))


def list_models(
    ws: Workspace,
    *,
    search: str | None = None,
    status: str | VersionStatus | None = None,
    owner: str | None = None,
    tag: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> ModelPage:
    """One page of registered models, by name, filtered in SQL.

    Args:
        search: part of the name, case-insensitive.
        status: only models with at least one version in this status.
        owner: only models created by this user.
        tag: "key" or "key=value": only models with a version carrying it.
        limit: page size, 1–500.
        offset: models to skip.

    Returns:
        The page and the total number of matching models.

    Raises:
        InvalidInput: unknown status, bad tag, or a limit/offset out of range.
    """
    _check_page("list_models", limit, offset)
    parsed_status = _parse_status(status).value if status else None
    parsed_tag: tuple[str, str | None] | None = None
    if tag:
        key, sep, value = tag.partition("=")
        if not TAG_KEY_RE.match(key):
            raise InvalidInput(f"tag filter {tag!r} must be KEY or KEY=VALUE")
        parsed_tag = (key, value if sep else None)
    with store.read(ws) as con:
        found, total = rows.list_models(
            con, search=(search or "").strip() or None, status=parsed_status,
            owner=(owner or "").strip() or None, tag=parsed_tag, limit=limit, offset=offset,
        )
    return ModelPage(tuple(_summary(r) for r in found), total, limit, offset)


def list_aliases(ws: Workspace, alias: str | None = None) -> list[Alias]:
    """Every alias of every model, or only those named `alias` (e.g. serving's `champion`)."""
    with store.read(ws) as con:
        found = rows.all_aliases(con, alias)
    return [Alias(a["model_name"], a["alias"], a["version"], a["set_by"], a["set_at"])
            for a in found]


def pending_reviews(ws: Workspace, *, limit: int = 100, offset: int = 0) -> list[ApprovalRequest]:
    """Open approval requests, oldest first, for reviewers' queues.

    Raises:
        InvalidInput: limit/offset out of range.
    """
    _check_page("pending_reviews", limit, offset)
    with store.read(ws) as con:
        found, _ = rows.pending_requests(con, limit=limit, offset=offset)
    return [_request(r) for r in found]


def version_files(ws: Workspace, model: str, version: int | str) -> dict[str, Path]:
    """The stored files of a version (name → path in the artifact store), every hash re-checked.

    The paths are named by hash; use `export_version` for a folder with the
    original names (what `from_pretrained` expects).

    Raises:
        NotFound: no such model or version.
        TamperedArtifact: a file is missing or no longer matches its recorded sha256.
    """
    found = get_version(ws, model, version)
    out: dict[str, Path] = {}
    for f in found.files:
        try:
            out[f.name] = artifacts.verified_path(ws, f.sha256)
        except TamperedArtifact:
            raise TamperedArtifact(
                f"file '{f.name}' of model '{model}' version {found.version} was changed on disk "
                f"after it was registered (recorded sha256 {f.sha256[:12]}…); refusing to load "
                "it. Restore it from a backup or register the model again"
            ) from None
        except NotFound:
            raise TamperedArtifact(
                f"file '{f.name}' of model '{model}' version {found.version} is missing from the "
                f"artifact store (sha256 {f.sha256[:12]}…); refusing to load it. Run "
                "`pond doctor`, then restore it from a backup or register the model again"
            ) from None
    return out


def export_version(ws: Workspace, model: str, version: int | str, dest: str | Path) -> Path:
    """Copy a version's verified files into `dest` under their own names.

    Returns:
        `dest`, ready for a loader such as `lightgbm.Booster(model_file=...)` or
        `from_pretrained(dest)`.

    Raises:
        NotFound: no such model or version. TamperedArtifact: see `version_files`.
    """
    dest = Path(dest)
    for name, src in version_files(ws, model, version).items():
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, target)
    return dest


def version_evaluations(ws: Workspace, model: str, version: int) -> list[Any] | None:
    """Evaluations stored on a version by `core.evaluation`, or None where that module
    (or its `list_evaluations`) is not available."""
    try:
        module = importlib.import_module("core.evaluation")
    except ImportError:
        return None
    reader = getattr(module, "list_evaluations", None)
    if reader is None:
        return None
    return list(reader(ws, model, version))


# --- review workflow -------------------------------------------------------------------


def _request_in(
    con: duckdb.DuckDBPyConnection, model: str, version: int, actor: User, comment: str
) -> list[webhooks.PendingDelivery]:
    current = _transition(con, model, version, VersionStatus.PENDING_REVIEW)
    rows.insert_request(con, model, version, actor.name, comment)
    rows.set_status(con, model, version, VersionStatus.PENDING_REVIEW.value, actor.name)
    store.append_audit(
        con, actor=actor.name, action="approval_requested", entity_type=rows.ENTITY_VERSION,
        entity_id=f"{model}:{version}", from_state=current.status.value,
        to_state=VersionStatus.PENDING_REVIEW.value, comment=comment,
        details={"model": model, "version": version},
    )
    return webhooks.enqueue(
        con, WebhookEvent.APPROVAL_REQUESTED,
        _payload(current, actor, from_status=current.status.value,
                 to_status=VersionStatus.PENDING_REVIEW.value, comment=comment),
    )


def request_approval(
    ws: Workspace, model: str, version: int | str, *, actor: User, comment: str
) -> ModelVersion:
    """Ask reviewers to approve a `registered` version.

    Raises:
        PermissionDenied: the actor is not an analyst or admin, or is disabled.
        InvalidInput: no comment.
        NotFound: no such model or version.
        IllegalTransition: the version is not `registered`.
    """
    require(actor, "request_approval")
    _check_model_name(model)
    text = _comment(
        comment, required=f"say why model '{model}' version {version} should be approved: "
        "pass a comment"
    )
    assert text is not None
    with store.transaction(ws) as con:
        live = _live_actor(con, actor, "request_approval")
        number = _version_number(con, model, version)
        pending = _request_in(con, model, number, live, text)
        result = _versions(con, model, number)[0]
    webhooks.dispatch(ws, pending)
    return result


def _decide(
    ws: Workspace, model: str, version: int | str, actor: User, comment: str | None,
    to: VersionStatus,
) -> ModelVersion:
    require(actor, "review")
    _check_model_name(model)
    with store.transaction(ws) as con:
        live = _live_actor(con, actor, "review")
        number = _version_number(con, model, version)
        current = _transition(con, model, number, to)
        request = rows.open_request(con, model, number)
        if request is None:  # a pending version always has one; guard against hand edits
            raise IllegalTransition(f"model '{model}' version {number} has no open request")
        if live.name in (request["requested_by"], current.created_by):
            who = (
                "requested approval of" if live.name == request["requested_by"] else "registered"
            )
            raise PermissionDenied(
                f"user '{live.name}' {who} model '{model}' version {number}, so may not review "
                "it; another reviewer must decide"
            )
        decision = "approved" if to is VersionStatus.APPROVED else "rejected"
        rows.decide_request(con, request["id"], decision, live.name, comment or "")
        rows.set_status(con, model, number, to.value, live.name)
        action, event = _ACTIONS[to]
        store.append_audit(
            con, actor=live.name, action=action, entity_type=rows.ENTITY_VERSION,
            entity_id=f"{model}:{number}", from_state=current.status.value, to_state=to.value,
            comment=comment, details={"model": model, "version": number,
                                      "request_id": request["id"],
                                      "requested_by": request["requested_by"]},
        )
        pending = webhooks.enqueue(
            con, event, _payload(current, live, from_status=current.status.value,
                                 to_status=to.value, comment=comment),
        )
        result = _versions(con, model, number)[0]
    webhooks.dispatch(ws, pending)
    return result


def approve(
    ws: Workspace, model: str, version: int | str, *, actor: User, comment: str | None = None
) -> ModelVersion:
    """Approve a version waiting for review.

    Raises:
        PermissionDenied: the actor is not a reviewer or admin, is disabled, or
            registered or requested this version.
        NotFound: no such model or version.
        IllegalTransition: the version is not `pending_review` (for example
            already approved by someone else).
    """
    return _decide(ws, model, version, actor, _comment(comment), VersionStatus.APPROVED)


def reject(
    ws: Workspace, model: str, version: int | str, *, actor: User, comment: str
) -> ModelVersion:
    """Reject a version waiting for review; the comment (the reason) is required.

    Raises:
        InvalidInput: no reason given.
        PermissionDenied, NotFound, IllegalTransition: as for `approve`.
    """
    reason = _comment(
        comment, required=f"say why model '{model}' version {version} is rejected: pass a comment"
    )
    return _decide(ws, model, version, actor, reason, VersionStatus.REJECTED)


# --- aliases and archiving --------------------------------------------------------------


def set_alias(
    ws: Workspace,
    model: str,
    alias: str,
    version: int | str,
    *,
    actor: User,
    comment: str | None = None,
) -> ModelVersion:
    """Point `alias` at an approved version, releasing its previous holder in the same
    transaction. Setting an alias to the version it already names changes nothing.

    Args:
        version: a number or another alias (`set_alias(m, "champion", "challenger")`
            promotes the challenger).

    Returns:
        The version now holding the alias.

    Raises:
        PermissionDenied: the actor is not a reviewer or admin, or is disabled.
        InvalidInput: a bad alias name.
        NotFound: no such model, version or alias.
        IllegalTransition: the version is not approved.
    """
    require(actor, "set_alias")
    _check_model_name(model)
    _check_alias(alias)
    pending: list[webhooks.PendingDelivery] = []
    with store.transaction(ws) as con:
        live = _live_actor(con, actor, "set_alias")
        number = _version_number(con, model, version)
        current = _versions(con, model, number)[0]
        if not current.status.can_hold_alias():
            raise IllegalTransition(
                f"model '{model}' version {number} is {current.status.value}; only an approved "
                f"version can hold the alias '{alias}'"
                + (" (request approval first)" if current.status is VersionStatus.REGISTERED
                   else "")
            )
        previous = rows.alias_target(con, model, alias)
        if previous != number:
            rows.put_alias(con, model, alias, number, live.name)
            store.append_audit(
                con, actor=live.name, action="alias_set", entity_type=rows.ENTITY_ALIAS,
                entity_id=f"{model}@{alias}",
                from_state=None if previous is None else str(previous), to_state=str(number),
                comment=_comment(comment),
                details={"model": model, "alias": alias, "version": number,
                         "previous_version": previous},
            )
            pending = webhooks.enqueue(
                con, WebhookEvent.ALIAS_MOVED,
                _payload(current, live, alias=alias, previous_version=previous,
                         comment=_comment(comment)),
            )
        result = _versions(con, model, number)[0]
    webhooks.dispatch(ws, pending)
    return result


def remove_alias(ws: Workspace, model: str, alias: str, *, actor: User) -> int:
    """Delete an alias.

    Returns:
        The version it pointed at.

    Raises:
        PermissionDenied: the actor is not a reviewer or admin, or is disabled.
        NotFound: no such model or alias.
    """
    require(actor, "set_alias")
    _check_model_name(model)
    with store.transaction(ws) as con:
        live = _live_actor(con, actor, "set_alias")
        _require_model(con, model)
        previous = rows.alias_target(con, model, alias)
        if previous is None:
            held = [a["alias"] for a in rows.aliases_of_model(con, model)]
            raise NotFound(
                f"model '{model}' has no alias '{alias}'; "
                + (f"its aliases are {', '.join(held)}" if held else "it has no aliases")
            )
        rows.delete_alias(con, model, alias)
        store.append_audit(
            con, actor=live.name, action="alias_removed", entity_type=rows.ENTITY_ALIAS,
            entity_id=f"{model}@{alias}", from_state=str(previous), to_state=None,
            details={"model": model, "alias": alias, "previous_version": previous},
        )
        pending = webhooks.enqueue(
            con, WebhookEvent.ALIAS_MOVED,
            {"model": model, "version": None, "alias": alias, "previous_version": previous,
             "actor": live.name},
        )
    webhooks.dispatch(ws, pending)
    return previous


def archive(
    ws: Workspace, model: str, version: int | str, *, actor: User, comment: str | None = None
) -> ModelVersion:
    """Archive a registered, approved or rejected version; its aliases are released in the
    same transaction (one audit row each).

    Raises:
        PermissionDenied: the actor is not a reviewer or admin, or is disabled.
        NotFound: no such model or version.
        IllegalTransition: the version is pending review or already archived.
    """
    require(actor, "archive")
    _check_model_name(model)
    text = _comment(comment)
    with store.transaction(ws) as con:
        live = _live_actor(con, actor, "archive")
        number = _version_number(con, model, version)
        current = _transition(con, model, number, VersionStatus.ARCHIVED)
        for alias in current.aliases:
            rows.delete_alias(con, model, alias)
            store.append_audit(
                con, actor=live.name, action="alias_released", entity_type=rows.ENTITY_ALIAS,
                entity_id=f"{model}@{alias}", from_state=str(number), to_state=None,
                comment=f"released because version {number} was archived",
                details={"model": model, "alias": alias, "previous_version": number},
            )
        rows.set_status(con, model, number, VersionStatus.ARCHIVED.value, live.name)
        store.append_audit(
            con, actor=live.name, action="version_archived", entity_type=rows.ENTITY_VERSION,
            entity_id=f"{model}:{number}", from_state=current.status.value,
            to_state=VersionStatus.ARCHIVED.value, comment=text,
            details={"model": model, "version": number, "released_aliases": list(current.aliases)},
        )
        pending = webhooks.enqueue(
            con, WebhookEvent.VERSION_ARCHIVED,
            _payload(current, live, from_status=current.status.value,
                     to_status=VersionStatus.ARCHIVED.value, comment=text,
                     released_aliases=list(current.aliases)),
        )
        result = _versions(con, model, number)[0]
    webhooks.dispatch(ws, pending)
    return result


# --- comparing and auditing ----------------------------------------------------------


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for key, inner in value.items():
            out.update(_flatten(inner, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: value} if prefix else {}


def _diff(left: dict[str, Any], right: dict[str, Any], *, numeric: bool) -> tuple[DiffRow, ...]:
    out = []
    for key in sorted(set(left) | set(right)):
        a, b = left.get(key), right.get(key)
        delta = None
        if numeric and isinstance(a, int | float) and isinstance(b, int | float):
            delta = float(b) - float(a)
        out.append(DiffRow(key, a, b, a != b, delta))
    return tuple(out)


def compare(ws: Workspace, model: str, v1: int | str, v2: int | str) -> VersionComparison:
    """Two versions side by side: metrics (with deltas), params and lineage (flattened keys).

    Raises:
        NotFound: no such model, version or alias.
    """
    with store.read(ws) as con:
        left = _versions(con, model, _version_number(con, model, v1))[0]
        right = _versions(con, model, _version_number(con, model, v2))[0]
    return VersionComparison(
        model=model,
        left=left,
        right=right,
        metrics=_diff(left.metrics, right.metrics, numeric=True),
        params=_diff(_flatten(left.params), _flatten(right.params), numeric=False),
        lineage=_diff(_flatten(left.lineage), _flatten(right.lineage), numeric=False),
    )


def audit_trail(
    ws: Workspace, model: str | None = None, *, limit: int = 200, offset: int = 0
) -> list[AuditEntry]:
    """The registry's audit rows, newest first: registrations, requests, decisions,
    alias moves and archiving, for one model or all.

    Raises:
        NotFound: `model` is given and does not exist.
        InvalidInput: limit/offset out of range.
    """
    _check_page("audit_trail", limit, offset)
    with store.read(ws) as con:
        if model is not None:
            _require_model(con, model)
        found = rows.audit_rows(con, model, limit=limit, offset=offset)
    return [
        AuditEntry(
            id=r["id"], occurred_at=r["occurred_at"], actor=r["actor"], action=r["action"],
            entity_type=r["entity_type"], entity_id=r["entity_id"], from_state=r["from_state"],
            to_state=r["to_state"], comment=r["comment"],
            details=json.loads(r["details"]) if r["details"] else None,
        )
        for r in found
    ]
