"""Fields a file's entry does not have (the key is absent, not null) keep the values the bot's rows
hold; a new user gets the bot's defaults; an explicit null is the file's value. Real loads on a
real PostgreSQL with tables of the bot's Alembic revision, its ORM's rows written by hand.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from faceit_etl.postgres.load import load
from faceit_etl.postgres.verdicts import BLOCKING, all_verdicts
from faceit_etl_tests.conftest import examples
from faceit_etl_tests.test_load import (  # noqa: F401 (conn: a fixture)
    ALEMBIC_DDL, SCHEMA, chain, conn, document, row_versions, subscription_rows, user_rows,
)
from faceit_etl_tests.test_sync import counts, dump

UTC = timezone.utc
BOT_USER = {
    "faceit_player_id": "bot-player", "faceit_nickname": "bot-nick", "last_checked_match_id": "bot-match",
    "waiting_for_nickname": True, "language": "en", "notifications_enabled": False, "total_requests": 55,
    "last_active_at": datetime(2025, 1, 1, tzinfo=UTC),
}
BOT_SUBSCRIPTION = {
    "tier": "PREMIUM", "expires_at": datetime(2027, 1, 1, tzinfo=UTC), "auto_renew": True,
    "payment_method": "telegram_stars", "daily_requests": 7, "last_reset_date": datetime(2025, 6, 1, tzinfo=UTC),
    "referred_by_user_id": 77, "referral_code": "ABCDEF12", "referrals_count": 3,
}
CREATED = datetime(2024, 5, 5, tzinfo=UTC)


def bot_row(db, telegram_id: int, user: dict = BOT_USER, subscription: dict = BOT_SUBSCRIPTION) -> None:
    """A user and its subscription as the bot's ORM writes them: uuid4 ids, its own values."""
    user_row = str(uuid.uuid4())
    db.execute(
        f"INSERT INTO users (id, user_id, {', '.join(user)}, created_at) VALUES (%s, %s, {', '.join(['%s'] * len(user))}, %s)",
        [user_row, telegram_id, *user.values(), CREATED],
    )
    db.execute(
        f"INSERT INTO user_subscriptions (id, user_id, {', '.join(subscription)})"
        f" VALUES (%s, %s, {', '.join(['%s'] * len(subscription))})",
        [str(uuid.uuid4()), user_row, *subscription.values()],
    )


def user_tuple(telegram_id: int, values: dict) -> tuple:
    """A row of USER_SQL (created_at from the bot's row)."""
    return (telegram_id, *(values[k] for k in ("faceit_player_id", "faceit_nickname", "last_checked_match_id",
            "waiting_for_nickname", "language", "notifications_enabled", "total_requests", "last_active_at")), CREATED)


def subscription_tuple(telegram_id: int, values: dict) -> tuple:
    return (telegram_id, *values.values())


def assert_checks_pass(db, mapped, stats) -> None:
    verdicts = all_verdicts(db, SCHEMA, mapped.users, mapped.subscriptions, stats.kept_absent())
    assert {name: verdicts[name].passed for name in BLOCKING} == dict.fromkeys(BLOCKING, True), {
        name: verdicts[name].description for name in BLOCKING
    }


FLAT_101 = {
    "user_id": 101, "faceit_player_id": "bot-player", "faceit_nickname": "renamed", "last_checked_match_id": "bot-match",
    "waiting_for_nickname": True, "language": "en", "notifications_enabled": False,
    "created_at": "2024-05-05T00:00:00", "last_active_at": "2025-01-01T00:00:00", "total_requests": 55,
}


def test_a_flat_file_keeps_the_bots_paid_subscription_and_a_new_user_gets_the_defaults(db, conn):
    """The bot's current (flat) file has no subscriptions: user 101's PREMIUM one stays as it is
    (counted unchanged), only the nickname the file changes is written; user 202, new, gets the
    bot's default FREE subscription. The checks pass, and a second run writes nothing."""
    db.execute(ALEMBIC_DDL)
    bot_row(db, 101)
    newcomer = {"user_id": 202, "faceit_nickname": "new"}
    mapped, rejects = chain(document([FLAT_101, newcomer]))

    stats = load(conn, SCHEMA, mapped, rejects, "run-1")

    assert counts(stats.users) == {"inserted": 1, "updated": 1, "unchanged": 0, "kept_absent": 0, "deleted": 0}
    assert counts(stats.subscriptions) == {"inserted": 1, "updated": 0, "unchanged": 1, "kept_absent": 0, "deleted": 0}
    assert subscription_rows(db) == [
        subscription_tuple(101, BOT_SUBSCRIPTION),
        (202, "FREE", None, False, None, 0, None, None, None, 0),
    ]
    assert user_rows(db)[0] == user_tuple(101, BOT_USER | {"faceit_nickname": "renamed"})
    assert user_rows(db)[1][:9] == (202, None, "new", None, False, "ru", True, 0, None)
    assert_checks_pass(db, mapped, stats)

    before = dump(db)
    again = load(conn, SCHEMA, mapped, rejects, "run-2")
    assert (counts(again.users)["unchanged"], counts(again.subscriptions)["unchanged"]) == (2, 2)
    assert dump(db) == before


def test_a_first_layout_file_keeps_every_field_it_lacks_and_counts_the_row_unchanged(db, conn):
    """Four fields only, equal to the bot's: total_requests 55, language 'en' and last_active_at
    stay, and nothing is written, not even a row lock; a new user of the same layout gets 0, 'ru' and
    no activity."""
    db.execute(ALEMBIC_DDL)
    bot_row(db, 101)
    first = {key: FLAT_101[key] for key in ("user_id", "faceit_player_id", "last_checked_match_id")}
    first["faceit_nickname"] = "bot-nick"
    before, versions = dump(db), row_versions(db)
    mapped, rejects = chain(document([first]))

    stats = load(conn, SCHEMA, mapped, rejects, "run-1")

    assert counts(stats.users) == {"inserted": 0, "updated": 0, "unchanged": 1, "kept_absent": 0, "deleted": 0}
    assert counts(stats.subscriptions) == {"inserted": 0, "updated": 0, "unchanged": 1, "kept_absent": 0, "deleted": 0}
    assert (dump(db), row_versions(db)) == (before, versions)
    assert_checks_pass(db, mapped, stats)

    newcomer = {"user_id": 303, "faceit_player_id": "p", "faceit_nickname": "n", "last_checked_match_id": None}
    mapped, rejects = chain(document([first, newcomer]))
    stats = load(conn, SCHEMA, mapped, rejects, "run-2")
    assert (stats.users.inserted, stats.users.unchanged) == (1, 1)
    assert user_rows(db)[0] == user_tuple(101, BOT_USER)
    assert user_rows(db)[1][:9] == (303, "p", "n", None, False, "ru", True, 0, None)
    assert subscription_rows(db)[1] == (303, "FREE", None, False, None, 0, None, None, None, 0)
    assert_checks_pass(db, mapped, stats)


def test_an_explicit_null_in_the_file_sets_null(db, conn):
    """A key present with null is the file's value, not a missing field: the bot's expiry, payment
    method, referral code and last activity become null, and the rows count as updated."""
    db.execute(ALEMBIC_DDL)
    bot_row(db, 101)
    entry = FLAT_101 | {"faceit_nickname": "bot-nick", "last_active_at": None,
                        "subscription": {"tier": "premium", "expires_at": None, "payment_method": None, "referral_code": None}}
    mapped, rejects = chain(document([entry]))

    stats = load(conn, SCHEMA, mapped, rejects, "run-1")

    assert (stats.users.updated, stats.subscriptions.updated) == (1, 1)
    assert user_rows(db) == [user_tuple(101, BOT_USER | {"last_active_at": None})]
    assert subscription_rows(db) == [
        subscription_tuple(101, BOT_SUBSCRIPTION | {"expires_at": None, "payment_method": None, "referral_code": None})
    ]
    assert_checks_pass(db, mapped, stats)


FILE_USER = {
    "faceit_player_id": "file-player", "faceit_nickname": "file-nick", "last_checked_match_id": "file-match",
    "waiting_for_nickname": False, "language": "de", "notifications_enabled": True, "total_requests": 9,
    "last_active_at": "2026-02-02T00:00:00",
}
FILE_SUBSCRIPTION = {
    "tier": "pro", "expires_at": "2028-03-03T00:00:00", "auto_renew": False, "payment_method": "referral_bonus",
    "daily_requests": 1, "last_reset_date": "2026-04-04T00:00:00", "referred_by": 88, "referral_code": "0123ABCD",
    "referrals_count": 5,
}
DB_NAME = {"referred_by": "referred_by_user_id"}


@settings(max_examples=examples(30), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    user_keys=st.sets(st.sampled_from(sorted(FILE_USER))),
    subscription_keys=st.one_of(st.none(), st.sets(st.sampled_from(sorted(FILE_SUBSCRIPTION)))),
)
def test_any_set_of_keys_writes_exactly_the_fields_present(db, conn, user_keys, subscription_keys):
    """Whatever keys an entry has (and whether it has a subscription at all), each field present
    takes the file's value and each absent one keeps the bot's; the checks pass; a re-run writes
    nothing."""
    db.execute("DROP TABLE IF EXISTS user_subscriptions, users; DROP TYPE IF EXISTS subscriptiontier")
    db.execute(ALEMBIC_DDL)
    bot_row(db, 101)
    entry = {"user_id": 101} | {k: FILE_USER[k] for k in user_keys}
    if subscription_keys is not None:
        entry["subscription"] = {k: FILE_SUBSCRIPTION[k] for k in subscription_keys}
    mapped, rejects = chain(document([entry]))

    stats = load(conn, SCHEMA, mapped, rejects, "run-1")

    def parsed(value):
        return datetime.fromisoformat(value).replace(tzinfo=UTC) if isinstance(value, str) and value[:2] == "20" else value

    user = BOT_USER | {k: parsed(FILE_USER[k]) for k in user_keys}
    subscription = BOT_SUBSCRIPTION | {
        DB_NAME.get(k, k): parsed(FILE_SUBSCRIPTION[k]) for k in subscription_keys or ()
    } | ({"tier": "PRO"} if "tier" in (subscription_keys or ()) else {})
    assert user_rows(db) == [user_tuple(101, user)]
    assert subscription_rows(db) == [subscription_tuple(101, subscription)]
    assert stats.users.updated == (1 if user_keys else 0)
    assert stats.subscriptions.updated == (1 if subscription_keys else 0)
    assert_checks_pass(db, mapped, stats)
    before = dump(db)
    again = load(conn, SCHEMA, mapped, rejects, "run-2")
    assert (again.users.unchanged, again.subscriptions.unchanged, dump(db)) == (1, 1, before)


@pytest.mark.parametrize("layout", ["first", "flat"])
def test_a_dry_run_counts_as_the_load_writes(db, conn, layout):
    """The dry run goes through the same statements: the bot's row lacking only fields the file
    does not have is counted unchanged, and nothing is left written."""
    db.execute(ALEMBIC_DDL)
    bot_row(db, 101)
    entry = FLAT_101 | {"faceit_nickname": "bot-nick"}
    if layout == "first":
        entry = {k: entry[k] for k in ("user_id", "faceit_player_id", "faceit_nickname", "last_checked_match_id")}
    before = dump(db)
    stats = load(conn, SCHEMA, *chain(document([entry])), "dry", dry_run=True)
    assert (counts(stats.users), counts(stats.subscriptions)) == (
        {"inserted": 0, "updated": 0, "unchanged": 1, "kept_absent": 0, "deleted": 0},
    ) * 2
    assert dump(db) == before
