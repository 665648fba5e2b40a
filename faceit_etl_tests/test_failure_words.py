"""What a failed run says: the rows that made it fail, named by table and column, never the table's
kept rows as if they were wrong, and never a row's values."""

from __future__ import annotations

import psycopg
import pytest

from faceit_etl.generate import generate_users
from faceit_etl.postgres import ddl
from faceit_etl.postgres.load import load
from faceit_etl.postgres.verdicts import VerificationFailed
from faceit_etl_tests.test_load import chain, document
from faceit_etl_tests.test_verified_before_commit import HEAD, SCHEMA, judged, target_state, trigger


def test_a_content_failure_names_the_files_rows_not_the_kept_ones(db, database_url):
    entries = generate_users(5, seed=41)
    with psycopg.connect(database_url) as conn:
        first, rejects = chain(document(entries))
        load(conn, SCHEMA, first, rejects, "run-1", before_commit=judged(first))
    trigger(db, ddl.USERS, "UPDATE", "NEW.faceit_nickname := 'HACKED'")
    entries[0]["faceit_nickname"] = "renamed"
    mapped, rejects = chain(document(entries[:2]))  # the other three users are kept
    before = target_state(db)

    with psycopg.connect(database_url) as conn, pytest.raises(VerificationFailed) as failed:
        load(conn, SCHEMA, mapped, rejects, "run-2", before_commit=judged(mapped))

    assert target_state(db) == before
    assert str(failed.value) == (
        f"{HEAD}content_matches: users: 0 rows missing, 1 cells differ (in faceit_nickname) "
        f"(rows: users faceit_nickname: {entries[0]['user_id']})"
    )
