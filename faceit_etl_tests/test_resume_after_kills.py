"""`migrate --resume` after a killed run: the advice a failure prints and what --resume then does agree,
and every outcome is said once, with its reason. The CLI as a subprocess, a real PostgreSQL."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import dagster as dg
import pytest

from faceit_etl.cli.summary import summarize
from faceit_etl.generate import write_data_file
from faceit_etl_tests.conftest import FLAT_SAMPLE
from faceit_etl_tests.test_cli import CLI, faceit_etl, instance_at, tables_digest, workdir  # noqa: F401 (a fixture)
from faceit_etl_tests.test_faults import _wait_until
from faceit_etl_tests.test_killed_runs import _step_pid
from faceit_etl_tests.test_resume import ALTER, failed_on_a_32_bit_column, migrate_runs


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
                               ("WARNING", refusal), ("WARNING", "faceit-etl rollback ended: exit 2, refused")]


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


def test_a_run_whose_cli_was_killed_mid_load_is_resumed_once_each_line_printed_once(workdir, database_url, db):
    """The CLI's main process killed mid-load: its step process (--max-concurrent 2) rolls its load back
    instead of committing it, so the run failed having written nothing, and its resume loads the file. The
    resume once crashed in Dagster ("Cannot perform reexecution with in-memory io managers"), printed a bare
    FAILED and each line twice on stderr."""
    big = write_data_file(workdir / "big.json", 150_000, seed=2)
    victim = subprocess.Popen([CLI, "-q", "migrate", str(big), "--max-concurrent", "2"], cwd=workdir,
                              env=_env(workdir, database_url), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    _wait_until(victim, "loading", lambda: db.execute(  # the instance made by then: opening it races its creation
        "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE 'COPY %'").fetchone()[0])
    with instance_at(workdir) as instance:
        step = _step_pid(instance, "postgres_tables")
    assert step not in (None, victim.pid)
    os.kill(victim.pid, signal.SIGKILL)  # the main process only: the load's step process goes on
    victim.wait(30)
    deadline = time.monotonic() + 120
    while db.execute("SELECT count(*) FROM migration_logs WHERE status = 'running'").fetchone()[0]:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert db.execute("SELECT status FROM migration_logs").fetchall() == [("failed",)]
    assert db.execute("SELECT to_regclass('users')").fetchone()[0] is None  # its first load wrote nothing
    (workdir / "migration.log").unlink()
    with instance_at(workdir) as instance:
        [run] = instance.get_runs()

    resumed = faceit_etl(workdir, database_url, "migrate", "--resume", run.run_id)
    again = faceit_etl(workdir, database_url, "migrate", "--resume", run.run_id)

    assert (resumed.returncode, resumed.stderr) == (0, ""), resumed.stdout + resumed.stderr
    lines = resumed.stdout.splitlines()
    assert lines[0].startswith(f"resuming run {run.run_id} from its failed step"), lines
    assert len(lines) == len(set(lines)), lines  # each line once
    assert db.execute("SELECT count(*) FROM users").fetchone()[0] == 150_000
    assert [s for (s,) in db.execute("SELECT status FROM migration_logs ORDER BY start_time")] == ["failed", "success"]
    assert again.returncode == 2 and again.stdout.startswith("resume refused, nothing was written: run "), again.stdout
    assert db.execute("SELECT count(*) FROM migration_logs").fetchone()[0] == 2
    assert [level for level, _ in logged(workdir)][:1] == ["INFO"]


def test_a_run_whose_every_step_finished_before_it_was_marked_failed_is_refused_saying_why_once(
        workdir, database_url, db):
    """A run marked failed after its load committed (its CLI killed between the load's last check and the
    commit, or its instance told so) has nothing to re-execute: Dagster said only "Cannot perform
    reexecution with in-memory io managers", and the CLI printed a bare FAILED."""
    first = faceit_etl(workdir, database_url, "migrate", str(FLAT_SAMPLE))
    assert first.returncode == 0, first.stdout + first.stderr
    with instance_at(workdir) as instance:
        [run] = instance.get_runs()
        instance.report_run_failed(run)
    before = tables_digest(db)
    (workdir / "migration.log").unlink()

    named = faceit_etl(workdir, database_url, "migrate", "--resume", run.run_id)
    default = faceit_etl(workdir, database_url, "migrate", "--resume")

    why = (f"resume refused, nothing was written: every step of run {run.run_id} finished (its load committed: the "
           "tables hold it) before the run was marked failed, so there is nothing to resume; faceit-etl status shows "
           "what the tables hold")
    for done in (named, default):
        assert (done.returncode, done.stdout, done.stderr) == (2, why + "\n", "")
    with instance_at(workdir) as instance:
        assert [r.run_id for r in instance.get_runs()] == [run.run_id]  # no run started
    assert tables_digest(db) == before
    assert db.execute("SELECT status FROM migration_logs").fetchall() == [("success",)]
    outcome = ("WARNING", "faceit-etl migrate ended: exit 2, refused")
    assert logged(workdir) == [("INFO", f"faceit-etl migrate --resume {run.run_id}"), ("WARNING", why), outcome,
                               ("INFO", "faceit-etl migrate --resume"), ("WARNING", why), outcome]


def test_a_run_stopped_before_its_load_is_not_offered_a_resume_and_resume_never_picks_an_older_one(
        workdir, database_url, db):
    """A step process killed before the load (validation, --max-concurrent 2): the run never started its load,
    so its failure says to run the migration again, and `--resume`, named or not, refuses it in those words. It
    once advised --resume, whose default then resumed an older failed migration of the target instead."""
    failed_on_a_32_bit_column(workdir, database_url, db)  # the older failure, which a resume would now load
    db.execute(ALTER)
    before = tables_digest(db)
    big = write_data_file(workdir / "big.json", 60_000, seed=3)
    victim = subprocess.Popen([CLI, "-q", "migrate", str(big), "--max-concurrent", "2"], cwd=workdir,
                              env=_env(workdir, database_url), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with instance_at(workdir) as instance:
        deadline = time.monotonic() + 120
        while (step := _step_pid(instance, "validated_frame")) is None:
            assert victim.poll() is None and time.monotonic() < deadline
            time.sleep(0.01)
    os.kill(step, signal.SIGKILL)
    output, errors = victim.communicate(timeout=300)
    with instance_at(workdir) as instance:
        stopped = migrate_runs(instance)[0]

    assert (victim.returncode, errors, output.splitlines()[0]) == (1, "", f"Migration run {stopped.run_id} FAILED")
    said = ("  error: step validated_frame: its process ended without finishing (killed by signal 9 (SIGKILL): by "
            "hand, or by the system when memory ran out); nothing was written (its load had not started). Run the "
            "migration again (faceit-etl migrate): a run stopped before its load is not resumed")
    assert output.splitlines().count(said) == 1 and "--resume" not in output, output
    why = (f"resume refused, nothing was written: run {stopped.run_id} never started its load (it stopped before the "
           "load, or was a dry run, which writes nothing to resume); resuming it would not load what a new run loads; "
           "start a new run instead")
    for args in (["--resume"], ["--resume", stopped.run_id]):
        done = faceit_etl(workdir, database_url, "migrate", *args)
        assert (done.returncode, done.stdout, done.stderr) == (2, why + "\n", ""), done.stdout + done.stderr
    assert tables_digest(db) == before
    with instance_at(workdir) as instance:
        assert migrate_runs(instance)[0].run_id == stopped.run_id  # nothing resumed


def test_a_run_resumed_already_is_never_resumed_again_and_the_default_says_which_it_resumes(workdir, database_url, db):
    """A resume that failed too (the column still 32-bit) is the one to resume: its parent, named, is refused
    (Dagster would re-execute it once more), and the default picks the resume, saying so before it runs."""
    failed_on_a_32_bit_column(workdir, database_url, db)
    again = faceit_etl(workdir, database_url, "migrate", "--resume")  # without the ALTER: fails as its run did
    assert again.returncode == 1, again.stdout + again.stderr
    with instance_at(workdir) as instance:
        resume, failed = migrate_runs(instance)[:2]
    assert resume.parent_run_id == failed.run_id and resume.status == dg.DagsterRunStatus.FAILURE
    target = resume.tags["faceit_etl/target"]
    assert again.stdout.splitlines()[0] == f"resuming run {failed.run_id} from its failed step (the latest migration of {target})"
    db.execute(ALTER)
    before = tables_digest(db)

    named = faceit_etl(workdir, database_url, "migrate", "--resume", failed.run_id)

    assert (named.returncode, named.stdout, named.stderr) == (2, (
        f"resume refused, nothing was written: run {failed.run_id} was resumed already, by run {resume.run_id} "
        "(FAILURE); a run is resumed once: resume that run if it failed, else start a new run\n"), "")
    assert tables_digest(db) == before

    done = faceit_etl(workdir, database_url, "migrate", "--resume")

    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == f"resuming run {resume.run_id} from its failed step (the latest migration of {target})"
    assert lines.count(lines[0]) == 1 and done.stderr == ""
    assert "  users: 60 inserted, 0 updated, 40 unchanged, 0 kept (not in the file), 0 deleted" in lines
    with instance_at(workdir) as instance:
        assert migrate_runs(instance)[0].parent_run_id == resume.run_id
