"""`pond models`, `pond registry …`, `pond webhooks …` and `pond doctor` through `core.cli.main`."""

from __future__ import annotations

import argparse
import json

import pytest

from core import registry
from core.cli import build_parser, main
from core.store import artifacts


def run(capsys, *argv: str) -> tuple[int, object]:
    code = main([*argv, "--json"])
    captured = capsys.readouterr()
    out = captured.out.strip().splitlines()
    if code:
        # A failure is one line on stderr, whatever else is printed.
        assert len(captured.err.strip().splitlines()) == 1
        assert captured.err.startswith("pond: error: ")
    return code, json.loads(out[-1]) if out else None


@pytest.fixture
def model_path(tmp_path):
    path = tmp_path / "model.txt"
    path.write_text("tree\n")
    return path


def test_review_flow_from_the_shell(ws, capsys, model_path):
    code, out = run(capsys, "models")
    assert code == 0 and out["total"] == 0 and out["models"] == []

    code, out = run(
        capsys, "registry", "register", "churn", f"model.txt={model_path}", "--flavor", "lightgbm",
        "--metric", "auc=0.8", "--param", "num_leaves=31", "--tag", "team=risk",
        "--lineage", '{"dataset": {"name": "customers", "version": 1, "content_sha256": "ab"}}',
        "--request-approval", "--comment", "beats baseline", "--user", "ana",
    )
    assert code == 0
    assert (out["ref"], out["status"], out["params"]) == (
        "churn:1", "pending_review", {"num_leaves": 31},
    )

    code, out = run(capsys, "registry", "pending")
    assert [(r["model"], r["version"], r["comment"]) for r in out] == [
        ("churn", 1, "beats baseline")
    ]

    code, out = run(capsys, "registry", "approve", "churn", "1", "--user", "ana")
    assert code == 1 and "may not review" in out["error"]

    code, out = run(capsys, "registry", "approve", "churn", "1", "--comment", "ok",
                    "--user", "rita")
    assert code == 0 and out["status"] == "approved" and out["reviewed_by"] == "rita"

    code, out = run(capsys, "registry", "set-alias", "churn", "champion", "1", "--user", "rob")
    assert code == 0 and out["aliases"] == ["champion"]

    code, out = run(capsys, "registry", "show", "churn", "champion")
    assert code == 0
    assert out["version"] == 1 and out["metrics"] == {"auc": 0.8}
    assert out["lineage"]["dataset"]["name"] == "customers"
    assert out["files"][0]["name"] == "model.txt"
    assert "evaluations" in out

    code, out = run(capsys, "models", "--status", "approved")
    assert [(m["name"], m["aliases"]) for m in out["models"]] == [("churn", {"champion": 1})]

    run(capsys, "registry", "register", "churn", str(model_path), "--flavor", "lightgbm",
        "--metric", "auc=0.85", "--user", "ana")
    code, out = run(capsys, "registry", "compare", "churn", "1", "2")
    assert code == 0
    assert {r["key"]: r["delta"] for r in out["metrics"]}["auc"] == pytest.approx(0.05)

    code, out = run(capsys, "registry", "show", "churn")
    assert [v["version"] for v in out["versions"]] == [2, 1]

    code, out = run(capsys, "registry", "archive", "churn", "1", "--comment", "old",
                    "--user", "rita")
    assert code == 0 and out["status"] == "archived" and out["aliases"] == []

    code, out = run(capsys, "registry", "audit", "churn")
    assert [e["action"] for e in reversed(out)] == [
        "version_registered", "approval_requested", "version_approved", "alias_set",
        "version_registered", "alias_released", "version_archived",
    ]
    assert out[0]["actor"] == "rita" and out[0]["comment"] == "old"


def test_errors_are_one_line_and_non_zero(ws, capsys):
    code, out = run(capsys, "registry", "show", "churn", "7")
    assert code == 1 and out["error"].startswith("there is no registered model 'churn'")
    code, out = run(capsys, "registry", "reject", "churn", "1", "--comment", " ",
                    "--user", "rita")
    assert code == 1 and "say why" in out["error"]
    code, out = run(capsys, "models", "--limit", "0")
    assert code == 1 and "The 'limit' parameter" in out["error"]


def test_text_output_is_a_table(ws, capsys, model_path):
    main(["registry", "register", "churn", str(model_path), "--flavor", "lightgbm",
          "--user", "ana"])
    capsys.readouterr()
    assert main(["models"]) == 0
    text = capsys.readouterr().out
    assert text.splitlines()[0].split()[:3] == ["model", "versions", "latest"]
    assert "churn" in text and "1 of 1 models" in text


def test_webhooks_from_the_shell(ws, capsys):
    code, out = run(capsys, "webhooks", "add", "https://example.org/pond", "--event",
                    "version_approved", "--event", "alias_moved", "--user", "admin")
    assert code == 0 and len(out["secret"]) >= 32
    hook_id = out["webhook"]["id"]
    code, out = run(capsys, "webhooks", "list", "--user", "admin")
    assert [(h["id"], h["events"]) for h in out] == [(hook_id, ["version_approved",
                                                                "alias_moved"])]
    assert out[0]["secret_hint"].startswith("…")
    code, out = run(capsys, "webhooks", "list", "--user", "ana")
    assert code == 1 and "may not manage webhooks" in out["error"]
    code, out = run(capsys, "webhooks", "remove", str(hook_id), "--user", "admin")
    assert code == 0 and out["removed_by"] == "admin"
    code, out = run(capsys, "webhooks", "deliveries", "--user", "admin")
    assert code == 0 and out == []


def test_doctor_exit_code_follows_errors(ws, capsys, model_path):
    main(["registry", "register", "churn", str(model_path), "--flavor", "lightgbm",
          "--user", "ana"])
    capsys.readouterr()
    code, out = run(capsys, "doctor")
    assert code == 0 and out["ok"] is True and out["findings"] == []
    sha = registry.get_version(ws, "churn", 1).files[0].sha256
    artifacts.artifact_path(ws, sha).write_text("changed")
    code, out = run(capsys, "doctor")
    assert code == 1 and out["ok"] is False
    assert [f["kind"] for f in out["findings"]] == ["tampered_artifact"]
    code, out = run(capsys, "doctor", "--quick")
    assert code == 0


def _walk(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for name, sub in action.choices.items():
                yield (*path, name), helps.get(name), sub
                yield from _walk(sub, (*path, name))


def test_every_registry_command_and_option_has_help():
    missing = []
    for path, help_text, sub in _walk(build_parser()):
        if path[0] not in {"models", "registry", "webhooks", "doctor"}:
            continue
        if not help_text:
            missing.append(" ".join(path))
        for action in sub._actions:
            if not action.help and not isinstance(action, argparse._SubParsersAction):
                missing.append(f"{' '.join(path)} {action.dest}")
    assert missing == []
