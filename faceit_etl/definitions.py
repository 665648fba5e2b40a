"""The code location: every definition in `faceit_etl/defs/`, as `dg`, `dagster` and the CLI load it."""

from pathlib import Path

import dagster as dg

defs = dg.load_from_defs_folder(path_within_project=Path(__file__).parent)


def get_migrate_job() -> dg.JobDefinition:
    """For dg.reconstructable: the CLI runs the job with its executor, as the UI does."""
    return defs.resolve_job_def("migrate_job")
