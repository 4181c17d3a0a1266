"""Schedules of headless `pond` commands, the scheduler that runs them, and the record
every job run leaves.

A schedule is a name, a cron expression (croniter) and a `pond` command (the words after
`pond`, e.g. `retrain --model churn --only-if-drift`) run as one user. `pond scheduler` is a
long-running loop for machines without cron: each tick it starts the due jobs as child
processes (`python -m core ...`) and settles their run records when they end. A job that
was due while no scheduler ran starts once when one does, then keeps to its slots (like a
systemd timer with `Persistent=true`).

Every run, scheduled or started by hand, is a row of `job_runs`: written `running` when it
starts and settled with its outcome, exit code, a one-line summary, details and its log. A
run whose process died (killed, machine lost) is settled as `crashed` by the next run of
the same model or by the scheduler that started it; its log file under
`POND_HOME/logs/` survives the crash.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from core import auth, store, training_jobs
from core.auth import User, require
from core.errors import AlreadyExists, Busy, InvalidInput, NotFound
from core.store import Workspace
from core.store import retraining as rows

# Commands a schedule may not run: they never end, or they manage schedules themselves.
LONG_RUNNING = frozenset({"app", "serve", "scheduler", "schedule"})
DEFAULT_TICK_S = 30.0
MAX_LIST = 1000
NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.")

RUNNING = "running"
FINISHED = "finished"

# Run kinds: a retrain records its own run; any other scheduled command is a "command".
KIND_RETRAIN = "retrain"
KIND_COMMAND = "command"

Clock = Callable[[], datetime]
Echo = Callable[[str], None]


class Outcome(StrEnum):
    """How a run ended, in the user's words."""

    SKIPPED = "skipped"  # nothing to do (no drift, no new data)
    TRAINED = "trained"  # a new version waits for review
    PROMOTED = "promoted"  # a new version was approved by the policy and is champion
    DONE = "done"  # a scheduled command other than retrain exited 0
    BUSY = "busy"  # another run of the same model was going; this one did nothing
    FAILED = "failed"  # it ended with an error (the summary says which)
    CRASHED = "crashed"  # its process died before it could settle the record

    @property
    def ok(self) -> bool:
        return self in (Outcome.SKIPPED, Outcome.TRAINED, Outcome.PROMOTED, Outcome.DONE)


@dataclass(frozen=True)
class JobRun:
    """One run of a job, as recorded."""

    id: int
    kind: str
    model: str | None
    schedule: str | None
    command: tuple[str, ...]
    started_by: str
    host: str
    pid: int | None
    status: str
    outcome: str | None
    exit_code: int | None
    summary: str | None
    details: dict[str, Any]
    model_version: int | None
    started_at: datetime
    finished_at: datetime | None
    log: str | None = None

    @property
    def running(self) -> bool:
        return self.status == RUNNING

    @property
    def seconds(self) -> float | None:
        if self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()

    @property
    def command_line(self) -> str:
        return "pond " + " ".join(_quote(w) for w in self.command)

    def to_dict(self, *, log: bool = False) -> dict[str, Any]:
        out = {
            "id": self.id,
            "kind": self.kind,
            "model": self.model,
            "schedule": self.schedule,
            "command": self.command_line,
            "started_by": self.started_by,
            "host": self.host,
            "pid": self.pid,
            "status": self.status,
            "outcome": self.outcome,
            "exit_code": self.exit_code,
            "summary": self.summary,
            "details": self.details,
            "model_version": self.model_version,
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "seconds": None if self.seconds is None else round(self.seconds, 3),
        }
        if log:
            out["log"] = self.log
        return out


@dataclass(frozen=True)
class Schedule:
    """A `pond` command run on a cron expression as one user."""

    name: str
    cron: str
    command: tuple[str, ...]
    run_as: str
    enabled: bool
    next_run_at: datetime
    last_run_at: datetime | None
    created_by: str
    created_at: datetime
    last_run: JobRun | None = None

    @property
    def command_line(self) -> str:
        return "pond " + " ".join(_quote(w) for w in self.command)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "cron": self.cron,
            "command": self.command_line,
            "argv": list(self.command),
            "run_as": self.run_as,
            "enabled": self.enabled,
            "next_run_at": self.next_run_at.isoformat(),
            "last_run_at": self.last_run_at.isoformat() if self.last_run_at else None,
            "created_by": self.created_by,
            "created_at": self.created_at.isoformat(),
            "last_run": self.last_run.to_dict() if self.last_run else None,
        }


def _quote(word: str) -> str:
    return word if word and all(c.isalnum() or c in "-_.:@=/," for c in word) else repr(word)


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _run(row: dict[str, Any]) -> JobRun:
    return JobRun(
        id=row["id"],
        kind=row["kind"],
        model=row["model_name"],
        schedule=row["schedule_name"],
        command=tuple(row["command"] or ()),
        started_by=row["started_by"],
        host=row["host"],
        pid=row["pid"],
        status=row["status"],
        outcome=row["outcome"],
        exit_code=row["exit_code"],
        summary=row["summary"],
        details=row["details"] or {},
        model_version=row["model_version"],
        started_at=_utc(row["started_at"]),
        finished_at=_utc(row["finished_at"]) if row["finished_at"] else None,
        log=row.get("log"),
    )


def _schedule(row: dict[str, Any], last: dict[str, Any] | None = None) -> Schedule:
    return Schedule(
        name=row["name"],
        cron=row["cron"],
        command=tuple(row["command"]),
        run_as=row["run_as"],
        enabled=row["enabled"],
        next_run_at=_utc(row["next_run_at"]),
        last_run_at=_utc(row["last_run_at"]) if row["last_run_at"] else None,
        created_by=row["created_by"],
        created_at=_utc(row["created_at"]),
        last_run=_run(last) if last else None,
    )


# --- run logs and records ------------------------------------------------------------------------


def logs_dir(ws: Workspace) -> Path:
    return ws.home / "logs"


def log_path(ws: Workspace, run_id: int) -> Path:
    """The plain-text log a run writes as it goes (it survives a crash)."""
    return logs_dir(ws) / f"run-{run_id}.log"


def output_path(ws: Workspace, run_id: int) -> Path:
    """What a scheduled child process printed (stdout and stderr)."""
    return logs_dir(ws) / f"run-{run_id}.out"


class RunLog:
    """Plain log lines (`2026-01-31T03:00:04Z INFO retrain churn: message`) written to the
    run's log file as they happen and echoed (to stderr, for the CLI)."""

    def __init__(self, path: Path | None, name: str, echo: Echo | None = None) -> None:
        self.name = name
        self.echo = echo
        self.lines: list[str] = []
        self._file: io.TextIOWrapper | None = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115

    def write(self, message: str, level: str = "INFO") -> None:
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        line = f"{stamp} {level} {self.name}: {message}"
        self.lines.append(line)
        if self._file is not None:
            self._file.write(line + "\n")
        if self.echo is not None:
            self.echo(line)

    def info(self, message: str) -> None:
        self.write(message, "INFO")

    def warning(self, message: str) -> None:
        self.write(message, "WARNING")

    def error(self, message: str) -> None:
        self.write(message, "ERROR")

    def text(self) -> str:
        return "\n".join(self.lines)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def start_run(
    ws: Workspace,
    *,
    kind: str,
    command: Sequence[str],
    actor: User,
    model: str | None = None,
    schedule: str | None = None,
    pid: int | None = None,
) -> int:
    """Record a run as started (`running`) and return its id."""
    row = {
        "kind": kind,
        "model_name": model,
        "schedule_name": schedule,
        "command": list(command),
        "started_by": actor.name,
        "host": socket.gethostname(),
        "pid": os.getpid() if pid is None else pid,
    }

    def write() -> int:
        with store.transaction(ws) as con:
            run_id = rows.insert_run(con, row)
            store.append_audit(
                con,
                actor=actor.name,
                action="job_run_started",
                entity_type="job_run",
                entity_id=str(run_id),
                to_state=RUNNING,
                details={
                    "kind": kind,
                    "model": model,
                    "schedule": schedule,
                    "command": list(command),
                },
            )
            return run_id

    return store.retry_on_conflict(write)


def adopt_run(ws: Workspace, run_id: int, *, kind: str, model: str | None) -> JobRun:
    """Take over a run record a scheduler started for this process.

    Raises:
        NotFound: no such run. InvalidInput: it is not running any more.
    """
    found = get_run(ws, run_id)
    if not found.running:
        raise InvalidInput(
            f"run #{run_id} (POND_RUN_ID) already ended as {found.outcome}; unset POND_RUN_ID "
            "to start a run of your own"
        )

    def write() -> None:
        with store.transaction(ws) as con:
            rows.adopt_run(con, run_id, kind=kind, model=model, pid=os.getpid())

    store.retry_on_conflict(write)
    return get_run(ws, run_id)


def finish_run(
    ws: Workspace,
    run_id: int,
    *,
    outcome: Outcome | str,
    exit_code: int,
    summary: str,
    actor: User,
    details: dict[str, Any] | None = None,
    model_version: int | None = None,
    log: str | None = None,
) -> bool:
    """Settle a running run with how it ended. Returns False when it was already settled."""
    outcome = Outcome(outcome)
    fields = {
        "outcome": outcome.value,
        "exit_code": exit_code,
        "summary": summary,
        "details": details or {},
        "model_version": model_version,
        "log": log,
    }

    def write() -> bool:
        with store.transaction(ws) as con:
            changed = rows.finish_run(con, run_id, fields)
            if changed:
                store.append_audit(
                    con,
                    actor=actor.name,
                    action="job_run_finished",
                    entity_type="job_run",
                    entity_id=str(run_id),
                    from_state=RUNNING,
                    to_state=outcome.value,
                    comment=summary,
                    details={"exit_code": exit_code, "model_version": model_version},
                )
            return changed

    return store.retry_on_conflict(write)


def get_run(ws: Workspace, run_id: int) -> JobRun:
    """One run with its log.

    Raises:
        NotFound: no run has that id.
    """
    with store.read(ws) as con:
        found = rows.get_run(con, int(run_id))
    if found is None:
        raise NotFound(f"there is no job run #{run_id}; `pond runs` lists them")
    run = _run(found)
    if run.log is None:
        run = JobRun(**{**run.__dict__, "log": saved_log(ws, run.id)})
    return run


def saved_log(ws: Workspace, run_id: int) -> str | None:
    """A run's log from its files: its own log, else what its process printed."""
    for path in (log_path(ws, run_id), output_path(ws, run_id)):
        with contextlib.suppress(OSError):
            text = path.read_text(encoding="utf-8", errors="replace").strip()
            if text:
                return text
    return None


def list_runs(
    ws: Workspace,
    *,
    model: str | None = None,
    schedule: str | None = None,
    running: bool | None = None,
    limit: int = 50,
) -> list[JobRun]:
    """Runs, newest first (without their logs; `get_run` has them).

    Raises:
        InvalidInput: a limit outside 1–1000.
    """
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIST:
        raise InvalidInput(
            f"The 'limit' parameter of list_runs must be an int in 1..{MAX_LIST}. "
            f"Got {limit!r} instead."
        )
    status = None if running is None else (RUNNING if running else FINISHED)
    with store.read(ws) as con:
        found = rows.list_runs(con, model=model, schedule=schedule, status=status, limit=limit)
    return [_run(r) for r in found]


def process_alive(pid: int | None, host: str) -> bool:
    """Whether `pid` on `host` is a live process (runs on other hosts count as alive)."""
    if host != socket.gethostname():
        return True
    return training_jobs.pid_alive(pid)


def dead_runs(ws: Workspace, *, model: str | None = None) -> list[JobRun]:
    """Runs still recorded as running whose process is gone."""
    return [
        r
        for r in list_runs(ws, model=model, running=True, limit=MAX_LIST)
        if not process_alive(r.pid, r.host)
    ]


def settle_crashed(
    ws: Workspace,
    run: JobRun,
    *,
    actor: User,
    reason: str | None = None,
    exit_code: int | None = None,
) -> bool:
    """Settle a run whose process died, keeping the log it wrote before it died."""
    summary = reason or (
        f"crashed: process {run.pid} on {run.host} ended without finishing "
        "the run; nothing half-done was kept"
    )
    return finish_run(
        ws,
        run.id,
        outcome=Outcome.CRASHED,
        exit_code=exit_code or -9,
        summary=summary,
        actor=actor,
        details=run.details,
        log=saved_log(ws, run.id),
    )


# --- model locks -------------------------------------------------------------------------------


@contextlib.contextmanager
def exclusive_lock(ws: Workspace, name: str, what: str) -> Iterator[None]:
    """Hold `POND_HOME/locks/NAME.lock` for the block, or fail at once.

    The kernel releases an `flock` when its process dies, so a crashed holder never blocks
    the next one.

    Raises:
        Busy: another process holds it (the message names its pid and start time).
    """
    ws.locks_dir.mkdir(parents=True, exist_ok=True)
    path = ws.locks_dir / f"{name}.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip()
            raise Busy(
                f"{what} is already running ({holder or 'another process'}); wait for it to "
                "finish (`pond runs` shows it) and try again"
            ) from None
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since {stamp}".encode(), 0)
        yield
    finally:
        os.close(fd)


# --- schedules ---------------------------------------------------------------------------------


def check_cron(expression: str) -> str:
    """Raises: InvalidInput unless `expression` is a 5-field cron expression croniter reads."""
    from croniter import croniter

    text = " ".join((expression or "").split())
    if len(text.split()) != 5 or not croniter.is_valid(text):
        raise InvalidInput(
            f"cron expression {expression!r} is not valid: write five fields, minute hour "
            "day-of-month month day-of-week, e.g. '0 3 * * *' for 03:00 every day (UTC)"
        )
    return text


def next_slot(expression: str, after: datetime) -> datetime:
    """The first time strictly after `after` that the cron expression names (UTC)."""
    from croniter import croniter

    return _utc(croniter(expression, _utc(after)).get_next(datetime))


def check_command(command: Sequence[str]) -> list[str]:
    """The `pond` command a schedule runs, checked against the real command line.

    Raises:
        InvalidInput: empty, a long-running command, --home/--user (the schedule sets both),
            or words `pond` would refuse (the message carries its complaint).
    """
    words = [str(w) for w in command]
    if words and words[0] == "--":
        words = words[1:]
    if words and words[0] == "pond":
        words = words[1:]
    if not words:
        raise InvalidInput(
            "a schedule needs a command to run, e.g. -- retrain --model churn --only-if-drift"
        )
    if words[0] in LONG_RUNNING:
        raise InvalidInput(
            f"`pond {words[0]}` cannot be scheduled: it keeps running or manages "
            "schedules itself; schedule a command that ends, such as retrain"
        )
    for word in words:
        if word.split("=", 1)[0] in ("--home", "--user"):
            raise InvalidInput(
                f"leave {word.split('=', 1)[0]} out of a scheduled command: the "
                "scheduler runs it in its own workspace as the schedule's user "
                "(--run-as)"
            )
    from core.cli import build_parser

    parser = build_parser()
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            parser.parse_args(words)
    except SystemExit as exc:
        complaint = err.getvalue().strip().splitlines()
        reason = complaint[-1] if complaint else f"exit status {exc.code}"
        raise InvalidInput(f"`pond {' '.join(words)}` is not a valid command: {reason}") from None
    return words


def _check_name(name: str) -> str:
    if not name or len(name) > 64 or not name[0].isalpha() or not set(name) <= NAME_CHARS:
        raise InvalidInput(
            f"schedule name {name!r} is not allowed: use up to 64 letters, digits,"
            " '.', '_' or '-', starting with a letter (e.g. nightly-churn)"
        )
    return name


def add_schedule(
    ws: Workspace,
    name: str,
    cron: str,
    command: Sequence[str],
    *,
    actor: User,
    run_as: str | None = None,
    now: datetime | None = None,
) -> Schedule:
    """Schedule a `pond` command on a cron expression (UTC).

    Args:
        name: what people call it (unique).
        cron: five fields, e.g. "0 3 * * *".
        command: the words after `pond`, e.g. ["retrain", "--model", "churn", "--only-if-drift"].
        actor: an admin.
        run_as: the account the job acts as (default: the actor); it must exist and be enabled.
        now: when "now" is (tests); the first run is the first slot after it.

    Returns:
        The stored schedule.

    Raises:
        PermissionDenied: the actor is not an admin. AlreadyExists: the name is taken.
        InvalidInput: a bad name, cron expression or command. NotFound: no such run-as user.
    """
    require(actor, "manage_schedules")
    _check_name(name)
    expression = check_cron(cron)
    words = check_command(command)
    user = auth.acting_user(ws, run_as or actor.name)
    first = next_slot(expression, now or datetime.now(UTC))
    row = {
        "name": name,
        "cron": expression,
        "command": words,
        "run_as": user.name,
        "enabled": True,
        "next_run_at": first,
        "created_by": actor.name,
    }

    def write() -> dict[str, Any] | None:
        with store.transaction(ws) as con:
            if rows.get_schedule(con, name) is not None:
                raise AlreadyExists(
                    f"schedule '{name}' already exists; remove it first "
                    f"(`pond schedule remove {name}`) or pick another name"
                )
            rows.insert_schedule(con, row)
            store.append_audit(
                con,
                actor=actor.name,
                action="schedule_added",
                entity_type="schedule",
                entity_id=name,
                to_state="enabled",
                details={"cron": expression, "command": words, "run_as": user.name},
            )
            return rows.get_schedule(con, name)

    stored = store.retry_on_conflict(write)
    assert stored is not None
    return _schedule(stored)


def remove_schedule(ws: Workspace, name: str, *, actor: User) -> Schedule:
    """Delete a schedule; its past runs stay.

    Raises:
        PermissionDenied: the actor is not an admin. NotFound: no such schedule.
    """
    require(actor, "manage_schedules")

    def write() -> dict[str, Any]:
        with store.transaction(ws) as con:
            found = rows.get_schedule(con, name)
            if found is None:
                raise NotFound(f"there is no schedule '{name}'; `pond schedule list` shows them")
            rows.delete_schedule(con, name)
            store.append_audit(
                con,
                actor=actor.name,
                action="schedule_removed",
                entity_type="schedule",
                entity_id=name,
                from_state="enabled" if found["enabled"] else "disabled",
                details={"cron": found["cron"], "command": found["command"]},
            )
            return found

    return _schedule(store.retry_on_conflict(write))


def list_schedules(ws: Workspace) -> list[Schedule]:
    """Every schedule by name, each with its latest run."""
    with store.read(ws) as con:
        found = rows.list_schedules(con)
        last = rows.last_runs_by_schedule(con)
    return [_schedule(r, last.get(r["name"])) for r in found]


def get_schedule(ws: Workspace, name: str) -> Schedule:
    """Raises: NotFound when there is no such schedule."""
    for s in list_schedules(ws):
        if s.name == name:
            return s
    raise NotFound(f"there is no schedule '{name}'; `pond schedule list` shows them")


# --- the scheduler -----------------------------------------------------------------------------


@dataclass
class _Child:
    run_id: int
    schedule: str
    process: subprocess.Popen[bytes]
    waiting: bool = False


@dataclass
class SchedulerReport:
    """What one `run_scheduler` call did: run ids started and settled, ticks taken."""

    iterations: int = 0
    started: list[int] = field(default_factory=list)
    finished: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"iterations": self.iterations, "started": self.started, "finished": self.finished}


def _project_root() -> Path:
    return Path(__file__).resolve().parent.parent


def _launch(ws: Workspace, schedule: Schedule, run_id: int) -> subprocess.Popen[bytes]:
    env = dict(
        os.environ,
        POND_HOME=str(ws.home),
        POND_USER=schedule.run_as,
        POND_RUN_ID=str(run_id),
        POND_SCHEDULE=schedule.name,
    )
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(_project_root()), os.environ.get("PYTHONPATH", "")) if p
    )
    logs_dir(ws).mkdir(parents=True, exist_ok=True)
    with open(output_path(ws, run_id), "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "core", *schedule.command],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=_project_root(),
            env=env,
            close_fds=True,
        )


def _start_due(
    ws: Workspace, now: datetime, say: Echo, children: list[_Child], report: SchedulerReport
) -> None:
    with store.read(ws) as con:
        due = [_schedule(r) for r in rows.due_schedules(con, now)]
    busy = {c.schedule: c for c in children}
    for schedule in due:
        if schedule.name in busy:
            # Never two runs of one schedule at once: the due slot waits for the running one
            # and then starts once, however many slots passed meanwhile.
            child = busy[schedule.name]
            if not child.waiting:
                child.waiting = True
                say(
                    f"schedule {schedule.name}: due, but run #{child.run_id} is still running; "
                    "it starts when that one ends"
                )
            continue
        # A slot missed while no scheduler ran starts once now; the next is after now.
        upcoming = next_slot(schedule.cron, max(now, schedule.next_run_at))

        def claim(s: Schedule = schedule, nxt: datetime = upcoming) -> bool:
            with store.transaction(ws) as con:
                return rows.claim_schedule(con, s.name, s.next_run_at, now, nxt)

        if not store.retry_on_conflict(claim):
            continue  # another scheduler took it
        try:
            run_as = auth.acting_user(ws, schedule.run_as)
        except Exception as exc:  # noqa: BLE001 - a bad account fails this run, not the loop
            run_id = start_run(
                ws,
                kind=KIND_COMMAND,
                command=schedule.command,
                actor=auth.SYSTEM,
                schedule=schedule.name,
            )
            finish_run(
                ws,
                run_id,
                outcome=Outcome.FAILED,
                exit_code=1,
                actor=auth.SYSTEM,
                summary=f"failed: schedule '{schedule.name}' cannot run as "
                f"'{schedule.run_as}': {exc}",
            )
            report.started.append(run_id)
            report.finished.append(run_id)
            say(f"schedule {schedule.name}: cannot run as {schedule.run_as}: {exc}")
            continue
        model = _model_of(schedule.command)
        run_id = start_run(
            ws,
            kind=KIND_COMMAND,
            command=schedule.command,
            actor=run_as,
            model=model,
            schedule=schedule.name,
        )
        process = _launch(ws, schedule, run_id)
        children.append(_Child(run_id, schedule.name, process))
        report.started.append(run_id)
        say(
            f"schedule {schedule.name}: started run #{run_id} (pid {process.pid}): "
            f"{schedule.command_line}; next at {upcoming:%Y-%m-%dT%H:%M:%SZ}"
        )


def _model_of(command: Sequence[str]) -> str | None:
    words = list(command)
    for i, word in enumerate(words):
        if word == "--model" and i + 1 < len(words):
            return words[i + 1].split("@")[0].split(":")[0]
        if word.startswith("--model="):
            return word.split("=", 1)[1].split("@")[0].split(":")[0]
    return None


def _settle_children(
    ws: Workspace, children: list[_Child], say: Echo, report: SchedulerReport, *, wait: bool
) -> None:
    for child in list(children):
        code = child.process.wait() if wait else child.process.poll()
        if code is None:
            continue
        children.remove(child)
        report.finished.append(child.run_id)
        run = get_run(ws, child.run_id)
        if run.running:
            # The command did not settle its own record: it is not a retrain, or it died.
            if run.kind == KIND_RETRAIN:
                from core import retraining

                retraining.recover_run(ws, run, exit_code=code)
            elif code < 0:
                settle_crashed(
                    ws,
                    run,
                    actor=auth.SYSTEM,
                    exit_code=code,
                    reason=(f"crashed: killed by signal {-code} (pid {child.process.pid})"),
                )
            else:
                output = saved_log(ws, child.run_id) or ""
                last = output.strip().splitlines()[-1] if output.strip() else ""
                finish_run(
                    ws,
                    child.run_id,
                    outcome=Outcome.DONE if code == 0 else Outcome.FAILED,
                    exit_code=code,
                    actor=auth.SYSTEM,
                    log=output or None,
                    summary=("done" if code == 0 else f"failed with exit code {code}")
                    + (f": {last[:300]}" if last else ""),
                )
            run = get_run(ws, child.run_id)
        say(
            f"schedule {child.schedule}: run #{child.run_id} ended: {run.outcome} "
            f"(exit {run.exit_code}) {run.summary or ''}".rstrip()
        )


def run_scheduler(
    ws: Workspace,
    *,
    tick_s: float = DEFAULT_TICK_S,
    max_iterations: int | None = None,
    until: datetime | None = None,
    clock: Clock | None = None,
    echo: Echo | None = None,
    stop: Callable[[], bool] | None = None,
) -> SchedulerReport:
    """Run due schedules until stopped: the loop behind `pond scheduler`.

    Each tick starts every due schedule as a child process (`python -m core COMMAND` with
    POND_HOME, POND_USER set to the schedule's user and POND_RUN_ID set to the run record it
    made), settles children that ended, and sleeps `tick_s`. On the way out it waits for
    running children. One scheduler per workspace.

    Args:
        tick_s: seconds between looks at the schedules (> 0).
        max_iterations: stop after this many ticks (None: run until `until` or a signal).
        until: stop once the clock passes this time.
        clock: what "now" is (default: the real UTC time); tests pass one that jumps ahead.
        echo: where to say what happens (the CLI prints to stderr).
        stop: a callable polled each tick; True ends the loop (SIGTERM does too in the CLI).

    Returns:
        The ticks taken and the runs started and settled.

    Raises:
        Busy: another scheduler runs on this workspace.
        InvalidInput: a tick that is not a positive number, or max_iterations < 1.
    """
    if isinstance(tick_s, bool) or not isinstance(tick_s, int | float) or not tick_s > 0:
        raise InvalidInput(
            f"The 'tick_s' parameter of run_scheduler must be a number of "
            f"seconds > 0. Got {tick_s!r} instead."
        )
    if max_iterations is not None and (
        isinstance(max_iterations, bool)
        or not isinstance(max_iterations, int)
        or max_iterations < 1
    ):
        raise InvalidInput(
            f"The 'max_iterations' parameter of run_scheduler must be an int "
            f">= 1. Got {max_iterations!r} instead."
        )
    now_fn = clock or (lambda: datetime.now(UTC))
    say = echo or (lambda _line: None)
    report = SchedulerReport()
    children: list[_Child] = []
    with exclusive_lock(ws, "scheduler", f"a scheduler for workspace {ws.home}"):
        # Runs this workspace's earlier scheduler started and lost track of (it was killed).
        for run in dead_runs(ws):
            if run.kind == KIND_COMMAND:
                settle_crashed(ws, run, actor=auth.SYSTEM)
        say(f"scheduler started on {ws.home} (pid {os.getpid()}, tick {tick_s:g}s)")
        try:
            while True:
                now = _utc(now_fn())
                if until is not None and now >= _utc(until):
                    break
                report.iterations += 1
                _settle_children(ws, children, say, report, wait=False)
                _start_due(ws, now, say, children, report)
                if max_iterations is not None and report.iterations >= max_iterations:
                    break
                if stop is not None and stop():
                    break
                deadline = time.monotonic() + tick_s
                while time.monotonic() < deadline:
                    if stop is not None and stop():
                        break
                    time.sleep(min(0.2, tick_s))
                if stop is not None and stop():
                    break
        finally:
            if children:
                say(f"waiting for {len(children)} running job(s) to finish")
            _settle_children(ws, children, say, report, wait=True)
    say(
        f"scheduler stopped after {report.iterations} tick(s); {len(report.started)} run(s) started"
    )
    return report


def stop_on_signals() -> Callable[[], bool]:
    """A stop flag set by SIGTERM or SIGINT (for `pond scheduler` under systemd or a shell)."""
    flag = {"stop": False}

    def handler(_signum: int, _frame: Any) -> None:
        flag["stop"] = True

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return lambda: flag["stop"]
