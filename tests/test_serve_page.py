"""AppTest of the Serve page: live versions, traffic from real inference logs, and
the "try it" form against a running server and in-process."""

from __future__ import annotations

import orjson
import pytest
from streamlit.testing.v1 import AppTest

from core import auth, tokens
from tests.serving_models import ROOT, free_port, publish, thread_server, train_churn

ONE = {"age": 52.0, "city": "oslo", "signup": "2024-03-01T00:00:00Z"}


def _serve_page(ws, name: str = "ana") -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.session_state["user"] = auth.get_user(ws, name)
    at.run()
    at.switch_page("pages/serve.py").run()
    assert not at.exception
    return at


def _table(at: AppTest, first_column: str):
    for frame in at.dataframe:
        if frame.value.columns[0] == first_column and len(frame.value.columns) > 5:
            return frame.value
    raise AssertionError(f"no table starting with {first_column!r}")


@pytest.fixture
def traffic(ws, admin, tmp_path):
    """A churn champion that answered 4 requests and refused 1, through a real server."""
    publish(ws, "churn", train_churn(tmp_path / "m"), task="binary")
    secret = tokens.create_token(ws, "page", actor=admin)[1]
    with thread_server(ws) as live, live.client(secret) as http:
        for i in range(4):
            body = {"records": [{**ONE, "age": float(i)}] * (i + 1)}
            assert http.post("/v1/models/churn/predict", content=orjson.dumps(body)).is_success
        http.post("/v1/models/churn/predict", content=b'{"records": [{"age": "x"}]}')
    return secret


def test_serve_page_shows_live_versions_and_traffic(ws, traffic):
    at = _serve_page(ws)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics == {"Live versions": "1", "Requests": "5", "Errors": "1"}
    live = _table(at, "model")
    assert live[["model", "version", "served"]].values.tolist() == [["churn", 1, "yes"]]
    traffic_table = next(f.value for f in at.dataframe if "p95 ms" in f.value.columns)
    row = traffic_table.iloc[0]
    assert (row["requests"], row["errors"], row["records"]) == (5, 1, 1 + 2 + 3 + 4)
    assert 0 < row["p50 ms"] <= row["p95 ms"] <= row["p99 ms"]


def test_try_it_without_a_server_predicts_in_process(ws, traffic):
    at = _serve_page(ws)
    assert '"city": "lisbon"' in at.text_area(key="serve_try_body_churn").value
    at.text_input(key="serve_try_url").input(f"http://127.0.0.1:{free_port()}")
    at.button(key="serve_try_send").click().run()
    assert not at.exception
    assert "in-process" in at.caption[-1].value and "not logged" in at.caption[-1].value
    assert "churn version 1 answered" in at.success[0].value
    assert at.json[0].value and '"predictions"' in at.json[0].value


def test_try_it_sends_to_a_running_server(ws, traffic):
    with thread_server(ws) as live:
        at = _serve_page(ws)
        at.text_input(key="serve_try_url").input(live.url)
        at.text_input(key="serve_try_token").input(traffic)
        at.text_area(key="serve_try_body_churn").input(orjson.dumps({"records": [ONE]}).decode())
        at.button(key="serve_try_send").click().run()
        assert not at.exception
        assert "HTTP 200, server" in at.caption[-1].value
        at.text_input(key="serve_try_token").input("pond_wrong")
        at.button(key="serve_try_send").click().run()
        assert "HTTP 401" in at.caption[-1].value
        assert "unknown or revoked" in at.error[0].value


def test_serve_page_without_champions_says_what_to_do(ws):
    at = _serve_page(ws, "rita")
    assert any("No model has a champion yet" in i.value for i in at.info)
    assert any("Nothing to try" in i.value for i in at.info)
