"""Features: build a feature view step by step (or in SQL) with a live preview, save it
as a versioned view, and browse the catalog (columns, lineage, profile, models)."""

from __future__ import annotations

import json
from typing import Any

import streamlit as st

from core import datasets, features
from core.errors import InvalidInput, PondError
from pages._shared import metric_row, show_error, signed_in_user, workspace

user = signed_in_user()
ws = workspace()
for key, default in (
    ("fe_steps", []),
    ("fe_error", None),
    ("fe_saved", None),
    ("fe_mode", "Steps"),
    ("fe_sql", ""),
):
    st.session_state.setdefault(key, default)

st.title("Features")
st.caption(
    "Feature views are versioned data prep: the same steps build the training table "
    "and transform each record the server scores."
)

dataset_refs = [dv.name for dv in datasets.latest_versions(ws)]
view_refs = features.training_choices(ws)
if not dataset_refs:
    st.info("No datasets yet. Ingest one on the Data page, or run `pond ingest PATH --name NAME`.")
    st.stop()


def _definition(steps: list[dict[str, Any]] | None = None) -> features.Definition:
    steps = st.session_state["fe_steps"] if steps is None else steps
    if st.session_state["fe_mode"] == "SQL":
        return features.Definition(sql=st.session_state["fe_sql"] or None, steps=tuple(steps))
    return features.Definition(source=st.session_state.get("fe_source"), steps=tuple(steps))


def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _step_from_widgets() -> dict[str, Any]:
    """The step the 'Add a step' form describes (read from its widgets)."""
    s = st.session_state
    op = s["fe_op"]
    if op == "select":
        return {"op": op, "columns": list(s.get("fe_columns") or [])}
    if op == "rename":
        return {"op": op, "columns": {s.get("fe_column"): s.get("fe_new_name", "").strip()}}
    if op == "cast":
        return {"op": op, "columns": {s.get("fe_column"): s.get("fe_type")}}
    if op == "filter":
        return {"op": op, "condition": s.get("fe_expression", "")}
    if op == "derive":
        return {
            "op": op,
            "name": s.get("fe_new_name", "").strip(),
            "expression": s.get("fe_expression", ""),
        }
    if op == "impute":
        step = {
            "op": op,
            "columns": list(s.get("fe_columns") or []),
            "strategy": s.get("fe_strategy"),
        }
        if s.get("fe_strategy") == "constant":
            raw = s.get("fe_value", "")
            try:
                step["value"] = json.loads(raw)
            except json.JSONDecodeError:
                step["value"] = raw
        return step
    if op == "bin":
        edges = _csv(s.get("fe_edges", ""))
        step = {"op": op, "column": s.get("fe_column")}
        if edges:
            try:
                step["edges"] = [float(e) for e in edges]
            except ValueError:
                step["edges"] = edges
        else:
            step["bins"] = int(s.get("fe_bins", 4))
        return step
    if op == "one_hot":
        return {
            "op": op,
            "column": s.get("fe_column"),
            "max_categories": int(s.get("fe_max_categories", 20)),
        }
    if op == "frequency_encode":
        return {"op": op, "column": s.get("fe_column")}
    if op == "dedupe":
        step = {"op": op, "keys": list(s.get("fe_columns") or [])}
        if s.get("fe_order_by"):
            step["order_by"] = s["fe_order_by"]
        return step
    if op == "join":
        return {
            "op": op,
            "dataset": s.get("fe_dataset"),
            "on": list(s.get("fe_columns") or []),
            "how": s.get("fe_how", "left"),
            "prefix": s.get("fe_prefix", ""),
        }
    return {  # aggregate
        "op": op,
        "dataset": s.get("fe_dataset"),
        "on": s.get("fe_column"),
        "key": s.get("fe_event_key") or None,
        "timestamp": s.get("fe_timestamp_in"),
        "event_timestamp": s.get("fe_event_timestamp") or None,
        "window": s.get("fe_window") or None,
        "features": [
            {
                "name": s.get("fe_new_name", "").strip() or None,
                "fn": s.get("fe_fn"),
                "column": s.get("fe_agg_column") or None,
            }
        ],
    }


def _add_step() -> None:
    step = _step_from_widgets()
    candidate = [*st.session_state["fe_steps"], step]
    try:
        features.preview(ws, _definition(candidate), rows_=5)
    except PondError as exc:
        st.session_state["fe_error"] = str(exc)  # shown above the form; the step is not added
        return
    st.session_state["fe_error"] = None
    st.session_state["fe_steps"] = candidate


def _remove_step(index: int) -> None:
    st.session_state["fe_steps"] = [
        s for i, s in enumerate(st.session_state["fe_steps"]) if i != index
    ]
    st.session_state["fe_error"] = None


def _to_sql(sql: str) -> None:
    st.session_state["fe_mode"] = "SQL"
    st.session_state["fe_sql"] = sql
    st.session_state["fe_steps"] = []


def _edit(fv: features.FeatureViewVersion) -> None:
    spec = fv.definition["definition"]
    st.session_state["fe_mode"] = "SQL" if spec.get("sql") else "Steps"
    st.session_state["fe_sql"] = spec.get("sql") or ""
    if spec.get("source"):
        name = spec["source"].partition(":")[0]
        st.session_state["fe_source"] = name if name in dataset_refs else spec["source"]
    st.session_state["fe_steps"] = [dict(s) for s in spec["steps"]]
    st.session_state["fe_name"] = fv.name
    st.session_state["fe_description"] = fv.description
    st.session_state["fe_tags"] = ", ".join(f"{k}={v}" for k, v in fv.tags.items())
    st.session_state["fe_error"] = None


tab_build, tab_catalog = st.tabs(["Build", "Catalog"])

# --- build -------------------------------------------------------------------------------------
with tab_build:
    st.radio(
        "Start from",
        ["Steps", "SQL"],
        horizontal=True,
        key="fe_mode",
        help="Low-code steps over a dataset, or a SQL SELECT (steps may follow it).",
    )
    if st.session_state["fe_mode"] == "SQL":
        st.text_area(
            "SELECT over your datasets (by name, or NAME_vK for a version)",
            key="fe_sql",
            height=160,
        )
    else:
        if st.session_state.get("fe_source") not in dataset_refs + view_refs:
            st.session_state["fe_source"] = dataset_refs[0]
        st.selectbox("Source dataset", dataset_refs + view_refs, key="fe_source")

    current: features.Preview | None = None
    preview_error: str | None = None
    if st.session_state["fe_mode"] == "Steps" or st.session_state["fe_sql"].strip():
        try:
            current = features.preview(ws, _definition())
        except PondError as exc:
            preview_error = str(exc)
    columns = [c for c, _ in current.columns] if current else []

    steps = st.session_state["fe_steps"]
    st.subheader(f"Steps ({len(steps)})")
    for i, step in enumerate(steps):
        left, right = st.columns([6, 1])
        summary = {k: v for k, v in step.items() if k != "op"}
        rows_after = f" → {current.step_rows[i + 1]} rows on the sample" if current else ""
        left.markdown(f"**{i + 1}. {step['op']}** `{json.dumps(summary)}`{rows_after}")
        right.button("Remove", key=f"fe_remove_{i}", on_click=_remove_step, args=(i,))

    with st.expander("Add a step", expanded=True):
        op = st.selectbox(
            "Step", list(features.OPS), key="fe_op", format_func=lambda o: f"{o}: {features.OPS[o]}"
        )
        if op in ("select", "impute", "dedupe", "join"):
            label = {
                "select": "Columns to keep",
                "impute": "Columns to fill",
                "dedupe": "Key columns (none: exact duplicates)",
                "join": "Join on (same names on both sides)",
            }[op]
            st.multiselect(label, columns, key="fe_columns")
        if op in ("rename", "cast", "bin", "one_hot", "frequency_encode", "aggregate"):
            st.selectbox(
                "Entity key column" if op == "aggregate" else "Column", columns, key="fe_column"
            )
        if op in ("rename", "derive", "aggregate"):
            st.text_input(
                "Feature name" if op == "aggregate" else "New column name", key="fe_new_name"
            )
        if op in ("filter", "derive"):
            st.text_input(
                "Condition" if op == "filter" else "Expression",
                key="fe_expression",
                placeholder="e.g. bill_length_mm / bill_depth_mm, year(ts), "
                "CASE WHEN x > 1 THEN 'a' ELSE 'b' END",
            )
        if op == "cast":
            st.selectbox("Type", features.CAST_TYPES, key="fe_type")
        if op == "impute":
            st.selectbox("Strategy", features.IMPUTE_STRATEGIES, key="fe_strategy")
            st.text_input("Constant (for 'constant')", key="fe_value")
        if op == "bin":
            st.number_input("Quantile bins", min_value=2, max_value=100, value=4, key="fe_bins")
            st.text_input("Or edges (comma separated)", key="fe_edges")
        if op == "one_hot":
            st.number_input(
                "Most frequent categories kept",
                min_value=1,
                max_value=features.MAX_CATEGORIES,
                value=20,
                key="fe_max_categories",
            )
        if op == "dedupe":
            st.selectbox("Keep the latest by", [""] + columns, key="fe_order_by")
        if op in ("join", "aggregate"):
            st.selectbox("Dataset", dataset_refs + view_refs, key="fe_dataset")
        if op == "join":
            st.selectbox("How", ["left", "inner"], key="fe_how")
            st.text_input("Prefix for its columns (optional)", key="fe_prefix")
        if op == "aggregate":
            st.selectbox("Row timestamp column", columns, key="fe_timestamp_in")
            st.text_input("Its entity key column (default: same name)", key="fe_event_key")
            st.text_input("Its timestamp column (default: same name)", key="fe_event_timestamp")
            st.text_input("Window (e.g. 30 days; empty: all history)", key="fe_window")
            st.selectbox("Function", list(features.AGGREGATES), key="fe_fn")
            st.text_input("Column to aggregate (empty for count)", key="fe_agg_column")
        st.button("Add step", key="fe_add", type="primary", on_click=_add_step)
    if st.session_state["fe_error"]:
        st.error(st.session_state["fe_error"])

    st.subheader("Preview")
    if preview_error:
        st.error(preview_error)
    elif current is None:
        st.info("Write a SELECT to preview it.")
    else:
        for warning in current.warnings:
            st.warning(warning)
        metric_row(
            [
                ("Sample rows", len(current.frame)),
                ("Columns", len(current.columns)),
                ("Sources", ", ".join(current.sources)),
            ]
        )
        st.dataframe(current.frame, key="fe_preview")
        with st.expander("Compiled SQL", expanded=False):
            st.code(current.sql, language="sql")
            if st.session_state["fe_mode"] == "Steps":
                st.button("Edit as SQL", key="fe_to_sql", on_click=_to_sql, args=(current.sql,))

        st.subheader("Save")
        st.text_input(
            "Name",
            key="fe_name",
            placeholder="e.g. penguin_features",
            help="An existing name gets a new version; old versions stay as they were.",
        )
        st.text_area("Description", key="fe_description", height=70)
        left, right = st.columns(2)
        left.selectbox("Entity key", [""] + columns, key="fe_entity")
        right.selectbox("Timestamp column", [""] + columns, key="fe_timestamp")
        st.text_input("Tags (key=value, comma separated)", key="fe_tags")
        if st.button("Save feature view", key="fe_save", type="primary"):
            try:
                tags = {}
                for pair in _csv(st.session_state.get("fe_tags", "")):
                    k, sep, v = pair.partition("=")
                    if not sep:
                        raise InvalidInput(f"tag {pair!r} must be key=value")
                    tags[k.strip()] = v.strip()
                with st.spinner("Saving and materialising…"):
                    saved = features.create_view(
                        ws,
                        st.session_state.get("fe_name", "").strip(),
                        _definition(),
                        actor=user,
                        description=st.session_state.get("fe_description", ""),
                        entity_key=st.session_state.get("fe_entity") or None,
                        timestamp_column=st.session_state.get("fe_timestamp") or None,
                        tags=tags,
                    )
            except PondError as exc:
                show_error(exc)
            else:
                st.session_state["fe_saved"] = saved.ref
                st.session_state["fe_cat_view"] = saved.name
                st.success(
                    f"Saved feature view {saved.ref} ({saved.row_count} rows "
                    "materialised). Train on it as "
                    f"`fv:{saved.ref}` on the Train page or with `pond train`."
                )

# --- catalog ---------------------------------------------------------------------------------------
with tab_catalog:
    views = features.list_views(ws)
    if not views:
        st.info(
            "No feature views yet. Build one in the Build tab, or run "
            "`pond features create NAME --from-json steps.json`."
        )
    else:
        st.dataframe(
            [
                {
                    "name": v.name,
                    "version": v.version,
                    "owner": v.owner,
                    "description": v.description,
                    "entity key": v.entity_key or "",
                    "columns": len(v.columns),
                    "rows": v.row_count,
                    "tags": ", ".join(f"{k}={t}" for k, t in v.tags.items()),
                    "models": len(features.models_using(ws, v.name)),
                }
                for v in views
            ],
            hide_index=True,
            key="fe_catalog",
        )
        names = [v.name for v in views]
        if st.session_state.get("fe_cat_view") not in names:
            st.session_state["fe_cat_view"] = names[0]
        left, right = st.columns([3, 1])
        chosen = left.selectbox("Feature view", names, key="fe_cat_view")
        numbers = [v.version for v in features.list_versions(ws, chosen)][::-1]
        version = right.selectbox("Version", numbers, key="fe_cat_version")
        try:
            entry = features.catalog_entry(ws, f"{chosen}:{version}")
        except PondError as exc:
            show_error(exc)
            st.stop()
        fv = entry.view
        metric_row(
            [
                ("Rows", fv.row_count if fv.row_count is not None else "—"),
                ("Columns", len(fv.columns)),
                ("Owner", fv.owner),
                ("Models", len(entry.models)),
            ]
        )
        st.caption(
            f"{fv.description or 'No description.'} · entity key "
            f"`{fv.entity_key or '—'}` · timestamp `{fv.timestamp_column or '—'}` · "
            f"by {fv.created_by} at {fv.created_at:%Y-%m-%d %H:%M} · sha256 "
            f"`{fv.content_sha256[:16]}…`"
        )
        left, right = st.columns(2)
        if fv.materialized_sha256 is None:
            if left.button("Materialise", key="fe_materialize"):
                try:
                    features.materialize_view(ws, fv, actor=user)
                except PondError as exc:
                    show_error(exc)
                else:
                    st.rerun()
        right.button("Edit (saves a new version)", key="fe_edit", on_click=_edit, args=(fv,))

        st.markdown("**Columns**")
        st.dataframe(fv.columns, hide_index=True, key="fe_cat_columns")
        st.markdown("**Lineage**")
        st.dataframe(
            [
                {
                    "source": f"{s['name']}:{s['version']}",
                    "kind": s["kind"],
                    "sha256": s["content_sha256"][:16],
                }
                for s in fv.sources
            ],
            hide_index=True,
            key="fe_cat_sources",
        )
        st.dataframe(
            [
                {
                    "step": i + 1,
                    "op": s["op"],
                    "settings": json.dumps({k: v for k, v in s.items() if k != "op"}),
                }
                for i, s in enumerate(fv.steps)
            ],
            hide_index=True,
            key="fe_cat_steps",
        )
        with st.expander("SQL", expanded=False):
            st.code(fv.sql, language="sql")
        st.markdown("**Models trained on it**")
        if entry.models:
            st.dataframe(
                [
                    {
                        "model": m["model"],
                        "version": m["version"],
                        "status": m["status"],
                        "feature view version": m["feature_view_version"],
                    }
                    for m in entry.models
                ],
                hide_index=True,
                key="fe_cat_models",
            )
        else:
            st.caption(f"None yet: train on `fv:{fv.ref}` on the Train page.")
        if entry.profile is not None:
            st.markdown("**Output profile**")
            st.dataframe(
                [
                    {
                        "column": c.name,
                        "type": c.duckdb_type,
                        "missing": f"{c.missing_share:.1%}",
                        "distinct": c.n_distinct,
                        **{
                            k: "" if v is None else str(v)
                            for k, v in (("min", c.min), ("max", c.max), ("mean", c.mean))
                        },
                    }
                    for c in entry.profile.columns
                ],
                hide_index=True,
                key="fe_cat_profile",
            )
