"""Read the bot's JSON file in any of the layouts found in the wild.

Entries are returned untouched: judging them is validation's job. Only a file that cannot be
read as a whole (not JSON, wrong top level, a top-level key given twice) fails here, naming the
file and the position. An entry that repeats a key, and in the keyed layout an entry whose key is
given again later (the bot reads the last), is handed over as a `RefusedEntry` (`repeats.py`).

A file bigger than one piece (`pieces.py`) with its users in a list is checked here but parsed
later, piece by piece, as validation asks for batches, each piece read from the file then: neither
its entries nor its bytes ever all exist at once.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import orjson

from faceit_etl.source.numbers import may_hold_decimal_number
from faceit_etl.source.pieces import KEYED, PIECE_BYTES, FileBytes, Pieces, find_pieces
from faceit_etl.source.repeats import (
    Repeated,
    RepeatedKeyError,
    loads_exact,
    loses_pairs,
    refuse_repeats,
    refuse_superseded,
    superseded,
    top_level_repeat,
    written,
)

UTF8_BOM = b"\xef\xbb\xbf"
_COMPRESSED = {b"\x1f\x8b": "gzip", b"BZh": "bzip2", b"\xfd7zXZ\x00": "xz", b"\x28\xb5\x2f\xfd": "zstd",
               b"PK\x03\x04": "zip"}  # magic numbers: such a file is otherwise only "not UTF-8"
BATCH_ENTRIES = 25_000  # entries judged at once: ~80 MiB of objects (100k: 150 MiB more at 1M users, no faster)


class SourceError(ValueError):
    """The source file as a whole cannot be read; nothing has been written anywhere."""


@dataclass(frozen=True)
class SourceData:
    """The user entries of one file, in file order.

    `id_keys` holds, for the `{"users": {"<id>": {...}}}` layout, the key each entry stood under
    (validation fills a missing `user_id` from it); it is None for list layouts.
    """

    entries: list[Any]
    layout: str
    id_keys: list[str] | None = None
    ignored_top_level_keys: list[str] = field(default_factory=list)
    # Read by the standard parser instead of orjson (integers beyond 64 bits, which orjson refuses
    # or turns into floats; unpaired UTF-16 surrogates): its strings may then not be valid Unicode.
    lenient_parse: bool = False
    # The file these entries were read from, so they can be read again instead of being copied.
    path: str | None = None
    # For a file read in pieces (then `entries` is empty): where they lie, and the file's
    # (size, mtime) when they were found, so a file changed since is not misread.
    pieces: Pieces | None = None
    stamp: tuple[int, int, int] | None = None  # `_stamp` of the file when its pieces were found
    kept_copy: bool = False  # the file is a backup copy: see `_stamp`
    sha256: str | None = None  # of the file's bytes, when the caller knows it (the backup does)

    @property
    def entry_count(self) -> int:
        return self.pieces.entry_count if self.pieces else len(self.entries)

    def batches(self, size: int = BATCH_ENTRIES) -> Iterator[tuple[int, list[Any], list[str] | None]]:
        """(number of the first entry, entries, their id keys) in file order, at least once; a
        file read in pieces is parsed here, about `size` entries at a time."""
        if self.pieces is None:
            yield 0, self.entries, self.id_keys
            return
        keyed = self.layout == KEYED
        offset, batch, batch_keys = 0, [], []
        with self._reopened() as handle:
            for entries, keys in self.pieces.entries(handle, self.path):
                batch.extend(entries)
                batch_keys.extend(keys or ())
                if len(batch) >= size:
                    yield offset, batch, batch_keys if keyed else None
                    offset, batch, batch_keys = offset + len(batch), [], []
        if batch or offset == 0:
            yield offset, batch, batch_keys if keyed else None

    @contextmanager
    def _reopened(self) -> Iterator[BinaryIO]:
        """The file, whose pieces are read from it when asked for: its bytes are never all in memory
        at once."""
        path = Path(self.path)
        with path.open("rb") as handle:
            if _stamp(os.fstat(handle.fileno()), self.kept_copy) != self.stamp:
                raise SourceError(f"{path}: changed since it was first read; run again")
            yield handle


def read_source(path: str | Path, name: str | Path | None = None, piece_bytes: int = PIECE_BYTES, *,
                kept_copy: bool = False) -> SourceData:
    """Read `path`; errors name the file as `name` (the original when reading a backup copy, which is
    then `kept_copy`). A file of more than `piece_bytes` is read in pieces when its shape allows: it
    is then scanned a stretch at a time, never held whole."""
    path = Path(path)
    name = name or path
    try:
        with path.open("rb") as handle:
            before = os.fstat(handle.fileno())
            if before.st_size > piece_bytes and stat.S_ISREG(before.st_mode):
                pieces = _pieces(FileBytes(handle.fileno(), before.st_size), name, piece_bytes)
                stamp = _stamp(before, kept_copy)
                if _stamp(os.fstat(handle.fileno()), kept_copy) != stamp:
                    raise SourceError(f"{name}: changed while it was read; run again")
                if pieces is not None:
                    return SourceData(
                        entries=[],
                        layout=pieces.layout,
                        ignored_top_level_keys=pieces.ignored_top_level_keys,
                        path=str(path),
                        pieces=pieces,
                        stamp=stamp,
                        kept_copy=kept_copy,
                    )
            raw = handle.read()
    except FileNotFoundError:
        raise SourceError(f"{name}: source file not found") from None
    except IsADirectoryError:
        raise SourceError(f"{name}: is a directory, expected the bot's JSON data file") from None
    except OSError as exc:
        raise SourceError(f"{name}: cannot be read: {exc.strerror}") from None
    return replace(parse_source(raw, name), path=str(path))


def _stamp(found: os.stat_result, kept_copy: bool) -> tuple[int, int, int]:
    """What differs once a file is written to: size, mtime and change time, which also catches a
    rewrite whose mtime was put back. A kept backup copy is never written after it is made, but
    other runs link to it and prune their links, each of which moves its change time: its inode
    stands in."""
    return found.st_size, found.st_mtime_ns, found.st_ino if kept_copy else found.st_ctime_ns


def _pieces(raw: FileBytes, name: str | Path, piece_bytes: int) -> Pieces | None:
    """The pieces of the file, or None when it must be parsed whole."""
    begin = len(UTF8_BOM) if raw[: len(UTF8_BOM)] == UTF8_BOM else 0
    if _has_long_digit_run(raw, begin):
        return None
    try:
        return find_pieces(raw, piece_bytes, begin)
    except RepeatedKeyError as exc:
        body = raw[begin:]
        at = len(body[: exc.offset].decode("utf-8"))
        raise _repeated_key_error(name, exc.name, at, body.decode("utf-8")) from None


def parse_source(raw: bytes, path: str | Path) -> SourceData:
    """Parse the file's bytes; `path` only names the file in errors."""
    if raw.startswith(UTF8_BOM):
        raw = raw[len(UTF8_BOM) :]
    if not raw.strip():
        raise SourceError(f"{path}: file is empty, expected the bot's JSON data")
    for magic, kind in _COMPRESSED.items():
        if raw.startswith(magic):
            raise SourceError(f"{path}: {kind}-compressed, not the bot's JSON text; decompress it first")
    document, lenient, repeats = _loads(raw, path)
    if isinstance(document, Repeated):
        text = raw.decode("utf-8")
        raise _repeated_key_error(path, *top_level_repeat(text), text)
    source = _user_entries(document, path)
    if repeats:
        source = replace(source, entries=refuse_repeats(source.entries))
        if source.id_keys is not None:
            later = superseded(enumerate(source.id_keys))
            source = replace(source, entries=refuse_superseded(source.entries, source.id_keys, later))
    return replace(source, lenient_parse=lenient)


def _repeated_key_error(path: str | Path, name: str, at: int, text: str) -> SourceError:
    line = text.count("\n", 0, at) + 1
    column = at - text.rfind("\n", 0, at)
    return SourceError(
        f"{path}: the top-level key {written(name)} appears more than once (again at line {line}, column "
        f"{column}): which one is meant is ambiguous, so nothing is read"
    )


def _loads(raw: bytes, path: str | Path) -> tuple[Any, bool, bool]:
    """The document, whether the lenient standard parser had to read it, and whether any of its
    objects repeats a name (those are then `Repeated`)."""
    if not _has_long_digit_run(raw) and not may_hold_decimal_number(raw):
        try:
            document = orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass  # the standard parser below says where the text is broken, in lines and columns
        else:
            if not loses_pairs(raw, document):
                return document, False, False
            document, repeats = loads_exact(raw.decode("utf-8"))
            return document, False, repeats
    # orjson refuses integers beyond 64 bits or turns them into floats, refuses unpaired surrogates
    # and forgets the text of a number with a point; the standard parser reads all of them exactly,
    # and validation judges such a value per entry instead of failing the whole file.
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SourceError(f"{path}: not valid UTF-8 at byte {exc.start}: {exc.reason}") from None
    try:
        document, repeats = loads_exact(text)
        return document, True, repeats
    except json.JSONDecodeError as exc:
        raise SourceError(
            f"{path}: not valid JSON at line {exc.lineno}, column {exc.colno} "
            f"(character {exc.pos}): {exc.msg}"
        ) from None
    except RecursionError:
        raise SourceError(f"{path}: JSON nested too deeply to be the bot's data") from None


# orjson reads integers in [-2**63, 2**64) exactly but silently turns any other integer into a float
# (18446744073709551616 becomes 1.8446744073709552e+19, -9223372036854775809 becomes -2**63): a
# changed meaning. Any such integer has at least 19 digits in a row (20 when positive), so a file
# holding 19 ASCII digits in a row anywhere is read by the standard parser, which keeps integers
# exact. A false positive (a long digit run inside a string, a 19-digit id within range) only costs
# speed: the standard parser reads the same document, slower. The scan runs over small chunks that
# stay in the CPU cache: ~0.3 s for a 700 MB file, where `re.search(rb"\d{19,}")` takes ~10 s.
_LONG_DIGIT_RUN = 19
_SCAN_CHUNK = 1 << 16


def _has_long_digit_run(raw: bytes | FileBytes, begin: int = 0) -> bool:
    """Whether `raw` from `begin` holds `_LONG_DIGIT_RUN` or more ASCII digits in a row."""
    for start in range(begin, len(raw), _SCAN_CHUNK):
        # runs crossing the chunk's end too
        chunk = np.frombuffer(raw[start : start + _SCAN_CHUNK + _LONG_DIGIT_RUN - 1], dtype=np.uint8)
        run = (chunk - np.uint8(ord("0"))) < 10  # bytes below "0" wrap around to >= 208
        # run[i] becomes "bytes i..i+1 are digits", then i..i+3, i..i+7, i..i+15, i..i+18
        for width in (1, 2, 4, 8, 3):
            run = run[:-width] & run[width:]
        if run.any():
            return True
    return False


def _user_entries(document: Any, path: str | Path) -> SourceData:
    if isinstance(document, list):
        return SourceData(entries=document, layout="bare list")
    if not isinstance(document, dict):
        raise SourceError(
            f"{path}: top level is {_json_type(document)}, expected an object with a 'users' "
            "key or a list of users"
        )
    if "users" not in document:
        raise SourceError(f"{path}: top-level object has no 'users' key")
    users = document["users"]
    ignored = sorted(key for key in document if key != "users")
    if isinstance(users, list):
        return SourceData(entries=users, layout="users list", ignored_top_level_keys=ignored)
    if isinstance(users, (dict, Repeated)):  # a repeated id keeps every entry: the last is read (parse_source)
        pairs = users.pairs if isinstance(users, Repeated) else list(users.items())
        return SourceData(
            entries=[entry for _, entry in pairs],
            layout=KEYED,
            id_keys=[key for key, _ in pairs],
            ignored_top_level_keys=ignored,
        )
    raise SourceError(
        f"{path}: 'users' is {_json_type(users)}, expected a list of users or an object keyed by "
        "user id"
    )


def _json_type(value: Any) -> str:
    """The JSON type of a value that cannot be the user list or the document: never a list or an
    object, which are read. A number may be an integer too long for Python (`LongInteger`)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return "a string"
    return "a number"
