"""Which user an entry names, in every way an entry can name one: the key of the keyed layout,
its user_id, both (equal or not), neither, a key that is no integer. A rejected entry's user is in
the file: prune never deletes it and the load counts it kept."""

from __future__ import annotations

import copy
import json

import orjson
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from faceit_etl.generate import generate_users
from faceit_etl.postgres.ddl import TargetError
from faceit_etl.postgres.load import load
from faceit_etl.source import parse_source, read_source
from faceit_etl.validation.validate import validate_entries
from faceit_etl_tests.conftest import examples
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
    (keyed({"9223372036854775807": rejected_entry()}), 2**63 - 1),  # the largest id, 19 digits
    (keyed({"9223372036854775808": rejected_entry()}), None),  # one more: no 64-bit id
    (keyed({"9": rejected_entry("x")}), 9),  # an invalid user_id under a valid key
    (keyed({"9": rejected_entry(-1)}), 9),
    (keyed({"9": rejected_entry(None)}), 9),
    (keyed({"abc": rejected_entry(5)}), None),  # a key that names no user: the bot never reads it as user 5
    (keyed({"007": rejected_entry(7)}), None),
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


def key_reason(key: str) -> str:
    return (
        f"key {json.dumps(key, ensure_ascii=False)} names no user: the bot reads this layout by the user id written in plain digits "
        "(1 to 9223372036854775807, no leading zero, sign, space or point), so it never reads this entry"
    )


def test_an_entry_under_a_key_that_is_no_user_id_is_rejected_naming_the_key_not_loaded_as_its_user_id():
    """The bot reads this layout by key: it never reaches the entry under "x" as user 8."""
    raw = keyed({"5": {"faceit_nickname": "first"}, "6": {"user_id": "6"}, "x": {"user_id": 8}, "2": {"user_id": 99}})
    outcome = validate_entries(parse_source(raw, "keyed.json"))
    assert outcome.valid["user_id"].tolist() == [5, 6]
    assert outcome.rejects[["source_index", "user_id", "field", "reason"]].values.tolist() == [
        [2, pd.NA, "user_id", key_reason("x")],
        [3, 2, "user_id", 'user_id 99 differs from its key "2"'],
    ]


@pytest.mark.parametrize("key", ["007", "05", " 5", "5 ", "5.0", "-5", "+5", "0", "", "1e3", "٥", "5_0", "x",
                                 "9223372036854775808", "9" * 5000])
@pytest.mark.parametrize("user_id", [MISSING, 5, "5", 7])
def test_a_key_the_bot_cannot_read_as_an_id_rejects_its_entry_and_is_never_read_as_another_number(key, user_id):
    """Whatever number the key might be read as ("007" as 7, "5.0" as 5), the entry takes no user's place:
    a later entry under the key "5" (or "7") is the user, as the bot reads it."""
    entry = {"language": "en"} if user_id is MISSING else {"user_id": user_id, "language": "en"}
    outcome = validate_entries(parse_source(keyed({key: entry, "5": {"user_id": 5}, "7": {}}), "keyed.json"))
    assert outcome.valid["user_id"].tolist() == [5, 7]
    reason = key_reason(key) if len(key) < 50 else key_reason(key).replace(json.dumps(key), json.dumps(key)[:57] + "...")
    assert outcome.rejects[["source_index", "user_id", "field", "reason"]].values.tolist() == [
        [0, pd.NA, "user_id", reason]
    ]


ID_KEY_FORMS = st.one_of(
    st.integers(1, 12).map(str), st.integers(1, 2**63 - 1).map(str),
    st.sampled_from(["007", "05", " 5", "5.0", "-5", "+5", "0", "", "1e1", "٥", "9223372036854775808"]),
    st.text(max_size=3),
)
SAYS = ("nothing", "its key's id", "its key's id as text", "another id", "null", "no number")


def _names_a_user(key: str) -> bool:
    """An independent reading of what the bot looks up: `str(user_id)` for a 64-bit positive id."""
    return key.isascii() and key.isdigit() and key == str(int(key)) and 1 <= int(key) < 2**63


@settings(deadline=None, max_examples=examples(300))
@given(st.lists(st.tuples(ID_KEY_FORMS, st.sampled_from(SAYS), st.integers(1, 12)), unique_by=lambda t: t[0], max_size=8))
def test_every_keyed_entry_is_loaded_as_the_id_its_key_names_or_rejected_naming_its_key(items):
    users = {}
    for key, says, other in items:
        key_id = int(key) if _names_a_user(key) else other
        user_id = {"its key's id": key_id, "its key's id as text": str(key_id),
                   "another id": key_id + 1 if key_id == other else other, "null": None, "no number": "x"}.get(says, MISSING)
        users[key] = {"language": "en"} if user_id is MISSING else {"user_id": user_id, "language": "en"}
    outcome = validate_entries(parse_source(keyed(users), "keyed.json"))

    valid = outcome.valid["user_id"]
    assert sorted(valid.index.tolist() + outcome.rejects["source_index"].unique().tolist()) == list(range(len(items)))
    for index, (key, says, _) in enumerate(items):
        reasons = outcome.rejects.loc[outcome.rejects["source_index"] == index]
        if _names_a_user(key) and says in SAYS[:3]:
            assert valid.get(index) == int(key), (key, says)
            continue
        assert index not in valid.index, (key, says)
        assert reasons["user_id"].tolist() == [int(key) if _names_a_user(key) else pd.NA] * len(reasons)
        if not _names_a_user(key) or says == "another id":
            assert any(json.dumps(key, ensure_ascii=False)[:20] in reason for reason in reasons["reason"]), (key, says, reasons["reason"].tolist())


@settings(deadline=None, max_examples=examples(200))
@given(keys=st.lists(st.sampled_from(["1", "2", "3", "4", "05"]), min_size=1, max_size=30),
       piece_bytes=st.integers(1, 400), batch_size=st.integers(1, 7))
def test_of_a_repeated_key_the_last_entry_is_loaded_as_the_bot_reads_it_whole_or_in_pieces(
        tmp_path_factory, keys, piece_bytes, batch_size):
    """Wherever a key repeats (next to each other, far apart, across pieces and batches), the entry
    loaded under it is the one Python's json gives the bot, and each earlier one is rejected naming it."""
    text = '{"users": {' + ", ".join(f'"{key}": {{"faceit_nickname": "entry {i}"}}' for i, key in enumerate(keys)) + "}}"
    path = tmp_path_factory.mktemp("keyed") / "data.json"
    path.write_text(text)
    last = {key: i for i, key in enumerate(keys)}
    bot = {int(key): entry["faceit_nickname"] for key, entry in json.loads(text)["users"].items() if _names_a_user(key)}

    for source in (parse_source(path.read_bytes(), path), read_source(path, piece_bytes=piece_bytes)):
        outcome = validate_entries(source, batch_size=batch_size)

        loaded = outcome.valid
        assert dict(zip(loaded["user_id"].tolist(), loaded["faceit_nickname"].tolist())) == bot
        assert loaded.index.tolist() == sorted(last[str(user_id)] for user_id in bot)
        superseded = [(i, f"key {json.dumps(key, ensure_ascii=False)} repeated: the bot reads the last one, entry {last[key] + 1}")
                      for i, key in enumerate(keys) if last[key] != i]
        assert [(r["source_index"], r["reason"]) for r in outcome.reject_records()
                if "repeated" in r["reason"]] == superseded


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
    assert rejects[["user_id", "reason"]].values.tolist() == [[9, 'user_id 8 differs from its key "9"']]

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
        '"B0000001" given to user_id 2 is held by user_id 1 (its entry in the file is rejected); '
        '"B0000003" given to user_id 4 is held by user_id 3 (not in the file). Nothing was written. Clear the '
        "code of its holder in the database, or correct the file, then run again"
    )


@pytest.mark.parametrize(("key", "entry", "shown"), [
    ("007", {"user_id": 7}, '"007"'),  # an outside tester saw 7: the entry's user_id, never what was refused
    ("007", {"user_id": "7"}, '"007"'),
    ("5.0", {"language": "en"}, '"5.0"'),  # it showed (absent)
    (" 5", {"user_id": 5}, '" 5"'),
    ("x\"y", {"user_id": 9}, '"x\\"y"'),
    ("9" * 100, {"user_id": 9}, '"' + "9" * 78 + "…"),  # cut to 80 characters as every value
])
def test_a_key_that_names_no_user_is_the_value_its_reject_shows_on_every_surface(key, entry, shown):
    from faceit_etl_tests.test_reject_values import shown_values

    outcome = validate_entries(parse_source(keyed({key: entry, "5": {"user_id": 5}}), "keyed.json"))

    assert outcome.rejects[["field", "value"]].values.tolist() == [["user_id", shown]]
    assert shown_values(outcome) == dict.fromkeys(shown_values(outcome), [shown])


def test_the_cli_shows_a_refused_key_as_the_file_wrote_it(tmp_path, database_url):
    from faceit_etl_tests.test_cli import faceit_etl as cli

    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    data = tmp_path / "keyed.json"
    data.write_text('{"users": {"007": {"user_id": 7, "language": "en"}, "8": {"user_id": 8}}}', encoding="utf-8")

    done = cli(tmp_path, database_url, "validate", str(data))

    assert done.returncode == 2, done.stdout + done.stderr
    [row] = done.stdout.split("## Rejects")[1].strip().splitlines()[2:3]
    assert row.split(" | ")[:4] == ["| 1", "", "user_id", '"007"']
