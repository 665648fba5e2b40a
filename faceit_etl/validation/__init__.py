"""Judging the bot's entries: coercions that keep meaning, pandera rules, and rejects with reasons.

The names below load pandas and pandera on first use, not on import of the package: the command line
and the settings import `faceit_etl.validation.limit` alone and stay quick to start.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from faceit_etl.validation.validate import REJECT_COLUMNS, ValidationOutcome, validate_entries

__all__ = ["REJECT_COLUMNS", "ValidationOutcome", "validate_entries"]


def __getattr__(name: str):
    if name in __all__:
        from faceit_etl.validation import validate

        return getattr(validate, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
