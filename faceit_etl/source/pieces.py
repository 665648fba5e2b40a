"""A big file's user list read in pieces, so that only one piece's parsed entries exist at a time.

Parsed whole, 700 MiB of the bot's JSON become 2.9 GiB of Python objects (1M users). Here the
list (or the object of entries keyed by id) is cut into pieces of about `piece_bytes` at commas
between two entries; each piece is parsed on its own when validation asks for it.

A cut is chosen by a glance at the bytes (`}` before the comma, `{` or a key's `"` after it), which a string or
an inner list of objects can fool. But a piece starting between two entries and cut anywhere
else than between two entries is never valid JSON on its own, so every piece is parsed once when
the file is read (by simdjson, which builds no Python objects): a piece that does not parse moves
its cut on to the next candidate, and a file that still does not fit this shape is read whole by
the caller, which gives the exact error. The result is the same list of entries as a whole parse.
"""

from __future__ import annotations

import json
import os
import re
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import numpy as np
import orjson
import simdjson

from faceit_etl.source.numbers import may_hold_decimal_number
from faceit_etl.source.repeats import (
    Repeated,
    RepeatedKeyError,
    loads_exact,
    loses_pairs,
    refuse_repeats,
    refuse_superseded,
    superseded,
    top_level_repeat,
)

PIECE_BYTES = 8 << 20
_PLACEHOLDER = "\x00faceit-etl: the user list\x00"
# The list is the value of a leading "users" key, or the document itself; or a leading "users" key
# holds an object of entries keyed by id.
_OPENING = re.compile(rb'\s*(?:\{\s*"users"\s*:\s*)?\[|\s*\{\s*"users"\s*:\s*\{')
_BRACKETS = {b"[": (b"[", b"]", b"{"), b"{": (b"{", b"}", b'"')}  # opener: (open, close, what starts an entry)
KEYED = "users keyed by id"
_WHITESPACE = b" \t\r\n"
_RECUTS = 8  # candidates tried for one cut before giving up on pieces
_HEAD_BYTES = 1 << 16  # where the list's opening must be found
_FIND_CHUNK = 1 << 16


@dataclass(frozen=True)
class Pieces:
    """Where the entries of a user list lie in the file: byte offsets of each piece."""

    bounds: list[tuple[int, int]]  # [start, end) of each piece's text, entries separated by commas
    counts: list[int]  # entries in each piece
    ignored_top_level_keys: list[str]
    layout: str
    later: dict[int, int] = field(default_factory=dict)  # keyed layout: see `repeats.superseded`

    @property
    def entry_count(self) -> int:
        return sum(self.counts)

    def entries(self, handle: BinaryIO, name: str) -> Iterator[tuple[list[Any], list[str] | None]]:
        """Each piece's entries and, in the keyed layout, the keys they stand under, read from
        `handle` and parsed as they are asked for; an entry that repeats a name is handed over as a
        `RefusedEntry`, and so is an entry whose key is given again later, as a whole parse does."""
        opening, closing, _ = _BRACKETS[b"{" if self.layout == KEYED else b"["]
        offset = 0
        for (start, end), count in zip(self.bounds, self.counts):
            handle.seek(start)
            text = opening + handle.read(end - start) + closing
            if may_hold_decimal_number(text):  # their texts, which orjson forgets
                parsed, repeats = loads_exact(text.decode("utf-8"))
            else:
                try:
                    parsed = orjson.loads(text)
                except orjson.JSONDecodeError as exc:  # simdjson accepted it when the file was read
                    raise ValueError(f"{name}: not valid JSON between bytes {start} and {end}: {exc}") from None
                repeats = loses_pairs(text, parsed)
                if repeats:
                    parsed = loads_exact(text.decode("utf-8"))[0]
            if self.layout == KEYED:
                pairs = parsed.pairs if isinstance(parsed, Repeated) else list(parsed.items())
                keys, entries = [key for key, _ in pairs], [entry for _, entry in pairs]
            else:
                keys, entries = None, parsed
            entries = refuse_repeats(entries) if repeats else entries
            yield (refuse_superseded(entries, keys, self.later, offset) if keys else entries), keys
            offset += count


def find_pieces(raw: bytes | FileBytes, piece_bytes: int = PIECE_BYTES, begin: int = 0) -> Pieces | None:
    """The pieces of the `{"users": [...], ...}` or `[...]` document that starts at `begin` (past a
    BOM), as offsets in `raw`; None when it has another shape, is not valid JSON, or cannot be cut
    (the caller then parses it whole). `raw` may be a file's `FileBytes`, read a stretch at a time."""
    matched = _OPENING.match(raw[begin : begin + _HEAD_BYTES])
    if matched is None:
        return None
    opening = (begin + matched.start(), begin + matched.end())
    brackets = _BRACKETS[raw[opening[1] - 1 : opening[1]]]
    start = opening[1]
    found = _list_end(raw, opening, piece_bytes, brackets)
    if found is None:
        return None
    end, ignored = found
    parser = simdjson.Parser()
    bounds, counts = [], []
    key_hashes = array("q") if brackets[0] == b"{" else None
    while start < end:
        piece, count = _next_piece(parser, raw, start, end, piece_bytes, brackets, key_hashes)
        if piece is None:
            return None
        bounds.append((start, piece))
        counts.append(count)
        start = piece + 1  # past the comma
    if key_hashes is not None:
        return Pieces(bounds, counts, ignored, KEYED, _later(parser, raw, bounds, counts, key_hashes))
    layout = "bare list" if raw[opening[0] : opening[1]].strip() == b"[" else "users list"
    return Pieces(bounds, counts, ignored, layout)


def _later(parser, raw: bytes, bounds: list[tuple[int, int]], counts: list[int], key_hashes: array) -> dict[int, int]:
    """`repeats.superseded` of the keyed layout's keys, holding no key's text unless its hash repeats:
    only the pieces holding such keys are parsed again, and their keys compared as text."""
    hashes = np.frombuffer(key_hashes, dtype=np.int64)
    values, times = np.unique(hashes, return_counts=True)
    repeated = values[times > 1]
    if not repeated.size:
        return {}
    firsts = np.cumsum([0, *counts])
    pieces = np.searchsorted(firsts, np.flatnonzero(np.isin(hashes, repeated)), side="right") - 1
    repeated = set(repeated.tolist())
    indexed_keys = []
    for piece in np.unique(pieces).tolist():
        start, end = bounds[piece]
        keys = parser.parse(b"{" + raw[start:end] + b"}").keys()
        indexed_keys += [(int(firsts[piece]) + i, key) for i, key in enumerate(keys) if hash(key) in repeated]
    return superseded(indexed_keys)


def _next_piece(parser, raw: bytes, start: int, end: int, piece_bytes: int, brackets,
                key_hashes: array | None) -> tuple[int | None, int]:
    """The end of the piece that starts at `start` (a comma between entries, or the list's end)
    and its number of entries (ids given twice counted twice); (None, 0) when no cut gives valid JSON.
    In the keyed layout the hash of each of its keys is appended to `key_hashes`."""
    opening, closing, entry = brackets
    cut = start + piece_bytes
    for _ in range(_RECUTS):
        cut = _candidate(raw, cut, end, entry)
        try:
            parsed = parser.parse(opening + raw[start:cut] + closing)
            if key_hashes is not None:
                key_hashes.extend(map(hash, parsed.keys()))
            return cut, len(parsed)
        except (ValueError, RuntimeError):  # not valid JSON: the cut was not between two entries
            if cut >= end:
                return None, 0
            cut += 1
    return None, 0


def _candidate(raw: bytes, at: int, end: int, entry: bytes = b"{") -> int:
    """The first comma from `at` with `}` before and `entry` (`{`, or `"` for a key) after it
    (whitespace aside), or `end`."""
    while at < end:
        comma = raw.find(b",", at, end)
        if comma < 0:
            return end
        before = raw[max(comma - 64, 0) : comma].rstrip(_WHITESPACE)[-1:]
        after = raw[comma + 1 : comma + 65].lstrip(_WHITESPACE)[:1]
        if before == b"}" and after == entry:
            return comma
        at = comma + 1
    return end


def _list_end(raw: bytes, opening: tuple[int, int], piece_bytes: int, brackets) -> tuple[int, list[str]] | None:
    """Offset of the list's closing `]`, and the document's other top-level keys. The standard
    parser reads the list's last stretch from a cut near the file's end and says where that value
    ends; the rest of the document around the list must then be valid JSON."""
    start = opening[1]
    at = max(start, len(raw) - piece_bytes)
    for _ in range(_RECUTS):
        cut = _candidate(raw, at, len(raw), brackets[2])
        tail_start = start if cut >= len(raw) else cut + 1
        try:
            tail = raw[tail_start:].decode("utf-8")
            _, consumed = json.JSONDecoder().raw_decode(brackets[0].decode() + tail)
        except (UnicodeDecodeError, ValueError, RecursionError):
            consumed = None
        if consumed is not None:
            end = tail_start + len(tail[: consumed - 1].encode("utf-8")) - 1
            ignored = _ignored_top_level_keys(raw, opening, end)
            if ignored is not None:
                return end, ignored
        if cut >= len(raw):
            return None
        at = cut + 1
    return None


def _ignored_top_level_keys(raw: bytes, opening: tuple[int, int], end: int) -> list[str] | None:
    """The document with its list replaced by a marker must be valid JSON whose `users` (if an
    object) is that marker, nothing after a bare list. A top-level key given twice (a second
    `users` too) raises `RepeatedKeyError` with its offset from the document's start."""
    marker = orjson.dumps(_PLACEHOLDER)
    head = raw[opening[0] : opening[1] - 1]
    skeleton = head + marker + raw[end + 1 :]
    try:
        document = orjson.loads(skeleton)
    except orjson.JSONDecodeError:
        return None
    if loses_pairs(skeleton, document):
        text = skeleton.decode("utf-8")
        found = top_level_repeat(text)
        if found is not None:
            name, at = found
            offset = len(text[:at].encode("utf-8"))
            if offset >= len(head):  # after the list: back to the document's own offsets
                offset += end + 1 - (opening[1] - 1) - len(marker)
            raise RepeatedKeyError(name, offset)
    if document == _PLACEHOLDER:
        return []
    if isinstance(document, dict) and document.get("users") == _PLACEHOLDER:
        return sorted(key for key in document if key != "users")
    return None


class FileBytes:
    """An open file's bytes, read where they are asked for (`os.pread`), never held whole. Unlike a
    mapping, a file rewritten meanwhile only reads short (its pieces then fail to parse or its
    stamp differs), never kills the process with SIGBUS."""

    def __init__(self, fd: int, size: int):
        self.fd, self.size = fd, size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, key: slice) -> bytes:
        start, stop, _ = key.indices(self.size)
        return os.pread(self.fd, stop - start, start) if stop > start else b""

    def find(self, sub: bytes, start: int, end: int) -> int:
        """The first `sub` (one byte) in [start, end), or -1."""
        at = start
        while at < end:
            chunk = self[at : min(at + _FIND_CHUNK, end)]
            if not chunk:
                break
            found = chunk.find(sub)
            if found >= 0:
                return at + found
            at += len(chunk)
        return -1
