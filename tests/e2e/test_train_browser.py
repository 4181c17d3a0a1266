"""In a real browser: start a short AutoML training, watch it finish, see the
charts drawn, and register the model."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from core import registry, store
from tests.e2e.conftest import sign_in, wait_idle

pytestmark = pytest.mark.browser


def _choose(page, label: str, option: str) -> None:
    page.get_by_role("combobox", name=label).click()
    page.get_by_role("option", name=option, exact=True).click()
    wait_idle(page)


def _number(page, label: str, value: int) -> None:
    field = page.get_by_label(label)
    field.fill(str(value))
    field.press("Enter")
    wait_idle(page)


def test_short_training_then_register(app_url, page, demo_home, tmp_path):
    sign_in(page, app_url, "ana")
    page.get_by_role("link", name="Train").click()
    wait_idle(page)
    page.get_by_text("Choose the target column to predict.").wait_for()
    # The demo holds several datasets (and a feature view); the species data is "penguins".
    _choose(page, "Dataset or feature view", "penguins")
    _choose(page, "Target column (what to predict)", "species")
    expect(page.get_by_role("combobox", name="Task")).to_have_value(
        "auto (detected: multiclass)", timeout=60_000
    )
    _number(page, "Time budget (seconds)", 15)
    _number(page, "Max trials (0 = no cap)", 3)
    page.get_by_role("button", name="Start training").click()
    # The live view shows up, then the result replaces it.
    page.get_by_text("Trials done").first.wait_for(timeout=120_000)
    page.get_by_text("Holdout log loss").wait_for(timeout=240_000)
    wait_idle(page)
    page.locator('[data-testid="stPlotlyChart"] .main-svg').first.wait_for()
    assert page.locator('[data-testid="stPlotlyChart"]').count() >= 3
    page.screenshot(path=str(tmp_path / "train-result.png"), full_page=True)

    page.get_by_role("button", name="Register as penguins_species").click()
    # The demo workspace already holds v1 and v2 of this model.
    page.get_by_text("Registered penguins_species version 3 (pending_review)").wait_for()
    version = registry.get_version(store.open_workspace(demo_home), "penguins_species", 3)
    assert version.created_by == "ana"
    assert version.lineage["dataset"]["name"] == "penguins"
