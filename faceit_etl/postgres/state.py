"""What the target holds now: for `status` and `validate --database`."""

from __future__ import annotations

import psycopg
from psycopg import sql

from faceit_etl.postgres import runlog
from faceit_etl.postgres.ddl import MIGRATION_LOGS, MIGRATION_REJECTS, SUBSCRIPTIONS, USERS, table, table_exists
from faceit_etl.postgres.verify import row_count

TABLES = (USERS, SUBSCRIPTIONS, MIGRATION_LOGS, MIGRATION_REJECTS)


def table_rows(conn: psycopg.Connection, schema: str) -> dict[str, int | None]:
    """Row count per table; None where the table does not exist."""
    return {name: row_count(conn, schema, name) if table_exists(conn, schema, name) else None for name in TABLES}


def latest_migrations(conn: psycopg.Connection, schema: str, limit: int = 5) -> list[dict]:
    if not table_exists(conn, schema, MIGRATION_LOGS):
        return []
    return runlog.latest(conn, schema, limit)


def users_already_present(conn: psycopg.Connection, schema: str, user_ids: list[int]) -> int:
    if not user_ids or not table_exists(conn, schema, USERS):
        return 0
    query = sql.SQL("SELECT count(*) FROM {} WHERE user_id = ANY(%s)").format(table(schema, USERS))
    return conn.execute(query, [user_ids]).fetchone()[0]
