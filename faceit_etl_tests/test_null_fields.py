"""An explicit null is the file's value, also in a field the bot has a default for.

The bot's defaults (language 'ru', tier FREE, counters 0, ...) apply when a field is absent. Its ORM
columns are nullable and its column defaults, like SQLAlchemy's, fire only for a value not given:
a `null` given is held as NULL. So a null is stored as NULL, never turned into the default (which
would give it a meaning the file does not state); a target column that cannot hold NULL stops the
load before writing, naming the field and the users.
"""

from __future__ import annotations

import re

import psycopg
import pytest

from faceit_etl.postgres.ddl import TargetError
from faceit_etl.postgres.load import load
from faceit_etl.postgres.verdicts import judge_before_commit
from faceit_etl_tests.conftest import write_json
from faceit_etl_tests.test_cli import faceit_etl, workdir  # noqa: F401  (the fixture)
from faceit_etl_tests.test_kept_proven import entry, judged, loaded_first
from faceit_etl_tests.test_load import ALEMBIC_DDL, SCHEMA, chain, document

DEFAULTED_USER = ("waiting_for_nickname", "language", "notifications_enabled", "total_requests")
DEFAULTED_SUBSCRIPTION = ("tier", "auto_renew", "daily_requests", "referrals_count")
ROW = """SELECT u.waiting_for_nickname, u.language, u.notifications_enabled, u.total_requests,
                s.tier::text, s.auto_renew, s.daily_requests, s.referrals_count
         FROM users u JOIN user_subscriptions s ON s.user_id = u.id WHERE u.user_id = %s"""


def nulls(user_id: int) -> dict:
    return {"user_id": user_id, **dict.fromkeys(DEFAULTED_USER),
            "subscription": dict.fromkeys(DEFAULTED_SUBSCRIPTION)}


def test_a_mapped_null_stays_null_and_only_absent_fields_get_defaults():
    mapped, rejects = chain(document([nulls(1), {"user_id": 2, "subscription": {}}]))
    assert rejects.empty
    users, subscriptions = mapped.users, mapped.subscriptions
    for column in DEFAULTED_USER:
        assert users[column].isna().tolist() == [True, False], column
    for column in DEFAULTED_SUBSCRIPTION:
        assert subscriptions[column].isna().tolist() == [True, False], column
    assert users.loc[1, DEFAULTED_USER].tolist() == [False, "ru", True, 0]
    assert subscriptions.loc[1, DEFAULTED_SUBSCRIPTION].tolist() == ["FREE", False, 0, 0]
    assert mapped.defaults_applied == {f"users.{c}": 1 for c in DEFAULTED_USER} | {
        f"user_subscriptions.{c}": 1 for c in DEFAULTED_SUBSCRIPTION}


@pytest.mark.parametrize("empty", [True, False], ids=["empty tables", "upsert"])
def test_explicit_nulls_are_stored_as_null_for_new_and_existing_users_and_verified(db, database_url, empty):
    if empty:
        db.execute(ALEMBIC_DDL)
    else:
        loaded_first(db, database_url, [102])
    mapped, rejects = chain(document([nulls(101), nulls(102), {"user_id": 103}]))

    with psycopg.connect(database_url) as conn:
        stats = load(conn, SCHEMA, mapped, rejects, "run-1", before_commit=judged(mapped, rejects))

    assert (stats.users.inserted, stats.users.updated) == ((3, 0) if empty else (2, 1))
    for user_id in (101, 102):
        assert db.execute(ROW, [user_id]).fetchone() == (None,) * 8
    assert db.execute(ROW, [103]).fetchone() == (False, "ru", True, 0, "FREE", False, 0, 0)
    with psycopg.connect(database_url) as conn, conn.transaction():
        verdicts = judge_before_commit(conn, SCHEMA, mapped.users, mapped.subscriptions, stats.kept_absent())
    # Judged over the entries that state a tier: 103 has no subscription.
    assert verdicts["tier_counts_match"].metadata["in_database"] == {"NULL": 2}
    assert verdicts["tier_counts_match"].passed and verdicts["content_matches"].passed

    with psycopg.connect(database_url) as conn:
        again = load(conn, SCHEMA, mapped, rejects, "run-2", before_commit=judged(mapped, rejects))
    assert (again.users.unchanged, again.subscriptions.unchanged) == (3, 3)


def test_a_null_the_target_column_cannot_hold_stops_the_load_naming_field_and_users(db, database_url):
    loaded_first(db, database_url, [101])
    db.execute("ALTER TABLE users ALTER COLUMN language SET NOT NULL")
    before = db.execute("SELECT u::text FROM users u").fetchall()
    mapped, rejects = chain(document([entry(101, language=None), entry(102, language=None), entry(103)]))

    with psycopg.connect(database_url) as conn, pytest.raises(TargetError) as refused:
        load(conn, SCHEMA, mapped, rejects, "run-2")

    assert str(refused.value) == (
        "2 value(s) of users.language are null in the file (user_id 101, 102), but the column is NOT NULL. "
        "Nothing was written. Give those entries a language, or let the column hold NULL "
        "(ALTER TABLE \"public\".\"users\" ALTER COLUMN \"language\" DROP NOT NULL;), then run again"
    )
    assert db.execute("SELECT u::text FROM users u").fetchall() == before



def lacking_a_nickname_under_not_null(db, database_url):
    """User 101 loaded, the nickname column made NOT NULL, then a file whose entry of 101 lacks the
    field, beside a new user 102: (101's nickname, 101's row as text, mapped frames, rejects)."""
    loaded_first(db, database_url, [101])
    db.execute("ALTER TABLE users ALTER COLUMN faceit_nickname SET NOT NULL")
    nickname, before = db.execute("SELECT faceit_nickname, u::text FROM users u").fetchone()
    lacking = {k: v for k, v in entry(101).items() if k != "faceit_nickname"}
    return nickname, before, *chain(document([lacking, entry(102)]))


def test_a_field_an_existing_users_entry_lacks_keeps_its_value_under_a_not_null_column(db, database_url):
    """An entry lacking a field with no default writes nothing to that column of an existing row, so a
    NOT NULL column is no obstacle."""
    nickname, _, mapped, rejects = lacking_a_nickname_under_not_null(db, database_url)

    with psycopg.connect(database_url) as conn:
        load(conn, SCHEMA, mapped, rejects, "run-2")

    assert db.execute("SELECT user_id, faceit_nickname FROM users ORDER BY 1").fetchall() == [
        (101, nickname), (102, entry(102)["faceit_nickname"])]


def test_after_truncate_a_field_an_entry_lacks_is_refused_by_name_under_a_not_null_column(db, database_url):
    """After truncate every row is new: there is no value to keep, and the null is refused by name."""
    _, before, mapped, rejects = lacking_a_nickname_under_not_null(db, database_url)

    with psycopg.connect(database_url) as conn, pytest.raises(TargetError) as refused:
        load(conn, SCHEMA, mapped, rejects, "run-2", truncate=True)

    assert str(refused.value).startswith(
        "1 value(s) of users.faceit_nickname are null in the file (user_id 101), but the column is NOT NULL. "
    )
    assert db.execute("SELECT u::text FROM users u").fetchall() == [(before,)]


@pytest.mark.parametrize("empty", [True, False], ids=["empty tables", "upsert"])
def test_a_created_at_given_as_null_is_never_the_load_time_the_not_null_column_refuses_it(db, database_url, empty):
    if empty:
        db.execute(ALEMBIC_DDL)
    else:
        loaded_first(db, database_url, [101])
    before = db.execute("SELECT u::text FROM users u").fetchall()
    mapped, rejects = chain(document([entry(101, created_at=None), entry(102, created_at=None), entry(103)]))

    with psycopg.connect(database_url) as conn, pytest.raises(TargetError) as refused:
        load(conn, SCHEMA, mapped, rejects, "run-2")

    assert str(refused.value) == (
        "2 value(s) of users.created_at are null in the file (user_id 101, 102), but the column is NOT NULL. "
        "Nothing was written. Give those entries a created_at, or let the column hold NULL "
        "(ALTER TABLE \"public\".\"users\" ALTER COLUMN \"created_at\" DROP NOT NULL;), then run again"
    )
    assert db.execute("SELECT u::text FROM users u").fetchall() == before


@pytest.mark.parametrize("empty", [True, False], ids=["empty tables", "upsert"])
def test_a_created_at_given_as_null_is_stored_as_null_where_the_column_holds_null_and_verified(db, database_url, empty):
    if empty:
        db.execute(ALEMBIC_DDL)
    else:
        loaded_first(db, database_url, [101])
    db.execute("ALTER TABLE users ALTER COLUMN created_at DROP NOT NULL")
    mapped, rejects = chain(document([entry(101, created_at=None), entry(102, created_at=None)]))

    with psycopg.connect(database_url) as conn:
        load(conn, SCHEMA, mapped, rejects, "run-2", before_commit=judged(mapped, rejects))

    assert db.execute("SELECT user_id, created_at FROM users ORDER BY user_id").fetchall() == [(101, None), (102, None)]
    with psycopg.connect(database_url) as conn:
        again = load(conn, SCHEMA, mapped, rejects, "run-3", before_commit=judged(mapped, rejects))
    assert again.users.unchanged == 2



FRESH_TARGET_ADVICE = (
    "2 value(s) of users.created_at are null in the file (user_id 101, 102), but faceit-etl creates that column "
    "NOT NULL, as the bot's models do. Nothing was written, and public.users does not exist yet. Give those entries "
    'a created_at, or, to keep them null, first create the tables (migrate a file holding {"users": []}) and let '
    "the column hold NULL (ALTER TABLE \"public\".\"users\" ALTER COLUMN \"created_at\" DROP NOT NULL;), then run again"
)


def test_a_created_at_given_as_null_on_a_fresh_target_says_the_table_is_made_by_the_tool_and_the_advice_works(
    db, database_url
):
    """The load creates the tables in its own transaction, so a refused load leaves none: an ALTER alone would
    name a table that does not exist."""
    mapped, rejects = chain(document([entry(101, created_at=None), entry(102, created_at=None), entry(103)]))

    with psycopg.connect(database_url) as conn, pytest.raises(TargetError) as refused:
        load(conn, SCHEMA, mapped, rejects, "run-1")

    assert str(refused.value) == FRESH_TARGET_ADVICE
    assert db.execute("SELECT to_regclass('public.users')").fetchone() == (None,)
    # The advice, followed: an empty file's load makes the tables, the ALTER it names then applies.
    with psycopg.connect(database_url) as conn:
        load(conn, SCHEMA, *chain(document([])), "run-2")
    db.execute(re.search(r"\((ALTER TABLE .*;)\)", str(refused.value)).group(1))
    with psycopg.connect(database_url) as conn:
        load(conn, SCHEMA, mapped, rejects, "run-3", before_commit=judged(mapped, rejects))
    assert db.execute("SELECT user_id, created_at IS NULL FROM users ORDER BY user_id").fetchall() == [
        (101, True), (102, True), (103, False)]


def test_the_cli_on_a_fresh_target_prints_advice_that_names_no_table_as_existing(workdir, database_url, db):  # noqa: F811
    source = write_json(workdir / "data.json", {"users": [entry(101, created_at=None), entry(102, created_at=None)]})

    done = faceit_etl(workdir, database_url, "migrate", str(source))

    assert done.returncode == 1, done.stdout + done.stderr
    said = done.stdout + done.stderr
    assert "public.users does not exist yet" in said and "first create the tables" in said, said
    assert db.execute("SELECT to_regclass('public.users')").fetchone() == (None,)
    # Followed as printed: the empty file's migration, the ALTER, the same file again.
    empty = write_json(workdir / "empty.json", {"users": []})
    assert faceit_etl(workdir, database_url, "migrate", str(empty)).returncode == 0
    db.execute(re.search(r"\((ALTER TABLE .*;)\)", said).group(1))
    again = faceit_etl(workdir, database_url, "migrate", str(source))
    assert again.returncode == 0, again.stdout + again.stderr
    assert db.execute("SELECT user_id, created_at FROM users ORDER BY user_id").fetchall() == [(101, None), (102, None)]
