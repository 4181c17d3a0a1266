"""The model registry: lifecycle, roles, aliases, audit, tamper checks, crashes,
concurrent reviewers and webhooks."""

from __future__ import annotations

import hashlib
import hmac
import http.server
import json
import multiprocessing
import os
import pickle
import re
import socket
import struct
import threading
import zipfile
from pathlib import Path

import pytest

from core import auth, doctor, registry, store, webhooks
from core.errors import (
    IllegalTransition,
    InvalidInput,
    NotFound,
    PermissionDenied,
    PondError,
    TamperedArtifact,
)
from core.registry import VersionStatus
from core.store import artifacts

S = VersionStatus


@pytest.fixture
def rob(ws):
    return auth.get_user(ws, "rob")


@pytest.fixture
def model_file(tmp_path):
    counter = iter(range(10_000))

    def make(text: str | None = None, name: str = "model.txt") -> Path:
        path = tmp_path / "files" / f"{next(counter)}-{name}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text if text is not None else f"tree {path.name}\n")
        return path

    return make


@pytest.fixture
def register(ws, analyst, model_file):
    def make(model: str = "churn", **kwargs) -> registry.ModelVersion:
        kwargs.setdefault("metrics", {"auc": 0.81, "logloss": 0.4})
        kwargs.setdefault("params", {"learning_rate": 0.1, "num_leaves": 31})
        kwargs.setdefault(
            "lineage",
            registry.make_lineage(
                dataset={"name": "customers", "version": 1, "content_sha256": "a" * 64},
                training_config={"target": "churned", "time_budget_s": 60},
                search_space={"num_leaves": [8, 64]},
                optuna_study={"name": "churn-1", "storage": None},
            ),
        )
        kwargs.setdefault("actor", analyst)
        kwargs.setdefault("flavor", "lightgbm")
        kwargs.setdefault("task", "binary_classification")
        files = kwargs.pop("files", None) or {"model.txt": model_file()}
        return registry.register_version(ws, model, files, **kwargs)

    return make


def audit_count(ws) -> int:
    with store.read(ws) as con:
        return con.execute("SELECT count(*) FROM audit_log").fetchall()[0][0]


def drive_to(ws, status: VersionStatus, register, analyst, reviewer, admin) -> registry.ModelVersion:
    """A fresh version of 'churn' in `status`, reached through the public API."""
    v = register()
    if status is S.REGISTERED:
        return v
    if status is S.ARCHIVED:
        return registry.archive(ws, "churn", v.version, actor=reviewer)
    registry.request_approval(ws, "churn", v.version, actor=analyst, comment="ready")
    if status is S.PENDING_REVIEW:
        return registry.get_version(ws, "churn", v.version)
    if status is S.APPROVED:
        return registry.approve(ws, "churn", v.version, actor=reviewer, comment="good")
    return registry.reject(ws, "churn", v.version, actor=reviewer, comment="leaks the label")


# --- the state machine -------------------------------------------------------------------

LEGAL = {
    (S.REGISTERED, S.PENDING_REVIEW),
    (S.REGISTERED, S.ARCHIVED),
    (S.PENDING_REVIEW, S.APPROVED),
    (S.PENDING_REVIEW, S.REJECTED),
    (S.APPROVED, S.ARCHIVED),
    (S.REJECTED, S.ARCHIVED),
}


@pytest.mark.parametrize("source", list(S))
@pytest.mark.parametrize("target", list(S))
def test_enum_knows_exactly_the_legal_transitions(source, target):
    assert source.can_become(target) == ((source, target) in LEGAL)
    assert source.is_final() == (source is S.ARCHIVED)
    assert source.can_hold_alias() == (source is S.APPROVED)


@pytest.mark.parametrize("source", list(S))
@pytest.mark.parametrize("target", [S.PENDING_REVIEW, S.APPROVED, S.REJECTED, S.ARCHIVED])
def test_every_transition_through_the_api(ws, register, analyst, reviewer, admin, source, target):
    v = drive_to(ws, source, register, analyst, reviewer, admin)
    assert v.status is source
    before = audit_count(ws)
    act = {
        S.PENDING_REVIEW: lambda: registry.request_approval(
            ws, "churn", v.version, actor=analyst, comment="please"
        ),
        S.APPROVED: lambda: registry.approve(ws, "churn", v.version, actor=admin, comment="ok"),
        S.REJECTED: lambda: registry.reject(ws, "churn", v.version, actor=admin, comment="no"),
        S.ARCHIVED: lambda: registry.archive(ws, "churn", v.version, actor=reviewer),
    }[target]
    if (source, target) in LEGAL:
        after = act()
        assert after.status is target
        assert audit_count(ws) == before + 1
    else:
        with pytest.raises(IllegalTransition) as info:
            act()
        message = str(info.value)
        assert f"model 'churn' version {v.version}" in message
        assert source.value in message
        assert registry.get_version(ws, "churn", v.version).status is source
        assert audit_count(ws) == before


def test_illegal_transition_says_what_is_allowed(ws, register, analyst, reviewer, admin):
    v = drive_to(ws, S.APPROVED, register, analyst, reviewer, admin)
    with pytest.raises(IllegalTransition, match="already approved.*by rita"):
        registry.approve(ws, "churn", v.version, actor=admin)
    with pytest.raises(IllegalTransition, match="may only become archived"):
        registry.reject(ws, "churn", v.version, actor=admin, comment="late")


def test_new_version_starts_registered_with_lineage_and_files(ws, register, analyst):
    v = register(tags={"team": "retention"}, description="first try")
    assert (v.model, v.version, v.status) == ("churn", 1, S.REGISTERED)
    assert v.created_by == "ana"
    assert v.metrics == {"auc": pytest.approx(0.81), "logloss": pytest.approx(0.4)}
    assert v.params == {"learning_rate": 0.1, "num_leaves": 31}
    assert v.lineage["dataset"] == {"name": "customers", "version": 1, "content_sha256": "a" * 64}
    assert v.lineage["package_version"] == registry.__version__
    assert "git_commit" in v.lineage
    assert v.lineage["optuna_study"] == {"name": "churn-1", "storage": None}
    assert v.tags == {"team": "retention"}
    assert [f.name for f in v.files] == ["model.txt"]
    assert re.fullmatch(r"[0-9a-f]{64}", v.files[0].sha256)
    assert v.description == "first try"
    assert register().version == 2


def test_register_with_request_in_one_call(ws, register, analyst):
    before = audit_count(ws)
    v = register(request_approval=True, comment="AutoML best trial")
    assert v.status is S.PENDING_REVIEW
    assert v.requested_by == "ana"
    assert audit_count(ws) == before + 2
    with pytest.raises(InvalidInput, match="comment"):
        register(request_approval=True)


def test_retrain_records_its_parent(ws, register):
    register()
    v2 = register(parent_version=1)
    assert v2.parent_version == 1 and v2.lineage["parent_version"] == 1
    with pytest.raises(NotFound, match="no version 9"):
        register(parent_version=9)


# --- roles ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("who", "allowed"), [("ana", True), ("rita", False), ("admin", True)]
)
def test_who_may_register(ws, register, who, allowed):
    user = auth.get_user(ws, who)
    if allowed:
        assert register(actor=user).created_by == who
    else:
        with pytest.raises(PermissionDenied, match=f"user '{who}' .* may not register"):
            register(actor=user)


@pytest.mark.parametrize(("who", "allowed"), [("ana", True), ("rita", False), ("admin", True)])
def test_who_may_request_approval(ws, register, who, allowed):
    v = register()
    user = auth.get_user(ws, who)
    call = lambda: registry.request_approval(ws, "churn", v.version, actor=user, comment="go")  # noqa: E731
    if allowed:
        assert call().status is S.PENDING_REVIEW
    else:
        with pytest.raises(PermissionDenied, match="may not request approval"):
            call()


@pytest.mark.parametrize(("who", "allowed"), [("ana", False), ("rita", True), ("admin", True)])
@pytest.mark.parametrize("decision", ["approve", "reject"])
def test_who_may_review(ws, register, analyst, who, allowed, decision):
    v = register(request_approval=True, comment="go")
    user = auth.get_user(ws, who)
    fn = getattr(registry, decision)
    if allowed:
        assert fn(ws, "churn", v.version, actor=user, comment="because").status in (
            S.APPROVED, S.REJECTED,
        )
    else:
        with pytest.raises(PermissionDenied, match="may not review"):
            fn(ws, "churn", v.version, actor=user, comment="because")


@pytest.mark.parametrize(("who", "allowed"), [("ana", False), ("rita", True), ("admin", True)])
def test_who_may_move_aliases_and_archive(ws, register, analyst, reviewer, admin, who, allowed):
    v = drive_to(ws, S.APPROVED, register, analyst, reviewer, admin)
    user = auth.get_user(ws, who)
    if allowed:
        assert registry.set_alias(ws, "churn", "champion", v.version, actor=user).aliases == (
            "champion",
        )
        assert registry.remove_alias(ws, "churn", "champion", actor=user) == v.version
        assert registry.archive(ws, "churn", v.version, actor=user).status is S.ARCHIVED
    else:
        with pytest.raises(PermissionDenied, match="may not set alias"):
            registry.set_alias(ws, "churn", "champion", v.version, actor=user)
        with pytest.raises(PermissionDenied, match="may not archive"):
            registry.archive(ws, "churn", v.version, actor=user)


def test_nobody_reviews_their_own_request(ws, register, admin, reviewer):
    v = register(actor=admin, request_approval=True, comment="mine")
    with pytest.raises(PermissionDenied, match="admin' requested approval .* another reviewer"):
        registry.approve(ws, "churn", v.version, actor=admin)
    assert registry.approve(ws, "churn", v.version, actor=reviewer).status is S.APPROVED


def test_the_registrant_may_not_review_even_if_someone_else_requested(
    ws, register, admin, analyst, reviewer
):
    v = register(actor=admin)
    registry.request_approval(ws, "churn", v.version, actor=analyst, comment="go")
    with pytest.raises(PermissionDenied, match="registered model 'churn' version 1"):
        registry.reject(ws, "churn", v.version, actor=admin, comment="nope")


def test_a_reviewer_disabled_mid_request_is_refused(ws, register, admin, reviewer):
    v = register(request_approval=True, comment="go")
    signed_in = reviewer  # the session still holds the User it signed in with
    auth.set_disabled(ws, "rita", True, actor=admin)
    before = audit_count(ws)
    with pytest.raises(PermissionDenied, match="'rita' is disabled"):
        registry.approve(ws, "churn", v.version, actor=signed_in)
    assert registry.get_version(ws, "churn", v.version).status is S.PENDING_REVIEW
    assert audit_count(ws) == before
    assert [r.model for r in registry.pending_reviews(ws)] == ["churn"]


def test_a_reviewer_demoted_mid_request_is_refused(ws, register, admin, reviewer):
    v = register(request_approval=True, comment="go")
    auth.set_role(ws, "rita", "analyst", actor=admin)
    with pytest.raises(PermissionDenied, match="may not review"):
        registry.approve(ws, "churn", v.version, actor=reviewer)


# --- aliases ------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [S.REGISTERED, S.PENDING_REVIEW, S.REJECTED, S.ARCHIVED])
def test_only_an_approved_version_holds_an_alias(ws, register, analyst, reviewer, admin, status):
    v = drive_to(ws, status, register, analyst, reviewer, admin)
    with pytest.raises(IllegalTransition, match=f"is {status.value}; only an approved version"):
        registry.set_alias(ws, "churn", "champion", v.version, actor=reviewer)


def test_moving_an_alias_releases_the_previous_holder(ws, register, analyst, reviewer, admin):
    v1 = drive_to(ws, S.APPROVED, register, analyst, reviewer, admin)
    v2 = drive_to(ws, S.APPROVED, register, analyst, reviewer, admin)
    registry.set_alias(ws, "churn", "champion", v1.version, actor=reviewer)
    registry.set_alias(ws, "churn", "challenger", v2.version, actor=reviewer)
    before = audit_count(ws)
    # Promote the challenger by naming it through its alias.
    moved = registry.set_alias(ws, "churn", "champion", "challenger", actor=reviewer)
    assert moved.version == v2.version
    assert audit_count(ws) == before + 1
    assert registry.get_version(ws, "churn", v1.version).aliases == ()
    assert registry.get_version(ws, "churn", v2.version).aliases == ("challenger", "champion")
    entry = registry.audit_trail(ws, "churn")[0]
    assert (entry.action, entry.entity_id, entry.from_state, entry.to_state) == (
        "alias_set", "churn@champion", str(v1.version), str(v2.version),
    )
    # Setting it to where it already points is not a change.
    registry.set_alias(ws, "churn", "champion", v2.version, actor=reviewer)
    assert audit_count(ws) == before + 1


def test_archiving_releases_aliases(ws, register, analyst, reviewer, admin):
    v = drive_to(ws, S.APPROVED, register, analyst, reviewer, admin)
    registry.set_alias(ws, "churn", "champion", v.version, actor=reviewer)
    registry.set_alias(ws, "churn", "stable", v.version, actor=reviewer)
    before = audit_count(ws)
    archived = registry.archive(ws, "churn", v.version, actor=reviewer, comment="superseded")
    assert archived.status is S.ARCHIVED and archived.aliases == ()
    assert audit_count(ws) == before + 3  # the archive and one release per alias
    actions = [e.action for e in registry.audit_trail(ws, "churn", limit=3)]
    assert sorted(actions) == ["alias_released", "alias_released", "version_archived"]
    with pytest.raises(IllegalTransition):
        registry.set_alias(ws, "churn", "champion", v.version, actor=reviewer)
    with pytest.raises(NotFound, match="has no alias 'champion'"):
        registry.get_version(ws, "churn", "champion")


def test_alias_names_are_checked(ws, register, analyst, reviewer, admin):
    v = drive_to(ws, S.APPROVED, register, analyst, reviewer, admin)
    for bad in ["", "3", "has space", "latest", "a@b"]:
        with pytest.raises(InvalidInput):
            registry.set_alias(ws, "churn", bad, v.version, actor=reviewer)
    with pytest.raises(NotFound, match="model 'churn' has no alias 'nope'"):
        registry.remove_alias(ws, "churn", "nope", actor=reviewer)


def test_resolve_references(ws, register, analyst, reviewer, admin):
    v1 = drive_to(ws, S.APPROVED, register, analyst, reviewer, admin)
    v2 = register()
    assert registry.resolve(ws, "churn").version == v2.version  # no champion: the newest
    registry.set_alias(ws, "churn", "champion", v1.version, actor=reviewer)
    assert registry.resolve(ws, "churn").version == v1.version
    assert registry.resolve(ws, "churn@champion").version == v1.version
    assert registry.resolve(ws, "churn:2").version == 2
    assert registry.resolve(ws, "churn@latest").version == v2.version
    with pytest.raises(NotFound, match="model 'churn' has no version 7; its versions are 1–2"):
        registry.resolve(ws, "churn:7")
    with pytest.raises(NotFound, match="no registered model 'fraud'"):
        registry.resolve(ws, "fraud")
    for bad in ["", "churn:", "churn:x", "@champion", "bad name"]:
        with pytest.raises(InvalidInput):
            registry.resolve(ws, bad)
    assert [(a.model, a.alias, a.version) for a in registry.list_aliases(ws, "champion")] == [
        ("churn", "champion", v1.version)
    ]


# --- audit ----------------------------------------------------------------------------


def test_every_change_leaves_exactly_one_audit_row(ws, register, analyst, reviewer, rob, admin):
    steps = [
        ("version_registered", lambda: register()),
        ("approval_requested",
         lambda: registry.request_approval(ws, "churn", 1, actor=analyst, comment="c1")),
        ("version_approved", lambda: registry.approve(ws, "churn", 1, actor=reviewer, comment="ok")),
        ("alias_set", lambda: registry.set_alias(ws, "churn", "champion", 1, actor=rob)),
        ("version_registered", lambda: register()),
        ("approval_requested",
         lambda: registry.request_approval(ws, "churn", 2, actor=analyst, comment="c2")),
        ("version_rejected",
         lambda: registry.reject(ws, "churn", 2, actor=rob, comment="overfits")),
        ("version_archived", lambda: registry.archive(ws, "churn", 2, actor=rob)),
        ("alias_removed", lambda: registry.remove_alias(ws, "churn", "champion", actor=rob)),
    ]
    for action, step in steps:
        before = audit_count(ws)
        step()
        assert audit_count(ws) == before + 1, action
        latest = registry.audit_trail(ws, "churn", limit=1)[0]
        assert latest.action == action
        assert latest.actor in {"ana", "rita", "rob"}
    trail = registry.audit_trail(ws, "churn")
    assert [e.action for e in reversed(trail)] == [a for a, _ in steps]
    rejected = next(e for e in trail if e.action == "version_rejected")
    assert (rejected.actor, rejected.from_state, rejected.to_state, rejected.comment) == (
        "rob", "pending_review", "rejected", "overfits",
    )
    assert all(e.occurred_at is not None for e in trail)


def test_failed_calls_leave_no_audit_row(ws, register, analyst, reviewer):
    register()
    before = audit_count(ws)
    for call in [
        lambda: registry.approve(ws, "churn", 1, actor=reviewer),
        lambda: registry.request_approval(ws, "churn", 1, actor=analyst, comment="  "),
        lambda: registry.request_approval(ws, "churn", 5, actor=analyst, comment="x"),
        lambda: registry.set_alias(ws, "churn", "champion", 1, actor=reviewer),
        lambda: registry.archive(ws, "nope", 1, actor=reviewer),
    ]:
        with pytest.raises(PondError):
            call()
    assert audit_count(ws) == before


def test_rejection_needs_a_reason(ws, register, reviewer):
    v = register(request_approval=True, comment="go")
    for empty in [None, "", "   "]:
        with pytest.raises(InvalidInput, match="say why"):
            registry.reject(ws, "churn", v.version, actor=reviewer, comment=empty)


def test_no_code_path_updates_or_deletes_the_audit_log():
    root = Path(registry.__file__).resolve().parent
    offenders = []
    for path in root.rglob("*.py"):
        text = path.read_text()
        if re.search(r"(UPDATE\s+audit_log|DELETE\s+FROM\s+audit_log|DROP\s+TABLE\s+audit_log)",
                     text, re.IGNORECASE):
            offenders.append(str(path))
    assert offenders == []


# --- files, tampering, crashes --------------------------------------------------------------


def test_version_files_are_verified_and_tampering_is_refused(ws, register, model_file, tmp_path):
    v = register(files={"model.txt": model_file("tree 1"), "meta/config.json": model_file("{}")})
    files = registry.version_files(ws, "churn", v.version)
    assert files["model.txt"].read_text() == "tree 1"
    out = registry.export_version(ws, "churn", v.version, tmp_path / "export")
    assert (out / "meta" / "config.json").read_text() == "{}"

    files["model.txt"].chmod(0o644)
    files["model.txt"].write_text("tree 1 with a backdoor")
    with pytest.raises(TamperedArtifact, match="file 'model.txt' of model 'churn' version 1"):
        registry.version_files(ws, "churn", v.version)
    report = doctor.check(ws)
    assert not report.ok
    assert [(f.kind.value, f.model, f.file) for f in report.findings] == [
        ("tampered_artifact", "churn", "model.txt")
    ]


def test_a_missing_file_is_refused_and_reported(ws, register):
    v = register()
    path = artifacts.artifact_path(ws, v.files[0].sha256)
    path.unlink()
    with pytest.raises(TamperedArtifact, match="missing from the artifact store"):
        registry.version_files(ws, "churn", v.version)
    kinds = [f.kind.value for f in doctor.check(ws).findings]
    assert kinds == ["missing_file"]


def test_pickles_are_refused(ws, register, tmp_path):
    pickled = tmp_path / "model.bin"
    pickled.write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    with pytest.raises(InvalidInput, match="is a Python pickle"):
        register(files={"model.bin": pickled})
    named = tmp_path / "model.pkl"
    named.write_text("not really")
    with pytest.raises(InvalidInput, match="pickle"):
        register(files={"model.pkl": named})
    torch_style = tmp_path / "pytorch_model.bin"  # what torch.save writes: a zip around a pickle
    with zipfile.ZipFile(torch_style, "w") as zf:
        zf.writestr("archive/data.pkl", pickle.dumps({"w": 1}))
    with pytest.raises(InvalidInput, match="pickle"):
        register(files={"pytorch_model.bin": torch_style})
    assert registry.list_models(ws).total == 0
    # A safetensors header length can begin with the bytes 0x80 0x02; that is not a pickle.
    safetensors = tmp_path / "adapter_model.safetensors"
    safetensors.write_bytes(struct.pack("<Q", 0x0280) + b"{" + b" " * 0x27F)
    assert register(files={"adapter_model.safetensors": safetensors}).version == 1


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"files": {"../escape.txt": None}}, "not allowed"),
        ({"files": {"a.txt": "/does/not/exist"}}, "does not exist"),
        ({"metrics": {"auc": "high"}}, "metric 'auc' of model 'churn' must be a number"),
        ({"flavor": "Light GBM"}, "flavor"),
        ({"tags": {"bad key": "x"}}, "tag"),
        ({"lineage": {"dataset": {"name": "x"}}}, "lineage.dataset"),
        ({"params": {"f": object()}}, None),
    ],
)
def test_bad_registrations_are_refused_before_anything_is_stored(
    ws, register, model_file, kwargs, match
):
    if "files" in kwargs and None in kwargs["files"].values():
        kwargs = {"files": {k: model_file() for k in kwargs["files"]}}
    if match is None:
        # An object with no JSON form is stored by its text rather than refused.
        v = register(**kwargs)
        assert isinstance(v.params["f"], str)
        return
    stored_before = sorted(p.name for p in Path(ws.artifacts_dir).iterdir())
    with pytest.raises(InvalidInput, match=match):
        register(**kwargs)
    assert registry.list_models(ws).total == 0
    assert sorted(p.name for p in Path(ws.artifacts_dir).iterdir()) == stored_before


def test_bad_model_names(ws, register):
    for bad in ["", "has space", "a@b", "a:b", "9lives", "x" * 200]:
        with pytest.raises(InvalidInput, match="model name"):
            register(bad)


def test_non_finite_metrics_are_stored_as_null(ws, register):
    v = register(metrics={"auc": float("nan"), "rmse": 1.5})
    assert v.metrics == {"auc": None, "rmse": 1.5}


def test_registration_is_all_or_nothing_when_a_file_fails(ws, register, model_file, monkeypatch):
    real_put = artifacts.put_file
    calls = []

    def flaky(ws_, src, **kw):
        calls.append(src)
        if len(calls) == 2:
            raise OSError("disk full")
        return real_put(ws_, src, **kw)

    monkeypatch.setattr(artifacts, "put_file", flaky)
    before = audit_count(ws)
    with pytest.raises(PondError, match="could not store file 'b.txt' .* nothing was registered"):
        register(files={"a.txt": model_file("A"), "b.txt": model_file("B")})
    assert registry.list_models(ws).total == 0
    assert audit_count(ws) == before
    findings = doctor.check(ws).findings
    assert [f.kind.value for f in findings] == ["orphan_artifact"]
    assert findings[0].sha256 == hashlib.sha256(b"A").hexdigest()
    assert doctor.check(ws).ok  # orphans are warnings


def test_a_failure_inside_the_transaction_rolls_everything_back(ws, register, monkeypatch):
    from core.store import registry as rows

    def broken(*args, **kwargs):
        raise RuntimeError("crash after the version row was written")

    monkeypatch.setattr(rows, "insert_tags", broken)
    with pytest.raises(RuntimeError):
        register(tags={"a": "b"})
    monkeypatch.undo()
    assert registry.list_models(ws).total == 0
    assert register().version == 1  # the number was not used up


def _register_then_die(home: str, file_path: str) -> None:
    """Child process: write the artifact, start the transaction, die before COMMIT."""
    from core import auth, registry, store
    from core.store import registry as rows

    def die(*args, **kwargs):
        os._exit(9)

    rows.insert_tags = die
    ws = store.open_workspace(home)
    registry.register_version(
        ws, "churn", {"model.txt": Path(file_path)}, metrics={}, params={}, lineage={},
        actor=auth.get_user(ws, "ana"), flavor="lightgbm",
    )


def test_a_process_killed_before_commit_leaves_no_half_made_version(ws, model_file):
    ctx = multiprocessing.get_context("spawn")
    proc = ctx.Process(target=_register_then_die, args=(str(ws.home), str(model_file("X"))))
    proc.start()
    proc.join(60)
    assert proc.exitcode == 9
    assert registry.list_models(ws).total == 0
    with pytest.raises(NotFound):
        registry.get_version(ws, "churn", 1)
    report = doctor.check(ws)
    assert [f.kind.value for f in report.findings] == ["orphan_artifact"]
    assert report.findings[0].sha256 == hashlib.sha256(b"X").hexdigest()


def test_doctor_reports_an_unfinished_upload(ws):
    (ws.artifacts_dir / ".incoming-abc123").write_bytes(b"half")
    assert [f.kind.value for f in doctor.check(ws).findings] == ["incomplete_upload"]


# --- concurrent reviewers ----------------------------------------------------------------------


def _approve_in_child(home: str, who: str, barrier, results) -> None:
    from core import auth, registry, store

    ws = store.open_workspace(home)
    user = auth.get_user(ws, who)
    barrier.wait(30)
    try:
        registry.approve(ws, "churn", 1, actor=user, comment=f"approved by {who}")
        results.put((who, "won"))
    except PondError as exc:
        results.put((who, f"{type(exc).__name__}: {exc}"))


def test_concurrent_approvals_from_two_processes_exactly_one_wins(ws, register):
    register(request_approval=True, comment="go")
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    results = ctx.Queue()
    procs = [
        ctx.Process(target=_approve_in_child, args=(str(ws.home), who, barrier, results))
        for who in ("rita", "rob")
    ]
    for p in procs:
        p.start()
    outcomes = dict(results.get(timeout=60) for _ in procs)
    for p in procs:
        p.join(30)
    winners = [who for who, outcome in outcomes.items() if outcome == "won"]
    assert len(winners) == 1, outcomes
    loser = next(who for who in outcomes if who not in winners)
    assert outcomes[loser].startswith("IllegalTransition: model 'churn' version 1 is already")
    v = registry.get_version(ws, "churn", 1)
    assert v.status is S.APPROVED and v.reviewed_by == winners[0]
    approvals = [e for e in registry.audit_trail(ws, "churn") if e.action == "version_approved"]
    assert [e.actor for e in approvals] == winners


# --- listing and comparing ----------------------------------------------------------------------


def test_list_models_filters_and_pages_in_sql(ws, register, analyst, reviewer, admin):
    for name in ["churn", "churn_v2", "fraud", "upsell", "Churn-EU"]:
        register(name, tags={"team": "growth" if name == "upsell" else "risk"})
    register("fraud", actor=admin)
    registry.request_approval(ws, "fraud", 1, actor=analyst, comment="go")

    page = registry.list_models(ws, limit=2)
    assert [m.name for m in page] == ["Churn-EU", "churn"] and page.total == 5 and page.has_next
    assert [m.name for m in registry.list_models(ws, limit=2, offset=4)] == ["upsell"]
    assert [m.name for m in registry.list_models(ws, search="CHURN")] == [
        "Churn-EU", "churn", "churn_v2",
    ]
    assert [m.name for m in registry.list_models(ws, search="_")] == ["churn_v2"]
    assert [m.name for m in registry.list_models(ws, status="pending_review")] == ["fraud"]
    assert [m.name for m in registry.list_models(ws, tag="team=growth")] == ["upsell"]
    assert registry.list_models(ws, tag="team").total == 5
    assert registry.list_models(ws, owner="admin").total == 0
    assert registry.list_models(ws, owner="ana").total == 5
    fraud = next(m for m in registry.list_models(ws, search="fraud"))
    assert (fraud.version_count, fraud.latest_version, fraud.latest_status) == (2, 2, S.REGISTERED)
    assert fraud.status_counts == {"pending_review": 1, "registered": 1}
    with pytest.raises(InvalidInput, match="The 'limit' parameter of list_models"):
        registry.list_models(ws, limit=0)
    with pytest.raises(InvalidInput, match="unknown status"):
        registry.list_models(ws, status="live")


def test_get_model_lists_versions_newest_first(ws, register, analyst, reviewer, admin):
    drive_to(ws, S.APPROVED, register, analyst, reviewer, admin)
    register()
    registry.set_alias(ws, "churn", "champion", 1, actor=reviewer)
    detail = registry.get_model(ws, "churn")
    assert [v.version for v in detail.versions] == [2, 1]
    assert detail.model.aliases == {"champion": 1}
    assert detail.versions[1].reviewed_by == "rita"


def test_compare_two_versions(ws, register):
    register()
    register(
        metrics={"auc": 0.86, "logloss": 0.4, "f1": 0.5},
        params={"learning_rate": 0.05, "num_leaves": 31},
        lineage=registry.make_lineage(
            dataset={"name": "customers", "version": 2, "content_sha256": "b" * 64},
            training_config={"target": "churned", "time_budget_s": 60},
        ),
    )
    c = registry.compare(ws, "churn", 1, 2)
    metrics = {r.key: r for r in c.metrics}
    assert metrics["auc"].delta == pytest.approx(0.05)
    assert metrics["logloss"].changed is False
    assert (metrics["f1"].left, metrics["f1"].right, metrics["f1"].delta) == (None, 0.5, None)
    params = {r.key: r for r in c.params}
    assert params["learning_rate"].changed and not params["num_leaves"].changed
    lineage = {r.key: r for r in c.lineage if r.changed}
    assert set(lineage) >= {"dataset.version", "dataset.content_sha256"}
    assert lineage["dataset.version"].left == 1 and lineage["dataset.version"].right == 2


def test_pending_reviews_lists_open_requests_oldest_first(ws, register, analyst, reviewer):
    register("a", request_approval=True, comment="first")
    register("b", request_approval=True, comment="second")
    register("c")
    assert [(r.model, r.comment) for r in registry.pending_reviews(ws)] == [
        ("a", "first"), ("b", "second"),
    ]
    registry.approve(ws, "a", 1, actor=reviewer)
    assert [r.model for r in registry.pending_reviews(ws)] == ["b"]


def test_unknown_model_and_version_errors_name_them(ws, register, reviewer):
    register()
    with pytest.raises(NotFound, match="model 'churn' has no version 7"):
        registry.get_version(ws, "churn", 7)
    with pytest.raises(NotFound, match="model 'churn' has no version 7"):
        registry.approve(ws, "churn", 7, actor=reviewer)
    with pytest.raises(NotFound, match="no registered model 'nope'"):
        registry.audit_trail(ws, "nope")


# --- webhooks ---------------------------------------------------------------------------------


class _Receiver:
    """A local HTTP endpoint that records what it is sent."""

    def __init__(self, status: int = 200, gate: threading.Event | None = None) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if gate is not None:
                    gate.wait(30)
                receiver.requests.append((dict(self.headers), body))
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> _Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fast_retries(monkeypatch):
    monkeypatch.setattr(webhooks, "RETRY_DELAYS", (0.01, 0.01))
    monkeypatch.setattr(webhooks, "TIMEOUT_S", 2.0)


def _closed_port_url() -> str:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return f"http://127.0.0.1:{port}/hook"


def test_webhooks_are_signed_and_their_delivery_recorded(ws, register, admin, reviewer,
                                                          fast_retries):
    secret = "s3cret-for-the-test-hook"
    with _Receiver() as receiver:
        hook, shown = webhooks.add_webhook(
            ws, receiver.url, ["version_registered", "approval_requested", "version_approved"],
            actor=admin, secret=secret,
        )
        assert shown == secret and hook.secret_hint == "…hook"
        register(request_approval=True, comment="go")
        registry.approve(ws, "churn", 1, actor=reviewer, comment="fine")
        assert webhooks.wait_for_deliveries(30)
    assert len(receiver.requests) == 3
    events = []
    for headers, body in receiver.requests:
        expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        assert headers["X-Pond-Signature-256"] == expected
        payload = json.loads(body)
        assert payload["event"] == headers["X-Pond-Event"]
        assert payload["model"] == "churn" and payload["version"] == 1
        events.append(payload["event"])
    assert sorted(events) == ["approval_requested", "version_approved", "version_registered"]
    deliveries = webhooks.list_deliveries(ws, actor=admin)
    assert {(d.outcome.value, d.attempts, d.response_status) for d in deliveries} == {
        ("delivered", 1, 200)
    }


def test_a_failing_hook_never_blocks_or_rolls_back(ws, register, admin, reviewer, fast_retries):
    webhooks.add_webhook(ws, _closed_port_url(), ["version_approved"], actor=admin)
    register(request_approval=True, comment="go")
    assert registry.approve(ws, "churn", 1, actor=reviewer).status is S.APPROVED
    assert webhooks.wait_for_deliveries(30)
    assert registry.get_version(ws, "churn", 1).status is S.APPROVED
    [delivery] = webhooks.list_deliveries(ws, actor=admin)
    assert delivery.outcome.value == "failed"
    assert delivery.attempts == len(webhooks.RETRY_DELAYS) + 1
    assert "Connection refused" in delivery.error or "URLError" in delivery.error


def test_a_slow_hook_does_not_hold_up_the_change(ws, register, admin, reviewer, fast_retries):
    gate = threading.Event()
    with _Receiver(gate=gate) as receiver:
        webhooks.add_webhook(ws, receiver.url, ["version_approved"], actor=admin)
        register(request_approval=True, comment="go")
        registry.approve(ws, "churn", 1, actor=reviewer)
        # The endpoint has not answered yet, but the approval is committed and visible.
        assert registry.get_version(ws, "churn", 1).status is S.APPROVED
        assert [d.outcome.value for d in webhooks.list_deliveries(ws, actor=admin)] == ["pending"]
        gate.set()
        assert webhooks.wait_for_deliveries(30)
    assert [d.outcome.value for d in webhooks.list_deliveries(ws, actor=admin)] == ["delivered"]


def test_a_4xx_answer_is_not_retried(ws, register, admin, fast_retries):
    with _Receiver(status=410) as receiver:
        webhooks.add_webhook(ws, receiver.url, ["version_registered"], actor=admin)
        register()
        assert webhooks.wait_for_deliveries(30)
    [delivery] = webhooks.list_deliveries(ws, actor=admin)
    assert (delivery.outcome.value, delivery.attempts, delivery.response_status) == (
        "failed", 1, 410,
    )


def test_webhook_management_is_for_admins_and_audited(ws, admin, analyst, reviewer):
    for user in (analyst, reviewer):
        with pytest.raises(PermissionDenied):
            webhooks.add_webhook(ws, "https://example.org/h", ["alias_moved"], actor=user)
    with pytest.raises(InvalidInput, match="must be an http"):
        webhooks.add_webhook(ws, "ftp://example.org", ["alias_moved"], actor=admin)
    with pytest.raises(InvalidInput, match="unknown webhook event"):
        webhooks.add_webhook(ws, "https://example.org/h", ["deployed"], actor=admin)
    with pytest.raises(InvalidInput, match="at least 16"):
        webhooks.add_webhook(ws, "https://example.org/h", ["alias_moved"], actor=admin,
                             secret="short")
    hook, secret = webhooks.add_webhook(ws, "https://example.org/h", ["alias_moved"], actor=admin)
    assert len(secret) >= 32
    assert [h.id for h in webhooks.list_webhooks(ws, actor=admin)] == [hook.id]
    webhooks.remove_webhook(ws, hook.id, actor=admin)
    assert webhooks.list_webhooks(ws, actor=admin) == []
    with pytest.raises(NotFound):
        webhooks.remove_webhook(ws, hook.id, actor=admin)
    with store.read(ws) as con:
        rows = con.execute(
            "SELECT action, details FROM audit_log WHERE entity_type = 'webhook' ORDER BY id"
        ).fetchall()
    assert [r[0] for r in rows] == ["webhook_added", "webhook_removed"]
    assert all(secret not in (r[1] or "") for r in rows)


def test_signature_helpers_round_trip():
    body = b'{"event": "alias_moved"}'
    signature = webhooks.sign("k" * 16, body)
    assert webhooks.verify("k" * 16, body, signature)
    assert not webhooks.verify("k" * 16, body + b" ", signature)


def test_deliveries_left_pending_by_a_dead_process_can_be_sent_again(ws, register, admin,
                                                                      fast_retries):
    with _Receiver() as receiver:
        webhooks.add_webhook(ws, receiver.url, ["alias_moved"], actor=admin, secret="x" * 16)
        # As if the process died right after the commit: the outbox row exists, nothing was sent.
        with store.transaction(ws) as con:
            webhooks.enqueue(con, webhooks.WebhookEvent.ALIAS_MOVED, {"model": "churn"})
        assert [d.outcome.value for d in webhooks.list_deliveries(ws, actor=admin)] == ["pending"]
        sent = webhooks.deliver_pending(ws, actor=admin, older_than_s=0)
    assert len(sent) == 1 and len(receiver.requests) == 1
    headers, body = receiver.requests[0]
    assert webhooks.verify("x" * 16, body, headers["X-Pond-Signature-256"])
    assert json.loads(body)["delivery_id"] == sent[0]
    assert [d.outcome.value for d in webhooks.list_deliveries(ws, actor=admin)] == ["delivered"]
