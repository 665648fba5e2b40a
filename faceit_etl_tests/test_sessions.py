"""A run's sessions on the target: named after the run, so `status` can ask the server whether one still
writes, and given up at once when the run is interrupted, so no lock of theirs outlives it."""

from __future__ import annotations

import threading
import time
import uuid

import psycopg
import pytest

from faceit_etl.postgres.database import abandon, connect, may_run_statement, run_session_name, run_sessions


def test_the_sessions_of_each_run_are_found_by_its_name_from_any_database_of_the_server(database_url, postgres_server_url):
    run_a, run_b = str(uuid.uuid4()), str(uuid.uuid4())  # run ids as Dagster makes them: no other test's
    with connect(database_url, run_id=run_a) as first, connect(database_url, run_id=run_a) as second, \
            connect(database_url, run_id=run_b) as other, connect(database_url) as unnamed, \
            psycopg.connect(database_url, application_name="faceit-etl runner") as lookalike:
        with psycopg.connect(postgres_server_url) as elsewhere:
            found = run_sessions(elsewhere)
        ours = {name: pids for name, pids in found.items() if name in (run_session_name(run_a), run_session_name(run_b))}
        assert ours == {run_session_name(run_a): sorted([first.info.backend_pid, second.info.backend_pid]),
                        run_session_name(run_b): [other.info.backend_pid]}
        named_elsewhere = {pid for pids in found.values() for pid in pids}
        assert unnamed.info.backend_pid not in named_elsewhere and lookalike.info.backend_pid not in named_elsewhere


def test_a_statement_may_run_on_an_idle_connection_or_in_its_transaction_but_not_in_a_failed_one(database_url):
    conn = connect(database_url)
    try:
        assert may_run_statement(conn)  # idle
        conn.execute("SELECT 1")
        assert may_run_statement(conn)  # in its transaction
        with pytest.raises(psycopg.errors.DivisionByZero):
            conn.execute("SELECT 1 / 0")
        assert not may_run_statement(conn)  # the transaction failed: any statement would fail too
    finally:
        conn.close()


def test_abandoning_a_busy_connection_stops_its_statement_and_frees_its_locks_at_once(database_url, db):
    db.execute("CREATE TABLE public.guarded (id int)")
    conn = connect(database_url)
    conn.execute("LOCK TABLE public.guarded IN ACCESS EXCLUSIVE MODE")
    pid = conn.info.backend_pid

    def sleep_a_minute() -> None:
        try:
            conn.execute("SELECT pg_sleep(60)")
        except psycopg.Error:
            pass  # the statement is cancelled or its connection closed: what the test brings about

    busy = threading.Thread(target=sleep_a_minute)
    busy.start()
    deadline = time.monotonic() + 30
    while db.execute("SELECT wait_event FROM pg_stat_activity WHERE pid = %s", [pid]).fetchone() != ("PgSleep",):
        assert time.monotonic() < deadline, "the statement never started"
        time.sleep(0.05)
    assert not may_run_statement(conn)  # in the middle of a statement
    abandon(conn)
    busy.join(timeout=30)
    assert conn.closed and not busy.is_alive()  # within 30 s, not the 60 s of the sleep
    assert db.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s AND state = 'active'", [pid]).fetchone() == (0,)
    db.execute("SET lock_timeout = '5s'")
    with db.transaction():
        db.execute("LOCK TABLE public.guarded IN ACCESS EXCLUSIVE MODE")  # its lock went with it
    abandon(conn)  # abandoning it again does nothing

