"""A faceit-etl process killed during its run: the run it drove must not stay STARTED in Dagster for ever
(shown running, counted by the run queue). The next command marks it failed, saying why, and its
migration_logs row tells the same story. A step process or the API's own child process killed is said in
words (which process, its signal, what was written, what to do), never as Dagster's bare exception."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import psycopg
from dagster._core.utils import make_new_run_id
import pytest

import faceit_etl
from faceit_etl.generate import write_data_file
from faceit_etl.launcher import (
    HOST_TAG, PID_TAG, PROCESS_START_TAG, how_it_ended, launcher_gone, launcher_tags, process_start, step_process_ended,
)
from faceit_etl.postgres.database import run_session_name
from faceit_etl_tests.conftest import FLAT_SAMPLE
from faceit_etl_tests.test_cli import faceit_etl as faceit_etl_cli, instance_at, workdir  # noqa: F401 (a fixture)
from faceit_etl_tests.test_faults import CLI, _start_killable_run, _wait_until, tables
from faceit_etl_tests.test_status_words import line_of, wait_until_gone


@pytest.mark.unit
def test_this_process_is_not_gone_a_free_pid_is_and_so_is_a_pid_another_process_holds():
    mine = launcher_tags()
    assert mine[HOST_TAG] == socket.gethostname() and mine[PID_TAG] == str(os.getpid())
    assert not launcher_gone(mine)
    assert launcher_gone({**mine, PID_TAG: "999999999"})  # above any pid_max: no such process
    assert launcher_gone({**mine, PID_TAG: "1"})  # init: alive, but it started before this process


@pytest.mark.unit
def test_runs_without_our_tags_or_from_another_host_are_never_judged_gone():
    dead = {**launcher_tags(), PID_TAG: "999999999"}
    assert not launcher_gone({})  # launched by the UI or the daemon
    assert not launcher_gone({k: v for k, v in dead.items() if k != PROCESS_START_TAG})
    assert not launcher_gone({**dead, HOST_TAG: socket.gethostname() + "-elsewhere"})


def test_a_migration_killed_mid_load_is_marked_failed_by_the_next_command(tmp_path, database_url, db):
    victim, before, run_again = _start_killable_run(tmp_path, database_url, db)
    _wait_until(victim, "loading", lambda: db.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE %s",
        ['%COPY "_faceit_etl_stage_users"%'],
    ).fetchone()[0])
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait(30)
    deadline = time.monotonic() + 30  # the server notices the dead client and rolls its transaction back
    while db.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                     "AND pid <> pg_backend_pid()").fetchone()[0]:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    env = {**os.environ, "DATABASE_URL": database_url, "MIGRATION_BACKUP_DIR": str(tmp_path / "backups")}
    env.pop("DAGSTER_HOME", None)

    shown = subprocess.run([CLI, "status"], cwd=tmp_path, env=env, capture_output=True, text=True)

    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        first, killed = sorted(instance.get_runs(), key=lambda run: run.tags[PID_TAG] == str(victim.pid))
        failures = instance.get_records_for_run(killed.run_id, of_type=dg.DagsterEventType.RUN_FAILURE).records
    said = (f"the faceit-etl process (pid {victim.pid} on host {socket.gethostname()}) that ran it ended without "
            "finishing it (killed?); the target was left as it was (the load is one transaction)")
    assert (first.status, killed.status) == (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE)
    assert [f.event_log_entry.dagster_event.message for f in failures] == [said]
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert f"dagster run {killed.run_id} migrate_job FAILURE (cli)" in shown.stdout
    [row] = [line for line in shown.stdout.splitlines() if f"(run {killed.run_id})" in line]
    assert " failed at " in row and row.endswith(f": no counts recorded (run {killed.run_id})"), row
    assert db.execute("SELECT status, error_message FROM migration_logs WHERE metadata->>'run_id' = %s",
                      [killed.run_id]).fetchone() == (
        "failed", "the run ended without finishing (killed or lost); nothing of its load was committed")
    assert tables(db) == before

    again = run_again()
    assert again.returncode == 0, again.stdout
    assert "users: 0 inserted, 0 updated, 2000 unchanged" in again.stdout


def _step_pid(instance: dg.DagsterInstance, step: str) -> int | None:
    """The pid of the process that started `step` in the one run in progress, as its STEP_START event records it."""
    runs = instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]))
    for run in runs:
        for record in instance.get_records_for_run(run.run_id, of_type=dg.DagsterEventType.STEP_START).records:
            event = record.event_log_entry.dagster_event
            if event.step_key == step:
                return event.pid
    return None


@contextmanager
def cli_killed_before_commit(victim: subprocess.Popen, database_url: str, db: psycopg.Connection,
                             instance_dir: Path) -> Iterator[tuple[int, list[int]]]:
    """Hold the load of `victim` (a `migrate --max-concurrent 2`) just before its COMMIT, where its last write
    waits on its log row, and kill the CLI alone: yields the pid of its step process, which lives on, and the
    server pids of the run's database sessions. Leaving releases the load, which goes on to its commit."""
    with psycopg.connect(database_url) as holder:
        _wait_until(victim, "starting its load", lambda: holder.execute(
            "SELECT id FROM migration_logs WHERE status = 'running' FOR UPDATE").fetchone())
        _wait_until(victim, "waiting to commit", lambda: db.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE %s",
            ['UPDATE "public"."migration_logs" SET status = %'],
        ).fetchone()[0])
        with dg.DagsterInstance.from_config(str(instance_dir)) as instance:
            step = _step_pid(instance, "postgres_tables")
        assert step not in (None, victim.pid)
        os.kill(victim.pid, signal.SIGKILL)  # the CLI alone
        victim.wait(30)
        sessions = [pid for (pid,) in db.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name LIKE 'faceit-etl run %' ORDER BY pid")]
        yield step, sessions
        holder.rollback()


def test_a_step_process_killed_under_max_concurrent_2_is_said_in_words(tmp_path, database_url, db):
    victim, before, run_again = _start_killable_run(tmp_path, database_url, db, "--max-concurrent", "2",
                                                    stdout=subprocess.PIPE)
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        _wait_until(victim, "loading", lambda: db.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE %s",
            ['%COPY "_faceit_etl_stage_users"%'],
        ).fetchone()[0])
        step = _step_pid(instance, "postgres_tables")
    assert step not in (None, victim.pid)
    os.kill(step, signal.SIGKILL)
    output = victim.communicate(timeout=300)[0]

    said = ("step postgres_tables: its process ended without finishing (killed by signal 9 (SIGKILL): by hand, or "
            "by the system when memory ran out); nothing was written (the load had not committed). Run the migration "
            "again, or resume it from this step (faceit-etl migrate --resume: the steps before it are not run again)")
    assert victim.returncode == 1, output
    assert f"  error: {said}\n" in output
    assert "ChildProcess" not in output, output
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        [run] = instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE]))
        logged = [r.event_log_entry.dagster_event.message
                  for r in instance.get_records_for_run(run.run_id, of_type=dg.DagsterEventType.ENGINE_EVENT).records]
    assert said in logged  # on the run's page in the UI, under its failure
    assert tables(db) == before
    env = {**os.environ, "DATABASE_URL": database_url, "MIGRATION_BACKUP_DIR": str(tmp_path / "backups")}
    env.pop("DAGSTER_HOME", None)
    resumed = subprocess.run([CLI, "-q", "migrate", "--resume"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr  # the advice holds
    assert "Migration run " in resumed.stdout and " succeeded\n" in resumed.stdout, resumed.stdout
    big = {user["user_id"] for user in json.loads((tmp_path / "big.json").read_text())["users"]}
    assert len(big) == 150_000 and big <= {row[0] for row in db.execute("SELECT user_id FROM users")}


@pytest.mark.unit
def test_a_dead_process_is_said_with_its_signal_or_exit_code():
    assert how_it_ended(-9) == "killed by signal 9 (SIGKILL): by hand, or by the system when memory ran out"
    assert how_it_ended(-15) == "killed by signal 15 (SIGTERM)"
    assert how_it_ended(3) == "exit code 3"
    assert how_it_ended(None) == "its exit status is unknown"
    assert step_process_ended("postgres_tables", 3, committed=True, dry_run=False) == (
        "step postgres_tables: its process ended without finishing (exit code 3); its load had committed before "
        "that: the tables hold it (faceit-etl status shows it)")
    assert step_process_ended("validated_frame", -9, committed=False, dry_run=False, load_started=False) == (
        "step validated_frame: its process ended without finishing (killed by signal 9 (SIGKILL): by hand, or by the "
        "system when memory ran out); nothing was written (its load had not started). Run the migration again "
        "(faceit-etl migrate): a run stopped before its load is not resumed")
    assert step_process_ended("mapped_frames", None, committed=False, dry_run=True) == (
        "step mapped_frames: its process ended without finishing (its exit status is unknown); nothing was "
        "written. Run the dry run again (a dry run is never resumed)")


def api_migrate_in_a_child(source: Path, database_url: str, workdir: Path, monkeypatch
                           ) -> tuple[threading.Thread, list[BaseException]]:
    """`faceit_etl.migrate(source, database_url=...)` in a thread, not started yet: with no DATABASE_URL of
    its own, the call runs its verb in a child process. What it raises lands in the list."""
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.setenv("MIGRATION_BACKUP_DIR", str(workdir / "backups"))
    raised: list[BaseException] = []

    def call() -> None:
        try:
            faceit_etl.migrate(source, database_url=database_url)
        except BaseException as exc:  # noqa: BLE001 (the test asserts it)
            raised.append(exc)

    return threading.Thread(target=call), raised


def _serving_child() -> int | None:
    """The pid of this process's child that runs an API verb (`_in_child`), once it has started."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            command = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if fields[1] == str(os.getpid()) and b"_serve" in command:
            return int(stat.parent.name)
    return None


def test_the_process_an_api_call_ran_its_verb_in_killed_raises_process_ended(workdir, database_url, db, monkeypatch):
    monkeypatch.chdir(workdir)
    big = write_data_file(workdir / "big.json", 150_000, seed=2)
    caller, raised = api_migrate_in_a_child(big, database_url, workdir, monkeypatch)
    caller.start()
    deadline = time.monotonic() + 120
    while not db.execute("SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE 'COPY %'"
                         ).fetchone()[0]:  # an empty target: straight into the tables
        assert caller.is_alive() and time.monotonic() < deadline, raised
        time.sleep(0.01)
    child = _serving_child()
    os.kill(child, signal.SIGKILL)
    caller.join(120)

    [error] = raised
    assert type(error) is faceit_etl.ProcessEnded
    assert str(error) == (
        f"faceit-etl migrate: the process that ran it (pid {child}) ended without finishing it (killed by signal 9 "
        "(SIGKILL): by hand, or by the system when memory ran out); its run, if it had started one, is marked failed, "
        "and nothing it had not committed was written (a load and a restore are one transaction each): faceit-etl "
        "status says what the tables hold. Run it again, or resume the failed migration (faceit-etl migrate --resume)")
    with dg.DagsterInstance.from_config(str(workdir)) as instance:
        [run] = instance.get_runs()
        failures = instance.get_records_for_run(run.run_id, of_type=dg.DagsterEventType.RUN_FAILURE).records
    assert run.status == dg.DagsterRunStatus.FAILURE and run.tags[PID_TAG] == str(child)
    assert [f.event_log_entry.dagster_event.message for f in failures] == [
        f"the faceit-etl process (pid {child} on host {socket.gethostname()}) that ran it ended without finishing "
        "it (killed?); the target was left as it was (the load is one transaction)"]
    assert db.execute("SELECT to_regclass('public.users')").fetchone()[0] is None  # its transaction made them


def test_a_run_whose_cli_alone_was_killed_is_not_failed_while_its_step_process_can_write(tmp_path, database_url, db):
    """`kill -9` of the CLI alone (not its process group) under `--max-concurrent 2`: its step process lives
    on, holding the schema's lock in its load. `status` must not call the run failed, nothing written, while
    that process or its session can still commit; the orphan must not commit (it rolls back once it finds
    its launcher gone), and only then is the run failed, in Dagster, migration_logs and migration.log alike."""
    # The upsert path: a load into empty or truncated tables locks them, and status's row counts wait for it.
    victim, before, _ = _start_killable_run(tmp_path, database_url, db, "--max-concurrent", "2")
    env = {**os.environ, "DATABASE_URL": database_url, "MIGRATION_BACKUP_DIR": str(tmp_path / "backups")}
    env.pop("DAGSTER_HOME", None)
    with cli_killed_before_commit(victim, database_url, db, tmp_path) as (step, sessions):
        during = subprocess.run([CLI, "status"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)

        with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
            [orphaned] = instance.get_runs(dg.RunsFilter(tags={PID_TAG: str(victim.pid)}))
        assert during.returncode == 0, during.stdout + during.stderr
        assert orphaned.status == dg.DagsterRunStatus.STARTED
        assert len(sessions) == 2  # the load's and its log row's
        said = ", ".join([f"step postgres_tables (pid {step})", *(f"database session (server pid {p})" for p in sessions)])
        assert (f"dagster run {orphaned.run_id} migrate_job STARTED (cli): its faceit-etl process is gone, but "
                f"{said} of it can still write\n") in during.stdout, during.stdout
        assert line_of(during.stdout, orphaned.run_id).endswith(
            f": still loading, nothing committed yet (run {orphaned.run_id})")
        assert "nothing was written" not in during.stdout
    # released: the orphan goes on to its commit
    deadline = time.monotonic() + 60
    while process_start(step) is not None or db.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'faceit-etl run %'").fetchone()[0]:
        assert time.monotonic() < deadline, "the orphaned step process never ended"
        time.sleep(0.1)

    after = subprocess.run([CLI, "status"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)

    rolled_back = (f"the faceit-etl process (pid {victim.pid} on host {socket.gethostname()}) that launched this "
                   "run ended before the load's commit (killed?), so its step process rolled the load back instead "
                   "of committing it")
    assert db.execute("SELECT status, error_message FROM migration_logs WHERE metadata->>'run_id' = %s",
                      [orphaned.run_id]).fetchone() == ("failed", rolled_back)
    assert tables(db) == before
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        failed = instance.get_run_by_id(orphaned.run_id)
        failures = instance.get_records_for_run(failed.run_id, of_type=dg.DagsterEventType.RUN_FAILURE).records
    abandoned = (f"the faceit-etl process (pid {victim.pid} on host {socket.gethostname()}) that ran it ended without "
                 "finishing it (killed?); the target was left as it was (the load is one transaction)")
    assert failed.status == dg.DagsterRunStatus.FAILURE
    assert [f.event_log_entry.dagster_event.message for f in failures] == [abandoned]
    assert after.returncode == 0, after.stdout + after.stderr
    assert f"  dagster run {orphaned.run_id} migrate_job FAILURE (cli)\n" in after.stdout
    row = line_of(after.stdout, orphaned.run_id)
    assert " failed at " in row and row.endswith(f": 0 loaded, 0 rejected (run {orphaned.run_id})"), row


def test_a_run_whose_launcher_is_gone_stays_started_while_a_session_of_it_is_open_then_fails_in_migration_log(
        workdir, database_url, db):
    """The database is the witness: a session named after the run (as its load's are) may still commit, so the
    run is not failed while it is open; once it is gone the run is failed, and migration.log says so as an
    ERROR (the killed CLI wrote no outcome line)."""
    tags = {**launcher_tags(), PID_TAG: "999999999"}  # above any pid_max: no such process
    with instance_at(workdir) as instance:
        run = instance.add_run(dg.DagsterRun(job_name="migrate_job", run_id=make_new_run_id(), tags=tags,
                                             status=dg.DagsterRunStatus.STARTED))
    with psycopg.connect(database_url, application_name=run_session_name(run.run_id)) as session:
        during = faceit_etl_cli(workdir, database_url, "status")
        with instance_at(workdir) as instance:
            assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.STARTED, during.stdout
        session_pid = session.info.backend_pid
    wait_until_gone(db, session_pid)

    after = faceit_etl_cli(workdir, database_url, "status")

    said = (f"the faceit-etl process (pid 999999999 on host {socket.gethostname()}) that ran it ended without "
            "finishing it (killed?); the target was left as it was (the load is one transaction)")
    with instance_at(workdir) as instance:
        assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.FAILURE, after.stdout
    logged = [line.split(" ", 2)[2] for line in (workdir / "migration.log").read_text().splitlines()
              if f"run {run.run_id}" in line]
    assert len(logged) == 1 and re.fullmatch(
        rf"ERROR \[pid \d+\] run {run.run_id} \(migrate_job\) marked failed: {re.escape(said)}", logged[0]), logged


def test_an_api_call_whose_child_died_waits_for_the_runs_sessions_and_never_fails_a_run_one_still_holds(
        workdir, database_url, db, monkeypatch):
    """The call marks its dead child's run failed itself, once nothing of it can write: the server drops a
    killed client's sessions a moment later, so it waits up to CHILD_SESSIONS_PATIENCE for the run's sessions,
    in the call's database (it looked in its own DATABASE_URL's, unset here, and failed the run at once while a
    session of it was open). Here a session named after the run outlives the wait: the call waits it out and
    leaves the run STARTED. The load is held on the schema's lock, so the child dies mid-run."""
    from faceit_etl.api import CHILD_SESSIONS_PATIENCE
    from faceit_etl.postgres.lock import advisory_lock_key

    monkeypatch.chdir(workdir)
    caller, raised = api_migrate_in_a_child(FLAT_SAMPLE, database_url, workdir, monkeypatch)
    with psycopg.connect(database_url, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", [advisory_lock_key("public")])
        caller.start()
        deadline = time.monotonic() + 120
        while not db.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'advisory'").fetchone()[0]:
            assert caller.is_alive() and time.monotonic() < deadline, raised
            time.sleep(0.01)
        with dg.DagsterInstance.from_config(str(workdir)) as instance:
            [run] = instance.get_runs()
        with psycopg.connect(database_url, application_name=run_session_name(run.run_id)):
            os.kill(_serving_child(), signal.SIGKILL)
            killed = time.monotonic()
            holder.execute("SELECT pg_advisory_unlock(%s)", [advisory_lock_key("public")])  # the load's session ends
            caller.join(120)
            waited = time.monotonic() - killed
            with dg.DagsterInstance.from_config(str(workdir)) as instance:
                status = instance.get_run_by_id(run.run_id).status

    [error] = raised
    assert type(error) is faceit_etl.ProcessEnded
    assert waited >= CHILD_SESSIONS_PATIENCE, waited
    assert status == dg.DagsterRunStatus.STARTED  # a session of it could still write
