"""The code location: every definition in `faceit_etl/defs/`, as `dg`, `dagster` and the CLI load it."""

import warnings
from pathlib import Path

import dagster as dg

# Data versions on outputs are a beta parameter in Dagster 1.13: every process that runs steps would
# print its notice (the CLI's output is the outcome only). Set here, where every such process loads the
# location: the loader restores the warning filters set while it imports defs/.
warnings.filterwarnings("ignore", message="Parameter `data_version` of initializer `Output.__init__`",
                        category=dg.BetaWarning)


def load_definitions() -> dg.Definitions:
    """The location as a process loads it now: its resources (the target among them) chosen from this
    process's environment as it is now."""
    return dg.load_from_defs_folder(path_within_project=Path(__file__).parent)


defs = load_definitions()


def get_migrate_job() -> dg.JobDefinition:
    """For dg.reconstructable: the CLI runs the job with its executor, as the UI does. Loaded anew, as a
    run's own process loads it, so the run reaches the database this process's environment names."""
    return load_definitions().resolve_job_def("migrate_job")
