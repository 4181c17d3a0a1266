"""AppTest of the Monitor page: a model's drift report with its charts, two datasets
compared, drift over time, acknowledging an alert, a policy saved, and stored reports."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from core import auth, drift
from tests import drift_support as support

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 180


@pytest.fixture
def monitored(ws, analyst, tmp_path):
    support.churn_model(ws, tmp_path)
    now = datetime.now(UTC)
    support.log_requests(ws, "churn", support.current_records(200, seed=1),
                         now - timedelta(days=1, hours=2))
    support.log_requests(ws, "churn", support.current_records(200, age_shift=15, seed=2),
                         now - timedelta(minutes=10))
    rng = np.random.default_rng(4)
    before = pd.DataFrame({"spend": rng.normal(100, 20, 3000),
                           "plan": rng.choice(["free", "pro"], 3000, p=[0.7, 0.3])})
    after = pd.DataFrame({"spend": rng.normal(130, 20, 2000),
                          "plan": rng.choice(["free", "pro"], 2000, p=[0.7, 0.3])})
    support.ingest_frame(ws, analyst, before, "spend_jan", tmp_path)
    support.ingest_frame(ws, analyst, after, "spend_feb", tmp_path)
    drift.set_policy(ws, "churn", actor=analyst, watched_columns=["age"])
    return ws


def _monitor_page(ws, name: str = "ana") -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT)
    at.session_state["user"] = auth.get_user(ws, name)
    at.run()
    at.switch_page("pages/monitor.py").run()
    assert not at.exception
    return at


def _tables(at: AppTest, *columns: str) -> list[pd.DataFrame]:
    """Every table on the page whose first columns are `columns`, in page order."""
    found = [f.value for f in at.dataframe
             if tuple(f.value.columns[: len(columns)]) == columns]
    assert found, f"no table with columns {columns} on the page"
    return found


SUMMARY = ("column", "kind", "test", "score", "threshold", "drifted")


def test_monitor_page_end_to_end(monitored):
    ws = monitored
    at = _monitor_page(ws)
    assert at.title[0].value == "Monitor"
    assert at.selectbox(key="monitor_model").options == ["churn"]

    # A model against its training data: per-column results, the prediction, a chart, an alert.
    at.selectbox(key="monitor_window").select("7d")
    at.button(key="monitor_run").click().run()
    assert not at.exception
    [stored] = drift.list_reports(ws)
    assert any(f"Report #{stored.id}: churn_train:1 vs inference log of churn" in s.value
               for s in at.success)
    summary = _tables(at, *SUMMARY)[0]
    assert list(summary["column"]) == ["age", "prediction", "city"]  # drifted first
    assert list(summary["drifted"][:2]) == [True, True]
    shown = {m.label: m.value for m in at.metric}
    assert shown["Drifted columns"] == "1 of 2" and shown["Current rows"] == "400"
    assert at.selectbox(key="monitor_report_view_column").value == "age"
    assert len(at.get("plotly_chart")) >= 1
    assert any("Alerts fired: #1" in e.value for e in at.error)

    # Two dataset versions.
    at.radio(key="monitor_mode").set_value("Two dataset versions").run()
    at.selectbox(key="monitor_ref_dataset").select("spend_jan:1")
    at.selectbox(key="monitor_cur_dataset").select("spend_feb:1")
    at.text_input(key="monitor_overrides").input("plan=psi:0.2")
    at.button(key="monitor_run").click().run()
    assert not at.exception
    summary = _tables(at, *SUMMARY)[0]
    assert dict(zip(summary["column"], summary["drifted"], strict=True)) == {
        "spend": True, "plan": False}
    assert dict(zip(summary["column"], summary["test"], strict=True))["plan"] == "PSI"

    # Drift over time: one point per day.
    at.button(key="monitor_time_run").click().run()
    assert not at.exception
    over_time = _tables(at, "period", "rows", "drifted share")[0]
    assert list(over_time["rows"]) == [200, 200]

    # Alerts: acknowledge the open one.
    opened = _tables(at, "id", "fired", "model", "condition")[0]
    assert list(opened["condition"]) == ["column_drift"]
    at.text_input(key="monitor_ack_comment").input("retraining scheduled")
    at.button(key="monitor_ack").click().run()
    assert not at.exception
    [alert] = drift.list_alerts(ws)
    assert alert.acknowledged_by == "ana" and alert.acknowledge_comment == "retraining scheduled"

    # A new policy from the form.
    at.text_input(key="monitor_policy_columns").input("city")
    at.button(key="monitor_policy_save").click().run()
    assert not at.exception
    policy = drift.get_policy(ws, "churn")
    assert policy is not None and policy.watched_columns == ("city",)
    assert policy.max_drift_share == 0.5

    # Stored reports, newest first, reopened from the store.
    reports = _tables(at, "id", "created", "by", "model")[0]
    assert len(reports) == 2 and list(reports["current"]) == [
        "spend_feb:1", "inference log of churn"]
    assert len(_tables(at, *SUMMARY)) == 2  # the report just run and the one reopened


def test_monitor_page_without_datasets(ws):
    at = _monitor_page(ws, "rita")
    assert any("No datasets yet" in i.value for i in at.info)
