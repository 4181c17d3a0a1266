"""AppTest of the Jobs page: schedules with their last runs, real run records with outcome,
exit code and log, and an admin adding and removing a schedule and setting a model's
auto-promotion policy; an analyst reads but gets no admin controls."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core import auth, retraining, schedules
from tests import drift_support

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 120


@pytest.fixture
def jobs_ws(ws, admin, analyst, tmp_path):
    drift_support.churn_model(ws, tmp_path)
    schedules.add_schedule(
        ws,
        "nightly-churn",
        "0 3 * * *",
        ["retrain", "--model", "churn", "--only-if-drift"],
        actor=admin,
        run_as="ana",
    )
    skipped = retraining.retrain(ws, "churn", actor=analyst, only_if_drift=True)
    unlabelled = drift_support.churn_training_frame().drop(columns=["churned"])
    drift_support.ingest_frame(ws, analyst, unlabelled, "churn_unlabelled", tmp_path)
    with pytest.raises(retraining.RetrainFailed):
        retraining.retrain(ws, "churn", actor=analyst, dataset="churn_unlabelled")
    return ws, skipped


def _page(ws, name: str) -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT)
    at.session_state["user"] = auth.get_user(ws, name)
    at.run()
    at.switch_page("pages/jobs.py").run()
    assert not at.exception
    return at


def _table(at: AppTest, first: str):
    found = [f.value for f in at.dataframe if f.value.columns[0] == first]
    assert found, f"no table starting with {first!r}"
    return found[0]


def test_jobs_page_shows_runs_and_lets_an_admin_manage_schedules(jobs_ws):
    ws, skipped = jobs_ws
    at = _page(ws, "admin")
    assert at.title[0].value == "Jobs"
    listed = _table(at, "name")
    assert list(listed["name"]) == ["nightly-churn"]
    assert list(listed["command"]) == ["pond retrain --model churn --only-if-drift"]

    runs = _table(at, "id")
    assert list(runs["outcome"]) == ["failed", "skipped"]
    assert list(runs["exit code"]) == ["5", "0"]
    shown = {m.label: m.value for m in at.metric}
    assert shown["Succeeded"] == "1" and shown["Failed or crashed"] == "1"
    # The newest run is open: a failure, with its log.
    assert any("failed at training" in e.value for e in at.error)
    assert any("ERROR retrain churn: failed at training" in c.value for c in at.code)

    at.selectbox(key="jobs_run_choice").select(skipped.run_id).run()
    assert not at.exception
    assert any("skipped: no new data" in s.value for s in at.success)
    assert any(f"run #{skipped.run_id} started by ana" in c.value for c in at.code)

    # Add a schedule, then remove the first one.
    at.text_input(key="jobs_add_name").input("hourly-drift")
    at.text_input(key="jobs_add_cron").input("0 * * * *")
    at.text_input(key="jobs_add_command").input("drift --model churn --window 1d")
    at.button(key="jobs_add").click().run()
    assert not at.exception
    assert [s.name for s in schedules.list_schedules(ws)] == ["hourly-drift", "nightly-churn"]
    assert any("Schedule hourly-drift" in s.value for s in at.success)
    at.text_input(key="jobs_add_command").input("serve")
    at.text_input(key="jobs_add_name").input("bad")
    at.button(key="jobs_add").click().run()
    assert any("cannot be scheduled" in e.value for e in at.error)
    at.selectbox(key="jobs_remove_name").select("nightly-churn")
    at.button(key="jobs_remove").click().run()
    assert not at.exception
    assert [s.name for s in schedules.list_schedules(ws)] == ["hourly-drift"]

    # Turn auto-promotion on for churn with a margin.
    at.toggle(key="jobs_policy_enabled").set_value(True)
    at.number_input(key="jobs_policy_margin").set_value(0.02)
    at.button(key="jobs_policy_save").click().run()
    assert not at.exception
    policy = retraining.get_promotion_policy(ws, "churn")
    assert policy is not None and policy.enabled and policy.min_improvement == pytest.approx(0.02)
    assert list(_table(at, "model")["model"]) == ["churn"]


def test_jobs_page_is_read_only_for_an_analyst(jobs_ws):
    ws, _ = jobs_ws
    at = _page(ws, "ana")
    assert list(_table(at, "id")["outcome"]) == ["failed", "skipped"]
    keys = {b.key for b in at.button}
    assert not keys & {"jobs_add", "jobs_remove", "jobs_policy_save"}
