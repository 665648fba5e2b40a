"""Judge every user entry: coerce, validate with pandera, and keep each failure as a reject.

The promise kept here: accepted + rejected = input, always. A rejected entry carries every reason
found (field and text) and its raw JSON, so nothing disappears without a word.
"""

from __future__ import annotations

import gc
import json
import re
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
import pandas as pd

from faceit_etl.source import SourceData
from faceit_etl.source.reader import BATCH_ENTRIES
from faceit_etl.source.repeats import RefusedEntry, Repeated, loads_exact, written
from faceit_etl.validation.coerce import (
    INT64_DIGITS,
    INT64_MAX,
    _integer,
    coerce_column,
    describe_value,
    flag_series,
    only_of,
)
from faceit_etl.validation.fields import (
    KNOWN_SUBSCRIPTION_KEYS,
    KNOWN_USER_KEYS,
    SUBSCRIPTION_FIELDS,
    SUBSCRIPTION_KEY,
    SUBSCRIPTION_PRESENT,
    USER_FIELDS,
    USER_PRESENT,
)
from faceit_etl.validation.pandera_import import pa
from faceit_etl.validation.report import entry_number, shown_key, shown_value
from faceit_etl.validation.schemas import UNIQUE_COLUMNS, failure_reason, schemas
from faceit_etl.validation.shapes import Shapes

ENTRY_FIELD = "(entry)"
_SURROGATE = re.compile("[\ud800-\udfff]")
_ID_KEY = re.compile(r"[1-9][0-9]*")
REJECT_COLUMNS = ["source_index", "user_id", "field", "reason", "value", "raw"]
REFERRAL_CODE = "referral_code"


@dataclass
class ValidationOutcome:
    """Accepted entries as one typed frame (user and subscription columns, indexed by source_index)
    and the rejects, one row per (entry, field, reason)."""

    valid: pd.DataFrame
    rejects: pd.DataFrame
    input_count: int
    ignored_fields: dict[str, int] = field(default_factory=dict)
    input_identity: str | None = None  # what it was judged from (`identity.py`), when known
    # The parts of that identity a person can compare: the file's sha256 and the time zone it was judged in.
    source_sha256: str | None = None
    source_timezone: str | None = None

    @property
    def rejected_count(self) -> int:
        return int(self.rejects["source_index"].nunique())

    def reject_records(self) -> list[dict]:
        """The rejects as plain dicts (missing values as None), for files and reports; `entry` counts from 1,
        as every report does, beside the 0-based `source_index`."""
        records = self.rejects.astype(object).where(self.rejects.notna(), None).to_dict("records")
        return [{"entry": entry_number(r["source_index"]), **r} for r in records]


def validate_entries(
    source: SourceData, source_timezone: str = "UTC", batch_size: int = BATCH_ENTRIES
) -> ValidationOutcome:
    """Judge the entries batch by batch, as the source hands them over (a big file in pieces), so
    only one batch of parsed entries exists at a time; the typed frames are joined at the end."""
    seen: dict[str, Any] = {column: set() for column in UNIQUE_COLUMNS} | {REFERRAL_CODE: {}}
    valid, rejects, ignored = [], [], Counter()
    with _no_collection():
        for offset, entries, id_keys in source.batches(batch_size):
            batch = _judge(entries, offset, id_keys, source.lenient_parse, source_timezone, seen)
            valid.append(batch.valid)
            rejects.append(batch.rejects)
            ignored.update(batch.ignored_fields)
    return ValidationOutcome(
        valid=pd.concat(valid) if len(valid) > 1 else valid[0],
        rejects=pd.concat(rejects, ignore_index=True) if len(rejects) > 1 else rejects[0],
        input_count=source.entry_count,
        ignored_fields=dict(sorted(ignored.items())),
    )


@contextmanager
def _no_collection() -> Iterator[None]:
    """Python's cyclic collector paused: parsing and judging a batch make millions of objects, whose
    number sets off collections that rescan every live entry (a fifth of the CPU time at 1M users),
    while refcounting frees all of them (under a thousand objects in cycles at 1M users)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _judge(entries: list, offset: int, id_keys: list[str] | None, lenient_parse: bool, source_timezone: str,
           seen: dict[str, Any]) -> ValidationOutcome:
    """One batch, whose first entry is the file's entry number `offset`. `seen` holds the unique
    columns' values of earlier batches (for referral codes, the accepted entry holding each): a
    repeat of one is rejected as in the same batch."""
    reasons: dict[int, list[tuple[str, str, str | None]]] = {}  # (field, reason, the value shown when not the field's)

    def reject(index: int, field_name: str, reason: str, shown: str | None = None) -> None:
        reasons.setdefault(index, []).append((field_name, reason, shown))

    _refuse_unreadable_entries(entries, offset, lenient_parse, reject)
    positions = [i for i, entry in enumerate(entries, start=offset) if type(entry) is dict and i not in reasons]
    users = [entries[i - offset] for i in positions]
    user_shapes = Shapes(users)
    subscriptions = _subscriptions(user_shapes.column(SUBSCRIPTION_KEY), positions, reject)
    subscription_shapes = Shapes(subscriptions)
    keys = None
    if id_keys is not None:
        _refuse_keys_naming_no_user(id_keys, offset, reject)
        keys = [id_keys[i - offset] for i in positions]
    frame = _typed_frame(users, user_shapes, subscriptions, subscription_shapes, positions, keys, source_timezone, reject)
    _refuse_rule_breakers(frame, reasons, seen, reject)
    rejected = sorted(reasons)
    # keys the target has no column for: counted and reported, never dropped in silence
    ignored = user_shapes.unknown_keys(KNOWN_USER_KEYS)
    ignored.update(subscription_shapes.unknown_keys(KNOWN_SUBSCRIPTION_KEYS, f"{SUBSCRIPTION_KEY}."))
    return ValidationOutcome(
        valid=frame.drop(index=[i for i in rejected if i in frame.index]),
        rejects=_rejects_frame(reasons, entries, offset, frame, id_keys),
        input_count=len(entries),
        ignored_fields=ignored,
    )


def _refuse_unreadable_entries(entries: list, offset: int, lenient_parse: bool, reject) -> None:
    """An entry refused while it was read (`RefusedEntry`), one that is not an object, and, from a
    leniently parsed file, one holding an unpaired surrogate are rejected whole: no field of theirs is judged."""
    for i, entry in enumerate(entries, start=offset):
        if type(entry) is RefusedEntry:
            reject(i, ENTRY_FIELD, entry.reason)
        elif type(entry) is not dict:
            reject(i, ENTRY_FIELD, f"entry is not an object: got {describe_value(entry)}")
        elif lenient_parse and (bad := _unpaired_surrogate(entry)):
            reject(i, ENTRY_FIELD, f"holds the unpaired UTF-16 surrogate {bad}, which is not text")


def _subscriptions(subscriptions: list[Any], positions: list[int], reject) -> list[dict | None]:
    """Each user's subscription object, or None; a subscription that is neither is rejected and read as None."""
    if only_of(subscriptions, dict):
        return subscriptions
    for position, subscription in enumerate(subscriptions):
        if subscription is not None and type(subscription) is not dict:
            reject(
                positions[position],
                SUBSCRIPTION_KEY,
                f"expected an object or null, got {describe_value(subscription)}",
            )
            subscriptions[position] = None
    return subscriptions


def _refuse_keys_naming_no_user(id_keys: list[str], offset: int, reject) -> None:
    for i, key in enumerate(id_keys, start=offset):
        if key_user_id(key) is None:
            reject(i, "user_id", _bad_key_reason(key), shown_key(key))  # the key is what is refused, not a user_id inside


def _typed_frame(users: list[dict], user_shapes: Shapes, subscriptions: list[dict | None], subscription_shapes: Shapes,
                 positions: list[int], keys: list[str] | None, source_timezone: str, reject) -> pd.DataFrame:
    """The users' and subscriptions' fields coerced to typed columns with each entry's presence bits,
    indexed by source_index; every value that cannot be coerced is rejected. With `keys` (the
    `{"users": {"<id>": {...}}}` layout) each user's id is the one its key names."""
    columns: dict[str, pd.Series] = {}
    for spec in USER_FIELDS:
        raw = user_shapes.column(spec.source_key)
        columns[spec.name], errors = coerce_column(spec.kind, raw, source_timezone)
        if spec.name == "user_id" and keys is not None:
            columns[spec.name] = _user_ids_from_keys(columns[spec.name], errors, users, keys, positions, reject)
        for position, reason in errors.items():
            reject(positions[position], spec.name, reason)
    for spec in SUBSCRIPTION_FIELDS:
        raw = subscription_shapes.column(spec.source_key)
        columns[spec.name], errors = coerce_column(spec.kind, raw, source_timezone)
        for position, reason in errors.items():
            reject(positions[position], spec.name, reason)
    columns["has_subscription"] = flag_series([s is not None for s in subscriptions])
    # a user whose id came from its key in a keyed file has that bit regardless
    columns[USER_PRESENT] = user_shapes.presence(USER_FIELDS)
    columns[SUBSCRIPTION_PRESENT] = subscription_shapes.presence(SUBSCRIPTION_FIELDS)
    frame = pd.DataFrame(columns)
    frame.index = pd.Index(positions, name="source_index", dtype="int64")
    return frame


def _refuse_rule_breakers(frame: pd.DataFrame, reasons: dict, seen: dict[str, Any], reject) -> None:
    """The typed frame judged by the schemas' rules, the unique columns (against this batch and the
    values `seen` in earlier ones, which it then holds too) and the referral codes held, in that
    order. A field rejected before (as read or coerced) is not rejected again by the first two."""
    already = {(i, name) for i, items in reasons.items() for name, *_ in items}
    for schema in schemas():
        for index, column, reason in _schema_failures(schema, frame[list(schema.columns)]):
            if (index, column) not in already:
                reject(index, column, reason)
    for column, reason in UNIQUE_COLUMNS.items():
        values = frame[column].dropna()
        earlier = seen[column]
        for index, value in zip(values.index.tolist(), values.tolist()):
            if value in earlier and (index, column) not in already:
                reject(index, column, reason)
        earlier.update(values.tolist())
    _refuse_held_codes(frame, reasons, seen[REFERRAL_CODE], reject)


def _refuse_held_codes(frame: pd.DataFrame, reasons: dict, holders: dict[str, tuple[int, int]], reject) -> None:
    """A referral code held by an earlier accepted entry rejects a later one, naming that entry.
    Only accepted entries hold a code: one whose entry is rejected for anything else leaves the
    code free, so no entry is refused for a code that nothing loaded holds; as every other rule
    is judged first, the holder is the first entry with that code that passes them all."""
    with_code = frame[frame[REFERRAL_CODE].notna()]  # values read column-wise: a lookup per row costs ~20 µs
    for index, code, user_id in zip(
        with_code.index.tolist(), with_code[REFERRAL_CODE].tolist(), with_code["user_id"].tolist()
    ):
        if index in reasons:
            continue
        if code in holders:
            held_by, holder_id = holders[code]
            reject(index, REFERRAL_CODE, (
                f"referral_code {describe_value(code)} is already held by entry {held_by + 1} (the "
                f"{_ordinal(held_by + 1)} in the file, user_id {holder_id}), which is accepted"
            ))
        else:
            holders[code] = (index, int(user_id))


def _ordinal(number: int) -> str:
    suffix = "th" if 11 <= number % 100 <= 13 else {1: "st", 2: "nd", 3: "rd"}.get(number % 10, "th")
    return f"{number}{suffix}"


def key_user_id(key: str) -> int | None:
    """The user id a key of the `{"users": {"<id>": {...}}}` layout names, or None. The bot reads
    that layout by `str(user_id)`, so a key names a user only as that text: ASCII digits without a
    leading zero, sign, space, point or exponent, from 1 to 2**63-1. "007", " 5", "5.0", "-5", "0"
    or "" name no user: read as 7 or 5 they would be entries the bot never reaches under that id."""
    if _ID_KEY.fullmatch(key) is None or len(key) > INT64_DIGITS or int(key) > INT64_MAX:
        return None
    return int(key)


def _bad_key_reason(key: str) -> str:
    return (
        f"key {describe_value(key)} names no user: the bot reads this layout by the user id written in "
        f"plain digits (1 to {INT64_MAX}, no leading zero, sign, space or point), so it never reads "
        "this entry"
    )


def _user_ids_from_keys(values: pd.Series, errors: dict[int, str], users, keys, positions, reject) -> pd.Series:
    """In the `{"users": {"<id>": {...}}}` layout the key is the id: the entry's user is the one its
    key names (it fills a missing user_id), and an entry whose user_id says otherwise is rejected
    rather than guessed at. An entry under a key that names no user has no id, so it takes no
    real user's place."""
    ids = []
    for position, (value_id, key) in enumerate(zip(values.tolist(), keys)):
        key_id = key_user_id(key)
        if "user_id" not in users[position]:
            ids.append(key_id)
            continue
        if key_id is not None and not pd.isna(value_id) and value_id != key_id and position not in errors:
            raw = users[position]["user_id"]
            reject(positions[position], "user_id", f"user_id {describe_value(raw)} differs from its key {describe_value(key)}")
        ids.append(key_id if not pd.isna(value_id) and value_id == key_id else None)
    return pd.Series(pd.array(ids, dtype="Int64"))


def _schema_failures(schema: pa.DataFrameSchema, frame: pd.DataFrame):
    try:
        schema.validate(frame, lazy=True)
    except pa.errors.SchemaErrors as exc:
        cases = exc.failure_cases
        if cases["index"].isna().any():
            raise  # a failure of the frame as a whole is a bug here, never a user's data
        for row in cases.itertuples(index=False):
            yield int(row.index), row.column, failure_reason(str(row.check))


def _rejects_frame(reasons, entries, offset: int, frame: pd.DataFrame, id_keys: list[str] | None) -> pd.DataFrame:
    """One row per (entry, field, reason): `raw` the entry as stored (`_raw_json`), `value` what the
    reject shows, the file's value for the field (`shown_value`), judged here on the parsed entry, or what the
    reject itself names (a keyed layout's key that names no user)."""
    user_ids = frame["user_id"]
    rows = []
    for index in sorted(reasons):
        entry = entries[index - offset]
        raw, whole = _raw_json(entry)
        user_id = (
            key_user_id(id_keys[index - offset]) if id_keys is not None  # the bot reads this layout by key
            else _known_user_id(user_ids, index) if index in user_ids.index
            else _own_user_id(entry)
        )
        for field_name, reason, shown in reasons[index]:
            value = shown if shown is not None else shown_value(entry, field_name, whole)
            rows.append((index, user_id, field_name, reason, value, raw))
    rejects = pd.DataFrame(rows, columns=REJECT_COLUMNS)
    # built as Int64 directly: ids inferred next to a None become floats, and lose digits past 2**53
    rejects["user_id"] = pd.array([row[1] for row in rows], dtype="Int64")
    return rejects.astype({"source_index": "int64", "field": "str", "reason": "str", "value": "str", "raw": "str"})


def _known_user_id(user_ids: pd.Series, index: int) -> int | None:
    value = user_ids.at[index]
    return None if pd.isna(value) or value < 1 else int(value)


def _own_user_id(entry: Any) -> int | None:
    """The valid user_id of an entry refused before coercion (a repeated key, a lone surrogate),
    so its reject names the user; None when it has no single valid one."""
    if type(entry) is RefusedEntry:
        try:
            entry = loads_exact(entry.text)[0]
        except (ValueError, RecursionError):
            return None
    if isinstance(entry, Repeated):
        values = [value for name, value in entry.pairs if name == "user_id"]
    elif isinstance(entry, dict):
        values = [entry["user_id"]] if "user_id" in entry else []
    else:
        return None
    ids = {_integer(value)[0] for value in values}
    number = ids.pop() if len(ids) == 1 else None
    return number if number is not None and number >= 1 else None


def _unpaired_surrogate(value: Any) -> str | None:
    """The first unpaired surrogate in a value's strings (keys included), spelled as an escape."""
    if isinstance(value, str):
        found = _SURROGATE.search(value)
        return f"\\u{ord(found.group()):04x}" if found else None
    if isinstance(value, dict):
        return next(filter(None, map(_unpaired_surrogate, [*value.keys(), *value.values()])), None)
    if isinstance(value, list):
        return next(filter(None, map(_unpaired_surrogate, value)), None)
    return None


def _raw_json(entry: Any) -> tuple[str, str]:
    """The entry's JSON as stored (a lone surrogate spelled out as text) and as the file wrote it (a
    lone surrogate its JSON escape); a refused entry's raw JSON and its text."""
    if type(entry) is RefusedEntry:
        return entry.raw, entry.text
    try:
        text = orjson.dumps(entry).decode()  # orjson writes no lone surrogate: both forms are this one
        return text, text
    except TypeError:  # big integers, numbers kept with their text, unpaired surrogates, deep nesting
        try:
            return written(entry, form="stored"), written(entry)
        except RecursionError:  # nested ~1000 levels: still read by orjson, but not writable back
            placeholder = json.dumps(f"<entry nested too deeply to write back: {describe_value(entry)}>")
            return placeholder, placeholder
