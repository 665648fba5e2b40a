"""Judging the bot's entries: coercions that keep meaning, pandera rules, and rejects with reasons."""

from faceit_etl.validation.validate import REJECT_COLUMNS, ValidationOutcome, validate_entries

__all__ = ["REJECT_COLUMNS", "ValidationOutcome", "validate_entries"]
