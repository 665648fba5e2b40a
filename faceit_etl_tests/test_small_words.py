"""The CLI's small words: a flag named as the user typed it, a count of one said in the singular."""

from __future__ import annotations

import pytest

from faceit_etl.cli.main import UsageError, build_parser, main, resume_migration
from faceit_etl.postgres.ddl import ensure_target_tables
from faceit_etl_tests.test_cli import workdir  # noqa: F401 (a fixture)


@pytest.mark.parametrize("flag", ["--no-backup", "--backup"])
def test_resume_names_the_backup_flag_as_typed(flag):
    args = build_parser().parse_args(["migrate", "--resume", flag])

    with pytest.raises(UsageError) as refused:
        resume_migration(args)

    assert str(refused.value) == (f"--resume takes no {flag}: a resume reuses the failed run's file and settings; "
                                  "start a new run to change them")


def test_status_says_one_row_in_the_singular(workdir, database_url, db, monkeypatch, capsys):
    ensure_target_tables(db, "public")
    db.execute("INSERT INTO users (id, user_id) VALUES (gen_random_uuid(), 5)")
    monkeypatch.chdir(workdir)
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.delenv("DAGSTER_HOME", raising=False)

    assert main(["status"]) == 0

    lines = capsys.readouterr().out.splitlines()
    assert "  users: 1 row" in lines
    assert "  user_subscriptions: 0 rows" in lines
