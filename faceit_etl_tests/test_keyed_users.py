"""Which user an entry names, in every way an entry can name one: the key of the keyed layout,
its user_id, both (equal or not), neither, a key that is no integer. A rejected entry's user is in
the file: prune never deletes it and the load counts it kept."""

from __future__ import annotations

import copy

import orjson
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from faceit_etl.generate import generate_users
from faceit_etl.postgres.ddl import TargetError
from faceit_etl.postgres.load import load
from faceit_etl_tests.test_load import SCHEMA, chain, conn, document, user_rows  # noqa: F401  (fixture)

MISSING = object()


def keyed(entries: dict[str, dict]) -> bytes:
    return orjson.dumps({"users": entries})


def rejected_entry(user_id=MISSING) -> dict:
    """An entry rejected for its tier, whatever its user_id."""
    entry = {"faceit_nickname": "x", "subscription": {"tier": "gold"}}
    return entry if user_id is MISSING else {"user_id": user_id} | entry


@pytest.mark.parametrize(("document_bytes", "named"), [
    (keyed({"9": rejected_entry(8)}), 9),  # user_id differs from its key: the bot reads by key
    (keyed({"9": rejected_entry("8")}), 9),
    (keyed({"9": rejected_entry(9)}), 9),
    (keyed({"9": rejected_entry()}), 9),  # the key fills the missing user_id
    (keyed({"9": rejected_entry("x")}), 9),  # an invalid user_id under a valid key
    (keyed({"9": rejected_entry(-1)}), 9),
    (keyed({"9": rejected_entry(None)}), 9),
    (keyed({"abc": rejected_entry(5)}), 5),  # a key that is no integer: the user_id names the user
    (keyed({"abc": rejected_entry()}), None),  # neither names a user
    (keyed({"0": rejected_entry()}), None),
    (document([rejected_entry(5)]), 5),  # the list layout: only the user_id
    (document([rejected_entry()]), None),
])
def test_a_rejected_entry_names_the_user_its_key_or_user_id_names(document_bytes, named):
    _, rejects = chain(document_bytes)
    assert len(rejects) >= 1
    assert rejects["user_id"].tolist() == [pd.NA if named is None else named] * len(rejects)


user_id_values = st.one_of(
    st.just(MISSING), st.none(), st.booleans(), st.integers(-10, 2**40), st.text(max_size=5),
    st.integers(1, 2**40).map(str), st.floats(allow_nan=False),
)


@settings(deadline=None)
@given(key=st.integers(1, 2**40), user_id=user_id_values)
def test_any_rejected_entry_under_a_valid_key_names_the_keys_user(key, user_id):
    _, rejects = chain(keyed({str(key): rejected_entry(user_id)}))
    assert rejects["user_id"].tolist() == [key] * len(rejects)


def _ten_users() -> list[dict]:
    entries = generate_users(10, seed=53)
    for number, e in enumerate(entries, start=1):
        e["user_id"] = number
        e["subscription"]["referred_by"] = None
    return entries


def test_prune_keeps_the_user_named_by_the_key_of_a_rejected_entry(db, conn):
    """The table holds users 1-10; the keyed file has 1-8 and, under key '9', an entry saying
    user_id 8. User 9 is in the file (rejected, kept as it was); only user 10 is pruned."""
    entries = _ten_users()
    load(conn, SCHEMA, *chain(document(entries)), "run-1")
    kept_row = [r for r in user_rows(db) if r[0] == 9]
    second = {str(e["user_id"]): copy.deepcopy(e) for e in entries[:8]}
    second["9"] = {"user_id": 8, "faceit_nickname": "dup"}
    mapped, rejects = chain(keyed(second))
    assert rejects[["user_id", "reason"]].values.tolist() == [[9, "user_id 8 differs from its key '9'"]]

    stats = load(conn, SCHEMA, mapped, rejects, "run-2", prune=True, max_prune_fraction=0.5)

    assert stats.absent_user_ids == [10]
    assert (stats.users.deleted, stats.users.kept_rejected, stats.users.kept_absent) == (1, 1, 0)
    assert [r for r in user_rows(db) if r[0] == 9] == kept_row
    assert sorted(r[0] for r in user_rows(db)) == list(range(1, 10))


def test_a_referral_code_held_by_a_user_whose_entry_is_rejected_says_so(db, conn):
    """User 1 holds B0000001 in the table; the file rejects user 1's entry and gives the code to
    user 2. The refusal says the holder's entry is rejected, not that the file lacks the holder."""
    entries = _ten_users()[:3]
    entries[0]["subscription"]["referral_code"] = "B0000001"
    entries[2]["subscription"]["referral_code"] = "B0000003"
    load(conn, SCHEMA, *chain(document(entries)), "run-1")
    second = copy.deepcopy(entries)
    second[0]["subscription"]["tier"] = "gold"
    second[1]["subscription"]["referral_code"] = "B0000001"
    second = second[:2] + [{**_ten_users()[3], "subscription": {"tier": "free", "referral_code": "B0000003"}}]
    mapped, rejects = chain(document(second))
    assert rejects["user_id"].tolist() == [1]

    with pytest.raises(TargetError) as refused:
        load(conn, SCHEMA, mapped, rejects, "run-2")

    assert str(refused.value) == (
        "2 referral code(s) of the file are held in public.user_subscriptions by users the file does not load: "
        "'B0000001' given to user_id 2 is held by user_id 1 (its entry in the file is rejected); "
        "'B0000003' given to user_id 4 is held by user_id 3 (not in the file). Nothing was written. Clear the "
        "code of its holder in the database, or correct the file, then run again"
    )
