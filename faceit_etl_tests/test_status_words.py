"""`faceit-etl status` says every migration_logs row in words: a row a killed run left `running` (it
stays so until the next run reaches the database), one whose session lives on although its Dagster run
ended, a failed row without counts, a row the bot's own Alembic wrote without our fields. Python's None
is never printed."""

from __future__ import annotations

import time

import dagster as dg
import psycopg

from faceit_etl.postgres import ddl, runlog
from faceit_etl_tests.test_cli import faceit_etl, instance_at, workdir  # noqa: F401 (a fixture)


@dg.asset
def killed_midway() -> None:
    raise RuntimeError("the run's process was killed")


def line_of(stdout: str, run_id: str) -> str:
    [line] = [line for line in stdout.splitlines() if f"(run {run_id})" in line]
    return line


def wait_until_gone(db, pid: int) -> None:
    """A closed connection's server process ends a moment after the client returns: until then its
    session still counts as alive, and its row as still loading."""
    for _ in range(200):
        if db.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", [pid]).fetchone()[0] == 0:
            return
        time.sleep(0.05)
    raise AssertionError(f"the session of server process {pid} did not end")


def test_status_says_in_words_what_each_row_left_running_or_without_counts_means(workdir, database_url, db):
    ddl.ensure_bookkeeping_tables(db, "public")
    with psycopg.connect(database_url, autocommit=True) as abandoned:
        runlog.start(abandoned, "public", run_id="abandoned-run", total_items=25, metadata={})
        abandoned_pid = abandoned.info.backend_pid
    wait_until_gone(db, abandoned_pid)
    runlog.fail_abandoned(db, "public")  # what the next run does: status failed, no counts
    db.execute("UPDATE migration_logs SET start_time = now() - interval '1 hour'")
    with psycopg.connect(database_url, autocommit=True) as killed:  # its session gone, as after kill -9
        runlog.start(killed, "public", run_id="killed-run", total_items=25, metadata={})
        killed_pid = killed.info.backend_pid
    wait_until_gone(db, killed_pid)
    with instance_at(workdir) as instance:
        ended = dg.materialize([killed_midway], instance=instance, raise_on_error=False).run_id
    with psycopg.connect(database_url, autocommit=True) as alive:  # sessions that live on, as a load's does
        runlog.start(alive, "public", run_id=ended, total_items=25, metadata={})
        alive_pid = alive.info.backend_pid
        runlog.start(alive, "public", run_id="loading-run", total_items=25, metadata={})
        db.execute("INSERT INTO migration_logs (migration_type) VALUES ('alembic')")  # the bot's own row

        done = faceit_etl(workdir, database_url, "status")

    assert done.returncode == 0, done.stdout + done.stderr
    assert "None" not in done.stdout
    killed_line = line_of(done.stdout, "killed-run")
    assert killed_line.endswith(
        ": its run ended without finishing (killed or lost); nothing was written (run killed-run)")
    assert " running at " in killed_line
    assert line_of(done.stdout, ended).endswith(  # a session of it may still commit: never "nothing was written"
        f": its Dagster run says FAILURE, but its session (server pid {alive_pid}) is still open: its load may "
        f"still commit (run {ended})")
    assert line_of(done.stdout, "loading-run").endswith(
        ": still loading, nothing committed yet (run loading-run)")
    assert line_of(done.stdout, "abandoned-run").endswith(": no counts recorded (run abandoned-run)")
    [bots] = [line for line in done.stdout.splitlines() if "no run recorded" in line]
    assert bots.endswith(" without a status at no recorded time: no counts recorded (no run recorded)")
