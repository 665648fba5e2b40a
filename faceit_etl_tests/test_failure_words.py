"""What a failed run says: the rows that made it fail, named by table and column, never the table's
kept rows as if they were wrong, and never a row's values."""

from __future__ import annotations

import psycopg
import pytest

from faceit_etl.generate import generate_users
from faceit_etl.postgres import ddl
from faceit_etl.postgres.load import load
from faceit_etl.postgres.verdicts import VerificationFailed
from faceit_etl_tests.conftest import write_json
from faceit_etl_tests.test_cli import faceit_etl, workdir  # noqa: F401  (the fixture)
from faceit_etl_tests.test_load import ALEMBIC_DDL, chain, document
from faceit_etl_tests.test_verified_before_commit import HEAD, SCHEMA, judged, target_state, trigger


def test_a_content_failure_names_the_files_rows_not_the_kept_ones(db, database_url):
    entries = generate_users(5, seed=41)
    with psycopg.connect(database_url) as conn:
        first, rejects = chain(document(entries))
        load(conn, SCHEMA, first, rejects, "run-1", before_commit=judged(first))
    trigger(db, ddl.USERS, "UPDATE", "NEW.faceit_nickname := 'HACKED'")
    entries[0]["faceit_nickname"] = "renamed"
    mapped, rejects = chain(document(entries[:2]))  # the other three users are kept
    before = target_state(db)

    with psycopg.connect(database_url) as conn, pytest.raises(VerificationFailed) as failed:
        load(conn, SCHEMA, mapped, rejects, "run-2", before_commit=judged(mapped))

    assert target_state(db) == before
    assert str(failed.value) == (
        f"{HEAD}content_matches: users: 0 rows missing, 1 cells differ (in faceit_nickname) "
        f"(rows: users faceit_nickname: {entries[0]['user_id']})"
    )



def test_a_content_failure_in_two_columns_names_the_rows_of_each(db, database_url):
    entries = generate_users(5, seed=42)
    with psycopg.connect(database_url) as conn:
        first, rejects = chain(document(entries))
        load(conn, SCHEMA, first, rejects, "run-1", before_commit=judged(first))
    trigger(db, ddl.USERS, "UPDATE", "NEW.faceit_nickname := 'HACKED'; NEW.language := 'xx'")
    for entry in entries[:2]:
        entry["faceit_nickname"] = f"renamed {entry['user_id']}"
    mapped, rejects = chain(document(entries))

    with psycopg.connect(database_url) as conn, pytest.raises(VerificationFailed) as failed:
        load(conn, SCHEMA, mapped, rejects, "run-2", before_commit=judged(mapped))

    ids = ", ".join(str(i) for i in sorted(e["user_id"] for e in entries[:2]))
    assert str(failed.value) == (
        f"{HEAD}content_matches: users: 0 rows missing, 4 cells differ (in faceit_nickname, language) "
        f"(rows: users faceit_nickname: {ids}; users language: {ids})"
    )


def failed_migration_after(workdir, database_url, db, first: dict, change: list[str], users: list[dict]):  # noqa: F811
    """`migrate` of a file holding `first`, the tables then changed by the `change` statements, then
    `migrate` of `users`, which must fail leaving the tables as they were: its outcome, and the error
    message stored in migration_logs."""
    source = write_json(workdir / "f1.json", {"users": [first]})
    assert faceit_etl(workdir, database_url, "migrate", str(source)).returncode == 0
    for statement in change:
        db.execute(statement)
    write_json(source, {"users": users})
    before = target_state(db)

    done = faceit_etl(workdir, database_url, "migrate", str(source))

    assert done.returncode == 1, done.stdout + done.stderr
    assert target_state(db) == before
    return done, db.execute("SELECT error_message FROM migration_logs WHERE status = 'failed'").fetchone()[0]


def test_a_server_error_names_table_and_column_never_the_rows_values(workdir, database_url, db):  # noqa: F811
    """A NOT NULL column the bot added without a default: PostgreSQL's DETAIL quotes the failing row."""
    done, stored = failed_migration_after(
        workdir, database_url, db, {"user_id": 2000, "faceit_nickname": "n2000"},
        ["ALTER TABLE public.users ADD COLUMN team text NOT NULL DEFAULT 't'",
         "ALTER TABLE public.users ALTER COLUMN team DROP DEFAULT"],
        [{"user_id": 2000, "faceit_nickname": "n2000"}, {"user_id": 2001, "faceit_player_id": "p2001", "faceit_nickname": "n2001"}],
    )
    assert stored.endswith(
        'null value in column "team" of relation "users" violates not-null constraint (table public.users, column team)'
    ), stored
    logged = (workdir / "migration.log").read_text()
    for text in (stored, done.stdout, done.stderr, logged):
        assert "n2001" not in text and "p2001" not in text and "Failing row" not in text


@pytest.mark.parametrize(("entries", "why"), [
    ([{"user_id": "bad"}], "every entry of the file was rejected (1)"),
    ([{"user_id": "bad"}, {"user_id": 5, "created_at": "never"}], "every entry of the file was rejected (2)"),
    ([], "the file holds none"),
])
def test_a_truncate_with_no_user_to_load_says_why(db, database_url, entries, why):
    with psycopg.connect(database_url) as conn:
        first, rejects = chain(document(generate_users(3, seed=42)))
        load(conn, SCHEMA, first, rejects, "run-1", before_commit=judged(first))
    mapped, rejects = chain(document(entries))
    before = target_state(db)

    with psycopg.connect(database_url) as conn, pytest.raises(ddl.TargetError) as refused:
        load(conn, SCHEMA, mapped, rejects, "run-2", truncate=True)

    assert str(refused.value) == f"refusing to truncate the tables with no user to load: {why}"
    assert target_state(db) == before


def test_a_dropped_column_is_named_with_its_fix_before_any_write(workdir, database_url, db):  # noqa: F811
    done, stored = failed_migration_after(
        workdir, database_url, db, {"user_id": 3000, "faceit_nickname": "n3000"},
        ["ALTER TABLE public.users DROP COLUMN last_active_at", "ALTER TABLE public.user_subscriptions DROP COLUMN tier"],
        [{"user_id": 3000, "faceit_nickname": "renamed"}, {"user_id": 3001}],
    )
    assert stored.endswith(
        "the existing tables lack column(s) the bot's models have: public.users.last_active_at, "
        "public.user_subscriptions.tier. Nothing was written. Add them back (the bot's Alembic revision creates them), "
        'then run again:\n  ALTER TABLE "public"."users" ADD COLUMN "last_active_at" timestamptz;\n'
        '  ALTER TABLE "public"."user_subscriptions" ADD COLUMN "tier" "public"."subscriptiontier";'
    ), stored
    assert "does not exist" not in done.stdout


def test_a_dropped_tier_column_whose_enum_is_gone_too_is_advised_with_the_enum_to_make_first(db, database_url):
    """The load makes the enum when absent, in its transaction: refused, it is gone again, so the ADD COLUMN
    alone would name a type that does not exist."""
    db.execute(ALEMBIC_DDL)
    db.execute("ALTER TABLE user_subscriptions DROP COLUMN tier")
    db.execute("DROP TYPE subscriptiontier")
    mapped, rejects = chain(document([{"user_id": 3001, "subscription": {"tier": "pro"}}]))
    before = target_state(db)

    with psycopg.connect(database_url) as conn, pytest.raises(ddl.TargetError) as refused:
        load(conn, SCHEMA, mapped, rejects, "run-1")

    assert str(refused.value) == (
        "the existing tables lack column(s) the bot's models have: public.user_subscriptions.tier (and the enum "
        "public.subscriptiontier does not exist). Nothing was written. Add them back (the bot's Alembic revision "
        "creates them), then run again:\n"
        "  CREATE TYPE \"public\".\"subscriptiontier\" AS ENUM ('FREE', 'PREMIUM', 'PRO');\n"
        '  ALTER TABLE "public"."user_subscriptions" ADD COLUMN "tier" "public"."subscriptiontier";'
    )
    assert target_state(db) == before
    for statement in str(refused.value).split("\n")[1:]:  # the advice, followed
        db.execute(statement)
    with psycopg.connect(database_url) as conn:
        load(conn, SCHEMA, mapped, rejects, "run-2", before_commit=judged(mapped))
    assert db.execute("SELECT tier::text FROM user_subscriptions").fetchall() == [("PRO",)]
