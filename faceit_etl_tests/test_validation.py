"""Validation: every reject class with its reason, every coercion with its exact value, and the
promise that accepted + rejected = input whatever the file holds."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from faceit_etl.mapping import map_frames
from faceit_etl.source import SourceData, parse_source
from faceit_etl.validation import REJECT_COLUMNS, validate_entries
from faceit_etl.validation.fields import SUBSCRIPTION_FIELDS, USER_FIELDS
from faceit_etl_tests.conftest import examples

GOOD = {
    "user_id": 5836464178,
    "faceit_player_id": "9a1f7aa5-36ea-4a28-80e6-b5d0a9d93650",
    "faceit_nickname": "ZywOo",
    "last_checked_match_id": "1-724c4487-8c1e-411a-a477-909feed3d0dd",
    "waiting_for_nickname": False,
    "language": "ru",
    "notifications_enabled": True,
    "created_at": "2025-08-16T18:52:14.438485",
    "last_active_at": "2025-10-14T09:00:00",
    "total_requests": 36,
    "subscription": {
        "tier": "premium",
        "expires_at": "2025-12-23T09:00:00",
        "auto_renew": True,
        "payment_method": "telegram_stars",
        "daily_requests": 167,
        "last_reset_date": "2025-11-12T09:00:00",
        "referred_by": 1650423192,
        "referral_code": "4CE848F5",
        "referrals_count": 0,
    },
}


OUT_OF_YEARS = ": only seconds from year 1 to 9999 are read (milliseconds would land beyond it)"
NOT_A_FORM = (
    " is not a supported timestamp form: expected ISO 8601 YYYY-MM-DD[Thh:mm[:ss[.ffffff]]] with an "
    "optional offset Z or +hh:mm, nothing around it"
)
TOO_PRECISE = " has more precision than the column holds (microseconds): rounding would change the value"


def validate(entries, source_timezone="UTC", id_keys=None):
    return validate_entries(SourceData(entries=entries, layout="test", id_keys=id_keys), source_timezone)


def user(user_id, **fields):
    return {"user_id": user_id, **fields}


def reasons(outcome):
    """The rejects as (source_index, field, reason) triples, in order."""
    return [tuple(row) for row in outcome.rejects[["source_index", "field", "reason"]].values.tolist()]


def only_reason(entry, source_timezone="UTC"):
    """Validate one entry that must be rejected for exactly one reason: (field, reason)."""
    outcome = validate([entry], source_timezone)
    assert outcome.valid.empty
    ((index, field, reason),) = reasons(outcome)
    assert index == 0
    return field, reason


def accepted_value(column, value, source_timezone="UTC", subscription=False):
    key = {f.name: f.source_key for f in USER_FIELDS + SUBSCRIPTION_FIELDS}[column]
    entry = user(77, subscription={key: value}) if subscription else user(77, **{key: value})
    outcome = validate([entry], source_timezone)
    assert outcome.rejects.empty, outcome.rejects.to_dict("records")
    return outcome.valid.iloc[0][column]


def utc(text):
    return pd.Timestamp(text, tz="UTC")


def assert_invariant(outcome):
    rejected = set(outcome.rejects["source_index"])
    accepted = set(outcome.valid.index)
    assert not rejected & accepted
    assert rejected | accepted == set(range(outcome.input_count))
    assert outcome.rejects["source_index"].nunique() + len(outcome.valid) == outcome.input_count
    assert outcome.rejected_count == len(rejected)


# --- reject classes -----------------------------------------------------------------------------


def test_a_good_entry_is_accepted_with_typed_values():
    outcome = validate([GOOD])
    assert outcome.rejects.empty
    assert list(outcome.rejects.columns) == REJECT_COLUMNS
    row = outcome.valid.loc[0]
    assert row["user_id"] == 5836464178
    assert row["faceit_nickname"] == "ZywOo"
    assert row["waiting_for_nickname"] == False  # noqa: E712 (pandas boolean)
    assert row["total_requests"] == 36
    assert row["created_at"] == utc("2025-08-16T18:52:14.438485")
    assert row["tier"] == "PREMIUM"
    assert row["referred_by_user_id"] == 1650423192
    assert row["has_subscription"] == True  # noqa: E712


@pytest.mark.parametrize(
    "entry, reason",
    [
        ({"faceit_nickname": "nobody"}, "is missing"),
        ({"user_id": None}, "is missing"),
        ({"user_id": 0}, "must be a positive Telegram id"),
        ({"user_id": -5836464178}, "must be a positive Telegram id"),
        ({"user_id": "-7"}, 'expected a whole number, got "-7"'),
        ({"user_id": "abc"}, 'expected a whole number, got "abc"'),
        ({"user_id": "12a"}, 'expected a whole number, got "12a"'),
        ({"user_id": ""}, 'expected a whole number, got ""'),
        ({"user_id": True}, "expected a whole number, got true"),
        ({"user_id": [1]}, "expected a whole number, got a list"),
        ({"user_id": {"id": 1}}, "expected a whole number, got an object"),
        ({"user_id": 12.5}, "expected a whole number, got 12.5"),
        ({"user_id": 2**63}, "9223372036854775808 does not fit a 64-bit integer"),
    ],
)
def test_bad_user_id(entry, reason):
    assert only_reason(entry) == ("user_id", reason)


@pytest.mark.parametrize(("entries", "places"), [([user(1), user(-2), user(3)], [0, 2]), ([], [])])
def test_the_valid_entries_are_indexed_by_their_0_based_place_in_the_file(entries, places):
    """What a reader of the validated frame (`validate_entries`, the `validated_frame` asset's value) finds
    under its index: the entry's place, as the rejects' `source_index` counts it, an integer also when
    there are none."""
    pd.testing.assert_index_equal(validate(entries).valid.index, pd.Index(places, name="source_index", dtype="int64"))


def test_user_id_seen_before_first_entry_wins():
    entries = [
        user(5836464178, faceit_nickname="first"),
        user(42, faceit_nickname="other"),
        user("5836464178", faceit_nickname="second"),  # the same id, written as text
        user(5836464178.0, faceit_nickname="third"),  # and as an integral float
    ]
    outcome = validate(entries)
    assert outcome.valid["faceit_nickname"].tolist() == ["first", "other"]
    assert outcome.valid["user_id"].tolist() == [5836464178, 42]
    reason = "user_id seen before: the first entry wins, as in the bot"
    assert reasons(outcome) == [(2, "user_id", reason), (3, "user_id", reason)]
    assert outcome.rejects["user_id"].tolist() == [5836464178, 5836464178]


# Spellings that only whitespace stripping or Unicode case mapping ("ı".upper() is "I") would read
@pytest.mark.parametrize("tier", ["gold", "enterprise", "", "free trial", 1, " pro", "pro\u00a0", "\tpro\n",
                                  " Pro ", "premıum", "ﬁve", "ｐｒｏ"])
def test_unknown_tier_is_rejected_not_made_free(tier):
    outcome = validate([user(1, subscription={"tier": tier}), user(2, subscription={"tier": "free"})])
    assert outcome.valid.index.tolist() == [1]
    assert outcome.valid["tier"].tolist() == ["FREE"]
    expected = f"unknown tier {json.dumps(tier, ensure_ascii=False)}, expected one of free, premium, pro"
    assert reasons(outcome) == [(0, "tier", expected)]


@pytest.mark.parametrize(
    "value, reason",
    [
        ("2025-02-30", 'impossible date "2025-02-30": day is out of range for month'),
        ("2025-02-30T10:00:00", 'impossible date "2025-02-30T10:00:00": day is out of range for month'),
        ("2025-13-01T00:00:00", 'impossible date "2025-13-01T00:00:00": month must be in 1..12'),
        ("2025-08-16T25:00:00", 'impossible date "2025-08-16T25:00:00": hour must be in 0..23'),
        ("yesterday", '"yesterday"' + NOT_A_FORM),
        ("16/08/2025 18:52", '"16/08/2025 18:52"' + NOT_A_FORM),
        ("", '""' + NOT_A_FORM),
        ("2025-W01-1", '"2025-W01-1"' + NOT_A_FORM),  # an ISO week date: not read
        ("2025-001", '"2025-001"' + NOT_A_FORM),  # an ISO ordinal date: not read
        ("20250816T101010", '"20250816T101010"' + NOT_A_FORM),
        ("2025-01-01T00:00:00+01:00:30", '"2025-01-01T00:00:00+01:00:30"' + NOT_A_FORM),
        ("2025-08-16Z", '"2025-08-16Z"' + NOT_A_FORM),
        (" 2025-08-16T18:52:14", '" 2025-08-16T18:52:14"' + NOT_A_FORM),
        # Too precise too, but of no supported form: that is what is wrong with it.
        ("2025-08-16 18:52:14.1234567 UTC", '"2025-08-16 18:52:14.1234567 UTC"' + NOT_A_FORM),
        ("2025-08-16T18:52:14\n", '"2025-08-16T18:52:14\\n"' + NOT_A_FORM),
        ("2025-08-16T18:52:14.123456789", 'timestamp "2025-08-16T18:52:14.123456789"' + TOO_PRECISE),
        ("2025-01-01T00:00:00.9999999", 'timestamp "2025-01-01T00:00:00.9999999"' + TOO_PRECISE),
        ("2025-01-01T00:00:00,1234567Z", 'timestamp "2025-01-01T00:00:00,1234567Z"' + TOO_PRECISE),
        (1755370334.4384851, "epoch seconds 1755370334.4384851" + TOO_PRECISE.replace(" has", " have")),
        (True, "expected a timestamp, got true"),
        ({"date": "2025-08-16"}, "expected a timestamp, got an object"),
        (1e300, "epoch seconds 1e+300 are out of range" + OUT_OF_YEARS),
    ],
)
def test_bad_timestamps(value, reason):
    """Anything but the documented forms, and any digit the column cannot hold, is refused with a
    reason naming that: never read loosely, never rounded."""
    assert only_reason(user(1, created_at=value)) == ("created_at", reason)


def test_bad_subscription_timestamp_names_its_field():
    field, reason = only_reason(user(1, subscription={"expires_at": "2025-02-30"}))
    assert (field, reason) == (
        "expires_at",
        'impossible date "2025-02-30": day is out of range for month',
    )


@pytest.mark.parametrize(
    "entry, field",
    [
        (user(1, total_requests=-1), "total_requests"),
        (user(1, subscription={"daily_requests": -2}), "daily_requests"),
        (user(1, subscription={"referrals_count": -1.0}), "referrals_count"),
    ],
)
def test_negative_counters(entry, field):
    assert only_reason(entry) == (field, "must not be negative")


def test_counter_beyond_the_target_integer_column():
    assert only_reason(user(1, total_requests=2**31)) == (
        "total_requests",
        "too large for the target's integer column",
    )
    assert accepted_value("total_requests", 2**31 - 1) == 2**31 - 1


@pytest.mark.parametrize(
    "column, limit, subscription",
    [
        ("faceit_player_id", 255, False),
        ("faceit_nickname", 255, False),
        ("last_checked_match_id", 255, False),
        ("language", 10, False),
        ("payment_method", 100, True),
        ("referral_code", 20, True),
    ],
)
def test_text_longer_than_its_column(column, limit, subscription):
    # the limit counts characters, not bytes: a multi-byte text of exactly `limit` characters fits
    assert accepted_value(column, "Ж" * limit, subscription=subscription) == "Ж" * limit
    key = {f.name: f.source_key for f in USER_FIELDS + SUBSCRIPTION_FIELDS}[column]
    too_long = "x" * (limit + 1)
    entry = user(1, subscription={key: too_long}) if subscription else user(1, **{key: too_long})
    assert only_reason(entry) == (
        column,
        f"longer than {limit} characters (the target column's size)",
    )


@pytest.mark.parametrize(
    "entry, field",
    [
        (user(1, faceit_nickname="Zy\x00wOo"), "faceit_nickname"),
        (user(1, language="\x00"), "language"),
        (user(1, subscription={"referral_code": "AB\x00CD"}), "referral_code"),
    ],
)
def test_nul_characters(entry, field):
    assert only_reason(entry) == (
        field,
        "contains a NUL character, which PostgreSQL text cannot hold",
    )


@pytest.mark.parametrize(
    "entry, shown",
    [(5, "5"), ("user", '"user"'), (None, "null"), ([GOOD], "a list"), (False, "false"), (2.5, "2.5")],
)
def test_entries_that_are_not_objects(entry, shown):
    outcome = validate([GOOD, entry])
    assert outcome.valid.index.tolist() == [0]
    assert reasons(outcome) == [(1, "(entry)", f"entry is not an object: got {shown}")]
    assert pd.isna(outcome.rejects.at[0, "user_id"])
    assert json.loads(outcome.rejects.at[0, "raw"]) == entry


@pytest.mark.parametrize(
    "subscription, shown",
    [("premium", '"premium"'), ([], "a list"), (3, "3"), (True, "true")],
)
def test_subscription_that_is_not_an_object(subscription, shown):
    field, reason = only_reason(user(1, subscription=subscription))
    assert (field, reason) == ("subscription", f"expected an object or null, got {shown}")


def test_null_subscription_is_no_subscription():
    outcome = validate([user(1, subscription=None)])
    assert outcome.rejects.empty
    assert outcome.valid.loc[0, "has_subscription"] == False  # noqa: E712


def test_referral_code_already_taken():
    entries = [
        user(1, subscription={"referral_code": "4CE848F5"}),
        user(2, subscription={"referral_code": "257D25E4"}),
        user(3, subscription={"referral_code": "4CE848F5"}),
        user(4, subscription={"referral_code": None}),
        user(5, subscription={"referral_code": None}),  # many users without a code is fine
    ]
    outcome = validate(entries)
    assert outcome.valid["user_id"].tolist() == [1, 2, 4, 5]
    assert reasons(outcome) == [
        (2, "referral_code", 'referral_code "4CE848F5" is already held by entry 1 (the 1st in the file, user_id 1), which is accepted')
    ]
    assert outcome.rejects.at[0, "user_id"] == 3


@pytest.mark.parametrize(
    "field, value, reason",
    [
        ("waiting_for_nickname", "yes", 'expected true or false, got "yes"'),
        ("notifications_enabled", 1, "expected true or false, got 1"),
        ("language", 5, "expected text, got 5"),
        ("faceit_nickname", ["a"], "expected text, got a list"),
    ],
)
def test_wrong_types_in_flags_and_text(field, value, reason):
    assert only_reason(user(1, **{field: value})) == (field, reason)


def test_a_record_with_several_problems_carries_all_its_reasons():
    entry = {
        "user_id": 9,
        "language": 5,
        "waiting_for_nickname": "yes",
        "total_requests": -4,
        "created_at": "2025-02-30",
        "faceit_nickname": "n" * 300,
        "subscription": {"tier": "gold", "referral_code": "C\x00DE", "daily_requests": 1.5},
    }
    outcome = validate([GOOD, entry])
    assert outcome.valid.index.tolist() == [0]
    assert sorted(reasons(outcome)) == sorted(
        [
            (1, "language", "expected text, got 5"),
            (1, "waiting_for_nickname", 'expected true or false, got "yes"'),
            (1, "total_requests", "must not be negative"),
            (1, "created_at", 'impossible date "2025-02-30": day is out of range for month'),
            (1, "faceit_nickname", "longer than 255 characters (the target column's size)"),
            (1, "tier", 'unknown tier "gold", expected one of free, premium, pro'),
            (1, "referral_code", "contains a NUL character, which PostgreSQL text cannot hold"),
            (1, "daily_requests", "expected a whole number, got 1.5"),
        ]
    )
    assert set(outcome.rejects["user_id"]) == {9}
    assert outcome.rejected_count == 1


def test_rejects_carry_the_raw_json_of_the_entry():
    entries = [
        user(0, faceit_nickname="Геннадий 🐍", extra={"nested": [1, 2.5, None, True]}),
        "not an object",
        user(1, subscription={"tier": "gold", "promo": "ÀÉ"}),
        [1, {"user_id": 2}],
    ]
    outcome = validate(entries)
    assert outcome.rejects["source_index"].tolist() == [0, 1, 2, 3]
    for index, raw in zip(outcome.rejects["source_index"], outcome.rejects["raw"]):
        assert json.loads(raw) == entries[index]
    assert "Геннадий 🐍" in outcome.rejects.at[0, "raw"]  # written as text, not \u escapes


def test_entry_nested_near_the_parser_limit_is_rejected_without_a_crash():
    depth = 1000  # orjson reads it (its limit is 1024); writing it back exceeds Python's recursion
    raw = b'[{"user_id": "x", "deep": ' + b"[" * depth + b"]" * depth + b"}]"
    outcome = validate_entries(parse_source(raw, "deep.json"))
    assert reasons(outcome) == [(0, "user_id", 'expected a whole number, got "x"')]
    assert json.loads(outcome.rejects.at[0, "raw"]).startswith("<entry nested too deeply")


def test_ignored_fields_are_counted():
    entries = [
        user(1, extra=1, nickname_color="red"),
        user(2, extra=None, subscription={"promo": "X", "tier": "pro"}),
        user(3, subscription={"promo": "Y", "discount": 5}),
        user(4, subscription="bad"),  # not an object: its keys are not counted
        "not an object",
        user(5),
    ]
    outcome = validate(entries)
    assert outcome.ignored_fields == {
        "extra": 2,
        "nickname_color": 1,
        "subscription.discount": 1,
        "subscription.promo": 2,
    }
    assert list(outcome.ignored_fields) == sorted(outcome.ignored_fields)


def test_ignored_fields_do_not_reject():
    outcome = validate([user(1, favourite_map="de_dust2")])
    assert outcome.rejects.empty
    assert outcome.ignored_fields == {"favourite_map": 1}


def test_rejected_user_id_column():
    outcome = validate([user(0, language=5), user("77", language=6)])
    assert outcome.rejects["user_id"].isna().tolist() == [True, True, False]
    assert outcome.rejects["user_id"].iloc[2] == 77


# --- coercions ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, instant",
    [
        ("2025-08-16T18:52:14.438485", "2025-08-16T18:52:14.438485"),
        ("2025-08-16T18:52:14", "2025-08-16T18:52:14"),
        ("2025-08-16T18:52", "2025-08-16T18:52:00"),
        ("2025-08-16T18:52:14+03:00", "2025-08-16T15:52:14"),
        ("2025-08-16T18:52:14.5-05:30", "2025-08-17T00:22:14.5"),
        ("2025-08-16T18:52:14Z", "2025-08-16T18:52:14"),
        ("2025-08-16T18:52:14.438485Z", "2025-08-16T18:52:14.438485"),
        ("2025-08-16 18:52:14", "2025-08-16T18:52:14"),
        ("2025-08-16 18:52:14.438485+00:00", "2025-08-16T18:52:14.438485"),
        ("2025-08-16t18:52:14", "2025-08-16T18:52:14"),  # ISO 8601 allows a lower-case t
        ("2025-08-16T18:52:14,5", "2025-08-16T18:52:14.5"),  # and a comma before the fraction
        ("2025-08-16T18:52:14,438485+00:00", "2025-08-16T18:52:14.438485"),
        ("2025-08-16T18:52:14.438485000Z", "2025-08-16T18:52:14.438485"),  # zeros change nothing
        ("2025-08-16T18:52:14.1234560", "2025-08-16T18:52:14.123456"),
        ("2025-08-16T18:52:14+0300", "2025-08-16T15:52:14"),
        ("2025-08-16T18:52:14-03", "2025-08-16T21:52:14"),
        ("2025-08-16T18:52:14z", "2025-08-16T18:52:14"),
        ("2025-08-16", "2025-08-16T00:00:00"),
        (1755370334, "2025-08-16T18:52:14"),
        (1755370334.5, "2025-08-16T18:52:14.5"),
        (1755370334.438485, "2025-08-16T18:52:14.438485"),  # float noise below 1 µs is rounded off
        (0, "1970-01-01T00:00:00"),
    ],
)
def test_timestamps_in_utc(value, instant):
    assert accepted_value("created_at", value) == utc(instant)


@pytest.mark.parametrize(
    "source_timezone, value, instant",
    [
        ("Europe/Moscow", "2025-08-16T18:52:14.438485", "2025-08-16T15:52:14.438485"),
        ("Europe/Moscow", "2025-08-16T18:52:14", "2025-08-16T15:52:14"),
        ("Europe/Moscow", "2025-01-16 18:52:14", "2025-01-16T15:52:14"),  # no DST in Moscow
        ("Europe/Moscow", "2025-08-16", "2025-08-15T21:00:00"),  # a date is local midnight
        ("America/New_York", "2025-08-16T18:52:14.438485", "2025-08-16T22:52:14.438485"),  # EDT
        ("America/New_York", "2025-01-16T18:52:14", "2025-01-16T23:52:14"),  # EST
        ("America/New_York", "2025-08-16", "2025-08-16T04:00:00"),
        # an explicit offset, Z and epoch seconds do not depend on the source timezone
        ("America/New_York", "2025-08-16T18:52:14+03:00", "2025-08-16T15:52:14"),
        ("Europe/Moscow", "2025-08-16T18:52:14Z", "2025-08-16T18:52:14"),
        ("Europe/Moscow", 1755370334, "2025-08-16T18:52:14"),
    ],
)
def test_naive_timestamps_are_read_in_the_source_timezone(source_timezone, value, instant):
    assert accepted_value("created_at", value, source_timezone) == utc(instant)


def test_mixed_timestamp_forms_in_one_column():
    values = [
        "2025-08-16T18:52:14.438485",
        "2025-08-16T18:52:14+03:00",
        "2025-08-16",
        1755370334,
        "2025-08-16 18:52:14Z",
        None,
    ]
    outcome = validate([user(i + 1, last_active_at=v) for i, v in enumerate(values)], "Europe/Moscow")
    assert outcome.rejects.empty
    assert outcome.valid["last_active_at"].tolist()[:5] == [
        utc("2025-08-16T15:52:14.438485"),
        utc("2025-08-16T15:52:14"),
        utc("2025-08-15T21:00:00"),
        utc("2025-08-16T18:52:14"),
        utc("2025-08-16T18:52:14"),
    ]
    assert pd.isna(outcome.valid["last_active_at"].iloc[5])
    assert str(outcome.valid["last_active_at"].dtype) == "datetime64[us, UTC]"


def test_subscription_timestamps_are_coerced_too():
    assert accepted_value(
        "expires_at", "2025-12-23T09:00:00", "Europe/Moscow", subscription=True
    ) == utc("2025-12-23T06:00:00")
    assert accepted_value("last_reset_date", 1755370334, subscription=True) == utc(
        "2025-08-16T18:52:14"
    )


@pytest.mark.parametrize("value", ["2025-03-30T02:30:00", "2025-03-30 02:00:00"])
def test_dst_nonexistent_time_is_rejected(value):
    assert only_reason(user(1, created_at=value), "Europe/Berlin") == (
        "created_at",
        f"{json.dumps(value)} is ambiguous or does not exist in Europe/Berlin (DST change)",
    )


def test_dst_ambiguous_time_is_rejected():
    assert only_reason(user(1, created_at="2025-10-26T02:30:00"), "Europe/Berlin") == (
        "created_at",
        '"2025-10-26T02:30:00" is ambiguous or does not exist in Europe/Berlin (DST change)',
    )


def test_times_next_to_a_dst_change_are_accepted():
    assert accepted_value("created_at", "2025-03-30T01:59:59", "Europe/Berlin") == utc(
        "2025-03-30T00:59:59"
    )
    assert accepted_value("created_at", "2025-03-30T03:00:00", "Europe/Berlin") == utc(
        "2025-03-30T01:00:00"
    )
    # the same wall time with an explicit offset is unambiguous
    assert accepted_value("created_at", "2025-10-26T02:30:00+01:00", "Europe/Berlin") == utc(
        "2025-10-26T01:30:00"
    )


def test_non_finite_epoch_seconds_are_rejected_not_dropped():
    # a file holding them is refused (`test_strict_json.py`); any other source's are no instant
    outcome = validate([user(1, created_at=math.nan), user(2, created_at=math.inf)])
    assert outcome.valid.empty
    assert reasons(outcome) == [
        (0, "created_at", "epoch seconds NaN are out of range" + OUT_OF_YEARS),
        (1, "created_at", "epoch seconds Infinity are out of range" + OUT_OF_YEARS),
    ]


@pytest.mark.parametrize(
    "column, value, expected, subscription",
    [
        ("user_id", "123", 123, False),
        ("user_id", "0042", 42, False),  # leading zeros change no integer's meaning
        ("user_id", 5836464178.0, 5836464178, False),
        ("user_id", 2**63 - 1, 2**63 - 1, False),
        ("total_requests", "36", 36, False),
        ("total_requests", 5.0, 5, False),
        ("total_requests", "0", 0, False),
        ("daily_requests", "10", 10, True),
        ("daily_requests", 7.0, 7, True),
        ("referrals_count", "3", 3, True),
        ("referred_by_user_id", "1650423192", 1650423192, True),
        ("referred_by_user_id", 1650423192.0, 1650423192, True),
    ],
)
def test_numeric_coercions(column, value, expected, subscription):
    if column == "user_id":
        outcome = validate([{"user_id": value}])
        assert outcome.rejects.empty
        got = outcome.valid.iloc[0]["user_id"]
    else:
        got = accepted_value(column, value, subscription=subscription)
    assert got == expected


@pytest.mark.parametrize(
    "entry, field, shown",
    [
        (user(1, total_requests=5.5), "total_requests", "5.5"),
        (user(1, total_requests="5.0"), "total_requests", '"5.0"'),
        (user(1, total_requests="1e3"), "total_requests", '"1e3"'),
        # int() reads these too; README promises strings of ASCII digits only
        ({"user_id": " 123 "}, "user_id", '" 123 "'),
        ({"user_id": "+124"}, "user_id", '"+124"'),
        ({"user_id": "5004\n"}, "user_id", '"5004\\n"'),
        (user(1, total_requests="1_000"), "total_requests", '"1_000"'),
        (user(1, total_requests="-3"), "total_requests", '"-3"'),
        (user(1, subscription={"referrals_count": "\u0663"}), "referrals_count", '"٣"'),
        (user(1, subscription={"daily_requests": 0.1}), "daily_requests", "0.1"),
        (user(1, subscription={"referred_by": 16.5}), "referred_by_user_id", "16.5"),
        ({"user_id": 5836464178.5}, "user_id", "5836464178.5"),
    ],
)
def test_non_integral_numbers_are_rejected(entry, field, shown):
    assert only_reason(entry) == (field, f"expected a whole number, got {shown}")


def test_referrer_must_be_a_positive_id():
    assert only_reason(user(1, subscription={"referred_by": 0})) == (
        "referred_by_user_id",
        "must be a positive Telegram id",
    )


def test_integer_columns_are_nullable_int64():
    outcome = validate([user(1, total_requests="5"), user(2)])
    assert str(outcome.valid["user_id"].dtype) == "Int64"
    assert str(outcome.valid["total_requests"].dtype) == "Int64"
    assert outcome.valid["total_requests"].iloc[0] == 5
    assert pd.isna(outcome.valid["total_requests"].iloc[1])


@pytest.mark.parametrize(
    "tier, name",
    [
        ("free", "FREE"),
        ("premium", "PREMIUM"),
        ("pro", "PRO"),
        ("PREMIUM", "PREMIUM"),
        ("Premium", "PREMIUM"),
        ("FrEe", "FREE"),
        ("FREE", "FREE"),
    ],
)
def test_tiers_in_any_case_become_enum_names(tier, name):
    assert accepted_value("tier", tier, subscription=True) == name


def test_absent_and_null_values_stay_missing_without_a_reject():
    outcome = validate([user(1, language=None, created_at=None, subscription={"tier": None})])
    assert outcome.rejects.empty
    row = outcome.valid.iloc[0]
    assert pd.isna(row["language"]) and pd.isna(row["created_at"]) and pd.isna(row["tier"])


# --- accepted + rejected = input -----------------------------------------------------------------


NASTY = [
    GOOD,  # 0 accepted
    GOOD,  # 1 duplicate user_id
    {"user_id": "42", "subscription": {"tier": "Pro", "referral_code": "AAAA0001"}},  # 2 accepted
    None,  # 3 not an object
    [],  # 4 not an object
    {"user_id": 43, "subscription": {"tier": "gold"}},  # 5 unknown tier
    {"user_id": 44, "created_at": "2025-02-30", "total_requests": -1},  # 6 two reasons
    {"user_id": 45, "subscription": {"referral_code": "AAAA0001"}},  # 7 code taken
    {"user_id": 42},  # 8 duplicate of 2 (an int this time)
    {"user_id": 46, "faceit_nickname": "x" * 256, "language": "toolonglanguage"},  # 9 two reasons
    {"user_id": 47, "language": "en", "created_at": 1755370334},  # 10 accepted
    {"user_id": 48, "subscription": "pro"},  # 11 subscription not an object
    {"user_id": 10**30},  # 12 beyond 64 bits
    {},  # 13 no user_id
    {"user_id": 49, "faceit_nickname": "a\x00"},  # 14 NUL
    {"user_id": 50, "subscription": None, "unknown": 1},  # 15 accepted
    "user",  # 16 not an object
    {"user_id": -1, "language": 7},  # 17 two reasons
    {"user_id": 51, "created_at": "2025-08-16T18:52:14.438485Z"},  # 18 accepted
    {"user_id": 43, "subscription": {"tier": "free"}},  # 19 duplicate of a rejected entry
]


def test_accepted_plus_rejected_equals_input_on_a_nasty_file():
    outcome = validate(NASTY)
    assert outcome.input_count == len(NASTY) == 20
    assert outcome.valid.index.tolist() == [0, 2, 10, 15, 18]
    assert outcome.valid["user_id"].tolist() == [5836464178, 42, 47, 50, 51]
    assert sorted(set(outcome.rejects["source_index"])) == [
        1, 3, 4, 5, 6, 7, 8, 9, 11, 12, 13, 14, 16, 17, 19
    ]
    assert outcome.rejected_count == 15
    assert_invariant(outcome)
    per_entry = outcome.rejects.groupby("source_index")["field"].apply(sorted).to_dict()
    assert per_entry[6] == ["created_at", "total_requests"]
    assert per_entry[9] == ["faceit_nickname", "language"]
    assert per_entry[17] == ["language", "user_id"]
    assert per_entry[19] == ["user_id"]  # the first entry with id 43 wins even though rejected
    for index, raw in zip(outcome.rejects["source_index"], outcome.rejects["raw"]):
        assert json.loads(raw) == NASTY[index]


def test_invariant_holds_on_keyed_layout_with_bad_keys():
    id_keys = ["1", "2", "x", "4"]
    entries = [{"language": "en"}, {"user_id": 3}, {}, "not an object"]
    outcome = validate(entries, id_keys=id_keys)
    assert outcome.valid["user_id"].tolist() == [1]
    assert reasons(outcome) == [
        (1, "user_id", 'user_id 3 differs from its key "2"'),
        (2, "user_id", 'key "x" names no user: the bot reads this layout by the user id written in plain digits '
                       "(1 to 9223372036854775807, no leading zero, sign, space or point), so it never reads this entry"),
        (3, "(entry)", 'entry is not an object: got "not an object"'),
    ]
    assert_invariant(outcome)


# --- property tests -----------------------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4),
    max_leaves=12,
)
# Values more likely to reach deep into coercion than arbitrary JSON.
TRICKY = st.sampled_from(
    [
        "2025-08-16", "2025-02-30", "2025-03-30T02:30:00", "2025-08-16T18:52:14.123456789Z",
        "2025-08-16Z", "2025-08", "20250816T101010+0300", "24:00", "-12", "+03:00", " Pro ",
        "PREMIUM", "0", "-1", "9" * 30, "1e3", "\x00", "", " ", "x" * 300, 2**63, 2**64, -(2**63),
        1e20, -1e20, 1.0000001, 1755370334.438485, float("inf"), -0.0, 2**31,
    ]
)
ANY_VALUE = JSON | TRICKY
FIELD_PATHS = [(f.source_key, False) for f in USER_FIELDS] + [
    (f.source_key, True) for f in SUBSCRIPTION_FIELDS
] + [("subscription", False)]


def _finite(value):
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list):
        return all(_finite(v) for v in value)
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    return True


def _check_outcome(outcome, entries):
    assert_invariant(outcome)
    assert outcome.input_count == len(entries)
    mapped = map_frames(outcome.valid)  # whatever validation accepts, the mapper maps
    assert len(mapped.users) == len(mapped.subscriptions) == len(outcome.valid)
    tiers = mapped.subscriptions["tier"]  # an enum name, or null where the entry gave null (never a default for it)
    assert mapped.users["id"].is_unique and (tiers.isin(["FREE", "PREMIUM", "PRO"]) | tiers.isna()).all()
    assert (outcome.rejects["reason"].str.len() > 0).all()
    assert (outcome.rejects["field"].str.len() > 0).all()
    for index, raw in zip(outcome.rejects["source_index"], outcome.rejects["raw"]):
        if _finite(entries[index]):
            assert json.loads(raw) == entries[index]


PROPERTY_SETTINGS = settings(
    max_examples=examples(200), deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@PROPERTY_SETTINGS
@given(entries=st.lists(ANY_VALUE, min_size=1, max_size=3), keyed=st.booleans())
def test_any_json_value_as_a_user_entry(entries, keyed):
    id_keys = [str(i + 1) for i in range(len(entries))] if keyed else None
    outcome = validate(entries, id_keys=id_keys)
    _check_outcome(outcome, entries)


@PROPERTY_SETTINGS
@given(
    path=st.sampled_from(FIELD_PATHS),
    value=ANY_VALUE,
    source_timezone=st.sampled_from(["UTC", "Europe/Berlin", "America/New_York"]),
)
def test_any_json_value_in_a_known_field(path, value, source_timezone):
    key, in_subscription = path
    entry = json.loads(json.dumps(GOOD))
    if in_subscription:
        entry["subscription"][key] = value
    else:
        entry[key] = value
    entries = [{"user_id": 1}, entry]  # the neighbour comes first: a repeated id rejects `entry`
    outcome = validate(entries, source_timezone)
    _check_outcome(outcome, entries)
    assert 0 in outcome.valid.index  # the neighbour is never harmed
    if 1 in outcome.rejects["source_index"].tolist():
        assert set(outcome.rejects["field"]) <= {
            f.name for f in USER_FIELDS + SUBSCRIPTION_FIELDS
        } | {"subscription"}


def test_an_unpaired_surrogate_rejects_its_entry_and_keeps_the_others():
    raw = b'{"users": [{"user_id": 1, "faceit_nickname": "ok"}, {"user_id": 2, "faceit_nickname": "bad\\ud800"}]}'
    source = parse_source(raw, "surrogate.json")

    outcome = validate_entries(source)

    assert source.lenient_parse
    assert list(outcome.valid["user_id"]) == [1]
    reject = outcome.rejects.iloc[0]
    assert (reject["source_index"], reject["field"]) == (1, "(entry)")
    assert reject["reason"] == "holds the unpaired UTF-16 surrogate \\ud800, which is not text"
    assert json.loads(reject["raw"]) == {"user_id": 2, "faceit_nickname": "bad\\ud800"}
