"""`load_run`, a load as a run without Dagster: its migration_logs row, the snapshot into the run's
folder, the verdicts before commit, and a failure that names the database without its password."""

import json
import socket
import threading
import time
from dataclasses import replace
from datetime import timedelta

import psycopg
import pytest
from psycopg import sql

from faceit_etl.backups import MANIFEST, backup_source
from faceit_etl.launcher import PID_TAG, launcher_tags
from faceit_etl.mapping import map_frames
from faceit_etl.postgres import run, verify
from faceit_etl.postgres.lock import lock_schema
from faceit_etl.postgres.run import LoadFailed, LoadOptions, load_run
from faceit_etl.source import read_source
from faceit_etl.validation import validate_entries
from faceit_etl_tests.conftest import BOT_PASSWORD, FLAT_SAMPLE


def _options(url: str, folder, **changes) -> LoadOptions:
    return replace(
        LoadOptions(url=url, schema="public", run_id="run-1", root_run_id="run-1", folder=folder,
                    folder_has_manifest=False, settings_summary={"batch_size": 10}, batch_size=10),
        **changes,
    )


def _outcome():
    outcome = validate_entries(read_source(FLAT_SAMPLE), "UTC")
    return outcome, map_frames(outcome.valid)


def test_a_load_run_logs_itself_snapshots_into_its_own_folder_and_returns_its_verdicts(database_url, db, tmp_path):
    outcome, mapped = _outcome()
    progress: list[tuple[str, int, int]] = []

    done = load_run(_options(database_url, tmp_path / "run-1"), outcome, mapped,
                    progress=lambda *step: progress.append(step))

    assert all(verdict.passed for verdict in done.verdicts.values())
    assert done.stats.users.inserted == 25
    assert done.snapshot == {"users": "absent", "user_subscriptions": "absent"}
    manifest = json.loads((tmp_path / "run-1" / MANIFEST).read_text())
    assert (manifest["run_id"], manifest["root_run_id"], manifest["target"]["run_id"]) == ("run-1", "run-1", "run-1")
    assert progress[-1] == ("copy user_subscriptions", 25, 25)
    row = db.execute("SELECT id::text, status, metadata->'settings' FROM migration_logs").fetchone()
    assert row == (done.log_id, "success", {"batch_size": 10})


def test_the_log_row_spans_the_load_from_its_start_to_the_end_of_its_transaction_verification_included(
    database_url, db, tmp_path, monkeypatch
):
    """start_time is when the load began, before it waits for the lock; end_time when its transaction ended,
    after the verdicts: a load that waited 2 s for the lock took 2 s, and its row says so (end_time was the
    transaction's start, milliseconds after start_time, whatever the load did after it)."""
    outcome, mapped = _outcome()
    verdicts_taken = []

    def judged(conn, *args):
        verdicts = judge_before_commit(conn, *args)
        verdicts_taken.append(conn.execute("SELECT clock_timestamp()").fetchone()[0])
        return verdicts

    judge_before_commit = run.judge_before_commit
    monkeypatch.setattr(run, "judge_before_commit", judged)
    with psycopg.connect(database_url) as holder:
        lock_schema(holder, "public")  # another load's transaction, holding the lock
        loading = threading.Thread(target=load_run, args=(_options(database_url, tmp_path / "run-1"), outcome, mapped))
        loading.start()
        time.sleep(2)
        released = holder.execute("SELECT clock_timestamp()").fetchone()[0]
    loading.join(timeout=120)
    after = db.execute("SELECT clock_timestamp()").fetchone()[0]

    start, end, status = db.execute("SELECT start_time, end_time, status FROM migration_logs").fetchone()
    assert status == "success"
    assert start < released < verdicts_taken[0] <= end <= after
    assert end - start >= timedelta(seconds=2)


def test_a_folder_the_runs_source_backup_made_keeps_its_manifest(database_url, db, tmp_path):
    """The source copy's manifest section stays: the load adds its target, it does not start a new one."""
    copied = backup_source(FLAT_SAMPLE, tmp_path, "run-1")
    outcome, mapped = _outcome()

    load_run(_options(database_url, tmp_path / "run-1", folder_has_manifest=True), outcome, mapped)

    manifest = json.loads((tmp_path / "run-1" / MANIFEST).read_text())
    assert manifest["source"]["sha256"] == copied.sha256
    assert manifest["target"]["tables"]["users"] is None


def test_a_failed_load_run_marks_its_log_row_failed_and_names_no_password(password_database_url, db, tmp_path):
    db.execute("CREATE TABLE users (id int)")  # not the bot's table: the load refuses it
    outcome, mapped = _outcome()
    secret = BOT_PASSWORD.split()[0]  # its random part, in whatever encoding a message would carry it

    with pytest.raises(LoadFailed) as failed:
        load_run(_options(password_database_url, tmp_path / "run-1"), outcome, mapped)

    assert failed.value.verdicts is None
    assert str(failed.value).startswith("load into ")
    assert ", nothing was written: " in str(failed.value)
    assert secret not in str(failed.value)
    status, message = db.execute("SELECT status, error_message FROM migration_logs").fetchone()
    assert status == "failed" and message in str(failed.value) and secret not in message


def test_a_server_error_quoting_the_password_is_said_and_logged_without_it(password_database_url, db, tmp_path):
    """The server quotes names in its errors; a constraint named like the password puts it in one.
    The load's own redaction, not only the layers above it, keeps it out."""
    outcome, mapped = _outcome()
    load_run(_options(password_database_url, tmp_path / "run-1"), outcome, mapped)
    db.execute("TRUNCATE users, user_subscriptions")
    db.execute(sql.SQL("ALTER TABLE users ADD CONSTRAINT {} CHECK (total_requests < 0) NOT VALID").format(
        sql.Identifier(BOT_PASSWORD)))
    secret = BOT_PASSWORD.split()[0]

    with pytest.raises(LoadFailed) as failed:
        load_run(_options(password_database_url, tmp_path / "run-2", run_id="run-2"), outcome, mapped)

    said = str(failed.value)
    assert 'violates check constraint "***' in said and secret not in said
    message = db.execute("SELECT error_message FROM migration_logs WHERE status = 'failed'").fetchone()[0]
    assert message in said and secret not in message
    assert db.execute("SELECT count(*) FROM users").fetchone()[0] == 0


def test_a_user_whose_entry_is_rejected_is_kept_as_rejected_not_as_absent_from_the_file(database_url, db, tmp_path):
    """The run hands the verdicts the rejected entries' ids: the user stays in the file, its row kept."""
    outcome, mapped = _outcome()
    load_run(_options(database_url, tmp_path / "run-1"), outcome, mapped)
    document = json.loads(FLAT_SAMPLE.read_text())
    document["users"][3]["total_requests"] = "many"
    changed = tmp_path / "changed.json"
    changed.write_text(json.dumps(document))
    outcome = validate_entries(read_source(changed), "UTC")
    assert outcome.rejects["user_id"].tolist() == [document["users"][3]["user_id"]]

    done = load_run(_options(database_url, tmp_path / "run-2", run_id="run-2"), outcome, map_frames(outcome.valid))

    assert done.verdicts["rows_not_in_file"].metadata == {"users_not_in_file": 0, "examples": []}
    assert done.verdicts["rows_not_in_file"].passed and done.verdicts["row_counts_match"].passed
    assert db.execute("SELECT count(*) FROM users").fetchone()[0] == 25


def test_a_dry_run_load_run_writes_no_log_row_and_no_snapshot(database_url, db, tmp_path):
    outcome, mapped = _outcome()

    done = load_run(_options(database_url, tmp_path / "run-1", dry_run=True), outcome, mapped)

    assert done.log_id is None and done.stats.users.inserted == 25
    assert all(verdict.passed for verdict in done.verdicts.values())
    assert done.snapshot == "skipped (backup_tables off)"
    assert not (tmp_path / "run-1").exists()
    assert db.execute("SELECT to_regclass('users'), to_regclass('migration_logs')").fetchone() == (None, None)


def test_a_step_process_whose_launcher_is_gone_rolls_its_load_back_instead_of_committing(database_url, db, tmp_path):
    """A CLI killed alone (not its process group) leaves its step process loading: that load must not
    commit after the run may have been reported failed with nothing written. Its own launcher commits."""
    outcome, mapped = _outcome()
    gone = {**launcher_tags(), PID_TAG: "999999999"}  # above any pid_max: no such process

    with pytest.raises(LoadFailed) as failed:
        load_run(_options(database_url, tmp_path / "run-1", launcher=gone), outcome, mapped)

    said = (f"the faceit-etl process (pid 999999999 on host {socket.gethostname()}) that launched this run ended "
            "before the load's commit (killed?), so its step process rolled the load back instead of committing it")
    assert str(failed.value).endswith(f", nothing was written: {said}")
    assert db.execute("SELECT status, error_message FROM migration_logs").fetchall() == [("failed", said)]
    assert db.execute("SELECT to_regclass('public.users')").fetchone()[0] is None  # its transaction made it

    done = load_run(_options(database_url, tmp_path / "run-2", run_id="run-2", launcher=launcher_tags()), outcome, mapped)
    assert done.stats.users.inserted == 25
    assert db.execute("SELECT count(*) FROM users").fetchone()[0] == 25


class _Interrupted(BaseException):
    """An interrupt as Dagster raises one in a step (DagsterExecutionInterruptedError, no Exception): psycopg
    cancels the statement it stops only for KeyboardInterrupt, so the connection is left busy with it."""


@pytest.mark.parametrize("stopped", ["judge_before_commit", "tier_counts"])
def test_an_interrupt_in_the_middle_of_a_verdicts_statement_ends_the_load_at_once_and_writes_nothing(
    database_url, db, tmp_path, monkeypatch, stopped
):
    """The load's transaction holds its log row (marked success before the verdicts) and a statement still
    running: marking the row failed from the log's own connection waited on that transaction, so the run
    hung until a second Ctrl-C, or reported the busy connection's error (a cleanup's statement, as the
    upload of the file's ids drops its table, failing on it) instead of the interrupt. `stopped`: the
    verdicts as a whole, or one inside the ids' upload."""
    outcome, mapped = _outcome()

    def interrupted(conn, *args):
        conn.pgconn.send_query(b"SELECT pg_sleep(60)")  # the statement the interrupt stops
        raise _Interrupted

    monkeypatch.setattr(run if stopped == "judge_before_commit" else verify, stopped, interrupted)
    raised: list[BaseException] = []

    def loading():
        try:
            load_run(_options(database_url, tmp_path / "run-1"), outcome, mapped)
        except BaseException as exc:
            raised.append(exc)

    thread = threading.Thread(target=loading)
    thread.start()
    thread.join(timeout=30)
    hung = thread.is_alive()
    if hung:  # let the hung load go: end its sessions
        db.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name LIKE '%run-1%'")
        thread.join(timeout=30)

    assert not hung
    assert [type(exc) for exc in raised] == [_Interrupted]
    with psycopg.connect(database_url, autocommit=True) as other:
        other.execute("SET lock_timeout = '5s'")  # as the CLI marks an interrupted run's row: not blocked
        assert other.execute("SELECT status FROM migration_logs").fetchall() == [("running",)]
        other.execute("UPDATE migration_logs SET status = 'failed'")
        assert other.execute("SELECT to_regclass('users') IS NULL, to_regclass('user_subscriptions') IS NULL").fetchone() == (
            True, True
        )
