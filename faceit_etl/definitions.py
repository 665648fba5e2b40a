"""The code location: every definition in `faceit_etl/defs/`, as `dg`, `dagster` and the CLI load it."""

import functools
import warnings
from pathlib import Path

import dagster as dg

# Data versions on outputs are a beta parameter in Dagster 1.13: every process that runs steps would
# print its notice (the CLI's output is the outcome only). Set here, where every such process loads the
# location: the loader restores the warning filters set while it imports defs/.
warnings.filterwarnings("ignore", message="Parameter `data_version` of initializer `Output.__init__`",
                        category=dg.BetaWarning)


@functools.cache
def load_definitions() -> dg.Definitions:
    """The location, loaded once per process (each load costs about half a second, and running a job
    reconstructs it five times). Loading again would change nothing: defs/ is imported once per process
    anyway, and its resources read the environment when a run builds them, not here."""
    return dg.load_from_defs_folder(path_within_project=Path(__file__).parent)


defs = load_definitions()


def get_migrate_job() -> dg.JobDefinition:
    """For dg.reconstructable: the CLI runs the job with its executor, as the UI does."""
    return load_definitions().resolve_job_def("migrate_job")
