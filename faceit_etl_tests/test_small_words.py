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


@pytest.mark.unit
def test_a_dry_runs_failed_check_without_a_description_is_said_without_the_word_none():
    """A dry run records `failed` for a check that failed without words; it once recorded (and the CLI
    printed, as the check's detail) `failed: None`."""
    import dagster as dg

    from faceit_etl.cli.summary import dry_run_verdicts
    from faceit_etl.defs.assets import DRY_RUN_CHECK, _dry_run_verdict

    results = [dg.AssetCheckResult(check_name="referrers_present", passed=False, description=None),
               dg.AssetCheckResult(check_name="row_counts_match", passed=False, description="3 rows missing"),
               dg.AssetCheckResult(check_name="content_matches", passed=True)]
    recorded = {f"{DRY_RUN_CHECK}{r.check_name}": _dry_run_verdict(r) for r in results}

    assert recorded == {"dry_run.referrers_present": "failed", "dry_run.row_counts_match": "failed: 3 rows missing",
                        "dry_run.content_matches": "passed"}
    said = {c.name: (c.passed, c.description) for c in dry_run_verdicts("postgres_tables", recorded)}
    assert said == {"referrers_present": (False, None), "row_counts_match": (False, "3 rows missing"),
                    "content_matches": (True, None)}


@pytest.mark.db
def test_a_migration_started_with_its_output_closed_runs_whole(workdir, database_url, db):  # noqa: F811
    """`faceit-etl migrate FILE >&-`: Python gives the command no sys.stdout, and it once failed before its
    run on `None.isatty()` (exit 1, the reason only in migration.log)."""
    import subprocess
    import sys
    from pathlib import Path

    from faceit_etl_tests.conftest import FLAT_SAMPLE

    cli = str(Path(sys.executable).parent / "faceit-etl")
    done = subprocess.run(["bash", "-c", f'"{cli}" migrate "{FLAT_SAMPLE}" >&-'], cwd=workdir, capture_output=True,
                          text=True, env={**__import__("os").environ, "DATABASE_URL": database_url}, timeout=600)

    assert (done.returncode, done.stderr) == (0, ""), done.stderr
    assert db.execute("SELECT count(*) FROM users").fetchone()[0] == 25
    assert db.execute("SELECT status FROM migration_logs").fetchall() == [("success",)]
