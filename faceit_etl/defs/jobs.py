"""The location's jobs: the migration over every asset, and the rollback."""

import multiprocessing
import os
from collections.abc import Mapping

import dagster as dg

from faceit_etl.defs.checks import SCHEMA_CHANGE, TABLE_CHECK_SPECS
from faceit_etl.defs.resources import max_concurrent_from_environment
from faceit_etl.defs.rollback import restore_tables


def execution_config(max_concurrent: int) -> dict:
    """One step at a time runs all steps in one process (no per-step start-up, ~4 s less per run);
    more runs that many step processes at once."""
    if max_concurrent <= 1:
        return {"config": {"in_process": {}}}
    return {"config": {"multiprocess": {"max_concurrent": max_concurrent}}}


def executor_max_concurrent(run_config: Mapping) -> int:
    """Steps a run of migrate_job runs at once: as its run config's executor section says, else as the
    job's default does (MIGRATION_MAX_CONCURRENT, read in this process as when the job was built). An
    unset multiprocess count is Dagster's own default."""
    execution = (run_config.get("execution") or execution_config(max_concurrent_from_environment()))["config"]
    if "multiprocess" not in execution:
        return 1
    count = (execution["multiprocess"] or {}).get("max_concurrent")
    return count or int(os.environ.get("DAGSTER_MULTIPROCESS_EXECUTOR_MAX_CONCURRENT") or multiprocessing.cpu_count())


# The run observes bot_data_file first, so each materialization records the file version it was made from.
# The tables' own checks (and their column_schema_change) are not in its plan: the load reports their
# verdicts itself. Dagster marks a planned check that never ran "Execution failed" when its run fails,
# so a run stopped before the load (by rejects, say) would otherwise show the untouched tables' checks
# as failed; this way they keep the last load's verdicts.
migrate_job = dg.define_asset_job(
    "migrate_job",
    selection=dg.AssetSelection.all(include_sources=True)
    - dg.AssetSelection.checks(*(s.key for s in TABLE_CHECK_SPECS), SCHEMA_CHANGE),
    description=(
        "Observe, back up, read, validate, map and load the bot's file into PostgreSQL, then verify it. Start "
        "migrations here (Materialize all on this page): the asset graph's own button runs Dagster's __ASSET_JOB, "
        "which plans the tables' checks, so a run it stops or a dry run hides the last load's verdicts."
    ),
    executor_def=dg.multi_or_in_process_executor,
    config={"execution": execution_config(max_concurrent_from_environment())},
)


@dg.job(
    description=(
        "Undo a migration: restore the tables from the snapshot taken before it. Choose it by migration_id "
        "from postgres_tables' recent_migrations (id, when, rows changed, run); unset, the latest "
        "migration that changed something."
    ),
    # The launchpad opens with rollback's own options, not the migration's settings.
    config={"ops": {"restore_tables": {"config": {"migration_id": None, "discard_later_changes": False}}}},
)
def rollback_job():
    restore_tables()
