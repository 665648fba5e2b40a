"""Validation admits only what the target's columns hold with the same meaning: what it accepts is
COPYed into the real tables and read back equal; what they cannot hold is a reject of its entry."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pandas as pd
import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st
from psycopg import sql

from faceit_etl.mapping import SUBSCRIPTION_COLUMNS, USER_COLUMNS, map_frames
from faceit_etl.source import SourceData, parse_source
from faceit_etl.postgres.ddl import SUBSCRIPTIONS, USERS, ensure_target_tables, table
from faceit_etl.postgres.load import copy_frame
from faceit_etl.validation import validate_entries
from faceit_etl.validation.fields import SUBSCRIPTION_FIELDS, USER_FIELDS, Kind
from faceit_etl_tests.conftest import examples

INT64_MAX = 2**63 - 1
YEARS_ONLY = "the target holds years 1 to 9999 only (PostgreSQL writes no year 0; the bot's datetimes end at 9999)"
EPOCH_RANGE = ": only seconds from year 1 to 9999 are read (milliseconds would land beyond it)"


def judge(entries, source_timezone="UTC", id_keys=None):
    return validate_entries(SourceData(entries=entries, layout="test", id_keys=id_keys), source_timezone)


def triples(outcome):
    return [tuple(r) for r in outcome.rejects[["source_index", "field", "reason"]].values.tolist()]


# --- integers -----------------------------------------------------------------------------------


@pytest.mark.parametrize("neighbour", [None, "x", 1.5, "12"], ids=["alone", "text", "fraction", "digits"])
@pytest.mark.parametrize(
    "value, expected",
    [
        ("9223372036854775807", INT64_MAX),
        ("0009223372036854775807", INT64_MAX),
        (INT64_MAX, INT64_MAX),
        (9007199254740991.0, 2**53 - 1),
    ],
)
@pytest.mark.parametrize("field, in_subscription", [("user_id", False), ("referred_by", True)])
def test_the_largest_64_bit_id_is_accepted_on_every_path(value, expected, neighbour, field, in_subscription):
    # a neighbour that is not a plain integer sends the whole column off the all-integer fast path
    def entry(user_id, referrer):
        return {"user_id": user_id, "subscription": {"referred_by": referrer}}

    column = "user_id" if field == "user_id" else "referred_by_user_id"
    if field == "user_id":
        entries = [entry(value, 5), entry(neighbour, 5)]
    else:
        entries = [entry(1, value), entry(2, neighbour)]
    outcome = judge(entries)
    assert outcome.valid.loc[0, column] == expected
    assert 0 not in outcome.rejects["source_index"].tolist()


@pytest.mark.parametrize("field, column, in_subscription", [
    ("user_id", "user_id", False), ("referred_by", "referred_by_user_id", True),
    ("total_requests", "total_requests", False), ("daily_requests", "daily_requests", True),
])
@pytest.mark.parametrize(
    "value, reason",
    [
        ("9223372036854775808", '"9223372036854775808" does not fit a 64-bit integer'),
        ("-9223372036854775809", 'expected a whole number, got "-9223372036854775809"'),  # no sign
        ("9" * 5000, json.dumps("9" * 56)[:57] + "... does not fit a 64-bit integer"),
        ("١٢٣", 'expected a whole number, got "١٢٣"'),
        ("12\u0663", 'expected a whole number, got "12٣"'),
        (9007199254740993.0, "9007199254740992.0 is a decimal number beyond 2**53, where it is no exact whole number"),
        (2.0**53, "9007199254740992.0 is a decimal number beyond 2**53, where it is no exact whole number"),
        (1e300, "1e+300 is a decimal number beyond 2**53, where it is no exact whole number"),
    ],
    ids=["2**63", "-2**63-1", "5000 digits", "arabic-indic", "mixed digits", "2**53+1 float", "2**53 float", "1e300"],
)
def test_integers_the_column_cannot_hold_exactly_are_rejected(value, reason, field, column, in_subscription):
    entry = {"user_id": 77, "subscription": {}}
    (entry["subscription"] if in_subscription else entry)[field] = value
    outcome = judge([{"user_id": 123}, entry])
    assert triples(outcome) == [(1, column, reason)]
    assert outcome.valid["user_id"].tolist() == [123]  # the real user 123 is not taken for a repeat


def test_a_non_ascii_digit_id_does_not_take_a_real_users_place():
    outcome = judge([{"user_id": "١٢٣"}, {"user_id": 123}])
    assert outcome.valid["user_id"].tolist() == [123]
    assert triples(outcome) == [(0, "user_id", 'expected a whole number, got "١٢٣"')]


def test_a_keyed_layout_key_of_5000_digits_is_a_reject_not_a_crash():
    outcome = judge([{"language": "en"}, {"language": "ru"}], id_keys=["9" * 5000, "5"])
    assert outcome.valid["user_id"].tolist() == [5]
    assert triples(outcome) == [(0, "user_id", (
        f"key {json.dumps('9' * 56)[:57]}... names no user: the bot reads this layout by the user id written in plain "
        "digits (1 to 9223372036854775807, no leading zero, sign, space or point), so it never reads this entry"
    ))]


def test_a_5000_digit_number_in_the_file_rejects_its_entry_only():
    raw = ('[{"user_id": 1}, {"user_id": 2, "total_requests": ' + "1" * 5000 + "}]").encode()
    outcome = validate_entries(parse_source(raw, "long.json"))
    assert outcome.valid["user_id"].tolist() == [1]
    assert triples(outcome) == [
        (1, "total_requests", "11111111111111111111... (5000 digits) does not fit a 64-bit integer")
    ]


# --- timestamps ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, source_timezone, year",
    [
        ("0000-06-01T00:00:00Z", "UTC", 0),
        ("0001-01-01T00:30:00+01:00", "UTC", 0),
        ("0001-01-01T00:00:00", "Asia/Tokyo", 0),
        ("0000-06-01T00:00:00", "UTC", 0),
        ("9999-12-31T23:59:59-01:00", "UTC", 10000),
        ("9999-12-31T23:59:59", "America/New_York", 10000),
    ],
)
def test_instants_outside_years_1_to_9999_in_utc_are_rejected(value, source_timezone, year):
    outcome = judge([{"user_id": 1, "created_at": value}], source_timezone)
    assert triples(outcome) == [(0, "created_at", f"timestamp {json.dumps(value)} is in year {year} in UTC: {YEARS_ONLY}")]


@pytest.mark.parametrize(
    "value, instant",
    [
        ("0001-01-01T00:00:00Z", "0001-01-01T00:00:00Z"),
        ("0001-01-01T00:30:00-01:00", "0001-01-01T01:30:00Z"),
        ("9999-12-31T23:59:59.999999Z", "9999-12-31T23:59:59.999999Z"),
        (-62135596800, "0001-01-01T00:00:00Z"),
        (253402300799, "9999-12-31T23:59:59Z"),
        (1755370334, "2025-08-16T18:52:14Z"),
    ],
)
def test_instants_at_the_edges_of_the_range_are_accepted(value, instant):
    outcome = judge([{"user_id": 1, "created_at": value}])
    assert outcome.rejects.empty
    assert outcome.valid.loc[0, "created_at"] == pd.Timestamp(instant)


@pytest.mark.parametrize("value", [1755370334438, 253402300800, -62135596801, 2**63 - 1, 9007199254740993.0])
def test_epoch_numbers_beyond_the_range_are_rejected_not_read_as_a_far_year(value):
    outcome = judge([{"user_id": 1, "subscription": {"expires_at": value}}])
    shown = repr(value)
    assert triples(outcome) == [(0, "expires_at", f"epoch seconds {shown} are out of range{EPOCH_RANGE}")]


# --- the property: what validation accepts, the real tables hold unchanged ----------------------

EDGE_INTEGERS = [0, 1, -1, 2**31 - 1, 2**31, 2**53 - 1, 2**53, 2**63 - 1, 2**63, -(2**63), 2**64]
INTEGERS = st.one_of(
    st.sampled_from(EDGE_INTEGERS),
    st.integers(min_value=-(2**65), max_value=2**65),
    st.sampled_from(EDGE_INTEGERS).map(str),
    st.sampled_from(["١٢٣", "0٣", "+7", " 42 ", "007", "1e3", "9" * 5000, "9223372036854775808", ""]),
    st.floats(allow_nan=False),
    st.sampled_from([2.0**53, 2.0**53 - 1, 9007199254740993.0, 2.0**63, -0.0, 1.5]),
)
TEXTS = st.one_of(
    st.text(max_size=30),
    st.integers(0, 300).map(lambda n: "é" * n),
    st.sampled_from(["\x00", "a\x00b", "x" * 255, "x" * 256, "日本" * 6]),
)
FLAGS = st.one_of(st.booleans(), st.sampled_from([0, 1, "true", None]))
TIER_VALUES = st.sampled_from(["free", "PREMIUM", " Pro ", "pRo", "gold", "", 1])
OFFSETS = st.sampled_from([None, timezone.utc, timezone(timedelta(hours=14)), timezone(timedelta(hours=-12)),
                           timezone(timedelta(hours=5, minutes=30))])
EDGE_STAMPS = st.sampled_from([
    "0000-12-31T23:00:00-01:00", "0001-01-01T00:30:00+01:00", "0001-01-01", "9999-12-31",
    "9999-12-31T23:59:59.9999999Z", "9999-12-31T23:00:00-05:00", "0001-01-01T00:00:00",
    -62135596801, 253402300800, 1755370334438,
])
TIMESTAMPS = st.one_of(
    EDGE_STAMPS,
    st.builds(lambda moment, zone: moment.replace(tzinfo=zone).isoformat(), st.datetimes(), OFFSETS),
    st.integers(min_value=-(2**40), max_value=2**40),
    st.floats(min_value=-1e13, max_value=1e13),
)
BY_KIND = {
    Kind.TELEGRAM_ID: INTEGERS, Kind.COUNT: INTEGERS, Kind.TEXT: TEXTS, Kind.FLAG: FLAGS,
    Kind.TIER: TIER_VALUES, Kind.TIMESTAMP: TIMESTAMPS,
}
ZONES = st.sampled_from(["UTC", "Asia/Tokyo", "Pacific/Kiritimati", "America/Adak", "Europe/Moscow"])


@st.composite
def entries(draw):
    made = []
    for number in range(draw(st.integers(1, 6))):
        entry = {f.source_key: draw(BY_KIND[f.kind]) for f in USER_FIELDS if draw(st.booleans())}
        if draw(st.booleans()):  # most entries keep a usable id, so most rows reach the table
            entry["user_id"] = number + 1
        if draw(st.booleans()):
            entry["subscription"] = {
                f.source_key: draw(BY_KIND[f.kind]) for f in SUBSCRIPTION_FIELDS if draw(st.booleans())
            }
        made.append(entry)
    return made


TIMESTAMP_COLUMNS = {"created_at", "last_active_at", "expires_at", "last_reset_date"}


def read_back(conn, name: str, columns: list[str]) -> list[tuple]:
    def shown(column):
        value = sql.Identifier(column)
        if column in TIMESTAMP_COLUMNS:  # microseconds since 1970: exact, at any year the column holds
            return sql.SQL("(extract(epoch FROM {}) * 1000000)::bigint").format(value)
        if column in ("id", "tier") or (name == SUBSCRIPTIONS and column == "user_id"):  # uuids, enum
            return sql.SQL("{}::text").format(value)
        return value

    query = sql.SQL("SELECT {} FROM {} ORDER BY id").format(
        sql.SQL(", ").join(shown(c) for c in columns), table("public", name)
    )
    return conn.execute(query).fetchall()


def expected_rows(frame: pd.DataFrame, columns: list[str]) -> list[tuple]:
    values = {}
    for column in columns:
        series = frame[column]
        if column in TIMESTAMP_COLUMNS:
            since = series - pd.Timestamp(0, tz="UTC").as_unit("us")
            values[column] = [None if pd.isna(v) else v // pd.Timedelta(1, "us") for v in since]
        else:
            values[column] = [None if pd.isna(v) else (v.item() if hasattr(v, "item") else v) for v in series]
    rows = [tuple(values[c][i] for c in columns) for i in range(len(frame))]
    return sorted(rows, key=lambda row: str(row[0]))


# No shrinking: each example runs a real COPY, and a shrink would take minutes.
@example(  # instants that PostgreSQL cannot write (year 0) and ids at their limits, every run
    made=[
        {"user_id": 1, "created_at": "0001-01-01T00:30:00+01:00"},
        {"user_id": 2, "last_active_at": "0001-01-01T05:00:00", "subscription": {"expires_at": -62135596801}},
        {"user_id": "9223372036854775807", "subscription": {"referred_by": 9007199254740993.0}},
        {"user_id": "١٢٣", "total_requests": "9" * 5000},
    ],
    source_timezone="Asia/Tokyo",
)
@settings(
    max_examples=examples(25),
    deadline=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(made=entries(), source_timezone=ZONES)
def test_every_accepted_value_is_copied_into_the_real_tables_and_read_back_equal(db, made, source_timezone):
    outcome = judge(made, source_timezone)
    mapped = map_frames(outcome.valid)
    # as the load does: a user without created_at (NOT NULL) gets the load's time
    load_time = pd.Timestamp("2026-12-01", tz="UTC")
    users_frame = mapped.users.assign(created_at=mapped.users["created_at"].fillna(load_time))
    with db.transaction(force_rollback=True):
        ensure_target_tables(db, "public")
        copy_frame(db, table("public", USERS), users_frame, USER_COLUMNS, batch_size=1000)
        copy_frame(db, table("public", SUBSCRIPTIONS), mapped.subscriptions, SUBSCRIPTION_COLUMNS, batch_size=1000)
        users = read_back(db, USERS, USER_COLUMNS)
        subscriptions = read_back(db, SUBSCRIPTIONS, SUBSCRIPTION_COLUMNS)
    assert users == expected_rows(users_frame, USER_COLUMNS)
    assert subscriptions == expected_rows(mapped.subscriptions, SUBSCRIPTION_COLUMNS)
    assert len(outcome.valid) + outcome.rejected_count == len(made)


def test_rejects_keep_ids_beyond_2_to_the_53_next_to_entries_without_an_id():
    # a None beside them made pandas infer floats, which cannot hold these ids: validation crashed
    outcome = judge([{"language": 5}, {"user_id": 2**53 + 1, "language": 5}, {"user_id": INT64_MAX, "language": 5}])
    assert [r["user_id"] for r in outcome.reject_records()] == [None, None, 2**53 + 1, INT64_MAX]
    assert outcome.rejects["source_index"].tolist() == [0, 0, 1, 2]
