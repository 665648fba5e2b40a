"""What a rollback says it restored names the snapshot truthfully, in each place that says it (the CLI's
question and outcome, the API's details, the rollback's materialization in Dagster): a run's snapshot by
that run, a `backup`'s folder as a manual backup, never as `run manual-…` (no run made it). The resumed
migration's words are tested with its resume (test_resume.py)."""

from __future__ import annotations

import dagster as dg

import faceit_etl
from faceit_etl_tests.conftest import FLAT_SAMPLE, write_json
from faceit_etl_tests.test_api import here, sample_users  # noqa: F401 (here: a fixture)
from faceit_etl_tests.test_cli import instance_at, workdir  # noqa: F401 (a fixture)
from faceit_etl_tests.test_rollback_prompt import rollback_question


def rollback_materialization(folder, run_id: str) -> dg.AssetMaterialization:
    with instance_at(folder) as instance:
        [record] = instance.fetch_materializations(dg.AssetKey("postgres_tables"), limit=1).records
    assert record.run_id == run_id
    return record.asset_materialization


def changed_file(folder):
    users = sample_users(FLAT_SAMPLE)
    users[0]["faceit_nickname"] = "renamed"
    return write_json(folder / "changed.json", {"users": users})


def test_the_api_and_dagster_name_a_manual_backup_as_one_and_a_runs_snapshot_by_its_run(here, db):
    first = faceit_etl.migrate(FLAT_SAMPLE)
    manual = faceit_etl.backup(FLAT_SAMPLE, output_dir=here / "manual").backup_path
    assert faceit_etl.migrate(changed_file(here)).success

    assert faceit_etl.rollback_candidate(manual)["snapshot_of_run"] is None
    undone = faceit_etl.rollback(manual)

    assert undone.success, undone.errors
    assert undone.details["restored_to"] == f"the manual backup {manual}"
    restored = rollback_materialization(here, undone.run_id)
    assert (restored.description, restored.metadata["restored_to"].value) == \
        (f"rolled back to the manual backup {manual}", f"the manual backup {manual}")

    again = faceit_etl.rollback(first.backup_path)

    assert again.success, again.errors
    assert again.details["restored_to"] == f"the snapshot taken before run {first.run_id}"
    assert rollback_materialization(here, again.run_id).description == \
        f"rolled back to the snapshot taken before run {first.run_id}"


def test_the_clis_question_and_outcome_name_a_manual_backup_as_one(workdir, database_url, db, monkeypatch):
    monkeypatch.setenv("MIGRATION_BACKUP_DIR", str(workdir / "backups"))
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.chdir(workdir)
    assert faceit_etl.migrate(FLAT_SAMPLE).success
    manual = faceit_etl.backup(FLAT_SAMPLE, output_dir=workdir / "manual").backup_path
    assert faceit_etl.migrate(changed_file(workdir)).success

    with rollback_question(workdir, database_url, "--backup-path", manual) as (said, yes):
        code, answer = yes()

    assert said.replace("\r\n", "\n").endswith("  undoing every migration committed after it? [y/N] "), said
    assert code == 0, answer
    assert [line for line in answer.splitlines() if line.startswith("Rolled back")] == \
        [f"Rolled back to the manual backup {manual}"], answer
