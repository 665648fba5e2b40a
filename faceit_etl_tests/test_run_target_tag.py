"""`status` lists every migration of its database, however started: a `migrate_job` run launched as the UI,
the launchpad or `dagster job execute` launch it (no tags of ours) tags itself with the target from its
first step. A dry run and a run stopped by its rejects write no migration_logs row, so without the tag
`status` did not list them."""

from __future__ import annotations

import os
import subprocess

import dagster as dg
import pytest

from faceit_etl import api
from faceit_etl.definitions import load_definitions
from faceit_etl_tests.conftest import FLAT_SAMPLE
from faceit_etl_tests.test_api import here, with_a_bad_entry  # noqa: F401 (a fixture)
from faceit_etl_tests.test_cli import faceit_etl, workdir  # noqa: F401 (a fixture)
from faceit_etl_tests.test_target_url import BIN, ROOT


@pytest.mark.db  # starts `dagster` and `faceit-etl`
def test_migrate_job_runs_launched_without_our_tags_are_listed_by_status_of_their_target(here, db, database_url):
    rejected = with_a_bad_entry(here)
    executed = subprocess.run(  # as `dagster job execute` launches it: its rejects stop it before the load
        [str(BIN / "dagster"), "job", "execute", "-m", "faceit_etl.definitions", "-j", "migrate_job"], cwd=ROOT,
        env={**os.environ, "DAGSTER_HOME": str(here), "DATABASE_URL": database_url, "DATA_FILE_PATH": str(rejected),
             "MIGRATION_BACKUP_DIR": str(here / "backups")},
        capture_output=True, text=True, timeout=600,
    )
    with api.open_instance() as instance:
        [stopped] = instance.get_runs()
        dry = load_definitions().resolve_job_def("migrate_job").execute_in_process(  # as the launchpad launches it
            run_config={"resources": {"migration_settings": {"config": {"source_path": str(FLAT_SAMPLE), "dry_run": True}}}},
            instance=instance, raise_on_error=False,
        )
        tags = {run.run_id: run.tags for run in instance.get_runs()}

    listed = faceit_etl(here, database_url, "status")
    elsewhere = faceit_etl(here, database_url, "status", "--target-schema", "other")

    assert (executed.returncode, dry.success) == (1, True), executed.stderr[-2000:]
    label = api.target_label(api.resolved_settings({}))
    assert {run_id: (t.get(api.TARGET_TAG), t.get(api.STARTED_BY_TAG)) for run_id, t in tags.items()} == {
        stopped.run_id: (label, None), dry.run_id: (label, None),
    }
    assert listed.returncode == 0, listed.stderr
    runs = [line.strip() for line in listed.stdout.splitlines() if line.strip().startswith("dagster run ")]
    assert runs == [f"dagster run {dry.run_id} migrate_job SUCCESS (dagster)",
                    f"dagster run {stopped.run_id} migrate_job FAILURE (dagster)"]
    assert "dagster run" not in elsewhere.stdout  # another schema is another target
    assert api.status().details["migrations"] == []  # neither is in migration_logs: listed by the tag alone


@pytest.mark.parametrize(
    ("selected", "tagged"),
    [(["source_backup", "raw_json", "validated_frame", "mapped_users", "mapped_subscriptions", "postgres_tables"], True),
     (["source_backup", "raw_json"], False)],
    ids=["a subset that loads, stopped by its rejects", "a subset that only reads the file"],
)
def test_a_subset_run_is_tagged_with_its_target_when_it_selects_the_load(here, db, selected, tagged):
    """A run of some assets (the UI's asset graph) is a migration when it selects the load: tagged from its first
    step, so a subset stopped by its rejects before the load is listed; one that only reads the file is not."""
    rejected = with_a_bad_entry(here)
    with api.open_instance() as instance:
        launched = load_definitions().resolve_job_def("migrate_job").execute_in_process(
            run_config={"resources": {"migration_settings": {"config": {"source_path": str(rejected)}}}},
            instance=instance, raise_on_error=False, asset_selection=[dg.AssetKey(key) for key in selected],
        )
        tags = instance.get_run_by_id(launched.run_id).tags

    assert launched.success is not tagged  # the loading subset is stopped by its rejects
    assert tags.get(api.TARGET_TAG) == (api.target_label(api.resolved_settings({})) if tagged else None)
    assert (launched.run_id in [r["run_id"] for r in api.status().details["dagster_runs"]]) is tagged
