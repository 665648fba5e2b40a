"""Repeated names in JSON objects: no entry is lost to a parser keeping the last value, whether
the file is read whole or in pieces."""

from __future__ import annotations

import json
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from faceit_etl.source import SourceError, parse_source, read_source
from faceit_etl.source.repeats import RefusedEntry, Repeated, refuse_repeats
from faceit_etl.validation import validate_entries
from faceit_etl_tests.conftest import examples

WHOLE, IN_PIECES = 1 << 30, 300  # piece sizes: the file read whole, or cut into many pieces
READS = pytest.mark.parametrize("piece_bytes", [WHOLE, IN_PIECES], ids=["whole", "pieces"])


def entry_text(user_id: int) -> str:
    return json.dumps({"user_id": user_id, "faceit_nickname": f"player {user_id}", "language": "en"})


def users_list(ids) -> str:
    return "[\n" + ",\n".join("  " + entry_text(i) for i in ids) + "\n]"


def read(tmp_path, text: str, piece_bytes: int):
    path = tmp_path / "data.json"
    path.write_text(text, encoding="utf-8")
    source = read_source(path, piece_bytes=piece_bytes)
    assert (source.pieces is not None) == (piece_bytes == IN_PIECES and len(text) > IN_PIECES)
    return source, validate_entries(source)


@READS
@pytest.mark.parametrize(
    "second, name, line, column",
    [
        ('"users": []', "users", 23, 3),  # an empty second list hides the whole first one
        ('"users": ' + users_list(range(100, 120)), "users", 23, 3),
        ('"analytics": {}, "users": [{"user_id": 5}]', "users", 23, 20),
        ('"analytics": {"total_users": 0}, "analytics": {}', "analytics", 23, 36),
    ],
    ids=["empty users again", "users again", "users after analytics", "analytics twice"],
)
def test_a_repeated_top_level_key_refuses_the_file_naming_key_and_place(
    tmp_path, piece_bytes, second, name, line, column
):
    text = '{"users": ' + users_list(range(1, 21)) + ",\n  " + second + "\n}\n"
    path = tmp_path / "data.json"
    path.write_text(text, encoding="utf-8")

    with pytest.raises(SourceError) as caught:
        read_source(path, piece_bytes=piece_bytes)

    assert str(caught.value) == (
        f"{path}: the top-level key {json.dumps(name)} appears more than once (again at line {line}, column "
        f"{column}): which one is meant is ambiguous, so nothing is read"
    )


@READS
def test_an_entry_with_a_repeated_key_is_rejected_and_its_raw_keeps_both_values(tmp_path, piece_bytes):
    entries = [entry_text(i) for i in range(1, 31)]
    entries[4] = '{"user_id": 5, "faceit_nickname": "first", "faceit_nickname": "second"}'
    entries[17] = (
        '{"user_id": 18, "subscription": {"tier": "pro", "referral_code": "A1B2C3D4", "tier": "free"}}'
    )
    entries[25] = '{"user_id": 26, "note": {"why": "x: y", "deep": [{"a": 1, "a": 1}]}}'
    source, outcome = read(tmp_path, '{"users": [\n' + ",\n".join(entries) + "\n]}", piece_bytes)

    assert outcome.input_count == 30
    assert sorted(outcome.valid["user_id"]) == [i for i in range(1, 31) if i not in (5, 18, 26)]
    rejects = outcome.reject_records()
    assert [(r["source_index"], r["field"], r["reason"]) for r in rejects] == [
        (4, "(entry)", 'key "faceit_nickname" appears more than once in the entry: which value is meant is ambiguous'),
        (17, "(entry)", 'key "tier" appears more than once in subscription: which value is meant is ambiguous'),
        (25, "(entry)", 'key "a" appears more than once in note.deep[0]: which value is meant is ambiguous'),
    ]
    assert json.loads(rejects[0]["raw"]) == '{"user_id": 5, "faceit_nickname": "first", "faceit_nickname": "second"}'
    assert json.loads(rejects[1]["raw"]) == (
        '{"user_id": 18, "subscription": {"tier": "pro", "referral_code": "A1B2C3D4", "tier": "free"}}'
    )


@READS
def test_a_repeated_id_in_the_keyed_layout_loads_the_last_entry_as_the_bot_reads_it(tmp_path, piece_bytes):
    """The bot reads this layout with Python's json, which keeps the last of a repeated key's values."""
    pad = "x" * 60  # long enough to be cut into pieces
    text = (
        f'{{"users": {{"7": {{"faceit_nickname": "first", "note": "{pad}"}}, "8": {{"faceit_nickname": "other"}}, '
        f'"7": {{"faceit_nickname": "second", "note": "{pad}"}}, "7": {{"user_id": 7, "faceit_nickname": "third"}}}}}}'
    )
    source, outcome = read(tmp_path, text, piece_bytes)

    assert outcome.valid[["user_id", "faceit_nickname"]].values.tolist() == [[8, "other"], [7, "third"]]
    assert [(r["source_index"], r["user_id"], r["field"], r["reason"]) for r in outcome.reject_records()] == [
        (0, 7, "(entry)", 'key "7" repeated: the bot reads the last one, entry 4'),
        (2, 7, "(entry)", 'key "7" repeated: the bot reads the last one, entry 4'),
    ]
    assert json.loads(outcome.reject_records()[1]["raw"]) == {"faceit_nickname": "second", "note": pad}
    assert json.loads(text)["users"]["7"]["faceit_nickname"] == "third"  # what the bot reads


def test_an_integer_beyond_pythons_digit_limit_rejects_its_entry_not_the_file(tmp_path):
    digits = "7" * 5000
    text = '{"users": [{"user_id": 1}, {"user_id": ' + digits + '}, {"user_id": 3}]}'
    source, outcome = read(tmp_path, text, WHOLE)

    assert outcome.valid["user_id"].tolist() == [1, 3]
    (reject,) = outcome.reject_records()
    assert (reject["source_index"], reject["field"]) == (1, "user_id")
    assert reject["reason"] == "77777777777777777777... (5000 digits) does not fit a 64-bit integer"
    assert reject["raw"] == '{"user_id": ' + digits + "}"


# Strings that trouble a byte-level count of pairs: colons, escaped quotes and backslashes, and a
# colon spelled as an escape.
TRICKY_TEXT = st.sampled_from(['a:b', 'q\\":', '\\\\', '\\":\\"', '\\u003a', '\\u003A:', 'plain', ''])
KEYS = st.sampled_from(["user_id", "faceit_nickname", "language", "subscription", "x:y", 'k\\"', "tier"])


@st.composite
def written_entry(draw, user_id: int):
    """An entry's JSON text and whether it repeats a key somewhere."""
    pairs = [f'"user_id": {user_id}']
    names = draw(st.lists(KEYS.filter(lambda k: k != "user_id"), max_size=4))
    for name in names:
        value = draw(st.one_of(TRICKY_TEXT.map(lambda t: f'"{t}"'), st.just("{}"), st.just('{"tier": "pro"}')))
        pairs.append(f'"{name}" : {value}' if draw(st.booleans()) else f'"{name}":{value}')
    inner_repeat = draw(st.booleans()) and draw(st.booleans())
    if inner_repeat:
        pairs.append('"subscription_note": {"tier": "pro", "tier": "free"}')
    repeats = inner_repeat or len(set(names)) < len(names)
    return "{" + ", ".join(pairs) + "}", repeats


@st.composite
def files(draw):
    count = draw(st.integers(1, 12))
    written = [draw(written_entry(i + 1)) for i in range(count)]
    return written


@settings(max_examples=examples(60), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(written=files(), piece_bytes=st.sampled_from([WHOLE, 40, 120]))
def test_every_entry_that_repeats_a_key_is_rejected_and_every_other_is_judged(tmp_path, written, piece_bytes):
    text = '{"users": [' + ",\n".join(t for t, _ in written) + '], "analytics": {"a:b": "c:d"}}'
    path = tmp_path / "data.json"
    path.write_text(text, encoding="utf-8")

    outcome = validate_entries(read_source(path, piece_bytes=piece_bytes))

    repeating = {i for i, (_, repeats) in enumerate(written) if repeats}
    refused = {r["source_index"] for r in outcome.reject_records() if r["field"] == "(entry)"}
    assert refused == repeating
    assert set(outcome.valid.index) | {r["source_index"] for r in outcome.reject_records()} == set(range(len(written)))
    assert not set(outcome.valid.index) & refused
    for record in outcome.reject_records():
        if record["source_index"] in repeating:  # the entry's own text, every pair kept
            as_written = written[record["source_index"]][0]
            assert pairs(json.loads(record["raw"])) == pairs(as_written)


def pairs(text: str):
    return json.loads(text, object_pairs_hook=lambda items: items)


def test_repeats_are_found_when_the_standard_parser_reads_the_file(tmp_path):
    # 19 digits in a row send the file to the standard parser (exact big integers): same promises
    text = (
        '{"users": [{"user_id": 1, "language": "en", "language": "ru"}, {"user_id": 18446744073709551616},'
        ' {"user_id": 3}]}'
    )
    source, outcome = read(tmp_path, text, WHOLE)
    assert source.lenient_parse
    assert outcome.valid["user_id"].tolist() == [3]
    assert [(r["source_index"], r["field"], r["reason"]) for r in outcome.reject_records()] == [
        (0, "(entry)", 'key "language" appears more than once in the entry: which value is meant is ambiguous'),
        (1, "user_id", "18446744073709551616 does not fit a 64-bit integer"),
    ]
    path = tmp_path / "again.json"
    path.write_text('{"users": [{"user_id": 18446744073709551616}],\n"users": []}', encoding="utf-8")
    again = r'the top-level key "users" appears more than once \(again at line 2, column 1\)'
    with pytest.raises(SourceError, match=again):
        read_source(path)


@READS
def test_a_keyed_entry_given_again_later_that_also_repeats_a_name_is_refused_for_its_key(tmp_path, piece_bytes):
    """The bot reads only the last entry under a key, so an earlier one is refused for that key, even
    when it also repeats a name: its raw and shown value still keep both values, as the file wrote them."""
    pad = "x" * 300  # long enough to be cut into pieces
    text = (
        f'{{"users": {{"7": {{"user_id": 7, "a": 1, "a": 2}}, "8": {{"user_id": 8, "note": "{pad}"}}, '
        '"7": {"user_id": 7, "a": 3}}}'
    )
    source, outcome = read(tmp_path, text, piece_bytes)

    assert outcome.valid["user_id"].tolist() == [8, 7]
    assert [(r["source_index"], r["user_id"], r["reason"], r["value"], r["raw"]) for r in outcome.reject_records()] == [
        (0, 7, 'key "7" repeated: the bot reads the last one, entry 3', '{"user_id": 7, "a": 1, "a": 2}',
         json.dumps('{"user_id": 7, "a": 1, "a": 2}')),
    ]


def test_a_keyed_entry_given_again_later_keeps_a_lone_surrogate_as_escape_text_in_its_raw():
    """Refused for its key, an entry's raw is stored as any reject's is: a lone surrogate written out as
    escape text (jsonb holds no surrogate); its shown value is the escape, as the file wrote it."""
    raw = b'{"users": {"8": {"faceit_nickname": "\\ud800"}, "9": {"user_id": 9}, "8": {"user_id": 8}}}'
    outcome = validate_entries(parse_source(raw, "keyed.json"))

    assert outcome.valid["user_id"].tolist() == [9, 8]
    assert [(r["source_index"], r["user_id"], r["reason"], r["value"], r["raw"]) for r in outcome.reject_records()] == [
        (0, 8, 'key "8" repeated: the bot reads the last one, entry 3', '{"faceit_nickname": "\\ud800"}',
         '{"faceit_nickname": "\\\\ud800"}'),
    ]


@READS
def test_a_repeated_name_in_an_entry_that_is_a_list_is_placed_by_its_index(tmp_path, piece_bytes):
    pad = "x" * 300
    text = f'{{"users": [{{"user_id": 1, "note": "{pad}"}}, [{{"a": 1, "a": 2}}], {{"user_id": 3}}]}}'
    source, outcome = read(tmp_path, text, piece_bytes)

    assert outcome.valid["user_id"].tolist() == [1, 3]
    assert [(r["source_index"], r["user_id"], r["reason"], r["raw"]) for r in outcome.reject_records()] == [
        (1, None, 'key "a" appears more than once in [0]: which value is meant is ambiguous',
         json.dumps('[{"a": 1, "a": 2}]')),
    ]


def test_an_entry_too_deep_to_check_for_repeated_names_is_refused_with_a_placeholder_for_its_json():
    """Only a file that repeats a name somewhere is walked; an entry nested beyond Python's recursion
    limit cannot be walked or written back, so it is refused, its raw and text saying why."""
    deep: object = Repeated([("a", 1), ("a", 2)])
    for _ in range(sys.getrecursionlimit() + 100):
        deep = [deep]
    placeholder = '"<entry nested too deeply>"'
    assert refuse_repeats([{"user_id": 1}, deep]) == [
        {"user_id": 1}, RefusedEntry("nested too deeply to check for repeated keys", placeholder, placeholder)
    ]
