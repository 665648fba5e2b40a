"""`restore_tables`, the step of `rollback_job` (defs/jobs.py): restore the migration's tables to a run's pre-load snapshot."""

import dagster as dg
from pydantic import Field

from faceit_etl.defs.resources import MigrationSettings, PostgresResource
from faceit_etl.restore import UNCHECKED_ORIGIN, find_backup, rollback_to_snapshot
from faceit_etl.defs.metadata import RECENT_MIGRATIONS, migrations_table, tables_metadata
from faceit_etl.postgres import runlog
from faceit_etl.postgres.ddl import column_types
from faceit_etl.postgres.lock import lock_schema
from faceit_etl.postgres.snapshot import SNAPSHOT_TABLES


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


@dg.op(
    description=(
        "Restore users and user_subscriptions exactly as the chosen snapshot holds them, in one "
        "transaction verified against the manifest's row counts and hashes; no other table is touched."
    ),
)
def restore_tables(
    context: dg.OpExecutionContext, config: RollbackConfig, migration_settings: MigrationSettings, postgres: PostgresResource
):
    with postgres.get_connection() as conn, conn.transaction():
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
            conn, migration_settings.target_schema, folder, discard_later_changes=config.discard_later_changes
        )
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
    yield dg.AssetMaterialization(
        asset_key="postgres_tables",
        description=f"rolled back to the snapshot taken before run {result.run_id}",
        metadata={
            "rolled_back_run": result.run_id,
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
    yield dg.Output(None)
