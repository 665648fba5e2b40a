"""The advisory locks that make loads, rollbacks and DDL on one schema take turns across processes."""

from __future__ import annotations

import zlib

import psycopg


def advisory_lock_key(schema: str) -> int:
    """A lock key stable across processes and machines (Python's hash() is salted per process)."""
    return zlib.crc32(f"faceit-etl:{schema}".encode())


def lock_schema(conn: psycopg.Connection, schema: str) -> None:
    """The lock that makes loads, rollbacks and the DDL of the bot's tables take turns, held until
    the end of the current transaction (a session already holding it takes it again at once)."""
    conn.execute("SELECT pg_advisory_xact_lock(%s)", [advisory_lock_key(schema)])


def lock_bookkeeping(conn: psycopg.Connection, schema: str) -> None:
    """A lock of its own for creating the schema and our tables: a run writes its log row before
    its load, so it must not wait for another run's whole load (the schema's lock) to do so."""
    conn.execute("SELECT pg_advisory_xact_lock(%s)", [zlib.crc32(f"faceit-etl-bookkeeping:{schema}".encode())])
