"""The tables keep every property of their keys and indexes through a load and its rollback.

Loading empty tables takes a fast path that sets their keys aside and builds them again after the
COPY. Whatever an operator or the bot's Alembic gave those keys (comments, CLUSTER marks, REPLICA
IDENTITY, tablespace, fillfactor, deferrability, a renamed primary key, an index column's statistics
target) must be there afterwards, read from the catalog by this test's own query.
"""

from __future__ import annotations

import os
import tempfile

import dagster as dg
import psycopg
import pytest
from psycopg import sql

from faceit_etl.defs.checks import CHECKS
from faceit_etl.postgres.keys import KeysNotRestored, refuse_changed_catalog
from faceit_etl.postgres.load import load
from faceit_etl.restore import find_backup, rollback_to_snapshot
from faceit_etl_tests.conftest import ASSETS, make_resources, write_json
from faceit_etl_tests.test_load import ALEMBIC_DDL, SCHEMA, chain, document

# Every property a key or index can carry that its CREATE statement does not restate.
PROPERTIES = """
COMMENT ON INDEX ix_users_faceit_nickname IS 'nickname lookups';
COMMENT ON INDEX users_pkey IS 'the ORM''s uuid';
ALTER INDEX users_pkey RENAME TO pk_users_orm;
COMMENT ON CONSTRAINT pk_users_orm ON users IS 'primary key, renamed';
COMMENT ON CONSTRAINT user_subscriptions_user_id_fkey ON user_subscriptions IS 'one subscription per user';
ALTER TABLE user_subscriptions ALTER CONSTRAINT user_subscriptions_user_id_fkey DEFERRABLE INITIALLY DEFERRED;
ALTER TABLE users CLUSTER ON ix_users_faceit_player_id;
ALTER TABLE users REPLICA IDENTITY USING INDEX ix_users_user_id;
ALTER TABLE user_subscriptions REPLICA IDENTITY USING INDEX user_subscriptions_user_id_key;
ALTER INDEX ix_users_faceit_player_id SET (fillfactor = 70);
ALTER INDEX user_subscriptions_referral_code_key SET (fillfactor = 80);
CREATE INDEX ix_users_lower_nickname ON users (lower(faceit_nickname)) WHERE faceit_nickname IS NOT NULL;
ALTER INDEX ix_users_lower_nickname ALTER COLUMN 1 SET STATISTICS 500;
COMMENT ON TABLE users IS 'the bot''s users';
"""

CATALOG = """
SELECT 'index', c.relname, ix.relname, pg_get_indexdef(i.indexrelid), i.indisclustered, i.indisreplident,
       i.indisunique, i.indimmediate, i.indisvalid, coalesce(ts.spcname, '(default)'), ix.reloptions::text,
       obj_description(ix.oid, 'pg_class'),
       (SELECT array_agg(a.attstattarget ORDER BY a.attnum)::text FROM pg_attribute a WHERE a.attrelid = ix.oid)
FROM pg_index i JOIN pg_class ix ON ix.oid = i.indexrelid JOIN pg_class c ON c.oid = i.indrelid
LEFT JOIN pg_tablespace ts ON ts.oid = ix.reltablespace
WHERE c.relname IN ('users', 'user_subscriptions') AND c.relnamespace = 'public'::regnamespace
UNION ALL
SELECT 'constraint', c.relname, k.conname, pg_get_constraintdef(k.oid), k.condeferrable, k.condeferred,
       k.convalidated, NULL, NULL, (SELECT relname FROM pg_class WHERE oid = k.conindid), k.contype::text,
       obj_description(k.oid, 'pg_constraint'), NULL
FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid
WHERE c.relname IN ('users', 'user_subscriptions') AND c.relnamespace = 'public'::regnamespace
UNION ALL
SELECT 'table', c.relname, c.relreplident::text, c.reloptions::text, NULL, NULL, NULL, NULL, NULL,
       coalesce(ts.spcname, '(default)'), NULL, obj_description(c.oid, 'pg_class'), NULL
FROM pg_class c LEFT JOIN pg_tablespace ts ON ts.oid = c.reltablespace
WHERE c.relname IN ('users', 'user_subscriptions') AND c.relnamespace = 'public'::regnamespace
ORDER BY 1, 2, 3
"""


def catalog(db) -> list[tuple]:
    return db.execute(CATALOG).fetchall()


@pytest.fixture
def tablespace(db):
    """A tablespace of its own for two indexes."""
    folder = tempfile.mkdtemp(prefix="faceit-etl-ts-")
    owner = os.stat(db.execute("SHOW data_directory").fetchone()[0])
    os.chown(folder, owner.st_uid, owner.st_gid)  # the server's own user must own it
    name = f"ts_{os.path.basename(folder).replace('-', '_').lower()}"
    db.execute(sql.SQL("CREATE TABLESPACE {} LOCATION {}").format(sql.Identifier(name), sql.Literal(folder)))
    yield name
    db.execute("DROP TABLE IF EXISTS user_subscriptions, users")
    db.execute(sql.SQL("DROP TABLESPACE {}").format(sql.Identifier(name)))


@pytest.fixture
def alembic_tables_with_properties(db, tablespace) -> list[tuple]:
    """The bot's Alembic tables, empty, every property set; returns their catalog rows."""
    db.execute(ALEMBIC_DDL)
    db.execute(PROPERTIES)
    db.execute(sql.SQL("ALTER INDEX ix_users_faceit_nickname SET TABLESPACE {}").format(sql.Identifier(tablespace)))
    db.execute(sql.SQL("ALTER INDEX user_subscriptions_user_id_key SET TABLESPACE {}").format(sql.Identifier(tablespace)))
    before = catalog(db)
    # The fixture really set what it means to: the test compares these, not defaults.
    rows = {row[2]: row for row in before if row[0] == "index"}
    constraints = {row[2]: row for row in before if row[0] == "constraint"}
    assert (constraints["pk_users_orm"][11], rows["pk_users_orm"][11]) == ("primary key, renamed", "the ORM's uuid")
    assert rows["ix_users_faceit_player_id"][4] is True and rows["ix_users_faceit_player_id"][10] == "{fillfactor=70}"
    assert rows["ix_users_user_id"][5] is True
    assert [(row[1], row[2]) for row in before if row[0] == "table"] == [("user_subscriptions", "i"), ("users", "i")]
    assert rows["ix_users_faceit_nickname"][9] == tablespace
    assert constraints["user_subscriptions_user_id_fkey"][4:6] == (True, True)
    assert rows["ix_users_lower_nickname"][12] == "{500}"
    return before


ENTRIES = [
    {"user_id": 101, "faceit_nickname": "alpha", "subscription": {"tier": "pro", "referral_code": "0A0B0C0D"}},
    {"user_id": 102, "faceit_nickname": "beta"},
    {"user_id": 3_000_000_003 - 2**31, "language": "de"},
]


def test_a_load_into_empty_tables_keeps_every_property_of_their_keys_and_indexes(db, database_url, alembic_tables_with_properties):
    mapped, rejects = chain(document(ENTRIES))
    with psycopg.connect(database_url) as conn:
        stats = load(conn, SCHEMA, mapped, rejects, "run-1")

    assert stats.users.inserted == 3 and not stats.created_tables
    assert db.execute("SELECT count(*) FROM users").fetchone()[0] == 3
    assert catalog(db) == alembic_tables_with_properties


def test_truncate_keeps_every_property_too(db, database_url, alembic_tables_with_properties):
    mapped, rejects = chain(document(ENTRIES))
    with psycopg.connect(database_url) as conn:
        load(conn, SCHEMA, mapped, rejects, "run-1")
        stats = load(conn, SCHEMA, mapped, rejects, "run-2", truncate=True)

    assert (stats.users.inserted, stats.users.deleted) == (3, 3)
    assert catalog(db) == alembic_tables_with_properties


def test_a_migration_and_its_rollback_keep_every_property(db, database_url, tmp_path, alembic_tables_with_properties):
    """Through Dagster: the run loads the empty tables; rollback empties them again; the catalog is the
    same after each."""
    source = write_json(tmp_path / "data.json", {"users": ENTRIES})
    settings = make_resources(database_url, source, tmp_path)
    with dg.instance_for_test() as instance:
        result = dg.materialize([*ASSETS, *CHECKS], resources=settings, instance=instance,
                                raise_on_error=False)
    assert result.success, [e.step_failure_data.error for e in result.get_step_failure_events()]
    assert db.execute("SELECT count(*) FROM users").fetchone()[0] == 3
    assert catalog(db) == alembic_tables_with_properties

    with psycopg.connect(database_url) as conn:
        folder = find_backup(conn, SCHEMA, settings["migration_settings"].backup_dir)
        restored = rollback_to_snapshot(conn, SCHEMA, folder)

    assert {name: digest.rows for name, digest in restored.restored.items()} == {"users": 0, "user_subscriptions": 0}
    assert catalog(db) == alembic_tables_with_properties


def test_a_property_the_rebuild_lost_is_named_and_fails_the_load():
    """The guard behind the rebuild: any catalog difference names the object and what changed in it."""
    index = ("index", "users", "ix_users_faceit_nickname", "CREATE INDEX ...", False, False, False, True, True, None,
             "ts_fast", None, "nickname lookups", "btree", None)
    gone = ("constraint", "users", "pk_users_orm", "PRIMARY KEY (id)", False, False, True, True, None, None,
            "pk_users_orm", "p", None, None, "0")
    with pytest.raises(KeysNotRestored) as lost:
        refuse_changed_catalog([index, gone], [index[:10] + (None,) + index[11:]], "public")
    assert str(lost.value) == (
        "the keys and indexes rebuilt after loading the empty tables differ from what they were (constraint "
        "pk_users_orm of public.users is gone; index ix_users_faceit_nickname of public.users: tablespace "
        "'ts_fast' became None); nothing was written. They carry a property this tool cannot rebuild: remove it, "
        "load, then set it again"
    )
    refuse_changed_catalog([index, gone], [gone, index], "public")  # the same rows in any order pass


REWRITE_REBUILT_INDEX = """
CREATE FUNCTION set_fillfactor_on_new_indexes() RETURNS event_trigger LANGUAGE plpgsql AS $$
DECLARE created record;
BEGIN
    FOR created IN SELECT object_identity FROM pg_event_trigger_ddl_commands() WHERE object_type = 'index' LOOP
        EXECUTE format('ALTER INDEX %s SET (fillfactor = 42)', created.object_identity);
    END LOOP;
END $$;
CREATE EVENT TRIGGER set_fillfactor ON ddl_command_end WHEN TAG IN ('CREATE INDEX')
    EXECUTE FUNCTION set_fillfactor_on_new_indexes();
"""


def test_a_load_whose_rebuilt_index_came_out_different_fails_naming_it_and_writes_nothing(db, database_url):
    """A DBA's event trigger gives every index created from now on a fillfactor: the index the load
    rebuilds is then not what it was, and the load says which, in which schema, and leaves the tables empty."""
    db.execute(ALEMBIC_DDL)
    db.execute(REWRITE_REBUILT_INDEX)
    mapped, rejects = chain(document(ENTRIES))
    try:
        with psycopg.connect(database_url) as conn, pytest.raises(KeysNotRestored) as refused:
            load(conn, SCHEMA, mapped, rejects, "run-1")
    finally:
        db.execute("DROP EVENT TRIGGER set_fillfactor")
    said = str(refused.value)
    assert said.startswith(
        "the keys and indexes rebuilt after loading the empty tables differ from what they were (index "
        "ix_users_faceit_nickname of public.users: definition 'CREATE INDEX ix_users_faceit_nickname ON public.users "
        "USING btree (faceit_nickname)' became \"CREATE INDEX ix_users_faceit_nickname ON public.users USING btree "
        "(faceit_nickname) WITH (fillfactor='42')\", reloptions None became '{fillfactor=42}'; "
    )
    assert said.endswith("nothing was written. They carry a property this tool cannot rebuild: remove it, load, then set it again")
    assert db.execute("SELECT (SELECT count(*) FROM users) + (SELECT count(*) FROM user_subscriptions)").fetchone()[0] == 0
