"""A search_path set on the database or the role (`evil, pg_catalog, public`) must not change what our
sessions store or how they order migrations: every session pins its own, so a schema that shadows a
function, operator or type we use unqualified is never consulted."""

from __future__ import annotations

from datetime import datetime, timezone

import dagster as dg
import psycopg
import pytest
from psycopg import sql

from faceit_etl.generate import generate_users
from faceit_etl_tests.conftest import make_resources, write_json
from faceit_etl_tests.test_pipeline import run
from faceit_etl_tests.test_rollback import rolled_back, statuses

LONG_AGO = datetime(1999, 1, 1, tzinfo=timezone.utc)
NIL = "00000000-0000-0000-0000-000000000000"

# Each shadows something our SQL uses unqualified: the clock, row ids, the fingerprint's hash, the
# session test for abandoned runs, bigint equality (every join on Telegram ids) and the text type.
EVIL = f"""
CREATE SCHEMA evil;
CREATE FUNCTION evil.now() RETURNS timestamptz LANGUAGE sql AS $$ SELECT '1999-01-01 00:00:00+00'::timestamptz $$;
CREATE FUNCTION evil.clock_timestamp() RETURNS timestamptz LANGUAGE sql AS $$ SELECT '1999-01-01 00:00:00+00'::timestamptz $$;
CREATE FUNCTION evil.gen_random_uuid() RETURNS uuid LANGUAGE sql AS $$ SELECT '{NIL}'::uuid $$;
CREATE FUNCTION evil.hashtextextended(text, bigint) RETURNS bigint LANGUAGE sql AS $$ SELECT 0::bigint $$;
CREATE FUNCTION evil.pg_backend_pid() RETURNS integer LANGUAGE sql AS $$ SELECT 0 $$;
CREATE FUNCTION evil.never(bigint, bigint) RETURNS boolean LANGUAGE sql AS $$ SELECT false $$;
CREATE OPERATOR evil.= (LEFTARG = bigint, RIGHTARG = bigint, FUNCTION = evil.never);
CREATE DOMAIN evil.text AS varchar(3);
"""
LEVELS = {
    "database": "ALTER DATABASE {database} SET search_path = evil, pg_catalog, public",
    "role": "ALTER ROLE CURRENT_USER IN DATABASE {database} SET search_path = evil, pg_catalog, public",
}
RESETS = {
    "database": "ALTER DATABASE {database} RESET search_path",
    "role": "ALTER ROLE CURRENT_USER IN DATABASE {database} RESET search_path",
}


def clock(db) -> datetime:
    return db.execute("SELECT pg_catalog.clock_timestamp()").fetchone()[0]


@pytest.mark.parametrize("level", LEVELS)
def test_a_search_path_set_on_the_database_or_role_changes_nothing_we_store_or_order(db, database_url, tmp_path, level):
    database = sql.Identifier(db.execute("SELECT current_database()").fetchone()[0])
    entries = generate_users(6, seed=41)
    source = write_json(tmp_path / "data.json", {"users": entries})
    settings = make_resources(database_url, source, tmp_path)
    with dg.instance_for_test() as instance:
        first = run(settings, instance)
        assert first.success
        after_first = db.execute("SELECT user_id, faceit_nickname FROM users ORDER BY 1").fetchall()
        db.execute(EVIL)
        db.execute(sql.SQL(LEVELS[level]).format(database=database))
        try:
            with psycopg.connect(database_url) as fresh:  # what every new session now gets
                assert fresh.execute("SHOW search_path").fetchone() == ("evil, pg_catalog, public",)
            began = clock(db)
            entries[0]["faceit_nickname"] = "changed0"
            entries[1]["faceit_nickname"] = "changed1"
            new_user = {k: v for k, v in generate_users(7, seed=41)[6].items() if k != "created_at"}
            write_json(source, {"users": [*entries, new_user]})
            second = run(settings, instance)
            assert second.success
            entries[2]["faceit_nickname"] = "changed2"
            write_json(source, {"users": [*entries, new_user]})
            third = run(settings, instance)
            assert third.success
            ended = clock(db)

            created, new_id = db.execute("SELECT created_at, id::text FROM users WHERE user_id = %s",
                                         [new_user["user_id"]]).fetchone()
            assert began <= created <= ended
            assert new_id != NIL
            updated = db.execute("SELECT user_id, updated_at FROM users WHERE faceit_nickname LIKE 'changed%%' ORDER BY 1"
                                 ).fetchall()
            assert len(updated) == 3 and all(began <= at <= ended for _, at in updated)
            logged = db.execute(
                "SELECT metadata->>'run_id', start_time, end_time, (metadata->>'locked_at')::timestamptz "
                "FROM migration_logs ORDER BY start_time").fetchall()
            assert [run_id for run_id, *_ in logged] == [first.run_id, second.run_id, third.run_id]
            assert all(began <= at <= ended for _, *times in logged[1:] for at in times)
            assert db.execute("SELECT count(DISTINCT metadata->>'session_pid') FROM migration_logs").fetchone()[0] == 3

            rolled_back(settings, instance, migration_id=second.run_id)  # and the third, committed after it
        finally:
            db.execute(sql.SQL(RESETS[level]).format(database=database))

    assert statuses(db) == {first.run_id: "success", second.run_id: "rolled_back", third.run_id: "rolled_back"}
    assert db.execute("SELECT user_id, faceit_nickname FROM users ORDER BY 1").fetchall() == after_first
