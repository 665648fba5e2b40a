"""Keeping PostgreSQL in step with the bot's file until the switch: a schedule and a file sensor.

A re-run on unchanged data writes no row (the load leaves unchanged rows untouched), so both can
fire freely. The sensor looks at the file as `bot_data_file` does (its sha256, not hashed again
while size, mtime and inode stay as they were) and requests a run when that content differs from
the content of the last load that committed into its own target (the database its process loads,
without the password, and the schema), read from the instance: A → B → A gives three runs, and the
third puts A back. Loads into other databases or schemas of the same instance are no state of this
target. A rollback is the operator's decision: while the file holds the content of the load it undid,
the sensor skips (a new content of the file, or a manual run, loads it again). A request the run key
of which Dagster has seen is dropped, so the key names the content and the load it would follow (A after B's load is a key never used before); a
re-evaluation while the run is queued or running repeats its key. After a failed (or canceled)
load the same content is requested again, under a new key, once the file has been written again
(the bot rewrites it on every save; `touch` does too): never in a loop while the cause stays.

Both are off unless MIGRATION_SCHEDULE_ENABLED / MIGRATION_SENSOR_ENABLED say otherwise, read with
MIGRATION_SCHEDULE_CRON and MIGRATION_SCHEDULE_TIMEZONE when the code location loads.
"""

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import dagster as dg

from faceit_etl.cron import cron_fault
from faceit_etl.defs.checks import schema_target
from faceit_etl.defs.resources import (
    MigrationSettings,
    PostgresResource,
    SettingsError,
    known_time_zone,
    refuse_a_secret,
    strict_bool,
)
from faceit_etl.identity import look_at_file

SENSOR_INTERVAL_SECONDS = 30
SOURCE_SHA256_TAG = "faceit_etl/source_sha256"
# The sensor's look at the file (path, sha256, stat) on the run it requests: that run's observation
# of bot_data_file reuses it while the file is untouched, so new content is hashed once, not twice.
SOURCE_LOOK_TAG = "faceit_etl/source_look"
LOADS_LOOKED_AT = 100  # the last materializations of postgres_tables (every target's) searched for the target's load
# The provenance Dagster records on each materialization: per input, its data version and its event.
INPUT_DATA_VERSION = "dagster/input_data_version"
INPUT_EVENT_POINTER = "dagster/input_event_pointer"
ENDED_WITHOUT_LOAD = {dg.DagsterRunStatus.FAILURE: "failed", dg.DagsterRunStatus.CANCELED: "was canceled"}


def _running_if(variable: str) -> bool:
    """Unset or empty: off. Else true or false by the rule of every setting; any other word is refused
    when the location loads, naming the variable, never read as off."""
    raw = os.environ.get(variable, "")
    if not raw:
        return False
    refuse_a_secret(variable, raw)
    try:
        return strict_bool(raw)
    except ValueError as exc:
        raise SettingsError(f"{variable}={raw!r}: {exc}") from None


def _schedule_setting(variable: str, default: str, why_not: Callable[[str], str | None]) -> str:
    """Unset or empty: the default. A value Dagster would refuse is refused here, naming the variable and
    why: Dagster's own error names only the schedule."""
    raw = os.environ.get(variable, "")
    if not raw:
        return default
    refuse_a_secret(variable, raw)
    fault = why_not(raw)
    if fault:
        raise SettingsError(f"{variable}={raw!r}: {fault}")
    return raw


def _why_not_a_cron(text: str) -> str | None:
    """Dagster decides (the schedule it would build with it); the words say which part to change."""
    try:
        dg.ScheduleDefinition(name="cron_probe", job_name="migrate_job", cron_schedule=text)
    except dg.DagsterInvalidDefinitionError:
        return cron_fault(text)
    return None


def _why_not_a_time_zone(name: str) -> str | None:
    return None if known_time_zone(name) else "not a known time zone"


migrate_schedule = dg.ScheduleDefinition(
    name="migrate_schedule",
    job_name="migrate_job",
    cron_schedule=_schedule_setting("MIGRATION_SCHEDULE_CRON", "0 3 * * *", _why_not_a_cron),
    execution_timezone=_schedule_setting("MIGRATION_SCHEDULE_TIMEZONE", "UTC", _why_not_a_time_zone),
    default_status=(
        dg.DefaultScheduleStatus.RUNNING if _running_if("MIGRATION_SCHEDULE_ENABLED") else dg.DefaultScheduleStatus.STOPPED
    ),
    description="Re-run the migration (daily at 03:00 by default); unchanged data writes no row.",
)


@dg.sensor(
    name="source_file_changed",
    job_name="migrate_job",
    minimum_interval_seconds=SENSOR_INTERVAL_SECONDS,
    default_status=(
        dg.DefaultSensorStatus.RUNNING if _running_if("MIGRATION_SENSOR_ENABLED") else dg.DefaultSensorStatus.STOPPED
    ),
    description=(
        "Request a migration when the bot's data file (bot_data_file) holds content, by sha256, other than "
        "that of the last successful load into this target (database and schema); after a failed load, again "
        "when the bot next writes the file. A rollback is kept until the file's content changes."
    ),
)
def source_file_changed(
    context: dg.SensorEvaluationContext, migration_settings: MigrationSettings, postgres: PostgresResource
):
    source = Path(migration_settings.source_path)
    if not source.is_file():
        return dg.SkipReason(f"{source}: no such file")
    seen = json.loads(context.cursor) if context.cursor else {}
    look, _ = look_at_file(source, seen, observed_look(context.instance, source))
    loaded = last_load(context.instance, (postgres.database_label(), migration_settings.target_schema))
    if loaded is not None and loaded.sha256 == look.sha256:
        context.update_cursor(json.dumps({**seen, **look.as_dict()}))
        if loaded.rolled_back_by:
            return dg.SkipReason(
                f"the tables were rolled back from this content by run {loaded.rolled_back_by} (run {loaded.run_id} "
                "loaded it): a new content of the file, or a manual run of migrate_job, loads it again"
            )
        return dg.SkipReason(
            f"the file holds the content run {loaded.run_id} loaded (the same sha256); this sensor looks at the "
            "file only: a change made in the database since is found by the checks or the schedule's re-run"
        )
    # A fresh cursor (first look, or a reset) starts a new series of keys, so that it does not
    # repeat the keys of the series before the reset.
    series = seen.get("series") or time.time_ns()
    target = f"{look.sha256}@{loaded.storage_id if loaded else 0}"
    attempt = 0
    asked = seen.get("request") or {}
    if asked.get("target") == target:
        key = _run_key(target, series, asked["attempt"])
        runs = context.instance.get_runs(dg.RunsFilter(tags={"dagster/run_key": key}), limit=1)
        rewritten = any(asked["look"].get(name) != value for name, value in look.as_dict().items())
        ended = runs and runs[0].status in ENDED_WITHOUT_LOAD
        if not ended or not rewritten:
            context.update_cursor(json.dumps({**seen, **look.as_dict(), "series": series}))
            if ended:
                return dg.SkipReason(
                    f"run {runs[0].run_id} {ENDED_WITHOUT_LOAD[runs[0].status]} without loading this content; it is "
                    "requested again when the file is next written (or launch migrate_job once the cause is fixed)"
                )
            return dg.SkipReason("this content is already requested and not yet loaded")
        attempt = asked["attempt"] + 1
    request = {"target": target, "attempt": attempt, "look": look.as_dict()}
    context.update_cursor(json.dumps({**look.as_dict(), "series": series, "request": request}))
    return dg.RunRequest(
        run_key=_run_key(target, series, attempt),
        tags={SOURCE_SHA256_TAG: look.sha256, SOURCE_LOOK_TAG: json.dumps({"path": str(source.resolve()), **look.as_dict()})},
    )


def observed_look(instance: dg.DagsterInstance, source: Path) -> dict | None:
    """The latest observation's look at the bot's file, if it was of this path."""
    latest = instance.fetch_observations(dg.AssetKey("bot_data_file"), limit=1).records
    if not latest:
        return None
    look = {name: value.value for name, value in latest[0].asset_observation.metadata.items()}
    return look if look.get("path") == str(source.resolve()) else None


def _run_key(target: str, series: int, attempt: int) -> str:
    return f"{target}#{series}.{attempt}"


@dataclass(frozen=True)
class Load:
    storage_id: int
    run_id: str
    sha256: str | None
    rolled_back_by: str | None = None  # the run of the latest rollback of the target since this load


def last_load(instance: dg.DagsterInstance, target: tuple[str, str]) -> Load | None:
    """The last load into `target` (database without the password, schema) that committed (a dry run is
    an observation of postgres_tables, never a materialization), with the sha256 of the file it loaded,
    followed through the inputs Dagster recorded for each step: postgres_tables ← validated_frame ←
    raw_json ← source_backup, whose data version is that sha256 (a re-execution's inputs point to the
    steps of the run it re-executes). A rollback since is named, not taken for a load: its tables are
    what the operator chose, not a content to replace."""
    rolled_back_by = None
    for record in instance.fetch_materializations(dg.AssetKey("postgres_tables"), limit=LOADS_LOOKED_AT).records:
        metadata = record.asset_materialization.metadata
        if schema_target(metadata) != target:
            continue
        if "rolled_back_run" in metadata:
            rolled_back_by = rolled_back_by or record.run_id
            continue
        tags = record.asset_materialization.tags or {}
        for upstream in ("validated_frame", "raw_json"):
            pointer = tags.get(f"{INPUT_EVENT_POINTER}/{upstream}")
            found = pointer and pointer.isdigit() and instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=dg.AssetKey(upstream), storage_ids=[int(pointer)]), limit=1
            ).records
            tags = (found[0].asset_materialization.tags or {}) if found else {}
        return Load(record.storage_id, record.run_id, tags.get(f"{INPUT_DATA_VERSION}/source_backup"), rolled_back_by)
    return None
