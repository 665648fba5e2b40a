"""The reject limit is the load's own refusal, not only a blocking check's: a failed run still materializes
source_backup, raw_json and validated_frame, so "Materialize unsynced" (or `dg launch --assets`) selects the
mapping and the load without validated_frame's check, and must not load past `max_rejects` all the same."""

from __future__ import annotations

import json

import dagster as dg

from faceit_etl.defs.checks import CHECKS
from faceit_etl.defs.io import RunScopedPickleIOManager
from faceit_etl.validation.limit import STOPPED_BY
from faceit_etl_tests.conftest import ASSETS, FLAT_SAMPLE, make_resources, write_json

UNSYNCED = dg.AssetSelection.assets("mapped_users", "mapped_subscriptions", "postgres_tables")


def _run(settings: dict, instance, selection=None):
    return dg.materialize([*ASSETS, *CHECKS], resources={**settings, "io_manager": RunScopedPickleIOManager()},
                          instance=instance, selection=selection, raise_on_error=False)


def _rows(db) -> list[tuple]:
    return db.execute("SELECT user_id, faceit_nickname, total_requests, xmin::text FROM users ORDER BY user_id").fetchall()


def test_the_load_selected_without_the_reject_check_refuses_past_max_rejects(database_url, db, tmp_path):
    source = tmp_path / "data.json"
    source.write_bytes(FLAT_SAMPLE.read_bytes())
    with dg.instance_for_test() as instance:
        assert _run(make_resources(database_url, source, tmp_path), instance).success
        before = _rows(db)

        document = json.loads(FLAT_SAMPLE.read_text())
        document["users"][3]["subscription"] = {"tier": "gold"}
        document["users"][0]["faceit_nickname"] = "renamed since"  # a change the refused load would have written
        write_json(source, document)
        stopped = _run(make_resources(database_url, source, tmp_path), instance)
        assert not stopped.success
        assert _rows(db) == before

        unsynced = _run(make_resources(database_url, source, tmp_path), instance, UNSYNCED)

        assert not unsynced.success
        assert [e.asset_key.path for e in unsynced.get_asset_materialization_events()] == [
            ["mapped_users"], ["mapped_subscriptions"]]
        [failure] = unsynced.get_step_failure_events()
        assert failure.step_key == "postgres_tables"
        data = failure.step_failure_data.user_failure_data
        user_id = document["users"][3]["user_id"]
        assert data.description.startswith(
            "1 of 25 entries rejected, more than max_rejects 0 allows (0); nothing was written. "
            f"entry 4 (user_id {user_id}): tier: ")
        assert data.metadata[STOPPED_BY].value == "rejects"  # the CLI's exit status for rejects
        assert _rows(db) == before

        forced = _run(make_resources(database_url, source, tmp_path, force=True), instance, UNSYNCED)
        assert forced.success
        load = forced.asset_materializations_for_node("postgres_tables")[0].metadata
        assert (load["users_updated"].value, load["rejected_entries"].value) == (1, 1)
        nicknames = dict(db.execute("SELECT user_id, faceit_nickname FROM users").fetchall())
        assert nicknames[document["users"][0]["user_id"]] == "renamed since"
