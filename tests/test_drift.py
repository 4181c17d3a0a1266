"""Drift reports end to end: planted drift found with no false alarm, reports stored and
listed, reference statistics computed once, a model's logged inferences compared with its
training data, drift and performance over time, alert policies firing into a local webhook,
and bad input handled with clear messages."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from core import auth, cli, drift, inference_log, store, webhooks
from core import drift_charts as charts
from core.errors import IllegalTransition, InvalidInput, NotFound, PermissionDenied
from tests import drift_support as support

NOW = datetime.now(UTC)


def _frames(n_ref: int, n_cur: int, seed: int = 3) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)

    def frame(n: int, drifted: bool) -> pd.DataFrame:
        return pd.DataFrame({
            "income": rng.normal(50_000 + (15_000 if drifted else 0), 10_000, n),
            "tenure": rng.integers(0, 120, n),
            "score": rng.normal(0.0, 1.0, n),
            "plan": rng.choice(["free", "pro", "team"], n,
                               p=[0.2, 0.3, 0.5] if drifted else [0.6, 0.3, 0.1]),
            "region": rng.choice(["north", "south", "east", "west"], n),
            "active": rng.choice([True, False], n),
        })

    return frame(n_ref, False), frame(n_cur, True)


@pytest.fixture
def drifted_pair(ws, analyst, tmp_path):
    ref, cur = _frames(5000, 4000)
    support.ingest_frame(ws, analyst, ref, "customers", tmp_path)
    support.ingest_frame(ws, analyst, cur, "customers_now", tmp_path)
    return ws


def test_planted_drift_found_without_false_alarms(drifted_pair, analyst):
    report = drift.drift_report(drifted_pair, reference="customers", current="customers_now",
                                actor=analyst)
    assert sorted(report.drifted_columns) == ["income", "plan"]
    by_name = {c.column: c for c in report.columns}
    assert {c: r.test for c, r in by_name.items()} == {
        "income": "wasserstein", "tenure": "wasserstein", "score": "wasserstein",
        "plan": "jensenshannon", "region": "jensenshannon", "active": "jensenshannon",
    }
    assert by_name["income"].score > 1.0 and by_name["score"].score < 0.1
    assert by_name["income"].psi_band == "major"
    assert report.drifted_share == pytest.approx(2 / 6)
    assert not report.dataset_drift
    assert report.reference_rows == 5000 and report.current_rows == 4000
    assert by_name["income"].distribution["type"] == "histogram"
    assert sum(by_name["plan"].distribution["current"]) == pytest.approx(1.0)


def test_small_reference_uses_hypothesis_tests(ws, analyst, tmp_path):
    ref, cur = _frames(800, 600, seed=5)
    ref["pair"] = np.where(np.arange(800) % 3 == 0, "a", "b")
    cur["pair"] = np.where(np.arange(600) % 3 == 0, "a", "b")
    support.ingest_frame(ws, analyst, ref, "small_ref", tmp_path)
    support.ingest_frame(ws, analyst, cur, "small_cur", tmp_path)
    report = drift.drift_report(ws, reference="small_ref", current="small_cur", actor=analyst)
    tests = {c.column: c.test for c in report.columns}
    assert tests["income"] == "ks" and tests["plan"] == "chisquare"
    assert tests["pair"] == "z" and tests["active"] == "z"
    assert report.column("income").drifted and report.column("income").score < 1e-10
    assert not report.column("pair").drifted and report.column("pair").score > 0.05


def test_reports_stored_listed_and_reference_computed_once(drifted_pair, analyst, reviewer):
    ws = drifted_pair
    first = drift.drift_report(ws, reference="customers", current="customers_now",
                               actor=analyst, column_tests={"score": ("ks", 0.01)})
    stats = drift.reference_statistics(ws, "customers", actor=analyst)
    assert not stats.computed_now and stats.row_count == 5000
    assert stats.columns["plan"].counts is not None
    second = drift.drift_report(ws, reference="customers", current="customers_now",
                                actor=reviewer, drift_share=0.3)
    assert second.dataset_drift and second.drift_share_threshold == 0.3
    assert first.column("score").test == "ks" and first.column("score").overridden
    listed = drift.list_reports(ws)
    assert [r.id for r in listed] == [second.id, first.id]
    assert listed[0].created_by == "rita" and listed[0].columns_drifted == 2
    again = drift.get_report(ws, first.id)
    assert again.columns == first.columns and again.created_by == "ana"
    assert again.column("income").distribution == first.column("income").distribution
    with store.read(ws) as con:
        n_stats = con.execute("SELECT count(*) FROM drift_reference_stats").fetchall()[0][0]
        audit = con.execute(
            "SELECT count(*) FROM audit_log WHERE action = 'drift_report_created'"
        ).fetchall()[0][0]
        stored_arrays = con.execute(
            "SELECT count(*) FROM artifacts WHERE kind = 'drift_reference'").fetchall()[0][0]
    assert n_stats == 1 and audit == 2 and stored_arrays == 3  # income, tenure, score
    with pytest.raises(NotFound, match="no drift report #999"):
        drift.get_report(ws, 999)
    rows = charts.summary_table(first)
    assert rows[0]["drifted"] and {r["column"] for r in rows} == {c.column for c in first.columns}
    assert charts.distribution_figure(first.column("plan")).data[0].type == "bar"


def test_bad_input_is_explained_not_crashed_on(ws, analyst, tmp_path):
    rng = np.random.default_rng(11)
    n = 1500
    ref = pd.DataFrame({
        "kept": rng.normal(0, 1, n),
        "gone": rng.normal(0, 1, n),
        "code": rng.integers(100, 200, n),
        "qty": rng.integers(1, 50, n),
        "empty": pd.Series([None] * n, dtype="float64"),
        "colour": rng.choice(["red", "blue"], n),
        "when": pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 99, n), unit="D"),
    })
    cur = pd.DataFrame({
        "kept": np.concatenate([rng.normal(0, 1, n - 3), [np.inf, -np.inf, np.nan]]),
        "new_col": rng.normal(0, 1, n),
        "code": [str(v) for v in rng.integers(100, 200, n)],   # int → text holding numbers
        "qty": ["many"] + [str(v) for v in rng.integers(1, 50, n - 1)],  # int → real text
        "empty": pd.Series([None] * n, dtype="float64"),
        "colour": rng.choice(["red", "blue", "green"], n),      # a category only in current
        "when": pd.Timestamp("2024-06-01") + pd.to_timedelta(rng.integers(0, 9, n), unit="D"),
    })
    support.ingest_frame(ws, analyst, ref, "messy_ref", tmp_path)
    support.ingest_frame(ws, analyst, cur, "messy_cur", tmp_path)
    report = drift.drift_report(ws, reference="messy_ref", current="messy_cur", actor=analyst)
    tested = {c.column for c in report.columns}
    assert tested == {"kept", "code", "colour"}
    skipped = {s.column: s.reason for s in report.skipped}
    assert skipped["gone"] == "missing in the current data"
    assert skipped["new_col"] == "missing in the reference data"
    assert "changed type" in skipped["qty"] and "'many'" in skipped["qty"]
    assert "no values in the reference" in skipped["empty"]
    assert "date-time" in skipped["when"]
    kept = report.column("kept")
    assert kept.current_non_finite == 2 and kept.current_missing == 1
    assert kept.current_rows == n - 3 and not kept.drifted
    assert any("read as numbers" in note for note in report.column("code").notes)
    colour = report.column("colour")
    assert colour.drifted and any("'green'" in note for note in colour.notes)
    assert any("qty" in w for w in report.warnings) and any("gone" in w for w in report.warnings)


def test_inputs_that_cannot_be_compared(ws, analyst, reviewer, tmp_path):
    ref, _ = _frames(100, 10)
    support.ingest_frame(ws, analyst, ref, "base", tmp_path)
    with pytest.raises(InvalidInput, match="name a model"):
        drift.drift_report(ws, reference="base", actor=analyst)
    with pytest.raises(InvalidInput, match="unknown drift test"):
        drift.drift_report(ws, reference="base", current="base", actor=analyst,
                           column_tests={"income": "magic"})
    with pytest.raises(InvalidInput, match="applies to numeric columns, but column 'plan'"):
        drift.drift_report(ws, reference="base", current="base", actor=analyst,
                           column_tests={"plan": "ks"})
    with pytest.raises(InvalidInput, match="which the report does not compare"):
        drift.drift_report(ws, reference="base", current="base", actor=analyst,
                           column_tests={"incme": "psi"})
    with pytest.raises(InvalidInput, match="must be a number in"):
        drift.drift_report(ws, reference="base", current="base", actor=analyst, drift_share=2)
    with pytest.raises(NotFound):
        drift.drift_report(ws, reference="base", current="missing", actor=analyst)
    identical = drift.drift_report(ws, reference="base", current="base", actor=reviewer)
    assert identical.drifted_columns == [] and identical.column("income").score == 1.0
    disabled = auth.User("ghost", auth.Role.ANALYST, disabled=True)
    with pytest.raises(PermissionDenied):
        drift.drift_report(ws, reference="base", current="base", actor=disabled)


# --- a model and its inference log ---------------------------------------------------------


@pytest.fixture
def served_model(ws, tmp_path):
    version = support.churn_model(ws, tmp_path)
    # Three days of traffic: day 0 like training, day 1 slightly older, day 2 much older
    # customers with far more from Oslo.
    support.log_requests(ws, "churn", support.current_records(300, seed=1),
                         NOW - timedelta(days=2, hours=1))
    support.log_requests(ws, "churn", support.current_records(300, age_shift=4, seed=2),
                         NOW - timedelta(days=1, hours=1))
    support.log_requests(ws, "churn", support.current_records(300, age_shift=15,
                                                              oslo_share=0.7, seed=3),
                         NOW - timedelta(minutes=5))
    return version


def test_model_report_compares_training_data_with_logged_inferences(ws, analyst,
                                                                    served_model):
    report = drift.drift_report(ws, model="churn", actor=analyst)
    assert report.model_ref == f"churn:{served_model.version}"
    assert report.reference == "churn_train:1" and report.current_kind == "inference_log"
    assert report.current_rows == 900
    assert [c.column for c in report.columns] == ["age", "city"]
    assert {c.test for c in report.columns} == {"ks", "chisquare"}  # 400 reference rows
    assert report.column("age").drifted
    assert [s.column for s in report.skipped] == ["signup"]
    assert report.prediction is not None and report.prediction.test == "z"
    assert report.prediction.drifted  # older customers and Oslo: far more "yes"
    recent = drift.drift_report(ws, model="churn", window="1d", actor=analyst)
    assert recent.current_rows == 300 and recent.window == "1d"
    assert recent.column("city").drifted
    early = drift.drift_report(ws, model="churn@champion", window="7d", actor=analyst,
                               reference="churn_train:1", columns=["age"])
    assert [c.column for c in early.columns] == ["age"]


def test_a_window_without_rows_and_a_model_without_logs(ws, analyst, served_model, tmp_path):
    with pytest.raises(InvalidInput, match="no successfully answered requests in the last 1m"):
        drift.drift_report(ws, model="churn", window="1m", actor=analyst)
    with pytest.raises(InvalidInput, match="must look like 30m"):
        drift.drift_report(ws, model="churn", window="yesterday", actor=analyst)
    support.churn_model(ws, tmp_path / "other", name="quiet")
    with pytest.raises(InvalidInput, match="model 'quiet' has no logged inferences yet"):
        drift.drift_report(ws, model="quiet", actor=analyst)


def test_drift_over_time_shows_the_slow_shift(ws, analyst, served_model):
    timeline = drift.drift_over_time(ws, "churn", "day", actor=analyst)
    assert len(timeline.points) == 3
    assert [p.rows for p in timeline.points] == [300, 300, 300]
    ages = [p.scores["age"] for p in timeline.points]
    assert ages[0] > ages[1] > ages[2]  # p-values fall as the customers age
    assert not timeline.points[0].drifted["age"] and timeline.points[2].drifted["age"]
    assert timeline.points[2].prediction_score < timeline.points[0].prediction_score
    assert [s.column for s in timeline.skipped] == ["signup"]
    figure = charts.drift_over_time_figure(timeline)
    assert {t.name for t in figure.data} >= {"age (ks)", "share of drifted columns"}
    weekly = drift.drift_over_time(ws, "churn", "week", actor=analyst)
    assert sum(p.rows for p in weekly.points) == 900
    with pytest.raises(InvalidInput, match="'freq' parameter"):
        drift.drift_over_time(ws, "churn", "month", actor=analyst)


def test_performance_over_time_from_labels_that_arrive_later(ws, analyst, served_model,
                                                             tmp_path):
    inputs = inference_log.inference_inputs(ws, "churn")
    inputs["record"] = inputs.groupby("_request_id").cumcount()
    first_day = inputs[inputs["_received_at"] == inputs["_received_at"].min()]
    labels = first_day[["_request_id", "record"]].rename(columns={"_request_id": "request_id"})
    truth = np.where((first_day["age"] > 45) | (first_day["city"] == "oslo"), "yes", "no")
    truth[:30] = np.where(truth[:30] == "yes", "no", "yes")  # the model cannot know these
    labels["churned"] = truth
    support.ingest_frame(ws, analyst, labels, "churn_labels", tmp_path)
    timeline = drift.performance_over_time(ws, "churn", "churn_labels", actor=analyst)
    assert timeline.matched_rows == 300 and timeline.logged_rows == 900
    assert len(timeline.points) == 1 and timeline.points[0].rows == 300
    logged = drift._logged_predictions(ws, "churn", None).merge(
        labels.rename(columns={"request_id": "_request_id", "record": "_record"}),
        on=["_request_id", "_record"])
    expected = float((logged["prediction"] == logged["churned"]).mean())
    assert timeline.points[0].metrics["accuracy"] == pytest.approx(expected)
    assert 0.8 < expected < 0.95
    assert timeline.main_metric == "roc_auc"
    assert charts.performance_figure(timeline).data[0].y[0] == timeline.points[0].metrics[
        "roc_auc"]
    without_record = labels.drop(columns=["record"])
    support.ingest_frame(ws, analyst, without_record, "loose_labels", tmp_path)
    with pytest.raises(InvalidInput, match="add a 0-based `record` column"):
        drift.performance_over_time(ws, "churn", "loose_labels")
    with pytest.raises(InvalidInput, match="no column 'target'"):
        drift.performance_over_time(ws, "churn", "churn_labels", label_column="target")


# --- alerts ---------------------------------------------------------------------------------


class _Receiver(http.server.BaseHTTPRequestHandler):
    status = 200
    received: list[tuple[dict, dict]] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append((dict(self.headers), json.loads(body)))
        self.server.raw_bodies.append(body)  # type: ignore[attr-defined]
        self.send_response(type(self).status)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[tuple[str, type[_Receiver], http.server.HTTPServer]]:
    handler = type("Receiver", (_Receiver,), {"status": 200, "received": []})
    server = http.server.HTTPServer(("127.0.0.1", 0), handler)
    server.raw_bodies = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", handler, server
    finally:
        server.shutdown()
        server.server_close()


def test_alert_fires_and_reaches_the_webhook(ws, analyst, reviewer, served_model, receiver,
                                             monkeypatch):
    url, handler, server = receiver
    monkeypatch.setattr(webhooks, "RETRY_DELAYS", (0.01, 0.01))
    policy = drift.set_policy(ws, "churn", actor=analyst, max_drift_share=0.5,
                              watched_columns=["city"], webhook_url=url,
                              webhook_secret="s3cret-s3cret-s3cret")
    assert policy.describe() == ["drifted share ≥ 0.5", "any of city drifted"]
    assert policy.secret_hint == "…cret"
    report = drift.drift_report(ws, model="churn", window="1d", actor=analyst)
    assert webhooks.wait_for_deliveries(timeout=30)
    assert len(report.alerts) == 2
    alerts = drift.list_alerts(ws, "churn", open_only=True)
    assert {a.condition for a in alerts} == {"drift_share", "column_drift"}
    assert all(a.report_id == report.id and a.is_open for a in alerts)
    assert drift.get_report(ws, report.id).alerts == report.alerts
    assert len(handler.received) == 2
    headers, payload = handler.received[0]
    assert payload["text"].startswith(":rotating_light: Pond alert #")
    assert payload["event"] == "drift_alert" and payload["alert"]["model"] == "churn"
    assert webhooks.verify("s3cret-s3cret-s3cret", server.raw_bodies[0],
                           headers["X-Pond-Signature-256"])
    deliveries = drift.alert_deliveries(ws)
    assert {d.outcome for d in deliveries} == {"delivered"}
    opened = drift.open_alerts(ws)
    assert {a["id"] for a in opened} == set(report.alerts) and opened[0]["open"]

    done = drift.acknowledge(ws, report.alerts[0], actor=reviewer, comment="retraining")
    assert done.acknowledged_by == "rita" and not done.is_open
    with pytest.raises(IllegalTransition, match="already acknowledged by rita"):
        drift.acknowledge(ws, report.alerts[0], actor=analyst)
    with pytest.raises(NotFound, match="no alert #4242"):
        drift.acknowledge(ws, 4242, actor=analyst)
    assert len(drift.list_alerts(ws, open_only=True)) == 1
    assert len(drift.list_alerts(ws)) == 2


def test_failed_delivery_is_recorded_and_quiet_reports_fire_nothing(ws, analyst, served_model,
                                                                    receiver, monkeypatch):
    url, handler, _ = receiver
    handler.status = 503
    monkeypatch.setattr(webhooks, "RETRY_DELAYS", (0.01, 0.01))
    drift.set_policy(ws, "churn", actor=analyst, watched_columns=["age"], webhook_url=url)
    report = drift.drift_report(ws, model="churn", actor=analyst)
    assert webhooks.wait_for_deliveries(timeout=30)
    assert len(report.alerts) == 1
    [delivery] = drift.alert_deliveries(ws, report.alerts[0])
    assert delivery.outcome == "failed" and delivery.attempts == 3
    assert delivery.response_status == 503 and "503" in delivery.error
    assert len(handler.received) == 3
    drift.set_policy(ws, "churn", actor=analyst, max_drift_share=1.0)
    # The model's own training data as "current": nothing moved, nothing fires.
    calm = drift.drift_report(ws, model="churn", current="churn_train", actor=analyst)
    assert calm.alerts == () and calm.drifted_columns == []
    assert calm.prediction is not None and calm.prediction.score == pytest.approx(1.0)


def test_metric_policy_fires_from_performance(ws, analyst, served_model, tmp_path):
    logged = drift._logged_predictions(ws, "churn", None)
    labels = logged[["_request_id", "_record"]].rename(
        columns={"_request_id": "request_id", "_record": "record"})
    labels["churned"] = "no"  # the latest day's older customers are mostly predicted "yes"
    support.ingest_frame(ws, analyst, labels, "all_no", tmp_path)
    drift.set_policy(ws, "churn", actor=analyst, metric="accuracy", metric_limit=0.95)
    timeline = drift.performance_over_time(ws, "churn", "all_no", actor=analyst)
    assert len(timeline.alerts) == 1
    [alert] = drift.list_alerts(ws, "churn")
    assert alert.condition == "metric" and "accuracy" in alert.message
    assert "below the limit 0.95" in alert.message


def test_policy_validation(ws, analyst, reviewer, served_model):
    with pytest.raises(InvalidInput, match="needs a condition"):
        drift.set_policy(ws, "churn", actor=analyst)
    with pytest.raises(InvalidInput, match="no feature 'agee'"):
        drift.set_policy(ws, "churn", actor=analyst, watched_columns=["agee"])
    with pytest.raises(InvalidInput, match="both a metric and a limit"):
        drift.set_policy(ws, "churn", actor=analyst, metric="accuracy")
    with pytest.raises(InvalidInput, match="'metric' parameter must be one of"):
        drift.set_policy(ws, "churn", actor=analyst, metric="rmse", metric_limit=3)
    with pytest.raises(InvalidInput, match="must be an http"):
        drift.set_policy(ws, "churn", actor=analyst, max_drift_share=0.5, webhook_url="ftp://x")
    with pytest.raises(NotFound):
        drift.set_policy(ws, "nobody", actor=analyst, max_drift_share=0.5)
    drift.set_policy(ws, "churn", actor=reviewer, max_drift_share=0.4, enabled=False)
    stored = drift.get_policy(ws, "churn")
    assert stored is not None and not stored.enabled and stored.updated_by == "rita"
    assert drift.drift_report(ws, model="churn", actor=analyst).alerts == ()
    assert [p.model for p in drift.list_policies(ws)] == ["churn"]


# --- CLI --------------------------------------------------------------------------------------


def test_cli_report_alerts_and_policy(drifted_pair, served_model, capsys, monkeypatch):
    monkeypatch.setenv("POND_USER", "ana")
    assert cli.main(["drift", "--reference", "customers", "--current", "customers_now",
                     "--json", "--test", "score=psi:0.2"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert sorted(out["drifted_columns"]) == ["income", "plan"]
    assert next(c for c in out["columns"] if c["column"] == "score")["test"] == "psi"
    assert cli.main(["drift", "--reference", "customers", "--current", "customers_now",
                     "--drift-share", "0.3", "--fail-on-drift"]) == 3
    text = capsys.readouterr().out
    assert "DATASET DRIFT: 2 of 6 columns drifted" in text and "Wasserstein" in text
    assert cli.main(["alerts", "policy", "set", "churn", "--column", "age"]) == 0
    assert "any of age drifted" in capsys.readouterr().out
    assert cli.main(["drift", "--model", "churn", "--window", "7d"]) == 0
    assert "alerts fired: #1" in capsys.readouterr().out
    assert cli.main(["alerts", "list", "--json"]) == 0
    [alert] = json.loads(capsys.readouterr().out)
    assert cli.main(["alerts", "ack", str(alert["id"]), "--comment", "looked"]) == 0
    assert "acknowledged by ana" in capsys.readouterr().out
    assert cli.main(["drift", "reports", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 3
    assert cli.main(["drift", "over-time", "--model", "churn"]) == 0
    assert "drifted share" in capsys.readouterr().out
    assert cli.main(["drift", "--model", "churn", "--window", "forever"]) == 1
    assert "30m, 12h, 1d" in capsys.readouterr().err
