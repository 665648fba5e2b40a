"""`migrate --resume` after a killed run: the advice a failure prints and what --resume then does agree,
and every outcome is said once, with its reason. The CLI as a subprocess, a real PostgreSQL."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import dagster as dg
import pytest

from faceit_etl.cli.summary import summarize
from faceit_etl_tests.test_cli import workdir  # noqa: F401 (a fixture)


def _env(workdir, database_url) -> dict[str, str]:
    env = {**os.environ, "DATABASE_URL": database_url, "MIGRATION_BACKUP_DIR": str(workdir / "backups")}
    env.pop("DAGSTER_HOME", None)
    return env


LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (INFO|WARNING|ERROR) \[pid (\d+)(?: run [0-9a-f]{8})?\] (.*)$")


def logged(workdir) -> list[tuple[str, str]]:
    """migration.log as (level, text) lines, every line of the form the README gives."""
    lines = [LOG_LINE.match(line) for line in (workdir / "migration.log").read_text().splitlines()]
    assert all(lines)
    return [(m[1], m[3]) for m in lines]


# Dagster's SQLite event log, creating a run's database that another thread creates too (the CLI's progress
# watcher and the run), logs with the root-level `logging.info()`, whose `basicConfig()` gives the root logger
# a stderr handler: every line the CLI logged after that was printed a second time, `INFO:faceit_etl.cli:…`.
ROOT_HANDLER_FIRST = ("import logging, sys; logging.info('concurrent init'); from faceit_etl.cli.main import main; "
                      "sys.exit(main(sys.argv[1:]))")


def test_each_line_is_printed_once_and_logged_with_the_commands_arguments_at_its_level(workdir, database_url, db):
    done = subprocess.run(
        [sys.executable, "-c", ROOT_HANDLER_FIRST, "rollback", "--migration-id", "no-such-run",
         "--discard-later-changes", "--confirm"],
        cwd=workdir, env=_env(workdir, database_url), capture_output=True, text=True, timeout=300)

    assert done.returncode == 2, done.stdout + done.stderr
    [refusal] = done.stdout.splitlines()
    assert refusal.startswith("rollback refused, nothing changed: ") and done.stderr == ""
    assert logged(workdir) == [("INFO", "faceit-etl rollback --migration-id no-such-run --discard-later-changes --confirm"),
                               ("ERROR", refusal)]


@dg.op
def _made():
    return 1


@dg.op
def _fails(value):
    raise RuntimeError(f"step failed with {value}")


@dg.job(resource_defs={"io_manager": dg.mem_io_manager}, executor_def=dg.in_process_executor)
def _kept_in_memory():
    _fails(_made())


@pytest.mark.unit
def test_a_run_failing_outside_its_steps_says_why_and_where():
    """Dagster refuses some runs before any step (here a re-execution its io manager cannot do, as it
    refused a resume of a run whose steps had all finished): the summary says why, never a bare failure."""
    with dg.instance_for_test() as instance:
        first = dg.execute_job(dg.reconstructable(_kept_in_memory), instance=instance)
        again = dg.execute_job(dg.reconstructable(_kept_in_memory), instance=instance,
                               reexecution_options=dg.ReexecutionOptions.from_failure(first.run_id, instance))

    assert summarize(first).errors == ["_fails: step failed with 1"]
    assert (again.success, summarize(again).errors) == (False, [
        "the run failed outside its steps: DagsterInvariantViolationError: Cannot perform reexecution with in-memory "
        "io managers. (raised at dagster/_core/execution/memoization.py:23)"])
