"""The migration's assets, each a thin call into one domain function.

source_backup → raw_json → validated_frame → mapped_users / mapped_subscriptions → postgres_tables
"""


import contextlib
import json
from dataclasses import replace
from pathlib import Path

import dagster as dg
import pandas as pd
import psycopg

from faceit_etl import backup, mapping
from faceit_etl.postgres.database import connect, describe, redact
from faceit_etl.defs.metadata import frame_metadata, preview, rules_schema
from faceit_etl.defs.resources import MigrationSettings
from faceit_etl.identity import code_version, input_identity
from faceit_etl.source import SourceData, read_source
from faceit_etl.postgres import ddl, runlog
from faceit_etl.postgres.load import LOAD_COUNTS, LoadStats, load
from faceit_etl.postgres.snapshot import snapshot_for_load
from faceit_etl.postgres.verdicts import VerificationFailed, judge_before_commit
from faceit_etl.validation import ValidationOutcome, memo, validate_entries
from faceit_etl.validation.schemas import UNIQUE_COLUMNS, schemas

GROUP = "faceit_migration"
OWNERS = ["team:faceit-bot"]
TAGS = {"domain": "faceit-bot"}
# The package's code and the parsing libraries' versions: a change shows the assets as unsynced in the UI.
CODE_VERSION = code_version()[:16]
ABOUT_THE_BOT = {"group_name": GROUP, "owners": OWNERS, "tags": TAGS, "code_version": CODE_VERSION}  # on every asset
REJECTS_FILE = "rejects.jsonl"
ABSENT_USER_IDS = "absent_user_ids"  # the first of them, sorted; the counts say how many
DELETED_USER_IDS_FILE = "deleted_user_ids.json"  # every user prune deleted, in the run's backup folder
VERIFICATION = "verification"  # postgres_tables' metadata key: the verdicts its transaction saw before committing
VALIDATED = "validated"  # where outcomes are kept for re-runs, in the instance's storage


@dg.asset(
    **ABOUT_THE_BOT,
    kinds={"json", "file"},
    deps=["bot_data_file"],
    description=(
        "Taken before anything else, in a private folder (0700) per run: a copy of the bot's data "
        "file with its sha256 (every later step reads this copy, never the live file; a "
        "re-execution from failure reads the one its parent made). The tables' snapshot that "
        "`rollback_job` restores is added to the run's folder by `postgres_tables`, under its lock, "
        "just before it writes: each run, re-executions too, has its own."
    ),
)
def source_backup(context: dg.AssetExecutionContext, migration_settings: MigrationSettings) -> dg.Output:
    settings = migration_settings.checked()
    copied = backup.backup_source(settings.source_path, settings.backup_dir, context.run.run_id)
    observed = context.instance.get_latest_data_version_record(dg.AssetKey("bot_data_file"), is_source=True)
    if observed is not None and observed.run_id == context.run.run_id:
        if observed.asset_observation.tags.get("dagster/data_version") != copied.sha256:
            # The run records the version it observed as the one it loaded: they must be the same bytes.
            Path(copied.copy).unlink()
            raise backup.BackupError(
                f"{copied.original}: the file changed between this run's look at it and its backup (it was "
                "written to meanwhile); nothing was loaded. Run again."
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
        "The user entries of the backed-up file, in file order. Reads every layout the bot ever "
        "wrote: {'users': [...]}, {'users': {'<id>': {...}}} and a bare list."
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
        "Every entry judged by the pandera schemas for users and subscriptions, after the coercions "
        "that keep meaning. Rejected entries are listed with field and reason (and written to "
        "rejects.jsonl in the run's backup folder): accepted + rejected = input."
    ),
)
def validated_frame(
    context: dg.AssetExecutionContext, raw_json: SourceData, migration_settings: MigrationSettings
) -> dg.Output:
    settings = migration_settings.checked()
    identity = input_identity(raw_json.sha256, settings.source_timezone)
    judged_before = Path(context.instance.storage_directory()) / VALIDATED
    outcome = memo.load(judged_before, identity)
    reused = outcome is not None
    if not reused:
        outcome = replace(validate_entries(raw_json, settings.source_timezone), input_identity=identity)
        memo.store(judged_before, identity, outcome)
    if not outcome.rejects.empty:
        folder = backup.private_folder(backup.run_folder(settings.backup_dir, context.run.run_id))
        backup.write_json_lines(folder / REJECTS_FILE, outcome.reject_records())
    return dg.Output(
        outcome,
        data_version=dg.DataVersion(identity),  # same file, time zone and code: the same outcome
        metadata={
            **frame_metadata(outcome.valid),
            # The accepted entries' columns with the rules that judged them (pandera's schemas).
            "dagster/column_schema": rules_schema(*schemas(), unique=UNIQUE_COLUMNS),
            "input_entries": outcome.input_count,
            "accepted_entries": len(outcome.valid),
            "rejected_entries": outcome.rejected_count,
            "rejects": preview(outcome.rejects.drop(columns="raw"), rows=50),
            "ignored_fields": dg.MetadataValue.json(outcome.ignored_fields),
            "input_identity": identity,
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


@dg.asset(
    **ABOUT_THE_BOT,
    kinds={"postgres"},
    description=(
        "The bot's `users` and `user_subscriptions` tables. One transaction: under the migration's "
        "lock, snapshot the tables into the run's backup folder (not when they are exactly as an "
        "earlier load of this same file left them: nothing will change), COPY into staging, insert "
        "new rows, update changed ones, leave unchanged ones untouched. Then, still inside the "
        "transaction, every check's verdict is taken: it commits only when the blocking ones pass. "
        "Any failure leaves the target as it was. Rejects go to `migration_rejects`, the run to "
        "`migration_logs`."
    ),
)
def postgres_tables(
    context: dg.AssetExecutionContext,
    migration_settings: MigrationSettings,
    validated_frame: ValidationOutcome,
    mapped_users: pd.DataFrame,
    mapped_subscriptions: pd.DataFrame,
) -> dg.MaterializeResult:
    settings = migration_settings.checked()
    url = settings.connection_url()
    schema = settings.target_schema
    run_id = context.run.run_id
    folder = backup.run_folder(settings.backup_dir, run_id)
    mapped = mapping.MappedFrames(mapped_users, mapped_subscriptions, {})
    seen_in_transaction: dict = {}

    def before_log(stats: LoadStats) -> None:
        """Before the log row is written, so migration_logs names the file of pruned users."""
        if stats.deleted_user_ids and not settings.dry_run:
            backup.private_folder(folder)
            path = folder / DELETED_USER_IDS_FILE
            backup.write_private(path, json.dumps(stats.deleted_user_ids).encode())
            stats.deleted_user_ids_file = str(path)

    def before_commit(conn, stats: LoadStats) -> None:
        """Read what only the open transaction can show: the schema, and the verdicts on what it
        wrote. A failed blocking verdict raises here, so nothing is committed (a dry run fails alike)."""
        seen_in_transaction["columns"] = [
            dg.TableColumn(f"{name}.{column}", data_type, constraints=dg.TableColumnConstraints(nullable=nullable))
            for name in (ddl.USERS, ddl.SUBSCRIPTIONS)
            for column, data_type, nullable in ddl.column_types(conn, schema, name)
        ]
        verdicts = judge_before_commit(
            conn, schema, mapped_users, mapped_subscriptions, stats.kept_absent(), validated_frame.rejects["user_id"]
        )
        seen_in_transaction["verification"] = {name: v.as_dict() for name, v in verdicts.items()}

    def snapshot(conn, recognised: str | None, found: dict) -> None:
        if settings.backup_tables and not settings.dry_run:  # a dry run changes nothing to undo
            backup.ensure_manifest(folder, run_id, context.run.root_run_id or run_id)
            target = snapshot_for_load(conn, url, schema, folder, run_id, recognised, found)
            seen_in_transaction["snapshot"] = (
                {name: snap["rows"] if snap else "absent" for name, snap in target["tables"].items()}
                if recognised is None
                else f"not taken: the tables are as run {recognised} left them from this same file"
            )

    with contextlib.ExitStack() as stack:
        conn = stack.enter_context(connect(url))
        log = None
        if not settings.dry_run:  # a dry run leaves the database byte-identical: no log row either
            log_conn = stack.enter_context(connect(url, autocommit=True))
            ddl.ensure_bookkeeping_tables(log_conn, schema)
            for dead in runlog.fail_abandoned(log_conn, schema):
                context.log.warning(f"migration_logs: run {dead} had ended without finishing; marked failed")
            log = runlog.start(
                log_conn,
                schema,
                run_id=run_id,
                total_items=validated_frame.input_count,
                metadata={"settings": settings.safe_summary()},
            )
        try:
            stats = load(
                conn,
                schema,
                mapped,
                validated_frame.rejects,
                run_id,
                truncate=settings.truncate,
                prune=settings.prune,
                max_prune_fraction=settings.max_prune_fraction,
                batch_size=settings.batch_size,
                progress=lambda stage, done, total: context.log.debug(f"{stage}: {done}/{total} rows"),
                before_commit=before_commit,
                before_log=before_log,
                dry_run=settings.dry_run,
                log=log,
                input_identity=validated_frame.input_identity,
                before_write=snapshot,
            )
        except Exception as exc:
            message = redact(str(exc), url)
            if log is not None:
                with contextlib.suppress(psycopg.Error):  # a lost database: the next run marks the row failed
                    runlog.finish(log, "failed", failed_items=validated_frame.rejected_count, error_message=message)
            if isinstance(exc, VerificationFailed):
                raise dg.Failure(
                    description=message,
                    metadata={VERIFICATION: dg.MetadataValue.json({n: v.as_dict() for n, v in exc.verdicts.items()})},
                    allow_retries=False,
                ) from None
            raise dg.Failure(
                description=f"load into {describe(url)} failed, nothing was written: {message}",
                allow_retries=False,
            ) from None
    return dg.MaterializeResult(
        metadata={
            "database": describe(url),
            "schema": schema,
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
            "rejected_entries": validated_frame.rejected_count,
            "created_tables": stats.created_tables,
            "truncated": stats.truncated,
            "tables_snapshot": _snapshot_metadata(seen_in_transaction.get("snapshot", "skipped (backup_tables off)")),
            "nothing_to_compare": (
                f"the tables hold what run {stats.recognised_from_run} loaded from the same input (same fingerprint)"
                if stats.recognised_from_run
                else "no: compared row by row"
            ),
            "dagster/row_count": len(mapped_users),
            "dagster/column_schema": dg.TableSchema(columns=seen_in_transaction["columns"]),
            "preview": preview(mapped_users),
            **({"migration_log_id": log.log_id} if log else {}),
            VERIFICATION: dg.MetadataValue.json(seen_in_transaction["verification"]),
        }
    )


def _snapshot_metadata(taken: dict | str):
    return dg.MetadataValue.json(taken) if isinstance(taken, dict) else taken
