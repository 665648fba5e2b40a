"""A rollback to a manual backup (`faceit-etl backup`) records what it undid, as a rollback by
migration does: the migrations committed after the backup was taken are marked rolled back, so
`status` and the next rollback read the truth instead of a migration the tables no longer hold.
"""

from __future__ import annotations

import json
import threading
from datetime import datetime

import psycopg

from faceit_etl.generate import generate_users
from faceit_etl.postgres.lock import lock_schema
from faceit_etl.postgres.snapshot import take_snapshot
from faceit_etl_tests.conftest import write_json
from faceit_etl_tests.test_cli import faceit_etl, tables_digest, workdir  # noqa: F401 (fixture)


def _statuses(db) -> list[tuple[str, str]]:
    return db.execute(
        "SELECT metadata->>'run_id', status FROM t1.migration_logs ORDER BY start_time").fetchall()


def _digest(db) -> dict:
    return {name: db.execute(f"SELECT count(*), md5(string_agg(t::text, ',' ORDER BY t.id)) FROM t1.{name} t").fetchone()
            for name in ("users", "user_subscriptions")}


def test_a_rollback_to_a_manual_backup_marks_the_later_migrations_rolled_back(workdir, database_url, db):
    entries = generate_users(40, seed=11)
    a1 = write_json(workdir / "a1.json", {"users": entries[:30]})
    tz = write_json(workdir / "tz.json", {"users": entries[10:]})
    schema = ["--target-schema", "t1"]
    assert faceit_etl(workdir, database_url, "migrate", str(a1), *schema).returncode == 0
    assert faceit_etl(workdir, database_url, "backup", str(a1), *schema, "--output-dir", str(workdir / "bk")).returncode == 0
    backed_up = _digest(db)
    for source in (tz, a1):  # two migrations after the backup; the second finds the tables changed by tz
        done = faceit_etl(workdir, database_url, "migrate", str(source), *schema)
        assert done.returncode == 0, done.stdout + done.stderr
    (first, _), (second, _), (third, _) = _statuses(db)
    manual = next((workdir / "bk").iterdir())
    assert manual.name.startswith("manual-")

    restored = faceit_etl(workdir, database_url, "rollback", "--backup-path", str(manual), *schema, "--confirm")

    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert _digest(db) == backed_up
    assert _statuses(db) == [(first, "success"), (second, "rolled_back"), (third, "rolled_back")]
    status = json.loads(faceit_etl(workdir, database_url, "status", "--json", *schema).stdout)
    assert [(m["run_id"], m["status"]) for m in status["migrations"]] == [
        (third, "rolled_back"), (second, "rolled_back"), (first, "success")]

    # The tables are as the first migration left them: a plain rollback undoes it, refusing nothing.
    plain = faceit_etl(workdir, database_url, "rollback", *schema, "--confirm")

    assert plain.returncode == 0, plain.stdout + plain.stderr
    assert f"run {first}" in plain.stdout
    assert _statuses(db) == [(first, "rolled_back"), (second, "rolled_back"), (third, "rolled_back")]
    assert db.execute("SELECT to_regclass('t1.users'), to_regclass('t1.user_subscriptions')").fetchone() == (None, None)


def test_a_manual_backup_holding_a_migration_rolled_back_since_is_refused_and_changes_nothing(workdir, database_url, db):
    """The backup holds the first migration's rows; once that migration is rolled back, restoring the backup
    would bring it back in silence."""
    entries = generate_users(30, seed=12)
    first_file = write_json(workdir / "first.json", {"users": entries[:20]})
    second_file = write_json(workdir / "second.json", {"users": entries[10:]})
    schema = ["--target-schema", "t1"]
    assert faceit_etl(workdir, database_url, "migrate", str(first_file), *schema).returncode == 0
    assert faceit_etl(workdir, database_url, "backup", str(first_file), *schema, "--output-dir", str(workdir / "bk")).returncode == 0
    undone = faceit_etl(workdir, database_url, "rollback", *schema, "--confirm")
    assert undone.returncode == 0, undone.stdout + undone.stderr
    assert faceit_etl(workdir, database_url, "migrate", str(second_file), *schema).returncode == 0
    before, statuses = _digest(db), _statuses(db)
    (first, _), (second, _) = statuses
    first_id = db.execute("SELECT id::text FROM t1.migration_logs WHERE metadata->>'run_id' = %s", [first]).fetchone()[0]
    manual = next((workdir / "bk").iterdir())

    refused = faceit_etl(workdir, database_url, "rollback", "--backup-path", str(manual), *schema, "--confirm")

    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert (f"{manual}: the snapshot holds migrations rolled back since it was taken ({first_id} (run {first})): "
            "restoring it would bring them back; nothing was changed") in refused.stdout
    assert _digest(db) == before
    assert _statuses(db) == statuses == [(first, "rolled_back"), (second, "success")]


def test_a_manual_backup_waits_for_a_load_holding_the_lock_and_holds_what_it_committed(database_url, db, tmp_path):
    """The backup's instant is ordered with the loads' by the schema's lock: a load that holds it when the
    backup starts is in the backup, and the backup's lock time comes after that load's."""
    db.execute("CREATE TABLE users (id int PRIMARY KEY, v text)")
    with psycopg.connect(database_url) as loading:
        lock_schema(loading, "public")
        load_locked_at = loading.execute("SELECT clock_timestamp()").fetchone()[0]
        loading.execute("INSERT INTO users VALUES (1, 'written under the lock')")
        taken = {}
        with psycopg.connect(database_url, autocommit=True) as backing:
            backup = threading.Thread(target=lambda: taken.update(take_snapshot(backing, "public", tmp_path)))
            backup.start()
            backup.join(timeout=3)
            assert backup.is_alive()  # waiting for the load's lock
            loading.commit()
            backup.join(timeout=60)
    assert taken["tables"]["users"]["rows"] == 1
    assert (tmp_path / "users.copy").read_text() == "1\twritten under the lock\n"
    assert datetime.fromisoformat(taken["locked_at"]) > load_locked_at
