"""An entry's verdict is its own: validated alone or among any others, in one batch or across batch
boundaries of a file read in pieces, it is accepted with the same values or rejected for the same
reasons. Only the rules about other entries (a repeated user_id or referral_code) may differ, so
the entries here hold distinct ids and codes."""

from __future__ import annotations

import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from faceit_etl.source import SourceData
from faceit_etl.validation import validate_entries
from faceit_etl_tests.conftest import examples

INTEGERS = [
    0, 1, -1, 7, "12", "0042", " 1", "1 ", "+1", "-1", "1_000", "١٢٣", "5004\n", "", "x", 1.0, 1.5,
    2**53 - 1, float(2**53), 2**63 - 1, 2**63, "9223372036854775808", True, None, [1], {"a": 1},
]
TIMESTAMPS = [
    "2300-01-01T00:00:00", "0001-01-01T00:00:00", "0001-01-02", "1000-01-01", "1677-09-21T00:00:00",
    "2262-04-12", "9999-12-30", "9999-12-31T23:59:59", "2025-01-01T00:00:00.1234567",
    "2025-01-01T00:00:00.123456789", "2025-01-01T00:00:00.9999999", "2025-01-01T00:00:00.123456000",
    "2025-01-01t10:00:00", "2025-01-01T00:00:00,5", "2025-W01-1", "2025-001", "2025-01-01T00:00:00+01:00:30",
    "2300-01-01T00:00:00Z", "0001-01-01T00:00:00+00:00", "0001-01-01T00:30:00+01:00",
    "9999-12-31T23:59:59-01:00", "0000-01-01", "2025-02-30", "2025-03-30T02:30:00", "2025-10-26T02:30:00",
    "2025-11-02T01:30:00", "2025-08-16 18:52:14.438485+03:00", "2025-08-16T18:52:14z", "2025-08",
    "20250816T101010", " 2025-08-16", "2025-08-16\n", "yesterday", "", 1755370334, 1755370334.5,
    1755370334.4384851, 1e12, -62135596800, -62135596801, 253402300799, 1e300, True, None, {"d": 1},
]
TIERS = ["free", "Pro", "PREMIUM", " pro", "pro\u00a0", "\tpro\n", "premıum", "gold", "", 1, True, None]
FLAGS = [True, False, None, "true", "false", 1, 0, "yes"]
TEXTS = ["a", "", "x" * 11, "x" * 256, "a\x00", "ру", 5, True, None, ["a"]]

FIELDS = {
    "faceit_player_id": TEXTS, "faceit_nickname": TEXTS, "last_checked_match_id": TEXTS,
    "waiting_for_nickname": FLAGS, "language": TEXTS, "notifications_enabled": FLAGS,
    "total_requests": INTEGERS, "created_at": TIMESTAMPS, "last_active_at": TIMESTAMPS,
}
SUBSCRIPTION = {
    "tier": TIERS, "expires_at": TIMESTAMPS, "auto_renew": FLAGS, "payment_method": TEXTS,
    "daily_requests": INTEGERS, "last_reset_date": TIMESTAMPS, "referred_by": INTEGERS,
    "referrals_count": INTEGERS,
}


def _fields(table: dict) -> st.SearchStrategy[dict]:
    return st.fixed_dictionaries({}, optional={name: st.sampled_from(values) for name, values in table.items()})


@st.composite
def entries(draw) -> list[dict]:
    """Entries with nasty values in every field, each with its own id and referral code."""
    count = draw(st.integers(min_value=1, max_value=7))
    out = []
    for number in range(count):
        entry = draw(_fields(FIELDS))
        entry["user_id"] = draw(st.sampled_from([1000 + number, str(1000 + number)]))
        subscription = draw(st.none() | _fields(SUBSCRIPTION))
        if subscription is not None:
            if draw(st.booleans()):
                subscription["referral_code"] = f"CODE{number}"
            entry["subscription"] = subscription
        out.append(entry)
    return out


def verdicts(outcome, positions) -> list:
    """Per entry: ("rejected", sorted (field, reason)) or ("accepted", its row's values)."""
    rejects = outcome.rejects
    result = []
    for index in positions:
        mine = rejects[rejects["source_index"] == index]
        if len(mine):
            result.append(("rejected", sorted(zip(mine["field"], mine["reason"]))))
        else:
            row = outcome.valid.loc[index]
            result.append(("accepted", {k: (None if pd.isna(v) else v) for k, v in row.items()}))
    return result


def alone(entry, source_timezone):
    return verdicts(validate_entries(SourceData(entries=[entry], layout="test"), source_timezone), [0])[0]


ZONES = st.sampled_from(["UTC", "Europe/Berlin", "America/New_York"])


@settings(max_examples=examples(60), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch=entries(), source_timezone=ZONES)
def test_each_entrys_verdict_is_the_same_alone_as_among_others(batch, source_timezone):
    together = validate_entries(SourceData(entries=batch, layout="test"), source_timezone)
    assert verdicts(together, range(len(batch))) == [alone(entry, source_timezone) for entry in batch]


class InBatches(SourceData):
    """Entries handed over `size` at a time, as a file read in pieces is."""

    def batches(self, size):
        for offset in range(0, len(self.entries), size):
            yield offset, self.entries[offset : offset + size], None


@settings(max_examples=examples(30), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch=entries(), source_timezone=ZONES, batch_size=st.integers(min_value=1, max_value=3))
def test_each_entrys_verdict_is_the_same_across_batch_boundaries(batch, source_timezone, batch_size):
    source = InBatches(entries=batch, layout="test")
    together = validate_entries(source, source_timezone, batch_size=batch_size)
    assert verdicts(together, range(len(batch))) == [alone(entry, source_timezone) for entry in batch]


def test_a_nanosecond_neighbour_does_not_move_the_range_of_years():
    """The reported case: a 7-digit fraction made pandas parse the whole column in nanoseconds,
    whose range ends in 2262, so a year-2300 neighbour was refused as out of range."""
    batch = [{"user_id": 1, "created_at": "2300-01-01T00:00:00"}, {"user_id": 2, "created_at": "2025-01-01T00:00:00.1234567"},
             {"user_id": 3, "created_at": "0001-01-01T00:00:00"}]
    outcome = validate_entries(SourceData(entries=batch, layout="test"))
    assert outcome.valid["user_id"].tolist() == [1, 3]
    assert outcome.valid["created_at"].tolist() == [
        pd.Timestamp("2300-01-01T00:00:00Z"), pd.Timestamp("0001-01-01T00:00:00Z")
    ]
    assert outcome.rejects[["source_index", "field", "reason"]].values.tolist() == [
        [1, "created_at", 'timestamp "2025-01-01T00:00:00.1234567" has more precision than the column holds '
         "(microseconds): rounding would change the value"],
    ]
