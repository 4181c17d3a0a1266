"""In a real browser, two people: ana requests approval of a model version,
rita (in her own browser session) approves it and makes it the champion."""

from __future__ import annotations

import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from core import auth, registry, store
from tests.e2e.conftest import wait_idle

pytestmark = pytest.mark.browser
MODEL = "browser_flow"


@pytest.fixture
def registered(demo_home, tmp_path):
    ws = store.open_workspace(demo_home)
    path = tmp_path / "model.txt"
    path.write_text("tree\n")
    return registry.register_version(
        ws, MODEL, {"model.txt": path}, metrics={"auc": 0.83}, params={"num_leaves": 31},
        lineage=registry.make_lineage(
            dataset={"name": "penguins", "version": 1, "content_sha256": "0" * 64}
        ),
        actor=auth.get_user(ws, "ana"), flavor="lightgbm", task="multiclass_classification",
    )


def _sign_in(page, url: str, name: str) -> None:
    page.goto(url)
    page.get_by_label("User name", exact=True).fill(name)
    # exact: the password field's "Show password" toggle also matches a loose "Password".
    page.get_by_label("Password", exact=True).fill("pond-demo")
    page.get_by_role("button", name="Sign in").click()
    page.get_by_text(f"Signed in as {name}").wait_for()


def _open_model(page, url: str, user: str) -> None:
    _sign_in(page, url, user)
    page.get_by_role("link", name="Registry").click()
    wait_idle(page)
    search = page.get_by_label("Search by name")
    search.fill(MODEL)
    search.press("Enter")
    wait_idle(page)


def test_request_then_approve_with_two_users(registered, app_url, browser, page, demo_home):
    # ana asks for review.
    _open_model(page, app_url, "ana")
    page.get_by_role("tab", name="Review & aliases").click()
    panel = page.get_by_role("tabpanel", name="Review & aliases")
    panel.get_by_label("Why should it be approved?").fill("Beats the baseline on holdout")
    panel.get_by_role("button", name="Request approval").click()
    page.get_by_text(f"Approval requested for {MODEL}:1.").wait_for()

    # rita, in a separate browser session, sees the request and approves it.
    rita_context = browser.new_context(viewport={"width": 1400, "height": 1000})
    rita = rita_context.new_page()
    rita.set_default_timeout(60_000)
    try:
        _open_model(rita, app_url, "rita")
        # The version's history shows who asked and why.
        rita.get_by_text("requested approval: Beats the baseline on holdout").wait_for()
        rita.get_by_role("tab", name="Review & aliases").click()
        panel = rita.get_by_role("tabpanel", name="Review & aliases")
        panel.get_by_label("Comment (required to reject)").fill("Checked the holdout")
        panel.get_by_role("button", name="Approve").click()
        rita.get_by_text(f"{MODEL}:1 is now approved.").wait_for()
        wait_idle(rita)

        # The approval reran the page; on a busy machine the tab can be clicked while
        # the rerun still replaces it, so wait for the run to end and click until it shows.
        button = rita.get_by_role("tabpanel", name="Review & aliases").get_by_role(
            "button", name="Point it at v1")
        for _ in range(3):
            rita.get_by_role("tab", name="Review & aliases").click()
            wait_idle(rita)
            try:
                button.wait_for(timeout=20_000)
                break
            except PlaywrightTimeout:
                continue
        button.click()
        rita.get_by_text(f"{MODEL}@champion now points at v1.").wait_for()
    finally:
        rita_context.close()

    ws = store.open_workspace(demo_home)
    version = registry.get_version(ws, MODEL, 1)
    assert version.status is registry.VersionStatus.APPROVED
    assert (version.requested_by, version.reviewed_by) == ("ana", "rita")
    assert version.aliases == ("champion",)
    actions = [e.action for e in registry.audit_trail(ws, MODEL)]
    assert actions == ["alias_set", "version_approved", "approval_requested",
                       "version_registered"]
