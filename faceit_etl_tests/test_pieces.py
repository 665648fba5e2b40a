"""A big file read in pieces gives exactly what a whole parse gives: the same entries, the same
validation outcome, or the same error. Pieces are forced small here so small files are cut often."""

from __future__ import annotations

import json
import os
import tracemalloc

import orjson
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from faceit_etl.generate import generate_users
from faceit_etl.source import SourceError, parse_source, read_source
from faceit_etl.validation import validate_entries
from faceit_etl_tests.conftest import examples

SMALL = 600  # bytes per piece: several entries per cut at most


def entries_in_batches(source, size: int = 7) -> list:
    """The entries of every batch, each batch checked to start at its first entry's number in the file."""
    return keyed_in_batches(source, size)[0]


def whole(path) -> list:
    return parse_source(path.read_bytes(), path).entries


def dumped(document, style: str) -> bytes:
    if style == "compact":
        return orjson.dumps(document)
    if style == "indent 2":
        return orjson.dumps(document, option=orjson.OPT_INDENT_2)
    return json.dumps(document, indent=4, ensure_ascii=False).encode()


@pytest.mark.parametrize("style", ["compact", "indent 2", "indent 4"])
@pytest.mark.parametrize("shape", ["users list", "bare list"])
def test_generated_files_read_in_pieces_give_the_whole_parses_entries(tmp_path, style, shape):
    users = generate_users(300, seed=11)
    document = users if shape == "bare list" else {"users": users, "analytics": {"total_users": 300}}
    path = tmp_path / "data.json"
    path.write_bytes(dumped(document, style))

    source = read_source(path, piece_bytes=SMALL)

    assert source.pieces is not None and len(source.pieces.bounds) > 50
    assert (source.layout, source.entry_count, source.entries) == (shape, 300, [])
    assert source.ignored_top_level_keys == ([] if shape == "bare list" else ["analytics"])
    assert entries_in_batches(source) == users


def test_cuts_that_a_string_or_an_inner_list_fakes_are_moved_on(tmp_path):
    tricky = [
        {"user_id": 1, "faceit_nickname": "}, {"},
        {"user_id": 2, "extra": [{"a": 1}, {"b": "}, {"}, {"c": [{}, {}]}]},
        "not an object, }, {",
        None,
    ] * 100
    path = tmp_path / "data.json"
    path.write_bytes(orjson.dumps({"users": tricky, "users_backup": [{"a": 1}, {"b": 2}]}))

    source = read_source(path, piece_bytes=SMALL)

    assert source.pieces is not None
    assert entries_in_batches(source) == tricky
    assert source.ignored_top_level_keys == ["users_backup"]


@pytest.mark.parametrize(
    "raw",
    [
        b'{"users": [' + b'{"user_id": 1}, ' * 100 + b'{"user_id": 2}], "users": []}',  # the last key wins
        b'[' + b'{"user_id": 1}, ' * 100 + b'{"user_id": 2}] trailing',
        b'{"users": [' + b'{"user_id": 1}, ' * 100 + b'{"user_id": NaN}]}',
        b'{"users": [' + b'{"user_id": 1}, ' * 100 + b'{"user_id": 2}',  # truncated
        b'{"analytics": {}, "users": [' + b'{"user_id": 1}, ' * 100 + b'{"user_id": 2}]}',
        b'{"users": [' + b'{"user_id": 1}, ' * 100 + b'{"user_id": 18446744073709551616}]}',
    ],
    ids=["second users key", "trailing text", "NaN", "truncated", "users not first", "big integer"],
)
def test_files_pieces_cannot_read_exactly_are_read_whole(tmp_path, raw):
    path = tmp_path / "data.json"
    path.write_bytes(raw)
    try:
        expected = parse_source(raw, path)
    except SourceError as error:
        with pytest.raises(SourceError) as caught:
            read_source(path, piece_bytes=64)
        assert str(caught.value) == str(error)
        return
    source = read_source(path, piece_bytes=64)
    assert source.pieces is None
    assert (source.entries, source.id_keys, source.layout) == (expected.entries, expected.id_keys, expected.layout)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(alphabet=st.sampled_from('ab{}[],:" \\\n\u00e9')),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=3), children, max_size=4),
    max_leaves=12,
)


@settings(max_examples=examples(150), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(entries=st.lists(JSON, max_size=40), style=st.sampled_from(["compact", "indent 2", "indent 4"]),
       piece_bytes=st.integers(1, 200))
def test_any_list_of_json_values_reads_the_same_in_pieces(tmp_path, entries, style, piece_bytes):
    path = tmp_path / "data.json"
    path.write_bytes(dumped({"users": entries, "analytics": {"x": [{"a": 1}, {"b": 2}]}}, style))

    source = read_source(path, piece_bytes=piece_bytes)

    assert entries_in_batches(source, size=3) == whole(path)
    assert source.entry_count == len(entries)


def keyed_text(pairs: list[tuple[str, object]], style: str) -> bytes:
    """`{"users": {key: entry, ...}}` written pair by pair, so a key may be given twice."""
    indent = None if style == "compact" else int(style[-1])
    items = [json.dumps(key) + ": " + json.dumps(entry, indent=indent, ensure_ascii=False) for key, entry in pairs]
    separator = "," if style == "compact" else ",\n  "
    return ('{"users": {' + separator.join(items) + '}, "analytics": {"x": [{"a": 1}]}}').encode()


def keyed_in_batches(source, size: int = 3) -> tuple[list, list | None]:
    entries, keys = [], []
    for offset, batch, batch_keys in source.batches(size):
        assert offset == len(entries)
        entries.extend(batch)
        keys = None if batch_keys is None else keys + batch_keys
    return entries, keys


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pairs=st.lists(st.tuples(st.sampled_from(["1", "2", "3", "}, \"4\": {", "ü"]), JSON), max_size=40),
       style=st.sampled_from(["compact", "indent 2", "indent 4"]), piece_bytes=st.integers(1, 200))
def test_any_users_keyed_by_id_read_the_same_in_pieces(tmp_path, pairs, style, piece_bytes):
    """The `{"users": {"<id>": {...}}}` layout is read in pieces too: the same entries under the same
    keys as a whole parse, an id given twice refusing each entry but its last, a repeat inside an entry
    refusing that entry."""
    path = tmp_path / "data.json"
    path.write_bytes(keyed_text(pairs, style))
    expected = whole_source(path)

    source = read_source(path, piece_bytes=piece_bytes)

    assert keyed_in_batches(source) == (expected.entries, expected.id_keys)
    assert (source.layout, source.entry_count) == ("users keyed by id", len(pairs))


def test_a_big_keyed_file_is_read_in_pieces_and_judged_as_a_whole_parse_judges_it(tmp_path):
    users = generate_users(300, seed=9)
    pairs = [(str(user["user_id"]), user) for user in users]
    pairs[200] = (pairs[10][0], {**users[200], "user_id": users[10]["user_id"]})  # an id given twice: 200 is read
    del pairs[150][1]["user_id"]  # filled from its key
    path = tmp_path / "data.json"
    path.write_bytes(keyed_text(pairs, "indent 2"))

    source = read_source(path, piece_bytes=SMALL)
    batched = validate_entries(source, batch_size=40)
    whole_file = validate_entries(whole_source(path))

    assert source.pieces is not None and len(source.pieces.bounds) > 50 and source.entries == []
    pd.testing.assert_frame_equal(batched.valid, whole_file.valid)
    pd.testing.assert_frame_equal(batched.rejects, whole_file.rejects)
    assert list(batched.rejects["source_index"]) == [10]


def whole_source(path):
    return parse_source(path.read_bytes(), path)


def test_validation_in_batches_equals_validation_of_the_whole_file(tmp_path):
    """Repeats across batches (a user_id, a referral code) are rejected as within one batch."""
    users = generate_users(400, seed=5)
    users[350]["user_id"] = users[10]["user_id"]
    users[390]["subscription"]["referral_code"] = "TAKEN123"
    users[20]["subscription"]["referral_code"] = "TAKEN123"
    users[200]["language"] = 7
    users[201] = "not a user"
    path = tmp_path / "data.json"
    path.write_bytes(dumped({"users": users}, "indent 2"))
    source = read_source(path, piece_bytes=SMALL)
    assert source.pieces is not None

    batched = validate_entries(source, batch_size=50)
    whole_file = validate_entries(parse_source(path.read_bytes(), path))

    pd.testing.assert_frame_equal(batched.valid, whole_file.valid)
    pd.testing.assert_frame_equal(batched.rejects, whole_file.rejects)
    assert set(batched.rejects["source_index"]) == {350, 390, 200, 201}
    assert (batched.input_count, batched.ignored_fields) == (whole_file.input_count, whole_file.ignored_fields)


@pytest.mark.parametrize("layout", [[], {}], ids=["users list", "users keyed by id"])
def test_a_big_file_without_users_is_judged_as_a_whole_parse_judges_it(tmp_path, layout):
    """Its size may lie beside the list: validation still gets one batch, empty, and finds nothing."""
    path = tmp_path / "data.json"
    path.write_bytes(dumped({"users": layout, "analytics": {"notes": ["a note"] * 500}}, "indent 2"))
    source = read_source(path, piece_bytes=SMALL)
    assert source.pieces is not None and source.entry_count == 0

    batched = validate_entries(source, batch_size=50)
    whole_file = validate_entries(whole_source(path))

    pd.testing.assert_frame_equal(batched.valid, whole_file.valid)
    pd.testing.assert_frame_equal(batched.rejects, whole_file.rejects)
    assert (len(batched.valid), len(batched.rejects), batched.input_count) == (0, 0, 0)
    assert (batched.ignored_fields, batched.rejected_count) == ({}, 0)


@pytest.mark.parametrize("kept_copy", [False, True], ids=["the bot's file", "a kept backup copy"])
def test_a_file_changed_after_it_was_read_is_not_misread(tmp_path, kept_copy):
    path = tmp_path / "data.json"
    path.write_bytes(dumped({"users": generate_users(50, seed=1)}, "compact"))
    source = read_source(path, piece_bytes=SMALL, kept_copy=kept_copy)
    path.write_bytes(path.read_bytes().replace(b'"language"', b'"langauge"'))
    os.utime(path, ns=(0, 1))

    with pytest.raises(SourceError, match="changed since it was first read"):
        entries_in_batches(source)


def test_a_kept_copy_read_while_other_runs_link_to_it_and_prune_their_links_reads_whole(tmp_path, monkeypatch):
    """Runs of the same bytes link one backup copy; each link made or pruned moves the copy's change
    time, never its bytes. Two migrations of one file at once failed 'changed while it was read'."""
    from faceit_etl.source import reader

    copy = tmp_path / "run-a" / "data.json"
    copy.parent.mkdir()
    copy.write_bytes(dumped({"users": generate_users(60, seed=2)}, "indent 2"))
    found = reader.find_pieces

    def linked_meanwhile(raw, piece_bytes, begin):
        pieces = found(raw, piece_bytes, begin)
        os.link(copy, tmp_path / "run-b.json")
        return pieces

    monkeypatch.setattr(reader, "find_pieces", linked_meanwhile)
    source = read_source(copy, name="data.json", piece_bytes=SMALL, kept_copy=True)
    os.link(copy, tmp_path / "run-c.json")
    (tmp_path / "run-b.json").unlink()

    assert source.pieces is not None
    assert entries_in_batches(source) == whole(copy)


def test_batches_read_each_piece_from_the_file_never_the_whole_file(tmp_path):
    """Memory is bounded by a batch, not by the file: the batches read their pieces from the file one
    at a time, so at no point do the file's bytes all exist in memory."""
    users = generate_users(4000, seed=5)
    path = tmp_path / "data.json"
    path.write_bytes(b"\xef\xbb\xbf" + orjson.dumps({"users": users}, option=orjson.OPT_INDENT_2))
    size = path.stat().st_size
    source = read_source(path, piece_bytes=16 << 10)

    tracemalloc.start()
    try:
        count = 0
        for _, batch, _ in source.batches(100):
            count += len(batch)
            del batch
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert count == 4000 and size > 2 << 20
    assert peak < size / 4, f"peak {peak} bytes while batching a file of {size} bytes"
