"""Snapshots of the migration's tables, and their exact restoration (the rollback).

A snapshot is each table's rows in PostgreSQL's COPY text format, ordered by primary key and
written with the session in UTC, so the file's sha256 is also the content hash of the table: after
a restore, the same query must give the same hash. Each table's definition (columns, constraints,
indexes, the tier enum's labels) is kept too, so a table dropped since can be made again. Only the
migration's own tables are touched.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

from faceit_etl.backups import CHUNK, private_writer, update_manifest
from faceit_etl.postgres.database import connect
from faceit_etl.postgres.ddl import SUBSCRIPTIONS, TIER_TYPE, USERS, table, table_exists, type_exists
from faceit_etl.postgres.lock import advisory_lock_key

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


def stored_columns(conn: psycopg.Connection, schema: str, name: str) -> list[str]:
    """The columns a restore writes, in table order: every live column but generated ones (stored or
    virtual), which PostgreSQL computes and refuses in COPY FROM. Columns the bot added that we do
    not know are kept like ours; identity columns too (COPY FROM writes the values it is given)."""
    return [
        row[0]
        for row in conn.execute(
            """SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0
                 AND NOT attisdropped AND attgenerated = '' ORDER BY attnum""",
            [table(schema, name).as_string(conn)],
        ).fetchall()
    ]


def _column_list(columns: list[str] | None) -> sql.Composable:
    """Older manifests name no columns: their files hold every column, as `*` reads them."""
    return sql.SQL("*") if columns is None else sql.SQL(", ").join(map(sql.Identifier, columns))


def _ordered_copy(schema: str, name: str, columns: list[str] | None) -> sql.Composed:
    return sql.SQL("COPY (SELECT {} FROM {} ORDER BY id) TO STDOUT").format(_column_list(columns), table(schema, name))


def digest_table(
    conn: psycopg.Connection, schema: str, name: str, sink=None, columns: list[str] | None = None
) -> TableDigest:
    """Row count and sha256 of a table's `columns` (all when None), optionally writing the COPY
    data to `sink`.

    Times are written in UTC whatever the session's zone, which is put back afterwards."""
    zone = conn.execute("SELECT current_setting('TimeZone')").fetchone()[0]
    conn.execute("SET TIME ZONE 'UTC'")
    digest, rows = hashlib.sha256(), 0
    try:
        with conn.cursor().copy(_ordered_copy(schema, name, columns)) as copy:
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


def database_identity(conn: psycopg.Connection) -> dict:
    """What tells this database apart from any other: the cluster's system identifier (set when the
    cluster was made, kept by copies of its files) and the database's name in it."""
    system, name = conn.execute(
        "SELECT (pg_control_system()).system_identifier::text, current_database()"
    ).fetchone()
    return {"system_identifier": system, "name": name}


def take_snapshot(conn: psycopg.Connection, schema: str, folder: Path) -> dict:
    """Write each existing table to `folder/<table>.copy` (0600) in a transaction of its own, both
    tables at one instant; returns the manifest's part.

    That instant is taken under the schema's lock, and its time recorded (`locked_at`) as a load records
    its own: a rollback to this snapshot undoes exactly the migrations that took the lock after it. The
    lock is taken before the transaction starts (the instant is fixed by its first statement, which
    would otherwise come before the wait) and let go once the instant is fixed, so loads wait only for
    that, not for the copy."""
    key = advisory_lock_key(schema)
    with conn.transaction():
        conn.execute("SELECT pg_advisory_lock(%s)", [key])  # the session's: it outlives this transaction
    held = True
    try:
        with conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")  # both tables at one instant
            locked_at = conn.execute("SELECT clock_timestamp()").fetchone()[0]
            conn.execute("SELECT pg_advisory_unlock(%s)", [key])
            held = False
            return _write_snapshot(conn, schema, folder) | {"locked_at": locked_at.isoformat()}
    finally:
        if held and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
            conn.execute("SELECT pg_advisory_unlock(%s)", [key])
            if not conn.autocommit:
                conn.commit()


def take_snapshot_in_transaction(conn: psycopg.Connection, url: str, schema: str, folder: Path) -> dict:
    """The snapshot of exactly what `conn`'s open transaction sees now, for a load to write next.

    The COPYs run on a second connection that imports this transaction's snapshot, so both tables
    are read at one instant although the load's own transaction reads each statement afresh."""
    exported = conn.execute("SELECT pg_export_snapshot()").fetchone()[0]
    with connect(url) as reader, reader.transaction():
        reader.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        reader.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(exported)))
        return _write_snapshot(reader, schema, folder)


def snapshot_for_load(
    conn: psycopg.Connection, url: str, schema: str, folder: Path, run_id: str, recognised: str | None, found: dict
) -> dict:
    """Record in the manifest what `run_id`'s load is about to change, from inside its transaction:
    the tables, or only which run left them as they are when the load recognises its input (then
    it writes nothing). Recorded before the commit, so a committed load always has it; a load that
    fails leaves a snapshot whose run's log row is not `success`, which rollback refuses."""
    if recognised is not None:
        target = {"schema": schema, UNCHANGED_SINCE: recognised, "fingerprint": found}
    else:
        target = take_snapshot_in_transaction(conn, url, schema, folder)
    return update_manifest(folder, target=target | {"run_id": run_id})["target"]


def _write_snapshot(conn: psycopg.Connection, schema: str, folder: Path) -> dict:
    # Definitions are read with the schema first on the path, so they name its objects unqualified.
    conn.execute("SELECT set_config('search_path', %s, true)", [sql.Identifier(schema).as_string(conn)])
    tables: dict[str, dict | None] = {}
    for name in SNAPSHOT_TABLES:
        if not table_exists(conn, schema, name):
            tables[name] = None
            continue
        columns = stored_columns(conn, schema, name)
        with private_writer(folder / f"{name}.copy") as sink:
            result = digest_table(conn, schema, name, sink, columns)
        tables[name] = {
            "rows": result.rows, "sha256": result.sha256, "file": f"{name}.copy",
            "bytes": (folder / f"{name}.copy").stat().st_size, "columns": columns,
            "definition": _definition(conn, schema, name),
        }
    labels = conn.execute(
        """SELECT array_agg(e.enumlabel ORDER BY e.enumsortorder) FROM pg_enum e
           JOIN pg_type t ON t.oid = e.enumtypid JOIN pg_namespace n ON n.oid = t.typnamespace
           WHERE n.nspname = %s AND t.typname = %s""",
        [schema, TIER_TYPE],
    ).fetchone()[0]
    return {"schema": schema, "database": database_identity(conn), "tables": tables, "tier_type_existed": labels is not None, "tier_type_labels": labels}


def _definition(conn: psycopg.Connection, schema: str, name: str) -> dict:
    """What CREATE TABLE needs: columns (type, NOT NULL, default), constraints, other indexes."""
    relation = table(schema, name).as_string(conn)
    columns = conn.execute(
        """SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull, pg_get_expr(d.adbin, d.adrelid),
                  a.attgenerated::text, a.attidentity::text
           FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
           WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum""",
        [relation],
    ).fetchall()
    constraints = conn.execute(
        """SELECT conname, pg_get_constraintdef(oid), contype = 'f' FROM pg_constraint
           WHERE conrelid = %s::regclass AND contype IN ('p', 'u', 'f', 'c', 'x') ORDER BY conname""",
        [relation],
    ).fetchall()
    # The indexes no constraint makes: a foreign key's conindid names the index it references, not its own.
    indexes = conn.execute(
        """SELECT pg_get_indexdef(i.indexrelid) FROM pg_index i WHERE i.indrelid = %s::regclass
             AND NOT EXISTS (SELECT FROM pg_constraint c WHERE c.conindid = i.indexrelid AND c.conrelid = i.indrelid
                                                        AND c.contype IN ('p', 'u', 'x'))
           ORDER BY i.indexrelid::regclass::text""",
        [relation],
    ).fetchall()
    return {
        "columns": [
            {"name": n, "type": t, "not_null": nn, "default": d, "generated": g, "identity": i}
            for n, t, nn, d, g, i in columns
        ],
        "constraints": [{"name": n, "definition": d, "foreign": f} for n, d, f in constraints],
        "indexes": [row[0] for row in indexes],
    }


def _create_table(conn: psycopg.Connection, schema: str, name: str, definition: dict) -> None:
    """The table without its keys: the rows are copied first, as in a fresh load, keys after.

    The definitions are SQL text PostgreSQL itself wrote when the snapshot was taken."""
    columns = [
        sql.SQL("{} {}{}{}").format(
            sql.Identifier(c["name"]),
            sql.SQL(c["type"]),
            sql.SQL(" NOT NULL") if c["not_null"] else sql.SQL(""),
            _default(c),
        )
        for c in definition["columns"]
    ]
    conn.execute(sql.SQL("CREATE TABLE {} ({})").format(table(schema, name), sql.SQL(", ").join(columns)))


def _default(column: dict) -> sql.Composable:
    """A generated column's expression is stored as its default; an identity column has none."""
    if generated := column.get("generated"):
        return sql.SQL(" GENERATED ALWAYS AS ({}) {}").format(
            sql.SQL(column["default"]), sql.SQL({"s": "STORED", "v": "VIRTUAL"}[generated])
        )
    if identity := column.get("identity"):
        return sql.SQL({"a": " GENERATED ALWAYS AS IDENTITY", "d": " GENERATED BY DEFAULT AS IDENTITY"}[identity])
    if column["default"] is not None:
        return sql.SQL(" DEFAULT ") + sql.SQL(column["default"])
    return sql.SQL("")


def _add_keys(conn: psycopg.Connection, schema: str, name: str, definition: dict, *, foreign: bool) -> None:
    for constraint in definition["constraints"]:
        if constraint["foreign"] == foreign:
            conn.execute(
                sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {}").format(
                    table(schema, name), sql.Identifier(constraint["name"]), sql.SQL(constraint["definition"])
                )
            )
    if not foreign:
        for index in definition["indexes"]:
            conn.execute(sql.SQL(index))


_SHA256 = re.compile(r"[0-9a-f]{64}")


def snapshot_damage(manifest: Path, folder: Path, snapshot: dict) -> str | None:
    """What keeps the snapshot's files in `folder` from being exactly what `manifest` records of them,
    naming the file (or the manifest's entry); None when every file is whole.

    Read before a restore writes anything: COPY would take a damaged file up to its first bad line, and
    PostgreSQL's error about that line quotes the row. Each file must have its entry's sha256 and row
    count, and its size where recorded (older manifests lack it); each table needs an entry: a missing one
    would read as "the table did not exist then" and drop it."""
    tables = snapshot.get("tables")
    for name in SNAPSHOT_TABLES:
        if not isinstance(tables, dict) or name not in tables:
            return f"{manifest}: no entry for table {name} (its snapshot file, or that the table was absent then)"
        entry = tables[name]
        if entry is None:
            continue
        if not _entry_usable(name, entry):
            return (f"{manifest}: the entry for table {name} is not a snapshot's (its file {name}.copy, a row count "
                    "and a sha256)")
        path = folder / entry["file"]
        try:
            size, rows, sha256 = _file_digest(path)
        except FileNotFoundError:
            return f"{path}: missing (the manifest records {entry['rows']} rows of {name} in it)"
        except OSError as exc:
            return f"{path}: cannot be read ({exc.strerror})"
        recorded = entry.get("bytes")
        if sha256 == entry["sha256"]:
            if rows != entry["rows"] or recorded not in (None, size):
                said = f"{entry['rows']} rows" + ("" if recorded is None else f" and {recorded} bytes")
                return (f"{manifest}: the entry for table {name} records {said}, but {entry['file']}, whose sha256 "
                        f"it records, holds {rows} rows and {size} bytes: the manifest was altered")
            continue
        if size == 0:
            return f"{path}: empty, but the manifest records {entry['rows']} rows in it"
        if recorded is None:
            return (f"{path}: truncated or damaged: its sha256 does not match the manifest's ({rows} rows in it, "
                    f"{entry['rows']} recorded)")
        if size < recorded:
            return f"{path}: truncated: {size} bytes of the {recorded} the manifest records"
        if size > recorded:
            return f"{path}: {size - recorded} bytes more than the {recorded} the manifest records"
        return f"{path}: altered: it has the {size} bytes the manifest records, but not their sha256"
    return None


def _entry_usable(name: str, entry: object) -> bool:
    """As a snapshot writes it: its own file's name (any other path would be read as the table), counts, a sha256."""

    def count(value) -> bool:
        return type(value) is int and value >= 0

    return (
        isinstance(entry, dict) and entry.get("file") == f"{name}.copy" and count(entry.get("rows"))
        and isinstance(entry.get("sha256"), str) and _SHA256.fullmatch(entry["sha256"]) is not None
        and (entry.get("bytes") is None or count(entry["bytes"]))
    )


def _file_digest(path: Path) -> tuple[int, int, str]:
    """Size, rows (lines) and sha256 of a snapshot file, as digest_table counts them."""
    digest, size, rows = hashlib.sha256(), 0, 0
    with path.open("rb") as source:
        while block := source.read(CHUNK):
            digest.update(block)
            size += len(block)
            rows += block.count(b"\n")
    return size, rows, digest.hexdigest()


def restore_snapshot(conn: psycopg.Connection, folder: Path, snapshot: dict) -> dict[str, TableDigest]:
    """Put the tables back exactly as the snapshot holds them, in one transaction, verified.

    Tables that did not exist when the snapshot was taken are dropped again (and the enum, if the
    migration created it); tables dropped since are made again from their recorded definition. A
    restored table whose count or hash differs from the manifest aborts the transaction: the
    database is then left as it was before the rollback.
    """
    schema = snapshot["schema"]
    tables = snapshot["tables"]
    restored: dict[str, TableDigest] = {}
    with conn.transaction():
        conn.execute("SELECT set_config('search_path', %s, true)", [sql.Identifier(schema).as_string(conn)])
        existing = [name for name in SNAPSHOT_TABLES if table_exists(conn, schema, name)]
        if existing:
            conn.execute(
                sql.SQL("TRUNCATE {}").format(sql.SQL(", ").join(table(schema, n) for n in existing))
            )
        recreated = _recreate_missing(conn, schema, snapshot, existing)
        for name in SNAPSHOT_TABLES:
            if tables.get(name) is None or name not in existing + recreated:
                continue
            columns = tables[name].get("columns")
            into = table(schema, name) if columns is None else sql.SQL("{} ({})").format(table(schema, name), _column_list(columns))
            with conn.cursor().copy(sql.SQL("COPY {} FROM STDIN").format(into)) as copy:
                with (folder / tables[name]["file"]).open("rb") as source:
                    while block := source.read(1 << 20):
                        copy.write(block)
        for foreign in (False, True):  # a foreign key needs the key it references
            for name in recreated:
                _add_keys(conn, schema, name, tables[name]["definition"], foreign=foreign)
        for name in reversed(SNAPSHOT_TABLES):
            if tables.get(name) is None and name in existing:
                conn.execute(sql.SQL("DROP TABLE {}").format(table(schema, name)))
        if not snapshot.get("tier_type_existed", True) and type_exists(conn, schema, TIER_TYPE):
            conn.execute(sql.SQL("DROP TYPE {}").format(table(schema, TIER_TYPE)))
        for name in SNAPSHOT_TABLES:
            expected = tables.get(name)
            if expected is None:
                continue
            restored[name] = digest_table(conn, schema, name, columns=expected.get("columns"))
            if (restored[name].rows, restored[name].sha256) != (expected["rows"], expected["sha256"]):
                raise SnapshotError(
                    f"restored {schema}.{name} does not match the snapshot "
                    f"({restored[name].rows} rows vs {expected['rows']}); nothing was changed"
                )
    return restored


def _recreate_missing(conn: psycopg.Connection, schema: str, snapshot: dict, existing: list[str]) -> list[str]:
    """Make the snapshotted tables that are gone (and the tier enum, and the schema, if gone too)."""
    missing = [n for n in SNAPSHOT_TABLES if snapshot["tables"].get(n) is not None and n not in existing]
    for name in missing:
        if "definition" not in snapshot["tables"][name]:
            raise SnapshotError(
                f"table {schema}.{name} is gone and this snapshot holds no definition to make it again; "
                "nothing was changed"
            )
    if missing and not conn.execute("SELECT EXISTS (SELECT FROM pg_namespace WHERE nspname = %s)", [schema]).fetchone()[0]:
        try:
            with conn.transaction():
                conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        except psycopg.errors.InsufficientPrivilege:
            raise SnapshotError(
                f"schema {schema} is gone and this role may not create it: a superuser must create it "
                "(owned by this role) first; nothing was changed"
            ) from None
    labels = snapshot.get("tier_type_labels")
    if missing and labels and not type_exists(conn, schema, TIER_TYPE):
        conn.execute(
            sql.SQL("CREATE TYPE {} AS ENUM ({})").format(
                table(schema, TIER_TYPE), sql.SQL(", ").join(map(sql.Literal, labels))
            )
        )
    for name in missing:
        _create_table(conn, schema, name, snapshot["tables"][name]["definition"])
    return missing
