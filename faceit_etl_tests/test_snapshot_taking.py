"""Taking a snapshot, checking its files and restoring it, directly: the schema's lock is let go exactly
once whatever happens; the files are checked whole however large, for every table the snapshot holds; and
the restore writes the columns the files hold, for every shape of snapshot (an older manifest's, one taken
when only one table existed, a table with a column added since)."""

from __future__ import annotations

import hashlib
import json

import psycopg
import pytest

from faceit_etl.postgres.ddl import ensure_target_tables, table_exists
from faceit_etl.postgres import snapshot
from faceit_etl.postgres.lock import advisory_lock_key
from faceit_etl.backups import CHUNK, MANIFEST, start_manifest
from faceit_etl.postgres.snapshot import (
    UNCHANGED_SINCE,
    TableDigest,
    restore_snapshot,
    snapshot_damage,
    snapshot_for_load,
    take_snapshot,
)
from faceit_etl_tests.test_restore import SCHEMA, tables

KEY = advisory_lock_key(SCHEMA)


@pytest.fixture
def filled(db):
    with db.transaction():
        ensure_target_tables(db, SCHEMA)
    db.execute("INSERT INTO users (id, user_id, faceit_nickname) VALUES (gen_random_uuid(), 1, 'a'), "
               "(gen_random_uuid(), 2, 'b')")
    db.execute("INSERT INTO user_subscriptions (id, user_id, tier) SELECT gen_random_uuid(), id, 'PRO' FROM users")
    return db


def lock_is_free(database_url: str) -> bool:
    """Whether another session can take the schema's lock now (and it lets go of it again)."""
    with psycopg.connect(database_url, autocommit=True) as other:
        taken = other.execute("SELECT pg_try_advisory_lock(%s)", [KEY]).fetchone()[0]
        if taken:
            other.execute("SELECT pg_advisory_unlock(%s)", [KEY])
        return taken


@pytest.mark.parametrize("autocommit", [True, False], ids=["autocommit", "in transactions"])
def test_a_snapshot_that_fails_holding_the_lock_lets_it_go_and_raises_what_failed(filled, database_url, tmp_path,
                                                                                  autocommit):
    """The instant is read under the lock: a failure there must not leave the lock held, or every later
    load would wait for it forever. It is made to fail by a `clock_timestamp` found before pg_catalog's."""
    filled.execute("CREATE SCHEMA trap")
    filled.execute("CREATE FUNCTION trap.clock_timestamp() RETURNS timestamptz LANGUAGE plpgsql "
                   "AS $$BEGIN RAISE EXCEPTION 'the instant cannot be read'; END$$")
    with psycopg.connect(database_url, autocommit=autocommit) as conn:
        conn.execute("SET search_path = trap, pg_catalog, public")
        if not autocommit:
            conn.commit()

        with pytest.raises(psycopg.errors.RaiseException, match="^the instant cannot be read"):
            take_snapshot(conn, SCHEMA, tmp_path)

        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE  # no transaction left open
        assert lock_is_free(database_url)
    assert list(tmp_path.iterdir()) == []


def test_taking_a_snapshot_lets_go_of_the_lock_it_took_and_no_more(filled, database_url, tmp_path):
    """A session's advisory locks stack: one its caller holds must still be held afterwards."""
    filled.execute("SELECT pg_advisory_lock(%s)", [KEY])

    snapshot = take_snapshot(filled, SCHEMA, tmp_path)

    assert not lock_is_free(database_url)
    assert filled.execute("SELECT pg_advisory_unlock(%s)", [KEY]).fetchone()[0]  # still held once, by the caller
    assert lock_is_free(database_url)
    assert {name: entry["rows"] for name, entry in snapshot["tables"].items()} == {"users": 2, "user_subscriptions": 2}


def test_an_older_manifest_without_columns_restores_every_column(filled, tmp_path):
    """Manifests written before the columns were recorded hold every column in their files."""
    before = tables(filled)
    snapshot = take_snapshot(filled, SCHEMA, tmp_path)
    for entry in snapshot["tables"].values():
        del entry["columns"]
    filled.execute("UPDATE users SET faceit_nickname = 'changed'; DELETE FROM user_subscriptions")

    restored = restore_snapshot(filled, tmp_path, snapshot)

    assert tables(filled) == before
    assert restored == {name: TableDigest(entry["rows"], entry["sha256"]) for name, entry in snapshot["tables"].items()}


def test_a_column_added_since_the_snapshot_gets_its_default_and_the_rest_comes_back(filled, tmp_path):
    """The files hold the snapshot's columns: the restore names them, so a column added since takes its default."""
    before = tables(filled)
    snapshot = take_snapshot(filled, SCHEMA, tmp_path)
    filled.execute("ALTER TABLE users ADD COLUMN note text DEFAULT 'added since'")
    filled.execute("UPDATE users SET faceit_nickname = 'changed', note = 'edited'")

    restore_snapshot(filled, tmp_path, snapshot)

    assert filled.execute("SELECT user_id, note FROM users ORDER BY user_id").fetchall() == [
        (1, "added since"), (2, "added since")]
    filled.execute("ALTER TABLE users DROP COLUMN note")  # what is left must be the snapshot's rows, exactly
    assert tables(filled) == before


def test_a_snapshot_taken_when_only_the_subscriptions_existed_restores_them_and_drops_users(db, tmp_path):
    """The tables are restored one by one: users absent then must not stop the subscriptions' restore."""
    with db.transaction():
        ensure_target_tables(db, SCHEMA)
    db.execute("DROP TABLE users CASCADE")  # the subscriptions' foreign key goes with it
    db.execute("INSERT INTO user_subscriptions (id, user_id, tier) VALUES (gen_random_uuid(), gen_random_uuid(), 'PRO')")
    before = tables(db)
    snapshot = take_snapshot(db, SCHEMA, tmp_path)
    db.execute("DELETE FROM user_subscriptions")
    db.execute("CREATE TABLE users (id uuid PRIMARY KEY, user_id bigint)")

    restored = restore_snapshot(db, tmp_path, snapshot)

    entry = snapshot["tables"]["user_subscriptions"]
    assert restored == {"user_subscriptions": TableDigest(entry["rows"], entry["sha256"])}  # and verified
    assert snapshot["tables"]["users"] is None and not table_exists(db, SCHEMA, "users")
    assert tables(db) == before and len(before["user_subscriptions"]) == 1


def entry_for(path, data: bytes) -> dict:
    return {"file": path.name, "rows": data.count(b"\n"), "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}


def test_a_snapshot_file_larger_than_a_read_is_counted_whole(tmp_path):
    """Files are read in chunks of CHUNK bytes: the size and rows of every chunk count, not the last one's."""
    data = b"".join(b"%d\tuser-%d\n" % (n, n) for n in range(CHUNK // 5))  # over two and a half chunks
    path = tmp_path / "users.copy"
    path.write_bytes(data)
    snapshot = {"tables": {"users": entry_for(path, data), "user_subscriptions": None}}
    assert len(data) > 2 * CHUNK

    assert snapshot_damage(tmp_path / "manifest.json", tmp_path, snapshot) is None
    path.write_bytes(data[:-len(b"%d\tuser-%d\n" % (CHUNK // 5 - 1, CHUNK // 5 - 1))])
    assert snapshot_damage(tmp_path / "manifest.json", tmp_path, snapshot) == (
        f"{path}: truncated: {path.stat().st_size} bytes of the {len(data)} the manifest records")


def test_the_subscriptions_file_is_checked_when_users_were_absent_then(tmp_path):
    data = b"a\tb\tPRO\n"
    entry = entry_for(tmp_path / "user_subscriptions.copy", data)
    snapshot = {"tables": {"users": None, "user_subscriptions": entry}}

    assert snapshot_damage(tmp_path / "manifest.json", tmp_path, snapshot) == (
        f"{tmp_path / 'user_subscriptions.copy'}: missing (the manifest records 1 rows of user_subscriptions in it)")


def test_a_load_that_recognises_its_input_records_the_run_it_found_and_the_schema(tmp_path):
    """What a resumed run and the rollback read of it: the schema, the earlier run, the tables' fingerprint."""
    start_manifest(tmp_path, "run-b", "run-b")
    found = {"users": "2:17", "user_subscriptions": "2:5"}

    target = snapshot_for_load(None, "not used", "bot", tmp_path, "run-b", "run-a", found)

    expected = {"schema": "bot", UNCHANGED_SINCE: "run-a", "fingerprint": found, "run_id": "run-b"}
    assert target == expected and json.loads((tmp_path / MANIFEST).read_text())["target"] == expected
    assert list(tmp_path.iterdir()) == [tmp_path / MANIFEST]


def test_both_tables_are_copied_as_they_were_at_one_instant_while_the_bot_writes(filled, database_url, tmp_path,
                                                                                 monkeypatch):
    """Another session commits a user and its subscription between the two tables' copies: the snapshot
    holds neither, so it never restores a subscription whose user it lacks."""
    copied = []

    def bot_writes_after_the_users_copy(conn, schema, name, sink, columns):
        digest = digest_table(conn, schema, name, sink, columns)
        copied.append(name)
        if name == "users":
            filled.execute("WITH u AS (INSERT INTO users (id, user_id) VALUES (gen_random_uuid(), 3) RETURNING id) "
                           "INSERT INTO user_subscriptions (id, user_id, tier) SELECT gen_random_uuid(), id, 'PRO' FROM u")
        return digest

    digest_table = snapshot.digest_table
    monkeypatch.setattr(snapshot, "digest_table", bot_writes_after_the_users_copy)
    with psycopg.connect(database_url, autocommit=True) as conn:
        taken = take_snapshot(conn, SCHEMA, tmp_path)

    assert copied == ["users", "user_subscriptions"]
    assert {name: table["rows"] for name, table in taken["tables"].items()} == {"users": 2, "user_subscriptions": 2}
    assert (tmp_path / "user_subscriptions.copy").read_bytes().count(b"\n") == 2
    assert filled.execute("SELECT count(*) FROM user_subscriptions").fetchone()[0] == 3
