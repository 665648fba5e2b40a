"""What the file does not decide is proven unchanged before the commit, and new rows prove the defaults.

Rows of users the file lacks or rejected, and the cells of fields an entry lacks in a row that
existed, must be byte-identical after the load; a new row whose entry lacks a field must hold the
bot's default. A trigger stands in for anything that changes them during the load: the load then
fails before its commit, naming the rows, and the tables stay as they were.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
import pytest

from faceit_etl.postgres.ddl import SUBSCRIPTIONS, USERS
from faceit_etl.postgres.load import load
from faceit_etl.postgres.verdicts import BLOCKING, VerificationFailed, judge_before_commit
from faceit_etl.validation.fields import SUBSCRIPTION_FIELDS, USER_FIELDS, Field, Kind
from faceit_etl_tests.test_load import ALEMBIC_DDL, SCHEMA, chain, document
from faceit_etl_tests.test_verified_before_commit import HEAD, target_state

FULL = {
    "faceit_player_id": "p", "faceit_nickname": "n", "last_checked_match_id": "m", "waiting_for_nickname": False,
    "language": "en", "notifications_enabled": True, "total_requests": 3, "created_at": "2025-01-01T00:00:00",
    "last_active_at": "2025-02-01T00:00:00",
    "subscription": {"tier": "premium", "expires_at": "2026-01-01T00:00:00", "auto_renew": True,
                     "payment_method": "telegram_stars", "daily_requests": 4, "last_reset_date": "2025-03-01T00:00:00",
                     "referred_by": None, "referral_code": None, "referrals_count": 1},
}


def entry(user_id: int, **changes) -> dict:
    return {"user_id": user_id} | FULL | changes


def judged(mapped, rejects):
    return lambda conn, stats: judge_before_commit(
        conn, SCHEMA, mapped.users, mapped.subscriptions, stats.kept_absent(), rejects["user_id"])


def loaded_first(db, database_url, user_ids) -> None:
    """The bot's Alembic tables holding these users, loaded and verified."""
    db.execute(ALEMBIC_DDL)
    first, rejects = chain(document([entry(i) for i in user_ids]))
    with psycopg.connect(database_url) as conn:
        load(conn, SCHEMA, first, rejects, "run-1", before_commit=judged(first, rejects))


def after_trigger(db, table: str, event: str, body: str, timing: str = "AFTER") -> None:
    db.execute(f"CREATE FUNCTION meddle() RETURNS trigger AS $$ BEGIN {body}; RETURN NEW; END $$ LANGUAGE plpgsql")
    db.execute(f"CREATE TRIGGER meddle {timing} {event} ON {table} FOR EACH ROW EXECUTE FUNCTION meddle()")


@dataclass
class Case:
    file: list[dict]
    table: str
    event: str
    body: str
    timing: str
    changed_table: str
    changed: int  # the Telegram id named
    hashed: int = 1  # users whose kept part is hashed: absent, rejected, or lacking a field (ids are compared apart)
    before: str | None = None  # what the tables are made to hold first
    also_failed: tuple[str, ...] = ()  # the other blocking verdicts the change fails
    prune: bool = False  # users the file lacks are deleted: only rejected entries' users are kept


ABSENT_NICKNAME = "UPDATE users SET faceit_nickname = 'touched' WHERE user_id = 103"
CASES = {
    # 103 is not in the file: kept, counted kept_absent; the file's rows themselves are all right.
    "a kept user's row": Case([entry(101), entry(102), entry(104)], "users", "INSERT", ABSENT_NICKNAME, "AFTER",
                              "users", 103),
    "a kept user's subscription": Case(
        [entry(101), entry(102), entry(104)], "users", "INSERT",
        "UPDATE user_subscriptions SET daily_requests = 99 WHERE user_id = (SELECT id FROM users WHERE user_id = 103)",
        "AFTER", "user_subscriptions", 103),
    "a subscription a kept user gains": Case(
        [entry(101), entry(102), entry(104)], "users", "INSERT",
        "INSERT INTO user_subscriptions (id, user_id, tier) SELECT gen_random_uuid(), id, 'PRO' FROM users WHERE user_id = 103",
        "AFTER", "user_subscriptions", 103,
        before="DELETE FROM user_subscriptions WHERE user_id = (SELECT id FROM users WHERE user_id = 103)",
        also_failed=("row_counts_match",)),
    # 103's entry is rejected (an unknown tier): its row is kept, counted kept_rejected.
    "a rejected entry's user": Case(
        [entry(101), entry(102), entry(103, subscription={"tier": "gold"}), entry(104)], "users", "INSERT",
        ABSENT_NICKNAME, "AFTER", "users", 103),
    "a rejected entry's user, while pruning": Case(
        [entry(101), entry(103, subscription={"tier": "gold"}), entry(104)], "users", "INSERT",
        ABSENT_NICKNAME, "AFTER", "users", 103, prune=True),
    # 101's entry lacks language: its row keeps 'en', which the content check cannot judge alone.
    "a cell the entry lacks": Case(
        [{k: v for k, v in entry(101, faceit_nickname="renamed").items() if k != "language"}, entry(102), entry(103)],
        "users", "UPDATE", "NEW.language := 'xx'", "BEFORE", "users", 101),
    "the row id of a matched user": Case(
        [entry(101, subscription=FULL["subscription"] | {"daily_requests": 5}), entry(102), entry(103)],
        "user_subscriptions", "UPDATE",
        "NEW.id := gen_random_uuid()", "BEFORE", "user_subscriptions", 101, hashed=0),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_what_the_load_keeps_is_proven_unchanged_before_its_commit(db, database_url, case):
    loaded_first(db, database_url, [101, 102, 103])
    if case.before:
        db.execute(case.before)
    after_trigger(db, case.table, case.event, case.body, case.timing)
    mapped, rejects = chain(document(case.file))
    before = target_state(db)

    with psycopg.connect(database_url) as conn, pytest.raises(VerificationFailed) as failed:
        load(conn, SCHEMA, mapped, rejects, "run-2", before_commit=judged(mapped, rejects), prune=case.prune,
             max_prune_fraction=1.0)

    assert target_state(db) == before
    verdict = failed.value.verdicts["content_matches"]
    assert verdict.description == (
        f"{case.changed_table}: 1 row(s) the load had to keep as they were changed (user_id {case.changed})"
    )
    other = "users" if case.changed_table == "user_subscriptions" else "user_subscriptions"
    assert verdict.metadata["kept_as_they_were"] == {
        "users_compared": case.hashed, f"{case.changed_table}_changed": 1, f"{other}_changed": 0,
        "examples": {case.changed_table: [case.changed]},
    }
    assert {name for name in BLOCKING if not failed.value.verdicts[name].passed} == {"content_matches", *case.also_failed}
    assert str(failed.value).startswith(HEAD)
    assert f"content_matches: {verdict.description}" in str(failed.value)


def test_a_load_that_keeps_rows_proves_them_and_passes(db, database_url):
    """No meddling: the kept user 103, the rejected 102 and the matched 101 (lacking language) all compared."""
    loaded_first(db, database_url, [101, 102, 103])
    file = [{k: v for k, v in entry(101, faceit_nickname="renamed").items() if k != "language"},
            entry(102, subscription={"tier": "gold"}), entry(104)]
    mapped, rejects = chain(document(file))

    with psycopg.connect(database_url) as conn:
        stats = load(conn, SCHEMA, mapped, rejects, "run-2", before_commit=judged(mapped, rejects))

    assert (stats.users.inserted, stats.users.updated, stats.users.kept_absent, stats.users.kept_rejected) == (1, 1, 1, 1)
    assert db.execute("SELECT language FROM users WHERE user_id = 101").fetchone() == ("en",)
    with psycopg.connect(database_url) as conn, conn.transaction():
        # Outside the load's transaction nothing was recorded: the verdict claims no proof.
        verdict = judge_before_commit(conn, SCHEMA, mapped.users, mapped.subscriptions, stats.kept_absent())
        assert "kept_as_they_were" not in verdict["content_matches"].metadata


@pytest.mark.parametrize("first", [[], [101]], ids=["empty tables", "tables holding a user"])
def test_a_new_row_without_the_field_must_hold_the_bots_default(db, database_url, first):
    """An entry without `language` gets 'ru' and without `subscription` the FREE one; a trigger that
    writes something else into those cells is caught, on the fast path and on the upsert."""
    if first:
        loaded_first(db, database_url, first)
    else:
        db.execute(ALEMBIC_DDL)
    after_trigger(db, "users", "INSERT", "IF NEW.language = 'ru' THEN NEW.language := 'xx'; END IF", "BEFORE")
    db.execute("CREATE FUNCTION meddle_tier() RETURNS trigger AS $$ BEGIN NEW.daily_requests := 7; RETURN NEW; END $$ "
               "LANGUAGE plpgsql")
    db.execute("CREATE TRIGGER meddle_tier BEFORE INSERT ON user_subscriptions FOR EACH ROW EXECUTE FUNCTION meddle_tier()")
    mapped, rejects = chain(document([{"user_id": 201, "faceit_nickname": "new"}]))
    before = target_state(db)

    with psycopg.connect(database_url) as conn, pytest.raises(VerificationFailed) as failed:
        load(conn, SCHEMA, mapped, rejects, "run-2", before_commit=judged(mapped, rejects))

    assert target_state(db) == before
    assert failed.value.verdicts["content_matches"].description == (
        "users: 0 rows missing, 1 cells differ (in language); "
        "user_subscriptions: 0 rows missing, 1 cells differ (in daily_requests)"
    )


@pytest.mark.parametrize("kept", [2, 20, 21])
def test_kept_rows_that_changed_are_named_by_the_first_twenty_and_more_are_marked(db, database_url, kept):
    loaded_first(db, database_url, range(1000, 1001 + kept))
    after_trigger(db, "users", "UPDATE", "UPDATE user_subscriptions SET daily_requests = 99 WHERE user_id <> NEW.id")
    mapped, rejects = chain(document([entry(1000, faceit_nickname="renamed")]))

    with psycopg.connect(database_url) as conn, pytest.raises(VerificationFailed) as failed:
        load(conn, SCHEMA, mapped, rejects, "run-2", before_commit=judged(mapped, rejects))

    named = ", ".join(map(str, range(1001, 1001 + min(kept, 20)))) + (", …" if kept > 20 else "")
    assert failed.value.verdicts["content_matches"].description == (
        f"user_subscriptions: {kept} row(s) the load had to keep as they were changed (user_id {named})")


LACKABLE = [(USERS, f) for f in USER_FIELDS if f.name != "user_id"] + [(SUBSCRIPTIONS, f) for f in SUBSCRIPTION_FIELDS]
ANOTHER_VALUE = {  # what a trigger writes instead of a cell's value, by the field's kind
    Kind.TEXT: "'xx'", Kind.FLAG: "NOT coalesce(NEW.{c}, false)", Kind.COUNT: "coalesce(NEW.{c}, 0) + 1",
    Kind.TELEGRAM_ID: "coalesce(NEW.{c}, 0) + 1", Kind.TIMESTAMP: "coalesce(NEW.{c}, now()) + interval '1 day'",
    Kind.TIER: "'PRO'",
}


def lacking(table: str, field: Field, version: int) -> tuple[dict, str, object]:
    """User 101's entry without the field, another field of the same table changed (so its row is
    updated); and that other field with its new value."""
    full = entry(101)
    if table == USERS:
        other = "faceit_nickname" if field.name != "faceit_nickname" else "language"
        return {k: v for k, v in full.items() if k != field.source_key} | {other: f"v{version}"}, other, f"v{version}"
    other = "daily_requests" if field.name != "daily_requests" else "referrals_count"
    subscription = {k: v for k, v in full["subscription"].items() if k != field.source_key}
    return full | {"subscription": subscription | {other: 10 + version}}, other, 10 + version


def cell_of_101(db, table: str, column: str):
    if table == USERS:
        return db.execute(f"SELECT {column} FROM users WHERE user_id = 101").fetchone()[0]
    return db.execute(f"SELECT s.{column} FROM user_subscriptions s JOIN users u ON u.id = s.user_id "
                      "WHERE u.user_id = 101").fetchone()[0]


@pytest.mark.parametrize(("table", "field"), LACKABLE, ids=[f"{t}.{f.name}" for t, f in LACKABLE])
def test_every_field_an_entry_lacks_keeps_its_cell_and_a_change_to_that_cell_fails_the_load(
    db, database_url, table, field
):
    """Each column on its own: the record of what the load keeps must hash every cell an entry may lack,
    of the users and of the subscriptions, and read each table's own presence bits."""
    loaded_first(db, database_url, [101, 102])
    kept = cell_of_101(db, table, field.name)
    file, other, value = lacking(table, field, 1)
    mapped, rejects = chain(document([file, entry(102)]))

    with psycopg.connect(database_url) as conn:
        load(conn, SCHEMA, mapped, rejects, "run-2", before_commit=judged(mapped, rejects))

    assert (cell_of_101(db, table, field.name), cell_of_101(db, table, other)) == (kept, value)
    after_trigger(db, table, "UPDATE", f"NEW.{field.name} := {ANOTHER_VALUE[field.kind].format(c=field.name)}", "BEFORE")
    file, _, _ = lacking(table, field, 2)
    mapped, rejects = chain(document([file, entry(102)]))
    before = target_state(db)

    with psycopg.connect(database_url) as conn, pytest.raises(VerificationFailed) as failed:
        load(conn, SCHEMA, mapped, rejects, "run-3", before_commit=judged(mapped, rejects))

    assert target_state(db) == before
    assert failed.value.verdicts["content_matches"].description == (
        f"{table}: 1 row(s) the load had to keep as they were changed (user_id 101)")
