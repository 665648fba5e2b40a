"""Pieces are about the size asked for: a big file is never parsed in one go by accident (memory),
nor cut into crumbs (speed), whatever its formatting and wherever strings fake a cut."""

from __future__ import annotations

import io
import json
import os
import re
import time
import tracemalloc

import orjson
import pytest

from faceit_etl.generate import generate_users
from faceit_etl.source import SourceError, parse_source, read_source
from faceit_etl.source.pieces import FileBytes, Pieces
from faceit_etl.validation import validate_entries

PIECE = 600


def _styles(document) -> dict[str, bytes]:
    return {
        "compact": orjson.dumps(document),
        "indent 2": orjson.dumps(document, option=orjson.OPT_INDENT_2),
        "indent 4": json.dumps(document, indent=4, ensure_ascii=False).encode(),
        "whitespace around commas": json.dumps(document, indent=1, separators=(" \t\r\n, ", ": ")).encode(),
    }


@pytest.mark.parametrize("style", ["compact", "indent 2", "indent 4", "whitespace around commas"])
def test_every_piece_but_the_last_holds_the_size_asked_for_plus_less_than_one_entry(tmp_path, style):
    users = generate_users(200, seed=3)
    for user in users[::10]:
        user["faceit_nickname"] = "}, {" * 3  # a string that fakes three cuts
    raw = _styles({"users": users, "analytics": {"daily_stats": {}}})[style]
    path = tmp_path / "data.json"
    path.write_bytes(raw)

    source = read_source(path, piece_bytes=PIECE)

    assert source.pieces is not None
    entry_bytes = max(len(json.dumps(u, indent=4, ensure_ascii=False).encode()) for u in users) + 64
    sizes = [end - start for start, end in source.pieces.bounds]
    assert all(PIECE <= size < PIECE + entry_bytes for size in sizes[:-1]), sizes
    assert 0 < sizes[-1] < PIECE + entry_bytes
    assert sum(source.pieces.counts) == 200 and all(count >= 1 for count in source.pieces.counts)


def test_a_file_with_a_byte_order_mark_reads_the_same_in_pieces(tmp_path):
    """Editors on Windows put a UTF-8 byte-order mark first: the pieces' offsets are past it, on
    the first read and when the pieces are parsed."""
    users = generate_users(100, seed=8)
    path = tmp_path / "data.json"
    path.write_bytes(b"\xef\xbb\xbf" + orjson.dumps({"users": users}, option=orjson.OPT_INDENT_2))

    source = read_source(path, piece_bytes=PIECE)

    assert source.pieces is not None and len(source.pieces.bounds) > 10
    assert [entry for _, batch, _ in source.batches(7) for entry in batch] == users


@pytest.mark.parametrize("bom", [b"", b"\xef\xbb\xbf"], ids=["no BOM", "BOM"])
@pytest.mark.parametrize(
    "before, after",
    [('{"analytics": {},\n "analytics": 1,\n "users": ', "}"), ('{"analytics": {},\n "users": ', ',\n "users": []}')],
    ids=["repeat before the list", "repeat after the list"],
)
def test_a_repeated_top_level_key_found_while_cutting_pieces_is_refused_where_a_whole_parse_says(
    tmp_path, bom, before, after
):
    """A file scanned in pieces, never held whole, names the same line and column as a
    whole parse of the same bytes, a byte-order mark or not."""
    users = generate_users(60, seed=3)
    text = bom + before.encode() + orjson.dumps(users, option=orjson.OPT_INDENT_2) + after.encode()
    path = tmp_path / "data.json"
    path.write_bytes(text)
    with pytest.raises(SourceError) as whole:
        parse_source(text, "data.json")

    with pytest.raises(SourceError) as in_pieces:
        read_source(path, name="data.json", piece_bytes=PIECE)

    assert str(in_pieces.value) == str(whole.value)
    assert "appears more than once (again at line " in str(whole.value)


@pytest.mark.parametrize("keyed", [False, True], ids=["users list", "users keyed by id"])
def test_reading_a_big_file_in_pieces_never_holds_its_bytes(tmp_path, keyed):
    """The file is scanned a stretch at a time, not read into memory: what Python allocates while
    finding the pieces is a small part of the file. The list's end is found by parsing from a cut near
    it (in the keyed layout a comma with `}` before and a key's `"` after it), never from its start,
    which would build every entry."""
    users = generate_users(3000, seed=4)
    path = tmp_path / "data.json"
    listed = {str(u["user_id"]): u for u in users} if keyed else users
    path.write_bytes(orjson.dumps({"users": listed}, option=orjson.OPT_INDENT_2))
    size = path.stat().st_size

    tracemalloc.start()
    try:
        source = read_source(path, piece_bytes=16 << 10)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert source.pieces is not None and source.entry_count == 3000 and size > 2 << 20
    assert peak < size / 4, f"peak {peak} bytes while reading a file of {size} bytes"


def test_the_keys_beside_a_big_keyed_list_are_named_as_beside_a_list(tmp_path):
    users = generate_users(40, seed=6)
    path = tmp_path / "data.json"
    path.write_bytes(orjson.dumps({"users": {str(u["user_id"]): u for u in users}, "analytics": {}, "version": 2}))

    source = read_source(path, piece_bytes=PIECE)

    assert source.pieces is not None and source.entry_count == 40
    assert source.ignored_top_level_keys == ["analytics", "version"]


def test_a_rewrite_in_place_with_its_mtime_put_back_after_the_pieces_are_found_is_refused(tmp_path):
    """The same inode, size and mtime over other bytes: only the change time tells, and the pieces, found
    in the old bytes, must not be read from the new ones."""
    path = tmp_path / "data.json"
    raw = orjson.dumps({"users": generate_users(40, seed=7)})
    path.write_bytes(raw)
    source = read_source(path, piece_bytes=PIECE)
    assert source.pieces is not None
    before = os.stat(path)
    time.sleep(0.01)  # the change time's clock must move on
    with path.open("r+b") as handle:  # in place: the same inode
        handle.write(raw.replace(b"user_id", b"user_ID"))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.stat(path)
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (before.st_ino, before.st_size, before.st_mtime_ns)

    with pytest.raises(SourceError, match="changed since it was first read; run again"):
        list(source.batches())


def test_a_file_cut_short_while_it_is_scanned_reads_short_and_never_kills_the_process(tmp_path):
    """The bot rewrites its file in place; a file mapped into memory and cut short meanwhile would
    kill the process (SIGBUS) at the first page past its new end. Read where asked for, it reads
    short, and the file is then refused as changed while read."""
    path = tmp_path / "data.json"
    path.write_bytes(orjson.dumps({"users": generate_users(400, seed=6)}, option=orjson.OPT_INDENT_2))
    size = path.stat().st_size
    with path.open("rb") as handle:
        raw = FileBytes(handle.fileno(), size)
        head = raw[0:100]
        os.truncate(path, size // 2)

        assert raw[size - 100 : size] == b"" and len(raw[size // 2 - 10 : size]) == 10
        assert raw.find(b",", size // 2, size) == -1 and head == path.read_bytes()[:100]


def test_a_file_changed_while_its_pieces_are_found_is_refused(tmp_path, monkeypatch):
    from faceit_etl.source import reader

    path = tmp_path / "data.json"
    path.write_bytes(orjson.dumps({"users": generate_users(200, seed=6)}, option=orjson.OPT_INDENT_2))
    found = reader.find_pieces

    def rewritten_meanwhile(raw, piece_bytes, begin):
        pieces = found(raw, piece_bytes, begin)
        with path.open("ab") as handle:
            handle.write(b" ")
        return pieces

    monkeypatch.setattr(reader, "find_pieces", rewritten_meanwhile)
    with pytest.raises(SourceError, match="data.json: changed while it was read; run again"):
        read_source(path, name="data.json", piece_bytes=PIECE)


def test_an_entry_nested_within_the_fast_parsers_depth_reads_in_pieces_as_any_entry(tmp_path):
    """A piece whose names do not repeat is parsed once, by orjson (to 1024 levels), and its entries handed
    over as they are: never parsed again by the standard parser nor walked for repeats, which stop short
    of 1000 levels (Python's recursion limit) and would refuse or fail on such an entry."""
    depth = 1000
    entries = [json.dumps({"user_id": i, "faceit_nickname": "p" * 50}) for i in range(1, 11)]
    entries[4] = '{"user_id": 5, "x": ' + "[" * depth + "]" * depth + "}"
    path = tmp_path / "data.json"
    path.write_text('{"users": [' + ", ".join(entries) + "]}")

    source = read_source(path, piece_bytes=300)

    assert source.pieces is not None and len(source.pieces.bounds) > 2
    outcome = validate_entries(source)
    assert outcome.valid["user_id"].tolist() == list(range(1, 11))
    assert outcome.rejects.empty


def test_a_piece_that_no_longer_parses_is_refused_naming_the_file_and_its_bytes():
    """The pieces were found valid JSON when the file was read: bytes read back that are not are refused,
    saying where, never handed over as entries."""
    pieces = Pieces([(0, 12)], [1], [], "bare list")
    with pytest.raises(ValueError, match=re.escape("data.json: not valid JSON between bytes 0 and 12: ")):
        list(pieces.entries(io.BytesIO(b'{"a": 1, "b"}'), "data.json"))


def test_keys_given_again_are_compared_as_text_only_in_the_pieces_holding_them(monkeypatch):
    """In the keyed layout the keys are hashed while the pieces are found; only a piece holding a key
    whose hash repeats is parsed a second time, to compare keys as text, so a file whose keys are all
    different is parsed once."""
    from faceit_etl.source import pieces as pieces_module

    parsed: list[bytes] = []
    real_parser = pieces_module.simdjson.Parser

    class Recording:
        def __init__(self):
            self.parser = real_parser()

        def parse(self, text: bytes):
            parsed.append(bytes(text))
            return self.parser.parse(text)

    monkeypatch.setattr(pieces_module, "simdjson", type("simdjson", (), {"Parser": Recording}))

    def keyed(keys) -> bytes:
        return ("{" + '"users": {' + ", ".join(f'"{k}": {{"user_id": {k}, "note": "{"x" * 40}"}}' for k in keys) + "}}").encode()

    once = pieces_module.find_pieces(keyed(range(1, 41)), piece_bytes=PIECE)
    texts = [b"{" + keyed(range(1, 41))[start:end] + b"}" for start, end in once.bounds]
    assert len(texts) > 3 and once.later == {}
    assert [parsed.count(text) for text in texts] == [1] * len(texts)

    parsed.clear()
    raw = keyed([*range(1, 40), 3])  # the last entry gives key 3 again: the first and the last piece hold it
    twice = pieces_module.find_pieces(raw, piece_bytes=PIECE)
    texts = [b"{" + raw[start:end] + b"}" for start, end in twice.bounds]
    assert twice.later == {2: 39}
    assert [parsed.count(text) for text in texts] == [2] + [1] * (len(texts) - 2) + [2]


def test_a_top_level_key_nested_within_the_fast_parsers_depth_beside_the_list_is_ignored_as_in_a_whole_read(tmp_path):
    """The document around the list is parsed by orjson (to 1024 levels) and walked for a repeated
    top-level key only when it lost pairs: a key 1000 levels deep, beyond what the standard parser
    walks, is ignored as a whole read ignores it, and the list is still read in pieces."""
    depth = 1000
    entries = [json.dumps({"user_id": i, "faceit_nickname": "p" * 50}) for i in range(1, 11)]
    path = tmp_path / "data.json"
    path.write_text('{"users": [' + ", ".join(entries) + '], "analytics": ' + "[" * depth + "]" * depth + "}")

    source = read_source(path, piece_bytes=300)

    assert source.pieces is not None and source.pieces.ignored_top_level_keys == ["analytics"]
    assert validate_entries(source).valid["user_id"].tolist() == list(range(1, 11))
    assert parse_source(path.read_bytes(), path).ignored_top_level_keys == ["analytics"]
