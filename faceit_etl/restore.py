"""Rollback: put the migration's tables back as a run's pre-load snapshot holds them.

The default snapshot is the one taken before the latest successful migration that changed
anything (a re-run, or a load that only kept rows its file lacks, inserted, updated and deleted none);
a backup folder or a migration (its migration_logs id or its Dagster run id) can be named instead. Only `users` and
`user_subscriptions` are touched, in one transaction verified against the manifest's hashes; the
migration's log row then says `rolled_back`.

Loads take their snapshot under the lock that serialises them, so migrations are ordered by when
they took it (`locked_at`), and the snapshot of one holds every migration committed before it and
none after: restoring it undoes exactly that migration and the ones that came later.

Each committed migration records the fingerprint of the tables it left. A rollback that finds the
tables differing from the latest one's (rows written since, by the bot or by hand) refuses, unless
asked to discard those changes: restoring would silently lose them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from faceit_etl.backups import (
    MANIFEST,
    NO_SNAPSHOT,
    NO_SNAPSHOT_DRY_RUN,
    NO_SNAPSHOT_OFF,
    BackupError,
    is_manual_backup,
    read_manifest,
    run_folder,
)
from faceit_etl.errors import BOTH_NAMED
from faceit_etl.postgres.database import server_error_text
from faceit_etl.postgres.ddl import BRING_INTO_SIGHT, MIGRATION_LOGS, TIER_TYPE, rows_out_of_sight, table, table_exists, type_exists
from faceit_etl.postgres.fingerprint import fingerprint
from faceit_etl.postgres.keys import outside_references
from faceit_etl.postgres.lock import lock_schema
from faceit_etl.resumption import SNAPSHOT_FOLDER, SNAPSHOT_OF_RUN
from faceit_etl.postgres.snapshot import (
    SNAPSHOT_TABLES,
    UNCHANGED_SINCE,
    TableDigest,
    database_identity,
    digest_table,
    restore_snapshot,
    snapshot_damage,
)

# When a migration's load took the lock (older rows: when the run started).
_ORDER = sql.SQL("coalesce((metadata->>'locked_at')::timestamptz, start_time)")
# A migration changed something when it created the tables or inserted, updated or deleted a row of either;
# one that kept rows (users its file lacks) or found the tables as an earlier load left them changed nothing.
# A log row without its load's counts (an older faceit-etl's) is taken to have changed something.
_CHANGED_SOMETHING = sql.SQL(
    """(metadata->'load' IS NULL OR (metadata->'load'->>'created_tables')::boolean IS NOT FALSE
        OR EXISTS (SELECT FROM unnest(ARRAY['users', 'subscriptions']) AS t(name),
                               unnest(ARRAY['inserted', 'updated', 'deleted']) AS c(name)
                   WHERE (metadata->'load'->t.name->>c.name)::bigint IS DISTINCT FROM 0))"""
)


# A snapshot file missing, damaged, or unlike its manifest entry: refused before anything is written.
NOT_WHOLE = "the snapshot is not whole, so it cannot be restored: nothing was changed"
UNCHECKED_ORIGIN = "the snapshot does not record which database it was taken from (made by an older faceit-etl): restored without that check"


class RollbackError(RuntimeError):
    """No usable snapshot, or the restore failed; the database is as it was."""


class RollbackRefused(RollbackError):
    """The request cannot be honoured as asked (no such snapshot or migration, one that does not fit,
    or tables changed since): nothing was changed. The CLI exits 2 for it, like any other unusable
    request."""


@contextlib.contextmanager
def server_errors_without_rows() -> Iterator[None]:
    """A server error stops a rollback as a RollbackError of its own sentence (server_error_text): its
    DETAIL and CONTEXT quote the row it met (`Failing row contains (...)`), personal data that must reach
    no output, log or Dagster event, so the original is left out of the chain too. Wrap the rollback's
    transaction in it: the error rolled that back, so nothing was changed."""
    try:
        yield
    except psycopg.Error as exc:
        raise RollbackError(f"PostgreSQL stopped the rollback: {server_error_text(exc)}; nothing was changed") from None


@dataclass(frozen=True)
class RollbackResult:
    folder: Path
    run_id: str
    restored: dict[str, TableDigest]
    dropped: list[str]
    restored_to: str  # the snapshot in words (restored_to): never a run that did not take it
    # The snapshot predates recording which database it was taken from: its origin was not checked.
    origin_unchecked: bool = False


def snapshot_of_run(manifest: dict) -> str | None:
    """The run whose load took a backup folder's snapshot: for a resumed migration its original run's (the
    resume reused that snapshot); None for a manual backup, which no run made."""
    if is_manual_backup(manifest):
        return None
    target = manifest.get("target") or {}
    run_id = target.get("run_id", manifest["run_id"])
    return target.get(SNAPSHOT_OF_RUN, run_id)


def restored_to(folder: Path, manifest: dict) -> str:
    """What a rollback to this folder restores, for every message that says it (the CLI, the API, the
    rollback's materialization in Dagster): a snapshot is named by the run whose load took it, a manual
    backup by its folder."""
    taken_by = snapshot_of_run(manifest)
    if taken_by is None:
        return f"the manual backup {folder}"
    run_id = (manifest.get("target") or {}).get("run_id", manifest["run_id"])
    resumed = "" if taken_by == run_id else f" (by its load; run {run_id} resumed it)"
    return f"the snapshot taken before run {taken_by}{resumed}"


def find_backup(
    conn: psycopg.Connection,
    schema: str,
    backup_dir: str | Path,
    *,
    backup_path: str | Path | None = None,
    migration_id: str | None = None,
) -> Path:
    """The backup folder to restore: named, or found through migration_logs. Both named is refused:
    each chooses a snapshot, and honouring one would silently ignore the other. A blank name names
    nothing: read as "not given", it would roll back the latest migration, which nobody asked for."""
    for name, value in (("backup_path", backup_path), ("migration_id", migration_id)):
        if value is not None and not str(value).strip():
            raise RollbackRefused(f"{name} is empty or only white space, which names nothing: name a migration or a "
                                  "backup folder, or leave it out to roll back the latest migration")
    if backup_path is not None and migration_id is not None:
        raise RollbackRefused(BOTH_NAMED.format(backup_path="backup_path", migration_id="migration_id"))
    if backup_path is not None:
        folder = Path(backup_path)
        folder = folder.parent if folder.name == "manifest.json" else folder
        if not (folder / "manifest.json").is_file():
            raise RollbackRefused(f"{folder}: no manifest.json here; not a faceit-etl backup folder")
        return folder
    if not table_exists(conn, schema, MIGRATION_LOGS):
        raise RollbackRefused(f"no migration has been recorded in {schema}.{MIGRATION_LOGS}: nothing to roll back")
    logs = table(schema, MIGRATION_LOGS)
    if migration_id is not None:
        row = conn.execute(
            sql.SQL("SELECT metadata->>'run_id' FROM {} WHERE id::text = %s OR metadata->>'run_id' = %s").format(logs),
            [migration_id, migration_id],
        ).fetchone()
        if row is None:
            raise RollbackRefused(f"no migration {migration_id!r} in {schema}.{MIGRATION_LOGS}")
    else:
        latest = latest_committed(conn, schema)
        if latest is None:
            raise RollbackRefused("no successful migration to roll back (migration_logs has none)")
        row = latest[1:]
    return run_folder(backup_dir, row[0])


def rollback_to_snapshot(
    conn: psycopg.Connection, schema: str, folder: Path, *, discard_later_changes: bool = False,
    expect_latest_run: str | None = None,
) -> RollbackResult:
    """Restore `folder`'s snapshot; refused if the tables changed since the latest migration
    committed, unless `discard_later_changes`, and, given `expect_latest_run`, unless that run is still
    the latest migration in force once the lock is held."""
    manifest = snapshot_manifest(folder)
    target = manifest.get("target")
    if target is None:
        raise RollbackRefused(f"{folder}: this backup holds no snapshot of the tables: {_without_snapshot(conn, schema, manifest)}")
    run_id = target.get("run_id", manifest["run_id"])  # the run whose load took it
    if UNCHANGED_SINCE in target:
        raise RollbackRefused(
            f"{folder}: run {run_id} changed nothing (it found the tables as run "
            f"{target[UNCHANGED_SINCE]} left them): roll back that run to undo its load"
        )
    if target["schema"] != schema:
        raise RollbackRefused(f"{folder}: the snapshot is of schema {target['schema']!r}, not {schema!r}")
    _refuse_other_database(conn, folder, target)
    with conn.transaction():
        lock_schema(conn, schema)
        logged = table_exists(conn, schema, MIGRATION_LOGS)
        if logged:
            if expect_latest_run is not None:  # first: what changed under the question says most
                _refuse_another_latest(conn, schema, expect_latest_run)
            _refuse_not_in_force(conn, schema, folder, run_id, _taken_at(manifest, target))
        existing = [name for name in SNAPSHOT_TABLES if table_exists(conn, schema, name)]
        if hidden := rows_out_of_sight(conn, schema):
            raise RollbackRefused(
                f"refusing to roll back: {'; '.join(hidden)}; restoring empties the tables and compares every row, "
                f"and would miss or move those; nothing was changed. {BRING_INTO_SIGHT}, and roll back again"
            )
        _refuse_outside_references(conn, schema, existing)
        _refuse_dependents_of_dropped(conn, schema, target, existing)
        if not discard_later_changes:
            _refuse_later_changes(conn, schema, existing, folder, target, logged)
        restored = restore_snapshot(conn, _files(folder, target), target)
        if logged:
            # The snapshot holds every migration committed before it was taken: the later ones are undone.
            # A load's snapshot is taken when its migration took the lock (it is undone too); a manual
            # backup's has no migration and records its own lock time.
            conn.execute(
                sql.SQL(
                    """UPDATE {logs} SET status = 'rolled_back',
                           metadata = metadata || %s || jsonb_build_object('rolled_back_at', clock_timestamp())
                       WHERE status = 'success' AND {order} >= coalesce(
                           (SELECT min({order}) FROM {logs} WHERE metadata->>'run_id' = %s), %s::timestamptz)"""
                ).format(logs=table(schema, MIGRATION_LOGS), order=_ORDER),
                [Jsonb({"rolled_back_to_snapshot": str(folder)}), run_id, _taken_at(manifest, target)],
            )
    dropped = [name for name, snap in target["tables"].items() if snap is None]
    return RollbackResult(folder, run_id, restored, dropped, restored_to(folder, manifest),
                          origin_unchecked="database" not in target)


def snapshot_manifest(folder: Path) -> dict:
    """The manifest of the backup folder to restore; refused when it, or a snapshot file it records, is not
    whole (snapshot_damage), before anything is written or asked."""
    try:
        manifest = read_manifest(folder)
    except BackupError as exc:
        raise RollbackRefused(f"{exc}; nothing was changed") from None
    target = manifest.get("target")
    if target is not None and UNCHANGED_SINCE not in target:
        if damage := snapshot_damage(folder / MANIFEST, _files(folder, target), target):
            raise RollbackRefused(f"{damage}; {NOT_WHOLE}")
    return manifest


def _files(folder: Path, target: dict) -> Path:
    """Where the snapshot's files are: a resumed migration's are in its failed run's folder, whose load took it."""
    return Path(target.get(SNAPSHOT_FOLDER, folder))


def _without_snapshot(conn: psycopg.Connection, schema: str, manifest: dict) -> str:
    """Why a backup holds no snapshot, in what its run was, and what can be rolled back instead."""
    run_id = manifest["run_id"]
    row = None
    if table_exists(conn, schema, MIGRATION_LOGS):
        row = conn.execute(
            sql.SQL("SELECT status, metadata->'settings'->>'backup_tables' FROM {} WHERE metadata->>'run_id' = %s")
            .format(table(schema, MIGRATION_LOGS)),
            [run_id],
        ).fetchone()
    why = manifest.get(NO_SNAPSHOT)
    if why == NO_SNAPSHOT_DRY_RUN:
        what = f"run {run_id} was a dry run: it wrote nothing, so there is nothing to roll back"
    elif why == NO_SNAPSHOT_OFF or (row is not None and row[1] == "false"):
        what = f"run {run_id} was made with --no-backup (backup_tables off), which takes none: cannot roll back to before it"
    elif is_manual_backup(manifest):
        what = "this `backup` copied the file only (the tables could not be reached then), so it cannot be restored"
    elif row is not None:
        state = "failed" if row[0] == "failed" else f"is {row[0]!r} in {MIGRATION_LOGS}"
        what = f"run {run_id} {state}: its load did not commit, it wrote nothing, so there is nothing to roll back"
    else:
        what = (f"run {run_id} failed before its load (its rejects, or a target it refused) and wrote nothing, so "
                "there is nothing to roll back")
    latest = latest_committed(conn, schema)
    if latest is not None and latest[1] != run_id:
        return f"{what}. The latest committed migration is {latest[0]} (run {latest[1]}): roll that one back instead"
    return f"{what}. `faceit-etl status` lists the migrations that committed"


def latest_committed(conn: psycopg.Connection, schema: str) -> tuple[str, str] | None:
    """(migration_logs id, run id) of the latest successful migration that changed something: what a
    rollback without a snapshot named restores. The snapshot of a later one that changed nothing holds
    the same tables, so restoring it would undo nothing."""
    if not table_exists(conn, schema, MIGRATION_LOGS):
        return None
    return conn.execute(
        sql.SQL(
            """SELECT id::text, metadata->>'run_id' FROM {} WHERE status = 'success' AND {}
               ORDER BY {} DESC LIMIT 1"""
        ).format(table(schema, MIGRATION_LOGS), _CHANGED_SOMETHING, _ORDER)
    ).fetchone()


def _refuse_another_latest(conn: psycopg.Connection, schema: str, expected: str) -> None:
    """A question was answered about the tables as run `expected` left them: a migration that changed
    something, or a rollback, committed while it waited for the answer (or for the lock) would have a yes
    undo or bring back migrations nobody was asked about. One that changed nothing left the tables as asked
    about: it is no other latest (latest_committed passes it over), and the yes marks it rolled back too."""
    latest = latest_committed(conn, schema)
    if latest is None or latest[1] != expected:
        now = f"run {latest[1]}" if latest else "none (every migration is rolled back)"
        raise RollbackRefused(
            f"the latest migration in force is no longer run {expected}, as when you were asked, but {now}: "
            "a migration or a rollback finished meanwhile; nothing was changed. Run rollback again to be asked "
            "about the tables as they are now"
        )


def _taken_at(manifest: dict, target: dict) -> str:
    """When the snapshot's instant was fixed: the lock time it records, or for a snapshot written before
    that was recorded, the time its backup started, the nearest earlier bound known (a migration that
    took the lock between the two is counted as undone)."""
    return target.get("locked_at", manifest["taken_at"])


def _refuse_other_database(conn: psycopg.Connection, folder: Path, target: dict) -> None:
    """A snapshot restores only into the database it was taken from: another database's rows would
    replace this one's. Snapshots written before the origin was recorded cannot be checked; they are
    restored (the result says so) so that existing backups stay usable."""
    taken = target.get("database")
    here = database_identity(conn)
    if taken is not None and taken != here:
        raise RollbackRefused(
            f"{folder}: the snapshot was taken from database {taken['name']!r} (system {taken['system_identifier']}), "
            f"not from this one, {here['name']!r} (system {here['system_identifier']}): restoring it would "
            "replace this database's rows with another's; nothing was changed"
        )


def refuse_not_in_force(conn: psycopg.Connection, schema: str, folder: Path) -> None:
    """What the rollback of `folder` will refuse under the lock when nothing changes meanwhile, checked
    before asking whether to restore it: a question about a snapshot that cannot be restored asks nothing."""
    manifest = read_manifest(folder)
    target = manifest.get("target")
    if target is not None and UNCHANGED_SINCE not in target and table_exists(conn, schema, MIGRATION_LOGS):
        _refuse_not_in_force(conn, schema, folder, target.get("run_id", manifest["run_id"]), _taken_at(manifest, target))


def _refuse_not_in_force(conn: psycopg.Connection, schema: str, folder: Path, run_id: str, taken_at: str) -> None:
    """A snapshot is the tables as every migration in force when it was taken left them, so restoring it
    undoes only migrations still in force when each of those is. Refused: a snapshot whose load never
    committed (it describes no migration), one whose migration was rolled back already (restoring it again
    would undo what was loaded since and bring back what that rollback undid), and one holding a migration
    rolled back since it was taken (a manual backup's)."""
    logs = table(schema, MIGRATION_LOGS)
    row = conn.execute(
        sql.SQL("SELECT status, id::text, metadata->>'rolled_back_at' FROM {} WHERE metadata->>'run_id' = %s")
        .format(logs),
        [run_id],
    ).fetchone()
    if row is not None and row[0] == "rolled_back":
        when = f" at {row[2]}" if row[2] else ""
        raise RollbackRefused(
            f"{folder}: migration {row[1]} (run {run_id}) was rolled back already{when}: nothing of it is in force "
            "to undo, and restoring its snapshot again would undo the migrations in force now and bring back "
            "what that rollback undid; nothing was changed. `faceit-etl status` lists the migrations in force"
        )
    if row is not None and row[0] != "success":
        raise RollbackRefused(
            f"{folder}: the load of run {run_id} did not commit (its migration is {row[0]!r}): "
            "it changed nothing, there is nothing of it to roll back"
        )
    # Rollbacks record when they undid a migration; a migration rolled back by an older faceit-etl has no
    # time and is not counted.
    undone = conn.execute(
        sql.SQL(
            """SELECT id::text, metadata->>'run_id' FROM {logs}
               WHERE status = 'rolled_back' AND {order} < %s::timestamptz
                 AND (metadata->>'rolled_back_at')::timestamptz > %s::timestamptz
               ORDER BY {order}"""
        ).format(logs=logs, order=_ORDER),
        [taken_at, taken_at],
    ).fetchall()
    if undone:
        names = ", ".join(f"{log_id} (run {undone_run})" for log_id, undone_run in undone)
        raise RollbackRefused(
            f"{folder}: the snapshot holds migrations rolled back since it was taken ({names}): restoring it "
            "would bring them back; nothing was changed. Roll back to a snapshot taken before them, or name "
            "a migration in force (`faceit-etl status` lists them)"
        )


def _refuse_outside_references(conn: psycopg.Connection, schema: str, existing: list[str]) -> None:
    """Restoring empties (or drops) the tables first, which PostgreSQL refuses while another table
    references them, as the load's --truncate does: say so before anything."""
    if holders := outside_references(conn, schema, existing):
        raise RollbackRefused(
            f"refusing to roll back: other tables reference the bot's tables ({', '.join(holders)}), and "
            "restoring must empty them first; nothing was changed. Drop those foreign keys (or empty "
            "those tables) and roll back again"
        )


def _refuse_dependents_of_dropped(conn: psycopg.Connection, schema: str, target: dict, existing: list[str]) -> None:
    """Tables (and the enum) the migration created are dropped again, which PostgreSQL refuses while
    a view of them or another table's column of the enum exists: say so before anything."""
    dropped = [name for name in existing if target["tables"].get(name) is None]
    tables = [table(schema, name).as_string(conn) for name in dropped]
    holders = conn.execute(
        """SELECT DISTINCT format('view %%s', v.oid::regclass) FROM pg_depend d
             JOIN pg_rewrite r ON r.oid = d.objid JOIN pg_class v ON v.oid = r.ev_class
           WHERE d.classid = 'pg_rewrite'::regclass AND d.refobjid = ANY(%s::regclass[])
             AND NOT v.oid = ANY(%s::regclass[])""",
        [tables, tables],
    ).fetchall()
    if not target.get("tier_type_existed", True) and type_exists(conn, schema, TIER_TYPE):
        ours = [table(schema, name).as_string(conn) for name in existing]
        holders += conn.execute(
            """SELECT DISTINCT format('%%s.%%I', a.attrelid::regclass, a.attname) FROM pg_attribute a
                 JOIN pg_type t ON t.oid = a.atttypid OR t.typarray = a.atttypid
               WHERE t.oid = %s::regtype AND NOT a.attisdropped AND NOT a.attrelid = ANY(%s::regclass[])
                 AND (SELECT relkind FROM pg_class WHERE oid = a.attrelid) IN ('r', 'p', 'v', 'm', 'f')""",
            [table(schema, TIER_TYPE).as_string(conn), ours],
        ).fetchall()
    if holders:
        raise RollbackRefused(
            f"refusing to roll back: the snapshot is from before the tables were created, and "
            f"{', '.join(sorted(h[0] for h in holders))} depend(s) on what dropping them removes; nothing "
            "was changed. Drop those first and roll back again"
        )


def _rows(value: str) -> int:
    return int(value.split(":", 1)[0])


def _refuse_later_changes(
    conn: psycopg.Connection, schema: str, existing: list[str], folder: Path, target: dict, logged: bool
) -> None:
    """The tables must be as the latest state faceit-etl knows left them: the latest committed
    migration's, else (none in force, as before the first migration) the snapshot's own. A table
    that is gone has nothing left to lose."""
    row = None
    if logged:
        row = conn.execute(
            sql.SQL(
                "SELECT metadata->>'run_id', metadata->'fingerprint' FROM {} WHERE status = 'success' "
                "ORDER BY {} DESC LIMIT 1"
            ).format(table(schema, MIGRATION_LOGS), _ORDER)
        ).fetchone()
    if row is None:
        _refuse_changes_since_snapshot(conn, schema, existing, folder, target)
        return
    run_id, then = row
    if not then:
        raise RollbackRefused(
            f"cannot tell whether the tables changed since run {run_id} committed (its log row holds no "
            "fingerprint); nothing was changed. Roll back with --discard-later-changes (rollback_job: "
            "discard_later_changes) to restore the snapshot anyway"
        )
    now = fingerprint(conn, schema, tuple(existing))
    changed = [
        f"{name}: {_rows(now[name])} rows now, {_rows(then[name])} then"
        + (", contents differ" if _rows(now[name]) == _rows(then[name]) else "")
        for name in existing
        if now[name] != then.get(name)
    ]
    if changed:
        raise RollbackRefused(
            f"the tables changed since run {run_id} committed ({'; '.join(changed)}): restoring the snapshot "
            "would discard those changes; nothing was changed. Roll back with --discard-later-changes "
            "(rollback_job: discard_later_changes) to restore it anyway"
        )


def _refuse_changes_since_snapshot(
    conn: psycopg.Connection, schema: str, existing: list[str], folder: Path, target: dict
) -> None:
    """With no migration in force (a manual backup restored before any migration, or after all were
    rolled back), the tables must hold exactly what the snapshot holds: anything else was written
    since, and restoring would drop it."""
    changed = []
    for name in existing:
        snap = target["tables"].get(name)
        if snap is None:
            rows = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(table(schema, name))).fetchone()[0]
            changed.append(f"{name}: {rows} rows now, absent then")
            continue
        now = digest_table(conn, schema, name, columns=snap.get("columns"))
        if (now.rows, now.sha256) != (snap["rows"], snap["sha256"]):
            changed.append(
                f"{name}: {now.rows} rows now, {snap['rows']} then" + (", contents differ" if now.rows == snap["rows"] else "")
            )
    if changed:
        raise RollbackRefused(
            f"the tables changed since the snapshot in {folder} was taken ({'; '.join(changed)}), and no "
            "migration since records them: restoring it would discard those changes; nothing was changed. "
            "Roll back with --discard-later-changes (rollback_job: discard_later_changes) to restore it anyway"
        )
