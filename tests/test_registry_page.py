"""AppTest of the Registry page: request approval as ana, approve as rita, move an alias."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core import auth, registry
from core.registry import VersionStatus

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def two_versions(ws, analyst, tmp_path):
    for n, auc in ((1, 0.81), (2, 0.84)):
        path = tmp_path / f"model-{n}.txt"
        path.write_text(f"tree {n}\n")
        registry.register_version(
            ws, "churn", {"model.txt": path}, metrics={"auc": auc}, params={"num_leaves": 30 + n},
            lineage=registry.make_lineage(
                dataset={"name": "customers", "version": n, "content_sha256": f"{n}" * 64},
                optuna_study={"name": f"churn-{n}"},
            ),
            actor=analyst, flavor="lightgbm", task="binary_classification",
        )


def _registry_page(ws, name: str) -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=30)
    at.session_state["user"] = auth.get_user(ws, name)
    at.run()
    at.switch_page("pages/registry.py").run()
    assert not at.exception
    return at


# AppTest only exposes a key for tables that take selections, so tables are found
# by their leading columns instead.
TABLES = {
    "models": ("model", "versions"),
    "pending": ("version", "requested by"),
    "lineage": ("what", "value"),
    "metrics": ("metric", "value"),
    "compare": ("key",),
    "audit": ("when", "who"),
}


def _table(at: AppTest, name: str):
    columns = TABLES[name]
    for frame in at.dataframe:
        value = frame.value
        if tuple(value.columns[: len(columns)]) == columns:
            return value
    raise AssertionError(f"no {name} table on the page")


def _flash(at: AppTest) -> list[str]:
    return [s.value for s in at.success]


def test_request_approve_and_alias(ws, two_versions):
    at = _registry_page(ws, "ana")
    assert at.title[0].value == "Model registry"
    models = _table(at, "models")
    assert models["model"].tolist() == ["churn"]
    assert models["versions"].tolist() == [2]
    assert at.selectbox(key="reg_model").value == "churn"
    assert at.selectbox(key="reg_version").value == 2  # newest first

    # Version 1's details: lineage and metrics come from the registry.
    at.selectbox(key="reg_version").set_value(1).run()
    assert not at.exception
    lineage = _table(at, "lineage")
    values = dict(zip(lineage["what"], lineage["value"], strict=True))
    assert values["dataset"] == "customers v1"
    assert values["Optuna study"] == "churn-1"
    metrics = _table(at, "metrics")
    assert metrics["value"].tolist() == [pytest.approx(0.81)]

    # An analyst cannot approve, alias or archive: those forms are not shown.
    keys = {b.key for b in at.button}
    assert not keys & {"reg_version_approve", "reg_alias_submit", "reg_archive_submit"}

    at.text_area(key="reg_request_comment").input("AUC beats the baseline")
    at.button(key="reg_request_submit").click().run()
    assert not at.exception
    assert "Approval requested for churn:1." in _flash(at)
    assert registry.get_version(ws, "churn", 1).status is VersionStatus.PENDING_REVIEW

    # Rita reviews from the queue.
    at.session_state["user"] = auth.get_user(ws, "rita")
    at.run()
    assert not at.exception
    queue = _table(at, "pending")
    assert queue["version"].tolist() == ["churn:1"]
    assert queue["comment"].tolist() == ["AUC beats the baseline"]
    at.text_area(key="reg_queue_decision_comment").input("checked the holdout")
    at.button(key="reg_queue_approve").click().run()
    assert not at.exception
    assert "churn:1 is now approved." in _flash(at)
    approved = registry.get_version(ws, "churn", 1)
    assert approved.status is VersionStatus.APPROVED and approved.reviewed_by == "rita"

    # Rita moves the champion alias onto version 1.
    at.selectbox(key="reg_version").set_value(1).run()
    assert at.text_input(key="reg_alias_name").value == "champion"
    at.button(key="reg_alias_submit").click().run()
    assert not at.exception
    assert "churn@champion now points at v1." in _flash(at)
    assert registry.resolve(ws, "churn@champion").version == 1
    models = _table(at, "models")
    assert models["aliases"].tolist() == ["champion → v1"]

    audit = _table(at, "audit")
    assert audit["action"].tolist()[:3] == ["alias_set", "version_approved", "approval_requested"]
    assert audit["who"].tolist()[:3] == ["rita", "rita", "ana"]


def test_self_review_is_refused_and_rejection_needs_a_reason(ws, two_versions, admin):
    registry.request_approval(ws, "churn", 2, actor=admin, comment="mine")
    at = _registry_page(ws, "admin")
    # The admin requested it, so the version view shows no decision form...
    assert "reg_version_approve" not in {b.key for b in at.button}
    # ...and deciding from the queue is refused by core with a clear reason.
    at.button(key="reg_queue_approve").click().run()
    assert not at.exception
    assert any("another reviewer must decide" in e.value for e in at.error)

    at = _registry_page(ws, "rita")
    at.button(key="reg_queue_reject").click().run()
    assert any("say why" in e.value for e in at.error)
    assert registry.get_version(ws, "churn", 2).status is VersionStatus.PENDING_REVIEW


def test_compare_and_filters(ws, two_versions, analyst, tmp_path):
    path = tmp_path / "other.txt"
    path.write_text("other\n")
    registry.register_version(ws, "fraud", {"model.txt": path}, metrics={}, params={},
                              lineage={}, actor=analyst, flavor="lightgbm", tags={"team": "risk"})
    at = _registry_page(ws, "rob")
    assert _table(at, "models")["model"].tolist() == ["churn", "fraud"]
    compare = _table(at, "compare")
    assert compare["key"].tolist() == ["auc"]
    assert compare["difference"].tolist() == [pytest.approx(0.03)]

    at.text_input(key="reg_tag").input("team=risk").run()
    assert _table(at, "models")["model"].tolist() == ["fraud"]
    at.text_input(key="reg_tag").input("").run()
    at.text_input(key="reg_search").input("zzz").run()
    assert not at.exception
    assert any("No registered models match" in i.value for i in at.info)


def test_empty_registry_explains_what_to_do(ws):
    at = _registry_page(ws, "ana")
    assert any("No registered models match" in i.value for i in at.info)
