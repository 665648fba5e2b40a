"""Pieces are about the size asked for: a big file is never parsed in one go by accident (memory),
nor cut into crumbs (speed), whatever its formatting and wherever strings fake a cut."""

from __future__ import annotations

import json
import mmap
import os
import re
import tracemalloc
from pathlib import Path

import orjson
import pytest

from faceit_etl.generate import generate_users
from faceit_etl.source import SourceError, parse_source, read_source
from faceit_etl.source.pieces import release

PIECE = 600


def _styles(document) -> dict[str, bytes]:
    return {
        "compact": orjson.dumps(document),
        "indent 2": orjson.dumps(document, option=orjson.OPT_INDENT_2),
        "indent 4": json.dumps(document, indent=4, ensure_ascii=False).encode(),
    }


@pytest.mark.parametrize("style", ["compact", "indent 2", "indent 4"])
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
    """A file scanned in pieces, mapped and never held whole, names the same line and column as a
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


def test_reading_a_big_file_in_pieces_never_holds_its_bytes(tmp_path):
    """The file is mapped and scanned, not read into memory: what Python allocates while finding
    the pieces is a small part of the file."""
    users = generate_users(3000, seed=4)
    path = tmp_path / "data.json"
    path.write_bytes(orjson.dumps({"users": users}, option=orjson.OPT_INDENT_2))
    size = path.stat().st_size

    tracemalloc.start()
    try:
        source = read_source(path, piece_bytes=16 << 10)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert source.pieces is not None and source.entry_count == 3000 and size > 2 << 20
    assert peak < size / 4, f"peak {peak} bytes while reading a file of {size} bytes"


def _mapped_resident_kib() -> int:
    status = Path("/proc/self/status").read_text()
    return int(re.search(r"RssFile:\s+(\d+) kB", status).group(1))


def test_a_scanned_stretch_of_a_mapped_file_leaves_this_process(tmp_path):
    """Pages of the mapped file behind the scan are let go, so a scan of a file of any size holds
    a stretch of it, never the file: here 32 MiB read, then released up to its last page."""
    path = tmp_path / "big"
    path.write_bytes(os.urandom(1 << 20) * 32)
    with path.open("rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as raw:
        before = _mapped_resident_kib()
        sum(raw[at] for at in range(0, len(raw), mmap.PAGESIZE))  # every page resident
        touched = _mapped_resident_kib()
        release(raw, len(raw))
        released = _mapped_resident_kib()

    assert touched - before > 30 << 10
    assert released - before < 1 << 10, (before, touched, released)
