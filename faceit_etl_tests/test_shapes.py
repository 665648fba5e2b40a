"""Columns read a key tuple at a time give what reading each object alone gives: the plain
per-object forms are written out here as the oracles."""

from __future__ import annotations

from collections import Counter

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from faceit_etl.validation.fields import (
    KNOWN_SUBSCRIPTION_KEYS,
    KNOWN_USER_KEYS,
    SUBSCRIPTION_FIELDS,
    USER_FIELDS,
    presence_mask,
)
from faceit_etl.validation.shapes import Shapes
from faceit_etl_tests.conftest import examples

# few keys, so that objects often share a key tuple, or the same keys in another order
KEYS = st.sampled_from(["user_id", "language", "tier", "referred_by", "extra", "note"])
VALUES = st.none() | st.booleans() | st.integers() | st.text(max_size=3) | st.lists(st.integers(), max_size=1)
OBJECTS = st.lists(st.none() | st.dictionaries(KEYS, VALUES, max_size=6), max_size=12)


@settings(max_examples=examples(200), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(OBJECTS)
def test_a_column_is_each_objects_value_in_order(objects):
    shapes = Shapes(objects)
    for key in ["user_id", "language", "tier", "referred_by", "extra", "note", "absent"]:
        assert shapes.column(key) == [o.get(key) if o is not None else None for o in objects]


@settings(max_examples=examples(200), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(OBJECTS)
def test_presence_bits_and_unknown_keys_are_each_objects_own(objects):
    shapes = Shapes(objects)
    for fields, known in ((USER_FIELDS, KNOWN_USER_KEYS), (SUBSCRIPTION_FIELDS, KNOWN_SUBSCRIPTION_KEYS)):
        assert shapes.presence(fields).tolist() == [presence_mask(fields, tuple(o or ())) for o in objects]
        assert shapes.presence(fields).dtype == "int64"
        expected = Counter(f"s.{k}" for o in objects if o is not None for k in o if k not in known)
        assert shapes.unknown_keys(known, "s.") == expected
