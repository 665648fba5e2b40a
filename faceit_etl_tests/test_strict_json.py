"""NaN, Infinity and -Infinity are no JSON; the standard parser (the fallback for long integers and
lone surrogates) reads them anyway. A file holding one is refused where it stands, never loaded."""

from __future__ import annotations

import pytest

from faceit_etl.source import SourceError, parse_source, read_source

MESSAGE = "{name}: not valid JSON at line {line}, column {column} (character {at}): {constant} is not JSON (a non-standard constant, no number)"


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
@pytest.mark.parametrize("where", ["total_requests", "created_at", "unknown_key"])
def test_a_non_standard_constant_refuses_the_file_naming_its_position(constant, where):
    text = '{"users": [{"user_id": 1, "language": "NaN \\" Infinity"},\n {"user_id": 2, "%s": %s}]}' % (where, constant)
    at = text.index(constant, text.index("\n"))
    with pytest.raises(SourceError) as caught:
        parse_source(text.encode(), "bot.json")
    line_start = text.index("\n") + 1
    assert str(caught.value) == MESSAGE.format(
        name="bot.json", line=2, column=at - line_start + 1, at=at, constant=constant
    )


def test_a_constant_in_a_file_read_in_pieces_is_refused_too(tmp_path):
    path = tmp_path / "big.json"
    entries = ",".join(f'{{"user_id": {i}, "language": "en"}}' for i in range(1, 200))
    text = '{"users": [' + entries + ', {"user_id": 500, "total_requests": NaN}]}'
    path.write_text(text)
    with pytest.raises(SourceError) as caught:
        read_source(path, piece_bytes=256)
    at = text.index("NaN")
    assert str(caught.value) == MESSAGE.format(name=path, line=1, column=at + 1, at=at, constant="NaN")


def test_the_words_inside_strings_are_text():
    source = parse_source(b'[{"user_id": 1, "faceit_nickname": "NaN", "language": "-Infinity"}]', "bot.json")
    assert source.entries == [{"user_id": 1, "faceit_nickname": "NaN", "language": "-Infinity"}]
