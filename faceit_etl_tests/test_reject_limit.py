"""`max_rejects`: what each value allows, and the values refused (no database: `unit`)."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from faceit_etl.validation.limit import EXPECTED, parse_max_rejects


@given(limit=st.integers(0, 10**6), entries=st.integers(0, 10**6), rejected=st.integers(0, 10**6))
def test_a_count_allows_exactly_that_many_rejects(limit, entries, rejected):
    parsed = parse_max_rejects(str(limit))
    assert parsed.allowed(entries) == limit
    assert parsed.allows(rejected, entries) is (rejected <= limit)
    assert parsed.allows(limit, entries) and not parsed.allows(limit + 1, entries)


@given(
    whole=st.integers(0, 100),
    decimals=st.one_of(st.none(), st.text("0123456789", min_size=1, max_size=4)),
    entries=st.integers(0, 10**7),
)
def test_a_percentage_allows_the_largest_count_within_that_share_of_the_entries_read(whole, decimals, entries):
    text = f"{whole}.{decimals}%" if decimals is not None else f"{whole}%"
    share = Fraction(text[:-1])
    if share > 100:
        return
    parsed = parse_max_rejects(text)
    allowed = parsed.allowed(entries)
    # Exactly at the share loads, one more reject does not: computed in integers, no float rounding.
    assert allowed * 100 <= share * entries < (allowed + 1) * 100
    assert parsed.allows(allowed, entries) and not parsed.allows(allowed + 1, entries)


def test_examples_of_percentages():
    assert [parse_max_rejects("1%").allowed(n) for n in (0, 99, 100, 250, 300)] == [0, 0, 1, 2, 3]
    assert parse_max_rejects("100%").allowed(7) == 7
    assert parse_max_rejects("0.5%").allowed(1000) == 5
    assert parse_max_rejects("0%").allowed(10**6) == 0
    assert parse_max_rejects("0.57%").allowed(10000) == 57  # with floats: 0.57 * 10000 / 100 = 56.99999999999999


@pytest.mark.parametrize("text", ["-1", "abc", "1.5", "150%", "100.01%", "", "%", "1 %", "5 rejects", "+5", "1e3", "١٢"])
def test_values_that_mean_no_limit_are_refused(text):
    with pytest.raises(ValueError) as refused:
        parse_max_rejects(text)
    assert str(refused.value) in (EXPECTED, "a percentage of the entries read is at most 100%")
    if text.endswith("%") and text[:-1].replace(".", "").isdigit():
        assert str(refused.value) == "a percentage of the entries read is at most 100%"
