"""faceit-etl: move a FACEIT Telegram bot's JSON data file into PostgreSQL, validated and reversible.

The Python API's names are imported on first use, so `import faceit_etl` (the command line's first
step) stays as cheap as before.
"""

from __future__ import annotations

import importlib
from typing import Any

_API = ("migrate", "validate", "resume", "status", "rollback", "rollback_candidate", "backup", "DataMigration", "DataValidator",
        "MigrationResult")
# Every class of errors.py, for a caller's `except`: the README's hierarchy, importable from here.
_ERRORS = ("MigrationError", "SettingsInvalid", "InvalidDatabaseUrl", "ValidationError", "SourceFileError",
           "MappingError", "BackupFailed", "DatabaseOperationError", "DatabaseUnavailableError", "TargetInvalid",
           "RollbackFailed", "RollbackRefusedError", "ResumeRefusedError", "ProcessEnded")
__all__ = [*_API, *_ERRORS]


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(importlib.import_module("faceit_etl.api"), name)
    if name in _ERRORS:
        return getattr(importlib.import_module("faceit_etl.errors"), name)
    raise AttributeError(f"module 'faceit_etl' has no attribute {name!r}")
