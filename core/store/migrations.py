"""Numbered schema migrations of the workspace database.

Each migration is an ordered function applied in one transaction together
with its row in `_migrations`, so a workspace is always at a whole number. An
old workspace upgrades in place with `pond migrate`; every other entry point
refuses to run on an old schema and prints that command.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import duckdb

from core.errors import PondError, SchemaOutdated
from core.store.workspace import Workspace, raw_connect, retry_on_conflict


@dataclass(frozen=True)
class Migration:
    number: int
    name: str
    apply: Callable[[duckdb.DuckDBPyConnection], None]


def _sql(*statements: str) -> Callable[[duckdb.DuckDBPyConnection], None]:
    def apply(con: duckdb.DuckDBPyConnection) -> None:
        for statement in statements:
            con.execute(statement)

    return apply


FOUNDATION = _sql(
    "CREATE SEQUENCE audit_log_id START 1",
    """CREATE TABLE audit_log (
        id BIGINT PRIMARY KEY DEFAULT nextval('audit_log_id'),
        occurred_at TIMESTAMPTZ NOT NULL DEFAULT current_timestamp,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        entity_type TEXT NOT NULL,
        entity_id TEXT NOT NULL,
        from_state TEXT,
        to_state TEXT,
        comment TEXT,
        details JSON
    )""",
    """CREATE TABLE users (
        name TEXT PRIMARY KEY,
        role TEXT NOT NULL,
        password_hash TEXT NOT NULL,
        disabled BOOLEAN NOT NULL DEFAULT false,
        created_by TEXT NOT NULL,
        created_at TIMESTAMPTZ NOT NULL DEFAULT current_timestamp
    )""",
    """CREATE TABLE artifacts (
        sha256 TEXT PRIMARY KEY,
        size_bytes BIGINT NOT NULL,
        kind TEXT NOT NULL,
        created_by TEXT NOT NULL,
        created_at TIMESTAMPTZ NOT NULL DEFAULT current_timestamp
    )""",
    """CREATE TABLE datasets (
        name TEXT PRIMARY KEY,
        created_by TEXT NOT NULL,
        created_at TIMESTAMPTZ NOT NULL DEFAULT current_timestamp
    )""",
    """CREATE TABLE dataset_versions (
        dataset_name TEXT NOT NULL REFERENCES datasets(name),
        version INTEGER NOT NULL,
        content_sha256 TEXT NOT NULL,
        source_name TEXT NOT NULL,
        source_sha256 TEXT NOT NULL,
        source_format TEXT NOT NULL,
        row_count BIGINT NOT NULL,
        columns JSON NOT NULL,
        size_bytes BIGINT NOT NULL,
        created_by TEXT NOT NULL,
        created_at TIMESTAMPTZ NOT NULL DEFAULT current_timestamp,
        PRIMARY KEY (dataset_name, version)
    )""",
    """CREATE TABLE profiles (
        content_sha256 TEXT PRIMARY KEY,
        profile JSON NOT NULL,
        seconds DOUBLE NOT NULL,
        created_at TIMESTAMPTZ NOT NULL DEFAULT current_timestamp
    )""",
    """CREATE TABLE reports (
        dataset_name TEXT NOT NULL,
        version INTEGER NOT NULL,
        kind TEXT NOT NULL,
        artifact_sha256 TEXT NOT NULL,
        rows_used BIGINT NOT NULL,
        total_rows BIGINT NOT NULL,
        created_by TEXT NOT NULL,
        created_at TIMESTAMPTZ NOT NULL DEFAULT current_timestamp,
        PRIMARY KEY (dataset_name, version, kind)
    )""",
)

REGISTRY = _sql(
    # A registered model is a name and an owner; everything else lives on its versions.
    """CREATE TABLE models (
        name TEXT PRIMARY KEY,
        created_by TEXT NOT NULL,
        created_at TIMESTAMPTZ NOT NULL DEFAULT current_timestamp
    )""",
    "CREATE INDEX models_created_by ON models(created_by)",
    # Lineage is kept whole as JSON for show/compare; the dataset it names is
    # also kept in columns so "which versions came from dataset X" is plain SQL.
    """CREATE TABLE model_versions (
        model_name TEXT NOT NULL,
        version INTEGER NOT NULL,
        status TEXT NOT NULL,
        task TEXT,
        flavor TEXT NOT NULL,
        description TEXT,
        metrics JSON NOT NULL,
        params JSON NOT NULL,
        lineage JSON NOT NULL,
        dataset_name TEXT,
        dataset_version INTEGER,
        parent_version INTEGER,
        created_by TEXT NOT NULL,
        created_at TIMESTAMPTZ NOT NULL DEFAULT current_timestamp,
        status_changed_by TEXT NOT NULL,
        status_changed_at TIMESTAMPTZ NOT NULL DEFAULT current_timestamp,
        PRIMARY KEY (model_name, version)
    )""",
    "CREATE INDEX model_versions_status ON model_versions(status)",
    "CREATE INDEX model_versions_created_by ON model_versions(created_by)",
    "CREATE INDEX model_versions_dataset ON model_versions(dataset_name, dataset_version)",
    """CREATE TABLE model_version_files (
        model_name TEXT NOT NULL,
        version INTEGER NOT NULL,
        name TEXT NOT NULL,
        sha256 TEXT NOT NULL,
        size_bytes BIGINT NOT NULL,
        PRIMARY KEY (model_name, version, name)
    )""",
    "CREATE INDEX model_version_files_sha256 ON model_version_files(sha256)",
    """CREATE TABLE model_version_tags (
        model_name TEXT NOT NULL,
        version INTEGER NOT NULL,
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        PRIMARY KEY (model_name, version, key)
    )""",
    "CREATE INDEX model_version_tags_key_value ON model_version_tags(key, value)",
    """CREATE TABLE model_aliases (
        model_name TEXT NOT NULL,
        alias TEXT NOT NULL,
        version INTEGER NOT NULL,
        set_by TEXT NOT NULL,
        set_at TIMESTAMPTZ NOT NULL DEFAULT current_timestamp,
        PRIMARY KEY (model_name, alias)
    )""",
    # One row per request for review, with its decision; a version's review
    # history is its rows here, and an open request is one without a decision.
    "CREATE SEQUENCE approval_requests_id START 1",
    """CREATE TABLE approval_requests (
        id BIGINT PRIMARY KEY DEFAULT nextval('approval_requests_id'),
        model_name TEXT NOT NULL,
        version INTEGER NOT NULL,
        requested_by TEXT NOT NULL,
        requested_at TIMESTAMPTZ NOT NULL DEFAULT current_timestamp,
        comment TEXT NOT NULL,
        decision TEXT,
        decided_by TEXT,
        decided_at TIMESTAMPTZ,
        decision_comment TEXT
    )""",
    "CREATE INDEX approval_requests_version ON approval_requests(model_name, version)",
    "CREATE SEQUENCE webhooks_id START 1",
    """CREATE TABLE webhooks (
        id BIGINT PRIMARY KEY DEFAULT nextval('webhooks_id'),
        url TEXT NOT NULL,
        events JSON NOT NULL,
        secret TEXT NOT NULL,
        created_by TEXT NOT NULL,
        created_at TIMESTAMPTZ NOT NULL DEFAULT current_timestamp,
        removed_by TEXT,
        removed_at TIMESTAMPTZ
    )""",
    # Deliveries are written as `pending` in the same transaction as the
    # registry change (an outbox), then settled after the POST.
    "CREATE SEQUENCE webhook_deliveries_id START 1",
    """CREATE TABLE webhook_deliveries (
        id BIGINT PRIMARY KEY DEFAULT nextval('webhook_deliveries_id'),
        webhook_id BIGINT NOT NULL,
        event TEXT NOT NULL,
        payload JSON NOT NULL,
        outcome TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        response_status INTEGER,
        error TEXT,
        created_at TIMESTAMPTZ NOT NULL DEFAULT current_timestamp,
        finished_at TIMESTAMPTZ
    )""",
    "CREATE INDEX webhook_deliveries_webhook ON webhook_deliveries(webhook_id)",
)

SERVING = _sql(
    # API tokens for the REST server. Only the sha256 of a token is kept (a token
    # is 32 random bytes, so a plain hash is enough; no salt or slow hash is needed)
    # and its last four characters, so people can tell tokens apart in a list.
    "CREATE SEQUENCE api_tokens_id START 1",
    """CREATE TABLE api_tokens (
        id BIGINT PRIMARY KEY DEFAULT nextval('api_tokens_id'),
        name TEXT NOT NULL,
        token_sha256 TEXT NOT NULL UNIQUE,
        last4 TEXT NOT NULL,
        created_by TEXT NOT NULL,
        created_at TIMESTAMPTZ NOT NULL DEFAULT current_timestamp,
        revoked_by TEXT,
        revoked_at TIMESTAMPTZ
    )""",
)

EVALUATION = _sql(
    # One row per evaluation of a model version (or of plain text columns, where
    # model_name is null) on one dataset version. The dataset's content hash is
    # kept so a reviewer knows exactly which rows were scored. Curves, confusion
    # matrices, segments and per-example scores can be large, so they live in a
    # content-addressed artifact named by details_sha256.
    "CREATE SEQUENCE evaluations_id START 1",
    """CREATE TABLE evaluations (
        id BIGINT PRIMARY KEY DEFAULT nextval('evaluations_id'),
        model_name TEXT,
        version INTEGER,
        dataset_name TEXT NOT NULL,
        dataset_version INTEGER NOT NULL,
        dataset_sha256 TEXT NOT NULL,
        kind TEXT NOT NULL,
        task TEXT NOT NULL,
        row_count BIGINT NOT NULL,
        columns JSON NOT NULL,
        metrics JSON NOT NULL,
        main_metric TEXT,
        details_sha256 TEXT,
        implementation JSON NOT NULL,
        warnings JSON NOT NULL,
        created_by TEXT NOT NULL,
        created_at TIMESTAMPTZ NOT NULL DEFAULT current_timestamp
    )""",
    "CREATE INDEX evaluations_version ON evaluations(model_name, version)",
    "CREATE INDEX evaluations_dataset ON evaluations(dataset_name, dataset_version)",
)

DRIFT = _sql(
    # Reference statistics, computed once per dataset content hash (scope "columns") or per
    # model version on that data (scope "predictions:<model>:<version>"). The sorted values of
    # numeric columns are artifacts named in `stats`; they are also rows of `artifacts`.
    """CREATE TABLE drift_reference_stats (
        content_sha256 TEXT NOT NULL,
        scope TEXT NOT NULL,
        dataset_name TEXT NOT NULL,
        dataset_version INTEGER NOT NULL,
        row_count BIGINT NOT NULL,
        stats JSON NOT NULL,
        seconds DOUBLE NOT NULL,
        created_by TEXT NOT NULL,
        created_at TIMESTAMPTZ NOT NULL DEFAULT current_timestamp,
        PRIMARY KEY (content_sha256, scope)
    )""",
    # One row per drift report: what was compared with what, by whom, and every column's
    # result (test, score, threshold, verdict, distributions) as JSON.
    "CREATE SEQUENCE drift_reports_id START 1",
    """CREATE TABLE drift_reports (
        id BIGINT PRIMARY KEY DEFAULT nextval('drift_reports_id'),
        model_name TEXT,
        model_version INTEGER,
        reference_name TEXT NOT NULL,
        reference_version INTEGER NOT NULL,
        reference_sha256 TEXT NOT NULL,
        current_kind TEXT NOT NULL,
        current_name TEXT,
        current_version INTEGER,
        current_sha256 TEXT,
        window_spec TEXT,
        window_start TIMESTAMPTZ,
        window_end TIMESTAMPTZ,
        reference_rows BIGINT NOT NULL,
        current_rows BIGINT NOT NULL,
        columns_tested INTEGER NOT NULL,
        columns_drifted INTEGER NOT NULL,
        drifted_share DOUBLE,
        drift_share_threshold DOUBLE NOT NULL,
        dataset_drift BOOLEAN NOT NULL,
        results JSON NOT NULL,
        seconds DOUBLE NOT NULL,
        created_by TEXT NOT NULL,
        created_at TIMESTAMPTZ NOT NULL DEFAULT current_timestamp
    )""",
    "CREATE INDEX drift_reports_model ON drift_reports(model_name)",
    # One alert policy per model; a later `set_policy` replaces it.
    """CREATE TABLE drift_alert_policies (
        model_name TEXT PRIMARY KEY,
        max_drift_share DOUBLE,
        watched_columns JSON NOT NULL,
        metric TEXT,
        metric_limit DOUBLE,
        webhook_url TEXT,
        webhook_secret TEXT,
        enabled BOOLEAN NOT NULL,
        updated_by TEXT NOT NULL,
        updated_at TIMESTAMPTZ NOT NULL DEFAULT current_timestamp
    )""",
    "CREATE SEQUENCE drift_alerts_id START 1",
    """CREATE TABLE drift_alerts (
        id BIGINT PRIMARY KEY DEFAULT nextval('drift_alerts_id'),
        model_name TEXT NOT NULL,
        model_version INTEGER,
        condition TEXT NOT NULL,
        message TEXT NOT NULL,
        details JSON NOT NULL,
        report_id BIGINT,
        fired_by TEXT NOT NULL,
        fired_at TIMESTAMPTZ NOT NULL DEFAULT current_timestamp,
        acknowledged_by TEXT,
        acknowledged_at TIMESTAMPTZ,
        acknowledge_comment TEXT
    )""",
    "CREATE INDEX drift_alerts_model ON drift_alerts(model_name)",
    # Webhook POSTs of alerts: written `pending` with the alert (an outbox), settled after.
    "CREATE SEQUENCE drift_alert_deliveries_id START 1",
    """CREATE TABLE drift_alert_deliveries (
        id BIGINT PRIMARY KEY DEFAULT nextval('drift_alert_deliveries_id'),
        alert_id BIGINT NOT NULL,
        url TEXT NOT NULL,
        payload JSON NOT NULL,
        outcome TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        response_status INTEGER,
        error TEXT,
        created_at TIMESTAMPTZ NOT NULL DEFAULT current_timestamp,
        finished_at TIMESTAMPTZ
    )""",
    "CREATE INDEX drift_alert_deliveries_alert ON drift_alert_deliveries(alert_id)",
)

FEEDBACK = _sql(
    # A labeling project: its questions (JSON list), how many labels each item needs and
    # how long a labeler's claim on an item lasts before another labeler may take it.
    """CREATE TABLE feedback_projects (
        name TEXT PRIMARY KEY,
        description TEXT NOT NULL,
        guidelines TEXT NOT NULL,
        questions JSON NOT NULL,
        labels_per_item INTEGER NOT NULL,
        claim_seconds INTEGER NOT NULL,
        created_by TEXT NOT NULL,
        created_at TIMESTAMPTZ NOT NULL DEFAULT current_timestamp
    )""",
    # Who may label a project; a removed labeler keeps the row (and their labels).
    """CREATE TABLE feedback_labelers (
        project TEXT NOT NULL,
        labeler TEXT NOT NULL,
        added_by TEXT NOT NULL,
        added_at TIMESTAMPTZ NOT NULL DEFAULT current_timestamp,
        removed_by TEXT,
        removed_at TIMESTAMPTZ,
        PRIMARY KEY (project, labeler)
    )""",
    # A prompt and its candidate responses ([{text, model}], model a version ref or null).
    """CREATE TABLE feedback_items (
        project TEXT NOT NULL,
        item_id INTEGER NOT NULL,
        prompt TEXT NOT NULL,
        candidates JSON NOT NULL,
        content_sha256 TEXT NOT NULL,
        source TEXT NOT NULL,
        created_by TEXT NOT NULL,
        created_at TIMESTAMPTZ NOT NULL DEFAULT current_timestamp,
        PRIMARY KEY (project, item_id),
        UNIQUE (project, content_sha256)
    )""",
    # Claims are written under the workspace's exclusive lock; an item is offered only
    # while its answers plus unexpired claims stay below the number it needs. Rows are
    # released (never deleted), so no key is deleted and re-inserted in one transaction.
    "CREATE SEQUENCE feedback_claims_id START 1",
    """CREATE TABLE feedback_claims (
        id BIGINT PRIMARY KEY DEFAULT nextval('feedback_claims_id'),
        project TEXT NOT NULL,
        item_id INTEGER NOT NULL,
        labeler TEXT NOT NULL,
        claimed_at TIMESTAMPTZ NOT NULL DEFAULT current_timestamp,
        expires_at TIMESTAMPTZ NOT NULL,
        shown_order JSON NOT NULL,
        released_at TIMESTAMPTZ
    )""",
    "CREATE INDEX feedback_claims_item ON feedback_claims(project, item_id)",
    # One submission per labeler and item (an answer or a skip); undo retracts it.
    "CREATE SEQUENCE feedback_submissions_id START 1",
    """CREATE TABLE feedback_submissions (
        id BIGINT PRIMARY KEY DEFAULT nextval('feedback_submissions_id'),
        project TEXT NOT NULL,
        item_id INTEGER NOT NULL,
        labeler TEXT NOT NULL,
        kind TEXT NOT NULL,
        shown_order JSON NOT NULL,
        seconds DOUBLE NOT NULL,
        created_at TIMESTAMPTZ NOT NULL DEFAULT current_timestamp,
        retracted_at TIMESTAMPTZ
    )""",
    "CREATE INDEX feedback_submissions_item ON feedback_submissions(project, item_id)",
    # The labels themselves: labeler, item, question, answer, time spent, time.
    "CREATE SEQUENCE feedback_labels_id START 1",
    """CREATE TABLE feedback_labels (
        id BIGINT PRIMARY KEY DEFAULT nextval('feedback_labels_id'),
        submission_id BIGINT NOT NULL,
        project TEXT NOT NULL,
        item_id INTEGER NOT NULL,
        labeler TEXT NOT NULL,
        question TEXT NOT NULL,
        answer JSON NOT NULL,
        seconds DOUBLE NOT NULL,
        created_at TIMESTAMPTZ NOT NULL DEFAULT current_timestamp,
        retracted_at TIMESTAMPTZ
    )""",
    "CREATE INDEX feedback_labels_project ON feedback_labels(project, item_id)",
    # A reviewer's final answer for a disputed item; the latest one counts.
    "CREATE SEQUENCE feedback_resolutions_id START 1",
    """CREATE TABLE feedback_resolutions (
        id BIGINT PRIMARY KEY DEFAULT nextval('feedback_resolutions_id'),
        project TEXT NOT NULL,
        item_id INTEGER NOT NULL,
        question TEXT NOT NULL,
        answer JSON NOT NULL,
        comment TEXT,
        resolved_by TEXT NOT NULL,
        resolved_at TIMESTAMPTZ NOT NULL DEFAULT current_timestamp
    )""",
    "CREATE SEQUENCE feedback_exports_id START 1",
    """CREATE TABLE feedback_exports (
        id BIGINT PRIMARY KEY DEFAULT nextval('feedback_exports_id'),
        project TEXT NOT NULL,
        format TEXT NOT NULL,
        path TEXT NOT NULL,
        sha256 TEXT NOT NULL,
        records BIGINT NOT NULL,
        excluded JSON NOT NULL,
        model_versions JSON NOT NULL,
        created_by TEXT NOT NULL,
        created_at TIMESTAMPTZ NOT NULL DEFAULT current_timestamp
    )""",
)

FEATURES = _sql(
    # A feature view is a name and an owner; each version is immutable and holds its
    # validated steps, the SQL they compile to and the pinned dataset versions it reads.
    """CREATE TABLE feature_views (
        name TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        created_by TEXT NOT NULL,
        created_at TIMESTAMPTZ NOT NULL DEFAULT current_timestamp
    )""",
    """CREATE TABLE feature_view_versions (
        name TEXT NOT NULL,
        version INTEGER NOT NULL,
        content_sha256 TEXT NOT NULL,
        description TEXT,
        entity_key TEXT,
        timestamp_column TEXT,
        tags JSON NOT NULL,
        definition JSON NOT NULL,
        created_by TEXT NOT NULL,
        created_at TIMESTAMPTZ NOT NULL DEFAULT current_timestamp,
        PRIMARY KEY (name, version)
    )""",
    # The training table (Parquet artifact) and, per entity aggregate step, the latest
    # values by entity key that serving looks up. Same definition, same bytes.
    """CREATE TABLE feature_view_materializations (
        name TEXT NOT NULL,
        version INTEGER NOT NULL,
        artifact_sha256 TEXT NOT NULL,
        latest JSON NOT NULL,
        row_count BIGINT NOT NULL,
        created_by TEXT NOT NULL,
        created_at TIMESTAMPTZ NOT NULL DEFAULT current_timestamp,
        PRIMARY KEY (name, version)
    )""",
)

RETRAINING = _sql(
    # Per model: whether a retrained challenger that beats the champion by at least a margin
    # on the same holdout is approved by the "policy" actor and takes the champion alias.
    """CREATE TABLE promotion_policies (
        model_name TEXT PRIMARY KEY,
        enabled BOOLEAN NOT NULL,
        metric TEXT,
        min_improvement DOUBLE NOT NULL,
        updated_by TEXT NOT NULL,
        updated_at TIMESTAMPTZ NOT NULL DEFAULT current_timestamp
    )""",
    # A schedule runs one `pond` command (argv after `pond`) as `run_as` on a cron expression.
    # `next_run_at` is the slot the scheduler starts it at; it moves on when the job starts.
    """CREATE TABLE schedules (
        name TEXT PRIMARY KEY,
        cron TEXT NOT NULL,
        command JSON NOT NULL,
        run_as TEXT NOT NULL,
        enabled BOOLEAN NOT NULL DEFAULT true,
        next_run_at TIMESTAMPTZ NOT NULL,
        last_run_at TIMESTAMPTZ,
        created_by TEXT NOT NULL,
        created_at TIMESTAMPTZ NOT NULL DEFAULT current_timestamp
    )""",
    # One row per job run (a retrain, or any scheduled command): written `running` when it
    # starts, settled with its outcome, exit code, summary and log when it ends. A run whose
    # process died is settled as `crashed` by the next run of the same model or by its scheduler.
    "CREATE SEQUENCE job_runs_id START 1",
    """CREATE TABLE job_runs (
        id BIGINT PRIMARY KEY DEFAULT nextval('job_runs_id'),
        kind TEXT NOT NULL,
        model_name TEXT,
        schedule_name TEXT,
        command JSON NOT NULL,
        started_by TEXT NOT NULL,
        host TEXT NOT NULL,
        pid INTEGER,
        status TEXT NOT NULL,
        outcome TEXT,
        exit_code INTEGER,
        summary TEXT,
        details JSON,
        model_version INTEGER,
        log TEXT,
        started_at TIMESTAMPTZ NOT NULL DEFAULT current_timestamp,
        finished_at TIMESTAMPTZ
    )""",
    "CREATE INDEX job_runs_model ON job_runs(model_name)",
    "CREATE INDEX job_runs_schedule ON job_runs(schedule_name)",
)

# Append new migrations at the end; never edit or reorder a released one.
MIGRATIONS: list[Migration] = [
    Migration(1, "foundation", FOUNDATION),
    Migration(2, "registry", REGISTRY),
    Migration(3, "evaluation", EVALUATION),
    Migration(4, "serving", SERVING),
    Migration(5, "drift", DRIFT),
    Migration(6, "retraining", RETRAINING),
    Migration(7, "features", FEATURES),
    Migration(8, "feedback", FEEDBACK),
]


def latest_version() -> int:
    return MIGRATIONS[-1].number


def _ensure_table(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(
        "CREATE TABLE IF NOT EXISTS _migrations ("
        " number INTEGER PRIMARY KEY, name TEXT NOT NULL,"
        " applied_at TIMESTAMPTZ NOT NULL DEFAULT current_timestamp)"
    )


def current_version(con: duckdb.DuckDBPyConnection) -> int:
    """The highest migration number applied (0 for an empty database)."""
    has_table = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = '_migrations'"
    ).fetchall()[0][0]
    if not has_table:
        return 0
    return con.execute("SELECT coalesce(max(number), 0) FROM _migrations").fetchall()[0][0]


def applied_numbers(con: duckdb.DuckDBPyConnection) -> set[int]:
    """The numbers of every migration this database has recorded."""
    if current_version(con) == 0:
        return set()
    return {r[0] for r in con.execute("SELECT number FROM _migrations").fetchall()}


def migrate(ws: Workspace, target: int | None = None) -> list[int]:
    """Apply pending migrations in order, each in its own transaction.

    Returns:
        The numbers of the migrations applied (empty when up to date).

    Raises:
        PondError: when the workspace was made by a newer Pond.
    """
    target = latest_version() if target is None else target
    applied: list[int] = []
    with raw_connect(ws, write=True) as con:
        _ensure_table(con)
        have = current_version(con)
        done = applied_numbers(con)
        if have > latest_version():
            raise PondError(
                f"workspace {ws.home} has schema {have}, newer than this Pond knows "
                f"({latest_version()}); upgrade Pond"
            )
        for migration in MIGRATIONS:
            # Any number not yet recorded is applied, even below the highest one, so a
            # migration merged after a later-numbered one still reaches old workspaces.
            if migration.number in done or migration.number > target:
                continue

            def run(m: Migration = migration) -> None:
                con.execute("BEGIN TRANSACTION")
                try:
                    m.apply(con)
                    con.execute(
                        "INSERT INTO _migrations (number, name) VALUES (?, ?)", [m.number, m.name]
                    )
                    con.execute("COMMIT")
                except BaseException:
                    con.execute("ROLLBACK")
                    raise

            retry_on_conflict(run)
            applied.append(migration.number)
    return applied


def check_schema(ws: Workspace) -> None:
    """Raise `SchemaOutdated` with the exact upgrade command when migrations are pending."""
    with raw_connect(ws, write=False) as con:
        have = current_version(con)
        done = applied_numbers(con)
    if have < latest_version() or {m.number for m in MIGRATIONS} - done:
        raise SchemaOutdated(
            f"workspace {ws.home} is at schema {have}, this Pond needs {latest_version()}; "
            f"upgrade it in place with: pond migrate --home {ws.home}"
        )
    if have > latest_version():
        raise PondError(
            f"workspace {ws.home} has schema {have}, newer than this Pond knows "
            f"({latest_version()}); upgrade Pond"
        )
