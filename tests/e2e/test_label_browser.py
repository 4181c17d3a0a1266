"""In a real browser: ana labels pairwise items with the keyboard only (A, B, T, U),
HTML in an item is shown as text and never runs, and the DPO export holds exactly
what she chose, with the model versions that wrote each side."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from core import auth, feedback, store
from tests.e2e.conftest import _require_browser, sign_in, start_app, wait_idle

pytestmark = pytest.mark.browser
PROJECT = "keyboard-prefs"
ITEMS = [
    ("Which island has the most Gentoo penguins?", "Biscoe.", "Dream."),
    ("How many penguin species are in the data?", "Three.", "Seven."),
    (
        "<script>window.__pond_xss = 1</script>Say hi",
        '<img src=x onerror="window.__pond_xss=2">',
        "hi",
    ),
]


@pytest.fixture
def labeling_app(tmp_path):
    _require_browser()
    home = tmp_path / "pond"
    ws = store.open_workspace(home)
    auth.add_user(ws, "admin", "admin", "pond-demo", actor=auth.SYSTEM)
    admin = auth.get_user(ws, "admin")
    auth.add_user(ws, "ana", "analyst", "pond-demo", actor=admin)
    ana = auth.get_user(ws, "ana")
    source = tmp_path / "items.jsonl"
    source.write_text(
        "".join(
            json.dumps(
                {
                    "prompt": p,
                    "candidates": [
                        {"text": a, "model": "helper:2"},
                        {"text": b, "model": "helper:1"},
                    ],
                }
            )
            + "\n"
            for p, a, b in ITEMS
        )
    )
    feedback.create_project(
        ws,
        PROJECT,
        ["pairwise"],
        actor=ana,
        labelers=["ana"],
        guidelines="Prefer the **correct** answer.",
    )
    feedback.import_items(ws, PROJECT, actor=ana, path=source)
    proc, url = start_app(home)
    try:
        yield ws, url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def _shown(page) -> tuple[str, str, str]:
    """The prompt and the two responses as the page shows them (st.text elements),
    read once the page has settled (Streamlit replaces elements one by one)."""
    texts = page.locator('[data-testid="stText"]')
    texts.nth(2).wait_for()
    last = None
    for _ in range(40):
        wait_idle(page)
        now = tuple(texts.nth(i).inner_text() for i in range(3))
        if now == last and page.locator('[data-stale="true"]').count() == 0:
            return now
        last = now
        page.wait_for_timeout(250)
    raise AssertionError("the labeling page did not settle")


def _press(page, key: str, before: str) -> None:
    page.keyboard.press(key)
    page.wait_for_function(
        "before => !document.querySelector('[data-testid=\"stText\"]') ||"
        " document.querySelector('[data-testid=\"stText\"]').innerText !== before",
        arg=before,
    )
    wait_idle(page)


def test_label_pairwise_with_the_keyboard_and_export(labeling_app, page, tmp_path):
    ws, url = labeling_app
    sign_in(page, url, "ana")
    page.get_by_role("link", name="Label").click()
    wait_idle(page)
    page.get_by_text("Prefer the correct answer.").wait_for()  # guidelines, always visible
    page.get_by_role("heading", name="Label").click()  # focus the page, not a widget

    prompt, a, b = _shown(page)
    assert prompt == ITEMS[0][0]
    _press(page, "a", prompt)  # A is better: answered and the next item is shown
    chosen = {prompt: (a, b)}

    prompt, a, b = _shown(page)
    _press(page, "t", prompt)  # a tie …
    prompt_back, _, _ = _shown(page)
    _press(page, "u", prompt_back)  # … undone: the same item comes back
    again, a2, b2 = _shown(page)
    assert again == prompt and (a2, b2) == (a, b)  # same order as before
    _press(page, "b", prompt)
    chosen[prompt] = (b, a)

    prompt, a, b = _shown(page)
    assert prompt == ITEMS[2][0]  # the <script> is shown as text …
    assert page.evaluate("window.__pond_xss") is None  # … and neither it nor onerror ran
    _press(page, "a", prompt)
    chosen[prompt] = (a, b)
    page.get_by_text(f"Nothing left for you in {PROJECT}").wait_for()
    assert page.evaluate("window.__pond_xss") is None

    out = Path(tmp_path) / "dpo.jsonl"
    done = feedback.export(ws, PROJECT, "dpo", out, actor=auth.get_user(ws, "ana"))
    assert done.records == 3 and done.excluded == {}
    models = {
        "Biscoe.": "helper:2",
        "Three.": "helper:2",
        "hi": "helper:1",
        "Dream.": "helper:1",
        "Seven.": "helper:1",
    }
    for record in map(json.loads, out.read_text().splitlines()):
        assert (record["chosen"], record["rejected"]) == chosen[record["prompt"]]
        assert record["chosen"] != record["rejected"]
        assert record["chosen_model"] == models.get(record["chosen"], "helper:2")
