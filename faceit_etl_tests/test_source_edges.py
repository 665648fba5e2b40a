"""Reading the bot's file at its edges: a repeated top-level key in any spelling of JSON is refused
naming the exact place, and the fast check for repeats is exact on documents too deep to write back."""

from __future__ import annotations

import bz2
import gzip
import io
import json
import lzma
import sys
import zipfile

import pytest
from hypothesis import given
from hypothesis import strategies as st

from faceit_etl.source import SourceError, parse_source, read_source
from faceit_etl.source import repeats
from faceit_etl.source.repeats import loses_pairs, pair_count, top_level_repeat


def refusal(name: str, line: int, column: int) -> str:
    return (
        f"data.json: the top-level key {json.dumps(name)} appears more than once (again at line {line}, column "
        f"{column}): which one is meant is ambiguous, so nothing is read"
    )


@pytest.mark.parametrize(
    "text, name, line, column",
    [
        ('{"users":[{"user_id":1}],"users":[]}', "users", 1, 26),  # compact: no space after `:` or `,`
        ('{"analytics":{},"users":[],"analytics":1}', "analytics", 1, 28),
        ('\n{"users": [],\n"users": []}', "users", 3, 1),  # a line break as the very first character
        ('\n{"users": [], "users": []}', "users", 2, 15),  # the only line break before it is the first character
        ('\n\n  {"users": [], "users": []}', "users", 3, 17),
    ],
    ids=["compact", "compact, after another key", "first character a line break", "one line break first", "blank lines before"],
)
def test_a_repeated_top_level_key_is_refused_at_its_line_and_column_however_the_json_is_spaced(
    text, name, line, column
):
    with pytest.raises(SourceError) as caught:
        parse_source(text.encode(), "data.json")
    assert str(caught.value) == refusal(name, line, column)


def test_a_repeated_top_level_key_is_found_past_an_integer_too_long_for_python():
    """An integer of more digits than Python converts stands before the repeat: the file is still
    refused for the repeat, naming it, instead of failing on the integer."""
    text = '{"users": [{"user_id": ' + "7" * 5000 + '}],\n"users": []}'
    with pytest.raises(SourceError) as caught:
        parse_source(text.encode(), "data.json")
    assert str(caught.value) == refusal("users", 2, 1)
    assert top_level_repeat(text) == ("users", text.index('"users"', 10))


def _nested(depth: int, innermost: str) -> str:
    return '{"a": ' * depth + innermost + "}" * depth


@pytest.mark.parametrize("depth", [300, 600])
def test_the_check_for_lost_pairs_is_exact_on_documents_too_deep_to_write_back(depth):
    """Beyond orjson's 254 levels the document is walked: pairs are lost exactly when a name repeats."""
    plain = _nested(depth, '{"x": 1, "y": [{"p": 1, "q": 2}, {"r": 3}]}')
    repeated = _nested(depth, '{"x": 1, "x": 2, "y": [{"p": 1, "q": 2}, {"r": 3}]}')
    assert loses_pairs(plain.encode(), json.loads(plain)) is False
    assert loses_pairs(repeated.encode(), json.loads(repeated)) is True


def _zipped(data: bytes) -> bytes:
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("data.json", data)
    return archive.getvalue()


@pytest.mark.parametrize(("compress", "kind"), [
    (gzip.compress, "gzip"), (bz2.compress, "bzip2"), (lzma.compress, "xz"), (_zipped, "zip"),
    (lambda data: b"\x28\xb5\x2f\xfd" + data, "zstd"),  # its frame's magic number: no zstd in Python 3.11
])
def test_a_compressed_file_is_refused_naming_its_compression(compress, kind):
    """Read as text, a compressed file would only be "not valid UTF-8": the refusal names what it is."""
    with pytest.raises(SourceError) as caught:
        parse_source(compress(b'{"users": []}'), "data.json")
    assert str(caught.value) == f"data.json: {kind}-compressed, not the bot's JSON text; decompress it first"


@pytest.mark.parametrize("digits", [25, 5000], ids=["beyond 64 bits", "beyond Python's digit limit"])
def test_a_huge_integer_where_the_users_belong_is_called_a_number(digits):
    number = b"7" * digits
    with pytest.raises(SourceError) as caught:
        parse_source(b'{"users": ' + number + b"}", "data.json")
    assert str(caught.value) == (
        "data.json: 'users' is a number, expected a list of users or an object keyed by user id"
    )
    with pytest.raises(SourceError) as caught:
        parse_source(number, "data.json")
    assert str(caught.value) == (
        "data.json: top level is a number, expected an object with a 'users' key or a list of users"
    )


# Strings full of what could fool a byte count: quotes, backslash runs, colons.
tricky_json = st.recursive(
    st.none() | st.integers(-5, 5) | st.text(alphabet='ab:"\\ {}', max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(alphabet='k:"\\', max_size=4), inner, max_size=3),
    max_leaves=10,
)


@given(document=tricky_json, indent=st.sampled_from([None, 2]))
def test_the_pair_count_sees_through_escaped_quotes_and_colons_in_strings(document, indent):
    """The count that decides whether a name was repeated counts only the real name/value pairs."""
    pairs = 0

    def count(found):
        nonlocal pairs
        pairs += len(found)
        return dict(found)

    text = json.dumps(document, indent=indent)
    json.loads(text, object_pairs_hook=count)
    assert pair_count(text.encode()) == pairs


@pytest.mark.parametrize("run", range(4))
def test_the_pair_count_tells_an_odd_run_of_backslashes_before_a_quote_from_an_even_one(run):
    """A name holding `run` backslashes, a quote and a colon (an odd run before that quote, which it
    escapes) and a value ending in `run` backslashes (an even run before its closing quote): with a
    second name, two pairs."""
    text = json.dumps({"a" + "\\" * run + '":b': "c" + "\\" * run, "d": 1})
    assert text.count("\\" * (2 * run + 1) + '"') == 1
    assert pair_count(text.encode()) == 2


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 64])
def test_the_pair_count_is_the_same_however_the_text_is_cut_into_chunks(monkeypatch, chunk):
    """Files of many megabytes are counted a chunk at a time: quotes, escapes and colons that a cut
    separates are counted as in one piece."""
    document = [{"a\\\":b": ["x:y", {"c": "\\\\", 'd"': 1}], "e": {"f": "g:h", "i": None}}] * 5
    text = json.dumps(document, indent=1).encode()
    monkeypatch.setattr(repeats, "_CHUNK", chunk)
    assert pair_count(text) == 5 * 6


@pytest.mark.parametrize("text, pairs", [(b'"a:b"', 0), (b'"\\\\:"', 0), (b'[":", {"k": ":"}]', 1)])
def test_the_pair_count_reads_a_text_from_its_first_byte(text, pairs):
    assert pair_count(text) == pairs


def test_an_integer_of_exactly_pythons_digit_limit_is_read_as_a_number_and_one_digit_more_is_kept_as_its_digits():
    limit = sys.get_int_max_str_digits()
    at_limit, over = "9" * limit, "9" * (limit + 1)

    data = parse_source(f'{{"users": [{{"user_id": {at_limit}}}, {{"user_id": -{over}}}]}}'.encode(), "<test>")

    assert data.entries[0]["user_id"] == int(at_limit)
    kept = data.entries[1]["user_id"]
    assert isinstance(kept, repeats.LongInteger) and kept.digits == f"-{over}"


def test_a_file_that_cannot_be_opened_is_named_with_the_systems_reason(tmp_path):
    loop = tmp_path / "data.json"
    loop.symlink_to(tmp_path / "other.json")
    (tmp_path / "other.json").symlink_to(loop)

    with pytest.raises(SourceError) as raised:
        read_source(loop, name="bot/data.json")

    assert str(raised.value) == "bot/data.json: cannot be read: Too many levels of symbolic links"


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 64, 1 << 18])
def test_colons_and_backslashes_are_counted_over_chunks_of_any_size(monkeypatch, chunk):
    monkeypatch.setattr(repeats, "_COUNT_CHUNK", chunk)
    text = json.dumps({"a:b": "c\\d", "users": [{"x": 1, "y": "\\:"}]}, indent=2).encode()

    assert repeats._counts(text) == (text.count(b":"), text.count(b"\\")) == (6, 4)


@pytest.mark.parametrize("chunk", [16, 1 << 18])
def test_an_indented_document_loses_pairs_exactly_when_a_name_repeats(monkeypatch, chunk):
    monkeypatch.setattr(repeats, "_COUNT_CHUNK", chunk)
    text = json.dumps({"users": [{"user_id": 1, "nick": "a:b"}, {"user_id": 2, "nick": "c"}]}, indent=2).encode()
    repeated = text.replace(b'"nick": "c"', b'"user_id": 3')

    assert not loses_pairs(text, json.loads(text))
    assert loses_pairs(repeated, json.loads(repeated))


@pytest.mark.parametrize("escape", [b"\\u003a", b"\\u003A"])
def test_a_colon_spelled_as_an_escape_in_either_case_loses_no_pair(escape):
    """Written back, the escape becomes a colon: the counts then differ though no name repeats."""
    text = b'{"users": [{"user_id": 1, "nick": "a' + escape + b'b"}]}'
    repeated = text.replace(b'"nick"', b'"user_id"')

    assert not loses_pairs(text, json.loads(text))
    assert loses_pairs(repeated, json.loads(repeated))
