"""The assets whose names come from the project's design say in their descriptions what they hold."""

from __future__ import annotations

import pandas as pd

from faceit_etl.defs.assets import raw_json, source_backup, validated_frame
from faceit_etl.generate import write_data_file
from faceit_etl.source import read_source
from faceit_etl.source.pieces import PIECE_BYTES
from faceit_etl.validation import ValidationOutcome, validate_entries


def test_raw_json_says_a_big_list_is_held_as_the_places_of_its_pieces_not_as_entries(tmp_path):
    description = raw_json.descriptions_by_key[raw_json.key]
    assert "parsed (no JSON text)" in description
    assert f"bigger than one piece ({PIECE_BYTES >> 20} MiB) is held not as its entries" in description
    path = write_data_file(tmp_path / "data.json", 300)
    big = read_source(path, piece_bytes=path.stat().st_size // 4)  # as a file of more than PIECE_BYTES is read
    assert big.entries == [] and big.pieces is not None and big.entry_count == 300
    small = read_source(path)
    assert len(small.entries) == 300 and small.pieces is None


def test_validated_frame_says_it_is_the_outcome_not_one_frame(tmp_path):
    description = validated_frame.descriptions_by_key[validated_frame.key]
    assert description.startswith("Not one frame: the validation outcome.")
    assert "the accepted entries as one typed frame, the rejected ones as another" in description
    outcome = validate_entries(read_source(write_data_file(tmp_path / "data.json", 5)))
    assert isinstance(outcome, ValidationOutcome)
    assert isinstance(outcome.valid, pd.DataFrame) and isinstance(outcome.rejects, pd.DataFrame)


def test_source_backup_says_it_backs_up_the_file_and_who_snapshots_the_tables():
    description = source_backup.descriptions_by_key[source_backup.key]
    assert description.startswith("A backup of the bot's data file, not of the tables.")
    assert "The tables' snapshot that `rollback_job` restores is added to the run's folder by `postgres_tables`" in description


def test_where_a_migration_starts_is_said_where_it_is_launched_and_is_what_the_jobs_plan():
    """Dagster 1.13's asset graph launches __ASSET_JOB, which plans the tables' checks that migrate_job
    leaves to its load: the tables' page and migrate_job's page say so, and the two plans differ so."""
    import dagster as dg

    from faceit_etl.definitions import defs
    from faceit_etl.defs.assets import postgres_tables
    from faceit_etl.defs.checks import TABLE_CHECK_SPECS

    tables = {spec.key for spec in TABLE_CHECK_SPECS}
    graph_button = defs.resolve_implicit_global_asset_job_def()
    assert graph_button.name == "__ASSET_JOB"
    assert tables <= graph_button.asset_layer.asset_graph.asset_check_keys
    assert tables & defs.resolve_job_def("migrate_job").asset_layer.asset_graph.asset_check_keys == set()
    description = postgres_tables.descriptions_by_key[dg.AssetKey("postgres_tables")]
    assert "Start a migration from migrate_job's page (Jobs → migrate_job → Materialize all)" in description
    assert "Materialize all runs Dagster's __ASSET_JOB instead, which plans these checks too" in description
    assert "the asset graph's own button runs Dagster's __ASSET_JOB" in defs.resolve_job_def("migrate_job").description
