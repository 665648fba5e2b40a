"""JSON objects that repeat a name: found, never settled by a parser's silent choice.

Parsers keep the last of a repeated name's values, which drops data without a word: a second
top-level `"users"` list hides the first, a repeated id in the keyed layout hides the first
entry, a repeated field picks one of two values. So a repeat is found and said:

* The fast check: every name/value pair of a JSON text has one colon outside its strings, so a
  document has lost pairs to repeats exactly when its text has more colons than the parsed
  document written back out (`loses_pairs`): ~0.25 s per 100 MB, a fifth of orjson's parse.
* Only when the counts differ is the text parsed again, by the standard parser with a hook that
  keeps a repeating object's pairs as written (`Repeated`); its entries are then refused with the
  repeated name as the reason (`RefusedEntry`).
* In the keyed layout `{"users": {"<id>": {...}}}` a repeated id is a repeated name too. There the
  parser's choice is the bot's own (it reads the file with Python's json): the last entry under a
  key is the one read, and each earlier one is refused naming it (`superseded`).
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from json.decoder import scanstring
from typing import Any

import numpy as np
import orjson

_QUOTE, _BACKSLASH, _COLON = ord('"'), ord("\\"), ord(":")
_CHUNK = 1 << 22
_COUNT_CHUNK = 1 << 18
_WHITESPACE = re.compile(r"[ \t\n\r]*")
_SURROGATE = re.compile("[\ud800-\udfff]")


class Repeated:
    """A JSON object whose pairs repeat a name, kept in full and in order."""

    __slots__ = ("pairs",)

    def __init__(self, pairs: list[tuple[str, Any]]):
        self.pairs = pairs

    @property
    def repeated_name(self) -> str:
        seen: set[str] = set()
        for name, _ in self.pairs:
            if name in seen:
                return name
            seen.add(name)
        raise AssertionError("a Repeated object repeats a name")


class LongInteger:
    """An integer literal longer than Python converts from text (`sys.get_int_max_str_digits`):
    kept as its digits, so the entry holding it is judged instead of the file being refused."""

    __slots__ = ("digits",)

    def __init__(self, digits: str):
        self.digits = digits

    def __repr__(self) -> str:
        return f"{self.digits[:20]}... ({len(self.digits.lstrip('+-'))} digits)"


class WrittenFloat(float):
    """A JSON number with a point or an exponent, kept with its text: the float a parser makes of
    `253402300799.999999` is 253402300800.0, another value. Its repr is the text, so a reject
    quotes what the file holds, and validation judges the decimal text, never the rounded float."""

    __slots__ = ("text",)

    def __new__(cls, text: str) -> WrittenFloat:
        number = super().__new__(cls, text)
        number.text = text
        return number

    def __repr__(self) -> str:
        return self.text

    __str__ = __repr__

    def __reduce__(self):  # pickled (between Dagster steps) or copied with its text
        return WrittenFloat, (self.text,)


@dataclass(frozen=True)
class RefusedEntry:
    """A user entry the reader does not hand over as one object: validation rejects it with `reason`.
    `raw` is the entry's JSON as stored (`written(form="stored")`); for an entry that repeats a name, a
    string holding its text, repeats included (jsonb, like any parser, would keep only one of a repeated
    name's values). `text` is what a reject shows as its value: the entry as the file wrote it, never that
    string's literal, so it cannot be mistaken for an entry that is a string."""

    reason: str
    raw: str
    text: str


class RepeatedKeyError(ValueError):
    """The document's top-level object repeats `name`; its second occurrence is at byte `offset`."""

    def __init__(self, name: str, offset: int):
        super().__init__(name, offset)
        self.name, self.offset = name, offset


def pair_count(text: bytes) -> int:
    """The name/value pairs in a valid JSON text: its colons outside strings."""
    data = np.frombuffer(text, dtype=np.uint8)
    pairs = quotes_before = 0
    for start in range(0, len(data), _CHUNK):
        chunk = data[start : start + _CHUNK]
        quotes = np.flatnonzero(chunk == _QUOTE) + start
        after_backslash = quotes[(quotes > 0) & (data[quotes - 1] == _BACKSLASH)]
        if after_backslash.size:  # rare: drop the quotes that an odd run of backslashes escapes
            escaped = [q for q in after_backslash.tolist() if _escaped(text, q)]
            quotes = np.setdiff1d(quotes, escaped, assume_unique=True)
        colons = np.flatnonzero(chunk == _COLON) + start
        opened = np.searchsorted(quotes, colons) + quotes_before  # quotes before each colon
        pairs += int(np.count_nonzero((opened & 1) == 0))
        quotes_before += len(quotes)
    return pairs


def loses_pairs(text: bytes, document: Any) -> bool:
    """Whether `document`, parsed from the JSON `text`, lost pairs to repeated names.

    Written back by orjson, the document has one colon per pair plus the colons of its strings,
    never escaped. Unless `text` spells a colon as `\\u003a`, its strings hold those same colons
    (and those of the lost pairs), so its colon count is higher exactly when pairs were lost.
    """
    try:
        written_back = orjson.dumps(document)
    except TypeError:  # nested beyond orjson's 254 levels of writing: walk it
        return pair_count(text) != _walked_pairs(document)
    colons, backslashes = _counts(text)
    if backslashes and (b"\\u003a" in text or b"\\u003A" in text):
        return pair_count(text) != pair_count(written_back)
    return colons != _counts(written_back)[0]


def _counts(text: bytes) -> tuple[int, int]:
    """Colons and backslashes in `text`, counted in cache-sized chunks."""
    data = np.frombuffer(text, dtype=np.uint8)
    colons = backslashes = 0
    for start in range(0, len(data), _COUNT_CHUNK):
        chunk = data[start : start + _COUNT_CHUNK]
        colons += int(np.count_nonzero(chunk == _COLON))
        backslashes += int(np.count_nonzero(chunk == _BACKSLASH))
    return colons, backslashes


def _walked_pairs(document: Any) -> int:
    count, stack = 0, [document]
    while stack:
        value = stack.pop()
        if type(value) is dict:
            count += len(value)
            stack.extend(value.values())
        elif type(value) is list:
            stack.extend(value)
    return count


def _escaped(text: bytes, quote: int) -> bool:
    run = quote
    while run > 0 and text[run - 1] == _BACKSLASH:
        run -= 1
    return (quote - run) % 2 == 1


def loads_exact(text: str) -> tuple[Any, bool]:
    """The document as the standard parser reads it, with every repeating object kept as a
    `Repeated`, over-long integers as `LongInteger` and numbers with a point or exponent as
    `WrittenFloat`; and whether any object repeated a name."""
    repeats = False

    def pairs_hook(pairs: list[tuple[str, Any]]) -> Any:
        nonlocal repeats
        obj = dict(pairs)
        if len(obj) == len(pairs):
            return obj
        repeats = True
        return Repeated(pairs)

    try:
        return json.loads(
            text, object_pairs_hook=pairs_hook, parse_int=_integer, parse_float=WrittenFloat, parse_constant=_no_constant
        ), repeats
    except _NonStandardConstant as exc:
        at = next(m.start(1) for m in _CONSTANT.finditer(text) if m.group(1))
        raise json.JSONDecodeError(f"{exc.args[0]} is not JSON (a non-standard constant, no number)", text, at) from None


class _NonStandardConstant(ValueError):
    pass


# Outside strings only: a string may well say "NaN". Searched only once a constant was met.
_CONSTANT = re.compile(r'"(?:[^"\\]|\\.)*"|(-?Infinity|NaN)', re.DOTALL)


def _no_constant(name: str) -> None:
    """The standard parser reads NaN, Infinity and -Infinity, which JSON does not have and no
    column holds: the file is refused where one stands, never loaded or silently skipped."""
    raise _NonStandardConstant(name)


def _integer(literal: str) -> int | LongInteger:
    limit = sys.get_int_max_str_digits()
    return LongInteger(literal) if limit and len(literal.lstrip("-")) > limit else int(literal)


def refuse_repeats(entries: list[Any]) -> list[Any]:
    """Each entry that holds a repeating object anywhere becomes a `RefusedEntry` naming it."""
    return [_refused(entry) for entry in entries]


def superseded(indexed_keys: Iterable[tuple[int, str]]) -> dict[int, int]:
    """In the keyed layout, each entry whose key is given again later, with the number of the last
    entry under that key: Python's json, and so the bot reading its file, keeps only that one."""
    indexed_keys = list(indexed_keys)
    last = {key: index for index, key in indexed_keys}
    return {index: last[key] for index, key in indexed_keys if last[key] != index}


def refuse_superseded(entries: list[Any], keys: list[str], later: dict[int, int], offset: int = 0) -> list[Any]:
    """`entries` (the file's entries from number `offset`, under `keys`) with each entry in `later`
    (see `superseded`) a `RefusedEntry` naming the one the bot reads instead."""
    if not later:
        return entries
    refused = list(entries)
    for index in range(offset, offset + len(entries)):
        if index in later:
            entry = entries[index - offset]
            reason = f"key {written(keys[index - offset])} repeated: the bot reads the last one, entry {later[index] + 1}"
            refused[index - offset] = (
                RefusedEntry(reason, entry.raw, entry.text) if type(entry) is RefusedEntry
                else RefusedEntry(reason, written(entry, form="stored"), written(entry))
            )
    return refused


def _refused(entry: Any) -> Any:
    try:
        found = _first_repeat(entry, "")
        if found is None:
            return entry
        name, path = found
        text = written(entry)  # escapes as the file wrote them: held in a JSON string, they decode to text
        return RefusedEntry(
            f"key {written(name)} appears more than once in {path or 'the entry'}: which value is meant is ambiguous",
            json.dumps(text),
            text,
        )
    except RecursionError:  # only a file that repeats names somewhere is walked
        placeholder = json.dumps("<entry nested too deeply>")
        return RefusedEntry("nested too deeply to check for repeated keys", placeholder, placeholder)


def _first_repeat(value: Any, path: str) -> tuple[str, str] | None:
    """The first repeated name inside `value` and where it is (`subscription`, `a[2].b`)."""
    if isinstance(value, Repeated):
        return value.repeated_name, path
    if isinstance(value, dict):
        steps = ((f"{path}.{name}" if path else name, inner) for name, inner in value.items())
    elif isinstance(value, list):
        steps = ((f"{path}[{i}]", inner) for i, inner in enumerate(value))
    else:
        return None
    for step, inner in steps:
        if isinstance(inner, (dict, list, Repeated)) and (found := _first_repeat(inner, step)):
            return found
    return None


def written(value: Any, *, form: str = "file") -> str:
    """JSON text of a parsed value as the file wrote it: repeated names, over-long integers and numbers'
    texts kept (`1E400` stays `1E400`, never `Infinity`). An unpaired surrogate is a JSON escape in the
    `file` form (`"c\\ud800"`, what a reject shows), and escape text in the `stored` form (`"c\\\\ud800"`,
    a reject's raw entry): parsed back, a stored entry holds printable text, never a lone surrogate, and
    jsonb holds it. The `jsonb` form is the stored one with what PostgreSQL's jsonb cannot hold changed
    only as far as it must: a number beyond its numeric (1e-20000) made a string of its text and U+0000
    in a string spelled out as text."""
    if isinstance(value, Repeated):
        pairs = value.pairs
    elif isinstance(value, dict):
        pairs = value.items()
    elif isinstance(value, list):
        return "[" + ", ".join(written(v, form=form) for v in value) + "]"
    elif isinstance(value, (LongInteger, WrittenFloat)):
        text = value.digits if isinstance(value, LongInteger) else value.text
        return json.dumps(text) if form == "jsonb" and not _jsonb_holds(text) else text
    elif isinstance(value, str):
        return _written_string(value, form)
    else:
        return json.dumps(value)
    return "{" + ", ".join(f"{written(k, form=form)}: {written(v, form=form)}" for k, v in pairs) + "}"


def _written_string(value: str, form: str) -> str:
    if form == "file":  # each piece between surrogates written as JSON, each surrogate as its escape
        pieces = _SURROGATE.split(value)
        if len(pieces) == 1:
            return json.dumps(value, ensure_ascii=False)
        escapes = [f"\\u{ord(s):04x}" for s in _SURROGATE.findall(value)] + [""]
        return '"' + "".join(json.dumps(p, ensure_ascii=False)[1:-1] + e for p, e in zip(pieces, escapes)) + '"'
    spelled = _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", value)
    return json.dumps(spelled.replace("\x00", "\\u0000") if form == "jsonb" else spelled, ensure_ascii=False)


def _jsonb_holds(number: str) -> bool:
    """Whether jsonb's numeric holds this JSON number: at most 131072 digits before the point and
    16383 after it."""
    exact = Decimal(number)
    return -exact.as_tuple().exponent <= 16383 and exact.adjusted() < 131072


def top_level_repeat(text: str) -> tuple[str, int] | None:
    """The first name that the top-level object of a valid JSON text repeats, and the character
    offset of its second occurrence; None when the top level repeats no name."""
    skip = json.JSONDecoder(object_pairs_hook=lambda pairs: None, parse_int=lambda literal: None)
    at = _WHITESPACE.match(text).end()
    if text[at : at + 1] != "{":
        return None
    seen: set[str] = set()
    at = _WHITESPACE.match(text, at + 1).end()
    while text[at : at + 1] == '"':
        name, after = scanstring(text, at + 1)
        if name in seen:
            return name, at
        seen.add(name)
        after = _WHITESPACE.match(text, after).end() + 1  # past the colon
        _, after = skip.raw_decode(text, _WHITESPACE.match(text, after).end())
        after = _WHITESPACE.match(text, after).end()
        if text[after : after + 1] != ",":
            return None
        at = _WHITESPACE.match(text, after + 1).end()
    return None
