"""A load counts every row it changes, and moves `updated_at` on exactly those rows.

Referral codes are unique, so a code that leaves a row (cleared, changed, passed on, swapped) is first
released from it before the upsert writes the file's codes. That release is a change of the row like
any other: a row whose code only became null must be counted updated, once, with `updated_at` moved,
and the dry run, the migration log and the returned stats must all say so.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from faceit_etl.postgres import runlog
from faceit_etl.postgres.load import load
from faceit_etl_tests.conftest import examples, write_json
from faceit_etl_tests.test_cli import faceit_etl, workdir  # noqa: F401 (fixture)
from faceit_etl_tests.test_load import SCHEMA, chain, conn, document  # noqa: F401 (fixture)

CODES = [f"C0DE000{i}" for i in range(6)]
_USERS = 6  # users 1-6 in the first file; the second file has some of them and users 7-8


def _entry(user_id: int, code: str | None, tier: str) -> dict:
    return {"user_id": user_id, "subscription": {"tier": tier, "referral_code": code}}


def _distinct(codes: list[str | None]) -> list[str | None]:
    """The codes with every repeat made null (validation rejects a code given twice)."""
    seen: set[str] = set()
    kept = []
    for code in codes:
        kept.append(code if code not in seen else None)
        seen.add(code)
    return kept


def _rows(db) -> dict[int, tuple]:
    """Telegram id -> (subscription's data, its updated_at); a row's data is every column but ids and times."""
    return {
        user_id: (data, updated_at)
        for user_id, *data, updated_at in db.execute(
            f"""SELECT u.user_id, s.tier::text, s.referral_code, s.referred_by_user_id, s.expires_at, s.updated_at
                FROM {SCHEMA}.user_subscriptions s JOIN {SCHEMA}.users u ON u.id = s.user_id"""
        ).fetchall()
    }


def _counts(stats) -> dict[str, int]:
    return {k: getattr(stats.subscriptions, k) for k in ("inserted", "updated", "unchanged")}


@settings(max_examples=examples(40), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    first=st.permutations([*CODES, *[None] * _USERS]).map(lambda drawn: drawn[:_USERS]),
    # Null as often as any code: clearing is the change most easily miscounted.
    second=st.lists(st.one_of(st.none(), st.sampled_from(CODES)), min_size=_USERS + 2, max_size=_USERS + 2),
    in_second=st.lists(st.booleans(), min_size=_USERS, max_size=_USERS),
    tiers=st.lists(st.sampled_from(["free", "pro"]), min_size=_USERS + 2, max_size=_USERS + 2),
)
def test_every_row_whose_values_change_is_counted_once_and_only_its_updated_at_moves(
    db, conn, first, second, in_second, tiers
):
    """Two files: codes added, cleared, changed, swapped, passed on or kept, tiers changed or not. The
    second load's counts are exactly the rows whose values differ, `updated_at` moves on exactly those,
    and the dry run's prediction and the migration log's counts are the same."""
    load(conn, SCHEMA, *chain(document([_entry(i + 1, c, "free") for i, c in enumerate(first)])), "first",
         truncate=True)
    before = _rows(db)
    kept_ids = [i + 1 for i in range(_USERS) if in_second[i]]
    # A code of a user the second file lacks stays held by that user: the file cannot give it to another.
    held_outside = {first[i] for i in range(_USERS) if not in_second[i] and first[i]}
    codes = _distinct([c if c not in held_outside else None for c in second])
    file_ids = [*kept_ids, 7, 8]
    mapped, rejects = chain(document([_entry(u, codes[u - 1], tiers[u - 1]) for u in file_ids]))

    predicted = load(conn, SCHEMA, mapped, rejects, "dry", dry_run=True)
    assert _rows(db) == before
    log = runlog.start(db, SCHEMA, run_id="second", total_items=len(mapped.users), metadata={})
    stats = load(conn, SCHEMA, mapped, rejects, "second", log=log)
    after = _rows(db)

    changed = {u for u in before if u in after and after[u][0] != before[u][0]}
    moved = {u for u in before if u in after and after[u][1] != before[u][1]}
    new = set(after) - set(before)
    assert moved == changed
    expected = {"inserted": len(new), "updated": len(changed), "unchanged": len(kept_ids) - len(changed)}
    assert _counts(stats) == expected
    assert _counts(predicted) == expected
    logged = runlog.latest(db, SCHEMA, limit=1)[0]
    assert (logged["run_id"], logged["status"]) == ("second", "success")
    assert {k: logged["load"]["user_subscriptions"][k] for k in expected} == expected


@pytest.mark.parametrize(
    "second, updated",
    [
        # user 1's code cleared: the only change
        ([(1, None), (2, "BBBB2222")], {1}),
        # user 1's code passed on to user 2, whose own code is gone: both changed
        ([(1, None), (2, "DDDD4444")], {1, 2}),
        # user 1's code passed on to a new user 3
        ([(1, None), (2, "BBBB2222"), (3, "DDDD4444")], {1}),
    ],
)
def test_a_code_cleared_or_passed_on_counts_its_old_holder_updated_and_moves_its_updated_at(db, conn, second, updated):
    load(conn, SCHEMA, *chain(document([_entry(1, "DDDD4444", "free"), _entry(2, "BBBB2222", "free")])), "first")
    before = _rows(db)

    stats = load(conn, SCHEMA, *chain(document([_entry(u, c, "free") for u, c in second])), "second")

    after = _rows(db)
    assert after[1][0][1] is None
    assert stats.subscriptions.updated == len(updated)
    assert {u for u in before if after[u][1] != before[u][1]} == updated


def test_the_command_line_reports_a_cleared_code_as_an_update_in_the_dry_run_the_run_and_status(
    workdir, database_url, db
):
    """The operator's case, end to end: user 1's code set to null in the file."""
    entries = [_entry(1, "DDDD4444", "free"), _entry(2, "BBBB2222", "free")]
    first = write_json(workdir / "first.json", {"users": entries})
    assert faceit_etl(workdir, database_url, "migrate", str(first)).returncode == 0
    stamped = dict(db.execute("SELECT referral_code, updated_at FROM user_subscriptions").fetchall())
    entries[0]["subscription"]["referral_code"] = None
    second = write_json(workdir / "second.json", {"users": entries})

    dry = faceit_etl(workdir, database_url, "migrate", str(second), "--dry-run")
    done = faceit_etl(workdir, database_url, "migrate", str(second))
    report = json.loads(faceit_etl(workdir, database_url, "status", "--json").stdout)

    assert dry.returncode == 0 and done.returncode == 0, dry.stdout + done.stdout + done.stderr
    assert "user_subscriptions: 0 would be inserted, 1 would be updated, 1 unchanged" in dry.stdout
    assert "user_subscriptions: 0 inserted, 1 updated, 1 unchanged" in done.stdout
    latest = report["migrations"][0]
    assert latest["status"] == "success"
    assert {k: latest["load"]["user_subscriptions"][k] for k in ("inserted", "updated", "unchanged")} == {
        "inserted": 0, "updated": 1, "unchanged": 1}
    rows = {user_id: (code, updated_at) for user_id, code, updated_at in db.execute(
        "SELECT u.user_id, s.referral_code, s.updated_at FROM user_subscriptions s JOIN users u ON u.id = s.user_id")}
    assert rows[1][0] is None and rows[1][1] > stamped["DDDD4444"]
    assert rows[2] == ("BBBB2222", stamped["BBBB2222"])
