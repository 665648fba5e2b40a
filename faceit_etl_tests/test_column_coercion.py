"""Coercions that judge a column at once when its values allow it give what judging each value
alone gives: the plain per-value forms are written out here as the oracles."""

from __future__ import annotations

import pandas as pd
from hypothesis import given, settings
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
    describe_value,
)
from faceit_etl.validation.fields import TIERS

NEAR_EDGES = st.sampled_from([INT64_MIN - 1, INT64_MIN, 0, INT64_MAX, INT64_MAX + 1, 2**64])
INTEGER_LIKE = (
    st.none() | st.integers() | NEAR_EDGES | st.booleans() | st.floats() | st.sampled_from(["7", "x", LongInteger("9" * 30)])
)


@settings(max_examples=200)
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


@given(st.lists(ANY_SCALAR | st.builds(Text, st.text(max_size=2)), max_size=8) | st.lists(st.none() | st.text(max_size=3), max_size=8))
def test_text_judged_at_once_is_judged_as_one_by_one(values):
    column, errors = coerce_text(values)
    ok = [v is None or type(v) is str for v in values]
    assert plain(column) == [v if good else None for v, good in zip(values, ok)]
    assert column.dtype == "str"
    assert errors == {p: f"expected text, got {describe_value(v)}" for p, (v, good) in enumerate(zip(values, ok)) if not good}


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


def plain(column: pd.Series) -> list:
    """A column's values, missing ones (NA, NaN) as None."""
    return [None if pd.isna(v) else v for v in column.astype(object).tolist()]
