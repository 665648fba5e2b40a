"""The reject limit is the load's own refusal, not only a blocking check's: a failed run still materializes
source_backup, raw_json and validated_frame, so "Materialize unsynced" (or `dg launch --assets`) selects the
mapping and the load without validated_frame's check, and must not load past `max_rejects` all the same."""

from __future__ import annotations

import json

import dagster as dg
import pytest
from hypothesis import given
from hypothesis import strategies as st

from faceit_etl.defs.checks import CHECKS
from faceit_etl.defs.io import RunScopedPickleIOManager
from faceit_etl.validation import report
from faceit_etl.validation.limit import STOPPED_BY, parse_max_rejects
from faceit_etl_tests.conftest import ASSETS, FLAT_SAMPLE, make_resources, write_json
from faceit_etl_tests.test_target_url import dagster_execute

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
            "1 of 25 entries rejected, more than max_rejects 0 allows; nothing was written. "
            f"entry 4 (user_id {user_id}): tier: ")
        assert data.metadata[STOPPED_BY].value == "rejects"  # the CLI's exit status for rejects
        assert _rows(db) == before

        forced = _run(make_resources(database_url, source, tmp_path, force=True), instance, UNSYNCED)
        assert forced.success
        load = forced.asset_materializations_for_node("postgres_tables")[0].metadata
        assert (load["users_updated"].value, load["rejected_entries"].value) == (1, 1)
        nicknames = dict(db.execute("SELECT user_id, faceit_nickname FROM users").fetchall())
        assert nicknames[document["users"][0]["user_id"]] == "renamed since"


@given(rejected=st.integers(1, 10**6), entries=st.integers(1, 10**6), count=st.integers(0, 10**6),
       percent=st.sampled_from(["0%", "1%", "0.5%", "12.5%", "100%"]))
def test_the_reason_gives_the_limit_once_and_a_percentages_count_beside_it(rejected, entries, count, percent):
    counted = f"{rejected} of {entries} entries rejected"
    by_count, by_share = parse_max_rejects(str(count)), parse_max_rejects(percent)
    allowed = by_share.allowed(entries)

    assert report.reject_head(rejected, entries, by_count, count) == (
        f"{counted}, more than max_rejects {count} allows; nothing was written" if rejected > count
        else f"{counted}, within max_rejects {count}: loading the rest")
    assert report.reject_head(rejected, entries, by_share, allowed) == (
        f"{counted}, more than max_rejects {percent} allows (at most {allowed} of {entries}); nothing was written"
        if rejected > allowed else f"{counted}, within max_rejects {percent} (at most {allowed} of {entries}): loading the rest")


@pytest.mark.db  # starts `dagster`
def test_dagster_job_execute_exits_1_for_a_run_stopped_by_its_rejects_saying_why(tmp_path):
    """`dagster job execute` has one code for every failed run; 2 for rejects is the faceit-etl command's."""
    document = json.loads(FLAT_SAMPLE.read_text())
    document["users"][3]["subscription"] = {"tier": "gold"}
    source = write_json(tmp_path / "data.json", document)
    home = tmp_path / "home"
    home.mkdir()

    done = dagster_execute(home, {"DATA_FILE_PATH": str(source), "MIGRATION_BACKUP_DIR": str(tmp_path / "backups")})

    assert done.returncode == 1
    assert (f"1 of 25 entries rejected, more than max_rejects 0 allows; nothing was written. entry 4 (user_id "
            f"{document['users'][3]['user_id']}): tier: ") in done.stdout + done.stderr
