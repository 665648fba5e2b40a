"""Rollback: put the migration's tables back as a run's pre-load snapshot holds them.

The default snapshot is the one taken before the latest successful migration that changed
anything (a re-run that found the tables as an earlier load left them has none); a backup folder or a
migration (its migration_logs id or its Dagster run id) can be named instead. Only `users` and
`user_subscriptions` are touched, in one transaction verified against the manifest's hashes; the
migration's log row then says `rolled_back`.

Loads take their snapshot under the lock that serialises them, so migrations are ordered by when
they took it (`locked_at`), and the snapshot of one holds every migration committed before it and
none after: restoring it undoes exactly that migration and the ones that came later.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from faceit_etl.backup import read_manifest, run_folder
from faceit_etl.target.ddl import MIGRATION_LOGS, table, table_exists
from faceit_etl.target.load import advisory_lock_key
from faceit_etl.target.snapshot import UNCHANGED_SINCE, TableDigest, restore_snapshot

# When a migration's load took the lock (older rows: when the run started).
_ORDER = sql.SQL("coalesce((metadata->>'locked_at')::timestamptz, start_time)")


class RollbackError(RuntimeError):
    """No usable snapshot, or the restore failed; the database is as it was."""


class RollbackRefused(RollbackError):
    """The request cannot be honoured as asked (no such snapshot or migration, or one that does not fit):
    nothing was attempted. The CLI exits 2 for it, like any other unusable request."""


@dataclass(frozen=True)
class RollbackResult:
    folder: Path
    run_id: str
    restored: dict[str, TableDigest]
    dropped: list[str]


def find_backup(
    conn: psycopg.Connection,
    schema: str,
    backup_dir: str | Path,
    *,
    backup_path: str | Path | None = None,
    migration_id: str | None = None,
) -> Path:
    """The backup folder to restore: named, or found through migration_logs."""
    if backup_path:
        folder = Path(backup_path)
        folder = folder.parent if folder.name == "manifest.json" else folder
        if not (folder / "manifest.json").is_file():
            raise RollbackRefused(f"{folder}: no manifest.json here; not a faceit-etl backup folder")
        return folder
    if not table_exists(conn, schema, MIGRATION_LOGS):
        raise RollbackRefused(f"no migration has been recorded in {schema}.{MIGRATION_LOGS}: nothing to roll back")
    logs = table(schema, MIGRATION_LOGS)
    if migration_id:
        row = conn.execute(
            sql.SQL("SELECT metadata->>'run_id' FROM {} WHERE id::text = %s OR metadata->>'run_id' = %s").format(logs),
            [migration_id, migration_id],
        ).fetchone()
        if row is None:
            raise RollbackRefused(f"no migration {migration_id!r} in {schema}.{MIGRATION_LOGS}")
    else:
        row = conn.execute(
            sql.SQL(
                """SELECT metadata->>'run_id' FROM {} WHERE status = 'success'
                     AND metadata->'load'->>'recognised_from_run' IS NULL
                   ORDER BY {} DESC LIMIT 1"""
            ).format(logs, _ORDER)
        ).fetchone()
        if row is None:
            raise RollbackRefused("no successful migration to roll back (migration_logs has none)")
    return run_folder(backup_dir, row[0])


def rollback(conn: psycopg.Connection, schema: str, folder: Path) -> RollbackResult:
    manifest = read_manifest(folder)
    target = manifest.get("target")
    if target is None:
        raise RollbackRefused(
            f"{folder}: this backup holds no snapshot of the tables (taken with --no-backup?): cannot roll back"
        )
    run_id = target.get("run_id", manifest["run_id"])  # the run whose load took it
    if UNCHANGED_SINCE in target:
        raise RollbackRefused(
            f"{folder}: run {run_id} changed nothing (it found the tables as run "
            f"{target[UNCHANGED_SINCE]} left them): roll back that run to undo its load"
        )
    if target["schema"] != schema:
        raise RollbackRefused(f"{folder}: the snapshot is of schema {target['schema']!r}, not {schema!r}")
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", [advisory_lock_key(schema)])
        logged = table_exists(conn, schema, MIGRATION_LOGS)
        if logged:
            _refuse_uncommitted(conn, schema, folder, run_id)
        restored = restore_snapshot(conn, folder, target)
        if logged:
            # The snapshot holds every migration committed before this one: it and the later ones are undone.
            conn.execute(
                sql.SQL(
                    """UPDATE {logs} SET status = 'rolled_back', metadata = metadata || %s
                       WHERE status = 'success' AND {order} >= (
                           SELECT min({order}) FROM {logs} WHERE metadata->>'run_id' = %s)"""
                ).format(logs=table(schema, MIGRATION_LOGS), order=_ORDER),
                [Jsonb({"rolled_back_to_snapshot": str(folder)}), run_id],
            )
    dropped = [name for name, snap in target["tables"].items() if snap is None]
    return RollbackResult(folder, run_id, restored, dropped)


def _refuse_uncommitted(conn: psycopg.Connection, schema: str, folder: Path, run_id: str) -> None:
    """A snapshot whose load never committed describes no migration: restoring it would undo others."""
    row = conn.execute(
        sql.SQL("SELECT status FROM {} WHERE metadata->>'run_id' = %s").format(table(schema, MIGRATION_LOGS)),
        [run_id],
    ).fetchone()
    if row is not None and row[0] not in ("success", "rolled_back"):
        raise RollbackRefused(
            f"{folder}: the load of run {run_id} did not commit (its migration is {row[0]!r}): "
            "it changed nothing, there is nothing of it to roll back"
        )
