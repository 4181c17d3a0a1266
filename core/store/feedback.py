"""SQL for human-feedback labeling: projects, their labelers, items, claims,
submissions and the label rows they hold, reviewers' resolutions and exports.
Callers pass a connection from `store.read()` or `store.transaction()`; the
claim-and-assign step (`claimable_item` then `insert_claim`) must run inside
one `store.transaction()`, whose exclusive lock makes it atomic across
processes and threads."""

from __future__ import annotations

import json
from typing import Any

import duckdb

from core.store import _rows

ENTITY_PROJECT = "feedback_project"

_JSON = ("questions", "candidates", "shown_order", "answer", "excluded", "model_versions")


def _dicts(cursor: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    return _rows.dicts(cursor, _JSON)


# --- projects and labelers ---------------------------------------------------------------


def get_project(con: duckdb.DuckDBPyConnection, name: str) -> dict[str, Any] | None:
    rows = _dicts(con.execute("SELECT * FROM feedback_projects WHERE name = ?", [name]))
    return rows[0] if rows else None


def list_projects(con: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    return _dicts(con.execute("SELECT * FROM feedback_projects ORDER BY name"))


def insert_project(con: duckdb.DuckDBPyConnection, row: dict[str, Any]) -> None:
    con.execute(
        "INSERT INTO feedback_projects (name, description, guidelines, questions,"
        " labels_per_item, claim_seconds, created_by) VALUES (?, ?, ?, ?, ?, ?, ?)",
        [
            row["name"],
            row["description"],
            row["guidelines"],
            json.dumps(row["questions"]),
            row["labels_per_item"],
            row["claim_seconds"],
            row["created_by"],
        ],
    )


def labelers(
    con: duckdb.DuckDBPyConnection, project: str, *, active_only: bool = False
) -> list[dict[str, Any]]:
    where = " AND removed_at IS NULL" if active_only else ""
    return _dicts(
        con.execute(
            "SELECT labeler, added_by, added_at, removed_by, removed_at FROM feedback_labelers"
            f" WHERE project = ?{where} ORDER BY labeler",
            [project],
        )
    )


def projects_of(con: duckdb.DuckDBPyConnection, labeler: str) -> list[str]:
    """Projects where `labeler` is an active labeler."""
    return [
        r[0]
        for r in con.execute(
            "SELECT project FROM feedback_labelers WHERE labeler = ? AND removed_at IS NULL"
            " ORDER BY project",
            [labeler],
        ).fetchall()
    ]


def is_active_labeler(con: duckdb.DuckDBPyConnection, project: str, labeler: str) -> bool:
    return bool(
        con.execute(
            "SELECT count(*) FROM feedback_labelers WHERE project = ? AND labeler = ?"
            " AND removed_at IS NULL",
            [project, labeler],
        ).fetchall()[0][0]
    )


def was_labeler(con: duckdb.DuckDBPyConnection, project: str, labeler: str) -> bool:
    return bool(
        con.execute(
            "SELECT count(*) FROM feedback_labelers WHERE project = ? AND labeler = ?",
            [project, labeler],
        ).fetchall()[0][0]
    )


def add_labeler(con: duckdb.DuckDBPyConnection, project: str, labeler: str, added_by: str) -> None:
    if was_labeler(con, project, labeler):
        con.execute(
            "UPDATE feedback_labelers SET removed_by = NULL, removed_at = NULL, added_by = ?,"
            " added_at = current_timestamp WHERE project = ? AND labeler = ?",
            [added_by, project, labeler],
        )
    else:
        con.execute(
            "INSERT INTO feedback_labelers (project, labeler, added_by) VALUES (?, ?, ?)",
            [project, labeler, added_by],
        )


def remove_labeler(
    con: duckdb.DuckDBPyConnection, project: str, labeler: str, removed_by: str
) -> int:
    """Mark the labeler removed and release their open claims. Returns claims released."""
    con.execute(
        "UPDATE feedback_labelers SET removed_by = ?, removed_at = current_timestamp"
        " WHERE project = ? AND labeler = ? AND removed_at IS NULL",
        [removed_by, project, labeler],
    )
    released = con.execute(
        "UPDATE feedback_claims SET released_at = current_timestamp WHERE project = ?"
        " AND labeler = ? AND released_at IS NULL RETURNING id",
        [project, labeler],
    ).fetchall()
    return len(released)


# --- items ---------------------------------------------------------------------------------


def item_hashes(con: duckdb.DuckDBPyConnection, project: str) -> set[str]:
    return {
        r[0]
        for r in con.execute(
            "SELECT content_sha256 FROM feedback_items WHERE project = ?", [project]
        ).fetchall()
    }


def next_item_id(con: duckdb.DuckDBPyConnection, project: str) -> int:
    return con.execute(
        "SELECT coalesce(max(item_id), 0) + 1 FROM feedback_items WHERE project = ?", [project]
    ).fetchall()[0][0]


def insert_items(
    con: duckdb.DuckDBPyConnection, project: str, rows: list[dict[str, Any]], created_by: str
) -> None:
    con.executemany(
        "INSERT INTO feedback_items (project, item_id, prompt, candidates, content_sha256,"
        " source, created_by) VALUES (?, ?, ?, ?, ?, ?, ?)",
        [
            [
                project,
                r["item_id"],
                r["prompt"],
                json.dumps(r["candidates"]),
                r["content_sha256"],
                r["source"],
                created_by,
            ]
            for r in rows
        ],
    )


def get_item(con: duckdb.DuckDBPyConnection, project: str, item_id: int) -> dict[str, Any] | None:
    rows = _dicts(
        con.execute(
            "SELECT project, item_id, prompt, candidates, source, created_by, created_at"
            " FROM feedback_items WHERE project = ? AND item_id = ?",
            [project, item_id],
        )
    )
    return rows[0] if rows else None


def items(con: duckdb.DuckDBPyConnection, project: str) -> list[dict[str, Any]]:
    return _dicts(
        con.execute(
            "SELECT project, item_id, prompt, candidates, source, created_by, created_at"
            " FROM feedback_items WHERE project = ? ORDER BY item_id",
            [project],
        )
    )


def count_items(con: duckdb.DuckDBPyConnection, project: str) -> int:
    return con.execute(
        "SELECT count(*) FROM feedback_items WHERE project = ?", [project]
    ).fetchall()[0][0]


# --- claims and assignment -----------------------------------------------------------------


def open_claim(con: duckdb.DuckDBPyConnection, project: str, labeler: str) -> dict[str, Any] | None:
    """The labeler's unexpired, unreleased claim in the project, if any."""
    rows = _dicts(
        con.execute(
            "SELECT id, project, item_id, labeler, claimed_at, expires_at, shown_order"
            " FROM feedback_claims WHERE project = ? AND labeler = ? AND released_at IS NULL"
            " AND expires_at > current_timestamp ORDER BY id DESC LIMIT 1",
            [project, labeler],
        )
    )
    return rows[0] if rows else None


def claim_for(
    con: duckdb.DuckDBPyConnection, project: str, item_id: int, labeler: str
) -> dict[str, Any] | None:
    """The labeler's latest unreleased claim on one item, expired or not."""
    rows = _dicts(
        con.execute(
            "SELECT id, project, item_id, labeler, claimed_at, expires_at, shown_order,"
            " expires_at <= current_timestamp AS expired FROM feedback_claims WHERE project = ?"
            " AND item_id = ? AND labeler = ? AND released_at IS NULL ORDER BY id DESC LIMIT 1",
            [project, item_id, labeler],
        )
    )
    return rows[0] if rows else None


def claimable_item(
    con: duckdb.DuckDBPyConnection, project: str, labeler: str, needed: int
) -> int | None:
    """The first item that still needs labels, counting other labelers' open claims as
    labels to come, and that this labeler has neither answered nor skipped."""
    rows = con.execute(
        """
        WITH answered AS (
            SELECT item_id, count(*) AS n FROM feedback_submissions
            WHERE project = $project AND kind = 'answer' AND retracted_at IS NULL
            GROUP BY item_id
        ),
        claimed AS (
            SELECT item_id, count(*) AS n FROM feedback_claims
            WHERE project = $project AND released_at IS NULL
              AND expires_at > current_timestamp AND labeler <> $labeler
            GROUP BY item_id
        ),
        mine AS (
            SELECT DISTINCT item_id FROM feedback_submissions
            WHERE project = $project AND labeler = $labeler AND retracted_at IS NULL
        )
        SELECT i.item_id FROM feedback_items i
        LEFT JOIN answered a ON a.item_id = i.item_id
        LEFT JOIN claimed c ON c.item_id = i.item_id
        WHERE i.project = $project
          AND i.item_id NOT IN (SELECT item_id FROM mine)
          AND coalesce(a.n, 0) + coalesce(c.n, 0) < $needed
        ORDER BY i.item_id LIMIT 1
        """,
        {"project": project, "labeler": labeler, "needed": needed},
    ).fetchall()
    return rows[0][0] if rows else None


def insert_claim(
    con: duckdb.DuckDBPyConnection,
    project: str,
    item_id: int,
    labeler: str,
    seconds: int,
    shown_order: list[int],
) -> None:
    con.execute(
        "INSERT INTO feedback_claims (project, item_id, labeler, expires_at, shown_order)"
        " VALUES (?, ?, ?, current_timestamp + to_seconds(?), ?)",
        [project, item_id, labeler, seconds, json.dumps(shown_order)],
    )


def release_claim(con: duckdb.DuckDBPyConnection, claim_id: int) -> None:
    con.execute(
        "UPDATE feedback_claims SET released_at = current_timestamp WHERE id = ?", [claim_id]
    )


def seconds_since(con: duckdb.DuckDBPyConnection, when: Any) -> float:
    return float(
        con.execute("SELECT epoch(current_timestamp - ?::TIMESTAMPTZ)", [when]).fetchall()[0][0]
    )


def answer_count(con: duckdb.DuckDBPyConnection, project: str, item_id: int) -> int:
    return con.execute(
        "SELECT count(*) FROM feedback_submissions WHERE project = ? AND item_id = ?"
        " AND kind = 'answer' AND retracted_at IS NULL",
        [project, item_id],
    ).fetchall()[0][0]


def claims_by_others(
    con: duckdb.DuckDBPyConnection, project: str, item_id: int, labeler: str
) -> int:
    """Unexpired, unreleased claims on an item by labelers other than `labeler`."""
    return con.execute(
        "SELECT count(*) FROM feedback_claims WHERE project = ? AND item_id = ?"
        " AND labeler <> ? AND released_at IS NULL AND expires_at > current_timestamp",
        [project, item_id, labeler],
    ).fetchall()[0][0]


def has_submission(
    con: duckdb.DuckDBPyConnection, project: str, item_id: int, labeler: str
) -> bool:
    return bool(
        con.execute(
            "SELECT count(*) FROM feedback_submissions WHERE project = ? AND item_id = ?"
            " AND labeler = ? AND retracted_at IS NULL",
            [project, item_id, labeler],
        ).fetchall()[0][0]
    )


# --- submissions and labels ----------------------------------------------------------------


def insert_submission(
    con: duckdb.DuckDBPyConnection,
    *,
    project: str,
    item_id: int,
    labeler: str,
    kind: str,
    shown_order: list[int],
    seconds: float,
    answers: dict[str, Any],
) -> int:
    """One submission and its label rows (one per answered question). Returns its id."""
    submission_id = con.execute(
        "INSERT INTO feedback_submissions (project, item_id, labeler, kind, shown_order,"
        " seconds) VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
        [project, item_id, labeler, kind, json.dumps(shown_order), seconds],
    ).fetchall()[0][0]
    if answers:
        con.executemany(
            "INSERT INTO feedback_labels (submission_id, project, item_id, labeler, question,"
            " answer, seconds) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                [submission_id, project, item_id, labeler, q, json.dumps(a), seconds]
                for q, a in answers.items()
            ],
        )
    return submission_id


def last_submission(
    con: duckdb.DuckDBPyConnection, project: str, labeler: str
) -> dict[str, Any] | None:
    rows = _dicts(
        con.execute(
            "SELECT id, project, item_id, labeler, kind, shown_order, seconds, created_at"
            " FROM feedback_submissions WHERE project = ? AND labeler = ? AND retracted_at IS NULL"
            " ORDER BY id DESC LIMIT 1",
            [project, labeler],
        )
    )
    return rows[0] if rows else None


def retract_submission(con: duckdb.DuckDBPyConnection, submission_id: int) -> None:
    con.execute(
        "UPDATE feedback_submissions SET retracted_at = current_timestamp WHERE id = ?",
        [submission_id],
    )
    con.execute(
        "UPDATE feedback_labels SET retracted_at = current_timestamp WHERE submission_id = ?",
        [submission_id],
    )


def labels(con: duckdb.DuckDBPyConnection, project: str) -> list[dict[str, Any]]:
    """Every label row still standing (not undone), oldest first."""
    return _dicts(
        con.execute(
            "SELECT id, submission_id, project, item_id, labeler, question, answer, seconds,"
            " created_at FROM feedback_labels WHERE project = ? AND retracted_at IS NULL"
            " ORDER BY id",
            [project],
        )
    )


def submissions(con: duckdb.DuckDBPyConnection, project: str) -> list[dict[str, Any]]:
    return _dicts(
        con.execute(
            "SELECT id, item_id, labeler, kind, seconds, created_at FROM feedback_submissions"
            " WHERE project = ? AND retracted_at IS NULL ORDER BY id",
            [project],
        )
    )


def pairwise_labels(
    con: duckdb.DuckDBPyConnection, questions: dict[str, list[str]]
) -> list[dict[str, Any]]:
    """Label rows of pairwise questions across projects (`questions`: project → names),
    each with its item's candidates."""
    if not questions:
        return []
    clauses, params = [], []
    for project, names in questions.items():
        for name in names:
            clauses.append("(l.project = ? AND l.question = ?)")
            params.extend([project, name])
    return _dicts(
        con.execute(
            "SELECT l.project, l.item_id, l.labeler, l.question, l.answer, i.candidates"
            " FROM feedback_labels l JOIN feedback_items i"
            " ON i.project = l.project AND i.item_id = l.item_id"
            f" WHERE l.retracted_at IS NULL AND ({' OR '.join(clauses)}) ORDER BY l.id",
            params,
        )
    )


# --- resolutions and exports ---------------------------------------------------------------


def insert_resolution(
    con: duckdb.DuckDBPyConnection,
    project: str,
    item_id: int,
    question: str,
    answer: Any,
    comment: str | None,
    resolved_by: str,
) -> None:
    con.execute(
        "INSERT INTO feedback_resolutions (project, item_id, question, answer, comment,"
        " resolved_by) VALUES (?, ?, ?, ?, ?, ?)",
        [project, item_id, question, json.dumps(answer), comment, resolved_by],
    )


def resolutions(con: duckdb.DuckDBPyConnection, project: str) -> list[dict[str, Any]]:
    """The latest resolution of each (item, question)."""
    return _dicts(
        con.execute(
            "SELECT project, item_id, question, answer, comment, resolved_by, resolved_at"
            " FROM feedback_resolutions WHERE project = ?"
            " QUALIFY row_number() OVER (PARTITION BY item_id, question ORDER BY id DESC) = 1"
            " ORDER BY item_id, question",
            [project],
        )
    )


def insert_export(con: duckdb.DuckDBPyConnection, row: dict[str, Any]) -> int:
    return con.execute(
        "INSERT INTO feedback_exports (project, format, path, sha256, records, excluded,"
        " model_versions, created_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
        [
            row["project"],
            row["format"],
            row["path"],
            row["sha256"],
            row["records"],
            json.dumps(row["excluded"]),
            json.dumps(row["model_versions"]),
            row["created_by"],
        ],
    ).fetchall()[0][0]


def exports(con: duckdb.DuckDBPyConnection, project: str) -> list[dict[str, Any]]:
    return _dicts(
        con.execute(
            "SELECT id, project, format, path, sha256, records, excluded, model_versions,"
            " created_by, created_at FROM feedback_exports WHERE project = ? ORDER BY id DESC",
            [project],
        )
    )
