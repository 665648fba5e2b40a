"""The load: COPY the mapped frames into staging, then one transaction that upserts into the target.

New rows are inserted, changed rows updated (`updated_at` moves only then), unchanged rows are left
untouched, so re-running on the same file writes nothing. `truncate` replaces the tables' content
instead. Everything, table creation included, happens in one transaction: any failure leaves the
target exactly as it was.
"""

from __future__ import annotations

import io
import json
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass

import pandas as pd
import psycopg
import pyarrow as pa
import pyarrow.csv as pacsv
from psycopg import sql

from faceit_etl.mapping import SUBSCRIPTION_COLUMNS, USER_COLUMNS, MappedFrames
from faceit_etl.target.ddl import (
    MIGRATION_REJECTS,
    SUBSCRIPTIONS,
    USERS,
    IdColumn,
    TargetError,
    check_id_widths,
    ensure_target_tables,
    table,
)

REJECT_COLUMNS = ["run_id", "source_index", "user_id", "field", "reason", "raw"]
# Columns whose change counts as a change of the row (ids and bookkeeping times excluded).
_USER_DATA = USER_COLUMNS[2:]
_SUBSCRIPTION_DATA = SUBSCRIPTION_COLUMNS[2:]

Progress = Callable[[str, int, int], None]  # (stage, done, total)


@dataclass
class TableStats:
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0


@dataclass
class LoadStats:
    users: TableStats
    subscriptions: TableStats
    rejects_written: int
    created_tables: bool
    truncated: bool

    def as_dict(self) -> dict:
        return asdict(self)


def advisory_lock_key(schema: str) -> int:
    """A lock key stable across processes and machines (Python's hash() is salted per process)."""
    return zlib.crc32(f"faceit-etl:{schema}".encode())


def load(
    conn: psycopg.Connection,
    schema: str,
    mapped: MappedFrames,
    rejects: pd.DataFrame,
    run_id: str,
    *,
    truncate: bool = False,
    batch_size: int = 10_000,
    progress: Progress | None = None,
    before_commit: Callable[[psycopg.Connection], None] | None = None,
    dry_run: bool = False,
) -> LoadStats:
    """Load in one transaction. `before_commit` runs inside it, last; with `dry_run` the
    transaction is then rolled back, so the stats say what would have been written."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", [advisory_lock_key(schema)])
        created = ensure_target_tables(conn, schema)
        check_id_widths(
            conn,
            schema,
            [
                IdColumn(USERS, "user_id", mapped.users["user_id"]),
                IdColumn(SUBSCRIPTIONS, "referred_by_user_id", mapped.subscriptions["referred_by_user_id"]),
            ],
        )
        stage_users = _stage(conn, schema, USERS, mapped.users, USER_COLUMNS, batch_size, progress)
        stage_subscriptions = _stage(
            conn, schema, SUBSCRIPTIONS, mapped.subscriptions, SUBSCRIPTION_COLUMNS, batch_size, progress
        )
        if truncate and mapped.users.empty:
            raise TargetError("refusing to truncate the tables with no user to load: the file holds none")
        if truncate:
            conn.execute(
                sql.SQL("TRUNCATE {}, {}").format(table(schema, SUBSCRIPTIONS), table(schema, USERS))
            )
        users = _upsert_users(conn, schema, stage_users, len(mapped.users))
        subscriptions = _upsert_subscriptions(conn, schema, stage_subscriptions, len(mapped.subscriptions))
        written = _write_rejects(conn, schema, rejects, run_id)
        if before_commit is not None:
            before_commit(conn)
        if dry_run:
            raise psycopg.Rollback()
    return LoadStats(users, subscriptions, written, created, truncate)


def to_csv_chunks(frame: pd.DataFrame, batch_size: int):
    """The frame as PostgreSQL CSV, `batch_size` rows per chunk: NULL unquoted, empty text quoted."""
    arrow = pa.Table.from_pandas(frame, preserve_index=False)
    options = pacsv.WriteOptions(include_header=False)
    for offset in range(0, arrow.num_rows, max(batch_size, 1)):
        buffer = io.BytesIO()
        chunk = arrow.slice(offset, batch_size)
        pacsv.write_csv(chunk, buffer, options)
        yield chunk.num_rows, buffer.getvalue()


def copy_frame(conn, target: sql.Composable, frame: pd.DataFrame, columns: list[str], batch_size: int,
               progress: Progress | None = None, stage: str = "") -> None:
    statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv)").format(
        target, sql.SQL(", ").join(map(sql.Identifier, columns))
    )
    done = 0
    with conn.cursor().copy(statement) as copy:
        for rows, data in to_csv_chunks(frame[columns], batch_size):
            copy.write(data)
            done += rows
            if progress:
                progress(stage, done, len(frame))


def _stage(conn, schema, name, frame, columns, batch_size, progress) -> sql.Identifier:
    """A temporary table with the target's column types, filled by COPY."""
    stage = sql.Identifier(f"_faceit_etl_stage_{name}")
    conn.execute(
        sql.SQL("CREATE TEMP TABLE {} ON COMMIT DROP AS SELECT {} FROM {} WITH NO DATA").format(
            stage, sql.SQL(", ").join(map(sql.Identifier, columns)), table(schema, name)
        )
    )
    copy_frame(conn, stage, frame, columns, batch_size, progress, f"copy {name}")
    return stage


def _upsert(conn, statement: sql.Composed, total: int) -> TableStats:
    counted = sql.SQL(
        "WITH written AS ({}) SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted) FROM written"
    ).format(statement)
    inserted, updated = conn.execute(counted).fetchone()
    return TableStats(inserted, updated, total - inserted - updated)


def _changed(target: sql.Identifier, columns: list[str]) -> sql.Composed:
    """`(t.a, t.b) IS DISTINCT FROM (excluded.a, excluded.b)`: only real changes are written."""
    return sql.SQL("({}) IS DISTINCT FROM ({})").format(
        sql.SQL(", ").join(sql.SQL("{}.{}").format(target, sql.Identifier(c)) for c in columns),
        sql.SQL(", ").join(sql.SQL("excluded.{}").format(sql.Identifier(c)) for c in columns),
    )


def _assignments(columns: list[str]) -> sql.Composed:
    return sql.SQL(", ").join(sql.SQL("{0} = excluded.{0}").format(sql.Identifier(c)) for c in columns)


def _upsert_users(conn, schema, stage, total) -> TableStats:
    """A user absent from the file's `created_at` keeps the one it has, or gets the load's time."""
    users = table(schema, USERS)
    data = [c for c in _USER_DATA if c != "created_at"]
    statement = sql.SQL(
        """INSERT INTO {users} AS t (id, user_id, {data}, created_at)
           SELECT s.id, s.user_id, {s_data}, COALESCE(s.created_at, existing.created_at, now())
           FROM {stage} s LEFT JOIN {users} existing ON existing.user_id = s.user_id
           ON CONFLICT (user_id) DO UPDATE SET {assign}, created_at = excluded.created_at, updated_at = now()
           WHERE {changed}
           RETURNING (xmax = 0) AS inserted"""
    ).format(
        users=users,
        data=sql.SQL(", ").join(map(sql.Identifier, data)),
        s_data=sql.SQL(", ").join(sql.SQL("s.{}").format(sql.Identifier(c)) for c in data),
        stage=stage,
        assign=_assignments(data),
        changed=_changed(sql.Identifier("t"), _USER_DATA),
    )
    return _upsert(conn, statement, total)


def _release_moving_referral_codes(conn, schema, stage) -> None:
    """Codes that move between users in this file (a swap, a code passed on) would collide with
    the row that still holds them, since the unique key is checked row by row: clear them first.
    The upsert then writes the new codes and counts those rows as updated."""
    conn.execute(
        sql.SQL(
            """UPDATE {target} AS t SET referral_code = NULL FROM {stage} AS s
               WHERE s.user_id = t.user_id AND t.referral_code IS NOT NULL
                 AND t.referral_code IS DISTINCT FROM s.referral_code"""
        ).format(target=table(schema, SUBSCRIPTIONS), stage=stage)
    )


def _upsert_subscriptions(conn, schema, stage, total) -> TableStats:
    _release_moving_referral_codes(conn, schema, stage)
    columns = sql.SQL(", ").join(map(sql.Identifier, SUBSCRIPTION_COLUMNS))
    statement = sql.SQL(
        """INSERT INTO {target} AS t ({columns}) SELECT {columns} FROM {stage}
           ON CONFLICT (user_id) DO UPDATE SET {assign}, updated_at = now()
           WHERE {changed}
           RETURNING (xmax = 0) AS inserted"""
    ).format(
        target=table(schema, SUBSCRIPTIONS),
        columns=columns,
        stage=stage,
        assign=_assignments(_SUBSCRIPTION_DATA),
        changed=_changed(sql.Identifier("t"), _SUBSCRIPTION_DATA),
    )
    return _upsert(conn, statement, total)


def _write_rejects(conn, schema, rejects: pd.DataFrame, run_id: str) -> int:
    if rejects.empty:
        return 0
    frame = rejects.assign(run_id=run_id, raw=rejects["raw"].map(jsonb_safe))
    copy_frame(conn, table(schema, MIGRATION_REJECTS), frame, REJECT_COLUMNS, batch_size=len(frame))
    return len(frame)


def jsonb_safe(raw_json: str) -> str:
    """jsonb cannot hold U+0000: such a raw entry is kept with the character spelled out as text."""
    if "\\u0000" not in raw_json:
        return raw_json

    def spell(value):
        if isinstance(value, str):
            return value.replace("\x00", "\\u0000")
        if isinstance(value, list):
            return [spell(v) for v in value]
        if isinstance(value, dict):
            return {spell(k): spell(v) for k, v in value.items()}
        return value

    return json.dumps(spell(json.loads(raw_json)), ensure_ascii=False)
