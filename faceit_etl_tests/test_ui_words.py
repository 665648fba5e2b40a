"""What a person reads in the UI: a stopped run's reason in one line, rejects numbered from 1 with the
value they were rejected for, figures as flat numbers, previews without row UUIDs, the tables' own
figures with column descriptions."""

from __future__ import annotations

import hashlib
import json
import logging

import dagster as dg
import pytest
from hypothesis import given
from hypothesis import strategies as st

from faceit_etl import mapping
from faceit_etl.defs.checks import EXAMPLES, _reject_summary, flat
from faceit_etl.defs.metadata import as_people_see_it, preview, rejects_table
from faceit_etl.postgres.verdicts import _tiers_differ
from faceit_etl.source import SourceData
from faceit_etl.validation import report, validate_entries
from faceit_etl.validation.fields import SUBSCRIPTION_FIELDS, USER_FIELDS, column_description
from faceit_etl.validation.limit import parse_max_rejects
from faceit_etl_tests.conftest import make_resources, write_json
from faceit_etl_tests.test_pipeline import checks_by_name, dry_run_of, metadata_of, run

WHAT_TO_DO = (
    "Fix these entries in the file and run again, or set force (load the valid entries) or max_rejects "
    "(a count, or a percentage such as 1%) in the launchpad's migration_settings "
    "(CLI: --force, --max-rejects; environment: MIGRATION_FORCE, MIGRATION_MAX_REJECTS)"
)
ENTRIES = [
    {"user_id": 11, "faceit_nickname": "a"},
    {"user_id": -7, "faceit_nickname": "negative"},
    {"user_id": 12, "subscription": {"tier": "gold"}},
    {"user_id": 13, "total_requests": "many"},
    {"user_id": 14},
]


def judged(entries=ENTRIES):
    return validate_entries(SourceData(entries=entries, layout="test", ignored_top_level_keys=[]))


def test_rejects_are_numbered_from_1_and_show_the_value_they_were_rejected_for():
    rows = report.reject_rows(judged().rejects)

    by_entry = {row["entry"]: row for row in rows}
    assert set(by_entry) == {2, 3, 4}  # the 2nd, 3rd and 4th entries of the file
    assert (by_entry[2]["field"], by_entry[2]["value"], by_entry[2]["user_id"]) == ("user_id", "-7", None)
    assert (by_entry[3]["field"], by_entry[3]["value"], by_entry[3]["user_id"]) == ("tier", '"gold"', "12")
    assert (by_entry[4]["field"], by_entry[4]["value"]) == ("total_requests", '"many"')


@pytest.mark.parametrize("rejected", [1, EXAMPLES, EXAMPLES + 1, EXAMPLES + 9])
def test_the_reject_list_shows_twenty_and_says_how_many_more_only_when_there_are_more(tmp_path, rejected):
    outcome = judged([{"user_id": -n} for n in range(1, rejected + 1)] + [{"user_id": 5}])
    all_rejects = tmp_path / "rejects.jsonl"

    lines = _reject_summary(outcome, None, outcome.input_count, all_rejects).splitlines()

    assert [line for line in lines if line.startswith("- ")] == [
        f"- {report.reject_line(n - 1, None, 'user_id', 'must be a positive Telegram id')}"
        for n in range(1, min(rejected, EXAMPLES) + 1)
    ]
    more = [line for line in lines if line.startswith("…")]
    assert more == ([f"… and {rejected - EXAMPLES} more: see {all_rejects}"] if rejected > EXAMPLES else [])


def test_the_rejects_table_has_a_schema_and_every_reject():
    table = rejects_table(judged().rejects)

    assert [c.name for c in table.schema.columns] == ["entry", "user_id", "field", "value", "reason"]
    assert [r.data["value"] for r in table.records] == ["-7", '"gold"', '"many"']
    assert table.records[1].data["reason"].startswith('unknown tier "gold"')


@given(st.integers(min_value=-(2**70), max_value=2**70), st.sampled_from(USER_FIELDS + SUBSCRIPTION_FIELDS))
def test_the_value_shown_is_the_files_value_for_any_field(value, field):
    nested = field in SUBSCRIPTION_FIELDS
    entry = {"user_id": 1, "subscription": {field.source_key: value}} if nested else {"user_id": 1, field.source_key: value}
    if field.name == "user_id":
        entry["user_id"] = value

    text = str(value)
    assert report.shown_value(entry, field.name, json.dumps(entry)) == (text if len(text) <= 80 else text[:79] + "…")


def test_a_field_the_entry_lacks_is_shown_as_absent():
    assert report.shown_value({"user_id": 1}, "tier", json.dumps({"user_id": 1})) == "(absent)"


def test_a_stopped_run_says_why_in_one_line_with_the_first_rejects_and_what_to_do():
    outcome = judged()
    limit = parse_max_rejects("1")

    line = report.stopped_line(outcome.rejects, outcome.rejected_count, outcome.input_count, limit, 1)

    assert "\n" not in line
    assert line == (
        "3 of 5 entries rejected, more than max_rejects 1 allows; nothing was written. "
        "entry 2 (no valid user_id): user_id: must be a positive Telegram id; "
        f"entry 3 (user_id 12): tier: {outcome.rejects.iloc[1].reason}; "
        f"entry 4 (user_id 13): total_requests: {outcome.rejects.iloc[2].reason}. {WHAT_TO_DO}."
    )


def test_a_run_stopped_by_rejects_fails_with_that_line_not_with_dagsters_check_error(database_url, db, tmp_path):
    source = write_json(tmp_path / "data.json", {"users": ENTRIES})

    with dg.instance_for_test() as instance:
        result = run(make_resources(database_url, source, tmp_path), instance)
        errors = [e.user_message for e in instance.all_logs(result.run_id) if e.level == logging.ERROR and not e.is_dagster_event]

    assert not result.success
    [failure] = result.get_step_failure_events()
    error = failure.step_failure_data.error
    assert "DagsterAssetCheckFailedError" not in error.to_string()
    description = failure.step_failure_data.user_failure_data.description
    assert description.startswith("3 of 5 entries rejected, more than max_rejects 0 allows; nothing was written. entry 2")
    # The run page's first ERROR line is the reason itself; the others are Dagster's notices of the skipped steps.
    assert errors[0] == description
    assert all(e.startswith("Dependencies for step") for e in errors[1:])
    check = checks_by_name(result)["no_rejected_entries"]
    assert check.metadata["rejected_for_user_id"].value == 1 and check.metadata["rejected_for_tier"].value == 1
    assert "\n- entry 2 (no valid user_id): user_id: must be a positive Telegram id" in check.description
    assert db.execute("SELECT to_regclass('users')").fetchone()[0] is None


def test_tiers_that_differ_are_said_in_words():
    assert _tiers_differ({"FREE": 20, "PREMIUM": 5}, {"FREE": 20, "PREMIUM": 4, "PRO": 1}) == (
        "subscriptions per tier: PREMIUM: 5 in the database, 4 from the file; PRO: 0 in the database, 1 from the file"
    )
    # A tier only the database holds, once: said with the file's 0.
    assert _tiers_differ({"FREE": 20, "PRO": 1}, {"FREE": 21}) == (
        "subscriptions per tier: FREE: 20 in the database, 21 from the file; PRO: 1 in the database, 0 from the file"
    )


def test_nested_figures_are_flat_numbers_and_nothing_empty_is_shown():
    assert flat({"in_database": {"FREE": 3}, "users": {"rows_compared": 9, "differing_cells": {}, "examples": {"tier": [5, -6]}},
                 "missing": []}) == {"in_database.FREE": 3, "users.rows_compared": 9, "users.examples.tier": "5, -6"}


def test_previews_name_users_by_telegram_id_and_hold_no_row_uuid():
    outcome = judged([{"user_id": 5, "subscription": {"tier": "pro"}}, {"user_id": 6}])
    mapped = mapping.map_frames(outcome.valid)

    shown = as_people_see_it(mapped.subscriptions, mapped.users)
    table = preview(shown)

    assert "id" not in shown.columns and "fields_present" not in shown.columns
    assert [r.data["user_id"] for r in table.records] == ["5", "6"]
    assert [r.data["tier"] for r in table.records] == ["PRO", "FREE"]


def test_every_column_of_the_tables_has_a_description():
    from faceit_etl.postgres.ddl import SUBSCRIPTIONS, USERS

    columns = [f"{USERS}.{c}" for c in ("id", "updated_at", *(f.name for f in USER_FIELDS))]
    columns += [f"{SUBSCRIPTIONS}.{c}" for c in ("id", "user_id", "created_at", "updated_at", *(f.name for f in SUBSCRIPTION_FIELDS))]
    assert all(column_description(c) for c in columns), [c for c in columns if not column_description(c)]


def test_a_load_records_each_tables_figures(database_url, db, tmp_path):
    source = write_json(tmp_path / "data.json", {"users": [ENTRIES[0], ENTRIES[4]]})

    result = run(make_resources(database_url, source, tmp_path))

    loaded = metadata_of(result, "postgres_tables")
    assert (loaded["dagster/table_name"], loaded["subscriptions_table"]) == ("public.users", "public.user_subscriptions")
    assert (loaded["dagster/row_count"], loaded["users_rows"], loaded["user_subscriptions_rows"]) == (2, 2, 2)
    described = {c.name: c.description for c in loaded["dagster/column_schema"].columns}
    assert described["users.user_id"] == "the user's Telegram id"
    tiers = metadata_of(result, "mapped_subscriptions")
    assert (tiers["tier_FREE"], tiers["tier_PREMIUM"], tiers["tier_PRO"]) == (2, 0, 0)
    assert "id" not in {c.name for c in loaded["preview"].schema.columns}


def test_recent_migrations_list_each_load_newest_first_with_what_it_changed(database_url, db, tmp_path):
    """rollback_job takes a migration id: the table beside it says which load it was and what it changed."""
    source = write_json(tmp_path / "data.json", {"users": [ENTRIES[0], ENTRIES[4]]})
    resources = make_resources(database_url, source, tmp_path)
    first = run(resources)
    write_json(source, {"users": [ENTRIES[0], ENTRIES[4], {"user_id": 15}]})
    second = run(resources)
    write_json(source, {"users": [ENTRIES[0], ENTRIES[4]]})
    third = run(make_resources(database_url, source, tmp_path, prune=True, max_prune_fraction=1.0))

    listed = metadata_of(third, "postgres_tables")["recent_migrations"]
    assert [c.name for c in listed.schema.columns] == ["migration_id", "finished", "status", "rows_changed", "run_id"]
    logged = db.execute(
        "SELECT id::text, metadata->>'run_id', to_char(end_time AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS') "
        "FROM migration_logs ORDER BY end_time DESC"
    ).fetchall()
    assert [(r.data["migration_id"], r.data["run_id"], r.data["finished"][:19], r.data["status"], r.data["rows_changed"])
            for r in listed.records] == [
        (logged[0][0], third.run_id, logged[0][2], "success", 2),  # that user and its subscription pruned
        (logged[1][0], second.run_id, logged[1][2], "success", 2),  # one user and its subscription inserted
        (logged[2][0], first.run_id, logged[2][2], "success", 4),
    ]


def test_a_migrate_job_run_its_rejects_stop_leaves_the_tables_checks_as_the_last_load_judged_them(
    tmp_path, monkeypatch, database_url, db
):
    """Dagster marks a planned check that never ran "Execution failed" when its run fails: the tables'
    checks are not planned in migrate_job, whose load reports them, so a rejected file cannot mark them."""
    from faceit_etl.defs.checks import TABLE_CHECK_SPECS
    from faceit_etl.definitions import get_migrate_job

    source = write_json(tmp_path / "data.json", {"users": [ENTRIES[0], ENTRIES[4]]})
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("MIGRATION_BACKUP_DIR", str(tmp_path / "backups"))
    monkeypatch.setenv("DATA_FILE_PATH", str(source))
    names = {spec.name for spec in TABLE_CHECK_SPECS}
    with dg.instance_for_test() as instance:
        with dg.execute_job(dg.reconstructable(get_migrate_job), instance=instance) as loaded:
            assert loaded.success
            judged = {e.check_name: e.passed for e in loaded.get_asset_check_evaluations() if e.check_name in names}
        assert judged == dict.fromkeys(names, True) | {"rows_not_in_file": True}
        # The Runs list tells which file a run migrated: its path and full sha256 as run tags.
        tags = instance.get_run_by_id(loaded.run_id).tags
        assert (tags["faceit_etl/source_file"], tags["faceit_etl/source_sha256"]) == (
            str(source), hashlib.sha256(source.read_bytes()).hexdigest()
        )

        write_json(source, {"users": ENTRIES})
        with dg.execute_job(dg.reconstructable(get_migrate_job), instance=instance) as stopped:
            assert not stopped.success
        planned = instance.all_logs(stopped.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION_PLANNED)
        planned_names = {e.dagster_event.event_specific_data.check_name for e in planned}

    assert planned_names & names == set()  # nothing of the tables' checks that the failed run could mark
    assert "no_rejected_entries" in planned_names
    assert db.execute("SELECT count(*) FROM users").fetchone()[0] == 2


def test_a_refused_load_says_why_in_its_own_error_line(database_url, db, tmp_path):
    """A failure the tool means is a sentence on the run page, logged at ERROR, and the failure's own
    description: a refused prune, as any load the tool refuses."""
    from faceit_etl_tests.conftest import FLAT_SAMPLE, NESTED_SAMPLE

    with dg.instance_for_test() as instance:
        assert run(make_resources(database_url, FLAT_SAMPLE, tmp_path), instance).success
        refused = run(make_resources(database_url, NESTED_SAMPLE, tmp_path, prune=True), instance)
        errors = [e.user_message for e in instance.all_logs(refused.run_id) if e.level == logging.ERROR and not e.is_dagster_event]

    [failure] = refused.get_step_failure_events()
    description = failure.step_failure_data.user_failure_data.description
    assert description.startswith("load into ") and "failed, nothing was written: refusing to prune: 25 of the 25 users" in description
    assert errors == [description]
    assert db.execute("SELECT count(*) FROM users").fetchone()[0] == 25


def shown_empty(metadata: dict) -> list[str]:
    """Keys whose value shows nothing as if it were something: an empty list or mapping at any depth of a
    JSON value, a table without rows, a text that is an empty list."""
    def empty_within(value, path: str) -> list[str]:
        if isinstance(value, dict):
            return [path] if not value else [p for k, v in value.items() for p in empty_within(v, f"{path}.{k}")]
        if isinstance(value, list):
            return [path] if not value else [p for i, v in enumerate(value) for p in empty_within(v, f"{path}[{i}]")]
        return []

    found = []
    for key, value in metadata.items():
        if isinstance(value, dg.TableMetadataValue):
            found += [key] if not value.records else []
        elif isinstance(value, dg.JsonMetadataValue):
            found += empty_within(value.value, key)
        elif isinstance(value, dg.TextMetadataValue) and value.value.strip() in ("[]", "{}"):
            found.append(key)
    return found


def everything_shown(result) -> dict[str, dict]:
    """Every metadata a run recorded, by where the UI shows it: materializations, observations, check results."""
    shown = {f"{e.asset_key.to_user_string()} (materialization)": e.materialization.metadata
             for e in result.get_asset_materialization_events()}
    shown |= {f"{e.asset_key.to_user_string()} (observation {i})": e.event_specific_data.asset_observation.metadata
              for i, e in enumerate(result.get_asset_observation_events())}
    return shown | {f"check {e.check_name}": e.metadata for e in result.get_asset_check_evaluations()}


def test_metadata_naming_examples_is_left_out_when_there_are_none(database_url, db, tmp_path):
    """No `absent_user_ids: []`, empty rejects table or preview, `examples: []` in the verdicts: a run with no
    reject, no user the file lacks, no row at all (a dry run of an empty file on an empty database)."""
    source = write_json(tmp_path / "data.json", {"users": []})
    dry = run(make_resources(database_url, source, tmp_path, dry_run=True))
    write_json(source, {"users": [ENTRIES[0], ENTRIES[4]]})
    clean = run(make_resources(database_url, source, tmp_path))

    assert dry.success and clean.success
    for result in (dry, clean):
        shown = everything_shown(result)
        assert "check no_rejected_entries" in shown
        assert {where: shown_empty(metadata) for where, metadata in shown.items() if shown_empty(metadata)} == {}
    assert {"postgres_tables (materialization)", "check rows_not_in_file"} <= everything_shown(clean).keys()
    loaded = metadata_of(clean, "postgres_tables")
    assert not {"absent_user_ids", "absent_user_ids_shown"} & loaded.keys()
    assert loaded["users_kept_absent"] == 0 and "preview" in loaded
    assert "rejects" not in metadata_of(clean, "validated_frame")
    assert "rejects" not in checks_by_name(clean)["no_rejected_entries"].metadata
    assert "examples" not in loaded["verification"]["rows_not_in_file"]["metadata"]
    assert "examples" not in loaded["verification"]["content_matches"]["metadata"]["users"]
    said = dry_run_of(dry)
    assert not {"preview", "recent_migrations", "absent_user_ids"} & said.keys()
    assert "preview" not in metadata_of(dry, "mapped_users")
