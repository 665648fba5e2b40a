"""A reject's reason is true and names the user: the earlier holder of a referral code is named
and is one that is accepted; an entry refused before coercion still shows its valid user_id."""

from __future__ import annotations

import json

from faceit_etl.source import SourceData, parse_source
from faceit_etl.validation import validate_entries


def rows(outcome):
    return [
        (r["source_index"], r["user_id"], r["field"], r["reason"])
        for r in outcome.reject_records()
    ]


class InBatches(SourceData):
    def batches(self, size):
        for offset in range(0, len(self.entries), size):
            yield offset, self.entries[offset : offset + size], None


def held(code, index, user_id):
    ordinal = {0: "1st", 1: "2nd", 2: "3rd"}.get(index, f"{index + 1}th")
    return f"referral_code {json.dumps(code)} is already held by entry {index + 1} (the {ordinal} in the file, user_id {user_id}), which is accepted"


ENTRIES = [
    {"user_id": 1, "subscription": {"referral_code": "CAFEBABE", "daily_requests": -1}},
    {"user_id": 2, "subscription": {"referral_code": "CAFEBABE"}},
    {"user_id": 3, "subscription": {"referral_code": "CAFEBABE"}},
    {"user_id": 2, "subscription": {"referral_code": "FEEDFACE"}},  # a repeated id holds no code
    {"user_id": 4, "subscription": {"referral_code": "FEEDFACE"}},
]
EXPECTED = [
    (0, 1, "daily_requests", "must not be negative"),
    (2, 3, "referral_code", held("CAFEBABE", 1, 2)),
    (3, 2, "user_id", "user_id seen before: the first entry wins, as in the bot"),
]


def test_a_code_held_only_by_a_rejected_entry_is_free_and_a_taken_one_names_its_accepted_holder():
    outcome = validate_entries(SourceData(entries=ENTRIES, layout="test"))
    assert rows(outcome) == EXPECTED
    assert outcome.valid["user_id"].tolist() == [2, 4]
    assert outcome.valid["referral_code"].tolist() == ["CAFEBABE", "FEEDFACE"]


def test_the_same_verdicts_across_batch_boundaries():
    for size in (1, 2, 3):
        outcome = validate_entries(InBatches(entries=ENTRIES, layout="test"), batch_size=size)
        assert rows(outcome) == EXPECTED
        assert outcome.valid["user_id"].tolist() == [2, 4]


def test_an_entry_refused_before_coercion_shows_its_valid_user_id():
    raw = (
        b'[{"user_id": 5039, "language": "en", "language": "ru"},'
        b' {"user_id": 5040, "faceit_nickname": "\\ud800"},'
        b' {"user_id": 5041, "user_id": 5041, "language": "en"},'
        b' {"user_id": 5042, "user_id": 5043},'
        b' {"user_id": "x", "a": 1, "a": 2}]'
    )
    outcome = validate_entries(parse_source(raw, "bot.json"))
    assert [(r[0], r[1]) for r in rows(outcome)] == [(0, 5039), (1, 5040), (2, 5041), (3, None), (4, None)]


def test_a_keyed_entry_refused_before_coercion_shows_its_key_as_user_id():
    raw = b'{"users": {"5050": {"language": "en", "language": "ru"}, "5051": {"user_id": 5051}}}'
    outcome = validate_entries(parse_source(raw, "bot.json"))
    assert rows(outcome) == [
        (0, 5050, "(entry)", 'key "language" appears more than once in the entry: which value is meant is ambiguous')
    ]
    assert outcome.valid["user_id"].tolist() == [5051]
