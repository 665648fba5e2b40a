"""Rows of the file's users that another session writes after the load counted the tables are matched
by the upsert, so the rows the load keeps come out fewer than none: the count check says what happened
instead of printing a negative count."""

from __future__ import annotations

import psycopg
import pytest
from psycopg import sql

from faceit_etl.generate import generate_users
from faceit_etl.postgres import ddl
from faceit_etl.postgres.load import load
from faceit_etl.postgres.verdicts import VerificationFailed
from faceit_etl_tests.test_load import chain, document
from faceit_etl_tests.test_verified_before_commit import HEAD, SCHEMA, judged, target_state


def test_rows_that_appear_during_the_load_are_named_never_counted_negative(db, database_url):
    entries = generate_users(16, seed=51)
    first, rejects = chain(document(entries[:10]))
    with psycopg.connect(database_url) as conn:
        load(conn, SCHEMA, first, rejects, "run-1", before_commit=judged(first))
    mapped, rejects = chain(document(entries))
    before = target_state(db)

    def another_session_writes(conn, recognised, found) -> None:
        """After the load counted the tables: six of the file's users appear, as the bot would write them."""
        conn.execute(
            sql.SQL("INSERT INTO {} (id, user_id) SELECT gen_random_uuid(), unnest(%s::bigint[])").format(
                ddl.table(SCHEMA, ddl.USERS)),
            [[e["user_id"] for e in entries[10:]]],
        )

    with psycopg.connect(database_url) as conn, pytest.raises(VerificationFailed) as failed:
        load(conn, SCHEMA, mapped, rejects, "run-2", before_commit=judged(mapped), before_write=another_session_writes)

    assert target_state(db) == before
    assert str(failed.value) == (
        f"{HEAD}row_counts_match: users: 16 rows in the database, 16 from the file; 6 of the rows the run matched "
        "appeared after it counted the table: written by another session during the run, not by it"
    )
    assert "-6" not in str(failed.value)
