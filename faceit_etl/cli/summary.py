"""What a finished migration run says, gathered from its Dagster events (for the CLI and tests)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import dagster as dg

from faceit_etl.api import Check, CheckedRun
from faceit_etl.errors import place
from faceit_etl.postgres.load import LOAD_COUNTS
from faceit_etl.postgres.verdicts import BLOCKING

# A dry run's observation holds each verdict as `dry_run.<check>`: `passed` or `failed: <description>`
# (defs/assets.py writes them; not imported from there, which would load the definitions with the summary).
DRY_RUN_CHECK, DRY_RUN_FAILED = "dry_run.", "failed: "
INTERRUPTED = "DagsterExecutionInterruptedError"  # Ctrl-C (SIGINT) inside a step
CRASHED = "ChildProcessCrashException"  # a step process (max_concurrent above 1) died: killed, out of memory
# The multiprocess executor's engine event before such a failure says how the process ended.
_CRASH = re.compile(r"child process for step (\S+) (?:was terminated by signal (\d+)|unexpectedly exited with code (-?\d+))")
_EXCEPTION_NAME = re.compile(r"^[\w.]+(?:Error|Failure|Exception|Unavailable): ")
_FRAME = re.compile(r'File "([^"]+)", line (\d+)')  # a frame of a serialised error's stack


@dataclass
class RunSummary(CheckedRun):
    run_id: str
    success: bool
    input_entries: int | None = None
    accepted_entries: int | None = None
    rejected_entries: int | None = None
    dry_run: bool = False
    load: dict[str, dict[str, int]] = field(default_factory=dict)  # table -> each of LOAD_COUNTS
    reused_validation: bool = False  # the same file was judged by an earlier run
    ignored_fields: dict[str, int] = field(default_factory=dict)  # keys of entries no column takes -> entries
    ignored_top_level_keys: str | None = None  # the document's keys beside the users, or None: none
    nothing_to_compare: str | None = None  # why the load compared no row, when it did not
    checks: list[Check] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    interrupted: bool = False  # a step was stopped by Ctrl-C
    ended_steps: dict[str, int | None] = field(default_factory=dict)  # step -> exit code of its dead process (< 0: signal)


def _value(metadata: dict, key: str):
    entry = metadata.get(key)
    return getattr(entry, "value", entry)


def summarize(result: dg.ExecuteInProcessResult | dg.ExecutionResult) -> RunSummary:
    summary = RunSummary(run_id=result.run_id, success=result.success)
    # A dry run's load is an observation of postgres_tables (it materializes nothing) that says dry_run.
    dry_runs = [e for e in result.get_asset_observation_events() if "dry_run" in e.event_specific_data.asset_observation.metadata]
    for event in [*result.get_asset_materialization_events(), *dry_runs]:
        materialization = getattr(event.event_specific_data, "materialization", None) or event.event_specific_data.asset_observation
        metadata = materialization.metadata
        key = materialization.asset_key.to_user_string()
        if key == "raw_json":
            keys = _value(metadata, "ignored_top_level_keys")
            summary.ignored_top_level_keys = None if keys in (None, "none") else keys
        elif key == "validated_frame":
            summary.input_entries = _value(metadata, "input_entries")
            summary.accepted_entries = _value(metadata, "accepted_entries")
            summary.rejected_entries = _value(metadata, "rejected_entries")
            summary.reused_validation = bool(_value(metadata, "reused_earlier_outcome"))
            by_name = _value(metadata, "ignored_fields_by_name")
            summary.ignored_fields = {r.data["field"]: r.data["entries"] for r in by_name.records} if by_name else {}
        elif key == "postgres_tables":
            summary.dry_run = bool(_value(metadata, "dry_run"))
            summary.nothing_to_compare = _value(metadata, "compared") if _value(metadata, "same_as_run") else None
            for table, prefix in (("users", "users"), ("user_subscriptions", "subscriptions")):
                summary.load[table] = {n: _value(metadata, f"{prefix}_{n}") for n in LOAD_COUNTS}
            summary.checks += dry_run_verdicts(key, metadata)
    for evaluation in result.get_asset_check_evaluations():
        summary.checks.append(
            Check(
                asset=evaluation.asset_key.to_user_string(),
                name=evaluation.check_name,
                passed=evaluation.passed,
                severity=evaluation.severity.value,
                description=evaluation.description,
            )
        )
    summary.ended_steps = ended_steps(result)
    summary.errors = step_errors(result, summary.checks)
    if not summary.success and not summary.errors and not summary.ended_steps:
        summary.errors = run_errors(result)
    # A blocking verdict the dry run took failed: the real run would have failed, so the dry run fails too.
    blocked = [c for c in summary.checks if c.dry_run and not c.passed and c.severity == "ERROR"]
    if blocked:
        summary.success = False
        summary.errors += [f"check {c.asset}.{c.name} failed in the dry run: {c.description}" for c in blocked]
    summary.interrupted = any(
        event.step_failure_data.error.cls_name == INTERRUPTED for event in result.get_step_failure_events()
    )
    return summary


def dry_run_verdicts(asset: str, metadata: dict) -> list[Check]:
    """The verdicts a dry run recorded with its observation (`dry_run.<check>`), as checks marked dry_run,
    with the severity the check itself has: it reports no evaluation of the tables' checks."""
    verdicts = []
    for key in metadata:
        if not key.startswith(DRY_RUN_CHECK):
            continue
        name, said = key.removeprefix(DRY_RUN_CHECK), str(_value(metadata, key))
        passed = said == "passed"
        verdicts.append(Check(asset=asset, name=name, passed=passed, severity="ERROR" if name in BLOCKING else "WARN",
                              description=None if passed or said == DRY_RUN_FAILED.strip(' :') else said.removeprefix(DRY_RUN_FAILED),
                              dry_run=True))
    return verdicts


def ended_steps(result: dg.ExecuteInProcessResult | dg.ExecutionResult) -> dict[str, int | None]:
    """The steps whose process died (`CRASHED`), each with its exit code (negative: the signal), None when
    the executor did not say: the API says in words what that means for the target (api._process_ended)."""
    ended: dict[str, int | None] = {
        event.step_key: None for event in result.get_step_failure_events()
        if _root_error(event.step_failure_data.error).cls_name == CRASHED
    }
    for event in result.all_events:
        said = _CRASH.search(event.message or "") if event.event_type == dg.DagsterEventType.ENGINE_EVENT else None
        if said and said[1] in ended:
            ended[said[1]] = -int(said[2]) if said[2] else int(said[3])
    return ended


def step_errors(result: dg.ExecuteInProcessResult | dg.ExecutionResult, checks: list[Check]) -> list[str]:
    """Why the run failed, one line per reason: each failed step's own message (rejects over the limit
    say so in theirs), and for Dagster's generic "blocking check failed" the failed blocking checks' own
    descriptions. So a failed run always says why in its errors, not only in its checks. A step whose
    process died is left to the API, which says what became of the target (ended_steps)."""
    errors = []
    for event in result.get_step_failure_events():
        if _root_error(event.step_failure_data.error).cls_name == CRASHED:
            continue
        if event.step_failure_data.error.cls_name == "DagsterAssetCheckFailedError":
            errors += [f"check {c.asset}.{c.name} failed: {c.description or 'no description'}"
                       for c in checks if not c.passed and c.severity == "ERROR"]
        else:
            errors.append(f"{event.step_key}: {_root_message(event.step_failure_data.error)}")
    return list(dict.fromkeys(errors))


def run_errors(result: dg.ExecuteInProcessResult | dg.ExecutionResult) -> list[str]:
    """Why a run failed that no step's failure says: Dagster refused it before or between its steps (its
    executor or plan, a re-execution it cannot do). Said with its error and where it was raised, so no
    failure is ever bare."""
    errors = []
    for event in result.all_events:
        if event.event_type == dg.DagsterEventType.RUN_FAILURE:
            error = getattr(event.event_specific_data, "error", None)
            if error is None:
                errors.append(f"the run failed outside its steps: {event.message}")
            else:
                frames = [(m[1], int(m[2])) for m in map(_FRAME.search, error.stack) if m]
                said = _root_message(error).splitlines()[0]  # Dagster's advice after it is for its own io managers
                errors.append(f"the run failed outside its steps: {error.cls_name}: {said} (raised at {place(frames)})")
    return errors or [f"run {result.run_id} failed, and its events say no reason: see its page in the Dagster UI"]


def step_causes(result: dg.ExecuteInProcessResult | dg.ExecutionResult) -> list[tuple[str, str]]:
    """(exception class, message) of each failed step's innermost cause: what the caller maps to an exit code."""
    causes = []
    for event in result.get_step_failure_events():
        error = _root_error(event.step_failure_data.error)
        causes.append((error.cls_name if error is not None else "", _root_message(error)))
    return causes


def _root_error(error):
    while error is not None and error.cause is not None and error.cls_name == "DagsterExecutionStepExecutionError":
        error = error.cause
    return error


def _root_message(error) -> str:
    """The user-facing message of a step failure: the innermost cause, without Dagster's wrapping."""
    error = _root_error(error)
    if error is None:
        return "unknown error"
    if error.cls_name == INTERRUPTED:
        return "interrupted"
    message = (error.message or "").strip()
    if not message or re.fullmatch(rf"(?:\w+\.)*{re.escape(error.cls_name)}:?", message):  # no message of its own (a bare assert)
        frames = [(m[1], int(m[2])) for m in map(_FRAME.search, error.stack) if m]
        return f"{error.cls_name} without a message, raised at {place(frames)}"
    own_name = re.compile(rf"^(?:\w+\.)*{re.escape(error.cls_name)}: ")  # "pkg.AnyName: x" → "x"
    return _EXCEPTION_NAME.sub("", own_name.sub("", message, count=1), count=1)
