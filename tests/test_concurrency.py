"""DESIGN.md's multi-process rule: app-, server- and job-style writers and a
reader share one workspace at once; every acknowledged write must be there
exactly once."""

from __future__ import annotations

import multiprocessing as mp
import os
import random
import time
from pathlib import Path

from core import store

WRITES_PER_WRITER = 60


def _writer(home: str, style: str, ack_path: str) -> None:
    ws = store.open_workspace(home)
    rng = random.Random(style)
    with open(ack_path, "w") as acks:
        for i in range(WRITES_PER_WRITER):
            entity_id = f"{style}-{os.getpid()}-{i}"
            if style == "job":
                # A job works between short writes, never holding the lock.
                time.sleep(rng.random() * 0.005)
            with store.transaction(ws) as con:
                store.append_audit(
                    con, actor=style, action="write", entity_type="concurrency",
                    entity_id=entity_id,
                )
            # Acknowledged only after the commit returned.
            acks.write(entity_id + "\n")
            acks.flush()


def _reader(home: str, stop_path: str, out_path: str) -> None:
    ws = store.open_workspace(home)
    reads = 0
    while not os.path.exists(stop_path):
        with store.read(ws) as con:
            con.execute("SELECT count(*) FROM audit_log").fetchall()
        reads += 1
    Path(out_path).write_text(str(reads))


def test_concurrent_writers_lose_nothing(tmp_path):
    home = str(tmp_path / "pond")
    store.open_workspace(home)
    ctx = mp.get_context("spawn")
    styles = ["app", "server", "job"]
    acks = {s: str(tmp_path / f"{s}.acks") for s in styles}
    stop = str(tmp_path / "stop")
    reader_out = str(tmp_path / "reads")
    reader = ctx.Process(target=_reader, args=(home, stop, reader_out))
    reader.start()
    writers = [ctx.Process(target=_writer, args=(home, s, acks[s])) for s in styles]
    for p in writers:
        p.start()
    for p in writers:
        p.join(timeout=300)
        assert p.exitcode == 0
    Path(stop).touch()
    reader.join(timeout=60)
    assert reader.exitcode == 0
    assert int(Path(reader_out).read_text()) > 0

    acknowledged = [line for s in styles for line in Path(acks[s]).read_text().split()]
    assert len(acknowledged) == WRITES_PER_WRITER * len(styles)
    ws = store.open_workspace(home)
    with store.read(ws) as con:
        rows = con.execute(
            "SELECT entity_id, count(*) FROM audit_log WHERE entity_type = 'concurrency'"
            " GROUP BY entity_id"
        ).fetchall()
    counts = dict(rows)
    missing = [e for e in acknowledged if e not in counts]
    doubled = [e for e, n in counts.items() if n != 1]
    assert missing == [] and doubled == []
    assert len(counts) == len(acknowledged)
