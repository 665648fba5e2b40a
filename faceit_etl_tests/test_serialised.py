"""Migrations, rollbacks and backups started at the same time, through the CLI as separate processes.

The migration's advisory lock is held from the test's own connection while the commands start, so
every one of them is seen waiting for it: the interleaving is forced, not hoped for.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import psycopg

from faceit_etl.backups import manual_backup_name, sha256_of
from faceit_etl.generate import generate_users
from faceit_etl.postgres.lock import advisory_lock_key
from faceit_etl_tests.conftest import FLAT_SAMPLE, write_json
from faceit_etl_tests.test_rollback import target_state

CLI = str(Path(sys.executable).parent / "faceit-etl")
WAITING = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"


def cli_env(tmp_path: Path, database_url: str) -> dict:
    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {**os.environ, "DATABASE_URL": database_url, "MIGRATION_BACKUP_DIR": str(tmp_path / "backups")}
    env.pop("DAGSTER_HOME", None)
    return env


def start(tmp_path, env, *args) -> subprocess.Popen:
    return subprocess.Popen([CLI, *args], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def finish(process: subprocess.Popen) -> str:
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 0, output
    return output


def run_id_of(output: str) -> str:
    return re.search(r"Migration run (\S+) succeeded", output).group(1)


def run_in(output: str) -> str:
    """The run id, whether the run succeeded or its checks failed."""
    return re.search(r"Migration run (\S+) (succeeded|FAILED)", output).group(1)


@contextmanager
def migration_lock(database_url: str):
    """The lock every load and rollback takes, held by the test until the block ends."""
    with psycopg.connect(database_url, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", [advisory_lock_key("public")])
        try:
            yield
        finally:
            holder.execute("SELECT pg_advisory_unlock(%s)", [advisory_lock_key("public")])


def wait_for_waiters(db, count: int, processes: list[subprocess.Popen]) -> None:
    deadline = time.monotonic() + 120
    while db.execute(WAITING).fetchone()[0] < count:
        ended = [(p.args, p.returncode, p.communicate()[0]) for p in processes if p.poll() is not None]
        assert not ended, f"ended without waiting for the lock: {ended}"
        assert time.monotonic() < deadline, f"never saw {count} commands waiting for the lock"
        time.sleep(0.05)


def user_ids(db) -> set[int]:
    return {row[0] for row in db.execute("SELECT user_id FROM users")}


def three_files(tmp_path: Path, size: int) -> tuple[list[Path], list[set[int]]]:
    users = generate_users(3 * size, seed=21)
    parts = [users[i * size:(i + 1) * size] for i in range(3)]
    files = [write_json(tmp_path / f"part{i}.json", {"users": part}) for i, part in enumerate(parts)]
    return files, [{u["user_id"] for u in part} for part in parts]


def statuses(db) -> dict[str, str]:
    return dict(db.execute("SELECT metadata->>'run_id', status FROM migration_logs").fetchall())


def test_two_migrations_at_once_then_rollback_undoes_exactly_the_last_committed(tmp_path, database_url, db):
    env = cli_env(tmp_path, database_url)
    (baseline, left, right), (baseline_ids, left_ids, right_ids) = three_files(tmp_path, 2_000)
    first = run_id_of(finish(start(tmp_path, env, "-q", "migrate", str(baseline))))

    with migration_lock(database_url):
        runs = [start(tmp_path, env, "-q", "migrate", "--truncate", str(source)) for source in (left, right)]
        wait_for_waiters(db, 2, runs)  # both runs are past their backup step, neither has loaded
    # Both loads commit. The checks run after the load, outside the lock, so the first run's checks
    # may see the second run's content and fail that run: the exit code is not what is tested here.
    left_run, right_run = (run_in(run.communicate(timeout=300)[0]) for run in runs)
    assert statuses(db) == {first: "success", left_run: "success", right_run: "success"}
    # Each replaced the content: the tables hold the file of the load that committed last.
    later, earlier, earlier_ids = (
        (right_run, left_run, left_ids) if user_ids(db) == right_ids else (left_run, right_run, right_ids)
    )
    assert user_ids(db) in (left_ids, right_ids)

    rolled = finish(start(tmp_path, env, "rollback", "--confirm"))

    assert f"Rolled back to the snapshot taken before run {later}" in rolled
    assert user_ids(db) == earlier_ids and not user_ids(db) & baseline_ids
    assert db.execute("SELECT count(*) FROM user_subscriptions").fetchone()[0] == len(earlier_ids)
    assert statuses(db) == {first: "success", earlier: "success", later: "rolled_back"}
    rolled_back_to = db.execute(
        "SELECT metadata->>'rolled_back_to_snapshot' FROM migration_logs WHERE metadata->>'run_id' = %s", [later]
    ).fetchone()[0]
    assert rolled_back_to == str((tmp_path / "backups" / later).resolve())


def test_a_rollback_started_during_a_migration_waits_for_it_and_then_undoes_it(tmp_path, database_url, db):
    env = cli_env(tmp_path, database_url)
    (a, b, m), (_, b_ids, _) = three_files(tmp_path, 1_000)
    first = run_id_of(finish(start(tmp_path, env, "-q", "migrate", str(a))))
    second = run_id_of(finish(start(tmp_path, env, "-q", "migrate", "--truncate", str(b))))
    after_b = target_state(db)

    with migration_lock(database_url):
        migration = start(tmp_path, env, "-q", "migrate", "--truncate", str(m))
        wait_for_waiters(db, 1, [migration])
        rollback = start(tmp_path, env, "rollback", "--confirm")
        wait_for_waiters(db, 2, [migration, rollback])  # the rollback queues behind the migration
        assert target_state(db) == after_b
    rolled = finish(rollback)
    # Its checks may run after the rollback and fail the run: its load's commit is what counts.
    third = run_in(migration.communicate(timeout=300)[0])

    # It chose the latest migration once that had committed: the one that ran meanwhile, not B.
    assert f"Rolled back to the snapshot taken before run {third}" in rolled
    assert target_state(db) == after_b
    assert user_ids(db) == b_ids
    assert statuses(db) == {first: "success", second: "success", third: "rolled_back"}


def test_manual_backup_names_never_repeat():
    names = {manual_backup_name() for _ in range(1_000)}  # within a second or two
    assert len(names) == 1_000
    assert all(re.fullmatch(r"manual-\d{8}T\d{6}-[0-9a-f]{12}", name) for name in names)


def test_two_backups_at_once_write_two_complete_folders(tmp_path, database_url, db):
    env = cli_env(tmp_path, database_url)
    finish(start(tmp_path, env, "-q", "migrate", str(FLAT_SAMPLE)))
    state = target_state(db)

    outputs = [finish(p) for p in [start(tmp_path, env, "backup", str(FLAT_SAMPLE)) for _ in range(2)]]

    folders = sorted((tmp_path / "backups").glob("manual-*"))
    assert len(folders) == 2, outputs
    for folder in folders:
        manifest = json.loads((folder / "manifest.json").read_text())
        assert manifest["run_id"] == folder.name
        assert manifest["source"]["sha256"] == sha256_of(FLAT_SAMPLE) == sha256_of(folder / "source.json")
        for name in ("users", "user_subscriptions"):
            snap = manifest["target"]["tables"][name]
            assert (snap["rows"], snap["sha256"]) == (state[name]["digest"].rows, state[name]["digest"].sha256)
            assert sha256_of(folder / snap["file"]) == snap["sha256"]


def definitions(db) -> dict:
    """Columns, constraints and indexes of the bot's tables, and the enum's labels."""
    return {
        "columns": db.execute(
            """SELECT table_name, column_name, data_type, is_nullable, column_default FROM information_schema.columns
               WHERE table_schema = 'public' AND table_name IN ('users', 'user_subscriptions') ORDER BY 1, 2"""
        ).fetchall(),
        "constraints": db.execute(
            """SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint
               WHERE conrelid IN ('users'::regclass, 'user_subscriptions'::regclass) ORDER BY 1, 2"""
        ).fetchall(),
        "indexes": db.execute(
            "SELECT indexdef FROM pg_indexes WHERE tablename IN ('users', 'user_subscriptions') ORDER BY 1"
        ).fetchall(),
    }


def test_a_manual_backup_restores_tables_dropped_since_with_their_definitions(tmp_path, database_url, db):
    env = cli_env(tmp_path, database_url)
    finish(start(tmp_path, env, "-q", "migrate", str(FLAT_SAMPLE)))
    # Not only what our DDL makes: whatever the tables are when backed up comes back.
    db.execute("CREATE INDEX ix_users_lower_nickname ON users (lower(faceit_nickname))")
    db.execute("ALTER TABLE users ADD CONSTRAINT total_requests_not_negative CHECK (total_requests >= 0)")
    db.execute("ALTER TABLE user_subscriptions ALTER COLUMN daily_requests SET DEFAULT 3")
    state, defined = target_state(db), definitions(db)
    output = finish(start(tmp_path, env, "backup", str(FLAT_SAMPLE)))
    folder = re.search(r"copied to (\S+)", output).group(1)
    db.execute("DROP TABLE user_subscriptions, users; DROP TYPE subscriptiontier")

    restored = finish(start(tmp_path, env, "rollback", "--confirm", "--backup-path", folder))

    for name in ("users", "user_subscriptions"):
        assert f"  {name}: {state[name]['digest'].rows} rows restored, content hash verified" in restored
    assert target_state(db) == state  # every row, and the enum's labels
    assert definitions(db) == defined
    # the tables work as before: the same file again over them changes nothing
    again = finish(start(tmp_path, env, "migrate", str(FLAT_SAMPLE)))
    assert f"users: 0 inserted, 0 updated, {state['users']['digest'].rows} unchanged" in again


def test_a_manual_backup_is_not_restored_over_rows_written_since_when_no_migration_is_recorded(
    tmp_path, database_url, db
):
    """With no migration recorded, the backup's own snapshot is the latest state faceit-etl knows: rows
    the bot wrote since are not dropped silently, as they are not when a migration is recorded."""
    from faceit_etl.postgres.ddl import ensure_target_tables

    env = cli_env(tmp_path, database_url)
    with psycopg.connect(database_url) as conn:  # the bot's own tables, before any migration
        ensure_target_tables(conn, "public")
    db.execute("INSERT INTO users (id, user_id, faceit_nickname) VALUES (gen_random_uuid(), 1, 'before backup')")
    output = finish(start(tmp_path, env, "backup", str(FLAT_SAMPLE)))
    folder = re.search(r"copied to (\S+)", output).group(1)
    db.execute("INSERT INTO users (id, user_id, faceit_nickname) VALUES (gen_random_uuid(), 2, 'written since')")
    state = target_state(db)

    refused = start(tmp_path, env, "rollback", "--confirm", "--backup-path", folder)
    output, _ = refused.communicate(timeout=300)

    assert refused.returncode == 2, output
    assert output.strip() == (
        f"rollback refused, nothing changed: the tables changed since the snapshot in {folder} was taken "
        "(users: 2 rows now, 1 then), and no migration since records them: restoring it would discard those "
        "changes; nothing was changed. Roll back with --discard-later-changes (rollback_job: "
        "discard_later_changes) to restore it anyway"
    )
    assert target_state(db) == state

    finish(start(tmp_path, env, "rollback", "--confirm", "--backup-path", folder, "--discard-later-changes"))
    assert db.execute("SELECT user_id, faceit_nickname FROM users").fetchall() == [(1, "before backup")]
