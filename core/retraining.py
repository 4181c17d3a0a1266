"""Headless retraining that closes the loop: drift → retrain → evaluate → review.

`retrain` takes the newest version of a model's training dataset (or a named one), optionally
checks it for drift against the data the model was trained on and stops when there is none,
reruns the model's recorded training configuration (same target, task, metric, exclusions and
search space, warm-started from the previous best parameters), scores the new model and the
current champion on the same new holdout, and registers the new version pending review with
its parent in the lineage. A model's auto-promotion policy (set by an admin, off by default)
lets the "policy" actor approve a challenger that beats the champion by a margin and move the
champion alias to it.

It is built to run unattended: one run per model at a time (an `flock` under
`POND_HOME/locks/` that the kernel drops when a process dies), no DuckDB connection held
while training, every run recorded in `job_runs` with its log (`core.schedules`), and
failures raised as alerts through drift monitoring's channel (`drift_alerts` and its webhook
outbox). A run killed at any point leaves no half-registered version: the registry commits a
version whole or not at all, the new version carries the run's id as a tag, and the next run
settles the dead run's record from what it finds.
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core import auth, datasets, registry, schedules, store
from core import metrics as metric_registry
from core.auth import POLICY, User, require
from core.errors import Busy, InvalidInput, NotFound, PondError
from core.schedules import JobRun, Outcome, RunLog
from core.store import Workspace
from core.store import retraining as rows

# Exit codes of `pond retrain` (README and --help carry the same table).
EXIT_OK = 0
EXIT_INPUT = 1
EXIT_USAGE = 2
EXIT_BUSY = 3
EXIT_DRIFT = 4
EXIT_TRAINING = 5
EXIT_EVALUATION = 6
EXIT_REGISTRATION = 7
EXIT_PROMOTION = 8
EXIT_INTERNAL = 70
EXIT_CODES: dict[int, str] = {
    EXIT_OK: "done: trained (and maybe promoted) a version, or nothing to do (no drift, no "
    "new data)",
    EXIT_INPUT: "bad input or not allowed: unknown model or dataset, a model without a "
    "recorded training, a bad budget, a missing right",
    EXIT_USAGE: "bad command line (unknown option, missing value)",
    EXIT_BUSY: "another retrain of the same model is running; nothing was done",
    EXIT_DRIFT: "the drift check failed",
    EXIT_TRAINING: "training failed (bad data for the recorded configuration, no trial "
    "finished, LightGBM error)",
    EXIT_EVALUATION: "scoring the new model or the champion on the holdout failed",
    EXIT_REGISTRATION: "registering the new version failed; nothing was registered",
    EXIT_PROMOTION: "the version was registered, but the auto-promotion policy could not "
    "approve it or move the champion alias",
    EXIT_INTERNAL: "internal error (a bug; POND_DEBUG=1 shows the traceback)",
}
# What each failure stage is called and exits with.
_STAGES: dict[str, int] = {
    "input": EXIT_INPUT,
    "drift": EXIT_DRIFT,
    "training": EXIT_TRAINING,
    "evaluation": EXIT_EVALUATION,
    "registration": EXIT_REGISTRATION,
    "promotion": EXIT_PROMOTION,
    "internal": EXIT_INTERNAL,
}
FAILURE_CONDITION = "retrain_failed"
DEFAULT_BUDGET_S = 60.0
HOLDOUT_FRACTION = 0.2
RUN_TAG = "retrain_run"
PARENT_TAG = "retrained_from"
N_BOOT = 1000


class RetrainFailed(PondError):
    """A retrain run failed at one stage; `exit_code` says which, `result` holds the record."""

    code = "retrain_failed"

    def __init__(self, message: str, *, stage: str, result: RetrainResult | None = None) -> None:
        super().__init__(message)
        self.stage = stage
        self.exit_code = _STAGES[stage]
        self.result = result


class RetrainBusy(Busy):
    """Another retrain of the same model holds its lock."""

    exit_code = EXIT_BUSY

    def __init__(self, message: str, result: RetrainResult | None = None) -> None:
        super().__init__(message)
        self.result = result


# --- the auto-promotion policy --------------------------------------------------------------------


@dataclass(frozen=True)
class PromotionPolicy:
    """When a retrained version is approved and made champion without a reviewer.

    Attributes:
        enabled: off by default; a model without a policy always waits for a reviewer.
        metric: the metric compared (None: the model's training metric).
        min_improvement: how much better than the champion the challenger must score on the
            same holdout, in the metric's units (higher for accuracy, lower for rmse).
    """

    model: str
    enabled: bool
    metric: str | None
    min_improvement: float
    updated_by: str
    updated_at: datetime

    def describe(self) -> str:
        if not self.enabled:
            return "off: every retrained version waits for a reviewer"
        what = self.metric or "the training metric"
        return (
            f"on: approve and make champion when {what} beats the champion by at least "
            f"{self.min_improvement:g} on the same holdout"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "enabled": self.enabled,
            "metric": self.metric,
            "min_improvement": self.min_improvement,
            "updated_by": self.updated_by,
            "updated_at": self.updated_at.isoformat(),
            "describe": self.describe(),
        }


def _policy(row: Mapping[str, Any]) -> PromotionPolicy:
    return PromotionPolicy(
        model=row["model_name"],
        enabled=row["enabled"],
        metric=row["metric"],
        min_improvement=float(row["min_improvement"]),
        updated_by=row["updated_by"],
        updated_at=row["updated_at"],
    )


def set_promotion_policy(
    ws: Workspace,
    model: str,
    *,
    actor: User,
    enabled: bool,
    min_improvement: float = 0.0,
    metric: str | None = None,
) -> PromotionPolicy:
    """Set (or replace) a model's auto-promotion policy.

    Args:
        model: the registered model's name.
        enabled: whether the policy may approve and promote at all.
        min_improvement: the margin, >= 0, in the metric's units.
        metric: a metric of the model's task (None: its training metric).

    Returns:
        The stored policy.

    Raises:
        PermissionDenied: the actor is not an admin. NotFound: no such model.
        InvalidInput: a negative or non-finite margin, or a metric that does not fit the task.
    """
    require(actor, "manage_promotion")
    detail = registry.get_model(ws, model)
    if (
        isinstance(min_improvement, bool)
        or not isinstance(min_improvement, int | float)
        or not math.isfinite(min_improvement)
        or min_improvement < 0
    ):
        raise InvalidInput(
            "The 'min_improvement' parameter of set_promotion_policy must be a number >= 0 "
            f"(the margin in the metric's units). Got {min_improvement!r} instead."
        )
    if metric:
        task = next((v.task for v in detail.versions if v.task in metric_registry.TASKS), None)
        if task is None:
            raise InvalidInput(
                f"model '{model}' has no tabular version, so it has no metric "
                "to compare; leave the metric out"
            )
        metric = metric_registry.get_metric(metric, task).name
    row = {
        "model_name": model,
        "enabled": bool(enabled),
        "metric": metric or None,
        "min_improvement": float(min_improvement),
        "updated_by": actor.name,
    }

    def write() -> dict[str, Any] | None:
        with store.transaction(ws) as con:
            rows.put_policy(con, row)
            store.append_audit(
                con,
                actor=actor.name,
                action="promotion_policy_set",
                entity_type="model",
                entity_id=model,
                to_state="enabled" if enabled else "disabled",
                details={"metric": row["metric"], "min_improvement": row["min_improvement"]},
            )
            return rows.get_policy(con, model)

    stored = store.retry_on_conflict(write)
    assert stored is not None
    return _policy(stored)


def get_promotion_policy(ws: Workspace, model: str) -> PromotionPolicy | None:
    """A model's auto-promotion policy, or None (which means off)."""
    with store.read(ws) as con:
        found = rows.get_policy(con, model)
    return None if found is None else _policy(found)


def list_promotion_policies(ws: Workspace) -> list[PromotionPolicy]:
    with store.read(ws) as con:
        return [_policy(r) for r in rows.list_policies(con)]


# --- what a run returns -------------------------------------------------------------------------


@dataclass(frozen=True)
class RetrainResult:
    """What one retrain run did; `to_dict()` is the one summary object `--json` prints.

    Attributes:
        outcome: skipped, trained, promoted, busy or failed.
        summary: one line in words.
        parent_version: the version retrained (the champion, else the newest approved).
        version: the new version, when one was registered.
        drift: the drift check (report id, drifted share, threshold, verdict) when run.
        comparison: challenger and champion scored on the same new holdout.
        promotion: the policy's decision.
    """

    run_id: int | None
    model: str
    outcome: str
    exit_code: int
    summary: str
    dataset: str | None = None
    parent_version: int | None = None
    champion_version: int | None = None
    version: int | None = None
    drift: dict[str, Any] | None = None
    training: dict[str, Any] | None = None
    comparison: dict[str, Any] | None = None
    promotion: dict[str, Any] | None = None
    stage: str | None = None
    warnings: tuple[str, ...] = ()
    seconds: float = 0.0
    alerts: tuple[int, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "model": self.model,
            "outcome": self.outcome,
            "exit_code": self.exit_code,
            "summary": self.summary,
            "dataset": self.dataset,
            "parent_version": self.parent_version,
            "champion_version": self.champion_version,
            "version": self.version,
            "drift": self.drift,
            "training": self.training,
            "comparison": self.comparison,
            "promotion": self.promotion,
            "stage": self.stage,
            "warnings": list(self.warnings),
            "seconds": round(self.seconds, 3),
            "alerts": list(self.alerts),
        }


# --- helpers ------------------------------------------------------------------------------------


def _parent(detail: registry.ModelDetail) -> registry.ModelVersion:
    """The version a retrain starts from: the champion, else the newest approved, else the
    newest that is not archived — always one trained by Pond's AutoML."""
    name = detail.model.name
    tabular = [
        v
        for v in detail.versions
        if v.flavor == "lightgbm" and (v.lineage.get("training_config") or {}).get("target")
    ]
    champion = detail.model.aliases.get(registry.DEFAULT_ALIAS)
    for v in tabular:
        if v.version == champion:
            return v
    for wanted in (registry.VersionStatus.APPROVED, None):
        for v in tabular:
            if v.status is not registry.VersionStatus.ARCHIVED and (
                wanted is None or v.status is wanted
            ):
                return v
    raise InvalidInput(
        f"model '{name}' has no version trained by Pond's AutoML with a recorded training "
        "configuration, so there is nothing to rerun; train one with `pond train --register "
        f"{name}` first"
    )


def _check_numbers(time_budget: float | None, n_trials: int | None) -> None:
    if time_budget is not None and (
        isinstance(time_budget, bool)
        or not isinstance(time_budget, int | float)
        or not math.isfinite(time_budget)
        or time_budget <= 0
    ):
        raise InvalidInput(
            f"The 'budget' parameter of retrain must be a number of seconds > 0. "
            f"Got {time_budget!r} instead."
        )
    if n_trials is not None and (
        isinstance(n_trials, bool) or not isinstance(n_trials, int) or n_trials < 1
    ):
        raise InvalidInput(
            f"The 'n_trials' parameter of retrain must be an int >= 1. Got {n_trials!r} instead."
        )


def warm_start_point(
    params: Mapping[str, Any], space: Mapping[str, Mapping[str, Any]] | None
) -> dict[str, Any]:
    """The parent's best parameters, kept to the search space (clipped into its ranges)."""
    tuned = {k: v for k, v in params.items() if k != "num_boost_round"}
    if space is None:
        return tuned
    point: dict[str, Any] = {}
    for name, spec in space.items():
        if name not in tuned or tuned[name] is None:
            continue
        value = tuned[name]
        if spec["type"] == "categorical":
            if value in spec["choices"]:
                point[name] = value
            continue
        value = min(max(float(value), float(spec["low"])), float(spec["high"]))
        point[name] = int(round(value)) if spec["type"] == "int" else value
    return point


def holdout_split(
    frame: pd.DataFrame, target: str, task: str | None, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split off the holdout both models are scored on: a seeded 20% of the labelled rows,
    stratified by class for classification when every class has enough rows."""
    from sklearn.model_selection import train_test_split

    labelled = np.flatnonzero(frame[target].notna().to_numpy())
    if len(labelled) < 10:
        raise InvalidInput(
            f"the dataset has {len(labelled)} rows with a value in {target!r}; "
            "a retrain needs more to train and keep a holdout"
        )
    strata = None
    if task != metric_registry.REGRESSION:
        keys = frame[target].iloc[labelled].astype(str)
        if keys.value_counts().min() >= 2:
            strata = keys.to_numpy()
    _, held = train_test_split(
        labelled, test_size=HOLDOUT_FRACTION, random_state=seed, stratify=strata
    )
    mask = np.zeros(len(frame), dtype=bool)
    mask[held] = True
    return (frame.iloc[~mask].reset_index(drop=True), frame.iloc[mask].reset_index(drop=True))


def _fire_failure_alert(
    ws: Workspace,
    model: str,
    version: int | None,
    message: str,
    details: dict[str, Any],
    actor: User,
) -> list[int]:
    """Raise a `retrain_failed` alert through drift monitoring's alerts and webhook outbox."""
    from core import drift

    firing = drift._Firing(model, version, FAILURE_CONDITION, message, details)
    policy = drift.get_policy(ws, model)

    def write() -> tuple[list[int], list[Any], list[Any]]:
        with store.transaction(ws) as con:
            return drift._fire(con, [firing], None, actor, policy)

    ids, own, registry_hooks = store.retry_on_conflict(write)
    drift._dispatch(ws, own, registry_hooks)
    return ids


def _version_of_run(ws: Workspace, model: str, run_id: int) -> registry.ModelVersion | None:
    try:
        detail = registry.get_model(ws, model)
    except NotFound:
        return None
    return next((v for v in detail.versions if v.tags.get(RUN_TAG) == str(run_id)), None)


def recover_run(ws: Workspace, run: JobRun, *, exit_code: int | None = None) -> bool:
    """Settle the record of a retrain whose process died.

    The registry commits a version whole or not at all, so the dead run either registered
    its version (found by the run's tag, and recorded as trained) or left nothing behind.
    """
    version = _version_of_run(ws, run.model, run.id) if run.model else None
    if version is None:
        return schedules.settle_crashed(ws, run, actor=auth.SYSTEM, exit_code=exit_code)
    promoted = registry.DEFAULT_ALIAS in version.aliases and version.reviewed_by == POLICY.name
    return schedules.finish_run(
        ws,
        run.id,
        outcome=Outcome.PROMOTED if promoted else Outcome.TRAINED,
        exit_code=exit_code if exit_code is not None else -9,
        actor=auth.SYSTEM,
        summary=(
            f"crashed after registering version {version.version} (whole, "
            f"{version.status.value}); the record was settled by a later run"
        ),
        details=run.details,
        model_version=version.version,
        log=schedules.saved_log(ws, run.id),
    )


def _recover_dead_runs(ws: Workspace, model: str, keep: int | None, log: RunLog | None) -> None:
    for run in schedules.dead_runs(ws, model=model):
        if run.id == keep or run.kind != schedules.KIND_RETRAIN:
            continue
        if recover_run(ws, run) and log is not None:
            log.warning(
                f"run #{run.id} (pid {run.pid}) had died without finishing; its "
                "record is settled as crashed"
            )


# --- retrain ------------------------------------------------------------------------------------


class _Failure(Exception):
    def __init__(self, stage: str, message: str) -> None:
        super().__init__(message)
        self.stage = stage
        self.message = message


def retrain(
    ws: Workspace,
    model: str,
    *,
    actor: User,
    dataset: str | None = None,
    only_if_drift: bool = False,
    time_budget: float | None = None,
    n_trials: int | None = None,
    drift_share: float | None = None,
    run_id: int | None = None,
    echo: schedules.Echo | None = None,
    n_jobs: int | None = None,
) -> RetrainResult:
    """Retrain a model on new data, compare it with the champion, and register it for review.

    Args:
        model: the registered model's name.
        actor: who runs it (analyst or admin: it trains, registers and requests approval).
        dataset: "NAME" or "NAME:VERSION" to train on (default: the newest version of the
            dataset the parent version was trained on).
        only_if_drift: first compare that data with the parent's training data; stop (skipped)
            when there is no dataset drift or no new data.
        time_budget: training seconds (default: the recorded budget, else 60).
        n_trials: trial cap (default: the recorded one).
        drift_share: dataset drift when at least this share of columns drifted (default:
            the drift report's 0.5).
        run_id: settle this run record (one a scheduler started) instead of a new one.
        echo: called with each log line (the CLI prints them to stderr).
        n_jobs: LightGBM threads.

    Returns:
        What the run did (skipped, trained or promoted), as recorded.

    Raises:
        PermissionDenied / NotFound / InvalidInput: before anything ran (exit code 1).
        RetrainBusy: another retrain of the model is running (exit code 3).
        RetrainFailed: a later stage failed; its `exit_code` names the stage, its run is
            recorded as failed and an alert was raised.
    """
    require(actor, "train")
    require(actor, "register")
    require(actor, "request_approval")
    _check_numbers(time_budget, n_trials)
    if drift_share is not None and (
        isinstance(drift_share, bool)
        or not isinstance(drift_share, int | float)
        or not 0 < drift_share <= 1
    ):
        raise InvalidInput(
            f"The 'drift_share' parameter of retrain must be a number in (0, 1]. "
            f"Got {drift_share!r} instead."
        )
    name, rest = registry.parse_ref(model)
    if rest is not None:
        raise InvalidInput(
            f"name the model without a version or alias ({name!r}, not "
            f"{model!r}); retrain starts from its champion"
        )
    detail = registry.get_model(ws, name)
    _parent(detail)  # refuse a model with nothing to rerun before taking the lock
    if dataset is not None:
        datasets.resolve(ws, dataset)
    if run_id is not None:
        schedules.get_run(ws, run_id)
    command = (
        ["retrain", "--model", name]
        + (["--dataset", dataset] if dataset else [])
        + (["--only-if-drift"] if only_if_drift else [])
    )
    try:
        with schedules.exclusive_lock(ws, f"retrain-{name}", f"a retrain of model '{name}'"):
            return _locked_retrain(
                ws,
                name,
                actor=actor,
                dataset=dataset,
                only_if_drift=only_if_drift,
                time_budget=time_budget,
                n_trials=n_trials,
                drift_share=drift_share,
                run_id=run_id,
                echo=echo,
                n_jobs=n_jobs,
                command=command,
            )
    except Busy as exc:
        if isinstance(exc, RetrainBusy):
            raise
        if run_id is None:
            run_id = schedules.start_run(
                ws, kind=schedules.KIND_RETRAIN, command=command, actor=actor, model=name
            )
        else:
            schedules.adopt_run(ws, run_id, kind=schedules.KIND_RETRAIN, model=name)
        line = f"busy: {exc}"
        if echo is not None:
            echo(line)
        schedules.finish_run(
            ws,
            run_id,
            outcome=Outcome.BUSY,
            exit_code=EXIT_BUSY,
            summary=line,
            actor=actor,
            log=line,
        )
        result = RetrainResult(
            run_id=run_id, model=name, outcome=Outcome.BUSY.value, exit_code=EXIT_BUSY, summary=line
        )
        raise RetrainBusy(str(exc), result) from None


def _locked_retrain(
    ws: Workspace,
    name: str,
    *,
    actor: User,
    dataset: str | None,
    only_if_drift: bool,
    time_budget: float | None,
    n_trials: int | None,
    drift_share: float | None,
    run_id: int | None,
    echo: schedules.Echo | None,
    n_jobs: int | None,
    command: list[str],
) -> RetrainResult:
    started = time.monotonic()
    _recover_dead_runs(ws, name, run_id, None)
    if run_id is None:
        run_id = schedules.start_run(
            ws, kind=schedules.KIND_RETRAIN, command=command, actor=actor, model=name
        )
    else:
        schedules.adopt_run(ws, run_id, kind=schedules.KIND_RETRAIN, model=name)
    log = RunLog(schedules.log_path(ws, run_id), f"retrain {name}", echo)
    state: dict[str, Any] = {"model": name, "run_id": run_id}
    try:
        log.info(f"run #{run_id} started by {actor.name}: pond {' '.join(command)}")
        result = _work(
            ws,
            name,
            actor=actor,
            dataset=dataset,
            only_if_drift=only_if_drift,
            time_budget=time_budget,
            n_trials=n_trials,
            drift_share=drift_share,
            n_jobs=n_jobs,
            log=log,
            state=state,
        )
        result = replace(result, seconds=time.monotonic() - started)
        log.info(f"run #{run_id} finished: {result.summary}")
        schedules.finish_run(
            ws,
            run_id,
            outcome=result.outcome,
            exit_code=EXIT_OK,
            summary=result.summary,
            actor=actor,
            details=result.to_dict(),
            model_version=result.version,
            log=log.text(),
        )
        return result
    except BaseException as exc:
        if isinstance(exc, _Failure):
            stage, message = exc.stage, exc.message
        elif isinstance(exc, KeyboardInterrupt):
            stage, message = "internal", "interrupted"
        elif isinstance(exc, PondError):
            stage, message = "input", str(exc)
        elif isinstance(exc, Exception):
            stage, message = "internal", f"internal error: {type(exc).__name__}: {exc}"
        else:
            raise
        summary = f"failed at {stage}: {message}"
        log.error(summary)
        result = RetrainResult(
            run_id=run_id,
            model=name,
            outcome=Outcome.FAILED.value,
            exit_code=_STAGES[stage],
            summary=summary,
            stage=stage,
            dataset=state.get("dataset"),
            parent_version=state.get("parent_version"),
            champion_version=state.get("champion_version"),
            version=state.get("version"),
            drift=state.get("drift"),
            training=state.get("training"),
            comparison=state.get("comparison"),
            seconds=time.monotonic() - started,
        )
        alerts: list[int] = []
        try:
            alerts = _fire_failure_alert(
                ws,
                name,
                state.get("parent_version"),
                f"retrain run #{run_id} of {name} {summary}",
                {"run_id": run_id, "stage": stage, "exit_code": _STAGES[stage], "error": message},
                actor,
            )
            log.info(f"alert #{alerts[0]} raised ({FAILURE_CONDITION})")
        except Exception as alert_exc:  # noqa: BLE001 - the run's own failure matters more
            log.error(f"the failure alert could not be raised: {alert_exc}")
        result = replace(result, alerts=tuple(alerts))
        schedules.finish_run(
            ws,
            run_id,
            outcome=Outcome.FAILED,
            exit_code=result.exit_code,
            summary=summary,
            actor=actor,
            details=result.to_dict(),
            model_version=result.version,
            log=log.text(),
        )
        if isinstance(exc, KeyboardInterrupt):
            raise
        raise RetrainFailed(summary, stage=stage, result=result) from exc
    finally:
        log.close()


def _work(
    ws: Workspace,
    name: str,
    *,
    actor: User,
    dataset: str | None,
    only_if_drift: bool,
    time_budget: float | None,
    n_trials: int | None,
    drift_share: float | None,
    n_jobs: int | None,
    log: RunLog,
    state: dict[str, Any],
) -> RetrainResult:
    from core import automl, drift
    from core.model_contract import load_model

    run_id = state["run_id"]
    detail = registry.get_model(ws, name)
    parent = _parent(detail)
    champion_number = detail.model.aliases.get(registry.DEFAULT_ALIAS)
    champion = next((v for v in detail.versions if v.version == champion_number), None)
    state["parent_version"] = parent.version
    state["champion_version"] = champion_number
    trained_on = parent.dataset or {}
    config = dict(parent.lineage.get("training_config") or {})
    view = parent.lineage.get("feature_view")
    if view:
        # Rerunning on the raw source would quietly train a model without the view's
        # features (and serve it without its steps): refuse rather than drift apart.
        raise InvalidInput(
            f"model {parent.ref} was trained on feature view {view.get('name')}:"
            f"{view.get('version')}, which retraining does not rebuild yet; save the view "
            "over the new data (`pond features create ... --source NAME`) and train on it "
            f"with `pond train --dataset fv:{view.get('name')} --register {name}`"
        )
    if dataset is not None:
        dv = datasets.resolve(ws, dataset)
    elif trained_on.get("name"):
        dv = datasets.get_version(ws, trained_on["name"])
    else:
        raise InvalidInput(
            f"model {parent.ref} records no training dataset; name the data to "
            "retrain on with --dataset NAME[:VERSION]"
        )
    state["dataset"] = dv.ref
    log.info(
        f"parent {parent.ref} ({parent.status.value}"
        + (", champion" if parent.version == champion_number else "")
        + f"), trained on {trained_on.get('name')}:{trained_on.get('version')}; "
        f"new data {dv.ref} ({dv.row_count} rows)"
    )
    base = {
        "run_id": run_id,
        "model": name,
        "dataset": dv.ref,
        "parent_version": parent.version,
        "champion_version": champion_number,
    }

    # 1. Drift: only retrain when the new data moved away from what the parent learned.
    if only_if_drift:
        if not trained_on.get("name"):
            raise InvalidInput(
                f"model {parent.ref} records no training dataset, so there is "
                "nothing to check drift against; leave out --only-if-drift"
            )
        if (dv.name, dv.version) == (trained_on["name"], trained_on.get("version")):
            summary = f"skipped: no new data; {dv.ref} is the version {parent.ref} was trained on"
            return RetrainResult(
                outcome=Outcome.SKIPPED.value, exit_code=EXIT_OK, summary=summary, **base
            )
        waiting = next(
            (
                v
                for v in detail.versions
                if v.tags.get(PARENT_TAG) == parent.ref
                and (v.dataset or {}).get("name") == dv.name
                and (v.dataset or {}).get("version") == dv.version
                and v.status
                in (registry.VersionStatus.REGISTERED, registry.VersionStatus.PENDING_REVIEW)
            ),
            None,
        )
        if waiting is not None:
            summary = (
                f"skipped: {waiting.ref}, retrained from {parent.ref} on {dv.ref}, is "
                "already waiting for review"
            )
            return RetrainResult(
                outcome=Outcome.SKIPPED.value, exit_code=EXIT_OK, summary=summary, **base
            )
        reference = f"{trained_on['name']}:{trained_on['version']}"
        log.info(f"checking drift: {reference} (training data of {parent.ref}) vs {dv.ref}")
        try:
            kwargs = {} if drift_share is None else {"drift_share": float(drift_share)}
            report = drift.drift_report(
                ws, model=parent.ref, reference=reference, current=dv.ref, actor=actor, **kwargs
            )
        except PondError as exc:
            raise _Failure("drift", str(exc)) from exc
        drifted = [c.column for c in report.columns if c.drifted]
        state["drift"] = {
            "report_id": report.id,
            "reference": reference,
            "current": dv.ref,
            "columns_tested": len(report.columns),
            "drifted_columns": drifted,
            "drifted_share": report.drifted_share,
            "threshold": report.drift_share_threshold,
            "dataset_drift": report.dataset_drift,
        }
        words = (
            f"{len(drifted)} of {len(report.columns)} columns drifted "
            f"(share {report.drifted_share:.2f}, threshold "
            f"{report.drift_share_threshold:.2f}; drift report #{report.id})"
        )
        if not report.dataset_drift:
            return RetrainResult(
                outcome=Outcome.SKIPPED.value,
                exit_code=EXIT_OK,
                summary=f"skipped: no drift in {dv.ref}: {words}",
                drift=state["drift"],
                **base,
            )
        log.info(f"drift found: {words}")

    # 2. Train the recorded configuration on the new data, warm-started from the parent.
    target = config["target"]
    if target not in dv.column_names:
        raise _Failure(
            "training",
            f"dataset {dv.ref} has no target column {target!r}, which "
            f"{parent.ref} predicts; pick a dataset with it (--dataset)",
        )
    budget = time_budget or config.get("time_budget") or DEFAULT_BUDGET_S
    trials = n_trials if n_trials is not None else config.get("n_trials")
    seed = int(config.get("seed") or 0)
    task = config.get("task") or "auto"
    space = parent.lineage.get("search_space") or None
    warm = warm_start_point(parent.params, space)
    study = automl.new_study_name(dv.name, target)
    try:
        frame = datasets.load_frame(ws, dv)
        dev, holdout = holdout_split(frame, target, task, seed)
        del frame
        log.info(
            f"training on {len(dev)} rows of {dv.ref} (holdout {len(holdout)} rows): "
            f"target {target!r}, task {task}, metric {config.get('metric') or 'default'}, "
            f"budget {budget:g}s"
            + (f", {trials} trials" if trials else "")
            + f", warm start from {parent.ref}'s best parameters"
        )
        result = automl.train(
            dev,
            target,
            task=task,
            metric=config.get("metric"),
            exclude=[c for c in config.get("exclude") or () if c in dv.column_names],
            time_budget=float(budget),
            n_trials=trials,
            seed=seed,
            folds=config.get("folds"),
            storage=automl.study_storage_path(ws, study),
            study_name=study,
            holdout=holdout,
            space=space,
            warm_start=warm or None,
            n_jobs=n_jobs,
            ensemble=bool(config.get("ensemble", True)),
        )
    except PondError as exc:
        raise _Failure("training", str(exc)) from exc
    lineage_dataset = {"name": dv.name, "version": dv.version, "content_sha256": dv.content_sha256}
    training_config = dict(
        result.training_config,
        dataset=dv.ref,
        retrain_of=parent.ref,
        holdout={"rows": len(holdout), "fraction": HOLDOUT_FRACTION, "seed": seed, "from": dv.ref},
    )
    result = replace(result, dataset=lineage_dataset, training_config=training_config)
    state["training"] = {
        "study": study,
        "metric": result.metric,
        "higher_is_better": result.higher_is_better,
        "cv_score": result.cv_score,
        "holdout_score": result.holdout_score,
        "trials_completed": result.trials_completed,
        "trials_pruned": result.trials_pruned,
        "seconds": round(result.elapsed_s, 3),
        "warm_start": warm,
        "budget_s": budget,
    }
    log.info(
        f"training finished: {result.trials_completed} trials, holdout {result.metric} "
        f"{result.holdout_score:.4g} (CV {result.cv_score:.4g})"
    )

    ws.tmp_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="retrain-", dir=ws.tmp_dir) as tmp:
        automl.save_run(result, tmp)

        # 3. Score the challenger and the champion on the same new holdout rows.
        comparison: dict[str, Any] | None = None
        warnings: list[str] = []
        against = champion or parent
        try:
            challenger_model = load_model(
                {n: Path(tmp) / n for n in ("model.txt", "contract.json")}
            )
            comparison, notes = _compare(ws, against, challenger_model, holdout, result, dv, seed)
            warnings += notes
        except PondError as exc:
            raise _Failure("evaluation", str(exc)) from exc
        state["comparison"] = comparison
        if comparison is not None:
            log.info(f"holdout comparison: {comparison['verdict']}")
        else:
            log.warning(warnings[-1])

        # 4. Register the new version, pending review, with its parent in the lineage.
        comment = _review_comment(parent, dv, result, comparison, state.get("drift"))
        log.info(f"registering the new version of {name} (pending review)")
        try:
            version = automl.register_run(
                ws,
                tmp,
                name,
                actor=actor,
                comment=comment,
                parent_version=parent.version,
                tags={RUN_TAG: str(run_id), PARENT_TAG: parent.ref},
            )
        except PondError as exc:
            raise _Failure("registration", str(exc)) from exc
    state["version"] = version.version
    log.info(f"registered {version.ref}, {version.status.value}")

    # 5. The auto-promotion policy: approve and crown a clear winner, else wait for review.
    promotion = _promotion_decision(get_promotion_policy(ws, name), comparison, champion)
    outcome = Outcome.TRAINED
    if promotion["promote"]:
        log.info(f"auto-promotion policy: {promotion['reason']}")
        try:
            registry.approve(
                ws,
                name,
                version.version,
                actor=POLICY,
                comment=f"auto-promotion policy: {promotion['reason']}",
            )
            registry.set_alias(
                ws,
                name,
                registry.DEFAULT_ALIAS,
                version.version,
                actor=POLICY,
                comment=f"auto-promotion policy: {promotion['reason']}",
            )
        except PondError as exc:
            raise _Failure(
                "promotion",
                f"{version.ref} was registered, but the policy could not promote it: {exc}",
            ) from exc
        outcome = Outcome.PROMOTED
        log.info(f"{version.ref} approved by policy and now holds the champion alias")
    else:
        log.info(f"{version.ref} waits for a reviewer: {promotion['reason']}")
    words = f"trained version {version.version} on {dv.ref}" + (
        f" ({comparison['metric']} {_num(comparison['challenger_score'])} vs "
        f"{comparison['baseline']} {_num(comparison['baseline_score'])} on "
        f"{comparison['rows']} holdout rows)"
        if comparison
        else ""
    )
    summary = (
        f"{words}; promoted to champion by policy"
        if outcome is Outcome.PROMOTED
        else f"{words}; waiting for review"
    )
    return RetrainResult(
        outcome=outcome.value,
        exit_code=EXIT_OK,
        summary=summary,
        version=version.version,
        drift=state.get("drift"),
        training=state["training"],
        comparison=comparison,
        promotion=promotion,
        warnings=tuple(warnings),
        **base,
    )


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def _compare(
    ws: Workspace,
    against: registry.ModelVersion,
    challenger: Any,
    holdout: pd.DataFrame,
    result: Any,
    dv: datasets.DatasetVersion,
    seed: int,
) -> tuple[dict[str, Any] | None, list[str]]:
    """Both models on the same holdout rows, with a paired-bootstrap interval of the gain."""
    from core import evaluation

    spec = metric_registry.get_metric(result.metric, result.task)
    new = evaluation.score_frame(
        challenger, holdout, data_name=f"the holdout of {dv.ref}", model_name="the new version"
    )
    try:
        _, old_model = evaluation.load_version(ws, against.ref)
        old = evaluation.score_frame(
            old_model,
            holdout,
            data_name=f"the holdout of {dv.ref}",
            model_name=f"model {against.ref}",
        )
    except InvalidInput as exc:
        return None, [
            f"{against.ref} could not be scored on the new holdout, so there is no "
            f"comparison (a reviewer must decide): {exc}"
        ]
    interval = evaluation.bootstrap_difference(
        spec,
        old.y_true,
        old.output,
        new.output,
        y_true_b=new.y_true,
        n_boot=N_BOOT,
        seed=seed,
    )
    sign = 1.0 if spec.higher_is_better else -1.0

    def finite(value: float) -> float | None:
        return float(value) if math.isfinite(value) else None

    gain = finite(sign * interval.difference)
    bounds = sorted([sign * interval.low, sign * interval.high])
    low, high = finite(bounds[0]), finite(bounds[1])
    old_score, new_score = old.metrics.get(spec.name), new.metrics.get(spec.name)
    if gain is None:
        verdict = f"{spec.label} is undefined on the holdout; no verdict"
    else:
        better = "better" if gain > 0 else ("worse" if gain < 0 else "no different")
        verdict = (
            f"the new version is {better} than {against.ref} on {spec.label}: "
            f"{_num(new_score)} vs {_num(old_score)} (gain {gain:+.4g}, 95% interval "
            f"{_num(low)} to {_num(high)}, {new.rows} holdout rows of {dv.ref})"
        )
    return {
        "holdout": {
            "dataset": dv.ref,
            "dataset_sha256": dv.content_sha256,
            "fraction": HOLDOUT_FRACTION,
            "seed": seed,
            "rows": new.rows,
        },
        "rows": new.rows,
        "metric": spec.name,
        "metric_label": spec.label,
        "higher_is_better": spec.higher_is_better,
        "baseline": against.ref,
        "baseline_is_champion": registry.DEFAULT_ALIAS in against.aliases,
        "baseline_score": old_score,
        "challenger_score": new_score,
        "improvement": gain,
        "improvement_low": low,
        "improvement_high": high,
        "baseline_metrics": old.metrics,
        "challenger_metrics": new.metrics,
        "verdict": verdict,
    }, list(dict.fromkeys(old.warnings + new.warnings))


def _review_comment(
    parent: registry.ModelVersion,
    dv: datasets.DatasetVersion,
    result: Any,
    comparison: dict[str, Any] | None,
    drift: dict[str, Any] | None,
) -> str:
    why = ""
    if drift is not None:
        why = (
            f" after drift ({len(drift['drifted_columns'])} of {drift['columns_tested']} "
            f"columns, report #{drift['report_id']})"
        )
    head = f"Scheduled retrain of {parent.ref} on {dv.ref}{why}."
    if comparison is None:
        return f"{head} Holdout {result.metric} {result.holdout_score:.4g}; no comparison."
    return f"{head} {comparison['verdict'][0].upper()}{comparison['verdict'][1:]}."


def _promotion_decision(
    policy: PromotionPolicy | None,
    comparison: dict[str, Any] | None,
    champion: registry.ModelVersion | None,
) -> dict[str, Any]:
    out: dict[str, Any] = {"policy": policy.to_dict() if policy else None, "promote": False}
    if policy is None or not policy.enabled:
        out["reason"] = "no auto-promotion policy is on for this model"
        return out
    if champion is None:
        out["reason"] = "the model has no champion to beat"
        return out
    if comparison is None or not comparison["baseline_is_champion"]:
        out["reason"] = "the champion could not be scored on the same holdout"
        return out
    metric = policy.metric or comparison["metric"]
    if metric == comparison["metric"]:
        gain = comparison["improvement"]
    else:
        spec = metric_registry.METRICS[metric]
        old = comparison["baseline_metrics"].get(metric)
        new = comparison["challenger_metrics"].get(metric)
        gain = (
            None
            if old is None or new is None
            else ((new - old) if spec.higher_is_better else (old - new))
        )
    out.update(metric=metric, improvement=gain, margin=policy.min_improvement)
    if gain is None:
        out["reason"] = f"{metric} is undefined on the holdout"
    elif gain >= policy.min_improvement:
        out["promote"] = True
        out["reason"] = (
            f"{metric} beats champion {champion.ref} by {gain:+.4g} "
            f"(margin {policy.min_improvement:g}) on the same holdout"
        )
    else:
        out["reason"] = (
            f"{metric} gain over champion {champion.ref} is {gain:+.4g}, below "
            f"the margin {policy.min_improvement:g}"
        )
    return out
