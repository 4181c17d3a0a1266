"""Background AutoML trainings for the app: one detached worker process per job.

A page must not train inside Streamlit's script thread (a rerun would kill
it), so `start_training` launches `python -m core train ... --json` as its own
process session and returns a job id at once. Each job has its own folder,
`POND_HOME/jobs/<id>/`, and its own Optuna study, so two trainings never
share a file:

- `job.json`       the request, who asked, when, and the worker's pid;
- `progress.json`  the worker's latest snapshot, replaced atomically (written
                   to a temporary name, then `os.replace`d), so a reader never
                   sees half a file;
- `stop`           created by `request_stop`; the worker finishes its current
                   trial, refits the best so far and scores it;
- `run/`           the finished model (`model.txt`, `contract.json`, `result.json`);
- `stderr.log`     what the worker printed, shown when it dies unexpectedly.

The worker reads the workspace only briefly at its start and end (never
holding a connection while it trains), so the app stays responsive.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from core import auth
from core.errors import InvalidInput, NotFound, PermissionDenied
from core.store import Workspace

JOB_FILE = "job.json"
PROGRESS_FILE = "progress.json"
STOP_FILE = "stop"
RUN_DIR = "run"
STDERR_FILE = "stderr.log"
REGISTERED_FILE = "registered.json"

RUNNING = "running"
DONE = "done"
FAILED = "failed"


def jobs_dir(ws: Workspace) -> Path:
    """The folder that holds one sub-folder per training job."""
    return ws.home / "jobs"


def write_json_atomic(path: str | os.PathLike[str], data: Any) -> None:
    """Write JSON under a temporary name in the same folder, then rename it into place."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, default=str), encoding="utf-8")
    os.replace(tmp, target)


def _read_json(path: Path) -> Any | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except json.JSONDecodeError:
        # Only possible for a file not written by write_json_atomic; treat as absent.
        return None


class ProgressFileWriter:
    """An `on_progress` callback for `automl.train` that keeps a progress file current.

    Writes at most about three times a second, but always when a trial ends or
    the phase changes.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._last = 0.0
        self._last_key: tuple[str, int] | None = None

    def __call__(self, progress: Any) -> None:
        key = (progress.phase, progress.trials_done)
        now = time.monotonic()
        if key == self._last_key and now - self._last < 0.3:
            return
        self._last, self._last_key = now, key
        self.write(RUNNING, progress=progress.to_dict())

    def write(self, status: str, **fields: Any) -> None:
        write_json_atomic(
            self.path, {"status": status, "updated_at": datetime.now(UTC).isoformat(), **fields}
        )


@dataclass(frozen=True)
class JobStatus:
    """Where a training job stands.

    Attributes:
        state: "running", "done" or "failed".
        progress: the latest `automl.Progress` as a dict (None before the first).
        result: the finished `TrainResult` as a dict, with figures (done only).
        error: why it failed (failed only).
        registered: the model version registered from this job, if any.
    """

    job_id: str
    state: str
    request: dict[str, Any]
    actor: str
    created_at: str
    pid: int | None
    stop_requested: bool
    progress: dict[str, Any] | None
    result: dict[str, Any] | None
    error: str | None
    registered: dict[str, Any] | None
    # What kind of training the job runs: "automl" (`start_training`) or another
    # kind launched through `launch_job` ("finetune"); older jobs have none.
    kind: str = "automl"

    @property
    def finished(self) -> bool:
        return self.state in (DONE, FAILED)


def _job_dir(ws: Workspace, job_id: str) -> Path:
    if not job_id or "/" in job_id or job_id.startswith(".") or len(job_id) > 80:
        raise InvalidInput(f"training job id {job_id!r} is not valid")
    folder = jobs_dir(ws) / job_id
    if not (folder / JOB_FILE).exists():
        raise NotFound(f"there is no training job {job_id!r} in {jobs_dir(ws)}")
    return folder


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        # Reap our own finished child so it does not linger as a zombie.
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][:1]
    except (OSError, IndexError):
        return True
    return state != "Z"


def _project_root() -> Path:
    return Path(__file__).resolve().parent.parent


def start_training(
    ws: Workspace,
    *,
    actor: auth.User,
    dataset: str,
    target: str,
    task: str = "auto",
    metric: str | None = None,
    exclude: Sequence[str] = (),
    time_budget: float | None = 60.0,
    n_trials: int | None = None,
    seed: int = 0,
    register_model: str | None = None,
    ensemble: bool = True,
) -> str:
    """Launch a training in a detached worker process.

    Args:
        dataset: "name" or "name:version".
        register_model: register the result as a new version of this model
            (pending review) when training ends; None leaves that to `register_job`.
        Others: as for `automl.train`.

    Returns:
        The job id, for `read_progress`, `request_stop` and `register_job`.

    Raises:
        PermissionDenied: the actor may not train.
        NotFound: no such dataset or version.
        InvalidInput: a bad budget, trial count, seed or target column.
    """
    from core import automl, datasets

    auth.require(actor, "train")
    automl._check_numbers(time_budget, n_trials, seed)
    from core import features

    view = features.training_input(ws, dataset, actor=actor)  # "fv:NAME:VERSION"
    dv = view.data if view else datasets.resolve(ws, dataset)
    ref = view.ref if view else dv.ref
    if target not in dv.column_names:
        raise InvalidInput(automl._no_target_message(target, dv.column_names))
    job_id = f"{datetime.now(UTC):%Y%m%d-%H%M%S}-{secrets.token_hex(4)}"
    folder = jobs_dir(ws) / job_id
    folder.mkdir(parents=True)
    request = {
        "dataset": ref,
        "target": target,
        "task": task,
        "metric": metric,
        "exclude": list(exclude),
        "time_budget": time_budget,
        "n_trials": n_trials,
        "seed": seed,
        "ensemble": ensemble,
        "register_model": register_model,
        "study": f"job-{job_id}",
    }
    cmd = [
        sys.executable, "-m", "core", "train",
        "--home", str(ws.home),
        "--user", actor.name,
        "--dataset", ref,
        "--target", target,
        "--task", task,
        "--seed", str(seed),
        "--time-budget", "none" if time_budget is None else repr(float(time_budget)),
        "--study", request["study"],
        "--progress-file", str(folder / PROGRESS_FILE),
        "--stop-file", str(folder / STOP_FILE),
        "--run-dir", str(folder / RUN_DIR),
        "--json",
    ]
    if metric:
        cmd += ["--metric", metric]
    if n_trials is not None:
        cmd += ["--trials", str(n_trials)]
    for column in exclude:
        cmd += ["--exclude", column]
    if register_model:
        cmd += ["--register", register_model]
    if not ensemble:
        cmd.append("--single-model")
    job = {
        "job_id": job_id,
        "request": request,
        "actor": actor.name,
        "created_at": datetime.now(UTC).isoformat(),
        "pid": None,
    }
    write_json_atomic(folder / JOB_FILE, job)
    env = dict(os.environ, POND_HOME=str(ws.home))
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(_project_root()), os.environ.get("PYTHONPATH", "")) if p
    )
    with open(folder / STDERR_FILE, "wb") as err, open(folder / "stdout.json", "wb") as out:
        # A session of its own: the worker outlives page reruns and app restarts.
        process = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=err, cwd=_project_root(),
            env=env, start_new_session=True, close_fds=True,
        )
    job["pid"] = process.pid
    write_json_atomic(folder / JOB_FILE, job)
    return job_id


def launch_job(
    ws: Workspace,
    *,
    actor: auth.User,
    kind: str,
    request: Mapping[str, Any],
    argv: Sequence[str],
) -> str:
    """Start `python -m core ARGV` as a detached worker with its own job folder.

    For trainings other than AutoML (fine-tuning): the same folder layout,
    progress file, stop file and `read_progress` as `start_training`. The
    worker is given `--home`, `--user`, `--progress-file`, `--stop-file`,
    `--run-dir` and `--json` after `argv`, so its command must accept them.
    Validate the request before calling: this only launches.

    Args:
        kind: what the job runs, recorded in job.json (e.g. "finetune").
        request: what was asked, shown by the pages.
        argv: the `pond` command and its own options, e.g. ["finetune", "--dataset", "qa:1"].

    Returns:
        The job id.
    """
    job_id = f"{datetime.now(UTC):%Y%m%d-%H%M%S}-{secrets.token_hex(4)}"
    folder = jobs_dir(ws) / job_id
    folder.mkdir(parents=True)
    cmd = [
        sys.executable, "-m", "core", *argv,
        "--home", str(ws.home),
        "--user", actor.name,
        "--progress-file", str(folder / PROGRESS_FILE),
        "--stop-file", str(folder / STOP_FILE),
        "--run-dir", str(folder / RUN_DIR),
        "--json",
    ]
    job = {
        "job_id": job_id,
        "kind": kind,
        "request": dict(request),
        "actor": actor.name,
        "created_at": datetime.now(UTC).isoformat(),
        "pid": None,
    }
    write_json_atomic(folder / JOB_FILE, job)
    env = dict(os.environ, POND_HOME=str(ws.home))
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(_project_root()), os.environ.get("PYTHONPATH", "")) if p
    )
    with open(folder / STDERR_FILE, "wb") as err, open(folder / "stdout.json", "wb") as out:
        # A session of its own: the worker outlives page reruns and app restarts.
        process = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=err, cwd=_project_root(),
            env=env, start_new_session=True, close_fds=True,
        )
    job["pid"] = process.pid
    write_json_atomic(folder / JOB_FILE, job)
    return job_id


def job_folder(ws: Workspace, job_id: str) -> Path:
    """The folder of an existing job (its `run/` holds what the worker saved).

    Raises:
        NotFound: no such job. InvalidInput: not a job id.
    """
    return _job_dir(ws, job_id)


def _stderr_tail(folder: Path, lines: int = 5) -> str:
    try:
        text = (folder / STDERR_FILE).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    kept = [ln for ln in text.strip().splitlines() if ln.strip()]
    return "\n".join(kept[-lines:])


def read_progress(ws: Workspace, job_id: str, *, with_result: bool = True) -> JobStatus:
    """The latest state of a job.

    A worker that died without writing a final state (killed, out of memory)
    is reported as failed with the end of its error output.

    Raises:
        NotFound: no such job.
    """
    folder = _job_dir(ws, job_id)
    job = _read_json(folder / JOB_FILE) or {}
    snapshot = _read_json(folder / PROGRESS_FILE) or {}
    status = snapshot.get("status", RUNNING)
    error = snapshot.get("error")
    if status not in (DONE, FAILED) and not pid_alive(job.get("pid")):
        # Re-read: the worker may have written its last state just before exiting.
        snapshot = _read_json(folder / PROGRESS_FILE) or snapshot
        status = snapshot.get("status", RUNNING)
        error = snapshot.get("error")
        if status not in (DONE, FAILED):
            status = FAILED
            tail = _stderr_tail(folder)
            error = "the training process ended without a result" + (f": {tail}" if tail else "")
    result = None
    if status == DONE and with_result:
        result = _read_json(folder / RUN_DIR / "result.json")
    registered = _read_json(folder / REGISTERED_FILE) or snapshot.get("registered")
    return JobStatus(
        job_id=job_id,
        state=status,
        request=job.get("request", {}),
        actor=job.get("actor", ""),
        created_at=job.get("created_at", ""),
        pid=job.get("pid"),
        stop_requested=(folder / STOP_FILE).exists(),
        progress=snapshot.get("progress"),
        result=result,
        error=error,
        registered=registered,
        kind=job.get("kind", "automl"),
    )


def request_stop(ws: Workspace, job_id: str) -> None:
    """Ask a running job to stop searching; it still refits and scores the best so far.

    Raises:
        NotFound: no such job.
    """
    folder = _job_dir(ws, job_id)
    (folder / STOP_FILE).touch()


def list_jobs(
    ws: Workspace, *, actor: str | None = None, kind: str | None = None
) -> list[JobStatus]:
    """Every job (of `actor`, of `kind` when given), newest first, without their results."""
    root = jobs_dir(ws)
    if not root.exists():
        return []
    out = []
    for folder in sorted(root.iterdir(), reverse=True):
        if not (folder / JOB_FILE).exists():
            continue
        status = read_progress(ws, folder.name, with_result=False)
        if (actor is None or status.actor == actor) and (kind is None or status.kind == kind):
            out.append(status)
    return out


def register_job(
    ws: Workspace,
    job_id: str,
    model_name: str,
    *,
    actor: auth.User,
    comment: str | None = None,
) -> Any:
    """Register a finished job's model as a new version, pending review.

    Returns:
        The registry's `ModelVersion`.

    Raises:
        NotFound: no such job. InvalidInput: the job has not finished well.
        PermissionDenied: the actor may not register, or did not start the job
            and is not an admin.
    """
    from core import automl

    status = read_progress(ws, job_id, with_result=False)
    if status.state != DONE:
        raise InvalidInput(
            f"training job {job_id} has not finished successfully ({status.state}); "
            "wait for it to finish before registering"
        )
    if status.actor != actor.name and actor.role is not auth.Role.ADMIN:
        raise PermissionDenied(
            f"training job {job_id} was started by {status.actor!r}; only they (or an admin) "
            "can register its model"
        )
    folder = _job_dir(ws, job_id)
    version = automl.register_run(ws, folder / RUN_DIR, model_name, actor=actor, comment=comment)
    write_json_atomic(folder / REGISTERED_FILE, registered_summary(version))
    return version


def registered_summary(version: Any) -> dict[str, Any]:
    """The few fields of a registered version that a job records."""
    return {"model": version.model, "version": version.version, "status": str(version.status)}


def progress_fields(status: JobStatus) -> Mapping[str, Any]:
    """The progress dict of a job, or an empty snapshot before the first one."""
    return status.progress or {
        "phase": "starting", "trials_done": 0, "trials_pruned": 0, "best_value": None,
        "elapsed_s": 0.0, "budget_s": status.request.get("time_budget"), "fraction": 0.0,
        "history": [], "message": "starting the worker",
    }
