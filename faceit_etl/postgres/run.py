"""One migration's load as a run: its `migration_logs` row, the tables' snapshot under the lock, the
verdicts taken before the commit, and a failure that names no password.

Whoever starts a load (the `postgres_tables` asset today) calls `load_run` and only turns its result
into what it shows; the lifecycle cannot differ between callers.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from faceit_etl import backups as backup
from faceit_etl.launcher import launcher_gone, launcher_gone_before_commit
from faceit_etl.mapping import MappedFrames
from faceit_etl.postgres import ddl, runlog
from faceit_etl.postgres.database import abandon, connect, describe, redact, server_error_text
from faceit_etl.postgres.load import LoadStats, Progress, load
from faceit_etl.postgres.snapshot import snapshot_for_load
from faceit_etl.postgres.verdicts import Verdict, VerificationFailed, judge_before_commit
from faceit_etl.resumption import ResumeRefused, refuse_changed_tables, reused_snapshot
from faceit_etl.validation import ValidationOutcome

DELETED_USER_IDS_FILE = "deleted_user_ids.json"  # every user prune deleted, in the run's backup folder


@dataclass(frozen=True)
class LoadOptions:
    """What one run loads with: where, how, and the run's identity and backup folder."""

    url: str
    schema: str
    run_id: str
    root_run_id: str
    # The run's own backup folder. `folder_has_manifest`: the run's source backup made it (with its
    # manifest); a re-execution that reads its parent's copy gets a folder of its own here.
    folder: Path
    folder_has_manifest: bool
    settings_summary: dict  # as stored in migration_logs: no password
    backup_tables: bool = True
    dry_run: bool = False
    truncate: bool = False
    prune: bool = False
    max_prune_fraction: float = 0.1
    batch_size: int = 10_000
    # A resume: the snapshot its failed run's load took (folder of its files, manifest record). The
    # tables must still hold exactly its rows; the load then records it as its own instead of taking one.
    resumes: tuple[Path, dict] | None = None
    # The run's launcher tags (launcher.LAUNCHER_TAGS): a step process whose launcher is gone never commits.
    launcher: Mapping[str, str] = field(default_factory=dict)


@dataclass
class LoadRun:
    """What a committed (or dry-run) load did and saw inside its transaction."""

    stats: LoadStats
    columns: list[tuple[str, str, bool]]  # (table.column, type, nullable) as the transaction saw them
    verdicts: dict[str, Verdict]
    snapshot: dict | str  # rows per table snapshotted, or why none was taken
    log_id: str | None
    database: str  # host:port/database, no password
    notes: list[str] = field(default_factory=list)  # warnings worth a log line


class LoadFailed(RuntimeError):
    """The load wrote nothing; the message names the database without its password. `verdicts` are the
    ones that stopped the commit, when a blocking verdict did."""

    def __init__(self, message: str, verdicts: dict[str, Verdict] | None = None):
        super().__init__(message)
        self.verdicts = verdicts


class LauncherGone(RuntimeError):
    """The process that launched the run died while one of its step processes loaded: the load is rolled back."""


def load_run(
    options: LoadOptions,
    outcome: ValidationOutcome,
    mapped: MappedFrames,
    *,
    progress: Progress | None = None,
    warn: Callable[[str], None] = lambda _: None,
) -> LoadRun:
    """Load `mapped` in one transaction, logged in `migration_logs` (not in a dry run, which leaves the
    database byte-identical), or raise `LoadFailed` with the log row marked failed."""
    hooks = _Hooks(options, outcome, mapped)
    with contextlib.ExitStack() as stack:
        conn = stack.enter_context(connect(options.url, run_id=options.run_id))
        log = None if options.dry_run else _start_log(stack, options, outcome.input_count, warn)
        try:
            stats = load(
                conn, options.schema, mapped, outcome.rejects, options.run_id,
                truncate=options.truncate, prune=options.prune, max_prune_fraction=options.max_prune_fraction,
                batch_size=options.batch_size, progress=progress, before_commit=hooks.before_commit,
                before_log=hooks.before_log, dry_run=options.dry_run, log=log, input_identity=outcome.input_identity,
                before_write=hooks.before_write,
            )
        except BaseException as exc:
            abandon(conn)  # first: its transaction holds the log row marked below, maybe a statement still running
            interrupt = _interruption(exc)
            if interrupt is not None:
                raise interrupt from None
            message = redact(server_error_text(exc), options.url)
            _mark_failed(log, outcome.rejected_count, message)
            if isinstance(exc, ResumeRefused):
                raise
            raise _load_failed(exc, message, options.url) from None
    return LoadRun(stats, hooks.columns, hooks.verdicts, hooks.snapshot, log.log_id if log else None, describe(options.url))


@dataclass
class _Hooks:
    """The load's hooks for one run, and what they saw inside its transaction."""

    options: LoadOptions
    outcome: ValidationOutcome
    mapped: MappedFrames
    snapshot: dict | str = "skipped (backup_tables off)"  # rows per table snapshotted, or why none was taken
    columns: list[tuple[str, str, bool]] = field(default_factory=list)
    verdicts: dict[str, Verdict] = field(default_factory=dict)

    def before_write(self, conn, recognised: str | None, found: dict) -> None:
        """Under the lock, before any write: a resume refuses tables changed since its failed run's
        snapshot; a run that backs up its tables snapshots them (or records the one it resumes), else
        its manifest says why there is none."""
        options = self.options
        if options.resumes is not None:
            refuse_changed_tables(conn, options.schema, options.resumes[1])
        if options.backup_tables and not options.dry_run:  # a dry run changes nothing to undo
            if not options.folder_has_manifest:
                backup.start_manifest(options.folder, options.run_id, options.root_run_id)
            if options.resumes is not None and recognised is None:
                target = backup.update_manifest(options.folder, target=reused_snapshot(options.resumes, options.run_id))["target"]
            else:
                target = snapshot_for_load(conn, options.url, options.schema, options.folder, options.run_id, recognised, found)
            self.snapshot = (
                {name: snap["rows"] if snap else "absent" for name, snap in target["tables"].items()}
                if recognised is None
                else f"not taken: the tables are as run {recognised} left them from this same file"
            )
        elif options.folder_has_manifest:  # why there is none: a refused rollback of this run says it
            backup.update_manifest(
                options.folder, **{backup.NO_SNAPSHOT: backup.NO_SNAPSHOT_DRY_RUN if options.dry_run else backup.NO_SNAPSHOT_OFF}
            )

    def before_log(self, stats: LoadStats) -> None:
        """Before the log row is written, so migration_logs names the file of pruned users."""
        if stats.deleted_user_ids and not self.options.dry_run:
            backup.private_folder(self.options.folder)
            path = self.options.folder / DELETED_USER_IDS_FILE
            backup.write_private(path, json.dumps(stats.deleted_user_ids).encode())
            stats.deleted_user_ids_file = str(path)

    def before_commit(self, conn, stats: LoadStats) -> None:
        """Read what only the open transaction can show: the schema, and the verdicts on what it
        wrote. A failed blocking verdict raises here, so nothing is committed (a dry run fails alike); so
        does a launcher found gone, the last thing before the commit: a run reported failed wrote nothing."""
        self.columns = [
            (f"{name}.{column}", data_type, nullable)
            for name in (ddl.USERS, ddl.SUBSCRIPTIONS)
            for column, data_type, nullable in ddl.column_types(conn, self.options.schema, name)
        ]
        self.verdicts = judge_before_commit(
            conn, self.options.schema, self.mapped.users, self.mapped.subscriptions, stats.kept_absent(),
            self.outcome.rejects["user_id"],
        )
        if launcher_gone(self.options.launcher):  # an orphaned step process (its CLI killed): last, just before COMMIT
            raise LauncherGone(launcher_gone_before_commit(self.options.launcher))


def _interruption(error: BaseException) -> BaseException | None:
    """The interrupt (KeyboardInterrupt, Dagster's DagsterExecutionInterruptedError: not an Exception) that
    `error` is or arose from: a statement it stopped leaves the connection busy, so a cleanup's next
    statement fails ("another command is already in progress") and that error would be said instead."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        if not isinstance(error, Exception):
            return error
        seen.add(id(error))
        error = error.__context__
    return None


def _mark_failed(log: runlog.RunLog | None, rejected_count: int, message: str) -> None:
    if log is not None:
        with contextlib.suppress(psycopg.Error):  # a lost database: the next run marks the row failed
            runlog.finish(log, "failed", failed_items=rejected_count, error_message=message)


def _load_failed(exc: Exception, message: str, url: str) -> LoadFailed:
    """A failed verification keeps its own message and verdicts; any other failure says where it happened."""
    if isinstance(exc, VerificationFailed):
        return LoadFailed(message, exc.verdicts)
    return LoadFailed(f"load into {describe(url)} failed, nothing was written: {message}")


def _start_log(stack: contextlib.ExitStack, options: LoadOptions, total_items: int, warn) -> runlog.RunLog:
    """The run's `migration_logs` row, on a connection of its own that stays open for the load."""
    log_conn = stack.enter_context(connect(options.url, autocommit=True, run_id=options.run_id))
    try:
        ddl.refuse_hooks_outside_the_load(log_conn, options.schema)
    except ddl.TargetError as exc:
        raise LoadFailed(f"load into {describe(options.url)} failed, nothing was written: {exc}") from None
    ddl.ensure_bookkeeping_tables(log_conn, options.schema)
    for dead in runlog.fail_abandoned(log_conn, options.schema):
        warn(f"migration_logs: run {dead} had ended without finishing; marked failed")
    return runlog.start(
        log_conn, options.schema, run_id=options.run_id, total_items=total_items,
        metadata={"settings": options.settings_summary},
    )
