"""Ctrl-C, as a terminal sends it (SIGINT to the command's whole process group), at each moment of a migration:
the command says it in its own words, exit 130, no traceback from any process, thread or finalizer, and the
tables are as they were (or, once its load had committed, hold it, and the words say so)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psycopg

from faceit_etl.generate import write_data_file
from faceit_etl_tests.test_cli import CLI, workdir  # noqa: F401 (a fixture)
from faceit_etl_tests.test_faults import tables

NOTHING_WRITTEN = "faceit-etl: interrupted; nothing was written"
BEFORE_ANY_RUN = "faceit-etl: interrupted; the tables were left as they were"
INTERRUPTED_ROW = ("failed", "interrupted (Ctrl-C); nothing of its load was committed")


class Interrupted:
    """The CLI started in a process group of its own (as a terminal's foreground job), its stdout read line by
    line as it comes, so a moment is seen, not guessed."""

    def __init__(self, workdir: Path, database_url: str, *args: str):
        env = {**os.environ, "DATABASE_URL": database_url, "MIGRATION_BACKUP_DIR": str(workdir / "backups")}
        env.pop("DAGSTER_HOME", None)
        self.workdir = workdir
        self.process = subprocess.Popen([CLI, *args], cwd=workdir, env=env, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL,
                                        start_new_session=True)
        self.lines: list[str] = []
        self.errors: list[str] = []
        self._readers = [threading.Thread(target=lambda: self.lines.extend(self.process.stdout)),
                         threading.Thread(target=lambda: self.errors.extend(self.process.stderr))]
        for reader in self._readers:
            reader.start()

    def printed(self, line: str) -> Callable[[], bool]:
        return lambda: any(seen.rstrip("\n") == line for seen in self.lines)

    def logged_its_command_line(self) -> bool:
        log = self.workdir / "migration.log"
        return log.exists() and f"[pid {self.process.pid}] faceit-etl " in log.read_text()

    def wait_for(self, seen: Callable[[], bool]) -> None:
        deadline = time.monotonic() + 120
        while not seen():
            assert self.process.poll() is None, "".join(self.lines + self.errors)
            assert time.monotonic() < deadline, "".join(self.lines)
            time.sleep(0.01)

    def ctrl_c(self) -> None:
        os.killpg(self.process.pid, signal.SIGINT)

    def ended(self) -> tuple[int, str, str]:
        code = self.process.wait(120)
        for reader in self._readers:
            reader.join(30)
        return code, "".join(self.lines), "".join(self.errors)

    def ctrl_c_when(self, seen: Callable[[], bool]) -> tuple[int, str, str]:
        self.wait_for(seen)
        self.ctrl_c()
        return self.ended()


def _logs(db: psycopg.Connection) -> dict:
    return {row[0]: row[1:] for row in db.execute("SELECT id, status, error_message FROM migration_logs")}


def _waiting_on(db: psycopg.Connection, locktype: str) -> Callable[[], bool]:
    """Whether a session of the run waits for a lock of this type (the schema's advisory lock, a row's)."""
    return lambda: bool(db.execute("SELECT count(*) FROM pg_locks WHERE locktype = %s AND NOT granted",
                                   [locktype]).fetchone()[0])


def test_ctrl_c_at_any_moment_of_a_migration_says_so_in_words_exits_130_and_leaves_the_tables(
        workdir, database_url, db):
    """Start-up (Dagster and the definitions still to import), backup, validation, the load (at its lock), its
    verdicts taken (its commit next), the end (committed, the run and the command still to finish). The load
    is held where it takes the schema's lock, so no moment before it can reach the commit, and its last write
    waits on a row lock, so the signal comes between the verdicts and the commit."""
    from faceit_etl.postgres.lock import advisory_lock_key

    first = write_data_file(workdir / "first.json", 2_000, seed=1)
    assert Interrupted(workdir, database_url, "-q", "migrate", str(first)).ended()[0] == 0
    source = write_data_file(workdir / "second.json", 3_000, seed=2)
    before, logs_before = tables(db), _logs(db)
    assert len(logs_before) == 1 and before["users"].rows == 2_000
    moments: dict[str, Callable[[Interrupted], Callable[[], bool]]] = {
        "start-up": lambda cli: cli.logged_its_command_line,
        "backup": lambda cli: cli.printed("back up the file ..."),
        "validation": lambda cli: cli.printed("validate entries ..."),
        "load": lambda cli: _waiting_on(db, "advisory"),
    }
    with psycopg.connect(database_url, autocommit=True) as lock:
        lock.execute("SELECT pg_advisory_lock(%s)", [advisory_lock_key("public")])
        for moment, seen in moments.items():
            cli = Interrupted(workdir, database_url, "migrate", str(source))

            code, stdout, stderr = cli.ctrl_c_when(seen(cli))

            assert (code, stderr) == (130, ""), f"{moment}: {stdout}{stderr}"  # no traceback, no "Exception ignored"
            assert stdout.splitlines()[-1] == (BEFORE_ANY_RUN if moment == "start-up" else NOTHING_WRITTEN), moment
            assert tables(db) == before, moment
            logs = _logs(db)
            assert {key: logs[key] for key in logs_before} == logs_before, moment
            assert all(row == INTERRUPTED_ROW for key, row in logs.items() if key not in logs_before), (moment, logs)

    with psycopg.connect(database_url) as holder:  # the load's last write, to its log row, waits on this lock
        cli = Interrupted(workdir, database_url, "migrate", str(source))
        cli.wait_for(lambda: bool(holder.execute("SELECT id FROM migration_logs WHERE status = 'running' FOR UPDATE"
                                                 ).fetchone()) and _waiting_on(db, "transactionid")())
        cli.ctrl_c()
        holder.rollback()
        code, stdout, stderr = cli.ended()

    assert (code, stderr) == (130, ""), stdout + stderr
    assert stdout.splitlines()[-1] == NOTHING_WRITTEN
    assert tables(db) == before
    assert db.execute("SELECT status, error_message FROM migration_logs ORDER BY start_time DESC LIMIT 1"
                      ).fetchone() == INTERRUPTED_ROW

    cli = Interrupted(workdir, database_url, "migrate", str(source))
    committed = "SELECT metadata->>'run_id' FROM migration_logs WHERE status = 'success' ORDER BY start_time DESC"
    code, stdout, stderr = cli.ctrl_c_when(lambda: len(db.execute(committed).fetchall()) == 2)  # the run still ends

    assert (code, stderr) == (130, ""), stdout + stderr
    [run] = db.execute(committed).fetchone()
    assert stdout.splitlines()[-1] in (
        "faceit-etl: interrupted; what the migrate said above holds",
        f"faceit-etl: interrupted after run {run} committed its load; the tables hold it",
    ), stdout
    loaded = {(user["user_id"], user["faceit_nickname"]) for user in json.loads(source.read_text())["users"]}
    assert loaded <= set(db.execute("SELECT user_id, faceit_nickname FROM users").fetchall())


def test_ctrl_c_of_a_rollback_waiting_for_the_schemas_lock_says_nothing_changed_and_exits_130(
        workdir, database_url, db):
    from faceit_etl.postgres.lock import advisory_lock_key

    first = write_data_file(workdir / "first.json", 2_000, seed=1)
    assert Interrupted(workdir, database_url, "-q", "migrate", str(first)).ended()[0] == 0
    before, logs_before = tables(db), _logs(db)
    with psycopg.connect(database_url, autocommit=True) as lock:
        lock.execute("SELECT pg_advisory_lock(%s)", [advisory_lock_key("public")])
        cli = Interrupted(workdir, database_url, "rollback", "--confirm")

        code, stdout, stderr = cli.ctrl_c_when(_waiting_on(db, "advisory"))

    assert (code, stderr) == (130, ""), stdout + stderr
    assert stdout.splitlines()[-2:] == ["rollback failed, nothing changed: interrupted",
                                        "faceit-etl: interrupted; what the rollback said above holds"]
    assert tables(db) == before
    assert _logs(db) == logs_before


def test_ctrl_c_after_the_load_committed_calls_no_step_failed_and_says_the_tables_hold_it(workdir, database_url, db):
    """The load step is stopped after its COMMIT, reading the recent migrations for its page: an outside tester saw
    `load into PostgreSQL FAILED` above `interrupted after run … committed its load; the tables hold it`. Held so:
    the load's last write waits on a row lock; a lock on migration_logs is asked for meanwhile (queued behind the
    load), so once the row lock goes the load commits and its next read of migration_logs waits (as would this
    test's: it reads the table through the lock's holder meanwhile)."""
    first = write_data_file(workdir / "first.json", 2_000, seed=1)
    assert Interrupted(workdir, database_url, "-q", "migrate", str(first)).ended()[0] == 0
    source = write_data_file(workdir / "second.json", 3_000, seed=2)
    committed = "SELECT metadata->>'run_id' FROM migration_logs WHERE status = 'success' ORDER BY start_time DESC"
    with psycopg.connect(database_url) as holder, psycopg.connect(database_url) as blocker:
        cli = Interrupted(workdir, database_url, "migrate", str(source))
        cli.wait_for(lambda: bool(holder.execute("SELECT id FROM migration_logs WHERE status = 'running' FOR UPDATE"
                                                 ).fetchone()) and _waiting_on(db, "transactionid")())
        locked = threading.Thread(target=blocker.execute, args=["LOCK TABLE migration_logs IN ACCESS EXCLUSIVE MODE"])
        locked.start()
        cli.wait_for(_waiting_on(db, "relation"))
        holder.rollback()
        locked.join(60)
        assert not locked.is_alive(), "the load's transaction did not end"
        assert len(blocker.execute(committed).fetchall()) == 2  # the load committed
        cli.wait_for(_waiting_on(db, "relation"))  # the load step, reading migration_logs after its commit
        cli.ctrl_c()
        time.sleep(1)
        blocker.rollback()
        code, stdout, stderr = cli.ended()

    [run] = db.execute(committed).fetchone()
    assert (code, stderr) == (130, ""), stdout + stderr
    assert stdout.splitlines()[-2:] == [
        "load into PostgreSQL interrupted",
        f"faceit-etl: interrupted after run {run} committed its load; the tables hold it",
    ], stdout
    assert "FAILED" not in stdout, stdout
    loaded = {(user["user_id"], user["faceit_nickname"]) for user in json.loads(source.read_text())["users"]}
    assert loaded <= set(db.execute("SELECT user_id, faceit_nickname FROM users").fetchall())


def test_ctrl_c_of_a_backup_leaves_no_folder_and_the_next_backup_is_whole(workdir, database_url, db):
    """`faceit-etl backup` waits for the schema's lock to fix its snapshot's instant, the file already copied: Ctrl-C
    there left a `manual-…` folder holding the file's copy and no tables, beside the whole backups. A backup is
    written under a hidden name and renamed once whole, so it appears whole or not at all."""
    from faceit_etl.postgres.lock import advisory_lock_key

    first = write_data_file(workdir / "first.json", 2_000, seed=1)
    assert Interrupted(workdir, database_url, "-q", "migrate", str(first)).ended()[0] == 0
    backups = workdir / "backups"
    before = {folder.name for folder in backups.iterdir()}
    with psycopg.connect(database_url, autocommit=True) as lock:
        lock.execute("SELECT pg_advisory_lock(%s)", [advisory_lock_key("public")])
        cli = Interrupted(workdir, database_url, "backup", str(first))

        code, stdout, stderr = cli.ctrl_c_when(_waiting_on(db, "advisory"))

    assert (code, stderr) == (130, ""), stdout + stderr
    assert stdout.splitlines()[-1] == BEFORE_ANY_RUN
    assert {folder.name for folder in backups.iterdir()} == before  # neither a manual-… folder nor a partial one

    code, stdout, stderr = Interrupted(workdir, database_url, "backup", str(first)).ended()

    assert code == 0, stdout + stderr
    [made] = {folder.name for folder in backups.iterdir()} - before
    assert made.startswith("manual-") and stdout.startswith(f"source {first.resolve()} ")
    assert f"copied to {backups.resolve() / made}" in stdout.splitlines()[0]
    manifest = json.loads((backups / made / "manifest.json").read_text())
    assert (manifest["run_id"], manifest["target"]["tables"]["users"]["rows"]) == (made, 2_000)
