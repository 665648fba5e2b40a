"""`restore_tables`, the step of `rollback_job` (defs/jobs.py): restore the migration's tables to a run's pre-load snapshot."""

import contextlib

import dagster as dg
from pydantic import Field, field_validator

from faceit_etl.cli.interrupt import interrupts_held
from faceit_etl.defs.automation import INPUT_DATA_VERSION, INPUT_EVENT_POINTER
from faceit_etl.defs.resources import (
    MigrationSettings,
    PostgresResource,
    refuse_a_secret,
    refuse_loose_environment,
    tag_run_with_target,
)
from faceit_etl.restore import UNCHECKED_ORIGIN, find_backup, rollback_to_snapshot, server_errors_without_rows
from faceit_etl.defs.metadata import RECENT_MIGRATIONS, migrations_table, tables_metadata
from faceit_etl.postgres import runlog
from faceit_etl.postgres.ddl import column_types
from faceit_etl.postgres.lock import lock_schema
from faceit_etl.postgres.snapshot import SNAPSHOT_TABLES


# Dagster's names for a materialization's data version and provenance tags; NULL: no event of that input.
DATA_VERSION_TAG, CODE_VERSION_TAG, NO_EVENT = "dagster/data_version", "dagster/code_version", "NULL"


class RollbackConfig(dg.Config):
    backup_path: str | None = Field(
        default=None, description="A run's backup folder (or its manifest.json). Default: see migration_id."
    )
    migration_id: str | None = Field(
        default=None,
        description="A migration_logs id or Dagster run id whose pre-load snapshot to restore, as "
        "postgres_tables' recent_migrations lists them. Default: the latest migration that changed something.",
    )
    discard_later_changes: bool = Field(
        default=False,
        description="Restore even if the tables changed since the latest migration committed "
        "(rows the bot wrote since are lost). Default: refuse, changing nothing.",
    )

    expect_latest_run: str | None = Field(
        default=None,
        description="A Dagster run id: refuse, changing nothing, unless it is still the latest migration in force "
        "when the rollback holds the lock (the CLI sets it to the one its question was asked under). Default: no such check.",
    )

    @field_validator("backup_path", "migration_id", "expect_latest_run")
    @classmethod
    def _no_secret(cls, value: str | None, info) -> str | None:
        """Both are quoted by a refusal (`{env: DATABASE_URL}` given as either would show its password)."""
        refuse_a_secret(info.field_name, value)
        return value


@dg.op(
    description=(
        "Restore users and user_subscriptions exactly as the chosen snapshot holds them, in one "
        "transaction verified against the manifest's row counts and hashes; no other table is touched."
    ),
)
def restore_tables(
    context: dg.OpExecutionContext, config: RollbackConfig, migration_settings: MigrationSettings, postgres: PostgresResource
):
    given = ((context.run.run_config or {}).get("ops") or {}).get("restore_tables") or {}
    refuse_loose_environment(given.get("config"), "restore_tables", text_settings=("backup_path", "migration_id", "expect_latest_run"))
    # Tagged before the restore: a refused or failed rollback is listed by `status` too.
    tag_run_with_target(context, migration_settings, postgres)
    with contextlib.ExitStack() as verified:
        with server_errors_without_rows(), postgres.get_connection() as conn, conn.transaction():
            # Choose under the lock: a migration finishing meanwhile cannot slip in between.
            lock_schema(conn, migration_settings.target_schema)
            folder = find_backup(
                conn,
                migration_settings.target_schema,
                migration_settings.backup_dir,
                backup_path=config.backup_path,
                migration_id=config.migration_id,
            )
            result = rollback_to_snapshot(
                conn, migration_settings.target_schema, folder, discard_later_changes=config.discard_later_changes,
                expect_latest_run=config.expect_latest_run,
            )
            # Verified: Ctrl-C from here is only noted, so the commit and the materialization that records it
            # happen together (a step stopped after the commit said "nothing changed").
            verified.enter_context(interrupts_held())
            recent = runlog.latest(conn, migration_settings.target_schema, RECENT_MIGRATIONS)
            # As the load records them, so the next load's column_schema_change compares with the restored tables.
            columns = [
                (f"{name}.{column}", data_type, nullable)
                for name in SNAPSHOT_TABLES
                for column, data_type, nullable in column_types(conn, migration_settings.target_schema, name)
            ]
        context.log.info(f"restored {postgres.database_label()} to the snapshot in {folder}")
        if result.origin_unchecked:
            context.log.warning(f"{UNCHECKED_ORIGIN}: {folder}")
        restored_to = f"rolled back to {result.restored_to}"
        restored = dg.AssetMaterialization(
            asset_key="postgres_tables",
            description=restored_to,
            tags=restored_provenance(restored_to),
            metadata={
                "rolled_back_run": result.run_id,
                "restored_to": result.restored_to,  # the snapshot in words: the run that took it, or a manual backup
                "database": postgres.database_label(),  # the target, as the load records it, for column_schema_change
                "schema": migration_settings.target_schema,
                "snapshot": dg.MetadataValue.path(str(folder)),
                # Per table restored: its rows (a number, plotted) and the full sha256 of its content.
                **{f"restored_{name}_rows": d.rows for name, d in result.restored.items()},
                **{f"restored_{name}_sha256": d.sha256 for name, d in result.restored.items()},
                "dropped_tables": ", ".join(result.dropped) or "none",
                "origin_checked": not result.origin_unchecked,
                "recent_migrations": migrations_table(recent),
                **tables_metadata(
                    migration_settings.target_schema, columns, {name: d.rows for name, d in result.restored.items()}
                ),
            },
        )
    yield restored
    yield dg.Output(None)


def restored_provenance(restored_to: str) -> dict[str, str]:
    """The data version and provenance Dagster reads a materialization's place in the graph from (its
    tags, as a load's own materialization carries them): the tables' version names the snapshot they now
    hold, and every input's version says that no version of it made them. The UI then shows the tables
    unsynced with the file, and "Materialize unsynced" loads it again; without these tags a rollback
    would look like a load of the current file (Dagster falls back to times, and the rollback is newer)."""
    from faceit_etl.defs.assets import CODE_VERSION, postgres_tables  # the assets import the jobs, which import this

    [spec] = postgres_tables.specs
    made_from_none = f"none: {restored_to}"
    return {
        DATA_VERSION_TAG: restored_to,
        CODE_VERSION_TAG: CODE_VERSION,
        **{f"{INPUT_DATA_VERSION}/{dep.asset_key.to_user_string()}": made_from_none for dep in spec.deps},
        **{f"{INPUT_EVENT_POINTER}/{dep.asset_key.to_user_string()}": NO_EVENT for dep in spec.deps},
    }
