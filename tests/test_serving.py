"""The REST server over real HTTP: tokens, validation, limits, alias hot-swap,
tampered artifacts, the inference log (completeness, SIGTERM, two servers) and a
schemathesis run against the OpenAPI document."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import numpy as np
import orjson
import pandas as pd
import pytest

from core import auth, inference_log, model_contract, registry, serving, store, tokens
from core.cli import main
from core.errors import AuthenticationFailed, IllegalTransition, NotFound, PermissionDenied
from core.store import artifacts
from tests.serving_models import (
    ROOT,
    churn_frame,
    free_port,
    publish,
    start_process_server,
    thread_server,
    train_churn,
    train_price,
)

ONE = {"age": 52.0, "city": "oslo", "signup": "2024-03-01T00:00:00Z"}


# --- fixtures ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def served(_template_home, tmp_path_factory):
    """A workspace with two champions (churn: binary, price: regression) and a token,
    served by one server for the read-only tests of this module."""
    home = tmp_path_factory.mktemp("served") / "pond"
    shutil.copytree(_template_home, home)
    ws = store.open_workspace(home)
    files = tmp_path_factory.mktemp("models")
    churn = publish(ws, "churn", train_churn(files / "churn"), task="binary")
    publish(ws, "price", train_price(files / "price"), task="regression")
    _, secret = tokens.create_token(ws, "tests", actor=auth.get_user(ws, "admin"))
    with thread_server(ws, refresh_s=0.2) as live:
        yield {"ws": ws, "live": live, "token": secret, "churn": churn,
               "http": live.client(secret)}


@pytest.fixture
def admin_token(ws, admin):
    return tokens.create_token(ws, "client", actor=admin)[1]


def _predict(http: httpx.Client, model: str, body: object) -> httpx.Response:
    return http.post(f"/v1/models/{model}/predict", content=orjson.dumps(body))


def _error(response: httpx.Response) -> dict:
    return response.json()["error"]


def _wait_until(condition, timeout_s: float = 30.0) -> None:
    import time

    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "the condition did not come true in time"
        time.sleep(0.05)


# --- predictions ----------------------------------------------------------------------------


def test_predict_answers_like_the_model_in_process(served, tmp_path):
    frame = churn_frame(n=25, seed=7)
    records = json.loads(frame.to_json(orient="records", date_format="iso"))
    response = _predict(served["http"], "churn", {"records": records})
    assert response.status_code == 200
    body = response.json()
    assert body["model"] == "churn" and body["version"] == served["churn"].version
    assert response.headers["x-request-id"] == body["request_id"]
    assert body["classes"] == ["no", "yes"]
    files = registry.version_files(served["ws"], "churn", served["churn"].version)
    expected = model_contract.load_model(files).predict(frame)
    assert body["predictions"] == expected.values
    np.testing.assert_allclose(body["probabilities"], expected.probabilities, rtol=1e-12)
    assert body["warnings"] == []
    # One-record requests take LightGBM's single-row fast path: the same numbers.
    for record, probabilities in zip(records, expected.probabilities.tolist(), strict=True):
        one = _predict(served["http"], "churn", {"records": [record]}).json()
        assert one["probabilities"] == [probabilities]


def test_regression_has_no_probabilities(served):
    body = _predict(served["http"], "price", {"records": [{"rooms": 3, "area": 70.5}]}).json()
    assert set(body) == {"model", "version", "request_id", "predictions", "warnings"}
    assert isinstance(body["predictions"][0], float)


def test_extra_fields_and_unseen_categories_are_warnings(served):
    body = _predict(served["http"], "churn", {"records": [
        {**ONE, "customer_id": 17, "note": "vip"}, {**ONE, "city": "paris"}, {**ONE, "city": None},
    ]}).json()
    assert len(body["predictions"]) == 3
    by_code = {w["code"]: w for w in body["warnings"]}
    assert by_code["ignored_fields"]["fields"] == ["customer_id", "note"]
    assert by_code["unseen_categories"]["counts"] == {"city": 1}
    # An unseen category is a missing value, exactly as a null.
    assert body["probabilities"][1] == body["probabilities"][2]


def test_client_request_id_is_echoed(served):
    response = served["http"].post("/v1/models/churn/predict",
                                   content=orjson.dumps({"records": [ONE]}),
                                   headers={"x-request-id": "order-42"})
    assert response.json()["request_id"] == "order-42"
    assert response.headers["x-request-id"] == "order-42"


def test_models_health_and_unknown_routes(served):
    http = served["http"]
    listed = http.get("/v1/models").json()
    assert [(m["name"], m["version"]) for m in listed["models"]] == [("churn", 1), ("price", 1)]
    churn = listed["models"][0]
    assert [f["name"] for f in churn["features"]] == ["age", "city", "signup"]
    assert churn["classes"] == ["no", "yes"] and listed["unavailable"] == []
    health = httpx.get(served["live"].url + "/health").json()
    assert health["status"] == "ok" and health["models"] == 2
    missing = _predict(http, "nope", {"records": [ONE]})
    assert missing.status_code == 404 and "served: churn, price" in _error(missing)["message"]
    assert http.get("/v2/whatever").status_code == 404
    assert http.delete("/v1/models").status_code == 405


# --- tokens ---------------------------------------------------------------------------------


def test_requests_without_a_valid_token_get_401(served):
    url = served["live"].url
    for headers in ({}, {"authorization": "Bearer pond_not-a-real-token"},
                    {"authorization": f"Basic {served['token']}"},
                    {"authorization": "Bearer"}):
        response = httpx.post(f"{url}/v1/models/churn/predict", headers=headers,
                              content=orjson.dumps({"records": [ONE]}))
        assert response.status_code == 401, headers
        assert _error(response)["code"] == "authentication_failed"
        assert httpx.get(f"{url}/v1/models", headers=headers).status_code == 401
    # A wrong token on an unknown model is still 401: names are not revealed.
    assert httpx.post(f"{url}/v1/models/secret/predict", content=b"{}").status_code == 401


def test_token_lifecycle_reaches_a_running_server(ws, admin, analyst, tmp_path):
    publish(ws, "churn", train_churn(tmp_path / "m"), task="binary")
    info, secret = tokens.create_token(ws, "checkout-service", actor=admin)
    assert secret.startswith("pond_") and len(secret) > 40
    assert info.display == f"pond_…{secret[-4:]}" and info.active
    with thread_server(ws, refresh_s=0.1) as live, live.client(secret) as http:
        assert _predict(http, "churn", {"records": [ONE]}).status_code == 200
        later, later_secret = tokens.create_token(ws, "batch-job", actor=admin)
        with live.client(later_secret) as other:
            _wait_until(lambda: _predict(other, "churn", {"records": [ONE]}).status_code == 200)
        tokens.revoke_token(ws, info.id, actor=admin)
        _wait_until(lambda: _predict(http, "churn", {"records": [ONE]}).status_code == 401)
    assert tokens.verify(ws, later_secret).name == "batch-job"
    with pytest.raises(AuthenticationFailed):
        tokens.verify(ws, secret)
    with pytest.raises(IllegalTransition, match="already revoked"):
        tokens.revoke_token(ws, info.id, actor=admin)
    with pytest.raises(NotFound, match="token 999"):
        tokens.revoke_token(ws, 999, actor=admin)
    with pytest.raises(PermissionDenied, match="manage tokens"):
        tokens.create_token(ws, "mine", actor=analyst)
    listed = tokens.list_tokens(ws, actor=admin)
    assert [(t.name, t.active) for t in listed] == [("checkout-service", False),
                                                     ("batch-job", True)]
    with store.read(ws) as con:
        stored = con.execute("SELECT token_sha256 FROM api_tokens").fetchall()
        actions = con.execute("SELECT action FROM audit_log WHERE entity_type = 'api_token'"
                              " ORDER BY id").fetchall()
    assert secret not in str(stored) and (tokens.hash_token(secret),) in stored
    assert [a for (a,) in actions] == ["token_created", "token_created", "token_revoked"]


def test_tokens_cli(ws, capsys):
    assert main(["tokens", "create", "ci", "--user", "admin", "--json"]) == 0
    created = json.loads(capsys.readouterr().out)
    assert created["secret"].startswith("pond_") and created["name"] == "ci"
    assert main(["tokens", "list", "--user", "admin", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(t["id"], t["active"]) for t in listed] == [(created["id"], True)]
    assert created["secret"] not in json.dumps(listed)
    assert main(["tokens", "revoke", str(created["id"]), "--user", "admin"]) == 0
    assert "revoked token" in capsys.readouterr().out
    assert main(["tokens", "create", "x", "--user", "ana"]) == 1
    assert "may not manage tokens" in capsys.readouterr().err


# --- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"records": [{"city": "oslo", "signup": None}]}, "age", "has no field 'age'"),
        ({"records": [ONE, {**ONE, "age": "52"}]}, "age", "of record 1 must be a number"),
        ({"records": [{**ONE, "age": True}]}, "age", "must be a number or null; got boolean"),
        ({"records": [{**ONE, "city": ["oslo"]}]}, "city", "must be a category"),
        ({"records": [{**ONE, "signup": 20240301}]}, "signup", "must be a date-time"),
        ({"records": [{**ONE, "signup": "not a date"}]}, None, "'signup'"),
        ({"records": [ONE, "not an object"]}, None, "record 1 must be an object"),
        ({"records": []}, "records", "'records' is empty"),
        ({"records": {"age": 1}}, "records", "needs 'records'"),
        ({"rows": [ONE]}, "rows", "unknown request field 'rows'"),
        ({"prompts": ["hi"]}, "prompts", "is a tabular model"),
        ({"records": [ONE], "explain": "yes"}, "explain", "'explain' must be true or false"),
    ],
)
def test_invalid_records_get_422_naming_the_field(served, body, field, words):
    response = _predict(served["http"], "churn", body)
    assert response.status_code == 422, response.text
    error = _error(response)
    assert error["code"] == "invalid_input" and words in error["message"]
    if field is not None:
        assert error["field"] == field
    if field == "age":
        assert error["expected"] == "a number or null"


@pytest.mark.parametrize(
    "raw",
    [b'{"records": [{"age": NaN, "city": "oslo", "signup": null}]}',
     b'{"records": [{"age": Infinity, "city": "oslo", "signup": null}]}',
     b'{"records": [{"age": 1e999, "city": "oslo", "signup": null}]}',
     b'{"records": [', b"", b"records=1", b'["a list"]', b'"text"'],
)
def test_malformed_json_nan_and_infinity_get_400(served, raw):
    response = served["http"].post("/v1/models/churn/predict", content=raw)
    assert response.status_code == 400
    error = _error(response)
    assert error["code"] == "malformed_request"
    if b"NaN" in raw or b"Inf" in raw or b"e999" in raw:
        assert "NaN and Infinity are not JSON: send null" in error["message"]


def test_null_is_a_missing_value(served):
    body = _predict(served["http"], "churn",
                    {"records": [{"age": None, "city": None, "signup": None}]}).json()
    assert len(body["probabilities"][0]) == 2


def test_oversized_bodies_and_batches_get_413(served):
    http = served["http"]
    url = "/v1/models/churn/predict"
    too_big = http.post(url, content=b"x" * 50_000_000)  # 50 MB, refused unread
    assert too_big.status_code == 413 and "at most 10,485,760 bytes" in _error(too_big)["message"]

    def chunks():
        for _ in range(12):
            yield b" " * 1_000_000

    streamed = http.post(url, content=chunks())  # no Content-Length
    assert streamed.status_code == 413
    # A million (empty) records fit in 3 MB, so the record limit is what refuses them.
    million = http.post(url, content=orjson.dumps({"records": [{}] * 1_000_000}))
    assert million.status_code == 413
    assert "1,000,000 records" in _error(million)["message"]
    assert "at most 10,000" in _error(million)["message"]
    # The server keeps answering afterwards.
    assert _predict(http, "churn", {"records": [ONE] * 10_000}).status_code == 200


def test_explain_adds_shap_contributions(served):
    if not serving.explain_available():  # a Pond without core.explain: a clear 501
        response = _predict(served["http"], "churn", {"records": [ONE], "explain": True})
        assert response.status_code == 501
        assert "not available in this Pond yet" in _error(response)["message"]
        return
    body = _predict(served["http"], "churn",
                    {"records": [ONE, {**ONE, "age": 20.0}], "explain": True}).json()
    assert len(body["contributions"]) == 2
    for row, probabilities in zip(body["contributions"], body["probabilities"], strict=True):
        assert list(row["contributions"]) == ["age", "city", "signup"]
        assert row["class"] == "yes"
        # The base value plus the contributions is the log-odds of "yes".
        assert row["raw_output"] == pytest.approx(
            row["base_value"] + sum(row["contributions"].values()))
        assert pytest.approx(probabilities[1]) == 1 / (1 + np.exp(-row["raw_output"]))
    plain = _predict(served["http"], "churn", {"records": [ONE], "explain": False}).json()
    assert "contributions" not in plain


# --- hot swap, tampering, text models -------------------------------------------------------


def test_alias_move_is_picked_up_without_failing_requests(ws, admin_token, reviewer, tmp_path):
    first = publish(ws, "churn", train_churn(tmp_path / "v1", seed=1), task="binary")
    second = publish(ws, "churn", train_churn(tmp_path / "v2", seed=2, rounds=30),
                     task="binary", champion=False)
    seen: list[list[tuple[int, int]]] = [[] for _ in range(6)]
    stop = threading.Event()

    with thread_server(ws, refresh_s=0.1) as live:

        def client(slot: int) -> None:
            with live.client(admin_token) as http:
                while not stop.is_set():
                    r = _predict(http, "churn", {"records": [ONE, {**ONE, "age": 20.0}]})
                    seen[slot].append((r.status_code, r.json().get("version", -1)))

        threads = [threading.Thread(target=client, args=(i,)) for i in range(len(seen))]
        for t in threads:
            t.start()
        _wait_until(lambda: all(len(s) >= 5 for s in seen))
        registry.set_alias(ws, "churn", "champion", second.version, actor=reviewer)
        _wait_until(lambda: all(sum(v == second.version for _, v in s) >= 5 for s in seen))
        stop.set()
        for t in threads:
            t.join()
    answers = [a for s in seen for a in s]
    assert {status for status, _ in answers} == {200}
    for per_client in seen:
        versions = [v for _, v in per_client]
        assert versions[0] == first.version and versions[-1] == second.version
        # Once a client saw the new champion it never gets the old one again.
        assert versions == sorted(versions)
    logged = inference_log.inference_rows(ws, "churn")
    assert len(logged) == len(answers)
    assert set(logged["version"]) == {first.version, second.version}


def test_a_tampered_model_is_not_served_and_the_others_are(ws, admin_token, tmp_path):
    churn = publish(ws, "churn", train_churn(tmp_path / "churn"), task="binary")
    publish(ws, "price", train_price(tmp_path / "price"), task="regression")
    model_file = next(f for f in churn.files if f.name == "model.txt")
    path = artifacts.artifact_path(ws, model_file.sha256)
    path.chmod(0o644)
    path.write_bytes(path.read_bytes() + b"\n")
    with thread_server(ws) as live, live.client(admin_token) as http:
        refused = _predict(http, "churn", {"records": [ONE]})
        assert refused.status_code == 503
        assert _error(refused)["code"] == "model_unavailable"
        assert "changed on disk" in _error(refused)["message"]
        assert _predict(http, "price", {"records": [{"rooms": 2, "area": 50}]}).status_code == 200
        listed = http.get("/v1/models").json()
        assert [m["name"] for m in listed["models"]] == ["price"]
        assert [(u["name"], u["code"]) for u in listed["unavailable"]] == [
            ("churn", "tampered_artifact")]
        assert "/v1/models/churn/predict" not in http.get("/openapi.json").json()["paths"]
    # The refused request is still logged, against the version that was refused.
    logged = inference_log.inference_rows(ws, "churn")
    assert logged["status"].tolist() == [503] and logged["version"].tolist() == [churn.version]


def test_text_models_reserve_the_prompts_shape(ws, admin_token, tmp_path):
    adapter = tmp_path / "adapter_config.json"
    adapter.write_text('{"base_model": "tiny-gpt2"}')
    publish(ws, "writer", {"adapter_config.json": adapter}, task="text_generation",
            flavor="transformers")
    with thread_server(ws) as live, live.client(admin_token) as http:
        later = _predict(http, "writer", {"prompts": ["Write a haiku"]})
        assert later.status_code == 501 and "later Pond release" in _error(later)["message"]
        wrong = _predict(http, "writer", {"records": [ONE]})
        assert wrong.status_code == 422 and "is a text model" in _error(wrong)["message"]
        assert http.get("/v1/models").json()["models"][0]["input"] == "prompts"


# --- the inference log ----------------------------------------------------------------------


def test_every_request_is_one_log_row(ws, admin_token, tmp_path):
    publish(ws, "churn", train_churn(tmp_path / "m"), task="binary")
    sent: dict[str, int] = {}
    with thread_server(ws, log_flush_s=0.2) as live, live.client(admin_token) as http:
        for i in range(40):
            body = {"records": [{**ONE, "age": float(i)}] * (1 + i % 3)}
            if i % 10 == 9:
                body = {"records": [{"age": "old"}]}
            r = _predict(http, "churn", body)
            sent[r.json()["request_id"]] = r.status_code
        anonymous = httpx.post(live.url + "/v1/models/churn/predict", content=b"{}")
        sent[anonymous.json()["request_id"]] = anonymous.status_code
        big = http.post("/v1/models/churn/predict", content=b"x" * 11_000_000)
        sent[big.json()["request_id"]] = big.status_code
    logged = inference_log.inference_rows(ws)
    assert len(logged) == len(sent) == 42
    assert dict(zip(logged["request_id"], logged["status"].astype(int), strict=True)) == sent
    ok = logged[logged["status"] == 200]
    first = ok.iloc[0]
    assert json.loads(first["inputs"]) == [{**ONE, "age": 0.0}]
    assert json.loads(first["outputs"])["predictions"] in (["no"], ["yes"])
    assert first["version"] == 1 and first["latency_ms"] > 0 and first["n_records"] == 1
    assert first["token_id"] == 1
    assert set(logged.loc[logged["status"] == 422, "error_code"]) == {"invalid_input"}
    assert logged.loc[logged["status"] == 401, "inputs"].isna().all()
    assert logged.loc[logged["status"] == 413, "inputs"].isna().all()
    stats = inference_log.serving_stats(ws)
    assert [(s.model, s.version, s.requests, s.errors) for s in stats] == [("churn", 1, 42, 6)]
    assert stats[0].records == sum(1 + i % 3 for i in range(40) if i % 10 != 9)
    assert 0 < stats[0].p50_ms <= stats[0].p95_ms <= stats[0].p99_ms
    inputs = inference_log.inference_inputs(ws, "churn")
    assert len(inputs) == stats[0].records
    assert set(inputs.columns) >= {"age", "city", "signup", "_request_id", "_version"}
    # Nothing half-written is left behind, and the readers ignore temporary names.
    assert not list(ws.inference_dir.glob("*/.*"))


def test_sigterm_writes_what_was_answered_and_two_servers_do_not_clash(
    ws, admin_token, tmp_path
):
    publish(ws, "churn", train_churn(tmp_path / "m"), task="binary")
    ports = [free_port(), free_port()]
    procs = [start_process_server(ws.home, port) for port in ports]
    answered: set[str] = set()
    try:
        for port in ports:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}",
                              headers={"authorization": f"Bearer {admin_token}"}) as http:
                for _ in range(25):
                    r = _predict(http, "churn", {"records": [ONE]})
                    assert r.status_code == 200
                    answered.add(r.json()["request_id"])
        # Stop at once: the 2-second flush timer has not fired for the last requests.
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            # uvicorn re-raises the signal once it has shut down gracefully.
            assert proc.wait(timeout=60) in (0, -signal.SIGTERM)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    logged = inference_log.inference_rows(ws, "churn")
    assert set(logged["request_id"]) == answered and len(logged) == 50
    assert logged["server_pid"].nunique() == 2
    names = [p.name for p in (ws.inference_dir / "churn").iterdir()]
    assert len(names) == len(set(names)) and all(n.endswith(".parquet") for n in names)


def test_serve_command_refuses_bad_options(ws, capsys):
    assert main(["serve", "--port", "70000"]) == 1
    assert "'port' parameter of serve must be an int in [0, 65535]" in capsys.readouterr().err
    assert main(["serve", "--workers", "0"]) == 1
    assert "'workers'" in capsys.readouterr().err


# --- in-process "try it" and the OpenAPI document -------------------------------------------


def test_try_request_without_a_server_predicts_in_process(ws, tmp_path):
    publish(ws, "churn", train_churn(tmp_path / "m"), task="binary")
    body = serving.example_request(ws, "churn")
    assert json.loads(body)["records"][0]["city"] == "lisbon"
    result = serving.try_request(ws, "churn", body, url=f"http://127.0.0.1:{free_port()}")
    assert result.via == "in-process" and result.status == 200
    assert result.body["model"] == "churn" and "not logged" in result.note
    bad = serving.try_request(ws, "churn", '{"records": [{}]}',
                              url=f"http://127.0.0.1:{free_port()}")
    assert bad.status == 422 and bad.body["error"]["field"] == "age"
    assert inference_log.inference_rows(ws).empty


def test_try_request_with_a_server_goes_over_http(served):
    result = serving.try_request(served["ws"], "churn", orjson.dumps({"records": [ONE]}).decode(),
                                 url=served["live"].url, token=served["token"])
    assert result.via == "server" and result.status == 200
    unauthorised = serving.try_request(served["ws"], "churn", "{}", url=served["live"].url)
    assert unauthorised.status == 401


def test_openapi_describes_each_model_from_its_contract(served):
    document = httpx.get(served["live"].url + "/openapi.json").json()
    record = document["components"]["schemas"]["churn.Record"]
    assert record["required"] == ["age", "city", "signup"]
    assert record["properties"]["age"]["type"] == ["number", "null"]
    assert record["properties"]["signup"]["format"] == "date-time"
    assert "oslo" in record["properties"]["city"]["description"]
    churn = document["paths"]["/v1/models/churn/predict"]["post"]
    response = churn["responses"]["200"]["content"]["application/json"]["schema"]
    assert response["properties"]["predictions"]["items"] == {"enum": ["no", "yes"]}
    assert {"401", "413", "422"} <= set(churn["responses"])
    assert document["paths"]["/health"]["get"]["security"] == []


def test_schemathesis_finds_nothing(served, tmp_path):
    """Property-based requests from the OpenAPI document (bounded, fixed seed) over HTTP."""
    completed = subprocess.run(
        [sys.executable, "-m", "schemathesis.cli", "run", served["live"].url + "/openapi.json",
         "--header", f"Authorization: Bearer {served['token']}", "--checks", "all",
         "--max-examples", "40", "--seed", "20240601", "--generation-database", "none",
         "--no-color", "--workers", "1"],
        cwd=tmp_path, capture_output=True, text=True, timeout=500,
    )
    summary = completed.stdout[-6000:]
    assert completed.returncode == 0, summary
    assert "passed" in summary


def test_readme_documents_serving():
    readme = (ROOT / "README.md").read_text()
    for words in ("## Serving", "pond tokens create", "pond serve", "Authorization: Bearer",
                  "inference/"):
        assert words in readme


def test_inference_rows_of_an_empty_workspace(ws):
    assert inference_log.inference_rows(ws).empty
    assert inference_log.serving_stats(ws) == []
    assert inference_log.inference_inputs(ws, "churn").empty
    assert isinstance(inference_log.inference_rows(ws, "churn"), pd.DataFrame)
    assert Path(inference_log.log_glob(ws, "churn")).parent == ws.inference_dir / "churn"


@pytest.mark.parametrize("objective", ["binary", "multiclass", "regression"])
def test_single_row_fast_path_matches_booster_predict(objective):
    import lightgbm as lgb

    rng = np.random.default_rng(3)
    features = rng.normal(size=(300, 5))
    features[rng.random(features.shape) < 0.1] = np.nan
    filled = np.nan_to_num(features)
    label = {"binary": filled[:, 0] > 0, "multiclass": (filled[:, 0] > 0) + (filled[:, 1] > 0.5),
             "regression": filled[:, 2]}[objective].astype(float)
    params = {"objective": objective, "verbose": -1, "num_leaves": 7}
    if objective == "multiclass":
        params["num_class"] = 3
    booster = lgb.train(params, lgb.Dataset(features, label), num_boost_round=10)
    fast = serving.ServingBooster(booster, 5)
    for row in features[:20]:
        one = row.reshape(1, -1)
        assert np.array_equal(fast.predict(one), booster.predict(one))
    assert np.array_equal(fast.predict(features), booster.predict(features))


def test_large_batches_encode_exactly_like_single_records(tmp_path):
    contract = model_contract.load_model(train_churn(tmp_path)).contract
    rng = np.random.default_rng(5)
    ages = [None, 0, 41, 63.5, -2.25, 1e6]
    cities = [None, "oslo", "porto", "lisbon", "paris", 7, True]
    uniform, mixed = [], []
    for i in range(300):
        record = {"age": ages[rng.integers(len(ages))], "city": cities[rng.integers(len(cities))],
                  "signup": None if i % 7 == 0 else f"2024-0{1 + i % 9}-1{i % 10}T0{i % 10}:30:00Z"}
        if i % 5 == 0:
            record["customer_id"] = i
        uniform.append(record)
        mixed.append({**record, "signup": "2024-05-01" if i % 3 == 0 else record["signup"]})
    for batch in (uniform, mixed):
        serving.check_records(contract, batch)
        columns = serving.encode_batch(contract, batch)
        rows = model_contract.encode_records(contract, batch)
        np.testing.assert_array_equal(columns.matrix, rows.matrix)
        assert columns.ignored_columns == rows.ignored_columns == ("customer_id",)
        assert columns.unseen_categories == rows.unseen_categories
