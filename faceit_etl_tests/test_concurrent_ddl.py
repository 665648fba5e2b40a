"""Runs started at once on a fresh schema take turns creating it and its tables: each DDL the
pipeline runs happens under the schema's advisory lock, so no run dies of a catalog collision."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import psycopg

from faceit_etl.postgres.ddl import (
    MIGRATION_LOGS,
    MIGRATION_REJECTS,
    SUBSCRIPTIONS,
    USERS,
    ensure_bookkeeping_tables,
    ensure_target_tables,
    table_exists,
    type_exists,
)

CALLERS = 6
ROUNDS = 8


def _at_once(database_url: str, create) -> list[str]:
    """`create(conn)` from CALLERS sessions released together; the errors they raised."""
    connections = [psycopg.connect(database_url, autocommit=True) for _ in range(CALLERS)]
    barrier = threading.Barrier(CALLERS)

    def call(conn):
        barrier.wait()
        try:
            create(conn)
        except psycopg.Error as exc:
            return f"{type(exc).__name__}: {exc}"
        return None

    try:
        with ThreadPoolExecutor(CALLERS) as pool:
            return [e for e in pool.map(call, connections) if e]
    finally:
        for conn in connections:
            conn.close()


def test_runs_started_together_create_the_schema_and_bookkeeping_tables_in_turn(database_url, db):
    for round_ in range(ROUNDS):
        schema = f"fresh_{round_}"
        errors = _at_once(database_url, lambda conn: ensure_bookkeeping_tables(conn, schema))
        assert errors == [], f"round {round_}: {errors}"
        assert table_exists(db, schema, MIGRATION_LOGS) and table_exists(db, schema, MIGRATION_REJECTS)


def test_loads_started_together_create_the_enum_and_target_tables_in_turn(database_url, db):
    def create(schema):
        def in_transaction(conn):  # as a load does: in its transaction
            with conn.transaction():
                ensure_target_tables(conn, schema)
        return in_transaction

    for round_ in range(ROUNDS):
        schema = f"fresh_{round_}"
        ensure_bookkeeping_tables(db, schema)
        errors = _at_once(database_url, create(schema))
        assert errors == [], f"round {round_}: {errors}"
        assert type_exists(db, schema, "subscriptiontier")
        assert table_exists(db, schema, USERS) and table_exists(db, schema, SUBSCRIPTIONS)
