"""Blocking verdicts are judged inside the load's transaction, before its commit: a load whose tables
would not hold what the file says is rolled back. A trigger that alters rows as they are written
stands in for anything that makes the written rows differ from the file.

Every case checks that the tables are byte-identical to before (every row with the transaction
that wrote it), that the failure names the check, the column and the rows, and, through Dagster
and the CLI, that the run's `migration_logs` row says failed and rollback passes it over.
"""

from __future__ import annotations

from dataclasses import dataclass

import dagster as dg
import pandas as pd
import psycopg
import pytest

from faceit_etl.generate import generate_users
from faceit_etl.postgres import ddl
from faceit_etl.postgres.load import load
from faceit_etl.postgres.verdicts import BLOCKING, Verdict, VerificationFailed, all_verdicts, judge_before_commit
from faceit_etl_tests.conftest import make_resources, write_json
from faceit_etl_tests.test_cli import faceit_etl, workdir  # noqa: F401  (the fixture)
from faceit_etl_tests.test_dry_run import database_state
from faceit_etl_tests.test_load import chain, document
from faceit_etl_tests.test_pipeline import checks_by_name, metadata_of, run
from faceit_etl_tests.test_rollback import failure_of, roll_back, rolled_back, statuses

SCHEMA = "public"
HEAD = "verification failed, nothing was written: "


def target_state(db) -> dict:
    """Everything but the run log, which a failed run must write to."""
    return {k: v for k, v in database_state(db).items() if k != f"{SCHEMA}.migration_logs"}


def trigger(db, table: str, event: str, assignment: str) -> None:
    db.execute(f"CREATE FUNCTION alter_row() RETURNS trigger AS $$ BEGIN {assignment}; RETURN NEW; END $$ LANGUAGE plpgsql")
    db.execute(f"CREATE TRIGGER alter_row BEFORE {event} ON {table} FOR EACH ROW EXECUTE FUNCTION alter_row()")


def judged(mapped):
    return lambda conn, stats: judge_before_commit(conn, SCHEMA, mapped.users, mapped.subscriptions, stats.kept_absent())


def ids_of(telegram_ids) -> list[str]:
    """The comparison's keys of these users' rows (in both tables their Telegram ids), sorted as the verdict lists them."""
    return [str(t) for t in sorted(int(t) for t in telegram_ids)]


@dataclass
class Case:
    loaded_first: int  # users loaded (and verified) before the trigger exists; 0: empty tables
    file_users: int
    changed: int  # users of the file whose nickname differs from what was loaded
    table: str
    event: str
    assignment: str
    column: str


CASES = {
    # COPY straight into the empty tables (their keys set aside) fires row triggers too.
    "empty tables, rows copied in": Case(0, 30, 0, ddl.USERS, "INSERT", "NEW.language := 'xx'", "language"),
    "rows inserted by the upsert": Case(30, 40, 0, ddl.USERS, "INSERT", "NEW.language := 'xx'", "language"),
    "rows updated by the upsert": Case(40, 40, 3, ddl.USERS, "UPDATE", "NEW.language := 'xx'", "language"),
    "subscriptions inserted": Case(
        30, 36, 0, ddl.SUBSCRIPTIONS, "INSERT", "NEW.daily_requests := NEW.daily_requests + 1", "daily_requests"
    ),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_a_row_altered_as_it_is_written_stops_the_load_before_its_commit(db, database_url, case):
    entries = generate_users(case.file_users, seed=21)
    with psycopg.connect(database_url) as conn:
        if case.loaded_first:
            first, rejects = chain(document(entries[: case.loaded_first]))
            load(conn, SCHEMA, first, rejects, "run-1", before_commit=judged(first))
        else:
            ddl.ensure_bookkeeping_tables(conn, SCHEMA)
            ddl.ensure_target_tables(conn, SCHEMA)
            conn.commit()
    trigger(db, case.table, case.event, case.assignment)
    for entry in entries[: case.changed]:
        entry["faceit_nickname"] = f"renamed {entry['user_id']}"
    mapped, rejects = chain(document(entries))
    before = target_state(db)

    with psycopg.connect(database_url) as conn, pytest.raises(VerificationFailed) as failed:
        load(conn, SCHEMA, mapped, rejects, "run-2", before_commit=judged(mapped))

    assert target_state(db) == before
    altered = [e["user_id"] for e in (entries[: case.changed] if case.event == "UPDATE" else entries[case.loaded_first:])]
    keys = ids_of(altered)
    other = ddl.USERS if case.table == ddl.SUBSCRIPTIONS else ddl.SUBSCRIPTIONS
    assert str(failed.value) == (
        f"{HEAD}content_matches: {case.table}: 0 rows missing, {len(altered)} cells differ "
        f"(in {case.column}) (rows: {case.table} {case.column}: {', '.join(keys[:5])})"
    )
    assert not failed.value.verdicts["content_matches"].passed
    assert failed.value.verdicts["content_matches"].metadata[other]["differing_cells"] == {}
    assert [n for n in BLOCKING if not failed.value.verdicts[n].passed] == ["content_matches"]


def test_every_failed_blocking_verdict_is_named_with_its_numbers(db, database_url):
    """A trigger that turns every new subscription into PRO moves the tier counts as well."""
    entries = generate_users(30, seed=22)
    with psycopg.connect(database_url) as conn:
        first, rejects = chain(document(entries[:20]))
        load(conn, SCHEMA, first, rejects, "run-1", before_commit=judged(first))
    trigger(db, ddl.SUBSCRIPTIONS, "INSERT", "NEW.tier := 'PRO'")
    mapped, rejects = chain(document(entries))
    expected = mapped.subscriptions["tier"].value_counts().sort_index()
    made_pro = mapped.subscriptions.iloc[20:]
    made_pro = made_pro[made_pro["tier"] != "PRO"]
    assert len(made_pro) > 0
    in_database = expected.copy()
    in_database.loc["PRO"] = in_database.get("PRO", 0) + len(made_pro)
    for tier, count in made_pro["tier"].value_counts().items():
        in_database.loc[tier] -= count
    in_database = in_database[in_database > 0]
    before = target_state(db)

    with psycopg.connect(database_url) as conn, pytest.raises(VerificationFailed) as failed:
        load(conn, SCHEMA, mapped, rejects, "run-2", before_commit=judged(mapped))

    assert target_state(db) == before
    telegram_id_of = mapped.users.set_index("id")["user_id"]
    keys = ids_of(telegram_id_of.loc[made_pro["user_id"]])
    tiers = sorted(set(in_database.index) | set(expected.index))
    differing = "; ".join(
        f"{tier}: {int(in_database.get(tier, 0))} in the database, {int(expected.get(tier, 0))} from the file"
        for tier in tiers if in_database.get(tier, 0) != expected.get(tier, 0)
    )
    assert "PRO: " in differing and f"{int(in_database['PRO'])} in the database" in differing
    assert str(failed.value) == (
        f"{HEAD}tier_counts_match: subscriptions per tier: {differing}; "
        f"content_matches: {ddl.SUBSCRIPTIONS}: 0 rows missing, {len(made_pro)} cells differ "
        f"(in tier) (rows: {ddl.SUBSCRIPTIONS} tier: {', '.join(keys[:5])})"
    )


def test_a_dagster_run_whose_verdict_fails_commits_nothing_logs_failed_and_rollback_passes_it_over(
    db, database_url, tmp_path
):
    entries = generate_users(30, seed=23)
    source = write_json(tmp_path / "data.json", {"users": entries})
    settings = make_resources(database_url, source, tmp_path)
    with dg.instance_for_test() as instance:
        first = run(settings, instance)
        assert first.success
        checks = checks_by_name(first)
        assert checks["content_matches"].passed and checks["content_matches"].metadata["seen_before_commit"].value
        assert metadata_of(first, "postgres_tables")["verification"]["content_matches"]["passed"] is True
        trigger(db, ddl.USERS, "UPDATE", "NEW.language := 'xx'")
        entries[4]["faceit_nickname"] = "renamed"
        write_json(source, {"users": entries})
        before = target_state(db)

        failed = run(settings, instance)

        assert not failed.success
        assert target_state(db) == before
        row_id = entries[4]["user_id"]
        message = (
            f"{HEAD}content_matches: users: 0 rows missing, 1 cells differ (in language) "
            f"(rows: users language: {row_id})"
        )
        [event] = failed.get_step_failure_events()
        assert event.step_key == "postgres_tables"
        assert event.step_failure_data.error.message.splitlines()[0].endswith(message)
        recorded = event.step_failure_data.user_failure_data.metadata["verification"].value
        examples = recorded["content_matches"]["metadata"]["users"]["examples"]
        assert {column: [str(key) for key in keys] for column, keys in examples.items()} == {"language": [str(row_id)]}
        assert set(checks_by_name(failed)) == {"no_rejected_entries"}  # the checks of an uncommitted load never ran
        assert "postgres_tables" not in {e.asset_key.to_user_string() for e in failed.get_asset_materialization_events()}
        assert statuses(db) == {first.run_id: "success", failed.run_id: "failed"}
        assert db.execute("SELECT error_message FROM migration_logs WHERE status = 'failed'").fetchone()[0] == message

        refused = roll_back(settings, instance, migration_id=failed.run_id)
        assert not refused.success
        assert failure_of(refused)[0] == "RollbackRefused"
        assert target_state(db) == before
        rolled_back(settings, instance)  # the latest committed migration: the first, which made the tables

    assert db.execute("SELECT to_regclass('users'), to_regclass('user_subscriptions')").fetchone() == (None, None)
    assert statuses(db) == {first.run_id: "rolled_back", failed.run_id: "failed"}


def test_the_cli_says_verification_failed_exits_1_and_the_tables_stay_as_they_were(workdir, database_url, db):  # noqa: F811
    entries = generate_users(20, seed=24)
    source = write_json(workdir / "data.json", {"users": entries})
    assert faceit_etl(workdir, database_url, "migrate", str(source)).returncode == 0
    trigger(db, ddl.USERS, "INSERT", "NEW.language := 'xx'")
    entries += generate_users(21, seed=25)[20:]
    write_json(source, {"users": entries})
    before = target_state(db)

    done = faceit_etl(workdir, database_url, "migrate", str(source))

    assert done.returncode == 1, done.stdout + done.stderr
    assert target_state(db) == before
    [row_id] = ids_of([entries[20]["user_id"]])
    assert (
        f"  error: postgres_tables: {HEAD}content_matches: users: 0 rows missing, 1 cells differ "
        f"(in language) (rows: users language: {row_id})"
    ) in done.stdout.splitlines()
    assert any(line.startswith("Migration run ") and line.endswith(" FAILED") for line in done.stdout.splitlines())
    assert [s for s, in db.execute("SELECT status FROM migration_logs ORDER BY start_time")] == ["success", "failed"]
    assert "Traceback" not in done.stdout + done.stderr


@pytest.mark.parametrize("loaded_first", [0, 50], ids=["empty tables, rows copied in", "rows inserted by the upsert"])
def test_a_deferred_constraint_trigger_fires_before_the_verdicts_not_at_the_commit(db, database_url, loaded_first):
    """A trigger deferred to the COMMIT would change rows after they were verified; it fires before."""
    entries = generate_users(90, seed=23)
    with psycopg.connect(database_url) as conn:
        ddl.ensure_bookkeeping_tables(conn, SCHEMA)
        ddl.ensure_target_tables(conn, SCHEMA)
        conn.commit()
        if loaded_first:
            first, rejects = chain(document(entries[:loaded_first]))
            load(conn, SCHEMA, first, rejects, "run-0", before_commit=judged(first))
    db.execute("CREATE FUNCTION late() RETURNS trigger AS $$ BEGIN UPDATE users SET faceit_nickname = 'LATE' "
               "WHERE id = NEW.id AND faceit_nickname IS DISTINCT FROM 'LATE'; RETURN NULL; END $$ LANGUAGE plpgsql")
    db.execute("CREATE CONSTRAINT TRIGGER late AFTER INSERT OR UPDATE ON users DEFERRABLE INITIALLY DEFERRED "
               "FOR EACH ROW EXECUTE FUNCTION late()")
    mapped, rejects = chain(document(entries))
    before = target_state(db)

    with psycopg.connect(database_url) as conn, pytest.raises(VerificationFailed) as failed:
        load(conn, SCHEMA, mapped, rejects, "run-1", before_commit=judged(mapped))

    assert target_state(db) == before
    assert db.execute("SELECT count(*) FROM users WHERE faceit_nickname = 'LATE'").fetchone()[0] == 0
    assert str(failed.value).startswith(f"{HEAD}content_matches: {ddl.USERS}: 0 rows missing, "
                                         f"{90 - loaded_first} cells differ (in faceit_nickname)")


def test_a_deferred_foreign_key_that_holds_loads_as_usual(db, database_url):
    """The bot's tables may declare their keys deferrable; checked early, a key that holds still loads."""
    entries = generate_users(40, seed=24)
    with psycopg.connect(database_url) as conn:
        ddl.ensure_bookkeeping_tables(conn, SCHEMA)
        ddl.ensure_target_tables(conn, SCHEMA)
        conn.commit()
    key = db.execute("SELECT conname FROM pg_constraint WHERE conrelid = 'user_subscriptions'::regclass "
                     "AND contype = 'f'").fetchone()[0]
    db.execute(f"ALTER TABLE user_subscriptions ALTER CONSTRAINT {key} DEFERRABLE INITIALLY DEFERRED")
    mapped, rejects = chain(document(entries))

    with psycopg.connect(database_url) as conn:
        load(conn, SCHEMA, mapped, rejects, "run-1", before_commit=judged(mapped))

    loaded = db.execute("SELECT u.user_id, u.faceit_nickname, s.tier::text FROM users u "
                        "LEFT JOIN user_subscriptions s ON s.user_id = u.id ORDER BY u.user_id").fetchall()
    subscriptions = mapped.subscriptions.set_index("user_id")
    expected = sorted(
        (int(row.user_id), None if pd.isna(row.faceit_nickname) else row.faceit_nickname, subscriptions.loc[row.id, "tier"] if row.id in subscriptions.index else None)
        for row in mapped.users.itertuples()
    )
    assert loaded == expected
    assert len(mapped.subscriptions) > 0



@pytest.mark.parametrize("file_users", [30, 29], ids=["none kept", "one user kept"])
def test_a_row_deleted_after_the_load_is_counted_missing_with_what_was_kept(db, database_url, file_users):
    """The checks judged on the tables later (no load to count what it kept): a subscription gone since
    is a row the file has and the table lacks, not one written by another session; a user the file
    lacks is kept, with its subscription."""
    entries = generate_users(30, seed=26)
    mapped, rejects = chain(document(entries))
    with psycopg.connect(database_url) as conn:
        load(conn, SCHEMA, mapped, rejects, "run-1", before_commit=judged(mapped))
    db.execute("DELETE FROM user_subscriptions WHERE user_id = (SELECT id FROM users WHERE user_id = %s)",
               [int(mapped.users["user_id"].iloc[25])])
    judged_file, _ = chain(document(entries[:file_users]))

    with psycopg.connect(database_url) as conn:
        verdict = all_verdicts(conn, SCHEMA, judged_file.users, judged_file.subscriptions)["row_counts_match"]

    kept = 30 - file_users
    assert not verdict.passed
    assert verdict.description == (f"{ddl.SUBSCRIPTIONS}: 29 rows in the database, 30 expected ({file_users} from the "
                                   f"file, {kept} kept as they were of users not in it or rejected)")


def test_a_rejected_entrys_user_is_in_the_file_not_a_row_it_lacks(db, database_url):
    """The load's verdicts are given the rejected entries' users: their rows are kept because the file's
    entry was refused, so rows_not_in_file does not report them as users the file lacks."""
    entries = generate_users(3, seed=27)
    mapped, rejects = chain(document(entries))
    with psycopg.connect(database_url) as conn:
        load(conn, SCHEMA, mapped, rejects, "run-1", before_commit=judged(mapped))
    entries[2]["subscription"]["tier"] = "gold"
    mapped, rejects = chain(document(entries))
    assert list(rejects["user_id"]) == [entries[2]["user_id"]]

    with psycopg.connect(database_url) as conn:
        verdicts = judge_before_commit(conn, SCHEMA, mapped.users, mapped.subscriptions, rejected_user_ids=rejects["user_id"])

    assert verdicts["rows_not_in_file"] == Verdict(True, {"users_not_in_file": 0, "examples": []})
    assert verdicts["row_counts_match"].passed
