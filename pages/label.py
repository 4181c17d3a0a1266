"""Label: human feedback on model responses, one item at a time, built for speed
(keyboard shortcuts on every answer button), then reviewed (agreement, throughput,
disputes) and exported as training data. Every answer is one `core.feedback`
call; texts are shown with `st.text`, so HTML or Markdown in a prompt or a
response is displayed, never run."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import streamlit as st

from core import auth, datasets, evaluation, feedback
from core.errors import PondError
from pages._feedback import win_rate_rows
from pages._shared import metric_row, show_error, signed_in_user, workspace

# Longer texts are cut in the view only; the stored text and every export keep them whole.
SHOWN_CHARS = 3000
PAIRWISE_BUTTONS = (
    ("A", "A is better", "A"),
    ("B", "B is better", "B"),
    ("tie", "Tie", "T"),
    ("both_bad", "Both bad", "X"),
)
VIEWS = ("Label", "Review", "Manage")

user = signed_in_user()
ws = workspace()
st.session_state.setdefault("label_answers", {})
st.session_state.setdefault("label_flash", None)
st.session_state.setdefault("label_export", None)

st.title("Label")
st.caption(
    "Rate and compare model responses. Your answers stay hidden from other labelers; "
    "reviewers see agreement and resolve disputes; exports become DPO and SFT data."
)

projects = feedback.list_projects(ws, actor=user)
view = st.radio("View", VIEWS, horizontal=True, key="label_view", label_visibility="collapsed")


def show_text(text: str, key: str) -> None:
    """Plain text (no Markdown, no HTML), cut to SHOWN_CHARS unless asked for all of it."""
    if len(text) <= SHOWN_CHARS:
        st.text(text)
        return
    if st.toggle(f"Show all {len(text):,} characters", key=f"{key}_all"):
        st.text(text)
    else:
        st.text(text[:SHOWN_CHARS] + " …")
        st.caption(
            f"Showing the first {SHOWN_CHARS:,} of {len(text):,} characters; the full "
            "text is stored and exported."
        )


def _flash(kind: str, message: str) -> None:
    st.session_state["label_flash"] = (kind, message)


def _answers_for(item_id: int) -> dict[str, Any]:
    return st.session_state["label_answers"].setdefault(item_id, {})


def _submit(project: feedback.Project, assignment: feedback.Assignment) -> None:
    answers = dict(_answers_for(assignment.item_id))
    item_id = assignment.item_id
    for q in project.questions:
        if q.kind == feedback.CORRECTION:
            text = st.session_state.get(f"label_fix_{item_id}") or ""
            if text.strip():
                answers[q.name] = {
                    "response": st.session_state.get(f"label_fix_which_{item_id}", "A"),
                    "text": text,
                }
        elif q.kind == feedback.TAGS:
            answers[q.name] = list(st.session_state.get(f"label_tags_{item_id}") or [])
    try:
        feedback.submit(ws, project.name, item_id, answers, actor=user)
    except PondError as exc:
        _flash("error", str(exc))
        return
    st.session_state["label_answers"].pop(item_id, None)
    _flash("success", f"Saved your answer to item {item_id}.")


def _instant(project: feedback.Project, assignment: feedback.Assignment) -> bool:
    """Whether one key press per question finishes the item (no text or tags to add)."""
    return all(
        q.kind == feedback.PAIRWISE
        or (q.kind == feedback.RATING and len(assignment.responses) == 1)
        for q in project.questions
    )


def _choose(
    project: feedback.Project, assignment: feedback.Assignment, question: str, value: Any
) -> None:
    answers = _answers_for(assignment.item_id)
    answers[question] = value
    required = [q.name for q in project.questions if q.required]
    if _instant(project, assignment) and all(q in answers for q in required):
        _submit(project, assignment)


def _rate(
    project: feedback.Project,
    assignment: feedback.Assignment,
    question: str,
    position: int,
    score: int,
) -> None:
    answers = _answers_for(assignment.item_id)
    scores = list(answers.get(question) or [None] * len(assignment.responses))
    scores[position] = score
    if all(s is not None for s in scores):
        _choose(project, assignment, question, scores if len(scores) > 1 else scores[0])
    else:
        answers[question] = scores


def _skip(project: feedback.Project, item_id: int) -> None:
    try:
        feedback.skip(ws, project.name, item_id, actor=user)
    except PondError as exc:
        _flash("error", str(exc))
    else:
        st.session_state["label_answers"].pop(item_id, None)
        _flash("info", f"Skipped item {item_id}.")


def _undo(project: feedback.Project) -> None:
    try:
        undone = feedback.undo_last(ws, project.name, actor=user)
    except PondError as exc:
        _flash("error", str(exc))
        return
    if undone is None:
        _flash("info", "Nothing to undo.")
    else:
        st.session_state["label_answers"].pop(undone.item_id, None)
        _flash("info", f"Undid your {undone.kind} on item {undone.item_id}; answer it again.")


def _question_widgets(project: feedback.Project, assignment: feedback.Assignment) -> None:
    answers = _answers_for(assignment.item_id)
    letters = assignment.letters
    item_id = assignment.item_id
    for q in project.questions:
        st.markdown(f"**{q.title or q.name}**")
        if q.kind == feedback.PAIRWISE:
            cols = st.columns(len(PAIRWISE_BUTTONS))
            for col, (value, label, key) in zip(cols, PAIRWISE_BUTTONS, strict=True):
                col.button(
                    label,
                    key=f"label_pick_{value}",
                    shortcut=key,
                    type="primary" if answers.get(q.name) == value else "secondary",
                    on_click=_choose,
                    args=(project, assignment, q.name, value),
                    width="stretch",
                )
        elif q.kind == feedback.RATING:
            current = answers.get(q.name)
            scores = current if isinstance(current, list) else [current]
            for pos, letter in enumerate(letters):
                cols = st.columns([1, 1, 1, 1, 1, 2])
                for score in range(1, 6):
                    chosen = pos < len(scores) and scores[pos] == score
                    cols[score - 1].button(
                        str(score),
                        key=f"label_rate_{pos}_{score}",
                        shortcut=str(score) if len(letters) == 1 else None,
                        type="primary" if chosen else "secondary",
                        on_click=_rate,
                        args=(project, assignment, q.name, pos, score),
                        help=q.rubric[score - 1],
                        width="stretch",
                    )
                cols[5].caption(f"Response {letter}" if len(letters) > 1 else "")
        elif q.kind == feedback.CORRECTION:
            left, right = st.columns([1, 4])
            left.selectbox("Response", letters, key=f"label_fix_which_{item_id}")
            right.text_area(
                "Corrected response",
                key=f"label_fix_{item_id}",
                height=100,
                placeholder="Leave empty when no response needs fixing",
            )
        elif q.kind == feedback.TAGS:
            st.multiselect(
                "Tags", q.options, key=f"label_tags_{item_id}", label_visibility="collapsed"
            )


def _label_view() -> None:
    mine = [p for p in projects if user.name in p.labelers]
    if not mine:
        st.info(
            "You are not a labeler of any project yet. A project's owner adds labelers "
            "on the Manage view or with `pond feedback add-labeler PROJECT USER`."
        )
        return
    name = st.selectbox("Project", [p.name for p in mine], key="label_project")
    project = next(p for p in mine if p.name == name)
    with st.sidebar:
        st.markdown("**Guidelines**")
        st.markdown(project.guidelines or "_No guidelines were written for this project._")
        rating = project.rating
        if rating:
            st.markdown("**Rating rubric**")
            for line in rating.rubric:
                st.caption(line)
        st.caption(
            "Keys: A / B better, T tie, X both bad, 1–5 rate, Enter submit, S skip, "
            "U undo. Buttons work too."
        )
    flash = st.session_state["label_flash"]
    if flash:
        getattr(st, flash[0])(flash[1])
        st.session_state["label_flash"] = None
    try:
        assignment = feedback.next_item(ws, project.name, actor=user)
        done = feedback.progress(ws, project.name, actor=user)
    except PondError as exc:
        show_error(exc)
        return
    left, right = st.columns(2)
    mine_total = done.mine_answered + done.mine_left
    left.progress(
        done.mine_answered / mine_total if mine_total else 1.0,
        text=f"You: {done.mine_answered} answered, {done.mine_skipped} skipped, "
        f"{done.mine_left} left",
    )
    right.progress(
        min(1.0, done.fraction),
        text=f"Project: {done.labels_given} of {done.labels_needed} labels, "
        f"{done.items_complete} of {done.items} items complete",
    )
    if assignment is None:
        st.success(f"Nothing left for you in {project.name}. Thank you!")
        st.button(
            "Undo my last answer", key="label_undo", shortcut="U", on_click=_undo, args=(project,)
        )
        return
    st.markdown(f"**Prompt** · item {assignment.item_id}")
    with st.container(border=True):
        show_text(assignment.prompt, f"label_prompt_{assignment.item_id}")
    cols = st.columns(len(assignment.responses))
    for col, letter, text in zip(cols, assignment.letters, assignment.responses, strict=True):
        with col:
            st.markdown(f"**Response {letter}**")
            with st.container(border=True):
                show_text(text, f"label_response_{assignment.item_id}_{letter}")
    _question_widgets(project, assignment)
    cols = st.columns(3)
    if not _instant(project, assignment):
        cols[0].button(
            "Submit",
            key="label_submit",
            type="primary",
            shortcut="Enter",
            on_click=_submit,
            args=(project, assignment),
            width="stretch",
        )
    cols[1].button(
        "Skip",
        key="label_skip",
        shortcut="S",
        on_click=_skip,
        args=(project, assignment.item_id),
        width="stretch",
    )
    cols[2].button(
        "Undo last",
        key="label_undo",
        shortcut="U",
        on_click=_undo,
        args=(project,),
        width="stretch",
    )


# --- review ------------------------------------------------------------------------------------


def _answer_text(question: feedback.Question, answer: Any, item: feedback.ItemReview) -> str:
    def who(i: int) -> str:
        model = item.candidates[i].get("model")
        return f"response {i + 1}" + (f" ({model})" if model else "")

    if answer is None:
        return "–"
    if question.kind == feedback.PAIRWISE:
        return {"tie": "tie", "both_bad": "both bad"}.get(answer) or who(answer)
    if question.kind == feedback.RATING:
        return ", ".join(f"{s:g}" for s in answer)
    if question.kind == feedback.CORRECTION:
        return f"fixes {who(answer['candidate'])}: {answer['text'][:80]}"
    return ", ".join(answer) or "(none)"


def _review_view() -> None:
    reviewable = [p for p in projects if user.can("review") or p.created_by == user.name]
    if not reviewable:
        st.info("Reviewing needs the reviewer role (or owning a project).")
        return
    name = st.selectbox("Project", [p.name for p in reviewable], key="label_review_project")
    project = next(p for p in reviewable if p.name == name)
    try:
        stats = feedback.agreement(ws, name, actor=user)
        speed = feedback.throughput(ws, name, actor=user)
        reviews = feedback.review_items(ws, name, actor=user)
        done = feedback.progress(ws, name, actor=user)
    except PondError as exc:
        show_error(exc)
        return
    disputed = [r for r in reviews if r.disputed and not set(r.disputed) <= set(r.resolutions)]
    metric_row(
        [
            ("Items complete", f"{done.items_complete} / {done.items}"),
            ("Labels", f"{done.labels_given} / {done.labels_needed}"),
            ("Disputed, open", len(disputed)),
            ("Labelers", len(project.labelers)),
        ]
    )
    st.subheader("Agreement")
    st.dataframe(
        [
            {
                "question": a.question,
                "level": a.level,
                "Krippendorff's alpha": a.alpha,
                "Cohen's kappa (2 labelers)": a.kappa,
                "units": a.units,
            }
            for a in stats
        ],
        hide_index=True,
        key="label_agreement",
    )
    pairs = [dict(k, question=a.question) for a in stats for k in a.kappas]
    if len(pairs) > len(stats):
        st.dataframe(pairs, hide_index=True, key="label_kappas")
    st.caption(
        "Alpha: 1 is perfect agreement, 0 is chance. Ratings are compared as ordinal "
        "values per response; pairwise answers and tags as categories."
    )
    st.subheader("Labelers")
    st.dataframe(
        [
            {
                "labeler": s.labeler,
                "answered": s.answered,
                "skipped": s.skipped,
                "median seconds": s.median_seconds,
                "per hour": s.items_per_hour,
                "last answer": s.last_at,
                "status": "active" if s.active else "removed",
            }
            for s in speed
        ],
        hide_index=True,
        key="label_throughput",
    )
    st.subheader("Answers per item")
    if len(reviews) < done.items:
        st.caption("Items you may still label are hidden until you answer them.")
    questions = {q.name: q for q in project.questions}
    st.dataframe(
        [
            {
                "item": r.item_id,
                "prompt": r.prompt[:80],
                "question": a["question"],
                "labeler": a["labeler"],
                "answer": _answer_text(questions[a["question"]], a["answer"], r),
                "disputed": a["question"] in r.disputed,
            }
            for r in reviews
            for a in r.answers
        ],
        hide_index=True,
        key="label_answers",
    )
    st.subheader("Disputed items")
    if not disputed:
        st.info("No open disputes.")
    elif user.can("review"):
        by_id = {r.item_id: r for r in disputed}
        picked = st.selectbox(
            "Item",
            list(by_id),
            key="label_dispute_item",
            format_func=lambda i: f"item {i}: {by_id[i].prompt[:60]}",
        )
        item = by_id[picked]
        show_text(item.prompt, f"label_dispute_prompt_{item.item_id}")
        cols = st.columns(len(item.candidates))
        for i, (col, cand) in enumerate(zip(cols, item.candidates, strict=True)):
            with col:
                st.markdown(f"**Response {i + 1}** · `{cand.get('model') or 'unknown model'}`")
                show_text(cand["text"], f"label_dispute_{item.item_id}_{i}")
        qname = st.selectbox("Question", item.disputed, key="label_dispute_question")
        q = questions[qname]
        for a in item.answers:
            if a["question"] == qname:
                st.caption(f"{a['labeler']}: {_answer_text(q, a['answer'], item)}")
        if q.kind == feedback.PAIRWISE:
            options: list[Any] = [*range(len(item.candidates)), "tie", "both_bad"]
            final = st.radio(
                "Final answer",
                options,
                horizontal=True,
                key="label_dispute_answer",
                format_func=lambda v: _answer_text(q, v, item),
            )
        elif q.kind == feedback.RATING:
            cols = st.columns(len(item.candidates))
            final = [
                int(c.number_input(f"Response {i + 1}", 1, 5, 3, key=f"label_dispute_r{i}"))
                for i, c in enumerate(cols)
            ]
        else:
            final = st.multiselect("Final tags", q.options, key="label_dispute_tags")
        comment = st.text_input("Why (optional)", key="label_dispute_comment")
        if st.button("Resolve", key="label_resolve", type="primary"):
            try:
                feedback.resolve_dispute(
                    ws, name, item.item_id, qname, final, actor=user, comment=comment or None
                )
            except PondError as exc:
                show_error(exc)
            else:
                _flash("success", f"Resolved item {item.item_id}.")
                st.rerun()
    else:
        st.caption("A reviewer resolves disputes.")
    models = sorted({c["model"] for r in reviews for c in r.candidates if c.get("model")})
    if project.pairwise and len(models) == 2:
        st.subheader("Win rate")
        st.dataframe(
            win_rate_rows([feedback.win_rate(ws, models[0], models[1])]),
            hide_index=True,
            key="label_win_rate",
        )


# --- manage ------------------------------------------------------------------------------------


def _create_form() -> None:
    labelers = [u.name for u in auth.list_users(ws) if u.can("label") and not u.disabled]
    with st.form("label_create_form"):
        st.markdown("**New project**")
        name = st.text_input("Project name", key="label_new_name")
        description = st.text_input("Description", key="label_new_description")
        guidelines = st.text_area(
            "Guidelines (Markdown), shown beside every item", key="label_new_guidelines"
        )
        cols = st.columns(4)
        pairwise = cols[0].checkbox("Pairwise A/B", value=True, key="label_new_pairwise")
        rating = cols[1].checkbox("Rating 1–5", key="label_new_rating")
        correction = cols[2].checkbox("Correction", key="label_new_correction")
        tags = cols[3].text_input("Tags (comma-separated)", key="label_new_tags")
        rubric = st.text_area(
            "Rating rubric: five lines, for 1 to 5",
            value="\n".join(feedback.DEFAULT_RUBRIC),
            key="label_new_rubric",
        )
        cols = st.columns(2)
        per_item = cols[0].number_input(
            "Labels per item", 1, feedback.MAX_LABELS_PER_ITEM, 1, key="label_new_per_item"
        )
        people = cols[1].multiselect("Labelers", labelers, key="label_new_labelers")
        made = st.form_submit_button("Create project", type="primary", key="label_new_submit")
    if not made:
        return
    questions: list[feedback.Question] = []
    if pairwise:
        questions.append(feedback.default_question(feedback.PAIRWISE))
    if rating:
        questions.append(
            feedback.default_question(
                feedback.RATING, rubric=[r for r in rubric.splitlines() if r.strip()]
            )
        )
    if correction:
        questions.append(feedback.default_question(feedback.CORRECTION))
    if tags.strip():
        questions.append(
            feedback.default_question(feedback.TAGS, options=[t.strip() for t in tags.split(",")])
        )
    try:
        feedback.create_project(
            ws,
            name.strip(),
            questions,
            actor=user,
            guidelines=guidelines,
            description=description,
            labels_per_item=int(per_item),
            labelers=people,
        )
    except PondError as exc:
        show_error(exc)
    else:
        _flash("success", f"Created project {name.strip()}.")
        st.rerun()


def _import_section(project: feedback.Project) -> None:
    st.markdown("**Add items**")
    source = st.radio(
        "From",
        ["a JSONL or CSV file", "a dataset version", "one or two text models"],
        horizontal=True,
        key="label_import_source",
    )
    try:
        if source.startswith("a JSONL"):
            upload = st.file_uploader(
                "File", type=["jsonl", "json", "csv"], key="label_import_file"
            )
            if upload is not None and st.button("Import", key="label_import_run"):
                with tempfile.TemporaryDirectory(dir=ws.tmp_dir) as tmp:
                    path = Path(tmp) / Path(upload.name).name
                    path.write_bytes(upload.getvalue())
                    result = feedback.import_items(ws, project.name, actor=user, path=path)
                st.success(
                    f"Imported {result.imported} item(s); "
                    f"{result.duplicates_skipped} duplicate(s) skipped."
                )
        elif source == "a dataset version":
            refs = evaluation.dataset_choices(ws)
            if not refs:
                st.info("No datasets yet.")
                return
            ref = st.selectbox("Dataset version", refs, key="label_import_dataset")
            columns = datasets.resolve(ws, ref).column_names
            prompt = st.selectbox("Prompt column", columns, key="label_import_prompt")
            cands = st.multiselect(
                "Candidate columns (empty: a 'candidates' list column)",
                [c for c in columns if c != prompt],
                key="label_import_candidates",
            )
            if st.button("Import", key="label_import_dataset_run"):
                result = feedback.import_items(
                    ws,
                    project.name,
                    actor=user,
                    dataset=ref,
                    prompt_col=prompt,
                    candidate_cols=cands or None,
                )
                st.success(
                    f"Imported {result.imported} item(s); "
                    f"{result.duplicates_skipped} duplicate(s) skipped."
                )
        else:
            models = evaluation.model_choices(ws, flavor="transformers")
            refs = evaluation.dataset_choices(ws)
            if not models or not refs:
                st.info(
                    "Generating needs a registered text model (Fine-tune page) and a "
                    "dataset with prompts."
                )
                return
            ref = st.selectbox("Dataset version", refs, key="label_gen_dataset")
            prompt = st.selectbox(
                "Prompt column", datasets.resolve(ws, ref).column_names, key="label_gen_prompt"
            )
            chosen = st.multiselect(
                "One or two text models", models, max_selections=2, key="label_gen_models"
            )
            limit = st.number_input(
                "At most this many prompts", 1, 10_000, 50, key="label_gen_limit"
            )
            if chosen and st.button("Generate", key="label_gen_run"):
                with st.spinner("Generating responses…"):
                    result = feedback.generate_items(
                        ws,
                        project.name,
                        dataset=ref,
                        prompt_col=prompt,
                        models=chosen,
                        actor=user,
                        limit=int(limit),
                    )
                st.success(f"Generated {result.imported} item(s).")
    except PondError as exc:
        show_error(exc)


def _labelers_section(project: feedback.Project) -> None:
    st.markdown(f"**Labelers** · {project.labels_per_item} label(s) per item")
    st.caption(
        f"Active: {', '.join(project.labelers) or 'none'}"
        + (f"; removed: {', '.join(project.removed_labelers)}" if project.removed_labelers else "")
    )
    candidates = [
        u.name
        for u in auth.list_users(ws)
        if u.can("label") and not u.disabled and u.name not in project.labelers
    ]
    cols = st.columns(2)
    add = cols[0].selectbox("Add", candidates, index=None, key="label_add_labeler")
    remove = cols[1].selectbox("Remove", project.labelers, index=None, key="label_remove_labeler")
    try:
        if add and cols[0].button("Add labeler", key="label_add_run"):
            feedback.add_labeler(ws, project.name, add, actor=user)
            _flash("success", f"{add} now labels {project.name}.")
            st.rerun()
        if remove and cols[1].button("Remove labeler", key="label_remove_run"):
            feedback.remove_labeler(ws, project.name, remove, actor=user)
            _flash("success", f"{remove} no longer labels {project.name}; their labels stay.")
            st.rerun()
    except PondError as exc:
        show_error(exc)


def _export_section(project: feedback.Project) -> None:
    st.markdown("**Export**")
    st.caption(
        "DPO: {prompt, chosen, rejected} per item whose pairwise decision picks a "
        "response (ties and 'both bad' are left out). SFT: corrected or top-rated "
        "responses. Raw: every answer. Each record names the model versions."
    )
    cols = st.columns([2, 1])
    fmt = cols[0].radio("Format", feedback.FORMATS, horizontal=True, key="label_export_format")
    if cols[1].button("Export", key="label_export_run", type="primary"):
        out = ws.home / "exports" / f"{project.name}-{fmt}.jsonl"
        try:
            st.session_state["label_export"] = feedback.export(
                ws, project.name, fmt, out, actor=user
            )
        except PondError as exc:
            show_error(exc)
    done = st.session_state["label_export"]
    if done is not None and done.project == project.name:
        left_out = ", ".join(f"{n} {why.replace('_', ' ')}" for why, n in done.excluded.items())
        st.success(
            f"{done.records} {done.format} record(s) in {done.path}"
            + (f"; left out: {left_out}" if left_out else "")
            + "."
        )
        st.download_button(
            "Download",
            Path(done.path).read_bytes(),
            file_name=Path(done.path).name,
            mime="application/jsonl",
            key="label_export_download",
        )


def _manage_view() -> None:
    if user.can("label"):
        with st.expander("Create a project", expanded=not projects):
            _create_form()
    if not projects:
        st.info("No projects yet.")
        return
    name = st.selectbox("Project", [p.name for p in projects], key="label_manage_project")
    project = next(p for p in projects if p.name == name)
    st.caption(
        f"{project.description} · owner {project.created_by} · {project.items} items · "
        f"questions: {', '.join(q.name for q in project.questions)}"
    )
    flash = st.session_state["label_flash"]
    if flash:
        getattr(st, flash[0])(flash[1])
        st.session_state["label_flash"] = None
    if user.role is auth.Role.ADMIN or project.created_by == user.name:
        _import_section(project)
        _labelers_section(project)
    _export_section(project)


if view == "Label":
    _label_view()
elif view == "Review":
    _review_view()
else:
    _manage_view()
