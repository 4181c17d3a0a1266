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

# Append new migrations at the end; never edit or reorder a released one.
MIGRATIONS: list[Migration] = [
    Migration(1, "foundation", FOUNDATION),
    Migration(2, "registry", REGISTRY),
    Migration(3, "evaluation", EVALUATION),
    Migration(4, "serving", SERVING),
    Migration(5, "drift", DRIFT),
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
