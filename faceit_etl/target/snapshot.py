"""Snapshots of the migration's tables, and their exact restoration (the rollback).

A snapshot is each table's rows in PostgreSQL's COPY text format, ordered by primary key and
written with the session in UTC, so the file's sha256 is also the content hash of the table: after
a restore, the same query must give the same hash. Only the migration's own tables are touched.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

from faceit_etl.backup import private_writer
from faceit_etl.target.ddl import SUBSCRIPTIONS, TIER_TYPE, USERS, table, table_exists, type_exists

# Restored parents first; emptied children first.
SNAPSHOT_TABLES = (USERS, SUBSCRIPTIONS)
# A manifest's target without a snapshot: the run found the tables as this earlier run left them.
UNCHANGED_SINCE = "unchanged_since_run"


class SnapshotError(RuntimeError):
    """A snapshot cannot be taken or restored; nothing was changed."""


@dataclass(frozen=True)
class TableDigest:
    rows: int
    sha256: str


def _ordered_copy(schema: str, name: str) -> sql.Composed:
    return sql.SQL("COPY (SELECT * FROM {} ORDER BY id) TO STDOUT").format(table(schema, name))


def digest_table(conn: psycopg.Connection, schema: str, name: str, sink=None) -> TableDigest:
    """Row count and sha256 of a table's content (optionally writing the COPY data to `sink`).

    Times are written in UTC whatever the session's zone, which is put back afterwards."""
    zone = conn.execute("SELECT current_setting('TimeZone')").fetchone()[0]
    conn.execute("SET TIME ZONE 'UTC'")
    digest, rows = hashlib.sha256(), 0
    try:
        with conn.cursor().copy(_ordered_copy(schema, name)) as copy:
            for block in copy:
                data = bytes(block)
                digest.update(data)
                rows += data.count(b"\n")
                if sink is not None:
                    sink.write(data)
    finally:
        if conn.info.transaction_status != psycopg.pq.TransactionStatus.INERROR:
            conn.execute("SELECT set_config('TimeZone', %s, false)", [zone])
    return TableDigest(rows, digest.hexdigest())


def take_snapshot(conn: psycopg.Connection, schema: str, folder: Path) -> dict:
    """Write each existing table to `folder/<table>.copy` (0600); returns the manifest's part."""
    tables: dict[str, dict | None] = {}
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")  # both tables at one instant
        for name in SNAPSHOT_TABLES:
            if not table_exists(conn, schema, name):
                tables[name] = None
                continue
            with private_writer(folder / f"{name}.copy") as sink:
                result = digest_table(conn, schema, name, sink)
            tables[name] = {"rows": result.rows, "sha256": result.sha256, "file": f"{name}.copy"}
        tier_type_existed = type_exists(conn, schema, TIER_TYPE)
    return {"schema": schema, "tables": tables, "tier_type_existed": tier_type_existed}


def restore_snapshot(conn: psycopg.Connection, folder: Path, snapshot: dict) -> dict[str, TableDigest]:
    """Put the tables back exactly as the snapshot holds them, in one transaction, verified.

    Tables that did not exist when the snapshot was taken are dropped again (and the enum, if the
    migration created it). A restored table whose count or hash differs from the manifest aborts
    the transaction: the database is then left as it was before the rollback.
    """
    schema = snapshot["schema"]
    tables = snapshot["tables"]
    restored: dict[str, TableDigest] = {}
    with conn.transaction():
        existing = [name for name in SNAPSHOT_TABLES if table_exists(conn, schema, name)]
        if existing:
            conn.execute(
                sql.SQL("TRUNCATE {}").format(sql.SQL(", ").join(table(schema, n) for n in existing))
            )
        for name in SNAPSHOT_TABLES:
            if tables.get(name) is None or name not in existing:
                continue
            with conn.cursor().copy(sql.SQL("COPY {} FROM STDIN").format(table(schema, name))) as copy:
                with (folder / tables[name]["file"]).open("rb") as source:
                    while block := source.read(1 << 20):
                        copy.write(block)
        for name in reversed(SNAPSHOT_TABLES):
            if tables.get(name) is None and name in existing:
                conn.execute(sql.SQL("DROP TABLE {}").format(table(schema, name)))
        if not snapshot.get("tier_type_existed", True) and type_exists(conn, schema, TIER_TYPE):
            conn.execute(sql.SQL("DROP TYPE {}").format(table(schema, TIER_TYPE)))
        for name in SNAPSHOT_TABLES:
            expected = tables.get(name)
            if expected is None:
                continue
            if name not in existing:
                raise SnapshotError(f"table {schema}.{name} is gone; it cannot be restored in place")
            restored[name] = digest_table(conn, schema, name)
            if (restored[name].rows, restored[name].sha256) != (expected["rows"], expected["sha256"]):
                raise SnapshotError(
                    f"restored {schema}.{name} does not match the snapshot "
                    f"({restored[name].rows} rows vs {expected['rows']}); nothing was changed"
                )
    return restored
