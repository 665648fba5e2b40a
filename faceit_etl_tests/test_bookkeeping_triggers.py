"""A trigger on one of our bookkeeping tables (`migration_logs`, `migration_rejects`) runs inside the
load's transaction when we write to it. Every such write comes before the verdicts, so whatever the
trigger does to `users` or `user_subscriptions`, now or deferred to the commit, is judged: the load
is rolled back and the tables stay as they were.
"""

from __future__ import annotations

import dagster as dg
import psycopg
import pytest

from faceit_etl.generate import generate_users
from faceit_etl.postgres import ddl, runlog
from faceit_etl.postgres.load import load
from faceit_etl.postgres.verdicts import VerificationFailed
from faceit_etl_tests.conftest import make_resources, write_json
from faceit_etl_tests.test_cli import faceit_etl, workdir  # noqa: F401  (the fixture)
from faceit_etl_tests.test_load import chain, document
from faceit_etl_tests.test_pipeline import run
from faceit_etl_tests.test_verified_before_commit import HEAD, SCHEMA, judged, target_state

# What the trigger does: one file row's value changed after it was written.
CHANGES = {
    ddl.USERS: ("UPDATE public.users SET faceit_nickname = 'HACKED' WHERE user_id = {user_id}", "faceit_nickname"),
    ddl.SUBSCRIPTIONS: (
        "UPDATE public.user_subscriptions SET daily_requests = daily_requests + 7 "
        "WHERE user_id = (SELECT id FROM public.users WHERE user_id = {user_id})",
        "daily_requests",
    ),
}
# When it runs: after our write of the table, per row or per statement, or deferred to the commit.
KINDS = {
    "after each row": "CREATE TRIGGER sneaky AFTER {event} ON {table} FOR EACH ROW {when} EXECUTE FUNCTION sneaky()",
    "after the statement": "CREATE TRIGGER sneaky AFTER {event} ON {table} FOR EACH STATEMENT EXECUTE FUNCTION sneaky()",
    "deferred to the commit": (
        "CREATE CONSTRAINT TRIGGER sneaky AFTER {event} ON {table} DEFERRABLE INITIALLY DEFERRED "
        "FOR EACH ROW {when} EXECUTE FUNCTION sneaky()"
    ),
}
# Our writes to each bookkeeping table inside the load's transaction.
EVENTS = {"migration_logs": "UPDATE", "migration_rejects": "INSERT"}


def sneaky(db, table: str, event: str, kind: str, change: str, when: str = "") -> None:
    """Tables named with their schema: our sessions resolve no unqualified name through the database's path."""
    db.execute(f"CREATE FUNCTION sneaky() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN {change}; RETURN NULL; END $$")
    db.execute(KINDS[kind].format(event=event, table=table, when=when))


@pytest.mark.parametrize("changed", CHANGES)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("bookkeeping", EVENTS)
def test_a_trigger_on_our_bookkeeping_that_changes_the_tables_fails_the_load(db, database_url, bookkeeping, kind, changed):
    entries = generate_users(12, seed=31)
    first, rejects = chain(document(entries[:10]))
    with psycopg.connect(database_url) as conn:
        load(conn, SCHEMA, first, rejects, "run-1", before_commit=judged(first))
    target = entries[3]["user_id"]
    change, column = CHANGES[changed]
    sneaky(db, bookkeeping, EVENTS[bookkeeping], kind, change.format(user_id=target))
    entries[5]["faceit_nickname"] = "renamed"
    mapped, rejects = chain(document([*entries, {"user_id": "not a number"}]))  # one reject to write
    assert len(rejects) == 1
    before = target_state(db)
    with psycopg.connect(database_url, autocommit=True) as log_conn:
        log = runlog.start(log_conn, SCHEMA, run_id="run-2", total_items=13, metadata={})

        with psycopg.connect(database_url) as conn, pytest.raises(VerificationFailed) as failed:
            load(conn, SCHEMA, mapped, rejects, "run-2", before_commit=judged(mapped), log=log)

    assert target_state(db) == before
    assert str(failed.value) == (
        f"{HEAD}content_matches: {changed}: 0 rows missing, 1 cells differ (in {column}) "
        f"(rows: {changed} {column}: {target})"
    )
    # The log row's `success` was rolled back with the load; the caller marks it failed.
    assert db.execute("SELECT metadata->>'run_id', status FROM migration_logs ORDER BY start_time").fetchall() == [
        ("run-2", "running")
    ]
    assert db.execute("SELECT count(*) FROM migration_rejects").fetchone()[0] == 0


def test_the_testers_trigger_on_the_success_update_refuses_the_cli_run_before_any_write(workdir, database_url, db):  # noqa: F811
    """A second schema, tables loaded by faceit-etl, then a trigger on the log row: the log row commits
    outside the load, so the run is refused before it writes one."""
    source = write_json(workdir / "data.json", {"users": [{"user_id": 801, "faceit_nickname": "n801"},
                                                         {"user_id": 802, "faceit_nickname": "n802"}]})
    assert faceit_etl(workdir, database_url, "migrate", str(source), "--target-schema", "b4").returncode == 0
    db.execute("CREATE FUNCTION b4.sneaky() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
               "UPDATE b4.users SET faceit_nickname = 'HACKED' WHERE user_id = 801; RETURN NEW; END $$")
    db.execute("CREATE TRIGGER t_sneaky AFTER UPDATE ON b4.migration_logs FOR EACH ROW "
               "WHEN (NEW.status = 'success') EXECUTE FUNCTION b4.sneaky()")
    write_json(source, {"users": [{"user_id": 801, "faceit_nickname": "changed801"},
                                  {"user_id": 802, "faceit_nickname": "changed802"}]})

    done = faceit_etl(workdir, database_url, "migrate", str(source), "--target-schema", "b4")

    assert done.returncode == 1, done.stdout + done.stderr
    assert "refusing to load: trigger t_sneaky on b4.migration_logs would act on faceit-etl's own bookkeeping" in done.stdout
    assert db.execute("SELECT user_id, faceit_nickname FROM b4.users ORDER BY 1").fetchall() == [(801, "n801"), (802, "n802")]
    assert [s for s, in db.execute("SELECT status FROM b4.migration_logs ORDER BY start_time")] == ["success"]


def test_a_dagster_run_with_a_log_row_trigger_is_refused_and_wrote_nothing(db, database_url, tmp_path):
    entries = generate_users(8, seed=32)
    source = write_json(tmp_path / "data.json", {"users": entries})
    settings = make_resources(database_url, source, tmp_path)
    with dg.instance_for_test() as instance:
        assert run(settings, instance).success
        sneaky(db, "migration_logs", "UPDATE", "deferred to the commit",
               CHANGES[ddl.SUBSCRIPTIONS][0].format(user_id=entries[0]["user_id"]), when="WHEN (NEW.status = 'success')")
        entries[1]["faceit_nickname"] = "renamed"
        write_json(source, {"users": entries})
        before = target_state(db)

        failed = run(settings, instance)

    assert not failed.success
    assert target_state(db) == before
    assert [s for s, in db.execute("SELECT status FROM migration_logs ORDER BY start_time")] == ["success"]
