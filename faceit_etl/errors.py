"""The errors of faceit-etl's Python API: one hierarchy, the names of the system it replaces.

`except MigrationError` catches every failure a verb raises. The domain modules raise their own
errors (SourceError, BackupError, ...); the API wraps each into its place here, keeping the original
as `__cause__`, so the domain stays free of the API and a caller needs to know only these names.
"""

from __future__ import annotations

import traceback
from pathlib import Path


# A rollback given both a backup folder and a migration (in the words of the API, the CLI or the launchpad).
BOTH_NAMED = ("give {backup_path} or {migration_id}, not both: each chooses the snapshot to restore, and they may "
              "name different ones")


class MigrationError(Exception):
    """A verb could not do what it was asked; nothing was written."""


class SettingsInvalid(MigrationError, ValueError):
    """An argument or setting cannot be used (named with its value, never a password)."""


class InvalidDatabaseUrl(SettingsInvalid):
    """libpq cannot parse the database URL; the message is a fixed text that quotes none of it."""


class ValidationError(MigrationError):
    """The data file cannot be judged: unreadable, not JSON, or not one of the bot's layouts."""


class SourceFileError(ValidationError):
    """The data file is missing, unreadable or not the bot's JSON (the reader's SourceError)."""


class MappingError(MigrationError):
    """The replaced system's error for entries it could not map. Kept so that callers' `except` clauses
    still work: here validation admits only what maps, so mapping has no failure of its own."""


class BackupFailed(MigrationError):
    """The file or the tables could not be backed up."""


class DatabaseOperationError(MigrationError):
    """PostgreSQL refused or failed an operation; the target is as it was."""


class DatabaseUnavailableError(DatabaseOperationError):
    """The target database cannot be reached (named by host and database, never the password)."""


class TargetInvalid(DatabaseOperationError):
    """The target's tables cannot take the data as they are (a 32-bit id column, a foreign hook...)."""


class RollbackFailed(DatabaseOperationError):
    """No usable snapshot, or the restore failed; the tables are as they were."""


class RollbackRefusedError(RollbackFailed):
    """The rollback cannot be honoured as asked (no such snapshot, tables changed since): nothing changed."""


class ProcessEnded(MigrationError):
    """The process that ran the verb for the API (for another `database_url`, or an unguarded `__main__`)
    died without an answer (killed, out of memory): its run is marked failed, and nothing it had not
    committed was written."""


class ResumeRefusedError(MigrationError):
    """No failed migration of this target can be resumed (none failed, a later one succeeded): nothing
    was written; start a new run."""


def wrapped(error: BaseException) -> MigrationError | None:
    """The API's error for a domain error (its message kept), or None for one the API does not know."""
    from faceit_etl.backups import BackupError
    from faceit_etl.defs.resources import SettingsError
    from faceit_etl.postgres.database import DatabaseUnavailable, InvalidConnectionString
    from faceit_etl.postgres.ddl import TargetError
    from faceit_etl.postgres.snapshot import SnapshotError
    from faceit_etl.restore import RollbackError, RollbackRefused
    from faceit_etl.source import SourceError

    if isinstance(error, MigrationError):
        return error
    # Most specific first: RollbackRefused is a RollbackError.
    for domain, ours in (
        (SettingsError, SettingsInvalid),
        (InvalidConnectionString, InvalidDatabaseUrl),
        (SourceError, SourceFileError),
        (RollbackRefused, RollbackRefusedError),
        (RollbackError, RollbackFailed),
        (BackupError, BackupFailed),
        (SnapshotError, BackupFailed),
        (DatabaseUnavailable, DatabaseUnavailableError),
        (TargetError, TargetInvalid),
    ):
        if isinstance(error, domain):
            mine = ours(str(error))
            mine.__cause__ = error
            return mine
    return None


def sanitise(error: BaseException, *urls: str | None) -> None:
    """Make `error` and every error it was raised from or while handling safe to show a caller, as the CLI
    shows its errors: a server error says only its own sentence and where (server_error_text: its DETAIL and
    CONTEXT quote rows, a data error's sentence the value), and no message holds the password of one of
    `urls`. Each link is rewritten in place (its type, traceback and `diag` kept), so `str()` of it and a
    printed traceback are safe; a link whose text cannot be rewritten (a `__str__` of its own) is cut off."""
    from faceit_etl.postgres.database import redact, server_error_text

    seen: list[BaseException] = []
    links: list[tuple[BaseException, BaseException | None]] = [(error, None)]
    while links:
        link, parent = links.pop()
        if any(link is done for done in seen):
            continue
        seen.append(link)
        safe = server_error_text(link)
        for url in urls:
            safe = redact(safe, url)
        if str(link) != safe:
            link.args = (safe,)
        if str(link) != safe and parent is not None:
            parent.__cause__ = parent.__context__ = None
            parent.__suppress_context__ = True
            continue
        links += [(nxt, link) for nxt in (link.__cause__, link.__context__) if nxt is not None]


# Where a raised error is placed for a reader: the innermost frame in one of these packages.
_PLACED_IN = ("faceit_etl", "dagster")


def described(error: BaseException) -> str:
    """`Type: message`; an error whose message is empty (a bare `assert`) would say nothing after its type,
    so it is said by its type and where it was raised, never as an empty reason."""
    message = str(error).strip()
    if message:
        return f"{type(error).__name__}: {message}"
    return f"{type(error).__name__} without a message, raised at {raised_at(error)}"


def raised_at(error: BaseException) -> str:
    """Where the error was raised, by its traceback (see place)."""
    return place([(frame.filename, frame.lineno) for frame in traceback.extract_tb(error.__traceback__)])


def place(frames: list[tuple[str, int | None]]) -> str:
    """`package/module.py:line` of the innermost of these (file, line) frames, outermost first, in
    faceit_etl or dagster (their frames, not the standard library's, say which step or call failed); else
    the innermost frame."""
    if not frames:
        return "an unknown place (the error carries no traceback)"
    for filename, line in reversed(frames):
        parts = Path(filename).parts
        packages = [i for i, part in enumerate(parts) if part in _PLACED_IN]
        if packages:
            return f"{Path(*parts[packages[-1]:])}:{line}"
    return "{}:{}".format(*frames[-1])
