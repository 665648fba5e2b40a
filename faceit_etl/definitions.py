"""Wiring only: the code location's assets, checks, jobs and resources."""

import dagster as dg

from faceit_etl.defs.assets import mapped_frames, postgres_tables, raw_json, source_backup, validated_frame
from faceit_etl.defs.automation import build_schedule, build_sensor
from faceit_etl.defs.checks import CHECKS
from faceit_etl.defs.io import RunScopedPickleIOManager
from faceit_etl.defs.resources import MigrationSettings, environment_or_default
from faceit_etl.defs.rollback import rollback_job

ASSETS = [source_backup, raw_json, validated_frame, mapped_frames, postgres_tables]


def execution_config(max_concurrent: int) -> dict:
    """One step at a time runs all steps in one process (no per-step start-up, ~4 s less per run);
    more runs that many step processes at once."""
    if max_concurrent <= 1:
        return {"config": {"in_process": {}}}
    return {"config": {"multiprocess": {"max_concurrent": max_concurrent}}}


migrate_job = dg.define_asset_job(
    "migrate_job",
    selection=dg.AssetSelection.all(),
    description="Back up, read, validate, map and load the bot's file into PostgreSQL, then verify it.",
    executor_def=dg.multi_or_in_process_executor,
    config={"execution": execution_config(environment_or_default("max_concurrent"))},
)


def get_migrate_job() -> dg.JobDefinition:
    """For dg.reconstructable: the CLI runs the job with its executor, as the UI does."""
    return defs.resolve_job_def("migrate_job")


defs = dg.Definitions(
    assets=ASSETS,
    asset_checks=CHECKS,
    jobs=[migrate_job, rollback_job],
    schedules=[build_schedule(migrate_job)],
    sensors=[build_sensor(migrate_job)],
    # Nothing set here: each run fills every setting it is not given from the environment of its own process.
    resources={"migration_settings": MigrationSettings(), "io_manager": RunScopedPickleIOManager()},
    executor=dg.in_process_executor,  # "Materialize all" in the UI: one process, as migrate_job by default
)
