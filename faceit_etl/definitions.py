"""Wiring only: the code location's assets, checks, job and resources."""

import dagster as dg

from faceit_etl.defs.assets import mapped_frames, postgres_tables, raw_json, source_backup, validated_frame
from faceit_etl.defs.checks import CHECKS
from faceit_etl.defs.resources import MigrationSettings

ASSETS = [source_backup, raw_json, validated_frame, mapped_frames, postgres_tables]

migrate_job = dg.define_asset_job(
    "migrate_job",
    selection=dg.AssetSelection.all(),
    description="Back up, read, validate, map and load the bot's file into PostgreSQL, then verify it.",
    executor_def=dg.in_process_executor,
)

defs = dg.Definitions(
    assets=ASSETS,
    asset_checks=CHECKS,
    jobs=[migrate_job],
    resources={"migration_settings": MigrationSettings.from_environment()},
)
