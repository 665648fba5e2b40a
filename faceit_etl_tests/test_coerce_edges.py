"""Coercion at its edges: how a reject quotes a value, where exact whole numbers end, and why an
impossible date is refused — each value keeps its meaning or is refused saying why."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from faceit_etl.validation.coerce import (
    coerce_flags, coerce_integers, coerce_text, coerce_tiers, coerce_timestamps, describe_value,
)


def test_a_reject_quotes_a_short_value_whole_and_cuts_a_long_one_to_60_characters():
    fits, too_long = "x" * 58, "y" * 59  # quoted, they are 60 and 61 characters
    _, errors = coerce_integers([fits, too_long])
    assert errors == {
        0: f'expected a whole number, got "{fits}"',
        1: f'expected a whole number, got "{"y" * 56}...',
    }


@given(st.text(st.characters(exclude_categories=["Cs"]), max_size=200) | st.integers() | st.floats())
def test_a_quoted_value_is_its_json_text_or_the_start_of_it_never_longer_than_60_characters(value):
    shown, text = describe_value(value), json.dumps(value, ensure_ascii=False)
    assert len(shown) <= 60
    assert shown == text if len(text) <= 60 else shown == text[:57] + "..."


@pytest.mark.parametrize(("coerce", "written", "reason"), [
    (coerce_flags, '"true"', 'expected true or false, got "true"'),
    (coerce_flags, '"false"', 'expected true or false, got "false"'),
    (coerce_flags, '"null"', 'expected true or false, got "null"'),
    (coerce_flags, "1", "expected true or false, got 1"),
    (coerce_integers, '"1.5"', 'expected a whole number, got "1.5"'),
    (coerce_integers, '"true"', 'expected a whole number, got "true"'),
    (coerce_integers, "true", "expected a whole number, got true"),
    (coerce_text, "5", "expected text, got 5"),
    (coerce_text, "false", "expected text, got false"),
    (coerce_tiers, '"it\'s"', 'unknown tier "it\'s", expected one of free, premium, pro'),
    (coerce_tiers, '"a\\"b"', 'unknown tier "a\\"b", expected one of free, premium, pro'),
])
def test_a_reason_quotes_a_string_as_json_does_so_it_never_reads_as_a_literal_or_number(coerce, written, reason):
    """`"notifications_enabled": "true"` was refused with `expected true or false, got 'true'`: Python's quotes,
    which read as the literal the reason asks for. As JSON writes it, a string keeps its double quotes."""
    _, errors = coerce([json.loads(written)])
    assert errors == {0: reason}


def test_json_literals_and_containers_are_named_in_json_words():
    assert [describe_value(v) for v in (None, True, False, {}, {"a": 1}, [], [1])] == [
        "null", "true", "false", "an object", "an object", "a list", "a list"
    ]


def test_a_float_is_a_whole_number_only_below_2_to_the_53():
    """2**53 as a float also stands for 2**53 + 1: it is refused, the float just below is exact."""
    values, errors = coerce_integers([2.0**53 - 1, 2.0**53, -(2.0**53)])
    assert values.tolist()[0] == 2**53 - 1
    assert errors == {
        1: "9007199254740992.0 is a decimal number beyond 2**53, where it is no exact whole number",
        2: "-9007199254740992.0 is a decimal number beyond 2**53, where it is no exact whole number",
    }


def test_leading_zeros_do_not_make_a_number_too_big_and_do_not_hide_one():
    values, errors = coerce_integers(["0" * 30 + "7", "0" * 5 + "9223372036854775807", "09223372036854775808"])
    assert values.tolist()[:2] == [7, 2**63 - 1]
    assert errors == {2: '"09223372036854775808" does not fit a 64-bit integer'}


def test_an_impossible_date_is_refused_saying_which_part_is_impossible():
    _, errors = coerce_timestamps(["2025-02-30", "2025-13-01", "2025-02-28T24:00:00", "2025-03-30T02:30:00"],
                                  "Europe/Berlin")
    assert errors == {
        0: 'impossible date "2025-02-30": day is out of range for month',
        1: 'impossible date "2025-13-01": month must be in 1..12',
        2: 'impossible date "2025-02-28T24:00:00": hour must be in 0..23',
        3: '"2025-03-30T02:30:00" is ambiguous or does not exist in Europe/Berlin (DST change)',
    }


def test_a_timestamp_of_a_supported_form_that_names_no_instant_is_refused_quoting_it():
    """Python reads no year and month alone nor an offset of a day or more; it reads an offset of 60
    minutes as one hour, which ISO 8601 does not: each is refused, the reason quoting the file's text and
    naming the offset when it is the offset that is impossible: the largest possible offset is not blamed
    for an impossible date. A date's own "-DD" is no offset."""
    _, errors = coerce_timestamps(["2025-13", "2025-01-01T10:00+24:00", "2025-01-01T10:00+00:60",
                                   "2025-01-01 10:00:00-0560", "2025-01-32", "2025-01-01T10:00-23:59",
                                   "2025-02-30T10:00+23:59"], "Europe/Berlin")
    offset = "its hours must be in 0..23 and its minutes in 0..59"
    assert errors == {
        0: 'unparseable timestamp "2025-13"',
        1: f'impossible UTC offset in "2025-01-01T10:00+24:00": {offset}',
        2: f'impossible UTC offset in "2025-01-01T10:00+00:60": {offset}',
        3: f'impossible UTC offset in "2025-01-01 10:00:00-0560": {offset}',
        4: 'impossible date "2025-01-32": day is out of range for month',
        6: 'impossible date "2025-02-30T10:00+23:59": day is out of range for month',
    }


def test_both_64_bit_bounds_are_accepted_next_to_a_value_that_is_not_an_integer():
    """A column holding any non-integer is judged value by value: the bounds still hold there."""
    values, errors = coerce_integers([-(2**63), 2**63 - 1, "x", "123456789012345678901", -(2**63) - 1])
    assert values.tolist()[:2] == [-(2**63), 2**63 - 1]
    assert errors == {
        2: 'expected a whole number, got "x"',
        3: '"123456789012345678901" does not fit a 64-bit integer',
        4: "-9223372036854775809 does not fit a 64-bit integer",
    }


def _built(build, values):
    try:
        return build(values)
    except Exception as exc:  # an unpaired surrogate is no UTF-8: both ways refuse it alike
        return type(exc)


@given(st.lists(st.none() | st.text() | st.sampled_from(["\ud800", "a\x00b", "", "ß-Ünïcødé"])))
def test_text_built_by_arrow_is_what_pandas_builds_value_for_value(values):
    """Text columns are built by Arrow in one pass: the column is the one pandas' own constructor
    builds, dtype and missing values too, and a string no UTF-8 can hold is refused alike."""
    import pandas as pd

    from faceit_etl.validation.coerce import text_series

    ours, theirs = _built(text_series, values), _built(lambda v: pd.Series(v, dtype="str"), values)
    if isinstance(theirs, pd.Series):
        pd.testing.assert_series_equal(ours, theirs)
    else:
        assert ours is theirs is UnicodeEncodeError


@given(st.lists(st.none() | st.booleans()))
def test_flags_built_by_arrow_are_what_pandas_builds(values):
    import pandas as pd

    from faceit_etl.validation.coerce import flag_series

    pd.testing.assert_series_equal(flag_series(values), pd.Series(pd.array(values, dtype="boolean")))
