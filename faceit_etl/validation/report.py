"""Rejects as a person reads them: entries numbered from 1 as an editor counts them, each with the
value it was rejected for, and a stopped run's reason in one line that says what to do."""

from __future__ import annotations

from typing import Any

import pandas as pd

from faceit_etl.source.repeats import written
from faceit_etl.validation.fields import SUBSCRIPTION_FIELDS, SUBSCRIPTION_KEY, USER_FIELDS
from faceit_etl.validation.limit import RejectLimit

SHOWN_REJECTS = 3  # in the one-line reason; the table and rejects.jsonl hold them all
VALUE_CHARS = 80
ABSENT = "(absent)"
NOTHING_WRITTEN = "nothing was written"
WHAT_TO_DO = (
    "Fix these entries in the file and run again, or set force (load the valid entries) or max_rejects "
    "(a count, or a percentage such as 1%) in the launchpad's migration_settings "
    "(CLI: --force, --max-rejects; environment: MIGRATION_FORCE, MIGRATION_MAX_REJECTS)"
)
_SOURCE_KEYS = {f.name: f.source_key for f in USER_FIELDS} | {SUBSCRIPTION_KEY: SUBSCRIPTION_KEY}  # a subscription that is no object
_SUBSCRIPTION_KEYS = {f.name: f.source_key for f in SUBSCRIPTION_FIELDS}


def entry_number(source_index: int) -> int:
    """The entry's place in the file's list of users, counted from 1."""
    return int(source_index) + 1


def shown_value(entry: Any, field: str, whole: str) -> str:
    """The value a parsed entry holds for `field`, as the file wrote it (a string keeps its quotes, so
    "5" and 5 stay apart; `1E400` stays `1E400`; a lone surrogate stays the escape `\\ud800`), cut to
    VALUE_CHARS; `whole`, the entry's JSON text, when the reason is about the entry. Judged once, when the
    reject is made (`ValidationOutcome.rejects`' `value`): every surface shows that."""
    if not isinstance(entry, dict):
        return _cut(whole)
    if field in _SOURCE_KEYS:
        found = _lookup(entry, _SOURCE_KEYS[field])
    elif field in _SUBSCRIPTION_KEYS:
        nested = entry.get(SUBSCRIPTION_KEY)
        found = _lookup(nested if isinstance(nested, dict) else entry, _SUBSCRIPTION_KEYS[field])
    else:
        return _cut(whole)
    return ABSENT if found is _MISSING else _cut(written(found))


def shown_key(key: str) -> str:
    """A key of the `{"users": {"<id>": {...}}}` layout as the file wrote it (`"007"`, never 7), cut to VALUE_CHARS."""
    return _cut(written(key))


_MISSING = object()


def _lookup(entry: dict, key: str) -> Any:
    return entry.get(key, _MISSING)


def _cut(text: str) -> str:
    return text if len(text) <= VALUE_CHARS else text[: VALUE_CHARS - 1] + "…"


def who(user_id: Any) -> str:
    return f"user_id {user_id}" if pd.notna(user_id) else "no valid user_id"


def reject_line(source_index: int, user_id: Any, field: str, reason: str) -> str:
    return f"entry {entry_number(source_index)} ({who(user_id)}): {field}: {reason}"


def reject_rows(rejects: pd.DataFrame) -> list[dict]:
    """One dict per reject, for a table: entry (from 1), user_id as text (every digit kept), field,
    the offending value, the reason."""
    return [
        {
            "entry": entry_number(row.source_index),
            "user_id": str(row.user_id) if pd.notna(row.user_id) else None,
            "field": row.field,
            "value": row.value,
            "reason": row.reason,
        }
        for row in rejects.itertuples(index=False)
    ]


def reject_head(rejected: int, entries: int, limit: RejectLimit | None, allowed: int) -> str:
    """Whether the rejects stop the run, and how to change that."""
    counted = f"{rejected} of {entries} entries rejected"
    if limit is None:
        return f"{counted} (force: loading the rest)"
    # A count is the limit itself; a percentage also says how many entries it comes to.
    share = "" if limit.percent is None else f" (at most {allowed} of {entries})"
    if rejected <= allowed:
        return f"{counted}, within max_rejects {limit.text}{share}: loading the rest"
    return f"{counted}, more than max_rejects {limit.text} allows{share}; {NOTHING_WRITTEN}"


def too_many_rejects(rejects: pd.DataFrame, rejected: int, entries: int, limit: RejectLimit | None) -> str | None:
    """Why a run with these rejects must load nothing, in one line; None when it may load (always with
    `force`, whose limit is None). The one judgement of the check on the validated entries and of the load
    itself, which refuses on its own: a selection without the check must not load past the limit."""
    if limit is None or limit.allows(rejected, entries):
        return None
    return stopped_line(rejects, rejected, entries, limit, limit.allowed(entries))


def stopped_line(rejects: pd.DataFrame, rejected: int, entries: int, limit: RejectLimit, allowed: int) -> str:
    """A run stopped by its rejects, in one line: how many, the first few, what to do."""
    first = rejects.drop_duplicates("source_index").head(SHOWN_REJECTS)
    shown = "; ".join(reject_line(r.source_index, r.user_id, r.field, r.reason) for r in first.itertuples())
    more = rejected - len(first)
    others = f"; and {more} more (see the rejects table)" if more > 0 else ""
    return f"{reject_head(rejected, entries, limit, allowed)}. {shown}{others}. {WHAT_TO_DO}."
