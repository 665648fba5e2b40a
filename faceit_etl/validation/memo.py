"""Validation outcomes kept by input identity, so a re-run of the same file skips validation.

At a million users, judging every entry takes about 20 s of CPU and reading the outcome back about
3 s. The outcome holds personal data: the folder is private (0700) and each file readable by its
owner only; the newest few are kept, the rest deleted.
"""

from __future__ import annotations

import pickle
from dataclasses import replace
from pathlib import Path

from faceit_etl.backups import newest_first, private_folder, private_writer
from faceit_etl.identity import input_identity
from faceit_etl.source import SourceData
from faceit_etl.validation.validate import ValidationOutcome, validate_entries

KEEP = 3
FOLDER = "validated"  # under the Dagster instance's storage directory


def kept(folder: Path, identity: str) -> Path:
    """Where the outcome judged from `identity` is kept: the run's step value is a link to it."""
    return folder / f"{identity}.pickle"


def recall(folder: Path, identity: str) -> ValidationOutcome | None:
    path = kept(folder, identity)
    try:
        return pickle.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError):  # damaged: judge again
        path.unlink(missing_ok=True)
        return None


def store(folder: Path, identity: str, outcome: ValidationOutcome) -> None:
    private_folder(folder)
    with private_writer(kept(folder, identity), durable=False) as handle:
        pickle.dump(outcome, handle, protocol=pickle.HIGHEST_PROTOCOL)
    for old in newest_first(folder.glob("*.pickle"))[KEEP:]:
        old.unlink(missing_ok=True)


def validate_once(source: SourceData, source_timezone: str, folder: Path) -> tuple[ValidationOutcome, bool]:
    """The outcome of judging `source`, and whether it was an earlier run's: the same file bytes, time
    zone and code give the same outcome, so it is judged once and kept under `folder`."""
    identity = input_identity(source.sha256, source_timezone)
    outcome = recall(folder, identity)
    if outcome is not None:
        return outcome, True
    outcome = replace(
        validate_entries(source, source_timezone),
        input_identity=identity, source_sha256=source.sha256, source_timezone=source_timezone,
    )
    store(folder, identity, outcome)
    return outcome, False
