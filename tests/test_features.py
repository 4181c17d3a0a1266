"""Feature views: steps compiled and pinned on small data, expression safety, joins,
point-in-time correctness, training/serving parity, versioning, AutoML and serving on
a view, and the `pond features` commands."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from core import automl, datasets, features, model_contract, registry, serving
from core.cli import main as cli_main
from core.errors import AlreadyExists, InvalidInput, NotFound

Definition = features.Definition


def _ingest(ws, actor, frame: pd.DataFrame, name: str, tmp_path) -> datasets.DatasetVersion:
    path = tmp_path / f"{name}-{len(list(tmp_path.iterdir()))}.parquet"
    frame.to_parquet(path)
    return datasets.ingest(ws, path, name, actor=actor)


@pytest.fixture
def shop(ws, analyst, tmp_path):
    """Labelled customer snapshots, their transactions, and a customer table."""
    labels = pd.DataFrame(
        {
            "customer": ["a", "a", "b", "c", "b"],
            "ts": pd.to_datetime(
                ["2024-01-15", "2024-02-01", "2024-01-06", "2024-01-01", "2024-01-06"]
            ),
            "spend": [10.0, None, 30.0, 40.0, 30.0],
            "plan": ["pro", "pro", "free", None, "free"],
            "churned": [0, 1, 0, 1, 0],
        }
    )
    tx = pd.DataFrame(
        {
            "customer": ["a", "a", "a", "b", "b"],
            "ts": pd.to_datetime(
                ["2024-01-01", "2024-01-10", "2024-03-01", "2024-01-05", "2024-01-06"]
            ),
            # The 1000 on 2024-03-01 is after every labelled row of 'a': it must never leak.
            "amount": [10.0, 20.0, 1000.0, 5.0, 7.0],
        }
    )
    regions = pd.DataFrame({"customer": ["a", "b", "c"], "region": ["north", "south", "north"]})
    _ingest(ws, analyst, labels, "labels", tmp_path)
    _ingest(ws, analyst, tx, "tx", tmp_path)
    _ingest(ws, analyst, regions, "regions", tmp_path)
    return ws


def _rows(frame: pd.DataFrame, *columns: str) -> list[tuple]:
    out = []
    for row in frame[list(columns)].itertuples(index=False):
        out.append(
            tuple(None if (isinstance(v, float) and v != v) or v is pd.NA else v for v in row)
        )
    return out


# --- step-by-step compilation, pinned on small data -----------------------------------------


def test_each_step_compiles_to_pinned_output(shop):
    steps = [
        {"op": "derive", "name": "spend_x2", "expression": "spend * 2"},
        {"op": "impute", "columns": ["spend"], "strategy": "mean"},
        {"op": "impute", "columns": ["plan"], "strategy": "constant", "value": "none"},
        {"op": "bin", "column": "spend", "edges": [20, 35]},
        {"op": "one_hot", "column": "plan", "keep_original": True},
        {"op": "frequency_encode", "column": "customer"},
        {"op": "derive", "name": "month", "expression": "month(ts)"},
        {
            "op": "derive",
            "name": "tier",
            "expression": "CASE WHEN spend >= 30 THEN 'high' ELSE 'low' END",
        },
        {"op": "dedupe"},
        {"op": "rename", "columns": {"churned": "label"}},
        {"op": "cast", "columns": {"label": "BOOLEAN"}},
        {"op": "filter", "condition": "customer <> 'c'"},
        {
            "op": "select",
            "columns": [
                "customer",
                "spend",
                "spend_x2",
                "spend_bin",
                "plan_pro",
                "plan_none",
                "customer_freq",
                "month",
                "tier",
                "label",
            ],
        },
    ]
    p = features.preview(shop, Definition(source="labels", steps=tuple(steps)))
    # Step rows on the sample: 5 rows in, one exact duplicate dropped, 'c' filtered out.
    assert p.step_rows == (5, 5, 5, 5, 5, 5, 5, 5, 5, 4, 4, 4, 3, 3)
    out = p.frame.sort_values(["customer", "month"]).reset_index(drop=True)
    assert _rows(
        out,
        "customer",
        "spend",
        "spend_x2",
        "spend_bin",
        "plan_pro",
        "plan_none",
        "month",
        "tier",
        "label",
    ) == [
        ("a", 10.0, 20.0, 0, 1, 0, 1, "low", False),
        ("a", 27.5, None, 1, 1, 0, 2, "low", True),  # mean of 10, 30, 40, 30
        ("b", 30.0, 60.0, 1, 0, 0, 1, "high", False),
    ]
    assert out["customer_freq"].tolist() == pytest.approx([0.4, 0.4, 0.4])
    assert 'coalesce("spend", 27.5)' in p.sql
    assert "WHERE (\"customer\" <> 'c')" in p.sql


def test_keyed_dedupe_keeps_the_latest_row(shop):
    p = features.preview(
        shop,
        Definition(
            source="labels", steps=({"op": "dedupe", "keys": ["customer"], "order_by": "ts"},)
        ),
    )
    latest = dict(_rows(p.frame, "customer", "ts"))
    assert latest["a"] == pd.Timestamp("2024-02-01")
    assert len(p.frame) == 3


def test_sql_source_compiles_and_steps_follow(shop):
    p = features.preview(
        shop,
        Definition(
            sql="SELECT customer, spend, churned FROM labels WHERE spend IS NOT NULL",
            steps=({"op": "derive", "name": "half", "expression": "spend / 2"},),
        ),
    )
    assert sorted(p.frame["half"].tolist()) == [5.0, 15.0, 15.0, 20.0]
    assert '"labels_v1"' in p.sql


# --- bad input, caught at preview time -------------------------------------------------------


@pytest.mark.parametrize(
    "expression, message",
    [
        ("spned * 2", "column 'spned' does not exist here; did you mean 'spend'?"),
        ("(SELECT 1)", "query or a table reference"),
        ("spend + (SELECT max(amount) FROM tx)", "query or a table reference"),
        ("t.spend", "names a table"),
        ("read_csv('/etc/passwd')", "not allowed"),
        ("sum(spend)", "aggregate"),
        ("spend; DROP TABLE labels", "single expression"),
        ("plan + 1", "type error"),
    ],
)
def test_bad_expressions_are_refused_with_the_reason(shop, expression, message):
    with pytest.raises(InvalidInput, match="step 1") as caught:
        features.preview(
            shop,
            Definition(
                source="labels", steps=({"op": "derive", "name": "x", "expression": expression},)
            ),
        )
    assert message in str(caught.value)


def test_bad_sql_and_name_clashes(shop, analyst):
    with pytest.raises(InvalidInput, match="only read|must be a SELECT"):
        features.preview(shop, Definition(sql="DELETE FROM labels"))
    with pytest.raises(InvalidInput, match="datasets only"):
        features.preview(shop, Definition(sql="SELECT * FROM read_parquet('/tmp/x.parquet')"))
    with pytest.raises(InvalidInput, match="no dataset; did you mean 'labels'"):
        features.preview(shop, Definition(sql="SELECT * FROM lables"))
    with pytest.raises(InvalidInput, match="'spend' already exists"):
        features.preview(
            shop,
            Definition(
                source="labels", steps=({"op": "derive", "name": "spend", "expression": "1"},)
            ),
        )
    with pytest.raises(AlreadyExists, match="already the name of a dataset"):
        features.create_view(shop, "labels", Definition(source="labels"), actor=analyst)
    with pytest.raises(InvalidInput, match="gives VARCHAR, not true/false"):
        features.preview(
            shop, Definition(source="labels", steps=({"op": "filter", "condition": "plan"},))
        )


def test_join_key_types_and_exploding_joins(shop, analyst, tmp_path):
    numbers = pd.DataFrame({"customer": [1, 2], "x": [1.0, 2.0]})
    _ingest(shop, analyst, numbers, "numbers", tmp_path)
    with pytest.raises(
        InvalidInput, match="join key 'customer' is VARCHAR but numbers:1.customer is BIGINT"
    ):
        features.preview(
            shop,
            Definition(
                source="labels", steps=({"op": "join", "dataset": "numbers", "on": ["customer"]},)
            ),
        )
    # tx repeats customers: a join on it multiplies rows, and the preview says by how much.
    p = features.preview(
        shop,
        Definition(
            source="labels",
            steps=({"op": "join", "dataset": "tx", "on": ["customer"], "columns": ["amount"]},),
        ),
    )
    assert any("turns 5 rows into 11" in w and "appears 3 times" in w for w in p.warnings)


def test_a_view_cannot_read_itself(shop, analyst):
    features.create_view(shop, "base_fv", Definition(source="labels"), actor=analyst)
    with pytest.raises(InvalidInput, match="cannot read itself"):
        features.create_view(
            shop,
            "base_fv",
            Definition(
                source="labels",
                steps=(
                    {"op": "join", "dataset": "fv:base_fv:1", "on": ["customer"], "prefix": "p_"},
                ),
            ),
            actor=analyst,
        )
    assert [v.version for v in features.list_versions(shop, "base_fv")] == [1]


# --- point in time --------------------------------------------------------------------------

AGGREGATE = {
    "op": "aggregate",
    "dataset": "tx",
    "on": "customer",
    "timestamp": "ts",
    "window": "30 days",
    "features": [
        {"name": "n_30d", "fn": "count"},
        {"name": "spend_30d", "fn": "sum", "column": "amount"},
        {"name": "max_30d", "fn": "max", "column": "amount"},
    ],
}


def test_point_in_time_join_never_sees_later_values(shop, analyst):
    fv = features.create_view(
        shop,
        "churn_fv",
        Definition(source="labels", steps=(AGGREGATE,)),
        actor=analyst,
        entity_key="customer",
        timestamp_column="ts",
    )
    out = features.load_frame(shop, fv).sort_values(["customer", "ts"]).drop_duplicates()
    assert _rows(out, "customer", "ts", "n_30d", "spend_30d", "max_30d") == [
        # 01-15 sees 01-01 and 01-10; 02-01 sees only 01-10 (30 days); never the 03-01 1000.
        ("a", pd.Timestamp("2024-01-15"), 2, 30.0, 20.0),
        ("a", pd.Timestamp("2024-02-01"), 1, 20.0, 20.0),
        # Strictly before the row's time: the event at the same instant is not seen.
        ("b", pd.Timestamp("2024-01-06"), 1, 5.0, 5.0),
        ("c", pd.Timestamp("2024-01-01"), 0, None, None),
    ]
    assert 1000.0 not in out["max_30d"].tolist()
    # Serving looks up the latest values by entity (as of the last event in tx).
    served = features.transform_records(
        shop,
        "churn_fv",
        [
            {"customer": "a", "ts": "2024-03-05", "spend": 1.0, "plan": "pro", "churned": None},
            {"customer": "zz", "ts": "2024-03-05", "spend": 1.0, "plan": "pro", "churned": None},
        ],
    )
    assert [(r["n_30d"], r["spend_30d"]) for r in served] == [(1, 1000.0), (0, None)]


# --- training/serving parity ------------------------------------------------------------------

PARITY_STEPS = (
    {"op": "join", "dataset": "regions", "on": ["customer"]},
    {"op": "impute", "columns": ["spend"], "strategy": "median"},
    {"op": "derive", "name": "log_spend", "expression": "ln(spend + 1)"},
    {"op": "derive", "name": "weekday", "expression": "dayofweek(ts)"},
    {"op": "one_hot", "column": "region"},
    {"op": "frequency_encode", "column": "plan"},
    {"op": "bin", "column": "spend", "bins": 2},
    {"op": "filter", "condition": "churned IS NOT NULL"},
)


def test_training_and_serving_give_the_same_features(shop, analyst):
    fv = features.create_view(
        shop,
        "parity_fv",
        Definition(source="labels", steps=PARITY_STEPS),
        actor=analyst,
        entity_key="customer",
        timestamp_column="ts",
    )
    trained = features.load_frame(shop, fv)
    raw = datasets.load_frame(shop, datasets.get_version(shop, "labels"))
    records = json.loads(raw.to_json(orient="records", date_format="iso"))
    served = pd.DataFrame(features.transform_records(shop, "parity_fv", records))
    assert list(served.columns) == fv.column_names
    key = ["customer", "ts", "churned"]
    trained["ts"] = trained["ts"].astype(str)
    served["ts"] = pd.to_datetime(served["ts"]).astype(str)
    left = trained.sort_values(key).reset_index(drop=True)
    right = served.sort_values(key).reset_index(drop=True)
    assert len(left) == len(right) == 5
    for column in fv.column_names:
        for a, b in zip(_rows(left, column), _rows(right, column), strict=True):
            if isinstance(a[0], float) or isinstance(b[0], float):
                assert a[0] == pytest.approx(b[0]), column
            else:
                assert a == b, column


def test_serving_refuses_records_missing_a_field_the_view_reads(shop, analyst):
    features.create_view(
        shop, "parity_fv", Definition(source="labels", steps=PARITY_STEPS), actor=analyst
    )
    with pytest.raises(serving.InvalidRecord, match="record 0 has no field 'spend'"):
        features.transform_records(shop, "parity_fv", [{"customer": "a", "ts": "2024-01-01"}])
    with pytest.raises(serving.InvalidRecord, match="field 'spend' of record 1 must be a number"):
        features.transform_records(
            shop,
            "parity_fv",
            [
                {"customer": "a", "ts": "2024-01-01", "spend": 1, "plan": "x", "churned": 0},
                {"customer": "a", "ts": "2024-01-01", "spend": "lots", "plan": "x", "churned": 0},
            ],
        )


# --- versioning ---------------------------------------------------------------------------------


def test_editing_adds_a_version_and_old_versions_stay_reproducible(shop, analyst, tmp_path):
    first = features.create_view(
        shop,
        "spend_fv",
        Definition(
            source="labels", steps=({"op": "impute", "columns": ["spend"], "strategy": "mean"},)
        ),
        actor=analyst,
        description="first",
        tags={"team": "growth"},
    )
    same = features.create_view(
        shop,
        "spend_fv",
        Definition(
            source="labels", steps=({"op": "impute", "columns": ["spend"], "strategy": "mean"},)
        ),
        actor=analyst,
        description="first",
        tags={"team": "growth"},
    )
    assert same.version == 1 and same.content_sha256 == first.content_sha256
    # New data in the source: v1 stays pinned to labels:1, v2 picks up labels:2.
    more = pd.DataFrame(
        {
            "customer": ["d"],
            "ts": pd.to_datetime(["2024-05-01"]),
            "spend": [1000.0],
            "plan": ["pro"],
            "churned": [1],
        }
    )
    _ingest(shop, analyst, more, "labels", tmp_path)
    second = features.create_view(
        shop,
        "spend_fv",
        Definition(
            source="labels", steps=({"op": "impute", "columns": ["spend"], "strategy": "mean"},)
        ),
        actor=analyst,
    )
    assert second.version == 2
    assert second.sources[0]["version"] == 2 and first.sources[0]["version"] == 1
    assert first.owner == second.owner == "ana"
    again = features.materialize_view(shop, "spend_fv:1", actor=analyst)
    assert again.materialized_sha256 == first.materialized_sha256
    assert features.load_frame(shop, again)["spend"].tolist()[1] == pytest.approx(27.5)
    assert [v.version for v in features.list_versions(shop, "spend_fv")] == [1, 2]
    assert features.get_view(shop, "spend_fv").tags == {}
    assert features.get_view(shop, "spend_fv", 1).tags == {"team": "growth"}
    with pytest.raises(NotFound, match="has no version 9"):
        features.get_view(shop, "spend_fv", 9)


# --- AutoML and serving on a feature view ----------------------------------------------------


@pytest.fixture
def trained_on_view(ws, analyst, reviewer):
    penguins = datasets.ingest(ws, "data/penguins.csv", "penguins", actor=analyst)
    fv = features.create_view(
        ws,
        "penguin_fv",
        Definition(
            source=penguins.ref,
            steps=(
                {
                    "op": "derive",
                    "name": "bill_ratio",
                    "expression": "bill_length_mm / bill_depth_mm",
                },
                {"op": "impute", "columns": ["bill_ratio", "body_mass_g"], "strategy": "median"},
                {"op": "one_hot", "column": "island"},
                {
                    "op": "select",
                    "columns": [
                        "species",
                        "bill_ratio",
                        "body_mass_g",
                        "island_Biscoe",
                        "island_Dream",
                        "island_Torgersen",
                    ],
                },
            ),
        ),
        actor=analyst,
    )
    result = automl.train_dataset(
        ws,
        "fv:penguin_fv:1",
        "species",
        actor=analyst,
        time_budget=20,
        n_trials=2,
        seed=0,
        n_jobs=1,
    )
    mv = automl.register(ws, result, "penguins_fv_model", actor=analyst)
    registry.approve(ws, "penguins_fv_model", mv.version, actor=reviewer, comment="ok")
    registry.set_alias(ws, "penguins_fv_model", "champion", mv.version, actor=reviewer)
    return fv, registry.get_version(ws, "penguins_fv_model", mv.version)


def test_a_model_trained_on_a_view_records_it_and_serves_through_it(ws, trained_on_view):
    fv, mv = trained_on_view
    assert mv.lineage["feature_view"]["name"] == "penguin_fv"
    assert mv.lineage["feature_view"]["version"] == 1
    assert mv.lineage["dataset"]["name"] == "penguins"
    assert mv.lineage["training_config"]["dataset"] == "fv:penguin_fv:1"
    assert [m["model"] for m in features.models_using(ws, "penguin_fv")] == ["penguins_fv_model"]

    served = serving.load_champion(ws, "penguins_fv_model")
    assert served.features is not None
    raw = {
        "island": "Biscoe",
        "bill_length_mm": 47.0,
        "bill_depth_mm": 15.0,
        "flipper_length_mm": 215,
        "body_mass_g": None,
        "sex": "male",
        "year": 2008,
    }
    answer = serving.predict_payload(served, {"records": [raw]}, "req-1")
    assert answer["predictions"] == ["Gentoo"]
    assert answer["warnings"] == []
    # A training row (materialised table) and its raw record (served) score the same.
    trained = features.load_frame(ws, fv)
    raw_rows = datasets.load_frame(ws, datasets.get_version(ws, "penguins"))
    records = json.loads(raw_rows.drop(columns=["species"]).head(20).to_json(orient="records"))
    answer = serving.predict_payload(served, {"records": records}, "req-3")
    matrix = model_contract.encode_frame(served.contract, trained.head(20)).matrix
    expected = served.model.booster.predict(matrix)
    assert expected.tolist() == [pytest.approx(p) for p in answer["probabilities"]]
    # The Serve page's example request holds the view's raw input fields, and is answered.
    example = json.loads(serving.example_request(ws, "penguins_fv_model"))
    assert "island" in example["records"][0] and "bill_ratio" not in example["records"][0]
    assert serving.predict_payload(served, example, "req-4")["predictions"] == ["Adelie"]
    with pytest.raises(serving.InvalidRecord, match="no field 'island'"):
        serving.predict_payload(served, {"records": [{"bill_length_mm": 1.0}]}, "req-2")


# --- the CLI -----------------------------------------------------------------------------------


def test_cli_create_preview_list_show_materialize(shop, capsys, tmp_path):
    steps = tmp_path / "steps.json"
    steps.write_text(json.dumps({"source": "labels", "steps": [AGGREGATE]}))
    base = ["--user", "ana", "--json"]
    assert cli_main(["features", "preview", "--from-json", str(steps), *base]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert "LATERAL" in shown["sql"] and len(shown["rows"]) == 5
    assert (
        cli_main(
            [
                "features",
                "create",
                "cli_fv",
                "--from-json",
                str(steps),
                "--entity-key",
                "customer",
                "--timestamp-column",
                "ts",
                "--description",
                "spend per customer",
                "--tag",
                "team=growth",
                "--no-materialize",
                *base,
            ]
        )
        == 0
    )
    created = json.loads(capsys.readouterr().out)
    assert created["version"] == 1 and created["materialized_sha256"] is None
    assert cli_main(["features", "materialize", "cli_fv", *base]) == 0
    assert json.loads(capsys.readouterr().out)["row_count"] == 5
    assert (
        cli_main(
            [
                "features",
                "create",
                "sql_fv",
                "--sql",
                "SELECT customer, spend * 2 AS double_spend FROM labels",
                *base,
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert cli_main(["features", "list", *base]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [v["name"] for v in listed] == ["cli_fv", "sql_fv"]
    assert cli_main(["features", "show", "cli_fv:1", *base]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["tags"] == {"team": "growth"} and shown["sources"][1]["name"] == "tx"
    assert shown["profile"]["n_rows"] == 5
    assert cli_main(["features", "show", "nope", *base]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_switching_to_sql_keeps_the_output_and_serving(shop, analyst):
    steps = Definition(
        source="labels",
        steps=(AGGREGATE, {"op": "derive", "name": "n2", "expression": "n_30d * 2"}),
    )
    compiled = features.preview(shop, steps)
    as_sql = features.create_view(shop, "as_sql", Definition(sql=compiled.sql), actor=analyst)
    as_steps = features.create_view(shop, "as_steps", steps, actor=analyst)
    assert features.load_frame(shop, as_sql).equals(features.load_frame(shop, as_steps))
    record = {"customer": "a", "ts": "2024-01-15", "spend": 1.0, "plan": "pro", "churned": None}
    served = features.transform_records(shop, "as_sql", [record])
    assert (served[0]["n_30d"], served[0]["n2"]) == (2, 4)  # point in time, per record


def test_a_view_that_fails_on_the_full_data_is_not_saved(ws, analyst, tmp_path):
    codes = pd.DataFrame({"code": [str(i) for i in range(59)] + ["n/a"]})
    _ingest(ws, analyst, codes, "codes", tmp_path)
    definition = Definition(source="codes", steps=({"op": "cast", "columns": {"code": "INTEGER"}},))
    assert len(features.preview(ws, definition).frame) == 50  # the sample is fine
    with pytest.raises(InvalidInput, match="failed on the full data: .*'n/a'"):
        features.create_view(ws, "codes_fv", definition, actor=analyst)
    assert features.list_views(ws) == []


def test_retraining_a_model_trained_on_a_view_is_refused(ws, analyst, trained_on_view):
    from core import retraining

    _, mv = trained_on_view
    with pytest.raises(retraining.RetrainFailed, match="trained on feature view penguin_fv:1"):
        retraining.retrain(ws, mv.model, actor=analyst, time_budget=5)
    assert [v.version for v in registry.get_model(ws, mv.model).versions] == [mv.version]


def test_a_model_trained_on_a_view_is_evaluated_on_raw_data_through_the_view(
    ws, analyst, trained_on_view
):
    from core import evaluation

    _, mv = trained_on_view
    # penguins has the raw columns only; the view's steps make the model's features.
    ev = evaluation.evaluate_model(ws, mv.ref, "penguins", analyst, segment_column="island")
    assert ev.rows == 344
    assert ev.metrics["accuracy"] > 0.9
