"""The `migration_logs` row of each run: written on its own connection, so it survives a rollback,
and that connection stays open for the whole load, so a row whose session is gone is abandoned.

It records counts, the run id and the settings; callers pass settings through `safe_settings`, so
no password ever reaches the table.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from faceit_etl.postgres.ddl import MIGRATION_LOGS, table, table_exists

MIGRATION_TYPE = "json_to_postgresql"


@dataclass(frozen=True)
class RunLog:
    conn: psycopg.Connection  # autocommit
    schema: str
    log_id: str


def start(conn: psycopg.Connection, schema: str, *, run_id: str, total_items: int, metadata: dict) -> RunLog:
    log_id = conn.execute(
        sql.SQL(
            """INSERT INTO {} (migration_type, start_time, status, total_items, metadata)
               SELECT %s, now(), 'running', %s, %s || jsonb_build_object(
                   'session_pid', pg_backend_pid(),
                   'session_start', (SELECT backend_start::text FROM pg_stat_activity WHERE pid = pg_backend_pid()))
               RETURNING id::text"""
        ).format(table(schema, MIGRATION_LOGS)),
        [MIGRATION_TYPE, total_items, Jsonb({"run_id": run_id, **metadata})],
    ).fetchone()[0]
    return RunLog(conn, schema, log_id)


def finish(
    log: RunLog,
    status: str,
    *,
    processed_items: int = 0,
    failed_items: int = 0,
    error_message: str | None = None,
    metadata: dict | None = None,
    conn: psycopg.Connection | None = None,
) -> None:
    """On the log's own connection by default; a load passes its transaction's, so that the row
    says `success` exactly when the load is committed (and `ended` then stamps its end). end_time is the
    moment of writing (`clock_timestamp()`): `now()` inside the load's transaction is when it began."""
    (conn or log.conn).execute(
        sql.SQL(
            """UPDATE {} SET status = %s, end_time = clock_timestamp(), processed_items = %s, failed_items = %s,
                   error_message = %s, metadata = metadata || %s
               WHERE id = %s"""
        ).format(table(log.schema, MIGRATION_LOGS)),
        [status, processed_items, failed_items, error_message, Jsonb(metadata or {}), log.log_id],
    )


def ended(log: RunLog, conn: psycopg.Connection) -> None:
    """The row's end_time in the load's transaction, as its last statement before COMMIT: after the writes and
    the verdicts on them, so end_time - start_time is the whole load, its wait for the lock included."""
    conn.execute(
        sql.SQL("UPDATE {} SET end_time = clock_timestamp() WHERE id = %s").format(table(log.schema, MIGRATION_LOGS)),
        [log.log_id],
    )


def fail_abandoned(conn: psycopg.Connection, schema: str, run_id: str | None = None) -> list[str]:
    """Rows left `running` by a run that died (killed, machine lost) become `failed` (only `run_id`'s,
    when given); returns their run ids. A run is alive while the server still has the session that
    wrote its row: `start` records that session (pid and start time, so a reused pid is not mistaken for it).
    Another role's session shows no start time to a role without pg_read_all_stats: taken as alive, as `latest` does."""
    logs = table(schema, MIGRATION_LOGS)
    abandoned = conn.execute(
        sql.SQL(
            """UPDATE {} AS l SET status = 'failed', end_time = now(),
                   error_message = 'the run ended without finishing (killed or lost); nothing of its load was committed'
               WHERE l.status = 'running' AND (%(run_id)s::text IS NULL OR l.metadata->>'run_id' = %(run_id)s)
                 AND NOT EXISTS (
                   SELECT 1 FROM pg_stat_activity a
                   WHERE a.pid = (l.metadata->>'session_pid')::int
                     AND (a.backend_start IS NULL OR a.backend_start::text = l.metadata->>'session_start'))
               RETURNING l.metadata->>'run_id'"""
        ).format(logs),
        {"run_id": run_id},
    ).fetchall()
    return [row[0] for row in abandoned]


def run_status(conn: psycopg.Connection, schema: str, run_id: str) -> str | None:
    """The status of `run_id`'s row (`success` once its load committed), None when it wrote none."""
    if not table_exists(conn, schema, MIGRATION_LOGS):
        return None
    row = conn.execute(
        sql.SQL("SELECT status FROM {} WHERE metadata->>'run_id' = %s").format(table(schema, MIGRATION_LOGS)), [run_id]
    ).fetchone()
    return row[0] if row else None


def fingerprints_left(conn: psycopg.Connection, schema: str, input_identity: str) -> list[tuple[str, dict]]:
    """(run id, fingerprint) of each successful load of this input, newest first."""
    return conn.execute(
        sql.SQL(
            """SELECT metadata->>'run_id', metadata->'fingerprint' FROM {} WHERE status = 'success'
                 AND metadata->>'input_identity' = %s AND metadata ? 'fingerprint'
               ORDER BY end_time DESC"""
        ).format(table(schema, MIGRATION_LOGS)),
        [input_identity],
    ).fetchall()


def latest(conn: psycopg.Connection, schema: str, limit: int = 5) -> list[dict]:
    """The newest migrations of `schema`; none where it has no log (a schema dropped, then recreated by a rollback)."""
    if not table_exists(conn, schema, MIGRATION_LOGS):
        return []
    rows = conn.execute(
        sql.SQL(
            """SELECT id::text, status, start_time, end_time, total_items, processed_items, failed_items,
                      metadata->>'run_id', error_message,
                      CASE WHEN status = 'running' THEN EXISTS (
                          SELECT 1 FROM pg_stat_activity a WHERE a.pid = (metadata->>'session_pid')::int
                            AND (a.backend_start IS NULL OR a.backend_start::text = metadata->>'session_start')) END,
                      metadata->>'session_pid', metadata->'load'
               FROM {} ORDER BY start_time DESC NULLS LAST LIMIT %s"""
        ).format(table(schema, MIGRATION_LOGS)),
        [limit],
    ).fetchall()
    # session_alive, for a `running` row: whether the session that wrote it is still there (another role's
    # session shows no start time: taken as alive). A run that died leaves its row running until the
    # next run marks it failed (`fail_abandoned`).
    keys = ["id", "status", "start_time", "end_time", "total_items", "processed_items", "failed_items",
            "run_id", "error_message", "session_alive", "session_pid", "load"]
    return [dict(zip(keys, row)) | {"load": load_counts(row[-1])} for row in rows]


def load_counts(load: dict | None) -> dict[str, dict[str, int]] | None:
    """Per table, what a committed load did (inserted, updated, …): None for a run that loaded nothing."""
    if not load:
        return None
    return {name: load[key] for name, key in (("users", "users"), ("user_subscriptions", "subscriptions"))}


def fail_interrupted(conn: psycopg.Connection, schema: str, run_id: str) -> str | None:
    """After Ctrl-C: the run's row becomes `failed` unless its load had committed (`success`).
    Returns the row's status afterwards, None when the run had written no row."""
    row = conn.execute(
        sql.SQL(
            """UPDATE {} SET status = CASE WHEN status = 'running' THEN 'failed' ELSE status END,
                   end_time = CASE WHEN status = 'running' THEN now() ELSE end_time END,
                   error_message = CASE WHEN status = 'running'
                       THEN 'interrupted (Ctrl-C); nothing of its load was committed' ELSE error_message END
               WHERE metadata->>'run_id' = %s RETURNING status"""
        ).format(table(schema, MIGRATION_LOGS)),
        [run_id],
    ).fetchone()
    return row[0] if row else None
