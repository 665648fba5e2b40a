"""A yes to `faceit-etl rollback`'s question restores only the tables it was asked about. While the question
waited, a migration committed (the yes undid it too, unmentioned) or two rollbacks undid everything (the
yes brought back the rows of a migration every log row calls rolled back)."""

from __future__ import annotations

import contextlib
import os
import pty
import select
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from faceit_etl.generate import write_data_file
from faceit_etl_tests.test_cli import CLI, faceit_etl, workdir  # noqa: F401 (a fixture)


def asked(process: subprocess.Popen, deadline_seconds: float = 120) -> str:
    """The process's output up to its y/N question (it then waits for the answer)."""
    output, deadline = b"", time.monotonic() + deadline_seconds
    while b"[y/N] " not in output:
        assert time.monotonic() < deadline and process.poll() is None, output.decode()
        if select.select([process.stdout], [], [], 0.2)[0]:
            output += os.read(process.stdout.fileno(), 4096)
    return output.decode()


@contextlib.contextmanager
def rollback_question(workdir: Path, database_url: str, *args: str) -> Iterator[tuple[str, Callable[[], tuple[int, str]]]]:
    """`faceit-etl rollback [args]` on a terminal, waiting at its question: yields the question and `yes()`, which
    answers it and gives the command's exit status and the rest of its output."""
    controller, terminal = pty.openpty()
    env = {**os.environ, "DATABASE_URL": database_url, "MIGRATION_BACKUP_DIR": str(workdir / "backups")}
    env.pop("DAGSTER_HOME", None)
    question = subprocess.Popen([CLI, "rollback", *args], cwd=workdir, env=env, stdin=terminal, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT)

    def yes() -> tuple[int, str]:
        os.write(controller, b"y\n")
        answer = question.communicate(timeout=300)[0].decode()
        return question.returncode, answer

    try:
        yield asked(question), yes
    finally:
        question.kill()
        os.close(controller), os.close(terminal)


def statuses(db) -> list[tuple[str, str]]:
    return db.execute("SELECT metadata->>'run_id', status FROM migration_logs ORDER BY start_time").fetchall()


def nicknames(db) -> set[str] | None:
    if db.execute("SELECT to_regclass('users')").fetchone()[0] is None:
        return None
    return {row[0] for row in db.execute("SELECT faceit_nickname FROM users")}


@pytest.mark.parametrize("meanwhile", ["another migration commits", "two rollbacks undo everything"])
def test_a_yes_after_the_tables_changed_under_the_question_is_refused_and_changes_nothing(
    workdir, database_url, db, meanwhile
):
    first, second, third = (write_data_file(workdir / f"{n}.json", 30, seed=n) for n in (1, 2, 3))
    for source in (first, second):
        assert faceit_etl(workdir, database_url, "-q", "migrate", str(source)).returncode == 0
    asked_under = statuses(db)[-1][0]
    folder = workdir / "backups" / asked_under
    with rollback_question(workdir, database_url) as (said, yes):
        assert f"  to the snapshot {folder} (taken 20" in said
        if meanwhile == "another migration commits":
            assert faceit_etl(workdir, database_url, "-q", "migrate", str(third)).returncode == 0
        else:
            for _ in range(2):
                assert faceit_etl(workdir, database_url, "-q", "rollback", "--confirm").returncode == 0
        before = (statuses(db), nicknames(db))
        code, answer = yes()

    latest = {"another migration commits": f"run {before[0][-1][0]}",
              "two rollbacks undo everything": "none (every migration is rolled back)"}[meanwhile]
    assert code == 2, answer
    assert (f"rollback refused, nothing changed: the latest migration in force is no longer run {asked_under}, as "
            f"when you were asked, but {latest}: a migration or a rollback finished meanwhile; nothing was changed. "
            "Run rollback again to be asked about the tables as they are now") in answer
    assert (statuses(db), nicknames(db)) == before


def test_a_yes_after_a_re_run_that_changed_nothing_committed_under_the_question_restores_the_snapshot_named(
    workdir, database_url, db
):
    """A re-run of the same file commits a migration that changes no row: the tables are as when the question
    was asked, so the yes still describes them and restores the snapshot it named; the re-run, whose
    snapshot holds the same rows, is rolled back with the migration it followed."""
    first, second = (write_data_file(workdir / f"{n}.json", 30, seed=n) for n in (1, 2))
    assert faceit_etl(workdir, database_url, "-q", "migrate", str(first)).returncode == 0
    first_rows = nicknames(db)
    assert faceit_etl(workdir, database_url, "-q", "migrate", str(second)).returncode == 0
    asked_under = statuses(db)[-1][0]
    with rollback_question(workdir, database_url) as (said, yes):
        assert f"  to the snapshot {workdir / 'backups' / asked_under} (taken 20" in said
        rerun = faceit_etl(workdir, database_url, "migrate", str(second))
        assert rerun.returncode == 0 and "users: 0 inserted, 0 updated, 30 unchanged" in rerun.stdout
        code, answer = yes()

    assert code == 0, answer
    assert f"Rolled back to the snapshot taken before run {asked_under}" in answer
    assert nicknames(db) == first_rows
    assert [status for _, status in statuses(db)] == ["success", "rolled_back", "rolled_back"]
