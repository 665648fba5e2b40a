"""Keeping PostgreSQL in step with the bot: rows its own ORM wrote (random uuid4 ids), and users the
file no longer has (kept by default, deleted with prune, refused past max_prune_fraction). Real
loads on a real PostgreSQL, the expected tables built from the raw entries.
"""

from __future__ import annotations

import copy
import io
import json
import uuid
from pathlib import Path

import dagster as dg
import pandas as pd

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from faceit_etl.generate import generate_users
from faceit_etl.postgres.load import PruneRefused, _refuse_unmatched_prune, load, prune_allowance
from faceit_etl.postgres.verdicts import VerificationFailed, all_verdicts, judge_before_commit
from faceit_etl_tests.conftest import examples, make_resources, write_json
from faceit_etl_tests.test_cli import faceit_etl, workdir  # noqa: F401  (fixture)
from faceit_etl_tests.test_load import (
    ALEMBIC_DDL,
    SCHEMA,
    chain,
    conn,  # noqa: F401  (fixture)
    document,
    expected_subscriptions,
    expected_users,
    small_id_entries,
    subscription_rows,
    user_rows,
)
from faceit_etl_tests.test_pipeline import checks_by_name, metadata_of, run
from faceit_etl_tests.test_rollback import roll_back

COUNTS = ("inserted", "updated", "unchanged", "kept_absent", "deleted")


def counts(table_stats) -> dict[str, int]:
    return {name: getattr(table_stats, name) for name in COUNTS}


def dump(db) -> bytes:
    """Both tables in full, as COPY writes them, in id order: equal dumps are byte-identical tables."""
    db.execute("SET TIME ZONE 'UTC'")
    out = io.BytesIO()
    for name in ("users", "user_subscriptions"):
        with db.cursor().copy(f"COPY (SELECT * FROM {SCHEMA}.{name} ORDER BY id) TO STDOUT") as copy:
            for block in copy:
                out.write(bytes(block))
        out.write(b"\\.\n")
    return out.getvalue()


def orm_write(db, entries: list[dict], *, with_subscription: bool = True) -> dict[int, tuple[str, str | None]]:
    """Rows as the bot's SQLAlchemy models write them: uuid4 ids, the models' defaults, timestamps
    from the server. Returns Telegram id -> (user row id, subscription row id)."""
    ids = {}
    for e in entries:
        user_row = str(uuid.uuid4())
        db.execute(
            "INSERT INTO users (id, user_id, faceit_nickname, waiting_for_nickname, language, notifications_enabled,"
            " total_requests) VALUES (%s, %s, %s, false, 'ru', true, 0)",
            [user_row, e["user_id"], f"bot-{e['user_id']}"],
        )
        subscription_row = None
        if with_subscription:
            subscription_row = str(uuid.uuid4())
            db.execute(
                "INSERT INTO user_subscriptions (id, user_id, tier, auto_renew, daily_requests, referrals_count)"
                " VALUES (%s, %s, 'FREE', false, 123456, 0)",
                [subscription_row, user_row],
            )
        ids[e["user_id"]] = (user_row, subscription_row)
    return ids


def row_ids(db) -> dict[int, tuple[str, str | None]]:
    return {
        telegram_id: (str(user_row), str(subscription_row) if subscription_row else None)
        for telegram_id, user_row, subscription_row in db.execute(
            "SELECT u.user_id, u.id, s.id FROM users u LEFT JOIN user_subscriptions s ON s.user_id = u.id"
        ).fetchall()
    }


# ---------------------------------------------------------------------------------------------
# 1. rows the bot wrote itself


def test_rows_the_bots_orm_wrote_are_updated_in_place_keeping_their_ids(db, conn):
    """Tables of the bot's Alembic revision; its ORM wrote 40 of the file's users (30 with a
    subscription) and 5 users the file does not have. The file's users are matched on their
    Telegram id: updated in place, ids kept, subscriptions attached to the existing ids."""
    db.execute(ALEMBIC_DDL)
    entries = small_id_entries(60)
    bots_own = [{"user_id": 900 + i} for i in range(5)]
    written = orm_write(db, entries[:30]) | orm_write(db, entries[30:40], with_subscription=False)
    only_the_bots = orm_write(db, bots_own)
    theirs_before = {t: r for t, r in ((u[0], u) for u in user_rows(db)) if t in only_the_bots}

    mapped, rejects = chain(document(entries))
    stats = load(conn, SCHEMA, mapped, rejects, "run-1")

    assert counts(stats.users) == {"inserted": 20, "updated": 40, "unchanged": 0, "kept_absent": 5, "deleted": 0}
    assert counts(stats.subscriptions) == {"inserted": 30, "updated": 30, "unchanged": 0, "kept_absent": 5, "deleted": 0}
    assert (stats.absent_user_ids, stats.deleted_user_ids) == (sorted(only_the_bots), [])  # kept, none deleted
    ids = row_ids(db)
    for telegram_id, (user_row, subscription_row) in (written | only_the_bots).items():
        assert ids[telegram_id][0] == user_row  # the ORM's id, kept
        if subscription_row:
            assert ids[telegram_id][1] == subscription_row
    # Every file user's row holds the file's values; the bot's own users are as it left them.
    assert [r for r in user_rows(db) if r[0] not in only_the_bots] == expected_users(entries)
    assert {r[0]: r for r in user_rows(db) if r[0] in only_the_bots} == theirs_before
    assert [r for r in subscription_rows(db) if r[0] not in only_the_bots] == expected_subscriptions(entries)

    verdicts = all_verdicts(db, SCHEMA, mapped.users, mapped.subscriptions, stats.kept_absent())
    blocking = ("row_counts_match", "tier_counts_match", "subscriptions_have_users", "content_matches")
    assert {name: verdicts[name].passed for name in blocking} == dict.fromkeys(blocking, True)
    assert not verdicts["rows_not_in_file"].passed
    assert verdicts["rows_not_in_file"].metadata == {"users_not_in_file": 5, "examples": sorted(only_the_bots)}

    again = load(conn, SCHEMA, mapped, rejects, "run-2")
    assert counts(again.users) == {"inserted": 0, "updated": 0, "unchanged": 60, "kept_absent": 5, "deleted": 0}
    assert row_ids(db) == ids


# ---------------------------------------------------------------------------------------------
# 2. users the file no longer has


def _first_and_second(n: int = 100, dropped: int = 10, changed: int = 5) -> tuple[list[dict], list[dict], list[int]]:
    users = generate_users(n, seed=31)
    second = copy.deepcopy(users[dropped:])
    for user in second[:changed]:
        user["language"] = "en" if user["language"] != "en" else "de"
    return users, second, sorted(u["user_id"] for u in users[:dropped])


def test_users_the_file_lacks_are_kept_by_default_and_counted(db, conn):
    first, second, gone = _first_and_second()
    load(conn, SCHEMA, *chain(document(first)), "run-1")
    kept_rows = [r for r in user_rows(db) if r[0] in gone]

    mapped, rejects = chain(document(second))
    stats = load(conn, SCHEMA, mapped, rejects, "run-2")

    assert counts(stats.users) == {"inserted": 0, "updated": 5, "unchanged": 85, "kept_absent": 10, "deleted": 0}
    assert counts(stats.subscriptions) == {"inserted": 0, "updated": 0, "unchanged": 90, "kept_absent": 10, "deleted": 0}
    assert (stats.pruned, stats.absent_user_ids) == (False, gone)
    assert [r for r in user_rows(db) if r[0] in gone] == kept_rows
    assert [r for r in user_rows(db) if r[0] not in gone] == expected_users(second)
    verdicts = all_verdicts(db, SCHEMA, mapped.users, mapped.subscriptions, stats.kept_absent())
    assert verdicts["row_counts_match"].passed and verdicts["content_matches"].passed
    # The check is not blind to the kept rows: told none were kept, the counts do not match; judged
    # without a load's counts (checks run alone), it counts the rows of users the file lacks itself.
    told_none = all_verdicts(db, SCHEMA, mapped.users, mapped.subscriptions, {})["row_counts_match"]
    assert not told_none.passed
    assert told_none.description == "; ".join(
        f"{name}: 100 rows in the database, 90 expected (90 from the file, 0 kept as they were of users not in it or rejected)"
        for name in ("users", "user_subscriptions"))
    assert told_none.metadata == {"users_in_database": 100, "users_expected": 90, "user_subscriptions_in_database": 100,
                                  "user_subscriptions_expected": 90, "users_kept_absent": 0, "user_subscriptions_kept_absent": 0}
    alone = all_verdicts(db, SCHEMA, mapped.users, mapped.subscriptions)["row_counts_match"]
    assert alone.passed and alone.description is None
    assert (alone.metadata["users_kept_absent"], alone.metadata["user_subscriptions_kept_absent"]) == (10, 10)


def test_prune_deletes_the_users_the_file_lacks_with_their_subscriptions(db, conn):
    """Judged before the commit as a run judges it: the users deleted are not kept rows that changed."""
    first, second, gone = _first_and_second()
    load(conn, SCHEMA, *chain(document(first)), "run-1")
    judged = {}

    mapped, rejects = chain(document(second))
    stats = load(conn, SCHEMA, mapped, rejects, "run-2", prune=True,  # 10 of 100: exactly the default 0.1
                 before_commit=lambda c, s: judged.update(judge_before_commit(
                     c, SCHEMA, mapped.users, mapped.subscriptions, s.kept_absent())))

    assert judged["content_matches"].passed  # a failed blocking verdict would have raised in the load

    assert counts(stats.users) == {"inserted": 0, "updated": 5, "unchanged": 85, "kept_absent": 0, "deleted": 10}
    assert counts(stats.subscriptions) == {"inserted": 0, "updated": 0, "unchanged": 90, "kept_absent": 0, "deleted": 10}
    assert (stats.pruned, stats.absent_user_ids) == (True, gone)
    assert user_rows(db) == expected_users(second)
    assert subscription_rows(db) == expected_subscriptions(second)
    assert db.execute("SELECT count(*) FROM user_subscriptions").fetchone()[0] == 90
    verdicts = all_verdicts(db, SCHEMA, mapped.users, mapped.subscriptions, stats.kept_absent())
    assert all(v.passed for v in verdicts.values() if v is not verdicts["referrers_present"])


def test_prune_past_max_prune_fraction_is_refused_before_anything_is_written(db, conn):
    first, second, _ = _first_and_second(dropped=11)
    load(conn, SCHEMA, *chain(document(first)), "run-1")
    before = dump(db)
    snapshots = []

    with pytest.raises(PruneRefused) as refused:
        load(conn, SCHEMA, *chain(document(second)), "run-2", prune=True,
             before_write=lambda *args: snapshots.append(args))

    assert str(refused.value) == (
        "refusing to prune: 11 of the 100 users in public.users (11.0%) are not in the file, more than "
        "max_prune_fraction 0.1 allows (10 users); nothing was written. Check that the file is complete, "
        "or raise max_prune_fraction, or migrate without prune to keep them"
    )
    assert dump(db) == before
    assert snapshots == []  # refused before the snapshot, not only before the writes
    # The same file with a limit that allows it, or without prune, loads.
    assert load(conn, SCHEMA, *chain(document(second)), "run-3", prune=True, max_prune_fraction=0.11).users.deleted == 11


def test_prune_of_a_file_that_would_nearly_empty_the_table_is_refused(db, conn):
    """A truncated file must never empty the bot's table, even with a generous limit."""
    first, _, _ = _first_and_second(n=20)
    load(conn, SCHEMA, *chain(document(first)), "run-1")
    before = dump(db)
    with pytest.raises(PruneRefused, match=r"^refusing to prune: 19 of the 20 users in public.users \(95.0%\) .* "
                                           r"max_prune_fraction 0.9 allows \(18 users\); nothing was written"):
        load(conn, SCHEMA, *chain(document(first[:1])), "run-2", prune=True, max_prune_fraction=0.9)
    assert dump(db) == before


@given(users=st.integers(1, 10**7), ten_thousandths=st.integers(0, 10_000))
def test_the_prune_allowance_is_the_exact_floor_of_the_fraction_as_written(users, ten_thousandths):
    """0.57 of 100 users allows 57, not the 56 floating point gives (0.57 * 100 = 56.99…)."""
    written = f"{ten_thousandths // 10_000}.{ten_thousandths % 10_000:04d}"
    assert prune_allowance(users, float(written)) == users * ten_thousandths // 10_000


@given(hundreds=st.integers(1, 10**5), hundredths=st.integers(0, 100))
def test_a_fraction_of_a_whole_number_of_users_allows_exactly_that_many(hundreds, hundredths):
    """On the boundary itself: 0.57 of 100 (or of 100 × n) users allows exactly 57 (× n)."""
    assert prune_allowance(hundreds * 100, float(f"{hundredths / 100:.2f}")) == hundreds * hundredths


def test_prune_of_exactly_the_allowed_fraction_loads_and_one_more_is_refused(db, conn):
    first, second, _ = _first_and_second(dropped=57)
    load(conn, SCHEMA, *chain(document(first)), "run-1")
    before = dump(db)
    with pytest.raises(PruneRefused, match=r"max_prune_fraction 0.56 allows \(56 users\); nothing was written"):
        load(conn, SCHEMA, *chain(document(second)), "run-2", prune=True, max_prune_fraction=0.56)
    assert dump(db) == before
    assert load(conn, SCHEMA, *chain(document(second)), "run-3", prune=True, max_prune_fraction=0.57).users.deleted == 57


def test_the_prune_refusal_says_user_for_an_allowance_of_one(db, conn):
    first, _, _ = _first_and_second(n=10)
    load(conn, SCHEMA, *chain(document(first)), "run-1")
    with pytest.raises(PruneRefused, match=r"max_prune_fraction 0.1 allows \(1 user\); nothing was written"):
        load(conn, SCHEMA, *chain(document(first[:8])), "run-2", prune=True)


def test_users_without_a_subscription_count_in_the_prune_allowance(db, conn):
    """The allowance is a fraction of the users in the table: 20 here, of whom the bot wrote 10 without a
    subscription row, so 2 may go (the 10 subscriptions would allow 1)."""
    users = generate_users(20, seed=32)
    load(conn, SCHEMA, *chain(document(users[:10])), "run-1")
    orm_write(db, users[10:], with_subscription=False)

    stats = load(conn, SCHEMA, *chain(document(users[:18])), "run-2", prune=True)

    assert (stats.users.deleted, stats.subscriptions.deleted, stats.absent_users) == (2, 0, 2)
    assert stats.deleted_user_ids == sorted(u["user_id"] for u in users[18:])  # what the run lists in its file
    assert sorted(r[0] for r in user_rows(db)) == sorted(u["user_id"] for u in users[:18])


def test_truncate_counts_every_row_it_removed_as_deleted(db, conn):
    first, second, _ = _first_and_second()
    load(conn, SCHEMA, *chain(document(first)), "run-1")
    stats = load(conn, SCHEMA, *chain(document(second[:50])), "run-2", truncate=True)
    assert counts(stats.users) == {"inserted": 50, "updated": 0, "unchanged": 0, "kept_absent": 0, "deleted": 100}
    assert counts(stats.subscriptions) == {"inserted": 50, "updated": 0, "unchanged": 0, "kept_absent": 0, "deleted": 100}
    assert (stats.absent_user_ids, stats.absent_users) == ([], 0)  # the 50 the file lacks were deleted, not kept


def test_prune_frees_the_referral_code_of_a_deleted_user_for_the_file(db, conn):
    """Without prune a code held by a user the file lacks is refused; with prune that user goes first."""
    users = generate_users(31, seed=12)
    holder = next(u for u in users[:30] if u["subscription"]["referral_code"])
    load(conn, SCHEMA, *chain(document(users[:30])), "run-1")
    users[30]["subscription"]["referral_code"] = holder["subscription"]["referral_code"]
    second = [u for u in users if u is not holder]
    stats = load(conn, SCHEMA, *chain(document(second)), "run-2", prune=True)
    assert (stats.users.deleted, stats.users.inserted) == (1, 1)
    assert subscription_rows(db) == expected_subscriptions(second)


@settings(max_examples=examples(25), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    data=st.data(),
    prune=st.booleans(),
    bots_rows=st.booleans(),
)
def test_any_subset_dropped_changed_or_added_ends_as_the_expected_merge(db, conn, data, prune, bots_rows):
    """Random users dropped, changed and added, in either mode, on rows we loaded or the bot's ORM
    wrote: the tables equal the file's users plus (without prune) the absent ones as they were,
    and every count is the size of its set."""
    db.execute("DROP TABLE IF EXISTS user_subscriptions, users; DROP TYPE IF EXISTS subscriptiontier")
    pool = generate_users(24, seed=41)
    first, newcomers = pool[:16], pool[16:]
    if bots_rows:
        db.execute(ALEMBIC_DDL.replace("user_id integer", "user_id bigint").replace("_user_id integer", "_user_id bigint"))
        orm_write(db, first)
        before = {r[0]: r for r in user_rows(db)}
    else:
        load(conn, SCHEMA, *chain(document(first)), "run-1")
        before = {r[0]: r for r in user_rows(db)}
    dropped = data.draw(st.sets(st.sampled_from(range(16))), label="dropped")
    changed = data.draw(st.sets(st.sampled_from(range(16))), label="changed")
    added = data.draw(st.integers(0, len(newcomers)), label="added")
    second = []
    for index, user in enumerate(first):
        if index in dropped:
            continue
        user = copy.deepcopy(user)
        if index in changed:
            user["total_requests"] += 1
        second.append(user)
    second += newcomers[:added]
    gone = sorted(first[i]["user_id"] for i in dropped)

    stats = load(conn, SCHEMA, *chain(document(second)), "run-2", prune=prune, max_prune_fraction=1.0)

    kept = [] if prune else [before[t] for t in gone]
    assert user_rows(db) == sorted(expected_users(second) + kept)
    file_rows = [r for r in subscription_rows(db) if r[0] not in gone]
    assert file_rows == expected_subscriptions(second)
    stayed = len(first) - len(dropped)
    updated = stayed if bots_rows else len(changed - dropped)
    assert counts(stats.users) == {
        "inserted": added, "updated": updated, "unchanged": stayed - updated,
        "kept_absent": 0 if prune else len(gone), "deleted": len(gone) if prune else 0,
    }
    assert stats.absent_user_ids == gone


# ---------------------------------------------------------------------------------------------
# through Dagster and the command line


def _files(tmp_path: Path) -> tuple[Path, Path, list[int]]:
    """100 users, then a file without 10 of them and 5 changed."""
    first, second, gone = _first_and_second()
    return write_json(tmp_path / "first.json", {"users": first}), write_json(tmp_path / "second.json", {"users": second}), gone


def test_a_pruning_run_deletes_lists_them_and_rollback_brings_them_back(database_url, db, tmp_path):
    """The same file, loaded first without prune (the absent users kept), then with prune: the
    tables are as that first load of this file left them, and still the kept users are deleted."""
    first, second, gone = _files(tmp_path)
    with dg.instance_for_test() as instance:
        assert run(make_resources(database_url, first, tmp_path), instance).success
        assert run(make_resources(database_url, second, tmp_path), instance).success
        before = dump(db)
        result = run(make_resources(database_url, second, tmp_path, prune=True), instance)

        assert result.success, checks_by_name(result)
        loaded = metadata_of(result, "postgres_tables")
        assert (loaded["users_deleted"], loaded["subscriptions_deleted"], loaded["users_kept_absent"]) == (10, 10, 0)
        assert (loaded["pruned"], loaded["absent_user_ids"]) == (True, gone)
        assert checks_by_name(result)["rows_not_in_file"].passed
        assert not set(gone) & {r[0] for r in db.execute("SELECT user_id FROM users").fetchall()}
        logged = db.execute("SELECT metadata->'load' FROM migration_logs ORDER BY start_time DESC").fetchone()[0]
        assert (logged["users"]["deleted"], logged["pruned"], logged["absent_user_ids"]) == (10, True, gone)

        assert roll_back(make_resources(database_url, second, tmp_path), instance).success
    assert dump(db) == before


def test_a_run_refused_by_the_prune_guard_fails_and_leaves_the_tables_identical(database_url, db, tmp_path):
    first, second, _ = _files(tmp_path)
    with dg.instance_for_test() as instance:
        assert run(make_resources(database_url, first, tmp_path), instance).success
        before = dump(db)
        result = run(make_resources(database_url, second, tmp_path, prune=True, max_prune_fraction=0.05), instance)

    assert not result.success
    (failure,) = result.get_step_failure_events()
    assert "refusing to prune: 10 of the 100 users in public.users (10.0%) are not in the file, more than " \
           "max_prune_fraction 0.05 allows (5 users); nothing was written" in failure.step_failure_data.error.message
    assert dump(db) == before
    assert db.execute("SELECT status FROM migration_logs ORDER BY start_time DESC").fetchone()[0] == "failed"


def test_the_cli_keeps_prunes_and_refuses_naming_every_count(workdir, database_url, db, tmp_path):
    first, second, gone = _files(tmp_path)
    assert faceit_etl(workdir, database_url, "migrate", str(first)).returncode == 0

    kept = faceit_etl(workdir, database_url, "migrate", str(second))
    assert kept.returncode == 0, kept.stdout + kept.stderr
    assert "  users: 0 inserted, 5 updated, 85 unchanged, 10 kept (not in the file), 0 deleted" in kept.stdout
    assert "  user_subscriptions: 0 inserted, 0 updated, 90 unchanged, 10 kept (not in the file), 0 deleted" in kept.stdout
    assert "check postgres_tables.rows_not_in_file: FAILED (WARN)" in kept.stdout

    before = dump(db)
    refused = faceit_etl(workdir, database_url, "migrate", str(second), "--prune", "--max-prune-fraction", "0.09")
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "refusing to prune: 10 of the 100 users in public.users (10.0%) are not in the file, more than " \
           "max_prune_fraction 0.09 allows (9 users); nothing was written" in refused.stdout
    assert dump(db) == before

    dry = faceit_etl(workdir, database_url, "migrate", str(second), "--prune", "--dry-run")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert "  users: 0 would be inserted, 0 would be updated, 90 unchanged, 0 would be kept (not in the file), " \
           "10 would be deleted" in dry.stdout
    assert dump(db) == before

    pruned = faceit_etl(workdir, database_url, "migrate", str(second), "--prune")
    assert pruned.returncode == 0, pruned.stdout + pruned.stderr
    assert "  users: 0 inserted, 0 updated, 90 unchanged, 0 kept (not in the file), 10 deleted" in pruned.stdout
    assert db.execute("SELECT count(*) FROM users WHERE user_id = ANY(%s)", [gone]).fetchone()[0] == 0

    status = faceit_etl(workdir, database_url, "status")
    assert "      users: 0 inserted, 0 updated, 90 unchanged, 0 kept (not in the file), 10 deleted" in status.stdout
    assert "      users: 0 inserted, 5 updated, 85 unchanged, 10 kept (not in the file), 0 deleted" in status.stdout
    report = json.loads(faceit_etl(workdir, database_url, "status", "--json").stdout)
    assert report["migrations"][0]["load"]["users"] == {
        "inserted": 0, "updated": 0, "unchanged": 90, "kept_absent": 0, "kept_rejected": 0, "deleted": 10
    }

    usage = faceit_etl(workdir, database_url, "migrate", str(second), "--prune", "--max-prune-fraction", "10%")
    assert usage.returncode == 2
    assert "argument --max-prune-fraction: expected a fraction from 0 to 1, such as 0.1, got '10%'" in usage.stderr


def _with_rejected_last(n: int = 43) -> tuple[list[dict], list[dict]]:
    """A file of n users, and the same file with the last user's tier unknown (so that entry is rejected)."""
    first = generate_users(n, seed=47)
    second = copy.deepcopy(first)
    second[-1]["subscription"]["tier"] = "gold"
    return first, second


@pytest.mark.parametrize("prune", [False, True])
def test_a_user_whose_entry_is_rejected_is_in_the_file_kept_as_it_was_never_absent(db, conn, prune):
    first, second = _with_rejected_last()
    load(conn, SCHEMA, *chain(document(first)), "run-1")
    rejected_id = second[-1]["user_id"]
    kept_rows = [r for r in user_rows(db) if r[0] == rejected_id]
    mapped, rejects = chain(document(second))
    assert rejects["user_id"].tolist() == [rejected_id]

    stats = load(conn, SCHEMA, mapped, rejects, "run-2", prune=prune, max_prune_fraction=1.0)

    assert counts(stats.users) == {"inserted": 0, "updated": 0, "unchanged": 42, "kept_absent": 0, "deleted": 0}
    assert (stats.users.kept_rejected, stats.subscriptions.kept_rejected) == (1, 1)
    assert stats.absent_user_ids == []
    assert [r for r in user_rows(db) if r[0] == rejected_id] == kept_rows
    verdicts = all_verdicts(db, SCHEMA, mapped.users, mapped.subscriptions, stats.kept_absent(), rejects["user_id"])
    assert verdicts["row_counts_match"].passed
    assert verdicts["rows_not_in_file"].passed, verdicts["rows_not_in_file"].description


def test_a_rejected_users_row_is_kept_over_tables_without_subscriptions_and_never_under_truncate(db, conn):
    """A rejected entry's user is counted kept whenever the table holds users, with subscription rows or
    without; truncate deletes every row, so it counts none kept."""
    first, second = _with_rejected_last(10)
    load(conn, SCHEMA, *chain(document(first)), "run-1")
    db.execute("DELETE FROM user_subscriptions")
    mapped, rejects = chain(document(second))

    stats = load(conn, SCHEMA, mapped, rejects, "run-2")
    assert (stats.users.kept_rejected, stats.subscriptions.kept_rejected) == (1, 0)

    stats = load(conn, SCHEMA, mapped, rejects, "run-3", truncate=True)
    assert (stats.users.kept_rejected, stats.subscriptions.kept_rejected) == (0, 0)
    assert stats.users.deleted == 10 and [r for r in user_rows(db) if r[0] == second[-1]["user_id"]] == []


@pytest.mark.parametrize("subscription_rows", [True, False])
def test_prune_refuses_a_file_with_a_rejected_entry_whose_user_id_is_invalid(db, conn, subscription_rows):
    """Whenever the table holds users, whether or not they have subscription rows."""
    first, _ = _with_rejected_last(10)
    load(conn, SCHEMA, *chain(document(first)), "run-1")
    if not subscription_rows:
        db.execute("DELETE FROM user_subscriptions")
    before = dump(db)
    second = copy.deepcopy(first)
    second[3]["user_id"] = "12x"
    second[7]["user_id"] = -4

    with pytest.raises(PruneRefused) as refused:
        load(conn, SCHEMA, *chain(document(second)), "run-2", prune=True, max_prune_fraction=1.0)

    assert str(refused.value) == (
        "refusing to prune: 2 rejected entries of the file (entries 4, 8) have no valid user_id, so the users meant "
        "cannot be told from users the file lacks in public.users; nothing was written. Correct the entries, "
        "or migrate without prune to keep every user"
    )
    assert dump(db) == before
    # Without prune nothing is deleted, so the same file loads and keeps both users as they were.
    stats = load(conn, SCHEMA, *chain(document(second)), "run-3")
    assert (stats.users.kept_absent, stats.users.deleted) == (2, 0)


def test_rows_kept_are_split_by_why_per_table_when_kept_users_have_no_subscription_row(db, conn):
    """The bot's tables may hold users without a subscription row. Kept rows are counted per table and
    by why they are kept: user 5's entry rejected, users 3 and 4 absent, and none of them has a
    subscription row; user 2's repeated entry, rejected, is no rejected user (its first entry loads)."""
    entries = generate_users(5, seed=61)
    load(conn, SCHEMA, *chain(document(entries)), "run-1")
    db.execute("DELETE FROM user_subscriptions WHERE user_id IN (SELECT id FROM users WHERE user_id = ANY(%s))",
               [[e["user_id"] for e in entries[2:]]])
    repeated = copy.deepcopy(entries[1]) | {"faceit_nickname": "a later entry of the same user"}
    rejected = copy.deepcopy(entries[4])
    rejected["subscription"]["tier"] = "gold"
    mapped, rejects = chain(document([entries[0], entries[1], repeated, rejected]))
    assert sorted(rejects["user_id"].tolist()) == sorted([entries[1]["user_id"], entries[4]["user_id"]])

    stats = load(conn, SCHEMA, mapped, rejects, "run-2")

    assert (counts(stats.users), stats.users.kept_rejected) == (
        {"inserted": 0, "updated": 0, "unchanged": 2, "kept_absent": 2, "deleted": 0}, 1)
    assert (counts(stats.subscriptions), stats.subscriptions.kept_rejected) == (
        {"inserted": 0, "updated": 0, "unchanged": 2, "kept_absent": 0, "deleted": 0}, 0)
    assert (stats.absent_users, stats.absent_user_ids) == (2, sorted(e["user_id"] for e in entries[2:4]))


def test_a_first_migration_with_prune_loads_a_file_with_an_entry_without_a_valid_user_id(db, conn):
    """Into empty tables there is no one to delete, so an entry no user can be matched to is only a reject."""
    entries = generate_users(4, seed=62)
    entries[2]["user_id"] = "12x"
    mapped, rejects = chain(document(entries))

    stats = load(conn, SCHEMA, mapped, rejects, "run-1", prune=True, max_prune_fraction=1.0)

    assert (stats.users.inserted, stats.users.deleted, stats.rejects_written) == (3, 0, 1)
    assert [row[0] for row in user_rows(db)] == sorted(e["user_id"] for i, e in enumerate(entries) if i != 2)


def test_prune_deletes_absent_users_whatever_the_subscriptions_foreign_key_says_on_delete(db, conn):
    """A bot's schema whose key from subscriptions to users does not cascade: the subscriptions go first."""
    entries = generate_users(6, seed=63)
    load(conn, SCHEMA, *chain(document(entries)), "run-1")
    key = db.execute("SELECT conname FROM pg_constraint WHERE conrelid = 'user_subscriptions'::regclass "
                     "AND contype = 'f'").fetchone()[0]
    db.execute(f'ALTER TABLE user_subscriptions DROP CONSTRAINT "{key}", ADD CONSTRAINT "{key}" '
               "FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE NO ACTION")

    stats = load(conn, SCHEMA, *chain(document(entries[:4])), "run-2", prune=True, max_prune_fraction=1.0)

    assert (stats.users.deleted, stats.subscriptions.deleted) == (2, 2)
    assert [row[0] for row in user_rows(db)] == sorted(e["user_id"] for e in entries[:4])
    assert db.execute("SELECT count(*) FROM user_subscriptions").fetchone()[0] == 4


@pytest.mark.parametrize("count, said", [
    (1, "1 rejected entry of the file (entry 1) has no valid user_id, so the user meant"),
    (20, f"20 rejected entries of the file (entries {', '.join(map(str, range(1, 21)))}) have no valid user_id, so the users meant"),
    (21, f"21 rejected entries of the file (entries {', '.join(map(str, range(1, 21)))}, …) have no valid user_id, so the users meant"),
])
def test_the_unmatched_prune_refusal_names_the_first_twenty_entries_and_marks_more(count, said):
    rejects = pd.DataFrame({"source_index": range(count), "user_id": pd.array([None] * count, dtype="Int64")})

    with pytest.raises(PruneRefused) as refused:
        _refuse_unmatched_prune(rejects, 5, "bot")

    assert str(refused.value) == (
        f"refusing to prune: {said} cannot be told from users the file lacks in bot.users; nothing was written. "
        "Correct the entries, or migrate without prune to keep every user"
    )


@pytest.mark.parametrize("statement", [
    "DELETE FROM users WHERE user_id = {kept}",
    "INSERT INTO users (id, user_id, created_at, updated_at) VALUES (gen_random_uuid(), 999999999999, now(), now())",
])
def test_rows_a_trigger_removes_or_adds_beside_the_kept_ones_fail_the_count_check(db, conn, statement):
    """kept_absent is counted from the tables before the writes: what the load's own transaction
    deletes or invents beside the file's rows shows as a count mismatch, never hides in the count."""
    first, second, gone = _first_and_second(n=30, dropped=3, changed=0)
    load(conn, SCHEMA, *chain(document(first)), "run-1")
    db.execute("CREATE FUNCTION meddle() RETURNS trigger AS $$ BEGIN "
               + statement.format(kept=gone[0]) + "; RETURN NULL; END $$ LANGUAGE plpgsql")
    db.execute("CREATE TRIGGER meddle AFTER INSERT ON user_subscriptions FOR EACH STATEMENT EXECUTE FUNCTION meddle()")
    mapped, rejects = chain(document(second))
    seen = {}

    def judge(c, stats):
        seen["verdicts"] = judge_before_commit(c, SCHEMA, mapped.users, mapped.subscriptions, stats.kept_absent())

    before = dump(db)
    with pytest.raises(VerificationFailed, match=r"^verification failed, nothing was written: row_counts_match: users: "
                                                 r"(29|31) rows in the database, 30 expected \(27 from the file, 3 kept"):
        load(conn, SCHEMA, mapped, rejects, "run-2", before_commit=judge)
    assert dump(db) == before


def test_every_pruned_user_is_listed_in_a_private_file_the_metadata_and_log_name(database_url, db, tmp_path):
    """The inline list is the first 20 and says so; the run's backup folder holds every deleted id."""
    first, second, gone = _first_and_second(dropped=30)
    first_path = write_json(tmp_path / "first.json", {"users": first})
    second_path = write_json(tmp_path / "second.json", {"users": second})
    with dg.instance_for_test() as instance:
        assert run(make_resources(database_url, first_path, tmp_path), instance).success
        result = run(make_resources(database_url, second_path, tmp_path, prune=True, max_prune_fraction=0.3), instance)

    assert result.success, checks_by_name(result)
    loaded = metadata_of(result, "postgres_tables")
    assert (loaded["users_deleted"], loaded["absent_user_ids"]) == (30, gone[:20])
    assert loaded["absent_user_ids_shown"] == "the first 20 of 30"
    listed = Path(loaded["deleted_user_ids_file"])
    assert listed == tmp_path / "backups" / result.run_id / "deleted_user_ids.json"
    assert json.loads(listed.read_text()) == gone
    assert listed.stat().st_mode & 0o777 == 0o600
    logged = db.execute("SELECT metadata->'load' FROM migration_logs ORDER BY start_time DESC").fetchone()[0]
    assert (logged["absent_users"], logged["deleted_user_ids_file"]) == (30, str(listed))
    assert "deleted_user_ids" not in logged


@pytest.mark.parametrize("tables_empty", [True, False])
def test_a_row_of_the_file_the_database_drops_as_it_is_written_fails_the_count_check(db, conn, tables_empty):
    """A row the database silently drops (a BEFORE INSERT trigger returning NULL) was neither inserted,
    updated nor left as it was: the counts differ, the row is never counted as kept to make them match.
    (A user dropped so is refused already: its subscription row has no user.)"""
    first, second, gone = _first_and_second(n=30, dropped=3, changed=0)
    dropped = second[-1]["user_id"]
    load(conn, SCHEMA, *chain(document([] if tables_empty else first[:-1])), "run-1")
    db.execute(f"CREATE FUNCTION drop_one() RETURNS trigger AS $$ BEGIN IF (SELECT u.user_id FROM {SCHEMA}.users u "
               f"WHERE u.id = NEW.user_id) = {dropped} THEN RETURN NULL; END IF; RETURN NEW; END $$ LANGUAGE plpgsql")
    db.execute("CREATE TRIGGER drop_one BEFORE INSERT ON user_subscriptions FOR EACH ROW EXECUTE FUNCTION drop_one()")
    kept = 0 if tables_empty else len(gone)
    mapped, rejects = chain(document(second))
    in_file = len(mapped.subscriptions)

    before = dump(db)
    with pytest.raises(VerificationFailed) as failed:
        load(conn, SCHEMA, mapped, rejects, "run-2",
             before_commit=lambda c, stats: judge_before_commit(c, SCHEMA, mapped.users, mapped.subscriptions, stats.kept_absent()))

    counted = failed.value.verdicts["row_counts_match"]
    assert not counted.passed
    assert (f"user_subscriptions: {in_file + kept - 1} rows in the database, {in_file + kept} expected ({in_file} from the file"
            in counted.description), counted.description
    assert dump(db) == before
