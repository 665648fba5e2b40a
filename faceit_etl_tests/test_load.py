"""The load (with ddl, verify, runlog) against a real PostgreSQL, fed by the real chain:
read_source/parse_source → validate_entries → map_frames.

Row contents are checked against an oracle built from the raw JSON entries themselves (the bot's
defaults for absent fields), not against the frames the code under test produced.
"""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import orjson
import pandas as pd
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import sql

from faceit_etl.generate import generate_users, write_data_file
from faceit_etl.mapping import PRESENT, MappedFrames, map_frames
from faceit_etl.source import parse_source, read_source
from faceit_etl.postgres import ddl, runlog, verdicts, verify
from faceit_etl.postgres.ddl import TargetError
from faceit_etl.postgres.fingerprint import fingerprint
from faceit_etl.postgres.load import jsonb_safe, load, to_csv_chunks
from faceit_etl.postgres.lock import lock_schema
from faceit_etl.validation.validate import validate_entries
from faceit_etl_tests.conftest import FLAT_SAMPLE, NESTED_SAMPLE, examples

SCHEMA = "public"
INT32_MAX = 2**31 - 1

USER_SQL = """SELECT user_id, faceit_player_id, faceit_nickname, last_checked_match_id, waiting_for_nickname,
                     language, notifications_enabled, total_requests, last_active_at, created_at
              FROM {schema}.users ORDER BY user_id"""
SUBSCRIPTION_SQL = """SELECT u.user_id, s.tier::text, s.expires_at, s.auto_renew, s.payment_method, s.daily_requests,
                             s.last_reset_date, s.referred_by_user_id, s.referral_code, s.referrals_count
                      FROM {schema}.user_subscriptions s JOIN {schema}.users u ON u.id = s.user_id
                      ORDER BY u.user_id"""

# The bot's own first Alembic revision, 32-bit Telegram ids and all.
ALEMBIC_DDL = """
CREATE TYPE subscriptiontier AS ENUM ('FREE', 'PREMIUM', 'PRO');
CREATE TABLE users (
    id uuid NOT NULL PRIMARY KEY,
    user_id integer NOT NULL,
    faceit_player_id varchar(255),
    faceit_nickname varchar(255),
    last_checked_match_id varchar(255),
    waiting_for_nickname boolean,
    language varchar(10),
    notifications_enabled boolean,
    total_requests integer,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    last_active_at timestamptz
);
CREATE UNIQUE INDEX ix_users_user_id ON users (user_id);
CREATE INDEX ix_users_faceit_player_id ON users (faceit_player_id);
CREATE INDEX ix_users_faceit_nickname ON users (faceit_nickname);
CREATE TABLE user_subscriptions (
    id uuid NOT NULL PRIMARY KEY,
    user_id uuid NOT NULL UNIQUE REFERENCES users (id) ON DELETE CASCADE,
    tier subscriptiontier,
    expires_at timestamptz,
    auto_renew boolean,
    payment_method varchar(100),
    daily_requests integer,
    last_reset_date timestamptz,
    referred_by_user_id integer,
    referral_code varchar(20) UNIQUE,
    referrals_count integer,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
"""


# ---------------------------------------------------------------------------------------------
# helpers


def chain(source: Path | bytes) -> tuple[MappedFrames, pd.DataFrame]:
    """The real pipeline up to the load: read, validate, map."""
    data = read_source(source) if isinstance(source, Path) else parse_source(source, "<test>")
    outcome = validate_entries(data)
    return map_frames(outcome.valid), outcome.rejects


def document(entries: list) -> bytes:
    return orjson.dumps({"users": entries, "analytics": {"total_users": len(entries), "daily_stats": {}}})


def no_rejects() -> pd.DataFrame:
    return chain(document([]))[1]


def ts(text: str | None) -> datetime | None:
    """The bot's naive timestamps, read as UTC (the default source timezone)."""
    return None if text is None else datetime.fromisoformat(text).replace(tzinfo=timezone.utc)


def _or(value, default):
    return default if value is None else value


def expected_users(entries: list[dict]) -> list[tuple]:
    """Rows of USER_SQL for the given raw entries, with the bot's defaults for absent fields."""
    return sorted(
        (
            e["user_id"],
            e.get("faceit_player_id"),
            e.get("faceit_nickname"),
            e.get("last_checked_match_id"),
            _or(e.get("waiting_for_nickname"), False),
            _or(e.get("language"), "ru"),
            _or(e.get("notifications_enabled"), True),
            _or(e.get("total_requests"), 0),
            ts(e.get("last_active_at")),
            ts(e.get("created_at")),
        )
        for e in entries
    )


def expected_subscriptions(entries: list[dict]) -> list[tuple]:
    rows = []
    for e in entries:
        s = e.get("subscription") or {}
        rows.append((
            e["user_id"],
            _or(s.get("tier"), "free").upper(),
            ts(s.get("expires_at")),
            _or(s.get("auto_renew"), False),
            s.get("payment_method"),
            _or(s.get("daily_requests"), 0),
            ts(s.get("last_reset_date")),
            s.get("referred_by"),
            s.get("referral_code"),
            _or(s.get("referrals_count"), 0),
        ))
    return sorted(rows)


def user_rows(db, schema: str = SCHEMA) -> list[tuple]:
    return db.execute(USER_SQL.format(schema=schema)).fetchall()


def subscription_rows(db, schema: str = SCHEMA) -> list[tuple]:
    return db.execute(SUBSCRIPTION_SQL.format(schema=schema)).fetchall()


def assert_content(db, entries: list[dict], schema: str = SCHEMA) -> None:
    assert user_rows(db, schema) == expected_users(entries)
    assert subscription_rows(db, schema) == expected_subscriptions(entries)


def snapshot(db, schema: str = SCHEMA) -> dict | None:
    """Every column of both tables (ids, created_at, updated_at included), or None without tables."""
    if not ddl.table_exists(db, schema, "users"):
        return None
    return {
        "users": {r[0]: r for r in db.execute(f"SELECT user_id, * FROM {schema}.users").fetchall()},
        "subscriptions": {
            r[0]: r
            for r in db.execute(
                f"SELECT u.user_id, s.* FROM {schema}.user_subscriptions s JOIN {schema}.users u ON u.id = s.user_id"
            ).fetchall()
        },
        "subscription_count": db.execute(f"SELECT count(*) FROM {schema}.user_subscriptions").fetchone()[0],
    }


def column_index(db, table: str, column: str) -> int:
    """Position of a column in `snapshot` rows (which start with the Telegram id)."""
    names = [c for c, _, _ in ddl.column_types(db, SCHEMA, table)]
    return 1 + names.index(column)


def row_versions(db) -> dict:
    """Each row's xmin and xmax: they change when a row is written or locked, even to equal values."""
    return {
        name: db.execute(f"SELECT id, xmin::text, xmax::text FROM {SCHEMA}.{name} ORDER BY id").fetchall()
        for name in ("users", "user_subscriptions")
    }


def key_definitions(db) -> dict[str, tuple[int, str]]:
    """Every index of both tables: name -> (oid, definition). A rebuilt index keeps its definition
    and gets a new oid."""
    rows = db.execute(
        "SELECT indexrelid::regclass::text, indexrelid::int, pg_get_indexdef(indexrelid) FROM pg_index "
        "WHERE indrelid IN ('users'::regclass, 'user_subscriptions'::regclass)"
    ).fetchall()
    return {name: (oid, definition) for name, oid, definition in rows}


def foreign_keys(db) -> list[tuple[str, str]]:
    return db.execute(
        "SELECT conname::text, pg_get_constraintdef(oid) FROM pg_constraint "
        "WHERE conrelid = 'user_subscriptions'::regclass AND contype = 'f' ORDER BY 1"
    ).fetchall()


def entries_of(path: Path) -> list[dict]:
    return orjson.loads(path.read_bytes())["users"]


def stats_tuple(table_stats) -> tuple[int, int, int]:
    return table_stats.inserted, table_stats.updated, table_stats.unchanged


def boom(_conn, _stats) -> None:
    raise RuntimeError("injected failure before commit")


@pytest.fixture
def conn(database_url):
    """The load's own connection, not in autocommit, as the Dagster asset opens it."""
    with psycopg.connect(database_url) as connection:
        yield connection


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> Path:
    """2,000 users in the nested layout, ids up to 8e9, referrers in and out of the file."""
    return write_data_file(tmp_path_factory.mktemp("gen") / "data.json", 2_000, seed=7)


# ---------------------------------------------------------------------------------------------
# first load


@pytest.mark.parametrize("sample", [NESTED_SAMPLE, FLAT_SAMPLE], ids=["nested", "flat"])
def test_first_load_creates_enum_tables_indexes_and_inserts_every_row(db, conn, sample):
    mapped, rejects = chain(sample)
    stats = load(conn, SCHEMA, mapped, rejects, "run-1")

    assert stats.created_tables and not stats.truncated
    assert stats_tuple(stats.users) == (25, 0, 0)
    assert stats_tuple(stats.subscriptions) == (25, 0, 0)
    assert stats.rejects_written == 0

    labels = db.execute(
        "SELECT enumlabel FROM pg_enum e JOIN pg_type t ON t.oid = e.enumtypid "
        "WHERE t.typname = 'subscriptiontier' ORDER BY e.enumsortorder"
    ).fetchall()
    assert [label for (label,) in labels] == ["FREE", "PREMIUM", "PRO"]
    types = dict(
        db.execute(
            "SELECT table_name || '.' || column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = 'public' AND table_name IN ('users', 'user_subscriptions') "
            "AND column_name IN ('user_id', 'referred_by_user_id', 'tier')"
        ).fetchall()
    )
    assert types == {
        "users.user_id": "bigint",
        "user_subscriptions.user_id": "uuid",
        "user_subscriptions.referred_by_user_id": "bigint",
        "user_subscriptions.tier": "USER-DEFINED",
    }
    indexes = dict(db.execute("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'users'").fetchall())
    assert indexes["ix_users_user_id"] == "CREATE UNIQUE INDEX ix_users_user_id ON public.users USING btree (user_id)"
    assert indexes["ix_users_faceit_player_id"] == (
        "CREATE INDEX ix_users_faceit_player_id ON public.users USING btree (faceit_player_id)"
    )
    assert indexes["ix_users_faceit_nickname"] == (
        "CREATE INDEX ix_users_faceit_nickname ON public.users USING btree (faceit_nickname)"
    )
    fk = db.execute(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = 'user_subscriptions'::regclass "
        "AND contype = 'f'"
    ).fetchone()[0]
    assert fk == "FOREIGN KEY (user_id) REFERENCES users(id) ON DELETE CASCADE"

    entries = entries_of(sample)
    assert_content(db, entries)
    if sample == FLAT_SAMPLE:  # every subscription is the bot's default one
        assert {row[1:] for row in subscription_rows(db)} == {("FREE", None, False, None, 0, None, None, None, 0)}
    # The row ids are the mapping's, and every subscription belongs to its user.
    ids = db.execute("SELECT id::text FROM users ORDER BY user_id").fetchall()
    assert [i for (i,) in ids] == mapped.users.sort_values("user_id")["id"].tolist()


def test_generated_file_loads_with_every_value_as_in_the_file(db, conn, generated):
    mapped, rejects = chain(generated)
    stats = load(conn, SCHEMA, mapped, rejects, "run-1")
    assert stats_tuple(stats.users) == (2_000, 0, 0)
    assert stats_tuple(stats.subscriptions) == (2_000, 0, 0)
    entries = entries_of(generated)
    assert_content(db, entries)
    assert db.execute("SELECT count(*) FROM users WHERE user_id > %s", [INT32_MAX]).fetchone()[0] == sum(
        e["user_id"] > INT32_MAX for e in entries
    )


# ---------------------------------------------------------------------------------------------
# idempotency and updates


def test_second_load_of_the_same_frames_changes_no_row(db, conn, generated):
    mapped, rejects = chain(generated)
    load(conn, SCHEMA, mapped, rejects, "run-1")
    before = snapshot(db)

    versions = row_versions(db)

    again = load(conn, SCHEMA, mapped, rejects, "run-2")
    assert not again.created_tables
    assert stats_tuple(again.users) == (0, 0, 2_000)
    assert stats_tuple(again.subscriptions) == (0, 0, 2_000)
    assert snapshot(db) == before  # ids, created_at, updated_at: all identical
    # Not even locked: no row version was written (ON CONFLICT alone would have locked all 4,000).
    assert row_versions(db) == versions

    # The file read afresh (new frames, same content) changes nothing either.
    fresh, fresh_rejects = chain(generated)
    third = load(conn, SCHEMA, fresh, fresh_rejects, "run-3")
    assert stats_tuple(third.users) == (0, 0, 2_000)
    assert stats_tuple(third.subscriptions) == (0, 0, 2_000)
    assert snapshot(db) == before
    assert_content(db, entries_of(generated))


def test_changed_user_and_subscription_are_the_only_rows_updated(db, conn, generated, tmp_path):
    load(conn, SCHEMA, *chain(generated), "run-1")
    before = snapshot(db)

    entries = entries_of(generated)
    renamed, upgraded = entries[5], next(e for e in entries[100:] if e["subscription"]["tier"] != "pro")
    renamed["faceit_nickname"] = "renamed-player"
    upgraded["subscription"]["tier"] = "pro"
    changed = tmp_path / "changed.json"
    changed.write_bytes(document(entries))

    stats = load(conn, SCHEMA, *chain(changed), "run-2")
    assert stats_tuple(stats.users) == (0, 1, 1_999)
    assert stats_tuple(stats.subscriptions) == (0, 1, 1_999)

    after = snapshot(db)
    user_id, sub_id = renamed["user_id"], upgraded["user_id"]
    nickname = column_index(db, "users", "faceit_nickname")
    user_updated = column_index(db, "users", "updated_at")
    user_created = column_index(db, "users", "created_at")
    tier = column_index(db, "user_subscriptions", "tier")
    sub_updated = column_index(db, "user_subscriptions", "updated_at")

    assert {k: v for k, v in after["users"].items() if k != user_id} == {
        k: v for k, v in before["users"].items() if k != user_id
    }
    assert {k: v for k, v in after["subscriptions"].items() if k != sub_id} == {
        k: v for k, v in before["subscriptions"].items() if k != sub_id
    }
    old_user, new_user = before["users"][user_id], after["users"][user_id]
    assert new_user[nickname] == "renamed-player"
    assert new_user[user_updated] > old_user[user_updated]
    assert new_user[user_created] == old_user[user_created]
    differing = [i for i, (a, b) in enumerate(zip(old_user, new_user)) if a != b]
    assert differing == sorted([nickname, user_updated])

    old_sub, new_sub = before["subscriptions"][sub_id], after["subscriptions"][sub_id]
    assert new_sub[tier] == "PRO"
    assert new_sub[sub_updated] > old_sub[sub_updated]
    assert [i for i, (a, b) in enumerate(zip(old_sub, new_sub)) if a != b] == sorted([tier, sub_updated])
    assert_content(db, entries)


def test_created_at_absent_from_the_file_keeps_the_first_loads_value(db, conn, tmp_path):
    """The first layout has no created_at: the first load sets it, later loads never move it."""
    path = write_data_file(tmp_path / "first.json", 300, seed=3, layout="first")
    first = load(conn, SCHEMA, *chain(path), "run-1")
    assert stats_tuple(first.users) == (300, 0, 0)
    created = dict(db.execute("SELECT user_id, created_at FROM users").fetchall())
    load_time = db.execute("SELECT DISTINCT created_at FROM users").fetchall()
    assert len(load_time) == 1  # one transaction, one now()
    assert db.execute("SELECT bool_and(created_at = updated_at) FROM users").fetchone()[0]
    entries = entries_of(path)
    assert [r[:-1] for r in user_rows(db)] == [r[:-1] for r in expected_users(entries)]
    before = snapshot(db)

    again = load(conn, SCHEMA, *chain(path), "run-2")
    assert stats_tuple(again.users) == (0, 0, 300)
    assert snapshot(db) == before

    entries[42]["faceit_nickname"] = "now-with-a-new-name"
    changed = tmp_path / "changed.json"
    changed.write_bytes(document(entries))
    third = load(conn, SCHEMA, *chain(changed), "run-3")
    assert stats_tuple(third.users) == (0, 1, 299)
    assert dict(db.execute("SELECT user_id, created_at FROM users").fetchall()) == created
    moved = db.execute("SELECT user_id FROM users WHERE updated_at > created_at").fetchall()
    assert moved == [(entries[42]["user_id"],)]
    assert [r[:-1] for r in user_rows(db)] == [r[:-1] for r in expected_users(entries)]


# ---------------------------------------------------------------------------------------------
# truncate


def test_truncate_replaces_the_content(db, conn, generated, tmp_path):
    load(conn, SCHEMA, *chain(generated), "run-1")
    entries = entries_of(generated)
    kept = entries[:1_500]
    for entry in kept[:100]:
        entry["total_requests"] += 1
    newcomers = [e for e in generate_users(50, seed=99) if e["user_id"] not in {x["user_id"] for x in entries}]
    replacement = tmp_path / "replacement.json"
    replacement.write_bytes(document(kept + newcomers))

    seen_inside: dict = {}

    def look_inside(connection, _stats) -> None:
        seen_inside["status"] = connection.info.transaction_status
        seen_inside["users"] = connection.execute("SELECT count(*) FROM users").fetchone()[0]

    stats = load(conn, SCHEMA, *chain(replacement), "run-2", truncate=True, before_commit=look_inside)
    total = len(kept) + len(newcomers)
    assert stats.truncated
    assert stats_tuple(stats.users) == (total, 0, 0)
    assert stats_tuple(stats.subscriptions) == (total, 0, 0)
    # Truncate and inserts happened in the load's one transaction, before its commit.
    assert seen_inside == {"status": psycopg.pq.TransactionStatus.INTRANS, "users": total}
    assert_content(db, kept + newcomers)
    gone = [e["user_id"] for e in entries[1_500:]]
    assert db.execute("SELECT count(*) FROM users WHERE user_id = ANY(%s)", [gone]).fetchone()[0] == 0
    assert db.execute("SELECT count(*) FROM user_subscriptions").fetchone()[0] == total


def test_failed_truncating_load_keeps_the_old_content(db, conn, generated):
    load(conn, SCHEMA, *chain(generated), "run-1")
    before = snapshot(db)
    replacement = document(entries_of(generated)[:10])
    with pytest.raises(RuntimeError, match="injected failure"):
        load(conn, SCHEMA, *chain(replacement), "run-2", truncate=True, before_commit=boom)
    assert snapshot(db) == before


# ---------------------------------------------------------------------------------------------
# tables made by the bot's Alembic revision


def small_id_entries(n: int) -> list[dict]:
    """Generated users with every Telegram id (referrers too) moved below 2^31, consistently."""
    entries = generate_users(n, seed=21)
    ids = {e["user_id"] for e in entries} | {
        e["subscription"]["referred_by"] for e in entries if e["subscription"]["referred_by"]
    }
    small = {old: new for new, old in enumerate(sorted(ids), start=1_000)}
    for e in entries:
        e["user_id"] = small[e["user_id"]]
        if e["subscription"]["referred_by"]:
            e["subscription"]["referred_by"] = small[e["subscription"]["referred_by"]]
    return entries


def test_alembic_tables_take_small_ids(db, conn):
    db.execute(ALEMBIC_DDL)
    entries = small_id_entries(400)
    mapped, rejects = chain(document(entries))
    stats = load(conn, SCHEMA, mapped, rejects, "run-1")
    assert not stats.created_tables
    assert stats_tuple(stats.users) == (400, 0, 0)
    assert_content(db, entries)
    # Our DDL did not change theirs: the columns are still 32-bit.
    assert db.execute(
        "SELECT data_type FROM information_schema.columns WHERE table_name = 'users' AND column_name = 'user_id'"
    ).fetchone()[0] == "integer"
    before = snapshot(db)
    again = load(conn, SCHEMA, mapped, rejects, "run-2")
    assert stats_tuple(again.users) == (0, 0, 400)
    assert snapshot(db) == before
    assert verify.compare_users(db, SCHEMA, mapped.users).equal
    assert verify.compare_subscriptions(db, SCHEMA, mapped.subscriptions, mapped.users).equal


def test_alembic_tables_refuse_big_ids_before_writing_and_say_how_to_fix(db, conn, generated):
    db.execute(ALEMBIC_DDL)
    small = small_id_entries(50)
    load(conn, SCHEMA, *chain(document(small)), "run-0")
    before = snapshot(db)
    indexes_before = db.execute("SELECT indexname FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1").fetchall()

    entries = entries_of(generated)
    big_users = sum(e["user_id"] > INT32_MAX for e in entries)
    big_referrers = sum((e["subscription"]["referred_by"] or 0) > INT32_MAX for e in entries)
    assert big_users and big_referrers
    mapped, rejects = chain(generated)
    with pytest.raises(TargetError) as raised:
        load(conn, SCHEMA, mapped, rejects, "run-1")
    message = str(raised.value)
    assert f"{big_users} value(s) of users.user_id exceed its 32-bit integer type" in message
    assert f"{big_referrers} value(s) of user_subscriptions.referred_by_user_id exceed" in message
    assert "Nothing was written" in message
    statements = re.findall(r"^\s*(ALTER TABLE .*)$", message, flags=re.M)
    assert statements == [
        'ALTER TABLE "public"."users" ALTER COLUMN "user_id" TYPE bigint;',
        'ALTER TABLE "public"."user_subscriptions" ALTER COLUMN "referred_by_user_id" TYPE bigint;',
    ]
    assert snapshot(db) == before
    assert db.execute("SELECT indexname FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1").fetchall() == (
        indexes_before
    )

    # The advice works: after those statements the same frames load.
    for statement in statements:
        db.execute(statement)
    stats = load(conn, SCHEMA, mapped, rejects, "run-2")
    assert stats_tuple(stats.users) == (2_000, 0, 0)
    assert user_rows(db) == sorted(expected_users(entries) + expected_users(small))


def test_alembic_tables_refuse_big_ids_on_an_empty_target(db, conn):
    db.execute(ALEMBIC_DDL)
    entries = small_id_entries(30)
    entries[3]["user_id"] = 2**31  # one too many for integer
    with pytest.raises(TargetError) as raised:
        load(conn, SCHEMA, *chain(document(entries)), "run-1")
    assert "1 value(s) of users.user_id exceed" in str(raised.value)
    assert "referred_by_user_id" not in str(raised.value)
    assert db.execute("SELECT count(*) FROM users").fetchone()[0] == 0
    assert db.execute("SELECT count(*) FROM user_subscriptions").fetchone()[0] == 0


@pytest.fixture
def reader_role(db):
    """A role of its own, granted every table of the schema: row-level security applies to it."""
    role = f"faceit_reader_{os.getpid()}"
    db.execute(sql.SQL("CREATE ROLE {}").format(sql.Identifier(role)))
    db.execute(sql.SQL("GRANT ALL ON ALL TABLES IN SCHEMA public TO {}").format(sql.Identifier(role)))
    yield role
    db.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
    db.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_rows_out_of_the_loads_sight_are_refused_before_anything_is_written(db, conn, reader_role):
    """Rows of another table inheriting from the bot's, or hidden by row-level security, would be counted,
    compared and snapshotted as absent (or as the table's own): the load refuses, naming each."""
    entries = small_id_entries(5)
    load(conn, SCHEMA, *chain(document(entries)), "run-0")
    db.execute("CREATE TABLE users_archive () INHERITS (users)")
    db.execute("INSERT INTO users_archive SELECT * FROM ONLY users LIMIT 1")
    db.execute("ALTER TABLE user_subscriptions ENABLE ROW LEVEL SECURITY")
    db.execute(sql.SQL("GRANT ALL ON users_archive TO {}").format(sql.Identifier(reader_role)))
    before = snapshot(db)
    conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(reader_role)))
    conn.commit()

    with pytest.raises(TargetError) as raised:
        load(conn, SCHEMA, *chain(document(small_id_entries(8))), "run-1")

    assert str(raised.value) == (
        "refusing to load: row-level security hides rows of public.user_subscriptions from this role; "
        "public.users_archive inherit(s) from public.users. faceit-etl counts, verifies and snapshots every row of "
        "the bot's tables, and would miss those. Nothing was written. Connect as a role with BYPASSRLS (or disable "
        "row-level security on those tables), or move the inheriting tables' rows out, then run again"
    )
    assert snapshot(db) == before
    assert db.execute("SELECT count(*) FROM ONLY users").fetchone()[0] == 5


# ---------------------------------------------------------------------------------------------
# failures leave the target as it was


def test_failure_on_an_empty_database_leaves_no_tables(db, conn, generated):
    ddl.ensure_bookkeeping_tables(db, SCHEMA)
    mapped, rejects = chain(generated)
    bad = chain(document([{"user_id": "not a number"}]))[1]
    with pytest.raises(RuntimeError, match="injected failure"):
        load(conn, SCHEMA, mapped, bad, "run-1", before_commit=boom)
    assert snapshot(db) is None
    assert not ddl.table_exists(db, SCHEMA, "user_subscriptions")
    assert db.execute("SELECT count(*) FROM pg_type WHERE typname = 'subscriptiontier'").fetchone()[0] == 0
    assert db.execute("SELECT count(*) FROM migration_rejects").fetchone()[0] == 0
    # The connection is usable afterwards and a clean load then works.
    stats = load(conn, SCHEMA, mapped, rejects, "run-2")
    assert stats.created_tables and stats_tuple(stats.users) == (2_000, 0, 0)


def test_failure_before_commit_leaves_a_loaded_target_as_it_was(db, conn, generated, tmp_path):
    ddl.ensure_bookkeeping_tables(db, SCHEMA)
    load(conn, SCHEMA, *chain(generated), "run-1")
    before = snapshot(db)
    entries = entries_of(generated)
    for e in entries[:300]:
        e["language"] = "en" if e["language"] != "en" else "ru"
    entries += [e for e in generate_users(20, seed=5) if e["user_id"] not in before["users"]]
    changed = tmp_path / "changed.json"
    changed.write_bytes(document(entries + [{"user_id": -1}]))
    mapped, rejects = chain(changed)
    assert len(rejects) == 1
    with pytest.raises(RuntimeError, match="injected failure"):
        load(conn, SCHEMA, mapped, rejects, "run-2", before_commit=boom)
    assert snapshot(db) == before
    assert db.execute("SELECT count(*) FROM migration_rejects").fetchone()[0] == 0


def test_instants_are_written_as_the_same_instants_in_a_session_of_another_time_zone(db, conn):
    """The COPY text carries its UTC offset, so a connection whose session is in another zone (a caller's
    own) stores the same instants, not ones shifted by the session's offset."""
    conn.execute("SET TimeZone = 'Asia/Tokyo'")
    conn.commit()
    entry = {"user_id": 7, "created_at": "2024-05-01T10:00:00", "subscription": {"tier": "free"}}

    load(conn, SCHEMA, *chain(document([entry])), "run-1")

    assert db.execute("SELECT created_at FROM users").fetchone()[0] == datetime(2024, 5, 1, 10, tzinfo=timezone.utc)


def test_too_long_referral_code_fails_the_whole_load(db, conn, generated):
    """Validation rejects such an entry; a frame that slips one through must still write nothing."""
    mapped, rejects = chain(generated)
    too_long = "1 value(s) of user_subscriptions.referral_code are longer than its character varying(20)"
    mapped.subscriptions.loc[1_999, "referral_code"] = "X" * 21
    with pytest.raises(TargetError, match=re.escape(too_long)):
        load(conn, SCHEMA, mapped, rejects, "run-1")
    assert snapshot(db) is None

    mapped, rejects = chain(generated)
    load(conn, SCHEMA, mapped, rejects, "run-2")
    before = snapshot(db)
    mapped.subscriptions.loc[0, "referral_code"] = "Y" * 21
    with pytest.raises(TargetError, match=re.escape(too_long)):
        load(conn, SCHEMA, mapped, rejects, "run-3")
    assert snapshot(db) == before


def test_referral_codes_held_by_users_the_file_lacks_stop_the_load_naming_code_claimant_and_holder(db, conn, generated):
    """A code the file gives a newcomer, or moves to a user it has, while a user absent from the
    file still holds it in the table: found before any write, every clash named, nothing written."""
    load(conn, SCHEMA, *chain(generated), "run-1")
    before = snapshot(db)
    entries = entries_of(generated)
    with_code = [e for e in entries if e["subscription"]["referral_code"]]
    gone_a, gone_b, mover = with_code[0], with_code[1], with_code[2]
    code_a, code_b = gone_a["subscription"]["referral_code"], gone_b["subscription"]["referral_code"]
    newcomer = next(e for e in generate_users(10, seed=77) if e["user_id"] not in before["users"])
    newcomer["subscription"]["referral_code"] = code_a
    mover["subscription"]["referral_code"] = code_b
    # The holders are not in this file, so validation cannot see the clash; only the table can.
    others = [e for e in entries if e is not gone_a and e is not gone_b]
    for e in others[:50]:
        e["total_requests"] += 7
    mapped, rejects = chain(document(others + [newcomer]))
    assert rejects.empty

    with pytest.raises(TargetError) as raised:
        load(conn, SCHEMA, mapped, rejects, "run-2")

    named = sorted([
        (code_a, newcomer["user_id"], gone_a["user_id"]),
        (code_b, mover["user_id"], gone_b["user_id"]),
    ])
    assert str(raised.value) == (
        "2 referral code(s) of the file are held in public.user_subscriptions by users the file does not load: "
        + "; ".join(f"{json.dumps(code)} given to user_id {claimant} is held by user_id {holder} (not in the file)"
                    for code, claimant, holder in named)
        + ". Nothing was written. Clear the code of its holder in the database, or correct the file, then run again"
    )
    assert snapshot(db) == before

    # The advice works: with the holders' codes cleared, the same frames load.
    db.execute("UPDATE user_subscriptions SET referral_code = NULL WHERE referral_code = ANY(%s)", [[code_a, code_b]])
    load(conn, SCHEMA, mapped, rejects, "run-3")
    held = dict(db.execute(
        "SELECT s.referral_code, u.user_id FROM user_subscriptions s JOIN users u ON u.id = s.user_id "
        "WHERE s.referral_code = ANY(%s)", [[code_a, code_b]]
    ).fetchall())
    assert held == {code_a: newcomer["user_id"], code_b: mover["user_id"]}


def test_a_referral_code_held_by_a_user_whose_entry_is_rejected_says_so(db, conn):
    """A rejected entry's user stays as it was, code included: the claimant is told why its holder is not loaded."""
    holder = {"user_id": 101, "subscription": {"referral_code": "HELD0001"}}
    load(conn, SCHEMA, *chain(document([holder])), "run-1")
    before = snapshot(db)
    rejected = {"user_id": 101, "subscription": {"tier": "GOLD"}}
    claimant = {"user_id": 202, "subscription": {"referral_code": "HELD0001"}}

    with pytest.raises(TargetError) as raised:
        load(conn, SCHEMA, *chain(document([rejected, claimant])), "run-2")

    assert str(raised.value) == (
        "1 referral code(s) of the file are held in public.user_subscriptions by users the file does not load: "
        '"HELD0001" given to user_id 202 is held by user_id 101 (its entry in the file is rejected). Nothing was '
        "written. Clear the code of its holder in the database, or correct the file, then run again"
    )
    assert snapshot(db) == before


@pytest.mark.parametrize("clashes", [20, 25])
def test_many_referral_clashes_name_the_first_twenty_by_code_and_count_the_rest(db, conn, clashes):
    """The twenty named are the first by code whatever order the file and the table hold them in; the
    rest counted, and nothing said of a rest when there is none."""
    holders = [{"user_id": 100 + i, "subscription": {"referral_code": f"CODE{i:04d}"}} for i in range(clashes)]
    load(conn, SCHEMA, *chain(document(holders[1::2] + holders[::2])), "run-1")
    before = snapshot(db)
    newcomers = [{"user_id": 200 + i, "subscription": {"referral_code": f"CODE{i:04d}"}} for i in range(clashes)]

    with pytest.raises(TargetError) as raised:
        load(conn, SCHEMA, *chain(document(newcomers[::-1])), "run-2")

    message = str(raised.value)
    named = re.findall(r'"(CODE\d+)" given to user_id (\d+) is held by user_id (\d+)', message)
    assert named == [(f"CODE{i:04d}", str(200 + i), str(100 + i)) for i in range(20)]
    assert message.startswith(f"{clashes} referral code(s) of the file are held")
    rest = f"; and {clashes - 20} more" if clashes > 20 else ""
    assert f'"CODE0019" given to user_id 219 is held by user_id 119 (not in the file){rest}. Nothing was written.' in message
    assert snapshot(db) == before


CODES = [f"C0DE000{i}" for i in range(5)]
# Six table users' codes, each code held once at most (the key is unique): drawn, not filtered.
_holders = st.permutations([*CODES, *[None] * 6]).map(lambda drawn: drawn[:6])


@settings(max_examples=examples(30), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    in_table=_holders,
    kept=st.lists(st.booleans(), min_size=6, max_size=6),
    in_file=st.lists(st.sampled_from([None, *CODES]), min_size=9, max_size=9),
)
def test_any_move_of_referral_codes_loads_or_stops_naming_exactly_the_codes_held_outside_the_file(
    db, conn, in_table, kept, in_file
):
    """Users 1-6 are in the table with codes; the file keeps some of them and adds 7-9, giving any
    codes (distinct, as validation makes them). The load succeeds exactly when no code of the file
    is held by a user the file lacks; otherwise it names every such code and writes nothing."""
    def entry(user_id, code):
        return {"user_id": user_id, "subscription": {"tier": "free", "referral_code": code}}

    load(conn, SCHEMA, *chain(document([entry(i + 1, c) for i, c in enumerate(in_table)])), "setup", truncate=True)
    before = snapshot(db)
    file_ids = [i + 1 for i in range(6) if kept[i]] + [7, 8, 9]
    seen: set = set()
    codes = {}
    for user_id, code in zip(file_ids, in_file):
        codes[user_id] = code if code not in seen else None
        seen.add(code)
    mapped, rejects = chain(document([entry(u, c) for u, c in codes.items()]))
    holder = {c: i + 1 for i, c in enumerate(in_table) if c}
    clashes = sorted(
        (code, user_id, holder[code]) for user_id, code in codes.items() if code in holder and holder[code] not in codes
    )

    if clashes:
        with pytest.raises(TargetError) as raised:
            load(conn, SCHEMA, mapped, rejects, "run")
        message = str(raised.value)
        assert message.startswith(f"{len(clashes)} referral code(s) of the file are held")
        named = re.findall(r'"(\w+)" given to user_id (\d+) is held by user_id (\d+)', message)
        assert [(c, int(a), int(b)) for c, a, b in named] == clashes
        assert snapshot(db) == before
    else:
        load(conn, SCHEMA, mapped, rejects, "run")
        held = dict(db.execute(
            "SELECT u.user_id, s.referral_code FROM users u JOIN user_subscriptions s ON s.user_id = u.id"
        ).fetchall())
        left_alone = {i + 1: code for i, code in enumerate(in_table) if not kept[i]}
        assert held == left_alone | codes


# ---------------------------------------------------------------------------------------------
# rejects


def test_rejects_are_written_with_their_raw_entry(db, conn):
    ddl.ensure_bookkeeping_tables(db, SCHEMA)
    good = generate_users(5, seed=2)
    entries = [
        good[0],
        {"user_id": 1001, "faceit_nickname": "bad\x00nick"},  # jsonb cannot hold U+0000
        good[1],
        42,  # not an object
        {"user_id": "abc", "weird\x00key": {"deep": ["x\x00y", 1]}},
        {**good[2], "subscription": {**good[2]["subscription"], "tier": "gold"}},
        {**good[3], "user_id": good[0]["user_id"]},  # duplicate id: the first entry wins
        good[4],
    ]
    mapped, rejects = chain(document(entries))
    assert sorted(set(rejects["source_index"])) == [1, 3, 4, 5, 6]

    stats = load(conn, SCHEMA, mapped, rejects, "run-42")
    assert stats.rejects_written == len(rejects)
    rows = db.execute(
        "SELECT run_id, source_index, user_id, field, reason, raw FROM migration_rejects "
        "ORDER BY source_index, field, reason"
    ).fetchall()
    expected = sorted(
        (
            "run-42",
            int(r.source_index),
            None if pd.isna(r.user_id) else int(r.user_id),
            r.field,
            r.reason,
        )
        for r in rejects.itertuples()
    )
    assert [row[:5] for row in rows] == expected

    raw = {row[1]: row[5] for row in rows}
    assert raw[1] == {"user_id": 1001, "faceit_nickname": "bad\\u0000nick"}  # NUL spelled out as text
    assert raw[3] == 42
    assert raw[4] == {"user_id": "abc", "weird\\u0000key": {"deep": ["x\\u0000y", 1]}}
    assert raw[5] == entries[5]
    assert raw[6] == entries[6]
    by_index = {row[1]: row for row in rows}
    assert by_index[1][2:4] == (1001, "faceit_nickname")
    assert "NUL" in by_index[1][4]
    assert by_index[3][2:4] == (None, "(entry)")
    assert by_index[4][2] is None
    assert by_index[5][2:4] == (good[2]["user_id"], "tier")
    assert by_index[6][2:4] == (good[0]["user_id"], "user_id")
    # The accepted entries are loaded, the rejected ones not.
    assert_content(db, [good[0], good[1], good[4]])

    # A second run appends its own rejects under its own run id.
    load(conn, SCHEMA, mapped, rejects, "run-43")
    counts = dict(db.execute("SELECT run_id, count(*) FROM migration_rejects GROUP BY 1").fetchall())
    assert counts == {"run-42": len(rejects), "run-43": len(rejects)}


def test_migration_rejects_counts_entries_from_1_as_every_report_does(db, conn):
    """`entry` is the number the UI, the CLI, the report and the API give; `source_index` stays the 0-based
    index it always was, for its readers."""
    ddl.ensure_bookkeeping_tables(db, SCHEMA)
    good = generate_users(3, seed=4)
    entries = [good[0], good[1], {"user_id": "abc"}, good[2], 42]  # entries 3 and 5 are rejected
    mapped, rejects = chain(document(entries))
    load(conn, SCHEMA, mapped, rejects, "run-1")
    assert db.execute("SELECT entry, source_index FROM migration_rejects ORDER BY entry").fetchall() == [(3, 2), (5, 4)]


@pytest.mark.parametrize("lacking", [["entry"], ["value"], ["entry", "value"]])
def test_an_existing_migration_rejects_table_of_an_old_layout_gets_the_entry_and_value_columns(db, conn, lacking):
    ddl.ensure_bookkeeping_tables(db, SCHEMA)
    for column in lacking:  # as an older faceit-etl made it
        db.execute(sql.SQL("ALTER TABLE migration_rejects DROP COLUMN {}").format(sql.Identifier(column)))
    db.execute("INSERT INTO migration_rejects (run_id, source_index, field, reason) VALUES ('old', 6, 'user_id', 'missing')")

    ddl.ensure_bookkeeping_tables(db, SCHEMA)

    assert db.execute("SELECT run_id, entry, source_index, value FROM migration_rejects").fetchall() == [("old", 7, 6, None)]


# ---------------------------------------------------------------------------------------------
# batch size


def test_small_batches_give_the_same_result_as_large_ones(db, generated, database_url):
    entries = entries_of(generated)[:500]
    raw = document(entries)
    seen: dict[str, list] = {"small": [], "large": []}
    for schema, batch_size in (("small", 7), ("large", 100_000)):
        ddl.ensure_bookkeeping_tables(db, schema)
        mapped, rejects = chain(raw)
        with psycopg.connect(database_url) as conn:
            stats = load(conn, schema, mapped, rejects, "run", batch_size=batch_size,
                         progress=lambda stage, done, total, s=schema: seen[s].append((stage, done, total)))
        assert stats_tuple(stats.users) == (500, 0, 0)
        assert_content(db, entries, schema)

    small_users = [done for stage, done, _ in seen["small"] if stage == "copy users"]
    assert small_users == [*range(7, 500, 7), 500]
    assert [done for stage, done, _ in seen["large"] if stage == "copy users"] == [500]
    assert [done for stage, done, _ in seen["small"] if stage == "copy user_subscriptions"] == small_users
    columns = "user_id, id, faceit_player_id, faceit_nickname, last_checked_match_id, waiting_for_nickname, " \
              "language, notifications_enabled, total_requests, created_at, last_active_at"
    assert db.execute(f"SELECT {columns} FROM small.users ORDER BY 1").fetchall() == db.execute(
        f"SELECT {columns} FROM large.users ORDER BY 1"
    ).fetchall()
    sub_columns = "s.id, s.user_id, s.tier, s.expires_at, s.auto_renew, s.payment_method, s.daily_requests, " \
                  "s.last_reset_date, s.referred_by_user_id, s.referral_code, s.referrals_count"
    assert db.execute(f"SELECT {sub_columns} FROM small.user_subscriptions s ORDER BY 1").fetchall() == db.execute(
        f"SELECT {sub_columns} FROM large.user_subscriptions s ORDER BY 1"
    ).fetchall()


# ---------------------------------------------------------------------------------------------
# verify


def test_verify_reports_equal_then_each_kind_of_difference(db, conn, tmp_path):
    path = write_data_file(tmp_path / "data.json", 300, seed=8)
    mapped, rejects = chain(path)
    load(conn, SCHEMA, mapped, rejects, "run-1")

    users = verify.compare_users(db, SCHEMA, mapped.users)
    subscriptions = verify.compare_subscriptions(db, SCHEMA, mapped.subscriptions, mapped.users)
    assert users.equal and subscriptions.equal
    assert users.rows_compared == subscriptions.rows_compared == 300

    def diff(kind: str) -> verify.ContentDiff:
        if kind == "users":
            return verify.compare_users(db, SCHEMA, mapped.users)
        return verify.compare_subscriptions(db, SCHEMA, mapped.subscriptions, mapped.users)

    telegram_id = dict(zip(mapped.users["id"], mapped.users["user_id"].astype(int)))  # differences name these
    sub_id = mapped.subscriptions["id"][17]
    db.execute("UPDATE user_subscriptions SET daily_requests = daily_requests + 1 WHERE id = %s", [sub_id])
    changed = diff("subscriptions")
    assert (changed.differing, changed.missing, changed.unexpected) == (
        {"daily_requests": [telegram_id[mapped.subscriptions["user_id"][17]]]}, [], []
    )
    assert not changed.equal
    assert changed.summary()["differing_cells"] == {"daily_requests": 1}
    db.execute("UPDATE user_subscriptions SET daily_requests = daily_requests - 1 WHERE id = %s", [sub_id])
    assert diff("subscriptions").equal

    with_activity = mapped.users[mapped.users["last_active_at"].notna()]["id"].iloc[3]
    db.execute(
        "UPDATE users SET last_active_at = last_active_at + interval '1 microsecond' WHERE id = %s", [with_activity]
    )
    assert diff("users").differing == {"last_active_at": [telegram_id[with_activity]]}
    db.execute(
        "UPDATE users SET last_active_at = last_active_at - interval '1 microsecond' WHERE id = %s", [with_activity]
    )

    named = mapped.users[mapped.users["faceit_nickname"].notna()]["id"].iloc[0]
    db.execute("UPDATE users SET faceit_nickname = NULL WHERE id = %s", [named])
    assert diff("users").differing == {"faceit_nickname": [telegram_id[named]]}
    db.execute("UPDATE users SET faceit_nickname = 'someone else' WHERE id = %s", [named])
    assert diff("users").differing == {"faceit_nickname": [telegram_id[named]]}

    gone_user = mapped.users["id"][40]
    assert mapped.subscriptions["user_id"][40] == gone_user
    db.execute("DELETE FROM users WHERE id = %s", [gone_user])  # its subscription goes with it
    users = diff("users")
    assert users.missing == [telegram_id[gone_user]] and users.unexpected == []
    assert diff("subscriptions").missing == [telegram_id[gone_user]]

    # A row the file does not have is counted apart: the file's rows are what must be equal.
    db.execute("INSERT INTO users (id, user_id) VALUES (%s, 123)", [str(uuid.uuid4())])
    users = diff("users")
    assert users.unexpected == [123]
    assert users.missing == [telegram_id[gone_user]]
    assert users.differing == {"faceit_nickname": [telegram_id[named]]}


def test_verify_accepts_any_created_at_the_file_does_not_have(db, conn, tmp_path):
    path = write_data_file(tmp_path / "first.json", 50, seed=4, layout="first")
    mapped, rejects = chain(path)
    load(conn, SCHEMA, mapped, rejects, "run-1")
    db.execute("UPDATE users SET created_at = '2020-01-01T00:00:00Z'")
    assert verify.compare_users(db, SCHEMA, mapped.users).equal

    nested = write_data_file(tmp_path / "nested.json", 50, seed=4)
    mapped, rejects = chain(nested)
    load(conn, SCHEMA, mapped, rejects, "run-2")
    moved = mapped.users["id"][9]
    db.execute("UPDATE users SET created_at = created_at - interval '1 second' WHERE id = %s", [moved])
    assert verify.compare_users(db, SCHEMA, mapped.users).differing == {"created_at": [int(mapped.users["user_id"][9])]}


@pytest.mark.parametrize("in_file", [20, 2, 1], ids=["two-kept", "twenty-kept", "twenty-one-kept"])
def test_rows_not_in_file_names_the_first_twenty_users_kept_and_marks_more(db, conn, in_file):
    entries = generate_users(22, seed=12)
    mapped, rejects = chain(document(entries))
    load(conn, SCHEMA, mapped, rejects, "run-1")
    ids = sorted(e["user_id"] for e in entries)
    file_users = pd.Series(ids[-in_file:])
    with verify.file_ids(db, file_users, np.ones(in_file, dtype=bool), None) as file:
        verdict = verdicts.rows_not_in_file(db, SCHEMA, mapped.users, mapped.subscriptions, ids=file)
    kept = ids[:-in_file]
    assert verdict.metadata == {"users_not_in_file": len(kept), "examples": kept[:20]}
    assert verdict.description == (
        f"{len(kept)} user(s) in public.users are not in the file and were kept (migrate with prune to delete them): "
        f"user_id {', '.join(map(str, kept[:20]))}" + (", …" if len(kept) > 20 else "")
    )


def test_row_counts_judged_without_a_load_count_a_rejected_users_rows_and_each_tables_own_kept_rows(db, conn):
    """Judged without a load (a check re-run later), the rows kept beside the file's are counted in the
    tables as they are: those of users the file lacks and of users whose entry it rejected, per table,
    so a kept user without a subscription row leaves the subscriptions expected one fewer."""
    entries = generate_users(6, seed=21)
    mapped, rejects = chain(document(entries))
    load(conn, SCHEMA, mapped, rejects, "run-1")
    accepted, _ = chain(document(entries[:2]))
    rejected = pd.Series([entries[2]["user_id"]])

    def judged() -> verdicts.Verdict:
        with verify.file_ids(db, accepted.users["user_id"], np.ones(2, dtype=bool), rejected) as ids:
            return verdicts.row_counts_match(db, SCHEMA, accepted.users, accepted.subscriptions, ids=ids)

    assert judged() == verdicts.Verdict(True, {
        "users_in_database": 6, "users_expected": 6, "user_subscriptions_in_database": 6,
        "user_subscriptions_expected": 6, "users_kept_absent": 4, "user_subscriptions_kept_absent": 4,
    })
    db.execute("DELETE FROM user_subscriptions WHERE user_id = (SELECT id FROM users WHERE user_id = %s)",
               [entries[5]["user_id"]])
    assert judged() == verdicts.Verdict(True, {
        "users_in_database": 6, "users_expected": 6, "user_subscriptions_in_database": 5,
        "user_subscriptions_expected": 5, "users_kept_absent": 4, "user_subscriptions_kept_absent": 3,
    })


def test_verify_counts_on_crafted_data(db, conn):
    def user(user_id: int, tier: str, referred_by: int | None = None) -> dict:
        return {"user_id": user_id, "subscription": {"tier": tier, "referred_by": referred_by}}

    entries = [
        user(10, "free"),
        user(11, "FREE", referred_by=10),  # referrer present
        user(12, "premium", referred_by=999),  # referrer absent
        user(13, "Premium", referred_by=999),
        user(14, "pro", referred_by=777),
        user(15, "free", referred_by=15),  # refers themself
        user(3_000_000_000, "free", referred_by=3_000_000_000),
        {"user_id": 16},  # first layout: the default FREE subscription
    ]
    mapped, rejects = chain(document(entries))
    load(conn, SCHEMA, mapped, rejects, "run-1")
    every, others = np.ones(len(mapped.users), dtype=bool), (mapped.users["user_id"] != 14).to_numpy()

    def tier_counts(users: pd.Series, states_tier: np.ndarray, rejected: pd.Series | None = None) -> dict[str, int]:
        with verify.file_ids(db, users, states_tier, rejected) as ids:
            return verify.tier_counts(db, SCHEMA, ids)

    assert tier_counts(mapped.users["user_id"], every) == {"FREE": 5, "PREMIUM": 2, "PRO": 1}
    # Only the file's users stating a tier are counted: not one the file does not have, nor one whose entry
    # states no tier, nor one whose entry it rejected.
    assert tier_counts(mapped.users["user_id"][others], every[others]) == {"FREE": 5, "PREMIUM": 2}
    assert tier_counts(mapped.users["user_id"], others) == {"FREE": 5, "PREMIUM": 2}
    assert tier_counts(mapped.users["user_id"][others], every[others], pd.Series([14])) == {"FREE": 5, "PREMIUM": 2}

    def not_in_file(file_users: pd.Series) -> verdicts.Verdict:
        with verify.file_ids(db, file_users, np.ones(len(file_users), dtype=bool), None) as ids:
            return verdicts.rows_not_in_file(db, SCHEMA, mapped.users, mapped.subscriptions, ids=ids)

    kept = not_in_file(mapped.users["user_id"][others])
    assert (kept.passed, kept.metadata, kept.description) == (
        False, {"users_not_in_file": 1, "examples": [14]},
        "1 user(s) in public.users are not in the file and were kept (migrate with prune to delete them): user_id 14",
    )
    assert not_in_file(mapped.users["user_id"]) == verdicts.Verdict(True, {"users_not_in_file": 0, "examples": []})
    assert verify.missing_referrers(db, SCHEMA) == [777, 999]
    assert verify.self_referrals(db, SCHEMA) == [15, 3_000_000_000]
    assert verify.orphan_subscriptions(db, SCHEMA) == 0
    assert verify.row_count(db, SCHEMA, "users") == 8
    with db.transaction(force_rollback=True):  # only user 11's referrer left, present: both checks pass, having compared it
        db.execute("UPDATE user_subscriptions SET referred_by_user_id = NULL WHERE referred_by_user_id <> 10")
        judged = {name: verdicts.VERDICTS[name](db, SCHEMA, mapped.users, mapped.subscriptions)
                  for name in ("referrers_present", "no_self_referrals")}
        assert {name: (v.passed, v.metadata, v.description) for name, v in judged.items()} == {
            "referrers_present": (True, {"missing_referrers": 0, "examples": []}, None),
            "no_self_referrals": (True, {"self_referrals": 0, "examples": []}, None),
        }

    db.execute("UPDATE user_subscriptions SET tier = NULL WHERE referred_by_user_id = 777")
    assert tier_counts(mapped.users["user_id"], every) == {"FREE": 5, "PREMIUM": 2, "NULL": 1}
    # An orphan needs the foreign key gone, as in a hand-made or damaged target.
    fk = db.execute(
        "SELECT conname FROM pg_constraint WHERE conrelid = 'user_subscriptions'::regclass AND contype = 'f'"
    ).fetchone()[0]
    db.execute(f'ALTER TABLE user_subscriptions DROP CONSTRAINT "{fk}"')
    db.execute("DELETE FROM users WHERE user_id IN (10, 11)")
    assert verify.orphan_subscriptions(db, SCHEMA) == 2
    assert verify.missing_referrers(db, SCHEMA) == [10, 777, 999]
    # The checks after a run say the same in their figures and words.
    judged = {name: verdicts.VERDICTS[name](db, SCHEMA, mapped.users, mapped.subscriptions)
              for name in ("subscriptions_have_users", "referrers_present", "no_self_referrals")}
    assert {name: (v.passed, v.metadata, v.description) for name, v in judged.items()} == {
        "subscriptions_have_users": (False, {"orphan_subscriptions": 2}, "2 subscription(s) whose user is not in users"),
        "referrers_present": (False, {"missing_referrers": 3, "examples": [10, 777, 999]}, None),
        "no_self_referrals": (False, {"self_referrals": 2, "examples": [15, 3_000_000_000]}, None),
    }


# ---------------------------------------------------------------------------------------------
# run log


def test_runlog_records_a_run_from_running_to_success(db):
    ddl.ensure_bookkeeping_tables(db, SCHEMA)
    log = runlog.start(db, SCHEMA, run_id="run-7", total_items=10, metadata={"settings": {"truncate": False}})
    row = db.execute(
        "SELECT migration_type, status, start_time IS NOT NULL, end_time, total_items, processed_items, "
        "failed_items, error_message, metadata FROM migration_logs WHERE id = %s",
        [log.log_id],
    ).fetchone()
    session = db.execute("SELECT pg_backend_pid(), backend_start::text FROM pg_stat_activity "
                         "WHERE pid = pg_backend_pid()").fetchone()
    written_by = {"session_pid": session[0], "session_start": session[1]}  # how a dead run is told apart
    assert row == (
        "json_to_postgresql", "running", True, None, 10, None, None, None,
        {"run_id": "run-7", "settings": {"truncate": False}, **written_by},
    )

    runlog.finish(log, "success", processed_items=9, failed_items=1, metadata={"load": {"users": 9}})
    row = db.execute(
        "SELECT status, end_time >= start_time, total_items, processed_items, failed_items, error_message, metadata "
        "FROM migration_logs WHERE id = %s",
        [log.log_id],
    ).fetchone()
    assert row == (
        "success", True, 10, 9, 1, None,
        {"run_id": "run-7", "settings": {"truncate": False}, **written_by, "load": {"users": 9}},
    )
    assert db.execute("SELECT count(*) FROM migration_logs").fetchone()[0] == 1


def test_a_load_logs_its_rejected_entries_once_each_and_stores_every_reject_as_jsonb_holds_it(db, conn):
    """`failed_items` counts entries, not reasons (one entry here has two); a reject's number beyond jsonb's
    numeric is stored as the string of its text, and an entry jsonb takes keeps its text as written. The
    logged load names no deleted ids (they go to a file of their own)."""
    bad, tiny = {"user_id": -5, "subscription": {"tier": "GOLD"}}, {"user_id": 7, "total_requests": "TINY"}
    mapped, rejects = chain(document(generate_users(3, seed=4) + [bad, tiny]).replace(b'"TINY"', b"1e-20000"))
    ddl.ensure_bookkeeping_tables(db, SCHEMA)
    log = runlog.start(db, SCHEMA, run_id="run-r", total_items=5, metadata={})

    stats = load(conn, SCHEMA, mapped, rejects, "run-r", log=log)

    processed, failed, metadata, started = db.execute(
        "SELECT processed_items, failed_items, metadata, start_time FROM migration_logs").fetchone()
    assert (processed, failed, len(rejects)) == (3, 2, 3)
    logged = metadata["load"]
    assert logged == json.loads(json.dumps(stats.as_dict())) and "deleted_user_ids" not in logged
    # When the load took the lock: a rollback undoes the runs that took it after its snapshot's.
    assert started <= datetime.fromisoformat(metadata["locked_at"]) <= datetime.now(timezone.utc)
    assert "input_identity" not in metadata  # none was given: no later load can take this one for its own
    assert db.execute("SELECT source_index, reason, raw::text FROM migration_rejects ORDER BY source_index, reason"
                      ).fetchall() == [
        (3, "must be a positive Telegram id", '{"user_id": -5, "subscription": {"tier": "GOLD"}}'),
        (3, 'unknown tier "GOLD", expected one of free, premium, pro', '{"user_id": -5, "subscription": {"tier": "GOLD"}}'),
        (4, "expected a whole number, got 1e-20000", '{"user_id": 7, "total_requests": "1e-20000"}'),
    ]


def test_jsonb_safe_leaves_text_jsonb_takes_as_written_and_spells_out_what_it_cannot_hold():
    assert jsonb_safe('{"a":15,"b" : [1,2],"c":"x"}') == '{"a":15,"b" : [1,2],"c":"x"}'
    assert jsonb_safe('{"a":1e-20000}') == '{"a": "1e-20000"}'
    assert jsonb_safe('{"a":"x\\u0000y"}') == '{"a": "x\\\\u0000y"}'


def test_runlog_survives_a_failed_load(db, conn, generated):
    ddl.ensure_bookkeeping_tables(db, SCHEMA)
    earlier = runlog.start(db, SCHEMA, run_id="run-1", total_items=1, metadata={})
    runlog.finish(earlier, "success", processed_items=1)
    log = runlog.start(db, SCHEMA, run_id="run-2", total_items=2_000, metadata={})
    with pytest.raises(RuntimeError, match="injected failure"):
        load(conn, SCHEMA, *chain(generated), "run-2", before_commit=boom)
    runlog.finish(log, "failed", failed_items=0, error_message="injected failure before commit")

    latest = runlog.latest(db, SCHEMA)
    assert [(r["run_id"], r["status"], r["error_message"]) for r in latest] == [
        ("run-2", "failed", "injected failure before commit"),
        ("run-1", "success", None),
    ]
    assert latest[0]["total_items"] == 2_000 and latest[0]["end_time"] >= latest[0]["start_time"]
    assert snapshot(db) is None


def test_referral_codes_swapped_between_users_load_as_two_updates(db, conn, generated):
    load(conn, SCHEMA, *chain(generated), "run-1")
    entries = entries_of(generated)
    first, second = [e for e in entries if e["subscription"]["referral_code"]][:2]
    codes = first["subscription"]["referral_code"], second["subscription"]["referral_code"]
    first["subscription"]["referral_code"], second["subscription"]["referral_code"] = codes[1], codes[0]

    stats = load(conn, SCHEMA, *chain(document(entries)), "run-2")

    assert (stats.subscriptions.inserted, stats.subscriptions.updated) == (0, 2)
    held = dict(
        db.execute(
            "SELECT u.user_id, s.referral_code FROM user_subscriptions s JOIN users u ON u.id = s.user_id "
            "WHERE u.user_id = ANY(%s)",
            [[first["user_id"], second["user_id"]]],
        ).fetchall()
    )
    assert held == {first["user_id"]: codes[1], second["user_id"]: codes[0]}


def test_truncate_with_an_empty_file_is_refused_and_keeps_the_content(db, conn, generated):
    load(conn, SCHEMA, *chain(generated), "run-1")
    before = snapshot(db)

    with pytest.raises(TargetError, match="refusing to truncate"):
        load(conn, SCHEMA, *chain(document([])), "run-2", truncate=True)

    assert snapshot(db) == before


def test_only_rows_whose_session_is_gone_are_marked_abandoned_even_when_its_pid_was_reused(db, database_url):
    ddl.ensure_bookkeeping_tables(db, SCHEMA)
    with psycopg.connect(database_url, autocommit=True) as alive:
        runlog.start(alive, SCHEMA, run_id="alive", total_items=1, metadata={})
        with psycopg.connect(database_url, autocommit=True) as dying:
            runlog.start(dying, SCHEMA, run_id="dying", total_items=1, metadata={})
            pid = dying.info.backend_pid
        while db.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", [pid]).fetchone()[0]:
            time.sleep(0.01)  # the server ends a closed session's backend asynchronously
        # The server may give the dead session's pid to a new one: here, the live run's.
        db.execute("UPDATE migration_logs SET metadata = jsonb_set(metadata, '{session_pid}', to_jsonb(%s::int)) "
                   "WHERE metadata->>'run_id' = 'dying'", [alive.info.backend_pid])
        assert {m["run_id"]: m["session_alive"] for m in runlog.latest(db, SCHEMA)} == {"alive": True, "dying": False}
        assert runlog.fail_abandoned(db, SCHEMA) == ["dying"]
        assert runlog.fail_abandoned(db, SCHEMA) == []
        statuses = dict(db.execute("SELECT metadata->>'run_id', status FROM migration_logs").fetchall())
        assert statuses == {"alive": "running", "dying": "failed"}


def test_a_run_whose_session_belongs_to_another_role_is_taken_as_alive(db, password_database_url):
    """To a role that is no superuser the server hides another role's session start: that run may still
    be loading, so the next run leaves its row running, as `status` says it is."""
    with psycopg.connect(password_database_url, autocommit=True) as tool:
        ddl.ensure_bookkeeping_tables(tool, SCHEMA)
        runlog.start(db, SCHEMA, run_id="superuser's", total_items=1, metadata={})  # db: the server's superuser

        assert {m["run_id"]: m["session_alive"] for m in runlog.latest(tool, SCHEMA)} == {"superuser's": True}
        assert runlog.fail_abandoned(tool, SCHEMA) == []
    assert db.execute("SELECT status FROM migration_logs").fetchall() == [("running",)]


# ---------------------------------------------------------------------------------------------
# an empty target: keys set aside, rows copied straight in, keys rebuilt


def test_empty_target_gets_its_own_keys_back_rebuilt_after_the_copy(db, conn, generated):
    db.execute(ALEMBIC_DDL.replace("user_id integer", "user_id bigint").replace("referred_by_user_id integer", "referred_by_user_id bigint"))
    db.execute("CREATE INDEX ix_operator_language ON users (language) WHERE language <> 'ru'")
    keys_before, fks_before = key_definitions(db), foreign_keys(db)
    assert len(keys_before) == 8 and len(fks_before) == 1

    stats = load(conn, SCHEMA, *chain(generated), "run-1")

    assert stats_tuple(stats.users) == (2_000, 0, 0) and not stats.created_tables
    assert_content(db, entries_of(generated))
    keys_after = key_definitions(db)
    assert {name: d for name, (_, d) in keys_after.items()} == {name: d for name, (_, d) in keys_before.items()}
    assert all(keys_after[name][0] != oid for name, (oid, _) in keys_before.items())  # rebuilt, not kept
    assert foreign_keys(db) == fks_before
    # The rebuilt keys hold: a second user with a taken Telegram id or a dangling subscription is refused.
    with pytest.raises(psycopg.errors.UniqueViolation):
        db.execute("INSERT INTO users (id, user_id) SELECT gen_random_uuid(), user_id FROM users LIMIT 1")
    with pytest.raises(psycopg.errors.ForeignKeyViolation):
        db.execute("INSERT INTO user_subscriptions (id, user_id) VALUES (gen_random_uuid(), gen_random_uuid())")


def test_duplicate_in_the_frames_fails_the_key_rebuild_and_leaves_the_empty_target_as_it_was(db, conn, generated):
    ddl.ensure_bookkeeping_tables(db, SCHEMA)
    load(conn, SCHEMA, *chain(document([])), "run-0")  # tables made, empty
    keys_before = key_definitions(db)
    mapped, rejects = chain(generated)
    holder = mapped.subscriptions["referral_code"].first_valid_index()
    mapped.subscriptions.loc[mapped.subscriptions.index[-1], "referral_code"] = mapped.subscriptions.loc[holder, "referral_code"]

    with pytest.raises(psycopg.errors.UniqueViolation, match="referral_code"):
        load(conn, SCHEMA, mapped, rejects, "run-1")

    assert key_definitions(db) == keys_before  # same indexes, same oids: the drop was rolled back
    assert db.execute("SELECT count(*) FROM users").fetchone()[0] == 0


def test_tables_another_table_references_keep_their_keys_and_refuse_truncate(db, conn, generated):
    ddl.ensure_bookkeeping_tables(db, SCHEMA)
    load(conn, SCHEMA, *chain(document([])), "run-0")
    db.execute("CREATE TABLE bot_payments (id serial PRIMARY KEY, user_id uuid REFERENCES users (id))")
    db.execute("CREATE TABLE bot_invoices (id serial PRIMARY KEY, user_id uuid REFERENCES users (id))")
    keys_before = key_definitions(db)

    stats = load(conn, SCHEMA, *chain(generated), "run-1")  # empty, but keys cannot be set aside

    assert stats_tuple(stats.users) == (2_000, 0, 0)
    assert_content(db, entries_of(generated))
    assert key_definitions(db) == keys_before  # the upsert path: nothing dropped or rebuilt
    before = snapshot(db)
    with pytest.raises(TargetError) as refused:
        load(conn, SCHEMA, *chain(document(entries_of(generated)[:10])), "run-2", truncate=True)
    assert str(refused.value) == (
        "refusing to truncate: other tables reference the bot's tables (bot_invoices (bot_invoices_user_id_fkey), "
        "bot_payments (bot_payments_user_id_fkey)); nothing was written"
    )
    assert snapshot(db) == before


def test_frames_without_presence_bits_write_every_field(db, conn):
    """Mapped frames stored before they carried `fields_present` (an older run's asset) hold every field:
    each staged value is the file's, none is kept from the table."""
    first = generate_users(20, seed=5)
    second = [entry | {"user_id": old["user_id"]} for entry, old in zip(generate_users(20, seed=6), first)]
    for entry in first + second:
        entry["subscription"] |= {"referred_by": None, "referral_code": None}  # no code moves between the two
    load(conn, SCHEMA, *chain(document(first)), "run-1")
    mapped, rejects = chain(document(second))
    bare = MappedFrames(mapped.users.drop(columns=PRESENT), mapped.subscriptions.drop(columns=PRESENT), {})
    judged = {}

    stats = load(conn, SCHEMA, bare, rejects, "run-2", before_commit=lambda c, s: judged.update(
        verdicts.judge_before_commit(c, SCHEMA, bare.users, bare.subscriptions, s.kept_absent(), rejects["user_id"])))

    assert (stats.users.updated, stats.subscriptions.updated) == (20, 20)
    assert_content(db, second)
    # Judged as frames that state every field: each tier is the file's, counted over every user.
    assert all(verdict.passed for verdict in judged.values()), judged
    assert sum(judged["tier_counts_match"].metadata["in_database"].values()) == 20


def test_the_upsert_path_counts_its_staging_and_prune_over_no_user_deletes_nothing(db, conn):
    """Empty tables another table references take the upsert path: its COPY into the stage reports
    progress as the empty tables' does, and prune there has no user to count or delete."""
    ddl.ensure_bookkeeping_tables(db, SCHEMA)
    load(conn, SCHEMA, *chain(document([])), "run-0")
    db.execute("CREATE TABLE bot_payments (id serial PRIMARY KEY, user_id uuid REFERENCES users (id))")
    entries, seen = generate_users(25, seed=8), []

    stats = load(conn, SCHEMA, *chain(document(entries)), "run-1", prune=True, batch_size=10,
                 progress=lambda *step: seen.append(step))

    assert (stats_tuple(stats.users), stats.users.deleted, stats.absent_users) == ((25, 0, 0), 0, 0)
    assert_content(db, entries)
    assert seen == [(f"copy {name}", done, 25) for name in ("users", "user_subscriptions") for done in (10, 20, 25)]


def test_a_load_decides_under_its_schemas_lock_and_waits_only_for_its_own(database_url, db, conn, generated):
    """Loads, rollbacks and backups of one schema take turns by its lock, and a load decides what to
    write only once it holds it: a rollback that deletes a user while the load waits is seen, so the
    re-run of the same file puts the user back instead of taking the tables as its last run left them.
    Another schema's lock held meanwhile does not stop a load."""
    ddl.ensure_bookkeeping_tables(db, SCHEMA)
    mapped, rejects = chain(generated)
    with ThreadPoolExecutor(1) as pool, psycopg.connect(database_url) as elsewhere:  # closed first: no hang
        lock_schema(elsewhere, "another_schema")
        first = pool.submit(logged_load, conn, db, mapped, rejects, "run-1", "input-A")
        assert stats_tuple(first.result(timeout=60).users) == (2_000, 0, 0)
    victim = int(mapped.users["user_id"].iloc[0])
    log = runlog.start(db, SCHEMA, run_id="run-2", total_items=len(mapped.users), metadata={})
    with psycopg.connect(database_url) as rollback, ThreadPoolExecutor(1) as pool:
        lock_schema(rollback, SCHEMA)
        rollback.execute("DELETE FROM users WHERE user_id = %s", [victim])  # its subscription goes with it
        loading = pool.submit(load, conn, SCHEMA, mapped, rejects, "run-2", log=log, input_identity="input-A")
        waiting = "SELECT wait_event FROM pg_stat_activity WHERE pid = %s"
        while db.execute(waiting, [conn.info.backend_pid]).fetchone()[0] != "advisory":
            assert not loading.done(), "the load went ahead while its schema's lock was held"
            time.sleep(0.01)
        rollback.commit()
        again = loading.result(timeout=120)

    assert again.recognised_from_run is None
    assert stats_tuple(again.users) == (1, 0, 1_999) and stats_tuple(again.subscriptions)[0] == 1
    assert db.execute("SELECT count(*) FROM users WHERE user_id = %s", [victim]).fetchone()[0] == 1


# ---------------------------------------------------------------------------------------------
# a re-run of the same input over the tables its earlier load left


def logged_load(conn, db, mapped, rejects, run_id: str, identity: str, **options):
    log = runlog.start(db, SCHEMA, run_id=run_id, total_items=len(mapped.users), metadata={})
    return load(conn, SCHEMA, mapped, rejects, run_id, log=log, input_identity=identity, **options)


def test_the_same_input_over_the_tables_it_left_is_recognised_and_nothing_is_compared(db, conn, generated):
    ddl.ensure_bookkeeping_tables(db, SCHEMA)
    mapped, rejects = chain(generated)
    first = logged_load(conn, db, mapped, rejects, "run-1", "input-A")
    assert first.recognised_from_run is None
    before, versions = snapshot(db), row_versions(db)
    handed = []  # what the snapshot hook gets: the run recognised and the tables' fingerprint, which a resume checks

    again = logged_load(conn, db, mapped, rejects, "run-2", "input-A",
                        before_write=lambda _conn, recognised, found: handed.append((recognised, found)))

    assert again.recognised_from_run == "run-1"
    assert stats_tuple(again.users) == stats_tuple(again.subscriptions) == (0, 0, 2_000)
    assert (snapshot(db), row_versions(db)) == (before, versions)
    assert db.execute("SELECT count(*) FROM pg_class WHERE relname LIKE '_faceit_etl_stage%'").fetchone()[0] == 0
    recorded = dict(db.execute("SELECT metadata->>'run_id', metadata->'fingerprint' FROM migration_logs").fetchall())
    assert recorded["run-1"] == recorded["run-2"] and set(recorded["run-1"]) == {"users", "user_subscriptions"}
    assert handed == [("run-1", recorded["run-1"])]


def test_a_changed_cell_or_another_input_is_compared_row_by_row(db, conn, generated):
    ddl.ensure_bookkeeping_tables(db, SCHEMA)
    mapped, rejects = chain(generated)
    logged_load(conn, db, mapped, rejects, "run-1", "input-A")
    victim = int(mapped.users["user_id"].iloc[7])
    db.execute("UPDATE users SET language = 'xx' WHERE user_id = %s", [victim])

    repaired = logged_load(conn, db, mapped, rejects, "run-2", "input-A")

    assert repaired.recognised_from_run is None
    assert stats_tuple(repaired.users) == (0, 1, 1_999)
    assert db.execute("SELECT language FROM users WHERE user_id = %s", [victim]).fetchone()[0] != "xx"
    # Same tables as run-2 left them, but another input: compared, although nothing differs.
    other = logged_load(conn, db, mapped, rejects, "run-3", "input-B")
    assert other.recognised_from_run is None and stats_tuple(other.users) == (0, 0, 2_000)
    # A truncating load is never skipped: it replaces the content.
    replaced = logged_load(conn, db, mapped, rejects, "run-4", "input-B", truncate=True)
    assert replaced.recognised_from_run is None and stats_tuple(replaced.users) == (2_000, 0, 0)


def test_a_subscription_changed_alone_is_compared_and_repaired(db, conn, generated):
    """The same input over tables whose users are as it left them but one subscription is not: the
    fingerprint of every table decides, so the load compares and puts the subscription back."""
    ddl.ensure_bookkeeping_tables(db, SCHEMA)
    mapped, rejects = chain(generated)
    logged_load(conn, db, mapped, rejects, "run-1", "input-A")
    subscription_id, tier = db.execute("SELECT id, tier::text FROM user_subscriptions ORDER BY id LIMIT 1").fetchone()
    db.execute(
        "UPDATE user_subscriptions SET tier = (SELECT e FROM unnest(enum_range(NULL::subscriptiontier)) e "
        "WHERE e::text <> %s LIMIT 1) WHERE id = %s", [tier, subscription_id],
    )

    repaired = logged_load(conn, db, mapped, rejects, "run-2", "input-A")

    assert repaired.recognised_from_run is None
    assert stats_tuple(repaired.users) == (0, 0, 2_000)
    assert (repaired.subscriptions.inserted, repaired.subscriptions.updated) == (0, 1)
    assert db.execute("SELECT tier::text FROM user_subscriptions WHERE id = %s", [subscription_id]).fetchone()[0] == tier


@pytest.mark.parametrize("prune", [False, True])
def test_users_without_their_subscriptions_table_are_counted_as_found_and_pass_the_verdicts(db, conn, prune):
    """The subscriptions table dropped (by hand, or a half-made schema): the load makes it again and
    counts the users it found: the one the file lacks kept, or deleted under prune; its verdicts pass."""
    entries = small_id_entries(10)
    load(conn, SCHEMA, *chain(document(entries)), "run-1")
    db.execute("DROP TABLE user_subscriptions")
    mapped, rejects = chain(document(entries[:9]))

    stats = load(conn, SCHEMA, mapped, rejects, "run-2", prune=prune, max_prune_fraction=0.1, before_commit=lambda
                 judging, stats: verdicts.judge_before_commit(
                     judging, SCHEMA, mapped.users, mapped.subscriptions, stats.kept_absent(), rejects["user_id"]))

    assert (stats_tuple(stats.users), stats.users.kept_absent, stats.users.deleted) == ((0, 0, 9), 0 if prune else 1,
                                                                                         1 if prune else 0)
    assert (stats_tuple(stats.subscriptions), stats.subscriptions.kept_absent) == ((9, 0, 0), 0)
    assert subscription_rows(db) == expected_subscriptions(entries[:9])
    assert len(user_rows(db)) == (9 if prune else 10)


def test_narrowed_bot_columns_refuse_values_too_long_before_writing_and_say_how_to_fix(db, conn):
    """The bot's Alembic tables with narrower varchars than ours: a value longer than the column as
    the database has it is found before anything is written (not a raw COPY error), named with its
    column, size, count and users, with the ALTER that fits it. Length counts characters, not bytes."""
    db.execute(
        ALEMBIC_DDL.replace("faceit_nickname varchar(255)", "faceit_nickname varchar(5)")
        .replace("payment_method varchar(100)", "payment_method varchar(4)")
    )
    entries = small_id_entries(40)
    for e in entries:
        e["faceit_nickname"] = "Жанна"  # 5 characters, 10 bytes: fits varchar(5)
        e["subscription"]["payment_method"] = "card"
    load(conn, SCHEMA, *chain(document(entries[:10])), "run-0")
    before = snapshot(db)

    long_nicknames = [2, 5, 9, 11, 20, 30, 33]
    for i in long_nicknames:
        entries[i]["faceit_nickname"] = "toolongname"
    entries[17]["subscription"]["payment_method"] = "stars"
    mapped, rejects = chain(document(entries))
    with pytest.raises(TargetError) as raised:
        load(conn, SCHEMA, mapped, rejects, "run-1")
    message = str(raised.value)
    named = ", ".join(str(entries[i]["user_id"]) for i in long_nicknames[:5])
    assert (
        "7 value(s) of users.faceit_nickname are longer than its character varying(5) "
        f"(the longest has 11 characters; user_id {named} and 2 more)"
    ) in message
    assert (
        "1 value(s) of user_subscriptions.payment_method are longer than its character varying(4) "
        f"(the longest has 5 characters; user_id {entries[17]['user_id']})"
    ) in message
    assert "Nothing was written" in message
    statements = re.findall(r"^\s*(ALTER TABLE .*)$", message, flags=re.M)
    assert statements == [
        'ALTER TABLE "public"."users" ALTER COLUMN "faceit_nickname" TYPE varchar(11);',
        'ALTER TABLE "public"."user_subscriptions" ALTER COLUMN "payment_method" TYPE varchar(5);',
    ]
    assert "Widen the columns, then resume this run (faceit-etl migrate --resume" in message
    assert snapshot(db) == before
    with pytest.raises(TargetError) as dry:  # a dry run is never resumed, so it offers no resume
        load(conn, SCHEMA, mapped, rejects, "run-1", dry_run=True)
    assert "Widen the columns, then run again (this dry run cannot be resumed):\n  ALTER TABLE" in str(dry.value)
    assert snapshot(db) == before

    # The advice works: after those statements the same frames load, every value whole.
    for statement in statements:
        db.execute(statement)
    load(conn, SCHEMA, mapped, rejects, "run-2")
    assert_content(db, entries)


@pytest.mark.parametrize(("column_type", "lowest"), [("smallint", -(2**15)), ("integer", -(2**31))])
def test_a_narrowed_integer_column_takes_its_exact_range_and_nothing_beyond(db, column_type, lowest):
    """Validation lets no negative number through today; the width check holds both ends on its own."""
    db.execute(ALEMBIC_DDL.replace("total_requests integer", f"total_requests {column_type}"))
    highest = -lowest - 1
    fitting = pd.Series([lowest, highest, 0])
    ids = pd.Series([11, 12, 13])

    ddl.check_column_widths(db, SCHEMA, [ddl.TargetFrame("users", pd.DataFrame({"total_requests": fitting}), ids)])
    for beyond in (lowest - 1, highest + 1):
        frame = pd.DataFrame({"total_requests": pd.Series([0, beyond, 0])})
        with pytest.raises(TargetError, match=rf"1 value\(s\) of users.total_requests exceed its .* \(user_id 12\)"):
            ddl.check_column_widths(db, SCHEMA, [ddl.TargetFrame("users", frame, ids)])


def test_narrowed_bot_integer_columns_refuse_values_beyond_them_on_an_empty_target(db, conn):
    db.execute(ALEMBIC_DDL.replace("total_requests integer", "total_requests smallint"))
    entries = small_id_entries(12)
    for e in entries:
        e["total_requests"] = 7
    entries[4]["total_requests"] = 40_000
    with pytest.raises(TargetError) as raised:
        load(conn, SCHEMA, *chain(document(entries)), "run-1")
    message = str(raised.value)
    assert f"1 value(s) of users.total_requests exceed its 16-bit smallint type (user_id {entries[4]['user_id']})" in message
    assert 'ALTER TABLE "public"."users" ALTER COLUMN "total_requests" TYPE bigint;' in message
    assert db.execute("SELECT count(*) FROM users").fetchone()[0] == 0


@pytest.mark.parametrize("batch_size", [1, 2, 5, 10])
def test_the_copy_text_holds_every_row_once_in_chunks_of_the_batch_size(batch_size):
    """A null is written unquoted and empty text quoted, so COPY tells them apart; any batch size, down
    to one row per chunk, gives the same rows in order."""
    frame = pd.DataFrame({"user_id": [1, 2, 3, 4, 5], "nickname": ["a", None, "", "d", "e"]})
    chunks = list(to_csv_chunks(frame, batch_size))
    assert [rows for rows, _ in chunks] == [min(batch_size, 5 - start) for start in range(0, 5, batch_size)]
    assert b"".join(data for _, data in chunks) == b'1,"a"\n2,\n3,""\n4,"d"\n5,"e"\n'


def test_the_fingerprint_reads_rows_in_utc_and_iso_and_puts_the_sessions_settings_back(db, conn):
    """A rollback in another session, with other settings, must compute the same value for the same rows."""
    load(conn, SCHEMA, *chain(document(generate_users(5, seed=1))), "run-1")
    db.execute("SET TimeZone = 'Asia/Kathmandu'")
    db.execute("SET DateStyle = 'German, DMY'")

    in_another_session = fingerprint(db, SCHEMA)

    assert db.execute("SELECT current_setting('TimeZone'), current_setting('DateStyle')").fetchone() == (
        "Asia/Kathmandu", "German, DMY")
    assert in_another_session == fingerprint(conn, SCHEMA)
