"""AppTest of the Features page: steps added through the form with a live preview, a bad
expression refused before it is added, saving a view, and the catalog with its lineage,
profile and a new version after an edit."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

from core import auth, datasets, features

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 120


def _features_page(ws) -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT)
    at.session_state["user"] = auth.get_user(ws, "ana")
    at.run()
    at.switch_page("pages/features.py").run()
    assert not at.exception
    return at


def _add(at: AppTest, op: str, **fields) -> AppTest:
    at.selectbox(key="fe_op").select(op).run()
    for key, value in fields.items():
        widget = (
            at.text_input(key=key)
            if key in ("fe_new_name", "fe_expression")
            else at.selectbox(key=key)
        )
        widget.set_value(value) if key in ("fe_new_name", "fe_expression") else widget.select(value)
    at.run()
    at.button(key="fe_add").click().run()
    assert not at.exception
    return at


def test_features_page_builds_saves_and_catalogs_a_view(ws, analyst):
    datasets.ingest(ws, ROOT / "data" / "penguins.csv", "penguins", actor=analyst)
    at = _features_page(ws)
    assert at.selectbox(key="fe_source").value == "penguins"
    preview = at.dataframe[0].value
    assert len(preview) == 50 and "species" in preview.columns

    at = _add(
        at, "derive", fe_new_name="bill_ratio", fe_expression="bill_length_mm / bill_depth_mm"
    )
    assert at.session_state["fe_steps"] == [
        {"op": "derive", "name": "bill_ratio", "expression": "bill_length_mm / bill_depth_mm"}
    ]
    preview = at.dataframe[0].value
    assert preview["bill_ratio"].iloc[0] == (39.1 / 18.7)

    # A typo is refused before it becomes a step, with the reason.
    at = _add(at, "derive", fe_new_name="oops", fe_expression="bill_lenght_mm * 2")
    assert len(at.session_state["fe_steps"]) == 1
    assert "did you mean 'bill_length_mm'" in at.error[0].value

    at = _add(at, "one_hot", fe_column="island")
    assert {"island_Biscoe", "island_Dream", "island_Torgersen"} <= set(at.dataframe[0].value)
    assert "CASE" not in at.code[0].value and "island_Dream" in at.code[0].value

    at.text_input(key="fe_name").set_value("penguin_features")
    at.text_area(key="fe_description").set_value("Bill shape and island flags")
    at.text_input(key="fe_tags").set_value("team=field")
    at.button(key="fe_save").click().run()
    assert not at.exception
    assert "Saved feature view penguin_features:1 (344 rows materialised)" in at.success[0].value

    saved = features.get_view(ws, "penguin_features")
    assert saved.tags == {"team": "field"} and saved.row_count == 344
    assert at.selectbox(key="fe_cat_view").value == "penguin_features"
    lineage = [t.value for t in at.dataframe if "source" in t.value.columns][0]
    assert lineage["source"].tolist() == ["penguins:1"]
    profile = [t.value for t in at.dataframe if "missing" in t.value.columns][0]
    assert "bill_ratio" in profile["column"].tolist()

    # Editing loads the definition back; one more step and a save makes version 2.
    at.button(key="fe_edit").click().run()
    assert at.text_input(key="fe_name").value == "penguin_features"
    at = _add(at, "impute", fe_strategy="median")
    at.multiselect(key="fe_columns").select("bill_ratio").run()
    at.button(key="fe_add").click().run()
    assert len(at.session_state["fe_steps"]) == 3
    at.button(key="fe_save").click().run()
    assert not at.exception
    assert "penguin_features:2" in at.success[0].value
    assert [v.version for v in features.list_versions(ws, "penguin_features")] == [1, 2]


def test_train_page_offers_feature_views(ws, analyst):
    datasets.ingest(ws, ROOT / "data" / "penguins.csv", "penguins", actor=analyst)
    features.create_view(
        ws,
        "penguin_features",
        features.Definition(
            source="penguins",
            steps=({"op": "derive", "name": "bill_ratio", "expression": "bill_length_mm / 2"},),
        ),
        actor=analyst,
    )
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT)
    at.session_state["user"] = auth.get_user(ws, "ana")
    at.run()
    at.switch_page("pages/train.py").run()
    assert "fv:penguin_features" in at.selectbox(key="train_dataset").options
    at.selectbox(key="train_dataset").select("fv:penguin_features").run()
    assert not at.exception
    assert "bill_ratio" in at.selectbox(key="train_target").options
