"""Schedules and the scheduler: adding, listing and removing schedules from the CLI, the
scheduler running jobs due every minute (with a clock that jumps a minute per tick), run
records of scheduled jobs, and one scheduler per workspace."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from itertools import pairwise

import pytest

from core import auth, schedules
from core.cli import main
from core.errors import AlreadyExists, Busy, InvalidInput, NotFound, PermissionDenied
from tests import drift_support


def _cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_schedule_add_list_remove_from_the_cli(ws, capsys):
    code, out, err = _cli(
        capsys,
        "schedule",
        "add",
        "nightly-churn",
        "--cron",
        "0 3 * * *",
        "--user",
        "admin",
        "--json",
        "--",
        "retrain",
        "--model",
        "churn",
        "--only-if-drift",
    )
    assert code == 0, err
    added = json.loads(out)
    assert added["argv"] == ["retrain", "--model", "churn", "--only-if-drift"]
    assert added["command"] == "pond retrain --model churn --only-if-drift"
    assert added["run_as"] == "admin" and added["cron"] == "0 3 * * *"
    next_run = datetime.fromisoformat(added["next_run_at"])
    assert (next_run.hour, next_run.minute) == (3, 0)
    assert timedelta(0) < next_run - datetime.now(UTC) <= timedelta(days=1)

    code, out, _ = _cli(capsys, "schedule", "list")
    assert code == 0 and "nightly-churn" in out and "pond retrain --model churn" in out
    code, out, _ = _cli(capsys, "schedule", "list", "--json")
    assert [s["name"] for s in json.loads(out)] == ["nightly-churn"]

    # Errors name the input and what to do.
    code, _, err = _cli(
        capsys, "schedule", "add", "x", "--cron", "every night", "--user", "admin", "--", "datasets"
    )
    assert code == 1 and "cron expression 'every night' is not valid" in err
    code, _, err = _cli(
        capsys,
        "schedule",
        "add",
        "x",
        "--cron",
        "0 3 * * *",
        "--user",
        "admin",
        "--",
        "retrain",
        "--modle",
        "churn",
    )
    assert code == 1 and "is not a valid command" in err and "--modle" in err
    code, _, err = _cli(
        capsys, "schedule", "add", "x", "--cron", "0 3 * * *", "--user", "admin", "--", "serve"
    )
    assert code == 1 and "`pond serve` cannot be scheduled" in err
    code, _, err = _cli(capsys, "schedule", "add", "x", "--cron", "0 3 * * *", "--user", "admin")
    assert code == 1 and "needs a command" in err
    code, _, err = _cli(
        capsys, "schedule", "add", "x", "--cron", "0 3 * * *", "--user", "ana", "--", "datasets"
    )
    assert code == 1 and "may not manage schedules" in err
    code, _, err = _cli(
        capsys,
        "schedule",
        "add",
        "nightly-churn",
        "--cron",
        "0 4 * * *",
        "--user",
        "admin",
        "--",
        "datasets",
    )
    assert code == 1 and "already exists" in err

    code, out, _ = _cli(capsys, "schedule", "remove", "nightly-churn", "--user", "admin")
    assert code == 0 and "removed schedule nightly-churn" in out
    assert schedules.list_schedules(ws) == []
    code, _, err = _cli(capsys, "schedule", "remove", "nightly-churn", "--user", "admin")
    assert code == 1 and "there is no schedule 'nightly-churn'" in err


def test_core_refuses_bad_schedules(ws, admin, analyst):
    with pytest.raises(PermissionDenied):
        schedules.add_schedule(ws, "a", "* * * * *", ["datasets"], actor=analyst)
    with pytest.raises(InvalidInput, match="leave --home out"):
        schedules.add_schedule(ws, "a", "* * * * *", ["datasets", "--home", "/x"], actor=admin)
    with pytest.raises(InvalidInput, match="schedule name"):
        schedules.add_schedule(ws, "1bad name", "* * * * *", ["datasets"], actor=admin)
    with pytest.raises(NotFound, match="user 'ghost'"):
        schedules.add_schedule(ws, "a", "* * * * *", ["datasets"], actor=admin, run_as="ghost")
    schedules.add_schedule(ws, "a", "* * * * *", ["datasets"], actor=admin, run_as="ana")
    with pytest.raises(AlreadyExists):
        schedules.add_schedule(ws, "a", "*/5 * * * *", ["datasets"], actor=admin)


def test_scheduler_runs_jobs_due_every_minute_and_records_them(ws, admin, tmp_path, capsys):
    drift_support.churn_model(ws, tmp_path)  # a champion trained on churn_train:1
    start = datetime.now(UTC)
    schedules.add_schedule(
        ws,
        "churn-every-minute",
        "* * * * *",
        ["retrain", "--model", "churn", "--only-if-drift"],
        actor=admin,
        run_as="ana",
        now=start,
    )
    schedules.add_schedule(
        ws, "broken", "* * * * *", ["retrain", "--model", "nope"], actor=admin, now=start
    )
    ticks = iter(range(1, 10_000))
    said: list[str] = []

    def clock() -> datetime:  # a minute passes between ticks
        return start + timedelta(seconds=61 * next(ticks))

    def two_runs_each() -> bool:
        done = [r.schedule for r in schedules.list_runs(ws, running=False)]
        return done.count("churn-every-minute") >= 2 and done.count("broken") >= 2

    report = schedules.run_scheduler(
        ws, tick_s=0.1, max_iterations=1200, clock=clock, echo=said.append, stop=two_runs_each
    )
    assert report.iterations < 1200 and len(report.started) >= 4
    assert sorted(report.finished) == sorted(report.started)
    # Never two runs of one schedule at once: a slot due meanwhile waits for the running one.
    assert any("is still running; it starts when that one ends" in line for line in said)

    churn_runs = schedules.list_runs(ws, schedule="churn-every-minute")
    assert len(churn_runs) >= 2
    for earlier, later in pairwise(reversed(churn_runs)):
        assert later.started_at >= earlier.finished_at  # one after the other
    for run in churn_runs:
        # The retrain took over the record the scheduler made for it.
        assert (run.kind, run.model, run.started_by) == ("retrain", "churn", "ana")
        assert (run.status, run.outcome, run.exit_code) == ("finished", "skipped", 0)
        assert "no new data" in run.summary
        assert "run #" in schedules.get_run(ws, run.id).log
    broken = schedules.list_runs(ws, schedule="broken")
    assert len(broken) >= 2 and {(r.outcome, r.exit_code) for r in broken} == {("failed", 1)}
    assert "there is no registered model 'nope'" in broken[0].summary
    assert "pond: error:" in schedules.get_run(ws, broken[0].id).log

    [listed_broken, listed_churn] = schedules.list_schedules(ws)
    assert listed_churn.last_run.id == churn_runs[0].id
    assert listed_churn.last_run_at > listed_churn.created_at
    assert listed_churn.next_run_at > listed_churn.last_run_at
    assert any("started run #" in line for line in said)

    code, out, _ = _cli(capsys, "runs", "--schedule", "broken", "--json")
    assert code == 0 and {r["outcome"] for r in json.loads(out)} == {"failed"}
    code, out, _ = _cli(capsys, "runs", "show", str(churn_runs[0].id))
    assert code == 0 and "skipped" in out and "no new data" in out


def test_one_scheduler_per_workspace_and_a_bounded_cli_loop(ws, capsys):
    with schedules.exclusive_lock(ws, "scheduler", "a scheduler"):
        with pytest.raises(Busy, match="already running"):
            schedules.run_scheduler(ws, tick_s=0.1, max_iterations=1)
    code, out, err = _cli(capsys, "scheduler", "--tick", "0.1", "--max-iterations", "2", "--json")
    assert code == 0 and json.loads(out) == {"iterations": 2, "started": [], "finished": []}
    assert "scheduler started" in err
    code, _, err = _cli(capsys, "scheduler", "--tick", "0")
    assert code == 1 and "'tick_s' parameter" in err
    past = (datetime.now(UTC) - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M")
    code, out, _ = _cli(capsys, "scheduler", "--until", past, "--json")
    assert code == 0 and json.loads(out)["iterations"] == 0


def test_a_dead_run_is_settled_as_crashed_with_its_log(ws, analyst):
    import subprocess

    gone = subprocess.Popen(["true"])
    gone.wait()
    run_id = schedules.start_run(
        ws, kind=schedules.KIND_COMMAND, command=["datasets"], actor=analyst, pid=gone.pid
    )
    schedules.log_path(ws, run_id).parent.mkdir(parents=True, exist_ok=True)
    schedules.log_path(ws, run_id).write_text("line before the crash\n")
    [dead] = schedules.dead_runs(ws)
    assert dead.id == run_id
    assert schedules.settle_crashed(ws, dead, actor=auth.SYSTEM)
    settled = schedules.get_run(ws, run_id)
    assert (settled.outcome, settled.log) == ("crashed", "line before the crash")
    assert not schedules.settle_crashed(ws, dead, actor=auth.SYSTEM)  # settled once only
