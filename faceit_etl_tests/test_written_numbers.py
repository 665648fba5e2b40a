"""A number with a point or an exponent is judged on the decimal the file writes, and every reject
quotes it as written: its nearest binary float can be another value (253402300799.999999 is
9999-12-31T23:59:59.999999 in epoch seconds; its float, 253402300800.0, a moment of year 10000)."""

from __future__ import annotations

import copy
import json
import pickle
import re
from decimal import Decimal

import orjson
import pandas as pd
import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from faceit_etl.postgres.load import load
from faceit_etl.source import parse_source, read_source
from faceit_etl.source.numbers import may_hold_decimal_number
from faceit_etl.source.repeats import loads_exact, written
from faceit_etl.validation import validate_entries
from faceit_etl_tests.conftest import FLAT_SAMPLE, NESTED_SAMPLE, examples
from faceit_etl_tests.test_load import SCHEMA, chain, conn  # noqa: F401  (fixture)

OUT_OF_RANGE = " are out of range: only seconds from year 1 to 9999 are read (milliseconds would land beyond it)"
TOO_PRECISE = " have more precision than the column holds (microseconds): rounding would change the value"
EPOCH = pd.Timestamp("1970-01-01", tz="UTC")


def judged(entries_text: str):
    return validate_entries(parse_source(('{"users": [' + entries_text + "]}").encode(), "data.json"))


def rows(outcome) -> list[tuple]:
    return [tuple(r) for r in outcome.rejects[["source_index", "field", "reason", "raw"]].values.tolist()]


@pytest.mark.parametrize(("text", "instant"), [
    ("253402300799.999999", "9999-12-31T23:59:59.999999Z"),  # its float is 253402300800.0
    ("253402300799.99999", "9999-12-31T23:59:59.999990Z"),  # its float rounds to .999985
    ("2.53402300799999999e11", "9999-12-31T23:59:59.999999Z"),
    ("253402300799.9999990000", "9999-12-31T23:59:59.999999Z"),
    ("-62135596800.000000", "0001-01-01T00:00:00Z"),
    ("1755370334.438485", "2025-08-16T18:52:14.438485Z"),
    ("-0.000001", "1969-12-31T23:59:59.999999Z"),
])
def test_epoch_seconds_in_range_by_their_decimal_text_are_that_instant(text, instant):
    outcome = judged(f'{{"user_id": 1, "created_at": {text}}}')
    assert rows(outcome) == []
    assert outcome.valid["created_at"].tolist() == [pd.Timestamp(instant)]


@pytest.mark.parametrize(("text", "reason"), [
    ("253402300800.000000", OUT_OF_RANGE),
    ("253402300799.9999999", OUT_OF_RANGE),  # after the last microsecond of 9999
    ("253402300799.9999989", TOO_PRECISE),  # its float is 253402300800.0 too: the text says why
    ("-62135596800.000001", OUT_OF_RANGE),
    ("1755370334.4384851", TOO_PRECISE),
    ("1e-7", TOO_PRECISE),
    ("1E400", OUT_OF_RANGE),  # beyond any float: read as infinity
])
def test_epoch_seconds_outside_range_or_precision_are_rejected_quoting_the_files_text(text, reason):
    entry = f'{{"user_id": 1, "created_at": {text}}}'
    assert rows(judged(entry)) == [(0, "created_at", f"epoch seconds {text}{reason}", f'{{"user_id": 1, "created_at": {text}}}')]


def test_a_float_whole_only_after_rounding_is_no_whole_number():
    outcome = judged('{"user_id": 1, "total_requests": 5.00000000000000000001}, {"user_id": 2, "total_requests": 5.0},'
                     '{"user_id": 3.0, "total_requests": 50e-1}, {"user_id": 9007199254740993.0}')
    assert outcome.valid[["user_id", "total_requests"]].values.tolist() == [[2, 5], [3, 5]]
    assert rows(outcome) == [
        (0, "total_requests", "expected a whole number, got 5.00000000000000000001",
         '{"user_id": 1, "total_requests": 5.00000000000000000001}'),
        (3, "user_id", "9007199254740993.0 is a decimal number beyond 2**53, where it is no exact whole number",
         '{"user_id": 9007199254740993.0}'),
    ]


def test_every_reject_quotes_a_number_as_the_file_writes_it():
    outcome = judged('{"user_id": 1, "language": 1.10}, 1.50, {"user_id": 3, "subscription": {"tier": 1.0E2}},'
                     '{"user_id": 4, "waiting_for_nickname": -0.0}, {"user_id": 5, "extra": [2.50]}, '
                     '{"user_id": 5.00, "language": "en"}')
    assert rows(outcome) == [
        (0, "language", "expected text, got 1.10", '{"user_id": 1, "language": 1.10}'),
        (1, "(entry)", "entry is not an object: got 1.50", "1.50"),
        (2, "tier", "unknown tier 1.0E2, expected one of free, premium, pro",
         '{"user_id": 3, "subscription": {"tier": 1.0E2}}'),
        (3, "waiting_for_nickname", "expected true or false, got -0.0", '{"user_id": 4, "waiting_for_nickname": -0.0}'),
        (5, "user_id", "user_id seen before: the first entry wins, as in the bot", '{"user_id": 5.00, "language": "en"}'),
    ]


def test_a_keyed_user_id_differing_from_its_key_is_quoted_as_written():
    outcome = validate_entries(parse_source(b'{"users": {"7": {"user_id": 8.0}, "9": {"user_id": "10"}}}', "keyed.json"))
    assert outcome.rejects[["source_index", "user_id", "reason"]].values.tolist() == [
        [0, 7, 'user_id 8.0 differs from its key "7"'],
        [1, 9, 'user_id "10" differs from its key "9"'],
    ]


def test_a_file_read_in_pieces_keeps_its_numbers_text(tmp_path):
    entries = ", ".join(
        f'{{"user_id": {n}, "created_at": 253402300799.99999{n % 10}, "total_requests": {n}.000000000000000001}}'
        for n in range(1, 60)
    )
    path = tmp_path / "data.json"
    path.write_bytes(f'{{"users": [{entries}]}}'.encode())

    in_pieces, whole = read_source(path, piece_bytes=600), parse_source(path.read_bytes(), path)

    assert in_pieces.pieces is not None and len(in_pieces.pieces.bounds) > 5
    outcome = validate_entries(in_pieces)
    assert rows(outcome) == rows(validate_entries(whole))
    assert outcome.rejects["reason"].tolist() == [f"expected a whole number, got {n}.000000000000000001" for n in range(1, 60)]
    assert outcome.valid.empty


decimal_texts = st.builds(
    lambda sign, whole, fraction, exponent: f"{sign}{whole}{'.' + fraction if fraction else ''}{exponent}",
    st.sampled_from(["", "-"]),
    st.one_of(st.integers(0, 253402300800), st.sampled_from([253402300799, 62135596800, 62135596801])).map(str),
    st.text("0123456789", max_size=9) | st.sampled_from(["999999", "9999990", "0000001", "000000"]),
    st.sampled_from(["", "", "e0", "E-3", "e+2", "e-6"]),
).filter(lambda text: "." in text or "e" in text.lower())


@settings(deadline=None, max_examples=examples(400))
@given(decimal_texts)
def test_any_epoch_decimal_is_the_exact_instant_it_writes_or_rejected_quoting_it(text):
    seconds = Decimal(text)
    micros = seconds * 1_000_000  # exact: at most 21 significant digits
    outcome = judged(f'{{"user_id": 1, "created_at": {text}}}')
    if Decimal(-62135596800) <= seconds <= Decimal("253402300799.999999") and micros == micros.to_integral_value():
        assert rows(outcome) == []
        assert outcome.valid["created_at"].tolist() == [EPOCH + pd.Timedelta(microseconds=int(micros))]
    else:
        expected = OUT_OF_RANGE if not Decimal(-62135596800) <= seconds <= Decimal("253402300799.999999") else TOO_PRECISE
        assert outcome.rejects["reason"].tolist() == [f"epoch seconds {text}{expected}"]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=8)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4),
    max_leaves=12,
)


def _holds_float(value) -> bool:
    if isinstance(value, float):
        return True
    if isinstance(value, dict):
        return any(map(_holds_float, value.values()))
    return isinstance(value, list) and any(map(_holds_float, value))


@settings(deadline=None, max_examples=examples(300))
@given(json_values, st.sampled_from([0, 2, None]), st.integers(0, 600_000))
def test_a_text_holding_a_number_with_a_point_or_exponent_is_always_seen(value, indent, padding):
    """Never missed, wherever it stands (across the scan's 256 KiB chunks too): a miss would let
    orjson round the number. A false alarm (a number-like string) only costs speed."""
    text = json.dumps([" " * padding, value], indent=indent, ensure_ascii=False).encode()
    if _holds_float(value):
        assert may_hold_decimal_number(text)
    for compact in (orjson.dumps(value), orjson.dumps([value])):
        if _holds_float(value):
            assert may_hold_decimal_number(compact)


@pytest.mark.parametrize("number", [b"1.5", b"12345678901234567.25e-3", b"7" + b"0" * 60 + b".5"])
def test_a_number_across_the_scans_chunk_boundary_is_seen(number):
    """Wherever the point, the digit before it or the number's end falls against the 256 KiB chunks."""
    chunk = 1 << 18
    for at in range(chunk - len(number) - 3, chunk + 3):
        head = b'["' + b"x" * (at - number.index(b".") - 5) + b'", '
        text = head + number + b"]"
        assert text.index(b".", len(head)) == at
        assert may_hold_decimal_number(text), at


def test_each_written_form_holds_in_names_and_inside_lists_and_the_objects_in_them():
    """The form asked for reaches every name and every value of a list: a reject shows the file's
    escapes (`file`), its raw entry spells a lone surrogate out (`stored`), and jsonb gets what it can
    hold (`jsonb`: no U+0000, in a name either)."""
    entry = parse_source(rb'[{"k\ud800": ["c\ud800", "n\u0000l", 1e-20000, {"b\u0000": ["d\udc00"]}]}]', "x.json").entries[0]
    assert written(entry) == r'{"k\ud800": ["c\ud800", "n\u0000l", 1e-20000, {"b\u0000": ["d\udc00"]}]}'
    assert written(entry, form="stored") == r'{"k\\ud800": ["c\\ud800", "n\u0000l", 1e-20000, {"b\u0000": ["d\\udc00"]}]}'
    assert written(entry, form="jsonb") == r'{"k\\ud800": ["c\\ud800", "n\\u0000l", "1e-20000", {"b\\u0000": ["d\\udc00"]}]}'


def test_a_number_after_a_chunk_whose_marks_are_no_numbers_is_seen():
    """A chunk whose points all belong to number-like text in strings settles nothing: the chunks after
    it are still scanned."""
    text = b'["v1.5x", "' + b"a" * (1 << 18) + b'", 2.5]'
    assert may_hold_decimal_number(text) is True
    assert may_hold_decimal_number(text.replace(b"2.5", b"25")) is False


def _may_end_as_a_value(text: bytes) -> bool:
    """The scan's rule, read byte by byte: a point or exponent after a digit whose number, looked at over
    the next 40 bytes, ends in whitespace, `,`, `]` or `}`, or is not seen to end (longer, or at the file's end)."""
    for mark in re.finditer(rb"(?<=[0-9])[.eE]", text):
        rest = re.match(rb"[0-9+\-.eE]*", text[mark.end() : mark.end() + 40]).group()
        if len(rest) == 40 or mark.end() + len(rest) == len(text) or text[mark.end() + len(rest)] in b" \t\r\n,]}":
            return True
    return False


@pytest.mark.parametrize("at", [100, (1 << 18) - 1, 1 << 18, (1 << 18) + 1, (1 << 18) + 2])
def test_the_scan_warns_exactly_where_a_number_may_end_as_a_value_next_to_its_chunks_edges(at):
    """No false alarm beyond the documented kind, wherever the point falls against the 256 KiB chunks:
    only a digit before a point or exponent counts (not `:`, `d` or `D`), and a run of 38 to 41 number
    bytes after it is looked at to its end. A false alarm sends a file to the slow parser."""
    middle = at == 100  # what counts as a mark is tried there; the edges try the runs
    for before in (b"1", b":", b"/") if middle else (b"1",):
        for mark in (b".", b"e", b"E", b"d", b"D") if middle else (b".", b"e"):
            for run in (0, 1, 9, 10, 11, 38, 39, 40, 41):
                for end in (b" ", b"x", b'"', b""):
                    number = before + mark + b"5" * run + end + (b"a" * 50 if end else b"")
                    expected = _may_end_as_a_value(number)  # the filler before it holds no digit
                    text = b"a" * (at - 1) + number
                    assert may_hold_decimal_number(text) == expected, (at, before, mark, run, end, expected)


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_a_number_keeps_its_text_when_pickled_or_copied(protocol):
    entries = parse_source(b'[{"created_at": 253402300799.999999}]', "data.json").entries
    for again in (pickle.loads(pickle.dumps(entries, protocol=protocol)), copy.deepcopy(entries)):
        number = again[0]["created_at"]
        assert (repr(number), float(number), isinstance(number, float)) == ("253402300799.999999", 253402300800.0, True)


def test_the_bots_own_files_keep_the_fast_parse():
    for sample in (FLAT_SAMPLE, NESTED_SAMPLE):
        assert not may_hold_decimal_number(sample.read_bytes())
        assert not read_source(sample).lenient_parse


def test_rejects_keep_each_numbers_text_in_the_database_and_one_jsonb_cannot_hold_as_a_string(db, conn):
    """jsonb's numeric holds 253402300799.999999 and 1E400 as written; 1e-20000 (beyond its 16383
    digits after the point) would fail the whole load, so that number is kept as a string of its text."""
    raw = (b'{"users": [{"user_id": 1, "created_at": 253402300800.000001, "extra": 1E400},'
           b' {"user_id": 2, "created_at": 1e-20000}, {"user_id": 3, "total_requests": 2.50}]}')
    mapped, rejects = chain(raw)
    load(conn, SCHEMA, mapped, rejects, "run-1")

    stored = db.execute(
        "SELECT source_index, reason, raw::text FROM migration_rejects ORDER BY source_index"
    ).fetchall()
    assert stored == [
        (0, f"epoch seconds 253402300800.000001{OUT_OF_RANGE}",
         '{"extra": 1' + "0" * 400 + ', "user_id": 1, "created_at": 253402300800.000001}'),
        (1, f"epoch seconds 1e-20000{TOO_PRECISE}", '{"user_id": 2, "created_at": "1e-20000"}'),
        (2, "expected a whole number, got 2.50", '{"user_id": 3, "total_requests": 2.50}'),
    ]


# jsonb's numeric: at most 131072 digits before the point and 16383 after it.
JSONB_EDGES = [("1E131071", True), ("1E131072", False), ("1E-16383", True), ("1E-16384", False),
               ("0." + "7" * 16383, True), ("0." + "7" * 16384, False), ("-" + "9" * 131072, True)]


@pytest.mark.parametrize("number, held", JSONB_EDGES, ids=[f"{n[:10]}-{len(n)}-chars" for n, _ in JSONB_EDGES])
def test_a_number_at_jsonbs_limits_stays_a_number_and_one_past_them_becomes_its_text(number, held):
    value = loads_exact('{"n": ' + number + "}")[0]["n"]
    assert written(value, form="jsonb") == (number if held else json.dumps(number))
    assert written(value, form="stored") == number


@pytest.mark.parametrize("number, held", JSONB_EDGES, ids=[f"{n[:10]}-{len(n)}-chars" for n, _ in JSONB_EDGES])
def test_postgresql_holds_a_number_up_to_the_limits_the_jsonb_form_keeps(db, number, held):
    """The limits are PostgreSQL's: a number inside them is a jsonb number, one past them fails."""
    value = loads_exact('{"n": ' + number + "}")[0]["n"]
    assert db.execute("SELECT jsonb_typeof(%s::jsonb)", [written(value, form="jsonb")]).fetchone()[0] == (
        "number" if held else "string")
    if not held:
        with pytest.raises(psycopg.errors.NumericValueOutOfRange):
            db.execute("SELECT %s::jsonb", [number])
