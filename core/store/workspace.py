"""Where a Pond workspace lives on disk and how a process opens it.

Every Pond process (app, server, CLI, scheduled job) reaches `pond.duckdb`
only through `connect()`. DuckDB 2.0 lets one read-write process hold the
file and reads the header before taking its own lock, so a process that opens
while another commits can silently lose that commit. We therefore take an
advisory `fcntl.flock` on `pond.duckdb.lock` (shared to read, exclusive to
write) *before* connecting and release it *after* closing, and we never hold a
connection across long work. Inside one process a lock serialises connections,
because DuckDB refuses read-only and read-write connections to one file side
by side.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import duckdb

from core.errors import Conflict, PondError

T = TypeVar("T")

DEFAULT_HOME = ".pond"


@dataclass(frozen=True)
class Workspace:
    """The folders and files of one workspace (`POND_HOME`)."""

    home: Path

    @property
    def db_path(self) -> Path:
        return self.home / "pond.duckdb"

    @property
    def lock_path(self) -> Path:
        return self.home / "pond.duckdb.lock"

    @property
    def artifacts_dir(self) -> Path:
        return self.home / "artifacts"

    @property
    def inference_dir(self) -> Path:
        return self.home / "inference"

    @property
    def studies_dir(self) -> Path:
        return self.home / "studies"

    @property
    def tmp_dir(self) -> Path:
        return self.home / "tmp"

    @property
    def locks_dir(self) -> Path:
        return self.home / "locks"

    def make_dirs(self) -> None:
        for d in (
            self.home,
            self.artifacts_dir,
            self.inference_dir,
            self.studies_dir,
            self.tmp_dir,
            self.locks_dir,
        ):
            d.mkdir(parents=True, exist_ok=True)


def resolve_home(home: str | os.PathLike[str] | None = None) -> Path:
    """The workspace folder: `home` if given, else `$POND_HOME`, else `./.pond`."""
    raw = home if home is not None else os.environ.get("POND_HOME") or DEFAULT_HOME
    return Path(raw).expanduser().resolve()


# One lock per database file inside this process (see the module docstring).
_process_locks: dict[Path, threading.Lock] = {}
_process_locks_guard = threading.Lock()
_held = threading.local()


def _process_lock(path: Path) -> threading.Lock:
    with _process_locks_guard:
        return _process_locks.setdefault(path, threading.Lock())


@contextmanager
def _flock(path: Path, exclusive: bool) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        # Closing the descriptor releases the lock.
        os.close(fd)


@contextmanager
def raw_connect(ws: Workspace, *, write: bool) -> Iterator[duckdb.DuckDBPyConnection]:
    """Open `pond.duckdb` under the advisory lock; close it, then unlock.

    Most code wants `connect()`, which also checks the schema version.

    Raises:
        PondError: when called while this thread already holds a connection
            (nesting would deadlock on the file lock).
    """
    if getattr(_held, "active", False):
        raise PondError(
            "internal error: a workspace connection was opened inside another one; "
            "finish with the first connection before opening the next"
        )
    ws.home.mkdir(parents=True, exist_ok=True)
    _held.active = True
    try:
        with _process_lock(ws.db_path), _flock(ws.lock_path, exclusive=write):
            if not write and not ws.db_path.exists():
                raise PondError(f"no workspace at {ws.home}; run `pond migrate --home {ws.home}`")
            con = duckdb.connect(str(ws.db_path), read_only=not write)
            try:
                yield con
            finally:
                con.close()
    finally:
        _held.active = False


def is_conflict(exc: BaseException) -> bool:
    return isinstance(exc, duckdb.TransactionException) and "Conflict" in str(exc)


def retry_on_conflict(fn: Callable[[], T], attempts: int = 5) -> T:
    """Run `fn`, retrying DuckDB's `Conflict on update!` a few times with backoff."""
    for attempt in range(attempts):
        try:
            return fn()
        except duckdb.TransactionException as exc:
            if not is_conflict(exc) or attempt == attempts - 1:
                if is_conflict(exc):
                    raise Conflict(f"the workspace was busy; try again ({exc})") from exc
                raise
            time.sleep(0.05 * 2**attempt)
    raise AssertionError("unreachable")
