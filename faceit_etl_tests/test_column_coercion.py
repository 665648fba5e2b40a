"""Coercions that judge a column at once when its values allow it give what judging each value
alone gives: the plain per-value forms are written out here as the oracles."""

from __future__ import annotations

import pandas as pd
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from faceit_etl.source.repeats import LongInteger
from faceit_etl.validation.coerce import (
    INT64_MAX,
    INT64_MIN,
    _integer,
    coerce_flags,
    coerce_integers,
    coerce_text,
    coerce_tiers,
    coerce_timestamps,
    describe_value,
)
from faceit_etl.validation.fields import TIERS
from faceit_etl_tests.conftest import examples

# judging a column costs milliseconds of pandas, more on a busy machine: no deadline
PROPERTY_SETTINGS = settings(max_examples=examples(200), deadline=None, suppress_health_check=[HealthCheck.too_slow])

NEAR_EDGES = st.sampled_from([INT64_MIN - 1, INT64_MIN, 0, INT64_MAX, INT64_MAX + 1, 2**64])
INTEGER_LIKE = (
    st.none() | st.integers() | NEAR_EDGES | st.booleans() | st.floats() | st.sampled_from(["7", "x", LongInteger("9" * 30)])
)


@PROPERTY_SETTINGS
@given(st.lists(INTEGER_LIKE, max_size=8) | st.lists(st.none() | st.integers() | NEAR_EDGES, max_size=8))
def test_integers_judged_at_once_are_judged_as_one_by_one(values):
    judged = [_integer(value) for value in values]
    column, errors = coerce_integers(values)
    assert column.dtype == "Int64"
    assert plain(column) == [n for n, _ in judged]
    assert errors == {p: reason for p, (_, reason) in enumerate(judged) if reason}


class Text(str):
    """A str that is not exactly one: judged as any other non-text value."""


ANY_SCALAR = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=3)


@PROPERTY_SETTINGS
@given(st.lists(ANY_SCALAR | st.builds(Text, st.text(max_size=2)), max_size=8) | st.lists(st.none() | st.text(max_size=3), max_size=8))
def test_text_judged_at_once_is_judged_as_one_by_one(values):
    column, errors = coerce_text(values)
    ok = [v is None or type(v) is str for v in values]
    assert plain(column) == [v if good else None for v, good in zip(values, ok)]
    assert column.dtype == "str"
    assert errors == {p: f"expected text, got {describe_value(v)}" for p, (v, good) in enumerate(zip(values, ok)) if not good}


@PROPERTY_SETTINGS
@given(st.lists(ANY_SCALAR, max_size=8) | st.lists(st.none() | st.booleans(), max_size=8))
def test_flags_judged_at_once_are_judged_as_one_by_one(values):
    column, errors = coerce_flags(values)
    ok = [v is None or type(v) is bool for v in values]
    assert column.dtype == "boolean"
    assert plain(column) == [v if good else None for v, good in zip(values, ok)]
    assert errors == {
        p: f"expected true or false, got {describe_value(v)}" for p, (v, good) in enumerate(zip(values, ok)) if not good
    }


TIER_SPELLINGS = st.sampled_from(["free", "FREE", "Premium", "pRo", "gold", "", " pro", "ｐｒｏ", "free\u0131"])


@PROPERTY_SETTINGS
@given(st.lists(st.none() | TIER_SPELLINGS | ANY_SCALAR, max_size=8) | st.lists(st.none() | TIER_SPELLINGS, max_size=8))
def test_tiers_judged_at_once_are_judged_as_one_by_one(values):
    column, errors = coerce_tiers(values)
    names = [v.upper() if isinstance(v, str) and v.isascii() and v.upper() in TIERS else None for v in values]
    assert plain(column) == names
    assert errors == {
        p: f"unknown tier {describe_value(v)}, expected one of free, premium, pro"
        for p, (v, name) in enumerate(zip(values, names))
        if v is not None and name is None
    }


# The bot's spelling with each part in and around its range, its neighbours' separators and endings mixed in.
TIMESTAMPS = st.builds(
    lambda y, mo, d, sep, h, mi, s, end: f"{y:04d}-{mo:02d}-{d:02d}{sep}{h:02d}:{mi:02d}:{s:02d}{end}",
    st.sampled_from([1, 1970, 2025, 9999]), st.integers(0, 13), st.integers(0, 32), st.sampled_from(["T", "T", "t", " "]),
    st.integers(0, 24), st.integers(0, 60), st.integers(0, 60),
    st.sampled_from(["", "", ".5", ".438485", ".1234567", ".4384850", ",5", "Z", "z", "+03:00", "-0130", "+05"]),
)
FORCE_OTHER_FORMS = "2020-01-01"  # a date alone: no column holding it is all of the bot's spelling


@PROPERTY_SETTINGS
@given(
    st.lists(st.none() | TIMESTAMPS, max_size=6) | st.lists(st.none() | TIMESTAMPS | st.integers() | st.booleans(), max_size=6),
    st.sampled_from(["UTC", "Europe/Moscow", "America/New_York"]),
)
# each spelling next to the bot's, alone in a column: what a too-wide shorter way would take for it
@example(["2025-08-16T18:52:14Z"], "UTC")
@example(["2025-08-16T18:52:14+03:00", None], "Europe/Moscow")
@example(["2025-08-16T18:52:14.1234567"], "UTC")
@example(["2025-08-16t18:52:14", "2025-08-16 18:52:14"], "UTC")
@example(["2025-08-16T18:52:14,5"], "UTC")
def test_a_timestamp_column_of_the_bots_spelling_is_judged_as_a_column_of_mixed_forms(values, zone):
    """A column all of the bot's spelling takes a shorter way; each value's outcome is its own, so a
    column with one value of another form beside them, which takes the long way, judges them alike."""
    column, errors = coerce_timestamps(values, zone)
    mixed, mixed_errors = coerce_timestamps([*values, FORCE_OTHER_FORMS], zone)
    assert column.equals(mixed.iloc[:-1])
    assert errors == mixed_errors


def plain(column: pd.Series) -> list:
    """A column's values, missing ones (NA, NaN) as None."""
    return [None if pd.isna(v) else v for v in column.astype(object).tolist()]
