"""Read the bot's JSON file in any of the layouts found in the wild (BRIEF §1).

Entries are returned untouched: judging them is validation's job. Only a file that cannot be
read as a whole (not JSON, wrong top level) fails here, naming the file and the position.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import orjson

UTF8_BOM = b"\xef\xbb\xbf"


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
    # Read by the standard parser after orjson refused the file (integers beyond its range,
    # unpaired UTF-16 surrogates): its strings may then not be valid Unicode.
    lenient_parse: bool = False
    # The file these entries were read from, so they can be read again instead of being copied.
    path: str | None = None


def read_source(path: str | Path, name: str | Path | None = None) -> SourceData:
    """Read `path`; errors name the file as `name` (the original when reading a backup copy)."""
    path = Path(path)
    name = name or path
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise SourceError(f"{name}: source file not found") from None
    except IsADirectoryError:
        raise SourceError(f"{name}: is a directory, expected the bot's JSON data file") from None
    except OSError as exc:
        raise SourceError(f"{name}: cannot be read: {exc.strerror}") from None
    return replace(parse_source(raw, name), path=str(path))


def parse_source(raw: bytes, path: str | Path) -> SourceData:
    """Parse the file's bytes; `path` only names the file in errors."""
    if raw.startswith(UTF8_BOM):
        raw = raw[len(UTF8_BOM) :]
    if not raw.strip():
        raise SourceError(f"{path}: file is empty, expected the bot's JSON data")
    document, lenient = _loads(raw, path)
    return replace(_user_entries(document, path), lenient_parse=lenient)


def _loads(raw: bytes, path: str | Path) -> tuple[Any, bool]:
    """The document, and whether the lenient standard parser had to read it."""
    try:
        return orjson.loads(raw), False
    except orjson.JSONDecodeError as fast_error:
        # orjson refuses integers beyond 64 bits, which the standard parser reads exactly; such a
        # value is then judged per entry by validation instead of failing the whole file.
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise SourceError(
                f"{path}: not valid UTF-8 at byte {exc.start}: {exc.reason}"
            ) from None
        try:
            return json.loads(text), True
        except json.JSONDecodeError as exc:
            raise SourceError(
                f"{path}: not valid JSON at line {exc.lineno}, column {exc.colno} "
                f"(character {exc.pos}): {exc.msg}"
            ) from None
        except RecursionError:
            raise SourceError(f"{path}: JSON nested too deeply to be the bot's data") from None
        except ValueError as exc:  # e.g. an integer string longer than Python's digit limit
            raise SourceError(f"{path}: not readable as JSON: {exc}") from fast_error


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
    if isinstance(users, dict):
        return SourceData(
            entries=list(users.values()),
            layout="users keyed by id",
            id_keys=list(users.keys()),
            ignored_top_level_keys=ignored,
        )
    raise SourceError(
        f"{path}: 'users' is {_json_type(users)}, expected a list of users or an object keyed by "
        "user id"
    )


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object"
