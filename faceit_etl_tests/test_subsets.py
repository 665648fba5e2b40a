"""Any selection a user can make (the UI's "Materialize unsynced" and "Execute checks", `dg launch
--assets`) either runs on the step values of the last run of the file as it is now, or is refused before
the step that needs them runs, saying what to select: never loaded from another content's mapping."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from faceit_etl.defs.assets import why_not_this_input
from faceit_etl.defs.checks import CHECKS
from faceit_etl.defs.io import RunScopedPickleIOManager
from faceit_etl.identity import input_identity
from faceit_etl.validation import ValidationOutcome
from faceit_etl_tests.conftest import ASSETS, FLAT_SAMPLE, make_resources, write_json

ROOT = Path(__file__).resolve().parent.parent
INPUTS = "source_backup|validated_frame|mapped_users|mapped_subscriptions"  # the load's, read in Dagster's order


def _resources(resources: dict) -> dict:
    return {**resources, "io_manager": RunScopedPickleIOManager()}


def _rows(db) -> list[tuple]:
    return db.execute("SELECT user_id, faceit_nickname, total_requests, xmin::text FROM users ORDER BY user_id").fetchall()


def _changed_copy(source: Path) -> None:
    document = json.loads(FLAT_SAMPLE.read_text())
    document["users"][0]["faceit_nickname"] = "renamed since"
    write_json(source, document)


def _failure(result) -> str:
    return "\n".join(
        str(event.event_specific_data.error) for event in result.all_events if event.event_type_value == "STEP_FAILURE"
    )


def test_a_subset_loads_the_last_runs_values_of_the_same_file_and_refuses_another_contents(database_url, db, tmp_path):
    source = tmp_path / "data.json"
    source.write_bytes(FLAT_SAMPLE.read_bytes())
    settings = make_resources(database_url, source, tmp_path)
    with dg.instance_for_test() as instance:
        full = dg.materialize([*ASSETS, *CHECKS], resources=_resources(settings), instance=instance)
        assert full.success
        before = _rows(db)

        # What the UI showed as unsynced: raw_json reads source_backup's copy, the load the last mapping.
        unsynced = dg.materialize(
            [*ASSETS, *CHECKS], resources=_resources(settings), instance=instance,
            selection=dg.AssetSelection.assets("raw_json", "postgres_tables"),
        )
        assert unsynced.success
        load = unsynced.asset_materializations_for_node("postgres_tables")[0].metadata
        assert (load["users_inserted"].value, load["users_updated"].value, load["users_unchanged"].value) == (0, 0, 25)
        assert _rows(db) == before  # not a row written: the same file's mapping

        # The load alone ("Materialize unsynced" after a rollback) names the file it loaded, as a full run does.
        alone = dg.materialize(
            [*ASSETS, *CHECKS], resources=_resources(settings), instance=instance,
            selection=dg.AssetSelection.assets("postgres_tables"),
        )
        tags = instance.get_run_by_id(alone.run_id).tags
        assert (tags["faceit_etl/source_file"], tags["faceit_etl/source_sha256"]) == (
            str(source), hashlib.sha256(source.read_bytes()).hexdigest()
        )

        other = write_json(tmp_path / "other.json", {"users": json.loads(FLAT_SAMPLE.read_text())["users"][:3]})
        other_file = dg.materialize(
            [*ASSETS, *CHECKS], resources=_resources(make_resources(database_url, other, tmp_path)), instance=instance,
            selection=dg.AssetSelection.assets("postgres_tables"), raise_on_error=False,
        )
        assert not other_file.success and other_file.get_asset_materialization_events() == []
        assert (f"postgres_tables needs source_backup of {other} as it is now, and the last one copied other bytes "
                f"(from {source}") in _failure(other_file)
        assert _rows(db) == before

        moscow = make_resources(database_url, source, tmp_path, source_timezone="Europe/Moscow")
        other_zone = dg.materialize(
            [*ASSETS, *CHECKS], resources=_resources(moscow), instance=instance,
            selection=dg.AssetSelection.assets("postgres_tables"), raise_on_error=False,
        )
        assert not other_zone.success and other_zone.get_asset_materialization_events() == []
        assert ("postgres_tables needs validated_frame judged with this run's source time zone (Europe/Moscow), and "
                "the last one was judged with UTC") in _failure(other_zone)
        assert _rows(db) == before

        _changed_copy(source)
        refused = dg.materialize(
            [*ASSETS, *CHECKS], resources=_resources(settings), instance=instance,
            selection=dg.AssetSelection.assets("postgres_tables"), raise_on_error=False,
        )
        assert not refused.success
        assert refused.get_asset_materialization_events() == []
        message = _failure(refused)
        needed = re.search(rf"postgres_tables needs ({INPUTS}) from a run of {re.escape(str(source))} as it is now", message)
        assert needed, message
        assert f"(run {full.run_id}) was made from it when it held other bytes" in message
        # Whole hashes, as the file's tags hold them: a cut one cannot be checked against anything.
        then, now = hashlib.sha256(FLAT_SAMPLE.read_bytes()).hexdigest(), hashlib.sha256(source.read_bytes()).hexdigest()
        assert f"(sha256 {then} then, {now} now)" in message
        assert f"Materialize all (or select {needed[1]} and what it needs too)" in message
        assert "EPHEMERAL" not in message and "re-execute" not in message
        assert _rows(db) == before
        assert db.execute("SELECT count(*) FROM migration_logs").fetchone()[0] == 3  # the three loads; the refused run none


def test_the_table_checks_alone_run_on_the_last_runs_mapping_through_the_run_scoped_values(database_url, db, tmp_path):
    settings = make_resources(database_url, FLAT_SAMPLE, tmp_path)
    with dg.instance_for_test() as instance:
        assert dg.materialize([*ASSETS, *CHECKS], resources=_resources(settings), instance=instance).success
        checked = dg.materialize(
            [*ASSETS, *CHECKS], resources=_resources(settings), instance=instance,
            selection=dg.AssetSelection.checks_for_assets("postgres_tables"),
        )
        victim = db.execute("SELECT user_id FROM users ORDER BY user_id LIMIT 1").fetchone()[0]
        db.execute("UPDATE users SET total_requests = total_requests + 1 WHERE user_id = %s", [victim])
        again = dg.materialize(
            [*ASSETS, *CHECKS], resources=_resources(settings), instance=instance,
            selection=dg.AssetSelection.checks_for_assets("postgres_tables"), raise_on_error=False,
        )

    assert checked.success and checked.get_asset_materialization_events() == []
    verdicts = {e.check_name: e.passed for e in checked.get_asset_check_evaluations()}
    assert verdicts == dict.fromkeys(
        ["row_counts_match", "tier_counts_match", "subscriptions_have_users", "content_matches", "referrers_present",
         "no_self_referrals", "rows_not_in_file"], True)
    failed = {e.check_name: e for e in again.get_asset_check_evaluations() if not e.passed}
    assert not again.success and list(failed) == ["content_matches"]
    assert "content_matches" in _failure(again) and "DagsterStepOutputNotFoundError" not in _failure(again)
    assert failed["content_matches"].metadata["users.differing_cells.total_requests"].value == 1


def _dg_launch(tmp_path: Path, database_url: str, source: Path, assets: str) -> subprocess.CompletedProcess:
    home = tmp_path / "dagster_home"
    home.mkdir(exist_ok=True)
    env = {
        **os.environ, "DAGSTER_HOME": str(home), "VIRTUAL_ENV": sys.prefix, "DATABASE_URL": database_url,
        "DATA_FILE_PATH": str(source), "MIGRATION_BACKUP_DIR": str(tmp_path / "backups"),
    }
    return subprocess.run([str(Path(sys.executable).parent / "dg"), "launch", "--assets", assets], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.db  # starts dg
def test_dg_launch_of_the_load_alone_runs_on_the_same_file_and_is_refused_once_it_changed(database_url, db, tmp_path):
    source = tmp_path / "data.json"
    source.write_bytes(FLAT_SAMPLE.read_bytes())
    everything = "source_backup,raw_json,validated_frame,mapped_users,mapped_subscriptions,postgres_tables"
    first = _dg_launch(tmp_path, database_url, source, everything)
    assert first.returncode == 0, first.stderr[-3000:]
    before = _rows(db)

    alone = _dg_launch(tmp_path, database_url, source, "postgres_tables")
    assert alone.returncode == 0, alone.stderr[-3000:]
    assert _rows(db) == before  # the same file: every row unchanged, none written
    assert db.execute("SELECT count(*) FROM migration_logs WHERE status = 'success'").fetchone()[0] == 2

    _changed_copy(source)
    refused = _dg_launch(tmp_path, database_url, source, "postgres_tables")
    assert refused.returncode == 1
    assert re.search(rf"postgres_tables needs ({INPUTS}) from a run of {re.escape(str(source))} as it is now",
                     refused.stderr), refused.stderr[-3000:]
    assert "Materialize all" in refused.stderr
    assert "EPHEMERAL" not in refused.stderr
    assert _rows(db) == before


def _outcome(sha256: str, timezone: str) -> ValidationOutcome:
    return ValidationOutcome(valid=pd.DataFrame(), rejects=pd.DataFrame(), input_count=0,
                             input_identity=input_identity(sha256, timezone), source_sha256=sha256, source_timezone=timezone)


SHAS = st.sampled_from(["a" * 64, "b" * 64])
ZONES = st.sampled_from(["UTC", "Europe/Moscow"])


@given(SHAS, ZONES, SHAS, ZONES)
def test_a_refused_subset_names_the_bytes_first_then_the_time_zone(judged_sha, judged_zone, sha, zone):
    """The bytes decide every row: when they differ, the refusal says so, whatever the time zones."""
    why = why_not_this_input(_outcome(judged_sha, judged_zone), sha, zone)

    if judged_sha != sha:
        assert why == (f"postgres_tables needs validated_frame of the bytes source_backup copied (sha256 {sha}), and "
                       f"the last one was judged from other bytes (sha256 {judged_sha}): materialize all (or select "
                       "validated_frame and what it needs too)")
    elif judged_zone != zone:
        assert why == (f"postgres_tables needs validated_frame judged with this run's source time zone ({zone}), and "
                       f"the last one was judged with {judged_zone}: materialize all (or select validated_frame and "
                       "what it needs too)")
    else:
        assert why is None
