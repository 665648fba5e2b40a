"""`status` lists every rollback of its database, however started: rollback_job launched as the UI's
launchpad launches it (no tags of ours) tags its own run with the target once its step knows it."""

from __future__ import annotations

import pytest

import faceit_etl
from faceit_etl import api
from faceit_etl.definitions import load_definitions
from faceit_etl_tests.conftest import FLAT_SAMPLE, NESTED_SAMPLE
from faceit_etl_tests.test_api import here  # noqa: F401 (a fixture)
from faceit_etl_tests.test_cli import workdir  # noqa: F401 (a fixture)


@pytest.mark.parametrize(
    ("op_config", "succeeds"),
    [({}, True), ({"migration_id": "no-such-migration"}, False)],
    ids=["a rollback", "a refused rollback"],
)
def test_a_rollback_launched_without_our_tags_is_listed_by_status_of_its_target(here, db, op_config, succeeds):
    assert faceit_etl.migrate(FLAT_SAMPLE).success
    assert faceit_etl.migrate(NESTED_SAMPLE).success

    with api.open_instance() as instance:
        launched = load_definitions().resolve_job_def("rollback_job").execute_in_process(
            run_config={"ops": {"restore_tables": {"config": op_config}}}, instance=instance, raise_on_error=False,
        )
        tags = instance.get_run_by_id(launched.run_id).tags
    listed = faceit_etl.status().details["dagster_runs"]
    elsewhere = faceit_etl.status(target_schema="other").details["dagster_runs"]

    assert launched.success is succeeds
    assert tags[api.TARGET_TAG] == api.target_label(api.resolved_settings({}))
    assert api.STARTED_BY_TAG not in tags  # started as the launchpad starts it: by no verb of ours
    assert listed[0] == {"run_id": launched.run_id, "job": "rollback_job", "status": "SUCCESS" if succeeds else "FAILURE",
                         "started_by": "dagster"}
    assert launched.run_id not in [r["run_id"] for r in elsewhere]  # another schema is another target
