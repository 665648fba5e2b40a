"""The rollback called directly: every function of restore.py and the restore side of snapshot.py, on
states the load itself makes (postgres.load with its snapshot hook: no Dagster, no verdicts), each
refusal in its exact words with every table left as it was, each restore compared row by row.

test_rollback.py proves the same through Dagster runs, 5 to 15 s a test; these take a fraction of a
second each, so that mutation testing (`make mutate MUTATE=db`) can measure the rollback's code.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import stat
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from faceit_etl.backups import MANIFEST, backup_source, manual_backup_name, run_folder, start_manifest, update_manifest
from faceit_etl.errors import BOTH_NAMED
from faceit_etl.generate import generate_users
from faceit_etl.mapping import map_frames
from faceit_etl.postgres import runlog
from faceit_etl.postgres.ddl import ensure_bookkeeping_tables, ensure_target_tables, table, table_exists
from faceit_etl.postgres.load import load
from faceit_etl.postgres.lock import advisory_lock_key, lock_schema
from faceit_etl.postgres.snapshot import (
    SnapshotError,
    TableDigest,
    digest_table,
    restore_snapshot,
    snapshot_damage,
    snapshot_for_load,
    take_snapshot,
)
from faceit_etl.restore import (
    NOT_WHOLE,
    RollbackError,
    RollbackRefused,
    RollbackResult,
    find_backup,
    latest_committed,
    refuse_not_in_force,
    restored_to,
    rollback_to_snapshot,
    server_errors_without_rows,
    snapshot_manifest,
    snapshot_of_run,
)
from faceit_etl.source import read_source
from faceit_etl.validation import validate_entries
from faceit_etl_tests.conftest import write_json
from faceit_etl_tests.test_snapshot_definitions import shape

SCHEMA = "public"
TABLES = ("users", "user_subscriptions")
ENTRIES = generate_users(12, seed=21)
# A: users 0-5 on an empty database (creates the tables and the enum). B: users 3-9 (4 inserted, 3 kept).
A, B, ALL = (0, 6), (3, 10), (0, 12)
LATER = ("Roll back with --discard-later-changes (rollback_job: discard_later_changes) to restore it anyway")


# ------------------------------------------------------------------------------------------ states


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    """The mapped frames and rejects of ENTRIES[start:stop], validated once per module."""
    folder = tmp_path_factory.mktemp("files")

    @functools.cache
    def of(start: int, stop: int):
        source = write_json(folder / f"{start}-{stop}.json", {"users": ENTRIES[start:stop]})
        outcome = validate_entries(read_source(source), "UTC")
        assert outcome.rejected_count == 0
        return map_frames(outcome.valid), outcome.rejects

    return of


@pytest.fixture
def backups(tmp_path) -> Path:
    return tmp_path / "backups"


@pytest.fixture
def migrate(database_url, db, backups, frames):
    """One migration as a run's load makes it: its log row, its snapshot in its own folder under the lock,
    its counts, lock time and fingerprint in migration_logs. Returns its backup folder."""

    def run(run_id: str, users: tuple[int, int], identity: str | None = None) -> Path:
        folder = run_folder(backups, run_id)
        mapped, rejects = frames(*users)
        ensure_bookkeeping_tables(db, SCHEMA)
        log = runlog.start(db, SCHEMA, run_id=run_id, total_items=len(mapped.users), metadata={})
        start_manifest(folder, run_id, run_id)

        def snapshot(conn, recognised, found):
            snapshot_for_load(conn, database_url, SCHEMA, folder, run_id, recognised, found)

        with psycopg.connect(database_url) as conn:
            load(conn, SCHEMA, mapped, rejects, run_id, log=log, before_write=snapshot, input_identity=identity)
        return folder

    return run


def manual_backup(db, backups: Path, tmp_path: Path) -> Path:
    """What `faceit-etl backup` makes: the file copied into a `manual-` folder, then the tables' snapshot."""
    copied = backup_source(write_json(tmp_path / "bot.json", {"users": []}), backups, manual_backup_name())
    update_manifest(copied.folder, target=take_snapshot(db, SCHEMA, Path(copied.folder)))
    return Path(copied.folder)


def tables(db, schema: str = SCHEMA) -> dict:
    """The bot's tables row by row (None when absent) and the tier enum's labels."""
    db.execute("SET TIME ZONE 'UTC'")
    state = {
        name: db.execute(sql.SQL("SELECT * FROM {} ORDER BY id").format(table(schema, name))).fetchall()
        if table_exists(db, schema, name) else None
        for name in TABLES
    }
    state["subscriptiontier"] = db.execute(
        """SELECT array_agg(e.enumlabel ORDER BY e.enumsortorder) FROM pg_enum e JOIN pg_type t ON t.oid = e.enumtypid
           JOIN pg_namespace n ON n.oid = t.typnamespace WHERE n.nspname = %s AND t.typname = 'subscriptiontier'""",
        [schema],
    ).fetchone()[0]
    return state


def everything(db) -> dict:
    """Every table of every schema, row by row, and every type: what a refusal must leave exactly as it was."""
    db.execute("SET TIME ZONE 'UTC'")
    names = db.execute("""SELECT schemaname, tablename FROM pg_tables
                          WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2""").fetchall()
    state = {
        f"{schema}.{name}": sorted(map(repr, db.execute(sql.SQL("SELECT * FROM {}").format(table(schema, name))).fetchall()))
        for schema, name in names
    }
    state["types"] = db.execute("""SELECT n.nspname, t.typname, t.typtype FROM pg_type t
                                   JOIN pg_namespace n ON n.oid = t.typnamespace
                                   WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
                                   ORDER BY 1, 2""").fetchall()
    return state


def statuses(db) -> dict[str, str]:
    return dict(db.execute("SELECT metadata->>'run_id', status FROM migration_logs").fetchall())


def log_id(db, run_id: str) -> str:
    return db.execute("SELECT id::text FROM migration_logs WHERE metadata->>'run_id' = %s", [run_id]).fetchone()[0]


def digests(db) -> dict[str, TableDigest]:
    return {name: digest_table(db, SCHEMA, name) for name in TABLES}


def refused(db, folder: Path, schema: str = SCHEMA, **options) -> str:
    """The refusal's words; the rollback must have changed nothing at all."""
    before = everything(db)
    with pytest.raises(RollbackRefused) as raised:
        rollback_to_snapshot(db, schema, folder, **options)
    assert everything(db) == before
    return str(raised.value)


def logged(db, run_id: str, status: str, metadata: dict) -> str:
    """A migration_logs row as an older or a failed run left it; its id."""
    ensure_bookkeeping_tables(db, SCHEMA)
    log = runlog.start(db, SCHEMA, run_id=run_id, total_items=0, metadata={})
    runlog.finish(log, status, metadata=metadata)
    return log.log_id


def edit_manifest(folder: Path, change) -> None:
    document = json.loads((folder / MANIFEST).read_text())
    change(document)
    (folder / MANIFEST).write_text(json.dumps(document))


# ------------------------------------------------------------------------------ restoring exactly


def test_rolling_back_the_latest_migration_restores_the_tables_as_the_one_before_left_them(migrate, db):
    migrate("run-a", A)
    after_a, digests_a = tables(db), digests(db)
    folder = migrate("run-b", B)
    assert tables(db) != after_a
    before = db.execute("SELECT clock_timestamp()").fetchone()[0]

    result = rollback_to_snapshot(db, SCHEMA, folder)

    assert result == RollbackResult(folder, "run-b", digests_a, [], "the snapshot taken before run run-b")
    assert result.origin_unchecked is False
    assert tables(db) == after_a
    assert statuses(db) == {"run-a": "success", "run-b": "rolled_back"}
    metadata = db.execute("SELECT metadata FROM migration_logs WHERE metadata->>'run_id' = 'run-b'").fetchone()[0]
    assert metadata["rolled_back_to_snapshot"] == str(folder)
    assert before <= db.execute("SELECT %s::timestamptz", [metadata["rolled_back_at"]]).fetchone()[0] <= \
        db.execute("SELECT clock_timestamp()").fetchone()[0]
    assert metadata["load"]["users"]["inserted"] == 4  # the rest of the row is kept


def test_rolling_back_the_run_that_created_the_tables_drops_them_and_the_enum_and_nothing_else(migrate, db):
    folder = migrate("run-a", A)
    db.execute("CREATE TABLE notes (id int PRIMARY KEY, note text); INSERT INTO notes VALUES (1, 'kept')")
    logs = db.execute("SELECT id, start_time, end_time, total_items FROM migration_logs").fetchall()

    result = rollback_to_snapshot(db, SCHEMA, folder)

    assert (result.restored, result.dropped) == ({}, ["users", "user_subscriptions"])
    assert tables(db) == {"users": None, "user_subscriptions": None, "subscriptiontier": None}
    assert db.execute("SELECT * FROM notes").fetchall() == [(1, "kept")]
    assert db.execute("SELECT id, start_time, end_time, total_items FROM migration_logs").fetchall() == logs
    assert statuses(db) == {"run-a": "rolled_back"}


def test_rolling_back_an_earlier_migration_undoes_every_later_one_but_no_earlier_or_failed_one(migrate, db):
    migrate("run-a", A)
    after_a = tables(db)
    folder = migrate("run-b", B)
    migrate("run-c", ALL)
    logged(db, "run-d", "failed", {"locked_at": "2999-01-01T00:00:00+00:00"})

    rollback_to_snapshot(db, SCHEMA, folder)

    assert tables(db) == after_a
    assert statuses(db) == {"run-a": "success", "run-b": "rolled_back", "run-c": "rolled_back", "run-d": "failed"}


def test_a_table_dropped_since_is_made_again_with_its_keys_from_the_snapshot(migrate, db):
    migrate("run-a", A)
    after_a = tables(db)
    keys = db.execute("SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
                      "WHERE conrelid = 'user_subscriptions'::regclass ORDER BY 1").fetchall()
    folder = migrate("run-b", B)
    db.execute("DROP TABLE user_subscriptions")

    rollback_to_snapshot(db, SCHEMA, folder)

    assert tables(db) == after_a
    assert db.execute("SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
                      "WHERE conrelid = 'user_subscriptions'::regclass ORDER BY 1").fetchall() == keys


def test_a_resumed_migrations_snapshot_is_read_from_the_folder_of_the_run_whose_load_took_it(migrate, db, backups):
    migrate("run-a", A)
    after_a = tables(db)
    folder = migrate("run-b", B)
    taken = run_folder(backups, "run-failed")
    taken.mkdir()
    for name in TABLES:
        (folder / f"{name}.copy").rename(taken / f"{name}.copy")
    edit_manifest(folder, lambda m: m["target"].update(snapshot_folder=str(taken), snapshot_of_run="run-failed"))

    result = rollback_to_snapshot(db, SCHEMA, folder)

    assert result.restored_to == "the snapshot taken before run run-failed (by its load; run run-b resumed it)"
    assert result.run_id == "run-b"
    assert tables(db) == after_a


def test_a_snapshot_that_records_no_database_is_restored_saying_its_origin_went_unchecked(migrate, db):
    migrate("run-a", A)
    after_a = tables(db)
    folder = migrate("run-b", B)
    edit_manifest(folder, lambda m: m["target"].pop("database"))

    assert rollback_to_snapshot(db, SCHEMA, folder).origin_unchecked is True
    assert tables(db) == after_a


def test_a_restore_the_database_alters_is_undone_whole(migrate, db):
    """A trigger added since changes the rows as they are copied back: the verification refuses the result."""
    migrate("run-a", A)
    folder = migrate("run-b", B)
    db.execute("CREATE FUNCTION shout() RETURNS trigger LANGUAGE plpgsql AS "
               "$$ BEGIN NEW.faceit_nickname := upper(NEW.faceit_nickname) || '!'; RETURN NEW; END $$")
    db.execute("CREATE TRIGGER t_shout BEFORE INSERT ON users FOR EACH ROW EXECUTE FUNCTION shout()")
    before = everything(db)

    with pytest.raises(SnapshotError) as raised:
        rollback_to_snapshot(db, SCHEMA, folder)

    assert str(raised.value) == "restored public.users does not match the snapshot (6 rows vs 6); nothing was changed"
    assert everything(db) == before


def test_a_rollback_and_a_snapshot_wait_for_the_lock_a_load_holds(migrate, db, database_url, tmp_path):
    """Under the schema's lock (lock.py), as loads take it: neither may see the tables in the middle of a load."""
    migrate("run-a", A)
    folder = migrate("run-b", B)
    db.execute("SET lock_timeout = '50ms'")  # waiting for the lock fails at once instead
    before = everything(db)
    with psycopg.connect(database_url) as load_in_progress:
        lock_schema(load_in_progress, SCHEMA)
        with pytest.raises(psycopg.errors.LockNotAvailable):
            rollback_to_snapshot(db, SCHEMA, folder)
        with pytest.raises(psycopg.errors.LockNotAvailable):
            take_snapshot(db, SCHEMA, tmp_path)
    assert everything(db) == before


# ------------------------------------------------------------------------------ manual backups


def test_a_manual_backup_restored_undoes_the_migrations_after_it(migrate, db, backups, tmp_path):
    migrate("run-a", A)
    after_a, digests_a = tables(db), digests(db)
    manual = manual_backup(db, backups, tmp_path)
    # Its instant is when it took the lock, not when its copy of the file began (here: before run-a).
    edit_manifest(manual, lambda m: m.update(taken_at="2000-01-01T00:00:00+00:00"))
    migrate("run-b", B)

    result = rollback_to_snapshot(db, SCHEMA, manual)

    assert result == RollbackResult(manual, manual.name, digests_a, [], f"the manual backup {manual}")
    assert tables(db) == after_a
    assert statuses(db) == {"run-a": "success", "run-b": "rolled_back"}


def test_an_older_manual_backup_without_its_lock_time_is_placed_by_when_it_began(migrate, db, backups, tmp_path):
    migrate("run-a", A)
    after_a = tables(db)
    manual = manual_backup(db, backups, tmp_path)
    edit_manifest(manual, lambda m: m["target"].pop("locked_at"))  # as an older faceit-etl wrote it
    migrate("run-b", B)

    rollback_to_snapshot(db, SCHEMA, manual)

    assert tables(db) == after_a
    assert statuses(db) == {"run-a": "success", "run-b": "rolled_back"}


def test_a_manual_backup_holding_migrations_rolled_back_since_is_refused(migrate, db, backups, tmp_path):
    migrate("run-a", A)
    first = migrate("run-b", B)
    manual = manual_backup(db, backups, tmp_path)
    rollback_to_snapshot(db, SCHEMA, first)
    ids = log_id(db, "run-a"), log_id(db, "run-b")

    said = refused(db, manual)

    assert said == (
        f"{manual}: the snapshot holds migrations rolled back since it was taken ({ids[1]} (run run-b)): restoring it "
        "would bring them back; nothing was changed. Roll back to a snapshot taken before them, or name a migration "
        "in force (`faceit-etl status` lists them)"
    )
    with pytest.raises(RollbackRefused) as asked:  # before the question, too
        refuse_not_in_force(db, SCHEMA, manual)
    assert str(asked.value) == said
    rollback_to_snapshot(db, SCHEMA, run_folder(first.parent, "run-a"))
    assert refused(db, manual).startswith(
        f"{manual}: the snapshot holds migrations rolled back since it was taken ({ids[0]} (run run-a), {ids[1]} (run run-b)): "
    )


def test_a_manual_backup_taken_after_a_rollback_holds_no_migration_undone_since(migrate, db, backups, tmp_path):
    migrate("run-a", A)
    after_a = tables(db)
    rollback_to_snapshot(db, SCHEMA, migrate("run-b", B))
    manual = manual_backup(db, backups, tmp_path)
    later = migrate("run-c", ALL)
    rollback_to_snapshot(db, SCHEMA, later)  # rolled back after the backup, but loaded after it too

    rollback_to_snapshot(db, SCHEMA, manual)

    assert tables(db) == after_a
    assert statuses(db) == {"run-a": "success", "run-b": "rolled_back", "run-c": "rolled_back"}


def test_with_no_migration_recorded_the_tables_must_hold_exactly_the_snapshots_rows(db, backups, tmp_path):
    with db.transaction():
        ensure_target_tables(db, SCHEMA)
    # A column PostgreSQL computes is neither in the snapshot's files nor in what they are compared with.
    db.execute("ALTER TABLE users ADD COLUMN doubled int GENERATED ALWAYS AS (total_requests * 2) STORED")
    db.execute("INSERT INTO users (id, user_id, faceit_nickname, total_requests) VALUES (gen_random_uuid(), 1, 'a', 3), "
               "(gen_random_uuid(), 2, 'b', 4)")
    db.execute("INSERT INTO user_subscriptions (id, user_id, tier) SELECT gen_random_uuid(), id, 'PRO' FROM users")
    manual = manual_backup(db, backups, tmp_path)
    backed_up = tables(db)
    db.execute("INSERT INTO users (id, user_id) VALUES (gen_random_uuid(), 3)")

    assert refused(db, manual) == (
        f"the tables changed since the snapshot in {manual} was taken (users: 3 rows now, 2 then), and no migration "
        f"since records them: restoring it would discard those changes; nothing was changed. {LATER}"
    )
    db.execute("DELETE FROM users WHERE user_id = 3; UPDATE user_subscriptions SET tier = 'FREE'")
    assert refused(db, manual) == (
        f"the tables changed since the snapshot in {manual} was taken (user_subscriptions: 2 rows now, 2 then, "
        f"contents differ), and no migration since records them: restoring it would discard those changes; nothing "
        f"was changed. {LATER}"
    )

    rollback_to_snapshot(db, SCHEMA, manual, discard_later_changes=True, expect_latest_run="not asked: no log")

    assert tables(db) == backed_up
    assert not table_exists(db, SCHEMA, "migration_logs")


def test_a_snapshot_of_no_tables_refuses_tables_made_since_and_drops_them_when_told(db, backups, tmp_path):
    manual = manual_backup(db, backups, tmp_path)
    with db.transaction():
        ensure_target_tables(db, SCHEMA)
    db.execute("INSERT INTO users (id, user_id) VALUES (gen_random_uuid(), 1), (gen_random_uuid(), 2)")
    db.execute("INSERT INTO user_subscriptions (id, user_id) SELECT gen_random_uuid(), id FROM users WHERE user_id = 1")

    assert refused(db, manual) == (
        f"the tables changed since the snapshot in {manual} was taken (users: 2 rows now, absent then; "
        "user_subscriptions: 1 rows now, absent then), and no migration since records them: restoring it would "
        f"discard those changes; nothing was changed. {LATER}"
    )
    result = rollback_to_snapshot(db, SCHEMA, manual, discard_later_changes=True)

    assert (result.restored, result.dropped) == ({}, ["users", "user_subscriptions"])
    assert tables(db) == {"users": None, "user_subscriptions": None, "subscriptiontier": None}


def test_after_every_migration_was_rolled_back_the_tables_are_compared_with_the_snapshot(migrate, db, backups, tmp_path):
    rollback_to_snapshot(db, SCHEMA, migrate("run-a", A))
    with db.transaction():
        ensure_target_tables(db, SCHEMA)
    db.execute("INSERT INTO users (id, user_id) VALUES (gen_random_uuid(), 1)")
    manual = manual_backup(db, backups, tmp_path)
    backed_up = tables(db)
    db.execute("UPDATE users SET language = 'de'")

    assert refused(db, manual).startswith(f"the tables changed since the snapshot in {manual} was taken (users: 1 rows "
                                          "now, 1 then, contents differ), and no migration since records them: ")
    rollback_to_snapshot(db, SCHEMA, manual, discard_later_changes=True)
    assert tables(db) == backed_up


# ---------------------------------------------------------------------------------- refusals


def test_rows_written_since_the_latest_migration_are_refused_unless_discarded(migrate, db):
    migrate("run-a", A)
    after_a = tables(db)
    folder = migrate("run-b", B)
    db.execute("INSERT INTO users (id, user_id) VALUES (gen_random_uuid(), 424242)")

    assert refused(db, folder) == (
        "the tables changed since run run-b committed (users: 11 rows now, 10 then): restoring the snapshot would "
        f"discard those changes; nothing was changed. {LATER}"
    )
    db.execute("UPDATE user_subscriptions SET daily_requests = daily_requests + 1")
    assert refused(db, folder).startswith(
        "the tables changed since run run-b committed (users: 11 rows now, 10 then; user_subscriptions: 10 rows now, "
        "10 then, contents differ): "
    )

    rollback_to_snapshot(db, SCHEMA, folder, discard_later_changes=True)
    assert tables(db) == after_a


def test_a_latest_migration_without_a_fingerprint_is_refused_unless_discarded(migrate, db):
    migrate("run-a", A)
    folder = migrate("run-b", B)
    db.execute("UPDATE migration_logs SET metadata = metadata - 'fingerprint' WHERE metadata->>'run_id' = 'run-b'")

    assert refused(db, folder) == (
        "cannot tell whether the tables changed since run run-b committed (its log row holds no fingerprint); nothing "
        "was changed. Roll back with --discard-later-changes (rollback_job: discard_later_changes) to restore the "
        "snapshot anyway"
    )
    rollback_to_snapshot(db, SCHEMA, folder, discard_later_changes=True)
    assert statuses(db) == {"run-a": "success", "run-b": "rolled_back"}


def test_a_migration_rolled_back_already_is_refused_with_when_if_known(migrate, db):
    migrate("run-a", A)
    folder = migrate("run-b", B)
    rollback_to_snapshot(db, SCHEMA, folder)
    when = db.execute("SELECT metadata->>'rolled_back_at' FROM migration_logs WHERE metadata->>'run_id' = 'run-b'").fetchone()[0]
    rest = ("nothing of it is in force to undo, and restoring its snapshot again would undo the migrations in force "
            "now and bring back what that rollback undid; nothing was changed. `faceit-etl status` lists the "
            "migrations in force")

    assert refused(db, folder) == f"{folder}: migration {log_id(db, 'run-b')} (run run-b) was rolled back already at {when}: {rest}"
    db.execute("UPDATE migration_logs SET metadata = metadata - 'rolled_back_at'")  # as an older faceit-etl left it
    assert refused(db, folder) == f"{folder}: migration {log_id(db, 'run-b')} (run run-b) was rolled back already: {rest}"


@pytest.mark.parametrize("status", ["failed", "running"])
def test_a_snapshot_whose_load_did_not_commit_is_refused(migrate, db, status):
    migrate("run-a", A)
    folder = migrate("run-b", B)
    db.execute("UPDATE migration_logs SET status = %s WHERE metadata->>'run_id' = 'run-b'", [status])

    assert refused(db, folder) == (
        f"{folder}: the load of run run-b did not commit (its migration is {status!r}): it changed nothing, there is "
        "nothing of it to roll back"
    )


def test_a_rerun_that_changed_nothing_is_refused_naming_the_run_that_did(migrate, db):
    migrate("run-a", A, identity="file-a")
    rerun = migrate("run-again", A, identity="file-a")

    assert refused(db, rerun) == (
        f"{rerun}: run run-again changed nothing (it found the tables as run run-a left them): roll back that run to "
        "undo its load"
    )
    refuse_not_in_force(db, SCHEMA, rerun)  # nothing of it to judge: no refusal


def test_a_snapshot_of_another_schema_is_refused(migrate, db):
    folder = migrate("run-a", A)

    assert refused(db, folder, schema="other") == f"{folder}: the snapshot is of schema 'public', not 'other'"


@pytest.mark.parametrize("origin", [{"name": "elsewhere"}, {"system_identifier": "12345"}])
def test_a_snapshot_of_another_database_is_refused(migrate, db, origin):
    migrate("run-a", A)
    folder = migrate("run-b", B)
    name, system = db.execute("SELECT current_database(), (pg_control_system()).system_identifier::text").fetchone()
    taken = {"name": name, "system_identifier": system} | origin
    edit_manifest(folder, lambda m: m["target"].update(database=taken))

    assert refused(db, folder) == (
        f"{folder}: the snapshot was taken from database {taken['name']!r} (system {taken['system_identifier']}), not "
        f"from this one, {name!r} (system {system}): restoring it would replace this database's rows with another's; "
        "nothing was changed"
    )


def test_a_rollback_asked_about_another_latest_migration_is_refused_first(migrate, db):
    first = migrate("run-a", A)
    second = migrate("run-b", B)
    meanwhile = ("a migration or a rollback finished meanwhile; nothing was changed. Run rollback again to be asked "
                 "about the tables as they are now")

    assert refused(db, second, expect_latest_run="run-a") == (
        f"the latest migration in force is no longer run run-a, as when you were asked, but run run-b: {meanwhile}"
    )
    rollback_to_snapshot(db, SCHEMA, second, expect_latest_run="run-b")
    rollback_to_snapshot(db, SCHEMA, first, expect_latest_run="run-a")
    # Asked about run-a, which is rolled back already: what changed under the question is said, not that.
    assert refused(db, first, expect_latest_run="run-a") == (
        f"the latest migration in force is no longer run run-a, as when you were asked, but none (every migration is "
        f"rolled back): {meanwhile}"
    )


def test_a_foreign_key_from_another_table_is_refused_even_when_told_to_discard(migrate, db):
    migrate("run-a", A)
    folder = migrate("run-b", B)
    db.execute("CREATE TABLE user_notes (id serial PRIMARY KEY, user_id uuid REFERENCES users (id), note text); "
               "INSERT INTO user_notes (user_id, note) SELECT id, 'vip' FROM users LIMIT 2")
    db.execute("CREATE TABLE vip_list (subscription uuid REFERENCES user_subscriptions (id))")
    said = ("refusing to roll back: other tables reference the bot's tables (user_notes (user_notes_user_id_fkey), "
            "vip_list (vip_list_subscription_fkey)), and restoring must empty them first; nothing was changed. Drop "
            "those foreign keys (or empty those tables) and roll back again")

    assert refused(db, folder) == said
    assert refused(db, folder, discard_later_changes=True) == said


def test_rows_out_of_the_rollbacks_sight_are_refused_even_when_told_to_discard(migrate, db):
    """A table inheriting from the bot's has its rows read as the table's, and restoring would move them into
    it; rows row-level security hides would be left out of the comparison and deleted: refused, each named."""
    migrate("run-a", A)
    folder = migrate("run-b", B)
    db.execute("CREATE TABLE users_archive () INHERITS (users); INSERT INTO users_archive SELECT * FROM ONLY users LIMIT 1")
    inherited = ("refusing to roll back: public.users_archive inherit(s) from public.users; restoring empties the "
                 "tables and compares every row, and would miss or move those; nothing was changed. Connect as a role "
                 "with BYPASSRLS (or disable row-level security on those tables), or move the inheriting tables' rows "
                 "out, and roll back again")

    assert refused(db, folder) == inherited
    assert refused(db, folder, discard_later_changes=True) == inherited

    db.execute("DROP TABLE users_archive; ALTER TABLE users ENABLE ROW LEVEL SECURITY")
    role = f"faceit_reader_{os.getpid()}"
    db.execute(sql.SQL("CREATE ROLE {} ; GRANT ALL ON ALL TABLES IN SCHEMA public TO {}").format(
        sql.Identifier(role), sql.Identifier(role)))
    try:
        db.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
        said = refused(db, folder, discard_later_changes=True)
    finally:
        db.execute("RESET ROLE")
        db.execute(sql.SQL("DROP OWNED BY {}; DROP ROLE {}").format(sql.Identifier(role), sql.Identifier(role)))
    assert said.startswith("refusing to roll back: row-level security hides rows of public.users from this role; ")
    rollback_to_snapshot(db, SCHEMA, folder)  # as the superuser, nothing is out of sight
    assert statuses(db) == {"run-a": "success", "run-b": "rolled_back"}


def test_what_depends_on_tables_a_rollback_would_drop_is_refused(migrate, db):
    folder = migrate("run-a", A)
    db.execute("CREATE SCHEMA shop")
    db.execute("CREATE VIEW shop.pro_users AS SELECT u.user_id FROM users u JOIN user_subscriptions s ON s.user_id = u.id")
    db.execute("CREATE VIEW plans AS SELECT tier FROM user_subscriptions")
    db.execute("CREATE TABLE tier_prices (tier subscriptiontier PRIMARY KEY, price numeric)")
    db.execute("CREATE TABLE bundles (tiers subscriptiontier[])")

    assert refused(db, folder) == (
        "refusing to roll back: the snapshot is from before the tables were created, and bundles.tiers, plans.tier, "
        "tier_prices.tier, view plans, view shop.pro_users depend(s) on what dropping them removes; nothing was "
        "changed. Drop those first and roll back again"
    )
    db.execute("DROP VIEW plans, shop.pro_users; DROP TABLE bundles")
    assert refused(db, folder).startswith("refusing to roll back: the snapshot is from before the tables were created, "
                                          "and tier_prices.tier depend(s) on ")


def test_a_view_of_tables_the_rollback_keeps_or_a_column_of_an_enum_it_keeps_refuses_nothing(migrate, db):
    db.execute("CREATE TYPE subscriptiontier AS ENUM ('FREE', 'PREMIUM', 'PRO')")
    db.execute("CREATE TABLE tier_prices (tier subscriptiontier PRIMARY KEY); INSERT INTO tier_prices VALUES ('PRO')")
    folder = migrate("run-a", A)  # made the tables, not the enum
    migrate("run-b", B)
    db.execute("CREATE VIEW pro_users AS SELECT user_id FROM users")
    after_b = tables(db)

    rollback_to_snapshot(db, SCHEMA, run_folder(folder.parent, "run-b"))
    assert tables(db) != after_b
    db.execute("DROP VIEW pro_users")
    result = rollback_to_snapshot(db, SCHEMA, folder)

    assert result.dropped == ["users", "user_subscriptions"]
    assert tables(db) == {"users": None, "user_subscriptions": None, "subscriptiontier": ["FREE", "PREMIUM", "PRO"]}
    assert db.execute("SELECT tier::text FROM tier_prices").fetchall() == [("PRO",)]


def test_a_snapshot_that_does_not_say_whether_the_enum_existed_keeps_it(migrate, db):
    """Manifests written before that was recorded: the enum may be the bot's own, so it is neither dropped nor
    guarded."""
    folder = migrate("run-a", A)
    edit_manifest(folder, lambda m: m["target"].pop("tier_type_existed"))
    db.execute("CREATE TABLE tier_prices (tier subscriptiontier PRIMARY KEY)")

    rollback_to_snapshot(db, SCHEMA, folder)

    assert tables(db) == {"users": None, "user_subscriptions": None, "subscriptiontier": ["FREE", "PREMIUM", "PRO"]}


@pytest.mark.parametrize("damage", ["file", "entry", "manifest", "none"])
def test_a_snapshot_that_is_not_whole_is_refused_before_anything(migrate, db, damage):
    migrate("run-a", A)
    folder = migrate("run-b", B)
    if damage == "entry":
        edit_manifest(folder, lambda m: m["target"]["tables"].pop("users"))
        said = (f"{folder / MANIFEST}: no entry for table users (its snapshot file, or that the table was absent then); "
                f"{NOT_WHOLE}")
    elif damage == "file":
        copy = folder / "users.copy"
        data = bytearray(copy.read_bytes())
        data[0] = ord("z")
        copy.write_bytes(bytes(data))
        said = f"{copy}: altered: it has the {len(data)} bytes the manifest records, but not their sha256; {NOT_WHOLE}"
    elif damage == "manifest":
        (folder / MANIFEST).write_text("[]")
        said = f"{folder / MANIFEST}: damaged, not a manifest's JSON (a list, not an object); nothing was changed"
    else:
        (folder / MANIFEST).unlink()
        said = f"{folder}: no manifest.json here; not a faceit-etl backup folder; nothing was changed"

    assert refused(db, folder) == said
    with pytest.raises(RollbackRefused) as raised:
        snapshot_manifest(folder)
    assert str(raised.value) == said


# --------------------------------------------------------------------------------- no snapshot


@pytest.mark.parametrize(
    ("manifest", "row", "latest", "what"),
    [
        ({"no_snapshot": "dry run"}, None, False, "run run-x was a dry run: it wrote nothing, so there is nothing to roll back"),
        ({"no_snapshot": "backup_tables off"}, None, True,
         "run run-x was made with --no-backup (backup_tables off), which takes none: cannot roll back to before it"),
        ({}, ("success", {"settings": {"backup_tables": False}}), False,
         "run run-x was made with --no-backup (backup_tables off), which takes none: cannot roll back to before it"),
        ({"source": {}}, None, True,
         "this `backup` copied the file only (the tables could not be reached then), so it cannot be restored"),
        ({}, ("failed", {"settings": {"backup_tables": True}}), True,
         "run run-x failed: its load did not commit, it wrote nothing, so there is nothing to roll back"),
        ({}, ("running", {}), False,
         "run run-x is 'running' in migration_logs: its load did not commit, it wrote nothing, so there is nothing to "
         "roll back"),
        ({}, None, True, "run run-x failed before its load (its rejects, or a target it refused) and wrote nothing, so "
                         "there is nothing to roll back"),
    ],
)
def test_a_backup_without_a_snapshot_says_why_and_what_to_roll_back_instead(db, backups, manifest, row, latest, what):
    run_id = "manual-x" if "source" in manifest else "run-x"
    what = what.replace("run-x", run_id)
    folder = run_folder(backups, run_id)
    start_manifest(folder, run_id, run_id)
    update_manifest(folder, **manifest)
    ensure_bookkeeping_tables(db, SCHEMA)
    if row is not None:
        logged(db, run_id, row[0], row[1])
    if latest:
        other = logged(db, "run-latest", "success", {"locked_at": "2999-01-01T00:00:00+00:00"})
        instead = f"The latest committed migration is {other} (run run-latest): roll that one back instead"
    else:
        instead = "`faceit-etl status` lists the migrations that committed"

    assert refused(db, folder) == f"{folder}: this backup holds no snapshot of the tables: {what}. {instead}"


def test_a_backup_without_a_snapshot_in_a_database_that_logged_nothing_says_its_run_wrote_nothing(db, backups):
    folder = run_folder(backups, "run-x")
    start_manifest(folder, "run-x", "run-x")

    assert refused(db, folder) == (
        f"{folder}: this backup holds no snapshot of the tables: run run-x failed before its load (its rejects, or a "
        "target it refused) and wrote nothing, so there is nothing to roll back. `faceit-etl status` lists the "
        "migrations that committed"
    )


# ------------------------------------------------------------------------------ choosing a backup


def test_a_backup_is_chosen_by_folder_manifest_log_id_run_id_or_as_the_latest_that_changed_something(migrate, db, backups):
    first = migrate("run-a", A)
    second = migrate("run-b", B)
    migrate("run-same", B)  # found everything as run-b left it: changed nothing

    def chosen(**named) -> Path:
        return find_backup(db, SCHEMA, backups, **named)

    assert chosen() == second
    assert latest_committed(db, SCHEMA) == (log_id(db, "run-b"), "run-b")
    assert chosen(migration_id="run-a") == first
    assert chosen(migration_id=log_id(db, "run-a")) == first
    assert chosen(backup_path=first) == first
    assert chosen(backup_path=str(first / MANIFEST)) == first


@pytest.mark.parametrize(
    ("named", "said"),
    [
        ({"backup_path": ""}, "backup_path is empty or only white space, which names nothing: name a migration or a "
                              "backup folder, or leave it out to roll back the latest migration"),
        ({"migration_id": " \t"}, "migration_id is empty or only white space, which names nothing: name a migration or "
                                  "a backup folder, or leave it out to roll back the latest migration"),
        ({"backup_path": "x", "migration_id": "y"}, BOTH_NAMED.format(backup_path="backup_path", migration_id="migration_id")),
        ({"migration_id": "run-z"}, "no migration 'run-z' in public.migration_logs"),
        ({}, "no successful migration to roll back (migration_logs has none)"),
    ],
)
def test_a_backup_that_cannot_be_chosen_is_refused_in_words(db, backups, named, said):
    logged(db, "run-failed", "failed", {})
    with pytest.raises(RollbackRefused) as raised:
        find_backup(db, SCHEMA, backups, **named)
    assert str(raised.value) == said


def test_a_folder_without_a_manifest_or_a_database_without_a_log_chooses_nothing(db, tmp_path):
    (tmp_path / MANIFEST).mkdir()
    with pytest.raises(RollbackRefused) as raised:
        find_backup(db, SCHEMA, tmp_path, backup_path=tmp_path)
    assert str(raised.value) == f"{tmp_path}: no manifest.json here; not a faceit-etl backup folder"
    with pytest.raises(RollbackRefused) as raised:
        find_backup(db, "elsewhere", tmp_path)
    assert str(raised.value) == "no migration has been recorded in elsewhere.migration_logs: nothing to roll back"
    assert latest_committed(db, "elsewhere") is None


NOTHING_CHANGED = {"created_tables": False, **{
    table: {"inserted": 0, "updated": 0, "unchanged": 2, "kept_absent": 3, "kept_rejected": 1, "deleted": 0}
    for table in ("users", "subscriptions")}}


@pytest.mark.parametrize(
    ("load", "changed"),
    [
        (None, True),  # an older faceit-etl's row: taken to have changed something
        (NOTHING_CHANGED, False),  # rows kept or unchanged only
        (NOTHING_CHANGED | {"created_tables": True}, True),
        # One count of one table, every other count as above (a prune that only deleted, say).
        *((NOTHING_CHANGED | {name: NOTHING_CHANGED[name] | {count: 1}}, True)
          for name in ("users", "subscriptions") for count in ("inserted", "updated", "deleted")),
    ],
)
def test_the_latest_migration_that_changed_something_is_chosen_by_when_it_took_the_lock(db, load, changed):
    logged(db, "run-old", "success", {"locked_at": "2026-01-02T00:00:00+00:00"})
    logged(db, "run-new", "success", {"locked_at": "2026-01-03T00:00:00+00:00"} | ({"load": load} if load else {}))
    logged(db, "run-started-last", "success", {"locked_at": "2026-01-01T00:00:00+00:00"})
    logged(db, "run-failed", "failed", {"locked_at": "2026-01-04T00:00:00+00:00"})

    assert latest_committed(db, SCHEMA)[1] == ("run-new" if changed else "run-old")


# ------------------------------------------------------------------------------------ the words


@pytest.mark.parametrize(
    ("manifest", "run", "words"),
    [
        ({"run_id": "run-b", "target": {"run_id": "run-b"}}, "run-b", "the snapshot taken before run run-b"),
        ({"run_id": "run-b", "target": {"run_id": "run-b", "snapshot_of_run": "run-a"}}, "run-a",
         "the snapshot taken before run run-a (by its load; run run-b resumed it)"),
        ({"run_id": "run-c", "target": {"run_id": "run-d"}}, "run-d", "the snapshot taken before run run-d"),
        ({"run_id": "run-e", "target": {}}, "run-e", "the snapshot taken before run run-e"),
        ({"run_id": "run-f", "target": None}, "run-f", "the snapshot taken before run run-f"),
        ({"run_id": "run-g"}, "run-g", "the snapshot taken before run run-g"),
        ({"run_id": "manual-1", "source": {}, "target": {"schema": "public"}}, None, "the manual backup /b/manual-1"),
    ],
)
def test_a_snapshot_is_named_by_the_run_whose_load_took_it_or_as_a_manual_backup(manifest, run, words):
    assert snapshot_of_run(manifest) == run
    assert restored_to(Path("/b") / manifest["run_id"], manifest) == words


def test_a_server_error_stops_a_rollback_in_its_own_sentence_without_the_row_it_quotes(db):
    db.execute("CREATE TABLE t (nick text CHECK (nick <> 'Private-Nick'))")

    with pytest.raises(RollbackError) as raised, server_errors_without_rows():
        db.execute("INSERT INTO t VALUES ('Private-Nick')")

    assert type(raised.value) is RollbackError
    assert str(raised.value) == ('PostgreSQL stopped the rollback: new row for relation "t" violates check constraint '
                                 '"t_nick_check" (table public.t, constraint t_nick_check); nothing was changed')
    assert raised.value.__cause__ is None and raised.value.__suppress_context__
    with pytest.raises(KeyError), server_errors_without_rows():  # anything else goes by as it is
        raise KeyError("x")


def test_a_question_about_a_snapshot_not_in_force_is_refused_before_it_is_asked(migrate, db, backups):
    migrate("run-a", A)
    folder = migrate("run-b", B)
    refuse_not_in_force(db, SCHEMA, folder)  # in force: nothing to refuse
    rollback_to_snapshot(db, SCHEMA, folder)

    with pytest.raises(RollbackRefused) as raised:
        refuse_not_in_force(db, SCHEMA, folder)
    assert str(raised.value).startswith(f"{folder}: migration {log_id(db, 'run-b')} (run run-b) was rolled back already at ")
    edit_manifest(folder, lambda m: m["target"].pop("run_id"))  # as an older faceit-etl wrote it: the folder's run
    with pytest.raises(RollbackRefused):
        refuse_not_in_force(db, SCHEMA, folder)
    refuse_not_in_force(db, "elsewhere", folder)  # no log there: nothing to judge
    bare = run_folder(backups, "run-x")
    start_manifest(bare, "run-x", "run-x")
    refuse_not_in_force(db, SCHEMA, bare)  # no snapshot: the rollback itself says why


# ----------------------------------------------------------------------------- snapshot.py itself


def test_a_snapshot_records_each_table_its_definition_the_enum_the_database_and_its_instant(migrate, db, tmp_path):
    migrate("run-a", A)
    expected = digests(db)
    folder = tmp_path / "snap"
    folder.mkdir()
    before = db.execute("SELECT clock_timestamp()").fetchone()[0]
    db.execute("SET TIME ZONE 'Asia/Tokyo'")  # the files are in UTC whatever the session's zone, which is kept

    target = take_snapshot(db, SCHEMA, folder)

    assert db.execute("SELECT current_setting('TimeZone')").fetchone()[0] == "Asia/Tokyo"

    name, system = db.execute("SELECT current_database(), (pg_control_system()).system_identifier::text").fetchone()
    assert (target["schema"], target["database"]) == (SCHEMA, {"system_identifier": system, "name": name})
    assert (target["tier_type_existed"], target["tier_type_labels"]) == (True, ["FREE", "PREMIUM", "PRO"])
    assert before <= db.execute("SELECT %s::timestamptz", [target["locked_at"]]).fetchone()[0] <= \
        db.execute("SELECT clock_timestamp()").fetchone()[0]
    for name in TABLES:
        entry, copy = target["tables"][name], folder / f"{name}.copy"
        columns = [r[0] for r in db.execute("SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 "
                                            "AND NOT attisdropped ORDER BY attnum", [name])]
        assert {k: entry[k] for k in ("rows", "sha256", "file", "bytes", "columns")} == {
            "rows": expected[name].rows, "sha256": expected[name].sha256, "file": f"{name}.copy",
            "bytes": copy.stat().st_size, "columns": columns,
        }
        assert hashlib.sha256(copy.read_bytes()).hexdigest() == expected[name].sha256
        assert stat.S_IMODE(copy.stat().st_mode) == 0o600
    assert [c["name"] for c in target["tables"]["users"]["definition"]["columns"]] == target["tables"]["users"]["columns"]
    with psycopg.connect(db.info.dsn, autocommit=True) as other:  # the lock is let go
        assert other.execute("SELECT pg_try_advisory_lock(%s)", [advisory_lock_key(SCHEMA)]).fetchone()[0] is True
    assert db.execute("SELECT current_setting('search_path')").fetchone()[0] == '"$user", public'


def test_a_snapshot_of_no_tables_records_their_absence(db, tmp_path):
    target = take_snapshot(db, SCHEMA, tmp_path)

    assert (target["tables"], target["tier_type_existed"], target["tier_type_labels"]) == (
        {"users": None, "user_subscriptions": None}, False, None)
    assert list(tmp_path.iterdir()) == []


def test_generated_identity_and_default_columns_are_made_again_as_they_were(db, tmp_path):
    with db.transaction():
        ensure_target_tables(db, SCHEMA)
    db.execute("""ALTER TABLE users ADD COLUMN doubled int GENERATED ALWAYS AS (total_requests * 2) STORED,
                                    ADD COLUMN tripled int GENERATED ALWAYS AS (total_requests * 3) VIRTUAL,
                                    ADD COLUMN serial_a bigint GENERATED ALWAYS AS IDENTITY,
                                    ADD COLUMN serial_d bigint GENERATED BY DEFAULT AS IDENTITY,
                                    ADD COLUMN note text NOT NULL DEFAULT 'hi'""")
    db.execute("INSERT INTO users (id, user_id, total_requests) VALUES (gen_random_uuid(), 1, 5), (gen_random_uuid(), 2, 7)")
    columns = """SELECT attname, format_type(atttypid, atttypmod), attnotnull, attgenerated, attidentity,
                        pg_get_expr(adbin, adrelid) FROM pg_attribute LEFT JOIN pg_attrdef ON adrelid = attrelid
                 AND adnum = attnum WHERE attrelid = 'users'::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum"""
    before = db.execute(columns).fetchall(), shape(db), tables(db)
    snapshot = take_snapshot(db, SCHEMA, tmp_path)
    db.execute("DROP TABLE user_subscriptions, users")

    restored = restore_snapshot(db, tmp_path, snapshot)

    assert (db.execute(columns).fetchall(), shape(db), tables(db)) == before
    assert restored == {name: TableDigest(snapshot["tables"][name]["rows"], snapshot["tables"][name]["sha256"])
                        for name in TABLES}


def test_a_table_gone_that_the_snapshot_cannot_make_again_is_refused(migrate, db, tmp_path):
    migrate("run-a", A)
    snapshot = take_snapshot(db, SCHEMA, tmp_path)
    del snapshot["tables"]["user_subscriptions"]["definition"]  # as an older faceit-etl wrote it
    db.execute("DROP TABLE user_subscriptions")
    before = everything(db)

    with pytest.raises(SnapshotError) as raised:
        restore_snapshot(db, tmp_path, snapshot)

    assert str(raised.value) == ("table public.user_subscriptions is gone and this snapshot holds no definition to make "
                                 "it again; nothing was changed")
    assert everything(db) == before


def test_a_schema_gone_is_made_again_or_refused_to_a_role_that_may_not(db, tmp_path):
    db.execute("CREATE SCHEMA gone")
    with db.transaction():
        ensure_target_tables(db, "gone")
    db.execute("INSERT INTO gone.users (id, user_id) VALUES (gen_random_uuid(), 1)")
    snapshot, rows = take_snapshot(db, "gone", tmp_path), tables(db, "gone")
    db.execute("DROP SCHEMA gone CASCADE")
    role = f"no_create_{os.getpid()}"
    db.execute(sql.SQL("CREATE ROLE {}").format(sql.Identifier(role)))
    try:
        db.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
        with pytest.raises(SnapshotError) as raised:
            restore_snapshot(db, tmp_path, snapshot)
        db.execute("RESET ROLE")
    finally:
        db.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))
    assert str(raised.value) == ("schema gone is gone and this role may not create it: a superuser must create it (owned "
                                 "by this role) first; nothing was changed")

    restore_snapshot(db, tmp_path, snapshot)

    assert tables(db, "gone") == rows


# --------------------------------------------------------------------------- a snapshot not whole

USERS_COPY = b"1\tana\n2\tbo\n3\tcy\n"
SUBSCRIPTIONS_COPY = b""


def entry(name: str, data: bytes, **changes) -> dict:
    return {"rows": data.count(b"\n"), "sha256": hashlib.sha256(data).hexdigest(), "file": f"{name}.copy",
            "bytes": len(data)} | changes


@pytest.fixture
def whole(tmp_path) -> tuple[Path, dict]:
    """A folder with a whole snapshot: three users, no subscription (a whole empty file)."""
    (tmp_path / "users.copy").write_bytes(USERS_COPY)
    (tmp_path / "user_subscriptions.copy").write_bytes(SUBSCRIPTIONS_COPY)
    return tmp_path, {"tables": {"users": entry("users", USERS_COPY),
                                 "user_subscriptions": entry("user_subscriptions", SUBSCRIPTIONS_COPY)}}


def test_a_whole_snapshot_has_no_damage_nor_one_of_an_absent_table(whole):
    folder, snapshot = whole
    assert snapshot_damage(folder / MANIFEST, folder, snapshot) is None
    snapshot["tables"]["users"] = None
    assert snapshot_damage(folder / MANIFEST, folder, snapshot) is None
    snapshot["tables"]["user_subscriptions"] = entry("user_subscriptions", b"", bytes=None)  # sizes not recorded yet
    assert snapshot_damage(folder / MANIFEST, folder, snapshot) is None


NOT_A_SNAPSHOTS = "the entry for table users is not a snapshot's (its file users.copy, a row count and a sha256)"


@pytest.mark.parametrize(
    ("change", "said"),
    [
        (lambda f, s: s.pop("tables"), "{manifest}: no entry for table users (its snapshot file, or that the table was absent then)"),
        (lambda f, s: s.update(tables=[]), "{manifest}: no entry for table users (its snapshot file, or that the table was absent then)"),
        (lambda f, s: s["tables"].pop("user_subscriptions"),
         "{manifest}: no entry for table user_subscriptions (its snapshot file, or that the table was absent then)"),
        (lambda f, s: s["tables"].update(users="users.copy"), "{manifest}: " + NOT_A_SNAPSHOTS),
        *((lambda f, s, k=k, v=v: s["tables"]["users"].update({k: v}), "{manifest}: " + NOT_A_SNAPSHOTS)
          for k, v in (("file", "../users.copy"), ("file", "user_subscriptions.copy"), ("rows", -1), ("rows", True),
                       ("rows", "3"), ("rows", None), ("sha256", None), ("sha256", "A" * 64), ("sha256", "a" * 63),
                       ("bytes", -1), ("bytes", "20"), ("bytes", False))),
        (lambda f, s: s["tables"]["users"].pop("sha256"), "{manifest}: " + NOT_A_SNAPSHOTS),
        (lambda f, s: (f / "users.copy").unlink(), "{users}: missing (the manifest records 3 rows of users in it)"),
        (lambda f, s: ((f / "users.copy").unlink(), (f / "users.copy").mkdir()), "{users}: cannot be read (Is a directory)"),
        (lambda f, s: s["tables"]["users"].update(rows=4),
         "{manifest}: the entry for table users records 4 rows and 16 bytes, but users.copy, whose sha256 it records, "
         "holds 3 rows and 16 bytes: the manifest was altered"),
        (lambda f, s: s["tables"]["users"].update(bytes=17),
         "{manifest}: the entry for table users records 3 rows and 17 bytes, but users.copy, whose sha256 it records, "
         "holds 3 rows and 16 bytes: the manifest was altered"),
        (lambda f, s: s["tables"]["users"].update(rows=2, bytes=None),
         "{manifest}: the entry for table users records 2 rows, but users.copy, whose sha256 it records, holds 3 rows "
         "and 16 bytes: the manifest was altered"),
        (lambda f, s: (f / "users.copy").write_bytes(b""), "{users}: empty, but the manifest records 3 rows in it"),
        (lambda f, s: ((f / "users.copy").write_bytes(USERS_COPY[:9]), s["tables"]["users"].pop("bytes")),
         "{users}: truncated or damaged: its sha256 does not match the manifest's (1 rows in it, 3 recorded)"),
        (lambda f, s: (f / "users.copy").write_bytes(USERS_COPY[:9]), "{users}: truncated: 9 bytes of the 16 the manifest records"),
        (lambda f, s: (f / "users.copy").write_bytes(USERS_COPY + b"4\tdee\n"),
         "{users}: 6 bytes more than the 16 the manifest records"),
        (lambda f, s: (f / "users.copy").write_bytes(USERS_COPY.replace(b"ana", b"ann")),
         "{users}: altered: it has the 16 bytes the manifest records, but not their sha256"),
    ],
)
def test_a_snapshot_that_is_not_whole_is_named_with_what_is_wrong(whole, change, said):
    folder, snapshot = whole
    change(folder, snapshot)

    assert snapshot_damage(folder / MANIFEST, folder, snapshot) == said.format(
        manifest=folder / MANIFEST, users=folder / "users.copy")
