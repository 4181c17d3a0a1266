"""AppTest of the app shell and the foundation pages: sign-in, Home, Data."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core import auth, datasets

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data"
PASSWORD = "pond-test-pw"


def _app() -> AppTest:
    return AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)


def _frame_with(at: AppTest, column: str):
    """The first table showing `column` (AppTest only keys tables that take selections)."""
    for df in at.dataframe:
        if column in df.value.columns:
            return df.value
    raise AssertionError(f"no table with a {column!r} column")


def _signed_in(ws, name: str = "ana") -> AppTest:
    at = _app()
    at.session_state["user"] = auth.get_user(ws, name)
    return at


def test_sign_in_flow(ws):
    at = _app().run()
    assert not at.exception
    assert at.title[0].value == "Pond"
    at.text_input(key="sign_in_name").input("ana")
    at.text_input(key="sign_in_password").input("wrong-password")
    at.button[0].click().run()
    assert "wrong user name or password" in at.error[0].value
    at.text_input(key="sign_in_password").input(PASSWORD)
    at.button[0].click().run()
    assert not at.exception
    assert at.session_state["user"].name == "ana"
    # A browser lands on "/" (the default page) after the rerun; AppTest keeps the old page.
    at.switch_page("pages/home.py").run()
    assert not at.exception
    assert "Datasets" in {m.label for m in at.metric}  # the home page, signed in


def test_home_shows_the_workspace(ws, analyst):
    datasets.ingest(ws, DATA / "penguins.csv", "penguins", actor=analyst)
    at = _signed_in(ws).run()
    assert not at.exception
    labels = {m.label: m.value for m in at.metric}
    assert labels["Datasets"] == "1"
    frame = _frame_with(at, "dataset")
    assert frame["dataset"].tolist() == ["penguins"]
    assert _frame_with(at, "what")["what"].tolist()[0] == "dataset_created"


@pytest.fixture
def data_page(ws, analyst):
    datasets.ingest(ws, DATA / "penguins.csv", "penguins", actor=analyst)
    datasets.ingest(ws, DATA / "penguins_raw.csv", "penguins_raw", actor=analyst)
    at = _signed_in(ws).run()
    at.switch_page("pages/data.py").run()
    assert not at.exception
    return at


def test_data_page_profile(data_page):
    at = data_page
    at.selectbox(key="data_dataset").select("penguins_raw").run()
    assert not at.exception
    labels = {m.label: m.value for m in at.metric}
    assert labels["Rows"] == "344"
    table = _frame_with(at, "missing")
    assert "Comments" in set(table.iloc[:, 0])
    assert any("Comments" in w.value for w in at.warning)  # mostly missing
    at.selectbox(key="data_profile_column").select("Body Mass (g)").run()
    assert not at.exception


def test_data_page_sql(data_page):
    at = data_page
    at.text_area(key="data_sql").input(
        "SELECT species, count(*) AS n FROM penguins GROUP BY 1 ORDER BY 1"
    )
    at.button(key="data_sql_run").click().run()
    assert not at.exception
    result = _frame_with(at, "n")
    assert result["n"].tolist() == [152, 68, 124]
    at.text_area(key="data_sql").input("DELETE FROM penguins")
    at.button(key="data_sql_run").click().run()
    assert "only read-only queries" in at.error[0].value


def test_data_page_report(data_page):
    at = data_page
    at.button(key="data_make_report").click().run(timeout=180)
    assert not at.exception
    assert any("Profiled all 344 rows" in c.value for c in at.caption)


def test_data_page_empty_workspace(ws):
    at = _signed_in(ws).run()
    at.switch_page("pages/data.py").run()
    assert not at.exception
    assert any("No datasets yet" in i.value for i in at.info)
