"""Scheduled headless retraining end to end on real penguins data: drift → retrain →
evaluate → review, skips, overlapping runs, SIGKILL crashes, auto-promotion, failure alerts."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import time

import pytest

from core import auth, drift, registry, retraining, schedules, store
from core.cli import main
from core.errors import InvalidInput, PermissionDenied
from tests import retraining_support as support

MODEL = support.MODEL
FAST = ["--budget", "5", "--trials", "4", "--threads", "1"]


@pytest.fixture(scope="session")
def _champion_home(_template_home, tmp_path_factory):
    home = tmp_path_factory.mktemp("retrain-template") / "pond"
    support.copy_home(_template_home, home)
    support.build_champion(home)
    return home


@pytest.fixture
def cws(_champion_home, tmp_path, monkeypatch):
    """A workspace holding penguins:1 and its approved champion penguins_species:1."""
    ws = support.copy_home(_champion_home, tmp_path / "pond")
    monkeypatch.setenv("POND_HOME", str(ws.home))
    monkeypatch.delenv("POND_RUN_ID", raising=False)
    return ws


def _retrain(capsys, *extra: str, user: str = "ana") -> tuple[int, dict, list[str]]:
    code = main(["retrain", "--model", MODEL, *FAST, "--json", "--user", user, *extra])
    out, err = capsys.readouterr()
    return code, json.loads(out.strip().splitlines()[-1]), err.strip().splitlines()


def test_drift_then_retrain_registers_a_pending_child_with_a_comparison(cws, tmp_path, capsys):
    support.ingest_drifted(cws, tmp_path)
    code, summary, err = _retrain(capsys, "--only-if-drift")
    assert code == 0, err
    assert summary["outcome"] == "trained" and summary["version"] == 2
    assert summary["parent_version"] == 1 and summary["champion_version"] == 1
    assert summary["dataset"] == "penguins:2"
    assert summary["drift"]["dataset_drift"] is True
    assert set(summary["drift"]["drifted_columns"]) >= {"body_mass_g", "flipper_length_mm"}
    assert drift.get_report(cws, summary["drift"]["report_id"]).current == "penguins:2"
    # Both models on the same 20% of penguins:2; the new one learned the shifted birds.
    comparison = summary["comparison"]
    assert comparison["baseline"] == f"{MODEL}:1" and comparison["baseline_is_champion"]
    assert comparison["rows"] == 69 and comparison["holdout"]["dataset"] == "penguins:2"
    assert comparison["challenger_metrics"]["accuracy"] > 0.9
    assert comparison["baseline_metrics"]["accuracy"] < 0.7
    assert comparison["improvement"] > 0 and comparison["improvement_low"] > 0
    assert summary["promotion"]["promote"] is False
    # Warm start: the parent's best parameters were the first trial.
    parent = registry.get_version(cws, MODEL, 1)
    warm = summary["training"]["warm_start"]
    assert warm == {k: v for k, v in parent.params.items() if k != "num_boost_round"}
    # Log lines on stderr in the plain format.
    log_lines = [line for line in err if not line.startswith("pond")]
    assert log_lines and all(support.LOG_LINE.match(line) for line in log_lines), log_lines

    new = registry.get_version(cws, MODEL, 2)
    assert new.status is registry.VersionStatus.PENDING_REVIEW
    assert new.parent_version == 1 and new.lineage["parent_version"] == 1
    assert new.dataset["name"] == "penguins" and new.dataset["version"] == 2
    config, space = new.lineage["training_config"], new.lineage["search_space"]
    old_config = parent.lineage["training_config"]
    assert (config["target"], config["task"], config["metric"]) == (
        old_config["target"],
        old_config["task"],
        old_config["metric"],
    )
    assert space == parent.lineage["search_space"] and config["retrain_of"] == f"{MODEL}:1"
    assert new.tags == {"retrain_run": str(summary["run_id"]), "retrained_from": f"{MODEL}:1"}
    assert "better than penguins_species:1" in new.last_request.comment
    assert registry.resolve(cws, f"{MODEL}@champion").version == 1

    # The run record, as `pond runs` shows it.
    [run] = schedules.list_runs(cws, model=MODEL)
    assert (run.outcome, run.exit_code, run.model_version) == ("trained", 0, 2)
    assert "training finished" in schedules.get_run(cws, run.id).log
    assert main(["runs", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed[0]["id"] == run.id and listed[0]["outcome"] == "trained"

    # The next scheduled night: the new data is already waiting for review, nothing to do.
    code, again, _ = _retrain(capsys, "--only-if-drift")
    assert code == 0 and again["outcome"] == "skipped" and "already waiting" in again["summary"]
    assert len(registry.get_model(cws, MODEL).versions) == 2


def test_no_drift_and_no_new_data_skip(cws, tmp_path, capsys):
    # A run that died right after its version was committed: the next run finds the version
    # by the run's tag and settles the record as trained.
    ana = auth.get_user(cws, "ana")
    gone = subprocess.Popen(["true"])
    gone.wait()  # a pid that has ended
    dead = schedules.start_run(
        cws, kind=schedules.KIND_RETRAIN, command=["retrain"], actor=ana, model=MODEL, pid=gone.pid
    )
    parent = registry.get_version(cws, MODEL, 1)
    registry.register_version(
        cws,
        MODEL,
        registry.version_files(cws, MODEL, 1),
        metrics={},
        params=parent.params,
        lineage=parent.lineage,
        actor=ana,
        flavor="lightgbm",
        task=parent.task,
        parent_version=1,
        tags={retraining.RUN_TAG: str(dead)},
        request_approval=True,
        comment="retrain",
    )

    code, summary, _ = _retrain(capsys, "--only-if-drift")
    assert code == 0 and summary["outcome"] == "skipped"
    assert "no new data" in summary["summary"]
    recovered = schedules.get_run(cws, dead)
    assert (recovered.outcome, recovered.model_version) == ("trained", 2)
    assert "crashed after registering version 2" in recovered.summary

    support.ingest_undrifted(cws, tmp_path)
    code, summary, err = _retrain(capsys, "--only-if-drift")
    assert code == 0, err
    assert summary["outcome"] == "skipped" and "no drift in penguins:2" in summary["summary"]
    assert summary["drift"]["dataset_drift"] is False
    assert summary["drift"]["drifted_columns"] == []
    assert summary["version"] is None
    assert [v.version for v in registry.get_model(cws, MODEL).versions] == [2, 1]
    runs = schedules.list_runs(cws, model=MODEL)
    assert [r.outcome for r in runs] == ["skipped", "skipped", "trained"]


def test_overlapping_run_exits_at_once_and_a_sigkilled_training_leaves_nothing(
    cws, tmp_path, capsys
):
    support.ingest_drifted(cws, tmp_path)
    first = support.PondProcess(
        cws, "retrain", "--model", MODEL, "--budget", "60", "--trials", "1000", "--threads", "1"
    )
    try:
        first.wait_for("training on")
        # While it trains, the workspace stays writable for the app and the server.
        began = time.monotonic()
        with store.transaction(cws) as con:
            store.append_audit(con, actor="ana", action="probe", entity_type="test", entity_id="1")
        assert time.monotonic() - began < 5

        code = main(["retrain", "--model", MODEL, *FAST, "--user", "ana"])
        out, err = capsys.readouterr()
        assert code == retraining.EXIT_BUSY == 3
        assert "a retrain of model 'penguins_species' is already running" in err
        assert f"pid {first.process.pid}" in err
        busy = schedules.list_runs(cws, model=MODEL)[0]
        assert (busy.outcome, busy.exit_code) == ("busy", 3)

        time.sleep(1.0)
        assert first.kill() == -signal.SIGKILL
    finally:
        if first.process.poll() is None:
            first.kill()
    crashed_id = next(r.id for r in schedules.list_runs(cws, model=MODEL) if r.running)
    assert [v.version for v in registry.get_model(cws, MODEL).versions] == [1]

    # The kernel dropped the lock; the next run settles the dead one and works.
    code, summary, err = _retrain(capsys)
    assert code == 0, err
    assert summary["outcome"] == "trained" and summary["version"] == 2
    crashed = schedules.get_run(cws, crashed_id)
    assert (crashed.outcome, crashed.status) == ("crashed", "finished")
    assert "training on" in crashed.log
    assert [v.version for v in registry.get_model(cws, MODEL).versions] == [2, 1]


def test_sigkill_during_registration_leaves_no_half_registered_version(cws, tmp_path, capsys):
    support.ingest_drifted(cws, tmp_path)
    child = support.PondProcess(cws, "retrain", "--model", MODEL, *FAST)
    lock = os.open(cws.lock_path, os.O_RDWR | os.O_CREAT)
    try:
        child.wait_for("training on")
        # A reader holds the workspace: the child's reads go on, its registration must wait.
        fcntl.flock(lock, fcntl.LOCK_SH)
        child.wait_for("registering the new version")
        time.sleep(1.5)
        assert child.kill() == -signal.SIGKILL
    finally:
        os.close(lock)
        if child.process.poll() is None:
            child.kill()
    detail = registry.get_model(cws, MODEL)
    assert [v.version for v in detail.versions] == [1]
    assert registry.pending_reviews(cws) == []

    code, summary, err = _retrain(capsys)
    assert code == 0, err
    assert summary["version"] == 2
    versions = registry.get_model(cws, MODEL).versions
    assert [v.version for v in versions] == [2, 1]
    assert versions[0].status is registry.VersionStatus.PENDING_REVIEW and versions[0].files
    runs = schedules.list_runs(cws, model=MODEL)
    assert [r.outcome for r in runs] == ["trained", "crashed"]


def test_auto_promotion_policy_on_promotes_and_off_waits(cws, tmp_path, capsys):
    support.ingest_drifted(cws, tmp_path)
    admin = auth.get_user(cws, "admin")
    analyst = auth.get_user(cws, "ana")
    with pytest.raises(PermissionDenied, match="manage promotion"):
        retraining.set_promotion_policy(cws, MODEL, actor=analyst, enabled=True)
    with pytest.raises(InvalidInput, match="min_improvement"):
        retraining.set_promotion_policy(cws, MODEL, actor=admin, enabled=True, min_improvement=-1)

    # On, with a margin the challenger cannot reach: it waits for a reviewer.
    assert (
        main(["promotion-policy", "set", MODEL, "--on", "--margin", "1000", "--user", "admin"]) == 0
    )
    capsys.readouterr()
    code, summary, _ = _retrain(capsys)
    assert code == 0 and summary["outcome"] == "trained"
    assert summary["promotion"]["promote"] is False
    assert "below the margin 1000" in summary["promotion"]["reason"]
    assert registry.get_version(cws, MODEL, 2).status is registry.VersionStatus.PENDING_REVIEW

    # On, with a small margin: approved by the policy actor and made champion.
    retraining.set_promotion_policy(cws, MODEL, actor=admin, enabled=True, min_improvement=0.01)
    code, summary, _ = _retrain(capsys)
    assert code == 0 and summary["outcome"] == "promoted" and summary["version"] == 3
    assert "promoted to champion by policy" in summary["summary"]
    v3 = registry.get_version(cws, MODEL, 3)
    assert v3.status is registry.VersionStatus.APPROVED and "champion" in v3.aliases
    assert v3.reviewed_by == "policy" and v3.requested_by == "ana"
    trail = registry.audit_trail(cws, MODEL)
    by_policy = {(e.action, e.actor) for e in trail if e.actor == "policy"}
    assert by_policy == {("version_approved", "policy"), ("alias_set", "policy")}

    # Off again: the next challenger waits, the champion stays.
    retraining.set_promotion_policy(cws, MODEL, actor=admin, enabled=False)
    code, summary, _ = _retrain(capsys)
    assert (
        summary["outcome"] == "trained" and registry.resolve(cws, f"{MODEL}@champion").version == 3
    )
    with pytest.raises(InvalidInput, match="reserved"):
        auth.add_user(cws, "policy", "reviewer", "long-enough-pw", actor=admin)


def test_failure_is_recorded_with_its_exit_code_and_raises_an_alert(cws, tmp_path, capsys):
    frame = support.penguins(cws).drop(columns=["species"])
    support.drift_support.ingest_frame(
        cws, auth.get_user(cws, "ana"), frame, "unlabelled", tmp_path
    )
    code, summary, err = _retrain(capsys, "--dataset", "unlabelled")
    assert code == retraining.EXIT_TRAINING == 5
    assert summary["outcome"] == "failed" and summary["stage"] == "training"
    assert "has no target column 'species'" in summary["error"]
    assert err[-1].startswith("pond: error: failed at training")
    [alert] = drift.list_alerts(cws, MODEL)
    assert alert.condition == "retrain_failed" and alert.id in summary["alerts"]
    assert f"run #{summary['run_id']}" in alert.message
    [run] = schedules.list_runs(cws, model=MODEL)
    assert (run.outcome, run.exit_code) == ("failed", 5)
    # Bad input fails before anything runs, with a message naming it.
    assert main(["retrain", "--model", "nope", "--user", "ana"]) == 1
    assert "there is no registered model 'nope'" in capsys.readouterr().err
    assert main(["retrain", "--model", MODEL, "--budget", "0", "--user", "ana"]) == 1
    assert "'budget' parameter of retrain must be a number of seconds > 0" in (
        capsys.readouterr().err
    )
    # The exit codes are in --help.
    with pytest.raises(SystemExit):
        main(["retrain", "--help"])
    shown = capsys.readouterr().out
    for code, meaning in retraining.EXIT_CODES.items():
        assert f"  {code:<3} {meaning}" in shown
