"""The workspace store: migrations, artifacts, the audit log and the lock rule."""

from __future__ import annotations

import duckdb
import pytest

from core import store
from core.errors import NotFound, PondError, SchemaOutdated, TamperedArtifact
from core.store import artifacts, migrations
from core.store.workspace import Workspace


def test_new_workspace_is_created_and_migrated(tmp_path):
    ws = store.open_workspace(tmp_path / "fresh")
    assert ws.db_path.exists()
    for folder in (ws.artifacts_dir, ws.inference_dir, ws.studies_dir):
        assert folder.is_dir()
    with store.read(ws) as con:
        assert migrations.current_version(con) == migrations.latest_version()
        numbers = [r[0] for r in con.execute("SELECT number FROM _migrations ORDER BY 1").fetchall()]
    assert numbers == [m.number for m in migrations.MIGRATIONS]


def test_old_workspace_is_refused_with_the_upgrade_command_then_upgrades(tmp_path):
    ws = Workspace(tmp_path / "old")
    ws.make_dirs()
    migrations.migrate(ws, target=1)
    if migrations.latest_version() == 1:
        pytest.skip("only one migration exists so far")
    with pytest.raises(SchemaOutdated, match=r"pond migrate --home"):
        store.open_workspace(ws.home)
    applied = migrations.migrate(ws)
    assert applied == [m.number for m in migrations.MIGRATIONS if m.number > 1]
    store.open_workspace(ws.home)


def test_migrations_are_idempotent(tmp_path):
    ws = store.open_workspace(tmp_path / "w")
    assert migrations.migrate(ws) == []


def test_a_failing_migration_leaves_no_trace(tmp_path, monkeypatch):
    ws = store.open_workspace(tmp_path / "w")

    def broken(con):
        con.execute("CREATE TABLE half_made (x INTEGER)")
        raise RuntimeError("boom")

    monkeypatch.setattr(
        migrations, "MIGRATIONS", [*migrations.MIGRATIONS, migrations.Migration(999, "broken", broken)]
    )
    with pytest.raises(RuntimeError):
        migrations.migrate(ws)
    with store.read(ws) as con:
        assert migrations.current_version(con) == migrations.MIGRATIONS[-2].number
        tables = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    assert "half_made" not in tables


def test_newer_schema_is_refused(tmp_path):
    ws = store.open_workspace(tmp_path / "w")
    with store.transaction(ws) as con:
        con.execute("INSERT INTO _migrations (number, name) VALUES (10000, 'future')")
    store.open_workspace.__globals__["_checked"].discard(str(ws.home))
    with pytest.raises(PondError, match="newer than this Pond"):
        store.open_workspace(ws.home)


def test_transaction_rolls_back_on_error(tmp_path):
    ws = store.open_workspace(tmp_path / "w")
    with pytest.raises(ValueError):
        with store.transaction(ws) as con:
            store.append_audit(con, actor="t", action="x", entity_type="test", entity_id="1")
            raise ValueError("stop")
    with store.read(ws) as con:
        assert con.execute("SELECT count(*) FROM audit_log").fetchall()[0][0] == 0


def test_nested_connections_are_refused(tmp_path):
    ws = store.open_workspace(tmp_path / "w")
    with store.read(ws):
        with pytest.raises(PondError, match="inside another"):
            with store.read(ws):
                pass


def test_read_connection_cannot_write(tmp_path):
    ws = store.open_workspace(tmp_path / "w")
    with store.read(ws) as con:
        with pytest.raises(duckdb.Error):
            con.execute("INSERT INTO datasets (name, created_by) VALUES ('x', 'y')")


def test_artifacts_are_content_addressed_and_verified(tmp_path):
    ws = store.open_workspace(tmp_path / "w")
    a = artifacts.put_bytes(ws, b"hello")
    b = artifacts.put_bytes(ws, b"hello")
    assert a == b
    assert a.sha256 == "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    src = tmp_path / "file.bin"
    src.write_bytes(b"x" * 3_000_000)
    c = artifacts.put_file(ws, src)
    assert c.size_bytes == 3_000_000 and src.exists()
    assert artifacts.read_bytes(ws, a.sha256) == b"hello"
    # No temporary files are left behind.
    assert not [p for p in ws.artifacts_dir.iterdir() if p.name.startswith(".incoming-")]


def test_tampered_or_missing_artifact_is_refused(tmp_path):
    ws = store.open_workspace(tmp_path / "w")
    a = artifacts.put_bytes(ws, b"model weights")
    a.path.write_bytes(b"evil weights")
    with pytest.raises(TamperedArtifact, match=a.sha256[:12]):
        artifacts.verified_path(ws, a.sha256)
    with pytest.raises(NotFound):
        artifacts.verified_path(ws, "0" * 64)


def test_audit_rows_are_appended(tmp_path):
    ws = store.open_workspace(tmp_path / "w")
    with store.transaction(ws) as con:
        store.append_audit(
            con, actor="ana", action="dataset_created", entity_type="dataset", entity_id="d:1",
            details={"rows": 3},
        )
    with store.read(ws) as con:
        rows = con.execute("SELECT actor, action, details FROM audit_log").fetchall()
    assert rows[0][0] == "ana" and rows[0][1] == "dataset_created"


def test_a_migration_numbered_below_the_latest_applied_one_still_runs(tmp_path, monkeypatch):
    ws = store.open_workspace(tmp_path / "w")
    late = migrations.Migration(
        0, "late", lambda con: con.execute("CREATE TABLE late_table (x INTEGER)")
    )
    monkeypatch.setattr(migrations, "MIGRATIONS", [late, *migrations.MIGRATIONS])
    with pytest.raises(SchemaOutdated):
        migrations.check_schema(ws)
    assert migrations.migrate(ws) == [0]
    migrations.check_schema(ws)
