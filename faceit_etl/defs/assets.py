"""The migration's assets, each a thin call into one domain function.

source_backup → raw_json → validated_frame → mapped_users / mapped_subscriptions → postgres_tables
"""


from collections.abc import Iterator
from dataclasses import replace
from functools import partial
from pathlib import Path

import dagster as dg
import pandas as pd
import psycopg

from faceit_etl import backups as backup, mapping, resumption
from faceit_etl.defs.automation import SOURCE_SHA256_TAG
from faceit_etl.defs.checks import (
    LOOKED_AT, SCHEMA_CHANGE, TABLE_CHECK_SPECS, TABLES, as_evaluation, column_schema_change_result, differing_values_table,
    earlier_of_target, judge_tables_now, planned_checks, refuse_too_many_rejects, schema_target, table_check_results,
)
from faceit_etl.defs.io import record_target
from faceit_etl.defs.jobs import executor_max_concurrent
from faceit_etl.defs.metadata import (
    RECENT_MIGRATIONS, as_people_see_it, refusal, counts_table, frame_metadata, migrations_table, preview, rejects_table, rules_schema, tables_metadata,
    without_empty,
)
from faceit_etl.defs.resources import MigrationSettings, PostgresResource, tag_run_with_target
from faceit_etl.identity import code_version, input_identity, look_at_file
from faceit_etl.launcher import LAUNCHER_TAGS
from faceit_etl.source import SourceData, read_source
from faceit_etl.source.pieces import PIECE_BYTES
from faceit_etl.postgres.load import LOAD_COUNTS, PROGRESS_DONE, PROGRESS_STAGE, PROGRESS_TOTAL
from faceit_etl.postgres.run import LoadFailed, LoadOptions, LoadRun, load_run
from faceit_etl.validation import ValidationOutcome, memo
from faceit_etl.postgres import runlog
from faceit_etl.postgres.ddl import SUBSCRIPTIONS, USERS
from faceit_etl.postgres.verdicts import DIFFERING_VALUES
from faceit_etl.validation.fields import TIERS
from faceit_etl.validation.schemas import UNIQUE_COLUMNS, schemas

GROUP = "faceit_migration"
# What Dagster 1.13's UI does, said where a person launches a migration: the asset graph's button launches the
# first job by name that holds every selected asset (__ASSET_JOB), and no definition can choose another.
FROM_MIGRATE_JOB = (
    "Start a migration from migrate_job's page (Jobs → migrate_job → Materialize all): the asset graph's own "
    "Materialize all runs Dagster's __ASSET_JOB instead, which plans these checks too, so a run stopped by "
    "rejects marks them Execution failed and a dry run Skipped, hiding the last load's verdicts. Dagster 1.13 "
    "lets no definition choose the job that button launches."
)
OWNERS = ["team:faceit-bot"]
TAGS = {"domain": "faceit-bot"}
# The package's code and the parsing libraries' versions, whole (the UI shows it as it is): a change shows
# the assets as unsynced.
CODE_VERSION = code_version()
ABOUT_THE_BOT = {"group_name": GROUP, "owners": OWNERS, "tags": TAGS, "code_version": CODE_VERSION}  # on every asset
ABSENT_USER_IDS = "absent_user_ids"  # the first of them, sorted; the counts say how many
VERIFICATION = "verification"  # postgres_tables' metadata key: the verdicts its transaction saw before committing
SOURCE_FILE_TAG = "faceit_etl/source_file"  # run tag: the bot's file a migration run backed up and loaded
DRY_RUN_CHECK = "dry_run."  # a dry run's observation: each check's verdict on the tables it rolled back
COMPARED = "compared"  # postgres_tables' metadata key: what the load compared, in words
SAME_AS_RUN = "same_as_run"  # the run whose load left the tables exactly as this input gives them, when one did
DRY_RUN_SAID = "dry run: what the load would have written; it rolled back, the tables are unchanged"  # where outcomes are kept for re-runs, in the instance's storage


@dg.asset(
    **ABOUT_THE_BOT,
    kinds={"json", "file"},
    deps=["bot_data_file"],
    description=(
        "A backup of the bot's data file, not of the tables. Taken before anything else, in a private "
        "folder (0700) per run: a copy of the file with its sha256 (every later step reads this copy, never the live file; a "
        "re-execution from failure reads the one its parent made). The tables' snapshot that "
        "`rollback_job` restores is added to the run's folder by `postgres_tables`, under its lock, "
        "just before it writes: each run, re-executions too, has its own."
    ),
)
def source_backup(
    context: dg.AssetExecutionContext, migration_settings: MigrationSettings, postgres: PostgresResource
) -> dg.Output:
    tag_run_with_target(context, migration_settings, postgres)  # first: a run stopped at any later step is listed
    observed = context.instance.get_latest_data_version_record(dg.AssetKey("bot_data_file"), is_source=True)
    # The run records the version it observed as the one it loaded: they must be the same bytes.
    in_this_run = observed is not None and observed.run_id == context.run.run_id
    seen = observed.asset_observation.tags.get("dagster/data_version") if in_this_run else None
    look = {name: value.value for name, value in observed.asset_observation.metadata.items()} if in_this_run else None
    copied = backup.backup_source(
        migration_settings.source_path, migration_settings.backup_dir, context.run.run_id, observed_sha256=seen,
        observed_look=look,
    )
    tag_run_with_file(context, copied.original, copied.sha256)
    return dg.Output(
        copied,
        data_version=dg.DataVersion(copied.sha256),  # a copy of the same bytes leaves raw_json synced
        metadata={
            "source": dg.MetadataValue.path(copied.original),
            "backup_folder": dg.MetadataValue.path(copied.folder),
            "sha256": copied.sha256,
            "size_bytes": copied.size_bytes,
        },
    )


@dg.asset(
    **ABOUT_THE_BOT,
    kinds={"json"},
    deps=["bot_data_file"],  # made from its content: unsynced as soon as it changes
    description=(
        "The user entries of the backed-up file, in file order, parsed (no JSON text). A list of "
        f"users (or users keyed by id) bigger than one piece ({PIECE_BYTES >> 20} MiB) is held not as its entries but as where each piece of "
        "them lies in the backup copy: validated_frame parses them piece by piece, so they never all "
        "exist at once. Reads every layout the bot ever wrote: {'users': [...]}, "
        "{'users': {'<id>': {...}}} and a bare list."
    ),
)
def raw_json(
    context: dg.AssetExecutionContext,
    source_backup: backup.SourceSnapshot,
    migration_settings: MigrationSettings,
    postgres: PostgresResource,
) -> dg.Output:
    tag_run_with_target(context, migration_settings, postgres)  # a subset run may start here
    source = replace(read_source(source_backup.copy, name=source_backup.original, kept_copy=True), sha256=source_backup.sha256)
    tag_run_with_file(context, source_backup.original, source_backup.sha256)
    return dg.Output(
        source,
        metadata={
            "dagster/row_count": source.entry_count,
            "layout": source.layout,
            "ignored_top_level_keys": ", ".join(source.ignored_top_level_keys) or "none",
            # How many pieces the users were parsed in, one at a time; 0: parsed whole.
            "pieces_parsed_one_at_a_time": len(source.pieces.bounds) if source.pieces else 0,
        },
    )


@dg.asset(
    **ABOUT_THE_BOT,
    kinds={"pandas", "pandera"},
    deps=["bot_data_file"],  # made from its content: unsynced as soon as it changes
    description=(
        "Not one frame: the validation outcome. Every entry judged by the pandera schemas for users "
        "and subscriptions, after the coercions that keep meaning; it holds the accepted entries as "
        "one typed frame, the rejected ones as another, a row per entry, field and reason (also "
        "written to rejects.jsonl in the run's backup folder), and the counts: accepted + rejected "
        "= input."
    ),
)
def validated_frame(
    context: dg.AssetExecutionContext, raw_json: SourceData, migration_settings: MigrationSettings,
    postgres: PostgresResource,
) -> dg.Output:
    tag_run_with_target(context, migration_settings, postgres)  # a subset run may start here, and stop on rejects
    judged_before = Path(context.instance.storage_directory()) / memo.FOLDER
    outcome, reused = memo.validate_once(raw_json, migration_settings.source_timezone, judged_before)
    if not outcome.rejects.empty:
        folder = backup.private_folder(backup.run_folder(migration_settings.backup_dir, context.run.run_id))
        backup.write_json_lines(folder / backup.REJECTS_FILE, outcome.reject_records())
    return dg.Output(
        outcome,
        data_version=dg.DataVersion(outcome.input_identity),  # same file, time zone and code: the same outcome
        metadata={
            **frame_metadata(outcome.valid),
            # The accepted entries' columns with the rules that judged them (pandera's schemas).
            "dagster/column_schema": rules_schema(*schemas(), unique=UNIQUE_COLUMNS),
            "input_entries": outcome.input_count,
            "accepted_entries": len(outcome.valid),
            "rejected_entries": outcome.rejected_count,
            **({"rejects": rejects_table(outcome.rejects)} if outcome.rejected_count else {}),
            # Keys the bot's entries hold that no column takes, with how many entries hold each.
            "ignored_fields": len(outcome.ignored_fields),
            **({"ignored_fields_by_name": counts_table("field", "entries", outcome.ignored_fields)}
               if outcome.ignored_fields else {}),
            "input_identity": outcome.input_identity,
            # Same file bytes, time zone and code as an earlier run: its outcome, not judged again.
            "reused_earlier_outcome": reused,
        },
    )


@dg.multi_asset(
    group_name=GROUP,
    deps=["bot_data_file"],  # made from its content: unsynced as soon as it changes
    outs={
        "mapped_users": dg.AssetOut(
            owners=OWNERS,
            tags=TAGS,
            code_version=CODE_VERSION,
            kinds={"pandas"},
            description="Accepted users in the layout of the bot's `users` table, with the bot's defaults.",
        ),
        "mapped_subscriptions": dg.AssetOut(
            owners=OWNERS,
            tags=TAGS,
            code_version=CODE_VERSION,
            kinds={"pandas"},
            description=(
                "One subscription per accepted user, in the layout of `user_subscriptions`; entries "
                "without one get the bot's default FREE subscription."
            ),
        ),
    },
)
def mapped_frames(validated_frame: ValidationOutcome):
    mapped = mapping.map_frames(validated_frame.valid)
    # Fields given the bot's default, per column: a number each, so each plots across runs.
    defaults = {f"defaulted_{column}": count for column, count in mapped.defaults_applied.items()}
    tiers = mapped.subscriptions["tier"].value_counts()
    yield dg.Output(mapped.users, "mapped_users", metadata={**frame_metadata(mapped.users), **defaults})
    yield dg.Output(
        mapped.subscriptions,
        "mapped_subscriptions",
        metadata={
            **frame_metadata(mapped.subscriptions, mapped.users),
            **{f"tier_{tier}": int(tiers.get(tier, 0)) for tier in TIERS},
            **defaults,
        },
    )


@dg.multi_asset(
    # Not required: a dry run records what it would have done as an observation, never a materialization,
    # so the tables never look synced with a file they do not hold; and with only its checks selected,
    # Dagster 1.13 would still expect a required output.
    outs={"postgres_tables": dg.AssetOut(**ABOUT_THE_BOT, kinds={"postgres"}, is_required=False, description=(
        "The bot's `users` and `user_subscriptions` tables. One transaction: under the migration's "
        "lock, snapshot the tables into the run's backup folder (not when they are exactly as an "
        "earlier load of this same file left them: nothing will change), COPY into staging, insert "
        "new rows, update changed ones, leave unchanged ones untouched. Then, still inside the "
        "transaction, every check's verdict is taken: it commits only when the blocking ones pass. "
        "Any failure leaves the target as it was. Rejects go to `migration_rejects`, the run to "
        "`migration_logs`. " + FROM_MIGRATE_JOB
    ))},
    deps=["bot_data_file"],  # made from its content: unsynced as soon as it changes
    check_specs=TABLE_CHECK_SPECS,
    can_subset=True,  # the checks alone re-verify the tables without loading
)
def postgres_tables(
    context: dg.AssetExecutionContext,
    migration_settings: MigrationSettings,
    postgres: PostgresResource,
    source_backup: backup.SourceSnapshot,
    validated_frame: ValidationOutcome,
    mapped_users: pd.DataFrame,
    mapped_subscriptions: pd.DataFrame,
):
    tag_run_with_target(context, migration_settings, postgres)  # before any refusal: a refused load is listed too
    why_not = _why_not_this_file(context.run, source_backup, migration_settings) or why_not_this_input(
        validated_frame, source_backup.sha256, migration_settings.source_timezone
    )
    if why_not:
        raise refusal(context, why_not)
    tag_run_with_file(context, source_backup.original, source_backup.sha256)  # a subset run names its file too
    if TABLES not in context.selected_asset_keys:  # the checks alone: the tables as they are now
        selected_checks = set(context.selected_asset_check_keys)
        yield from judge_tables_now(migration_settings, postgres, mapped_users, mapped_subscriptions, selected_checks)
        return
    refuse_too_many_rejects(context, validated_frame, migration_settings)
    mapped = mapping.MappedFrames(mapped_users, mapped_subscriptions, {})
    options = _start_load(context, migration_settings, postgres, source_backup)
    earlier = context.instance.fetch_materializations(TABLES, limit=LOOKED_AT).records  # for column_schema_change
    try:
        done = load_run(options, validated_frame, mapped, progress=partial(_progress, context), warn=context.log.warning)
    except LoadFailed as exc:
        verdicts = {VERIFICATION: _verdicts_metadata(exc.verdicts)} if exc.verdicts else {}
        cells = [c for v in (exc.verdicts or {}).values() for c in v.metadata.get(DIFFERING_VALUES, [])]
        if cells:  # a mismatch shows which cells, with both values, beside the failure
            verdicts[DIFFERING_VALUES] = differing_values_table(cells)
        raise refusal(context, str(exc), verdicts) from None
    metadata = _load_metadata(done, migration_settings, validated_frame, mapped_users) | _recent(context, migration_settings, postgres)
    yield from _report(context, done.verdicts, metadata, earlier, dry_run=migration_settings.dry_run)


def _start_load(
    context: dg.AssetExecutionContext, settings: MigrationSettings, postgres: PostgresResource, source: backup.SourceSnapshot
) -> LoadOptions:
    """The load's options; its target recorded (for resume's step values) unless a dry run, which neither
    supersedes nor is resumed. A resume (re-execution from failure) is refused if the file changed; its
    tables are checked in the load."""
    if not settings.dry_run:
        record_target(context.instance, context.run.run_id, f"{postgres.database_label()}/{settings.target_schema}")
    resumes = resumption.in_load_step(context.instance, context.run, source, settings.backup_dir)
    return replace(_load_options(context.run, settings, postgres, source), resumes=resumes)


def _dry_run_verdict(result: dg.AssetCheckResult) -> str:
    """`passed`, or `failed` with the check's description when it has one (never the word None)."""
    if result.passed:
        return "passed"
    return f"failed: {result.description}" if result.description else "failed"


def _report(
    context: dg.AssetExecutionContext, verdicts: list, metadata: dict, earlier: list[dg.EventLogRecord], *, dry_run: bool
) -> Iterator:
    """The verdicts the load's transaction took before committing: the selected checks' results; those
    migrate_job does not plan (see defs/jobs.py) as evaluations it reports, with column_schema_change.
    A dry run's verdicts are of tables it rolled back: they go with its observation (never a
    materialization), each under a name of its own, and the checks keep the verdicts of what the tables
    really hold."""
    selected_checks = set(context.selected_asset_check_keys)
    results = table_check_results(verdicts, dry_run=dry_run, seen_before_commit=True)
    if dry_run:
        would = {f"{DRY_RUN_CHECK}{r.check_name}": _dry_run_verdict(r) for r in results}
        context.log_event(dg.AssetObservation(asset_key=TABLES, description=DRY_RUN_SAID, metadata=metadata | would))
        return
    selected = [r for r in results if dg.AssetCheckKey(TABLES, r.check_name) in selected_checks]
    yield dg.MaterializeResult(metadata=metadata, check_results=selected)
    for result in results:
        if dg.AssetCheckKey(TABLES, result.check_name) not in selected_checks:
            context.log_event(as_evaluation(result))
    if SCHEMA_CHANGE not in planned_checks(context):
        target = schema_target(metadata)
        change = column_schema_change_result(earlier_of_target(earlier, target), metadata["dagster/column_schema"], target)
        context.log_event(as_evaluation(change))


def _recent(context: dg.AssetExecutionContext, settings: MigrationSettings, postgres: PostgresResource) -> dict:
    """The latest migrations, where a person choosing one for rollback_job looks: on the tables' page.
    Read after the commit: a failure to read them is a warning, never the run's failure."""
    try:
        with postgres.get_connection() as conn:
            recent = runlog.latest(conn, settings.target_schema, RECENT_MIGRATIONS)
    except psycopg.Error as exc:
        context.log.warning(f"the recent migrations could not be read: {type(exc).__name__}")
        return {}
    return {"recent_migrations": migrations_table(recent)} if recent else {}


def _why_not_this_file(run: dg.DagsterRun, source: backup.SourceSnapshot, settings: MigrationSettings) -> str | None:
    """A subset reads source_backup from an earlier run: the file this run names must hold its bytes now.
    A resume (a re-execution) refuses a changed file itself, in its own words."""
    if run.parent_run_id is not None or Path(source.folder) == backup.run_folder(settings.backup_dir, run.run_id):
        return None
    path = Path(settings.source_path).resolve()
    if (look_at_file(path)[0].sha256 if path.is_file() else None) == source.sha256:
        return None
    return (
        f"postgres_tables needs source_backup of {path} as it is now, and the last one copied other bytes "
        f"(from {source.original}, sha256 {source.sha256}): materialize all (or select source_backup "
        "and what it needs too)"
    )


def why_not_this_input(outcome: ValidationOutcome, sha256: str, timezone: str) -> str | None:
    """Why a validated_frame read from an earlier run (a subset) cannot be loaded with this source_backup,
    or None: judged from other file bytes (named first: the bytes decide every row), in another source time
    zone (other instants than this run's settings say), or by other code."""
    if outcome.input_identity == input_identity(sha256, timezone):
        return None
    if outcome.source_sha256 != sha256:
        judged = f"from other bytes (sha256 {outcome.source_sha256})" if outcome.source_sha256 else "from bytes it did not record"
        why = f"of the bytes source_backup copied (sha256 {sha256}), and the last one was judged {judged}"
    elif outcome.source_timezone != timezone:
        why = (f"judged with this run's source time zone ({timezone}), and the last one was judged with "
               f"{outcome.source_timezone or 'another'}")
    else:
        why = "judged by this code, and the last one was judged by other code"
    return f"postgres_tables needs validated_frame {why}: materialize all (or select validated_frame and what it needs too)"


def tag_run_with_file(context: dg.AssetExecutionContext, path: str | Path, sha256: str) -> None:
    """The Runs list shows and filters by tags: every run that reads the bot's file names it and its full
    sha256, whichever assets it was launched with."""
    context.instance.add_run_tags(context.run.run_id, {SOURCE_FILE_TAG: str(path), SOURCE_SHA256_TAG: sha256})


def _load_options(
    run: dg.DagsterRun, settings: MigrationSettings, postgres: PostgresResource, source_backup: backup.SourceSnapshot
) -> LoadOptions:
    folder = backup.run_folder(settings.backup_dir, run.run_id)
    return LoadOptions(
        url=postgres.url_starting_embedded_server(), schema=settings.target_schema, run_id=run.run_id,
        root_run_id=run.root_run_id or run.run_id, folder=folder,
        folder_has_manifest=Path(source_backup.folder) == folder,  # this run's source backup made the folder
        settings_summary={**settings.safe_summary(), "max_concurrent": executor_max_concurrent(run.run_config),
                          **postgres.safe_summary()},
        **settings.model_dump(include={"backup_tables", "dry_run", "truncate", "prune", "max_prune_fraction", "batch_size"}),
        launcher={tag: run.tags[tag] for tag in LAUNCHER_TAGS if tag in run.tags},
    )


def _progress(context: dg.AssetExecutionContext, stage: str, done: int, total: int) -> None:
    """Rows copied so far: a structured event a watcher reads by its metadata, and a line for people
    reading the log (Dagster's console does not print an observation's metadata)."""
    text = f"{stage}: {done}/{total} rows"
    context.log_event(
        dg.AssetObservation(
            asset_key=context.asset_key,
            description=text,
            metadata={PROGRESS_STAGE: stage, PROGRESS_DONE: done, PROGRESS_TOTAL: total},
        )
    )
    context.log.info(text)


def _verdicts_metadata(verdicts: dict) -> dg.JsonMetadataValue:
    return dg.MetadataValue.json({name: without_empty(verdict.as_dict()) for name, verdict in verdicts.items()})


def _load_metadata(done: LoadRun, settings: MigrationSettings, outcome: ValidationOutcome, users: pd.DataFrame) -> dict:
    stats = done.stats
    return {
        "database": done.database,
        "schema": settings.target_schema,
        "dry_run": settings.dry_run,  # then the counts say what would have been written
        # Flat numbers per table, so the UI plots each across runs.
        **{
            f"{prefix}_{count}": getattr(table_stats, count)
            for prefix, table_stats in (("users", stats.users), ("subscriptions", stats.subscriptions))
            for count in LOAD_COUNTS
        },
        "pruned": stats.pruned,
        # Telegram ids of the users the file does not have (kept, or deleted by prune), when there are any.
        **({ABSENT_USER_IDS: dg.MetadataValue.json(stats.absent_user_ids),
            "absent_user_ids_shown": f"the first {len(stats.absent_user_ids)} of {stats.absent_users}"}
           if stats.absent_user_ids else {}),
        **({"deleted_user_ids_file": dg.MetadataValue.path(stats.deleted_user_ids_file)}
           if stats.deleted_user_ids_file else {}),
        "rejected_entries": outcome.rejected_count,
        "created_tables": stats.created_tables,
        "truncated": stats.truncated,
        **_snapshot_metadata(done.snapshot),
        COMPARED: (
            f"the tables hold what run {stats.recognised_from_run} loaded from the same input (the same file bytes, "
            "time zone and code): no row was compared or written"
            if stats.recognised_from_run
            else "every row of the file was compared with the tables"
        ),
        **({SAME_AS_RUN: stats.recognised_from_run} if stats.recognised_from_run else {}),
        **tables_metadata(settings.target_schema, done.columns, _table_rows(done, users)),
        **({"preview": preview(as_people_see_it(users))} if len(users) else {}),
        **({"migration_log_id": done.log_id} if done.log_id else {}),
        VERIFICATION: _verdicts_metadata(done.verdicts),
    }


def _snapshot_metadata(taken: dict | str) -> dict:
    """Rows per table in the snapshot the run can be rolled back to, or why none was taken."""
    if isinstance(taken, dict):
        return {f"snapshot_{table}_rows": rows for table, rows in taken.items()}
    return {"tables_snapshot": taken}


def _table_rows(done: LoadRun, users: pd.DataFrame) -> dict[str, int]:
    """Rows per table as the load's transaction counted them (the file's and the kept ones)."""
    counted = done.verdicts.get("row_counts_match")
    metadata = counted.metadata if counted else {}
    return {table: metadata.get(f"{table}_in_database", len(users) if table == USERS else 0) for table in (USERS, SUBSCRIPTIONS)}
