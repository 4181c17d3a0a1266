"""AppTest of the Label page: label with the buttons (the keyboard-free path), skip,
undo, progress, answers hidden from other labelers, review and export."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core import auth, feedback

ROOT = Path(__file__).resolve().parent.parent
PROJECT = "answers"


@pytest.fixture
def project(ws, analyst, tmp_path):
    source = tmp_path / "items.jsonl"
    lines = [
        {
            "prompt": f"Question {i}: what is {i} + {i}?",
            "candidates": [
                {"text": f"{2 * i}", "model": "helper:2"},
                {"text": f"{2 * i + 1}", "model": "helper:1"},
            ],
        }
        for i in range(3)
    ]
    lines.append(
        {
            "prompt": "<script>alert('x')</script> **bold?**",
            "candidates": [
                {"text": "<img src=x onerror=alert(1)>", "model": "helper:2"},
                {"text": "x" * 5000, "model": "helper:1"},
            ],
        }
    )
    source.write_text("".join(json.dumps(line) + "\n" for line in lines))
    feedback.create_project(
        ws,
        PROJECT,
        ["pairwise", "correction"],
        actor=analyst,
        labels_per_item=2,
        labelers=["ana", "rita"],
        guidelines="Prefer the **correct** sum.",
    )
    feedback.import_items(ws, PROJECT, actor=analyst, path=source)
    return PROJECT


def _page(ws, name: str) -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.session_state["user"] = auth.get_user(ws, name)
    at.run()
    at.switch_page("pages/label.py").run()
    assert not at.exception
    return at


def _texts(at: AppTest) -> list[str]:
    return [t.value for t in at.text]


def test_label_with_buttons_skip_undo_and_progress(ws, project, reviewer):
    at = _page(ws, "ana")
    assert "Question 0: what is 0 + 0?" in _texts(at)
    assert any("Prefer the **correct** sum." in m.value for m in at.sidebar.markdown)
    shown = set(_texts(at))
    assert {"0", "1"} <= shown  # both responses, order hidden from the labeler
    # Pick A, then submit with the button (the page's Enter shortcut does the same).
    at.button(key="label_pick_A").click().run()
    assert not at.exception
    at.button(key="label_submit").click().run()
    assert any("Saved your answer to item 1" in s.value for s in at.success)
    assert "Question 1: what is 1 + 1?" in _texts(at)
    at.button(key="label_skip").click().run()
    assert "Question 2: what is 2 + 2?" in _texts(at)
    at.button(key="label_undo").click().run()
    assert any("Undid your skip on item 2" in i.value for i in at.info)
    assert "Question 1: what is 1 + 1?" in _texts(at)
    # A correction goes with the pairwise answer.
    at.button(key="label_pick_tie").click().run()
    at.text_area(key="label_fix_2").input("1 + 1 = 2")
    at.selectbox(key="label_fix_which_2").select("B")
    at.button(key="label_submit").click().run()
    assert not at.exception
    progress = [p for p in at.get("progress")]
    assert progress, "progress bars are shown"
    done = feedback.progress(ws, PROJECT, actor=auth.get_user(ws, "ana"))
    assert (done.mine_answered, done.mine_skipped, done.mine_left) == (2, 0, 2)
    raw, _, _ = feedback.export_records(ws, PROJECT, "raw", actor=auth.get_user(ws, "ana"))
    fix = next(r for r in raw if r["question"] == "correction")
    assert fix["answer"]["text"] == "1 + 1 = 2"
    assert fix["candidates"][fix["answer"]["candidate"]]["text"] in ("2", "3")

    # rita is a labeler and a reviewer: she does not see ana's answers to items she may
    # still label.
    rita = _page(ws, "rita")
    rita.radio(key="label_view").set_value("Review").run()
    assert not rita.exception
    assert any("hidden until you answer" in c.value for c in rita.caption)
    assert feedback.review_items(ws, PROJECT, actor=reviewer) == []


def test_unsafe_text_is_shown_as_text_and_long_text_is_cut(ws, project, analyst):
    for _ in range(3):  # answer the three plain items first
        item = feedback.next_item(ws, PROJECT, actor=analyst)
        feedback.submit(ws, PROJECT, item.item_id, {"preference": "A"}, actor=analyst)
    at = _page(ws, "ana")
    texts = _texts(at)
    assert "<script>alert('x')</script> **bold?**" in texts  # shown literally, not run
    assert "<img src=x onerror=alert(1)>" in texts
    cut = next(t for t in texts if t.startswith("xxx"))
    assert len(cut) < 5000 and cut.endswith("…")
    assert any("first 3,000 of 5,000 characters" in c.value for c in at.caption)
    assert all("<script>" not in m.value for m in at.markdown)
    stored = feedback.export_records(ws, PROJECT, "raw", actor=analyst)[0]
    assert stored and all(len(r["candidates"][1]["text"]) in (1, 5000) for r in stored)


def test_review_agreement_resolve_and_export(ws, project, analyst, reviewer, tmp_path):
    for who, pick in ((analyst, "first"), (reviewer, "second")):
        while (item := feedback.next_item(ws, PROJECT, actor=who)) is not None:
            # The letter that shows candidate 0 (an even sum, or the <img> text).
            first = item.responses[0]
            letter = (
                "A"
                if first.startswith("<img") or (first.isdigit() and int(first) % 2 == 0)
                else "B"
            )
            if pick == "second":
                letter = "B" if letter == "A" else "A"
            feedback.submit(ws, PROJECT, item.item_id, {"preference": letter}, actor=who)
    rob = auth.get_user(ws, "rob")
    with pytest.raises(Exception, match="not a labeler"):
        feedback.review_items(ws, PROJECT, actor=rob)
    at = _page(ws, "rita")
    at.radio(key="label_view").set_value("Review").run()
    assert not at.exception
    agreement = next(df.value for df in at.dataframe if "Krippendorff's alpha" in df.value.columns)
    assert agreement["question"].tolist() == ["preference"]
    assert any("Disputed, open" == m.label and m.value != "0" for m in at.metric)
    at.selectbox(key="label_dispute_item").select(1).run()
    at.radio(key="label_dispute_answer").set_value(0).run()
    at.button(key="label_resolve").click().run()
    assert not at.exception
    resolved = feedback.review_items(ws, PROJECT, actor=reviewer)[0]
    assert resolved.resolutions == {"preference": 0}
    # ana exports from the Manage view.
    ana = _page(ws, "ana")
    ana.radio(key="label_view").set_value("Manage").run()
    ana.radio(key="label_export_format").set_value("dpo").run()
    ana.button(key="label_export_run").click().run()
    assert not ana.exception
    assert any("1 dpo record(s)" in s.value for s in ana.success)
    path = ws.home / "exports" / f"{PROJECT}-dpo.jsonl"
    record = json.loads(path.read_text().splitlines()[0])
    assert record["chosen"] == "0" and record["chosen_model"] == "helper:2"


def test_labeler_without_projects_and_removed_labeler(ws, project, analyst):
    at = _page(ws, "rob")
    assert any("not a labeler of any project" in i.value for i in at.info)
    feedback.remove_labeler(ws, PROJECT, "rita", actor=analyst)
    rita = _page(ws, "rita")
    assert any("not a labeler of any project" in i.value for i in rita.info)


def test_win_rate_on_registry_and_evaluate_and_finetune_from_export(
    ws, analyst, reviewer, tmp_path
):
    from core import datasets, registry

    for n in (1, 2):
        path = tmp_path / f"model-{n}.txt"
        path.write_text(f"tree {n}\n")
        registry.register_version(
            ws,
            "helper",
            {"model.txt": path},
            metrics={},
            params={},
            lineage=registry.make_lineage(),
            actor=analyst,
            flavor="lightgbm",
            task="binary_classification",
        )
    source = tmp_path / "items.jsonl"
    source.write_text(
        "".join(
            json.dumps(
                {
                    "prompt": f"q{i}",
                    "candidates": [
                        {"text": f"good {i}", "model": "helper:2"},
                        {"text": f"bad {i}", "model": "helper:1"},
                    ],
                }
            )
            + "\n"
            for i in range(4)
        )
    )
    feedback.create_project(ws, "duel", ["pairwise", "correction"], actor=analyst, labelers=["ana"])
    feedback.import_items(ws, "duel", actor=analyst, path=source)
    while (item := feedback.next_item(ws, "duel", actor=analyst)) is not None:
        good = "A" if item.responses[0].startswith("good") else "B"
        feedback.submit(
            ws,
            "duel",
            item.item_id,
            {"preference": good, "correction": {"response": good, "text": "fixed"}},
            actor=analyst,
        )
    expected = feedback.win_rate(ws, "helper:2", "helper:1")
    assert expected.win_rate == 1.0

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.session_state["user"] = reviewer
    at.run()
    at.switch_page("pages/registry.py").run()
    assert not at.exception
    table = next(df.value for df in at.dataframe if "win rate of A" in df.value.columns)
    assert table["A"].tolist() == ["helper:2"] and table["win rate of A"].tolist() == ["100%"]

    prompts = tmp_path / "p.csv"
    prompts.write_text("prompt,response\na,b\n")
    datasets.ingest(ws, prompts, "texts", actor=analyst)
    at.switch_page("pages/evaluate.py").run()
    assert not at.exception
    at.selectbox(key="eval_win_rate_a").select("helper:2").run()
    assert {m.label: m.value for m in at.metric}["Win rate of helper:2"] == "100%"

    ana = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    ana.session_state["user"] = analyst
    ana.run()
    ana.switch_page("pages/finetune.py").run()
    ana.button(key="finetune_feedback_run").click().run()
    assert not ana.exception
    assert ana.session_state["finetune_dataset"] == "duel_sft"
    assert datasets.get_version(ws, "duel_sft").row_count == 4
