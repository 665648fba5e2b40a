"""Mapping validated entries to the target's tables: column layout, the bot's defaults, row ids."""

from __future__ import annotations

import uuid

import pandas as pd
import pytest

from faceit_etl import mapping
from faceit_etl.mapping import (
    SUBSCRIPTION_COLUMNS,
    SUBSCRIPTION_ID_KIND,
    USER_COLUMNS,
    USER_ID_KIND,
    derive_ids,
    map_frames,
)
from faceit_etl.source import SourceData, read_source
from faceit_etl.validation import validate_entries
from faceit_etl.validation.fields import SUBSCRIPTION_FIELDS, USER_FIELDS
from faceit_etl_tests.conftest import FLAT_SAMPLE, NESTED_SAMPLE

FIRST_LAYOUT = [
    {
        "user_id": 5836464178,
        "faceit_player_id": "9a1f7aa5-36ea-4a28-80e6-b5d0a9d93650",
        "faceit_nickname": "ZywOo",
        "last_checked_match_id": "1-724c4487-8c1e-411a-a477-909feed3d0dd",
    },
    {"user_id": 7, "faceit_player_id": None, "faceit_nickname": None, "last_checked_match_id": None},
]


def mapped(entries):
    outcome = validate_entries(SourceData(entries=entries, layout="test"))
    assert outcome.rejects.empty, outcome.rejects.to_dict("records")
    return map_frames(outcome.valid)


def mapped_file(path):
    outcome = validate_entries(read_source(path))
    assert outcome.rejects.empty
    return map_frames(outcome.valid)


def utc(text):
    return pd.Timestamp(text, tz="UTC")


def test_target_column_layout_and_order():
    assert USER_COLUMNS == [
        "id", "user_id", "faceit_player_id", "faceit_nickname", "last_checked_match_id",
        "waiting_for_nickname", "language", "notifications_enabled", "total_requests",
        "created_at", "last_active_at",
    ]
    assert SUBSCRIPTION_COLUMNS == [
        "id", "user_id", "tier", "expires_at", "auto_renew", "payment_method", "daily_requests",
        "last_reset_date", "referred_by_user_id", "referral_code", "referrals_count",
    ]
    for path in (FLAT_SAMPLE, NESTED_SAMPLE):
        frames = mapped_file(path)
        assert list(frames.users.columns) == [*USER_COLUMNS, mapping.PRESENT]
        assert list(frames.subscriptions.columns) == [*SUBSCRIPTION_COLUMNS, mapping.PRESENT]
        assert frames.users.index.tolist() == list(range(25))
        assert frames.subscriptions.index.tolist() == list(range(25))


def test_column_types():
    frames = mapped_file(NESTED_SAMPLE)
    users, subs = frames.users.dtypes.astype(str), frames.subscriptions.dtypes.astype(str)
    assert users["user_id"] == "Int64" and users["total_requests"] == "Int64"
    assert users["waiting_for_nickname"] == "boolean"
    assert users["created_at"] == "datetime64[us, UTC]"
    assert subs["referred_by_user_id"] == "Int64" and subs["daily_requests"] == "Int64"
    assert subs["expires_at"] == "datetime64[us, UTC]" and subs["auto_renew"] == "boolean"
    # Row ids are text like the other text columns (`str`, not `string` with its own missing value).
    assert users["id"] == subs["id"] == subs["user_id"] == users["faceit_nickname"] == subs["tier"] == "str"
    assert not frames.users.isna()[["id", "user_id", "language", "total_requests"]].any().any()
    assert not frames.subscriptions[["id", "user_id", "tier", "daily_requests"]].isna().any().any()


def test_flat_sample_rows():
    frames = mapped_file(FLAT_SAMPLE)
    first = frames.users.iloc[0]
    assert first["user_id"] == 5836464178
    assert first["faceit_player_id"] == "9a1f7aa5-36ea-4a28-80e6-b5d0a9d93650"
    assert first["faceit_nickname"] == "ZywOo0"
    assert pd.isna(first["last_checked_match_id"])
    assert first["waiting_for_nickname"] == False  # noqa: E712 (pandas boolean)
    assert first["language"] == "uk"
    assert first["notifications_enabled"] == True  # noqa: E712
    assert first["total_requests"] == 36
    assert first["created_at"] == utc("2025-05-22T20:29:41.345020")
    assert pd.isna(first["last_active_at"])
    assert frames.users["user_id"].tolist()[:3] == [5836464178, 558127883, 663457405]
    # flat entries have no subscription: each gets the bot's default FREE one
    subs = frames.subscriptions
    assert subs["tier"].unique().tolist() == ["FREE"]
    assert subs["auto_renew"].tolist() == [False] * 25
    assert subs["daily_requests"].tolist() == [0] * 25
    assert subs["referrals_count"].tolist() == [0] * 25
    assert subs["referred_by_user_id"].isna().all()
    assert subs["referral_code"].isna().all() and subs["expires_at"].isna().all()
    assert frames.defaults_applied == {
        "user_subscriptions.tier": 25,
        "user_subscriptions.auto_renew": 25,
        "user_subscriptions.daily_requests": 25,
        "user_subscriptions.referrals_count": 25,
        "user_subscriptions (whole row: entry had none)": 25,
    }


def test_nested_sample_rows():
    frames = mapped_file(NESTED_SAMPLE)
    assert frames.defaults_applied == {}
    subs = frames.subscriptions
    first = subs.iloc[0]
    assert first["tier"] == "PREMIUM"
    assert first["expires_at"] == utc("2025-12-23T09:00:00")
    assert first["auto_renew"] == True  # noqa: E712
    assert first["payment_method"] == "referral_bonus"
    assert first["daily_requests"] == 167
    assert first["last_reset_date"] == utc("2025-11-12T09:00:00")
    assert pd.isna(first["referred_by_user_id"]) and pd.isna(first["referral_code"])
    second = subs.iloc[1]
    assert second["tier"] == "FREE"
    assert second["referred_by_user_id"] == 1650423192  # `referred_by` in the bot's file
    assert second["referral_code"] == "4CE848F5"
    assert second["referrals_count"] == 1
    assert subs["referred_by_user_id"].dropna().tolist() == [
        1650423192, 1650423192, 864704485, 430855499, 928579884, 1463202896, 1394656125, 1940877119
    ]
    assert set(subs["tier"]) == {"FREE", "PREMIUM"}
    assert (subs["tier"] == "PREMIUM").sum() == 5


def test_first_layout_gets_the_bots_defaults():
    frames = mapped(FIRST_LAYOUT)
    users = frames.users
    assert users["user_id"].tolist() == [5836464178, 7]
    assert users["faceit_nickname"].iloc[0] == "ZywOo"
    assert users["last_checked_match_id"].iloc[0] == "1-724c4487-8c1e-411a-a477-909feed3d0dd"
    assert users["language"].tolist() == ["ru", "ru"]
    assert users["notifications_enabled"].tolist() == [True, True]
    assert users["waiting_for_nickname"].tolist() == [False, False]
    assert users["total_requests"].tolist() == [0, 0]
    assert users["created_at"].isna().all() and users["last_active_at"].isna().all()
    subs = frames.subscriptions
    assert subs["tier"].tolist() == ["FREE", "FREE"]
    assert subs["auto_renew"].tolist() == [False, False]
    assert subs["daily_requests"].tolist() == [0, 0]
    assert subs["referrals_count"].tolist() == [0, 0]
    assert subs["referred_by_user_id"].isna().all()
    assert subs["payment_method"].isna().all() and subs["last_reset_date"].isna().all()
    assert frames.defaults_applied == {
        "users.waiting_for_nickname": 2,
        "users.language": 2,
        "users.notifications_enabled": 2,
        "users.total_requests": 2,
        "user_subscriptions.tier": 2,
        "user_subscriptions.auto_renew": 2,
        "user_subscriptions.daily_requests": 2,
        "user_subscriptions.referrals_count": 2,
        "user_subscriptions (whole row: entry had none)": 2,
    }


def test_defaults_fill_only_what_is_absent_and_are_counted():
    """A key given with null keeps its null (the bot's column holds it); only absent keys get defaults."""
    entries = [
        {"user_id": 1, "language": "en", "notifications_enabled": False, "total_requests": 9,
         "waiting_for_nickname": True,
         "subscription": {"tier": "pro", "auto_renew": True, "daily_requests": 3,
                          "referrals_count": 4}},
        {"user_id": 2, "language": None, "subscription": {"tier": "premium", "auto_renew": None}},
        {"user_id": 3, "subscription": None},
    ]
    frames = mapped(entries)
    users, subs = frames.users, frames.subscriptions
    assert users["language"].tolist()[::2] == ["en", "ru"] and pd.isna(users["language"][1])
    assert users["notifications_enabled"].tolist() == [False, True, True]
    assert users["waiting_for_nickname"].tolist() == [True, False, False]
    assert users["total_requests"].tolist() == [9, 0, 0]
    assert subs["tier"].tolist() == ["PRO", "PREMIUM", "FREE"]
    assert subs["auto_renew"].tolist()[::2] == [True, False] and pd.isna(subs["auto_renew"][1])
    assert subs["daily_requests"].tolist() == [3, 0, 0]
    assert subs["referrals_count"].tolist() == [4, 0, 0]
    assert frames.defaults_applied == {
        "users.waiting_for_nickname": 2,
        "users.language": 1,
        "users.notifications_enabled": 2,
        "users.total_requests": 2,
        "user_subscriptions.tier": 1,
        "user_subscriptions.auto_renew": 1,
        "user_subscriptions.daily_requests": 2,
        "user_subscriptions.referrals_count": 2,
        "user_subscriptions (whole row: entry had none)": 1,
    }


def test_tiers_are_the_enum_names():
    frames = mapped([
        {"user_id": i + 1, "subscription": {"tier": tier}}
        for i, tier in enumerate(["free", "premium", "pro", "PRO", "Premium"])
    ])
    assert frames.subscriptions["tier"].tolist() == ["FREE", "PREMIUM", "PRO", "PRO", "PREMIUM"]
    assert set(frames.subscriptions["tier"]) <= {"FREE", "PREMIUM", "PRO"}


def test_rejected_entries_do_not_reach_the_mapping():
    outcome = validate_entries(
        SourceData(
            entries=[{"user_id": 1}, {"user_id": 2, "subscription": {"tier": "gold"}}, {"user_id": 3}],
            layout="test",
        )
    )
    frames = map_frames(outcome.valid)
    assert frames.users["user_id"].tolist() == [1, 3]
    assert frames.subscriptions["user_id"].tolist() == frames.users["id"].tolist()


def test_no_valid_entries_map_to_empty_frames():
    outcome = validate_entries(SourceData(entries=[{"user_id": "x"}], layout="test"))
    frames = map_frames(outcome.valid)
    assert list(frames.users.columns) == [*USER_COLUMNS, mapping.PRESENT]
    assert list(frames.subscriptions.columns) == [*SUBSCRIPTION_COLUMNS, mapping.PRESENT]
    assert len(frames.users) == 0 and len(frames.subscriptions) == 0
    assert frames.defaults_applied == {}


def test_presence_bits_name_exactly_the_keys_each_entry_has():
    """Absent keys (a layout without them, a missing subscription) clear their bits; a key present
    with null sets its bit, like any value: only absent fields keep an existing row's value."""
    entries = [
        {"user_id": 1},
        {"user_id": 2, "language": None, "total_requests": 3, "subscription": None},
        {"user_id": 3, "subscription": {"tier": "pro", "expires_at": None, "referred_by": 1}},
    ]
    frames = map_frames(validate_entries(SourceData(entries=entries, layout="test")).valid)

    def present(frame, fields):
        return [sorted(f.name for i, f in enumerate(fields) if bits >> i & 1) for bits in frame[mapping.PRESENT]]

    assert present(frames.users, USER_FIELDS) == [["user_id"], ["language", "total_requests", "user_id"], ["user_id"]]
    assert present(frames.subscriptions, SUBSCRIPTION_FIELDS) == [[], [], ["expires_at", "referred_by_user_id", "tier"]]


# --- row ids -------------------------------------------------------------------------------------


def test_ids_are_deterministic_valid_v8_uuids():
    one, two = mapped_file(NESTED_SAMPLE), mapped_file(NESTED_SAMPLE)
    pd.testing.assert_frame_equal(one.users, two.users)
    pd.testing.assert_frame_equal(one.subscriptions, two.subscriptions)

    user_ids = [uuid.UUID(text) for text in one.users["id"]]
    subscription_ids = [uuid.UUID(text) for text in one.subscriptions["id"]]
    for value, text in zip(user_ids + subscription_ids, list(one.users["id"]) + list(one.subscriptions["id"])):
        assert value.version == 8
        assert value.variant == uuid.RFC_4122
        assert str(value) == text  # canonical lower-case text
    assert len(set(user_ids)) == 25 and len(set(subscription_ids)) == 25
    assert not set(user_ids) & set(subscription_ids)
    assert one.subscriptions["user_id"].tolist() == one.users["id"].tolist()


def test_ids_depend_on_the_telegram_id_not_the_position():
    forward = mapped([{"user_id": 10}, {"user_id": 20}])
    backward = mapped([{"user_id": 20}, {"user_id": 10}])
    assert forward.users["id"].tolist() == backward.users["id"].tolist()[::-1]
    assert forward.subscriptions["id"].tolist() == backward.subscriptions["id"].tolist()[::-1]
    # the same user in a different file keeps its row ids
    alone = mapped([{"user_id": 20, "language": "en"}])
    assert alone.users["id"].iloc[0] == forward.users["id"].iloc[1]
    assert alone.subscriptions["id"].iloc[0] == forward.subscriptions["id"].iloc[1]


def test_known_id_values():
    frames = mapped([{"user_id": 7}])
    assert frames.users["id"].iloc[0] == "fce17e7a-0000-8010-8000-000000000007"
    assert frames.subscriptions["id"].iloc[0] == "fce17e7a-0000-8020-8000-000000000007"
    assert frames.subscriptions["user_id"].iloc[0] == "fce17e7a-0000-8010-8000-000000000007"


def _telegram_id_of(text: str) -> int:
    value = uuid.UUID(text).int
    return ((value >> 64) & 1) << 62 | (value & ((1 << 62) - 1))


@pytest.mark.parametrize("kind", [USER_ID_KIND, SUBSCRIPTION_ID_KIND])
def test_derive_ids_across_the_whole_range(kind):
    telegram_ids = [1, 2**31 - 1, 2**31, 2**32, 2**62 - 1, 2**62, 2**63 - 1]
    series = pd.Series(pd.array(telegram_ids, dtype="Int64"), index=[5, 6, 7, 8, 9, 10, 11])
    ids = derive_ids(series, kind)
    assert ids.index.tolist() == [5, 6, 7, 8, 9, 10, 11]
    assert len(set(ids)) == len(telegram_ids)
    for telegram_id, text in zip(telegram_ids, ids):
        value = uuid.UUID(text)
        assert str(value) == text
        assert value.version == 8 and value.variant == uuid.RFC_4122
        assert value.int >> 80 == 0xFCE17E7A0000  # the tag
        assert (value.int >> 68) & 0xFF == kind  # the table byte
        assert _telegram_id_of(text) == telegram_id  # reversible: nothing of the id is lost


def test_derive_ids_for_users_and_subscriptions_never_collide():
    telegram_ids = pd.Series(pd.array([1, 2**31, 2**62, 2**63 - 1], dtype="Int64"))
    users = derive_ids(telegram_ids, USER_ID_KIND).tolist()
    subscriptions = derive_ids(telegram_ids, SUBSCRIPTION_ID_KIND).tolist()
    assert len(set(users) | set(subscriptions)) == 8
    assert users == [str(uuid.UUID(u)) for u in users]
    assert derive_ids(telegram_ids, USER_ID_KIND).tolist() == users  # deterministic
    assert users[2] == "fce17e7a-0000-8011-8000-000000000000"  # 2**62 sets the high-word bit
    assert users[3] == "fce17e7a-0000-8011-bfff-ffffffffffff"


def test_derive_ids_of_nothing():
    assert derive_ids(pd.Series(pd.array([], dtype="Int64")), USER_ID_KIND).tolist() == []


def test_mapping_defaults_match_the_brief():
    assert mapping.USER_DEFAULTS == {
        "waiting_for_nickname": False,
        "language": "ru",
        "notifications_enabled": True,
        "total_requests": 0,
    }
    assert mapping.SUBSCRIPTION_DEFAULTS == {
        "tier": "FREE",
        "auto_renew": False,
        "daily_requests": 0,
        "referrals_count": 0,
    }


def test_mapping_shares_the_columns_it_does_not_change_and_leaves_the_validated_frame_as_it_was():
    """Mapping copies only what it changes (ids, defaults): a million users' text and numbers are
    held once, not once more for the mapped frames; the validated frame is never written to."""
    import numpy as np

    from faceit_etl.generate import generate_users

    users = generate_users(50, seed=2, layout="first")
    valid = validate_entries(SourceData(entries=users, layout="test")).valid
    before = valid.copy()

    frames = map_frames(valid)

    assert np.shares_memory(frames.users["user_id"].array._data, valid["user_id"].array._data)
    assert frames.users["language"].tolist() == ["ru"] * 50  # a default, written into the mapped frame only
    pd.testing.assert_frame_equal(valid, before)
