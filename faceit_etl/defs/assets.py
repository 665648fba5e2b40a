"""The migration's assets, each a thin call into one domain function.

source_backup → raw_json → validated_frame → mapped_users / mapped_subscriptions → postgres_tables
"""


from dataclasses import replace
from functools import partial
from pathlib import Path

import dagster as dg
import pandas as pd

from faceit_etl import backups as backup, mapping, resumption
from faceit_etl.defs.io import record_target
from faceit_etl.defs.checks import TABLE_CHECK_SPECS, TABLES, judge_tables_now, table_check_results
from faceit_etl.defs.metadata import frame_metadata, preview, rules_schema
from faceit_etl.defs.jobs import executor_max_concurrent
from faceit_etl.defs.resources import MigrationSettings, PostgresResource
from faceit_etl.identity import code_version
from faceit_etl.source import SourceData, read_source
from faceit_etl.source.pieces import PIECE_BYTES
from faceit_etl.postgres.load import LOAD_COUNTS, PROGRESS_DONE, PROGRESS_STAGE, PROGRESS_TOTAL
from faceit_etl.postgres.run import LoadFailed, LoadOptions, LoadRun, load_run
from faceit_etl.validation import ValidationOutcome, memo
from faceit_etl.validation.schemas import UNIQUE_COLUMNS, schemas

GROUP = "faceit_migration"
OWNERS = ["team:faceit-bot"]
TAGS = {"domain": "faceit-bot"}
# The package's code and the parsing libraries' versions: a change shows the assets as unsynced in the UI.
CODE_VERSION = code_version()[:16]
ABOUT_THE_BOT = {"group_name": GROUP, "owners": OWNERS, "tags": TAGS, "code_version": CODE_VERSION}  # on every asset
ABSENT_USER_IDS = "absent_user_ids"  # the first of them, sorted; the counts say how many
VERIFICATION = "verification"  # postgres_tables' metadata key: the verdicts its transaction saw before committing
VALIDATED = "validated"  # where outcomes are kept for re-runs, in the instance's storage


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
def source_backup(context: dg.AssetExecutionContext, migration_settings: MigrationSettings) -> dg.Output:
    observed = context.instance.get_latest_data_version_record(dg.AssetKey("bot_data_file"), is_source=True)
    # The run records the version it observed as the one it loaded: they must be the same bytes.
    in_this_run = observed is not None and observed.run_id == context.run.run_id
    seen = observed.asset_observation.tags.get("dagster/data_version") if in_this_run else None
    copied = backup.backup_source(
        migration_settings.source_path, migration_settings.backup_dir, context.run.run_id, observed_sha256=seen
    )
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
    description=(
        "The user entries of the backed-up file, in file order, parsed (no JSON text). A list of "
        f"users bigger than one piece ({PIECE_BYTES >> 20} MiB) is held not as its entries but as where each piece of "
        "them lies in the backup copy: validated_frame parses them piece by piece, so they never all "
        "exist at once. Reads every layout the bot ever wrote: {'users': [...]}, "
        "{'users': {'<id>': {...}}} and a bare list."
    ),
)
def raw_json(source_backup: backup.SourceSnapshot) -> dg.Output:
    source = replace(read_source(source_backup.copy, name=source_backup.original), sha256=source_backup.sha256)
    return dg.Output(
        source,
        metadata={
            "dagster/row_count": source.entry_count,
            "layout": source.layout,
            "ignored_top_level_keys": ", ".join(source.ignored_top_level_keys) or "none",
            "read_in_pieces": len(source.pieces.bounds) if source.pieces else "no: read whole",
        },
    )


@dg.asset(
    **ABOUT_THE_BOT,
    kinds={"pandas", "pandera"},
    description=(
        "Not one frame: the validation outcome. Every entry judged by the pandera schemas for users "
        "and subscriptions, after the coercions that keep meaning; it holds the accepted entries as "
        "one typed frame, the rejected ones as another, a row per entry, field and reason (also "
        "written to rejects.jsonl in the run's backup folder), and the counts: accepted + rejected "
        "= input."
    ),
)
def validated_frame(
    context: dg.AssetExecutionContext, raw_json: SourceData, migration_settings: MigrationSettings
) -> dg.Output:
    judged_before = Path(context.instance.storage_directory()) / VALIDATED
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
            "rejects": preview(outcome.rejects.drop(columns="raw"), rows=50),
            "ignored_fields": dg.MetadataValue.json(outcome.ignored_fields),
            "input_identity": outcome.input_identity,
            # Same file bytes, time zone and code as an earlier run: its outcome, not judged again.
            "reused_earlier_outcome": reused,
        },
    )


@dg.multi_asset(
    group_name=GROUP,
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
    defaults = dg.MetadataValue.json(mapped.defaults_applied)
    yield dg.Output(mapped.users, "mapped_users", metadata={**frame_metadata(mapped.users), "defaults_applied": defaults})
    yield dg.Output(
        mapped.subscriptions,
        "mapped_subscriptions",
        metadata={
            **frame_metadata(mapped.subscriptions),
            "tiers": dg.MetadataValue.json(mapped.subscriptions["tier"].value_counts().to_dict()),
            "defaults_applied": defaults,
        },
    )


@dg.multi_asset(
    outs={"postgres_tables": dg.AssetOut(**ABOUT_THE_BOT, kinds={"postgres"}, description=(
        "The bot's `users` and `user_subscriptions` tables. One transaction: under the migration's "
        "lock, snapshot the tables into the run's backup folder (not when they are exactly as an "
        "earlier load of this same file left them: nothing will change), COPY into staging, insert "
        "new rows, update changed ones, leave unchanged ones untouched. Then, still inside the "
        "transaction, every check's verdict is taken: it commits only when the blocking ones pass. "
        "Any failure leaves the target as it was. Rejects go to `migration_rejects`, the run to "
        "`migration_logs`."
    ))},
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
    selected_checks = set(context.selected_asset_check_keys)
    if TABLES not in context.selected_asset_keys:  # the checks alone: the tables as they are now
        yield from judge_tables_now(migration_settings, postgres, mapped_users, mapped_subscriptions, selected_checks)
        return
    mapped = mapping.MappedFrames(mapped_users, mapped_subscriptions, {})
    if not migration_settings.dry_run:  # a dry run changes nothing: it neither supersedes nor is resumed
        record_target(context.instance, context.run.run_id, f"{postgres.database_label()}/{migration_settings.target_schema}")
    # A resume (re-execution from failure): refused if the file changed; its tables checked in the load.
    resumes = resumption.in_load_step(context.instance, context.run, source_backup, migration_settings.backup_dir)
    options = replace(_load_options(context.run, migration_settings, postgres, source_backup), resumes=resumes)
    try:
        done = load_run(options, validated_frame, mapped, progress=partial(_progress, context), warn=context.log.warning)
    except LoadFailed as exc:
        verdicts = {VERIFICATION: _verdicts_metadata(exc.verdicts)} if exc.verdicts else {}
        raise dg.Failure(description=str(exc), metadata=verdicts, allow_retries=False) from None
    yield dg.MaterializeResult(
        metadata=_load_metadata(done, migration_settings, validated_frame, mapped_users),
        # The verdicts its transaction took before committing (or rolling back a dry run).
        check_results=table_check_results(
            done.verdicts, dry_run=migration_settings.dry_run, seen_before_commit=True, selected=selected_checks
        ),
    )


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
    context.log.debug(text)


def _verdicts_metadata(verdicts: dict) -> dg.JsonMetadataValue:
    return dg.MetadataValue.json({name: verdict.as_dict() for name, verdict in verdicts.items()})


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
        # Telegram ids of the users the file does not have: kept, or deleted by prune.
        ABSENT_USER_IDS: dg.MetadataValue.json(stats.absent_user_ids),
        "absent_user_ids_shown": f"the first {len(stats.absent_user_ids)} of {stats.absent_users}",
        **({"deleted_user_ids_file": dg.MetadataValue.path(stats.deleted_user_ids_file)}
           if stats.deleted_user_ids_file else {}),
        "rejected_entries": outcome.rejected_count,
        "created_tables": stats.created_tables,
        "truncated": stats.truncated,
        "tables_snapshot": _snapshot_metadata(done.snapshot),
        "nothing_to_compare": (
            f"the tables hold what run {stats.recognised_from_run} loaded from the same input (same fingerprint)"
            if stats.recognised_from_run
            else "no: compared row by row"
        ),
        "dagster/row_count": len(users),
        "dagster/column_schema": dg.TableSchema(columns=[
            dg.TableColumn(name, data_type, constraints=dg.TableColumnConstraints(nullable=nullable))
            for name, data_type, nullable in done.columns
        ]),
        "preview": preview(users),
        **({"migration_log_id": done.log_id} if done.log_id else {}),
        VERIFICATION: _verdicts_metadata(done.verdicts),
    }


def _snapshot_metadata(taken: dict | str):
    return dg.MetadataValue.json(taken) if isinstance(taken, dict) else taken
