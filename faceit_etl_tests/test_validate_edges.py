"""Validation's edges: a lone surrogate anywhere in an entry, and what a reject says about the entry
it refuses (its user id, its raw JSON), whatever the entry holds."""

from __future__ import annotations

import json


from faceit_etl.source import parse_source
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
