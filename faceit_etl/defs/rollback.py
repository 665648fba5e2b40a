"""`restore_tables`, the step of `rollback_job` (defs/jobs.py): restore the migration's tables to a run's pre-load snapshot."""

import dagster as dg
from pydantic import Field

from faceit_etl.defs.resources import MigrationSettings
from faceit_etl.rollback import UNCHECKED_ORIGIN, find_backup, rollback
from faceit_etl.postgres.lock import lock_schema


class RollbackConfig(dg.Config):
    backup_path: str | None = Field(
        default=None, description="A run's backup folder (or its manifest.json). Default: see migration_id."
    )
    migration_id: str | None = Field(
        default=None,
        description="A migration_logs id or Dagster run id whose pre-load snapshot to restore. "
        "Default: the latest successful migration.",
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
def restore_tables(context: dg.OpExecutionContext, config: RollbackConfig, migration_settings: MigrationSettings):
    with migration_settings.get_connection() as conn, conn.transaction():
        # Choose under the lock: a migration finishing meanwhile cannot slip in between.
        lock_schema(conn, migration_settings.target_schema)
        folder = find_backup(
            conn,
            migration_settings.target_schema,
            migration_settings.backup_dir,
            backup_path=config.backup_path,
            migration_id=config.migration_id,
        )
        result = rollback(
            conn, migration_settings.target_schema, folder, discard_later_changes=config.discard_later_changes
        )
    restored = {name: {"rows": d.rows, "sha256": d.sha256} for name, d in result.restored.items()}
    context.log.info(f"restored {migration_settings.database_label()} to the snapshot in {folder}")
    if result.origin_unchecked:
        context.log.warning(f"{UNCHECKED_ORIGIN}: {folder}")
    yield dg.AssetMaterialization(
        asset_key="postgres_tables",
        description=f"rolled back to the snapshot taken before run {result.run_id}",
        metadata={
            "rolled_back_run": result.run_id,
            "snapshot": dg.MetadataValue.path(str(folder)),
            "restored": dg.MetadataValue.json(restored),
            "dropped_tables": dg.MetadataValue.json(result.dropped),
            "origin_checked": not result.origin_unchecked,
        },
    )
    yield dg.Output(None)
