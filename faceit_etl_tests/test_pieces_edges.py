"""Pieces are about the size asked for: a big file is never parsed in one go by accident (memory),
nor cut into crumbs (speed), whatever its formatting and wherever strings fake a cut."""

from __future__ import annotations

import json

import orjson
import pytest

from faceit_etl.generate import generate_users
from faceit_etl.source import read_source

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
