"""The CLI: JSON output, exit codes, one-line errors, and help for every command."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from core.cli import build_parser, main

DATA = Path(__file__).resolve().parent.parent / "data"


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_ingest_datasets_profile_query(ws, capsys):
    code, out, _ = run(capsys, "ingest", str(DATA / "penguins.csv"), "--name", "penguins",
                       "--user", "ana", "--json")
    assert code == 0 and json.loads(out)["row_count"] == 344
    code, out, _ = run(capsys, "datasets", "--json")
    assert [(d["name"], d["version"]) for d in json.loads(out)] == [("penguins", 1)]
    code, out, _ = run(capsys, "profile", "penguins:1", "--json")
    prof = json.loads(out)["profile"]
    assert prof["n_rows"] == 344 and len(prof["columns"]) == 8
    code, out, _ = run(capsys, "query", "SELECT count(*) AS n FROM penguins", "--json")
    assert json.loads(out)["rows"] == [{"n": 344}]


def test_profile_html_report(ws, capsys, tmp_path):
    run(capsys, "ingest", str(DATA / "penguins.csv"), "--name", "penguins", "--user", "ana")
    out_file = tmp_path / "report.html"
    code, out, _ = run(capsys, "profile", "penguins", "--html", str(out_file),
                       "--sample-rows", "100", "--user", "ana", "--json")
    assert code == 0
    html = json.loads(out)["html"]
    assert html["rows_used"] == 100 and html["total_rows"] == 344
    assert "<html" in out_file.read_text().lower()


def test_errors_are_one_line_and_non_zero(ws, capsys, tmp_path):
    bad = tmp_path / "empty.csv"
    bad.write_bytes(b"")
    code, out, err = run(capsys, "ingest", str(bad), "--name", "x", "--user", "ana")
    assert code != 0
    assert err.count("\n") == 1 and err.startswith("pond: error: empty.csv is empty")
    code, _, err = run(capsys, "ingest", str(DATA / "penguins.csv"), "--name", "x")
    assert code != 0 and "--user" in err
    code, out, err = run(capsys, "profile", "nope", "--json")
    assert code != 0 and "does not exist" in json.loads(out)["error"]


def test_first_user_needs_no_actor_then_admin_required(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("POND_HOME", str(tmp_path / "w"))
    code, _, _ = run(capsys, "users", "add", "root", "--role", "admin", "--password", "long-enough")
    assert code == 0
    code, _, err = run(capsys, "users", "add", "x", "--role", "analyst", "--password", "long-enough")
    assert code != 0 and "--user" in err
    code, out, _ = run(capsys, "users", "add", "x", "--role", "analyst", "--password",
                       "long-enough", "--user", "root", "--json")
    assert code == 0 and json.loads(out)["role"] == "analyst"


def _all_parsers(parser, prefix=()):
    for action in parser._actions:
        if hasattr(action, "choices") and isinstance(action.choices, dict):
            for name, sub in action.choices.items():
                yield (*prefix, name), sub, action
                yield from _all_parsers(sub, (*prefix, name))


def test_every_command_and_option_has_help():
    missing = []
    for path, sub, group in _all_parsers(build_parser()):
        helps = {a.dest: a.help for a in group._choices_actions}
        if not helps.get(path[-1]):
            missing.append(" ".join(path))
        for action in sub._actions:
            if isinstance(action, argparse._SubParsersAction):
                continue  # its commands are checked one by one
            if action.dest not in ("help",) and not action.help:
                missing.append(f"{' '.join(path)} {action.dest}")
    assert missing == []


def test_python_dash_m_core_runs():
    out = subprocess.run(
        [sys.executable, "-m", "core", "--help"], capture_output=True, text=True, check=True
    )
    assert "ingest" in out.stdout


@pytest.mark.parametrize("command", ["ingest", "profile", "query", "users", "datasets"])
def test_readme_documents_each_command(command):
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    assert f"pond {command}" in readme
