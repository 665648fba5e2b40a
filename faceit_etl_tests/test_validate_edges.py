"""Validation's edges: a lone surrogate anywhere in an entry, and what a reject says about the entry
it refuses (its user id, its raw JSON), whatever the entry holds."""

from __future__ import annotations

import gc
import json


from faceit_etl.generate import generate_users
from faceit_etl.source import SourceData, parse_source
from faceit_etl.validation import validate_entries

SURROGATE_REASON = "holds the unpaired UTF-16 surrogate {}, which is not text"
# Where a lone surrogate can hide in an entry (`S` stands for it): each place must reject the entry.
PLACES = [
    '"S"',
    '["ok", "S"]',
    '[1, [true, ["S"]]]',
    '{"a": "S"}',
    '{"a": {"b": [null, "S"]}}',
    '{"S": 1}',
    '[{"ok": 1}, {"kS": null}]',
    '{"a": [], "b": {"c": "xSy"}}',
]


def test_a_lone_surrogate_anywhere_in_an_entry_rejects_it_and_names_the_surrogate():
    """In a list, a nested object, a key or a plain value: wherever the surrogate hides, its entry is
    refused naming it (PostgreSQL cannot store it), the others are accepted, and the raw entry is
    kept with the surrogate written out as escape text."""
    escapes = [f"\\u{0xD800 + 0x123 * i:04x}" for i in range(len(PLACES))]
    entries = [f'{{"user_id": {100 + i}, "extra": {place.replace("S", escape)}}}' for i, (place, escape) in enumerate(zip(PLACES, escapes))]
    raw = f'{{"users": [{{"user_id": 1}}, {", ".join(entries)}, {{"user_id": 2, "extra": ["fine"]}}]}}'.encode()

    outcome = validate_entries(parse_source(raw, "surrogates.json"))

    assert list(outcome.valid["user_id"]) == [1, 2]
    rejects = outcome.rejects.values.tolist()
    assert [row[:4] for row in rejects] == [
        [1 + i, 100 + i, "(entry)", SURROGATE_REASON.format(escape)] for i, escape in enumerate(escapes)
    ]
    for (*_, stored), place, escape in zip(rejects, PLACES, escapes):
        written_out = place.replace("S", escape.replace("\\", "\\\\"))  # the escape as text, backslash and all
        assert json.loads(stored)["extra"] == json.loads(written_out)


def test_the_first_lone_surrogate_of_an_entry_is_the_one_named():
    raw = b'{"users": [{"user_id": 2, "a": ["ok", {"b": "\\udc01"}], "c": "\\ud802"}]}'
    outcome = validate_entries(parse_source(raw, "surrogates.json"))
    assert outcome.rejects["reason"].tolist() == [SURROGATE_REASON.format("\\udc01")]


def test_a_reject_names_its_user_only_by_a_valid_telegram_id():
    """user_id 1 is the smallest valid id and is shown; 0 and negative ids are no user and show as null."""
    raw = b'[{"user_id": 1, "language": 5}, {"user_id": 0}, {"user_id": -3, "language": "en"}, {"user_id": 2}]'
    outcome = validate_entries(parse_source(raw, "ids.json"))
    assert [(r["source_index"], r["user_id"], r["field"]) for r in outcome.reject_records()] == [
        (0, 1, "language"), (1, None, "user_id"), (2, None, "user_id")
    ]
    assert outcome.valid["user_id"].tolist() == [2]


def test_an_entry_refused_before_coercion_names_its_user_only_by_a_valid_telegram_id():
    """An entry holding a lone surrogate is refused whole, its user_id read from the entry itself: 1 is
    the smallest valid id and is shown, 2 too; 0, no user_id at all, or one that is no whole number show
    as null."""
    raw = (
        b'[{"user_id": 1, "x": "\\ud800"}, {"user_id": 0, "x": "\\ud800"}, {"faceit_nickname": "\\ud800"}, '
        b'{"user_id": 2, "x": "\\ud800"}, {"user_id": "two", "x": "\\ud800"}, {"user_id": 3}]'
    )
    outcome = validate_entries(parse_source(raw, "ids.json"))
    assert [(r["source_index"], r["user_id"], r["field"], r["reason"]) for r in outcome.reject_records()] == [
        (i, user_id, "(entry)", SURROGATE_REASON.format("\\ud800")) for i, user_id in enumerate([1, None, None, 2, None])
    ]
    assert outcome.valid["user_id"].tolist() == [3]


def test_the_rejects_file_counts_entries_from_1_beside_the_0_based_source_index():
    """rejects.jsonl is read by people, as the UI, CLI and report are: its `entry` is their number."""
    raw = b'[{"user_id": 1}, {"user_id": 2}, {"user_id": "x"}, {"user_id": 3}, {"user_id": -4}]'
    records = validate_entries(parse_source(raw, "ids.json")).reject_records()
    assert [(r["entry"], r["source_index"]) for r in records] == [(3, 2), (5, 4)]


def test_a_rejected_entrys_raw_json_in_the_reports_keeps_a_nul_character_as_one():
    """Only the database's copy spells U+0000 out as text (jsonb cannot hold it): the raw entry that
    reports and the backup's rejects file keep is the entry itself, also when a number's text forces
    the slower writer."""
    source = parse_source(b'[{"user_id": "x", "nickname": "a\\u0000b", "total_requests": 1.5}]', "data.json")
    records = validate_entries(source).reject_records()
    assert [r["field"] for r in records] == ["user_id", "total_requests"]
    for record in records:
        assert json.loads(record["raw"]) == {"user_id": "x", "nickname": "a\x00b", "total_requests": 1.5}


def test_a_rejected_entry_too_deep_for_the_fast_writer_keeps_its_whole_raw_json():
    """Nested beyond orjson's 254 levels the raw entry is written by the standard library, in full."""
    depth = 300
    raw = b'[{"user_id": 0, "x": ' + b"[" * depth + b"]" * depth + b"}]"
    records = validate_entries(parse_source(raw, "deep.json")).reject_records()
    assert json.loads(records[0]["raw"]) == {"user_id": 0, "x": json.loads("[" * depth + "]" * depth)}


def test_a_rejected_entry_too_deep_to_write_back_is_stored_as_a_placeholder_saying_what_it_was():
    """Beyond what the standard library can write, a placeholder says why and what the entry was, so
    the reject is still stored."""
    raw = b'[{"user_id": 0, "x": ' + b"[" * 990 + b"]" * 990 + b"}, [" + b"[" * 990 + b"]" * 990 + b"]]"
    records = validate_entries(parse_source(raw, "deep.json")).reject_records()
    assert [record["raw"] for record in records] == [
        '"<entry nested too deeply to write back: an object>"', '"<entry nested too deeply to write back: a list>"'
    ]


def test_a_held_referral_code_names_its_holder_by_its_english_ordinal():
    """The reject says where the holder is in the file: "1st", "2nd", "3rd", but "11th" to "13th"."""
    ordinals = {0: "1st", 1: "2nd", 2: "3rd", 3: "4th", 9: "10th", 10: "11th", 11: "12th", 12: "13th",
                19: "20th", 20: "21st", 21: "22nd", 22: "23rd", 100: "101st", 110: "111th", 111: "112th",
                112: "113th", 120: "121st"}
    holders = [{"user_id": 1000 + i, "subscription": {"referral_code": f"{i:08X}"}} for i in range(121)]
    repeats = [{"user_id": 5000 + i, "subscription": {"referral_code": f"{i:08X}"}} for i in ordinals]

    outcome = validate_entries(SourceData(entries=holders + repeats, layout="test"))

    assert outcome.rejects["reason"].tolist() == [
        f'referral_code "{i:08X}" is already held by entry {i + 1} (the {ordinal} in the file, user_id {1000 + i}), '
        "which is accepted"
        for i, ordinal in ordinals.items()
    ]


def test_the_validate_report_counts_entries_from_1_and_shows_the_offending_value():
    """As the run page and migrate's output count them: an operator edits the entry the report names."""
    from faceit_etl.cli.report import validation_report
    from faceit_etl.mapping import map_frames

    raw = b'[{"user_id": 1}, {"user_id": 2, "subscription": {"tier": "gold"}}, {"user_id": 3}, {"user_id": "4x"}]'
    outcome = validate_entries(parse_source(raw, "bare.json"))
    report = validation_report("bare.json", "list", outcome, map_frames(outcome.valid))
    rows = report.split("## Rejects")[1].strip().splitlines()
    assert rows[0] == "| entry | user_id | field | value | reason |"
    assert [row.split(" | ")[:4] for row in rows[2:]] == [["| 2", "2", "tier", '"gold"'], ["| 4", "", "user_id", '"4x"']]


def test_judging_sets_off_no_cyclic_collection_and_turns_the_collector_back_on():
    """Collections during judging rescan every live entry, a fifth of validation's CPU time at 1M users,
    and find nothing to free: validation pauses the collector, judges every entry, and turns it on again."""
    entries = generate_users(5000, seed=3)
    collections = []

    def started(phase: str, info: dict) -> None:
        if phase == "start":
            collections.append(info["generation"])

    gc.callbacks.append(started)
    try:
        outcome = validate_entries(SourceData(entries=entries, layout="test"), batch_size=2000)
    finally:
        gc.callbacks.remove(started)
    assert len(collections) <= 1  # the one a collector turned back on may run at once, over what is left
    assert gc.isenabled()
    assert outcome.valid["user_id"].tolist() == [entry["user_id"] for entry in entries]
    assert outcome.rejects.empty
