"""The Dagster layer end to end: real materializations on a real PostgreSQL, and the job's CLI."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from faceit_etl.definitions import defs
from faceit_etl.defs.assets import postgres_tables
from faceit_etl.defs.checks import CHECKS, TABLE_CHECK_SPECS, judge_tables_now
from faceit_etl.defs.io import RunScopedPickleIOManager
from faceit_etl_tests.conftest import ASSETS, FLAT_SAMPLE, NESTED_SAMPLE, make_resources, write_json

ROOT = Path(__file__).resolve().parent.parent


def run(settings, instance=None):
    with dg.instance_for_test() as temporary:
        return dg.materialize(
            [*ASSETS, *CHECKS],
            resources=settings,
            instance=instance or temporary,
            raise_on_error=False,
        )


def checks_by_name(result) -> dict[str, dg.AssetCheckEvaluation]:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def materialized(result) -> set[str]:
    return {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}


def dry_run_of(result) -> dict:
    """What a dry run's load would have written: an observation of postgres_tables, never a materialization."""
    for event in result.get_asset_observation_events():
        metadata = event.event_specific_data.asset_observation.metadata
        if "dry_run" in metadata:
            return {k: v.value for k, v in metadata.items()}
    raise AssertionError("no dry run was recorded")


def metadata_of(result, asset: str) -> dict:
    for event in result.get_asset_materialization_events():
        if event.asset_key.to_user_string() == asset:
            return {k: v.value for k, v in event.event_specific_data.materialization.metadata.items()}
    raise AssertionError(f"{asset} was not materialized")


def users_in(db) -> dict[int, tuple]:
    rows = db.execute(
        """SELECT u.user_id, u.id, u.faceit_nickname, u.language, u.total_requests, u.updated_at,
                  s.tier::text, s.referred_by_user_id, s.referral_code, s.updated_at
           FROM users u JOIN user_subscriptions s ON s.user_id = u.id"""
    ).fetchall()
    return {row[0]: row[1:] for row in rows}


def test_full_run_loads_the_nested_sample_and_every_check_passes(database_url, db, tmp_path):
    result = run(make_resources(database_url, NESTED_SAMPLE, tmp_path))

    assert result.success
    assert materialized(result) == {
        "source_backup", "raw_json", "validated_frame", "mapped_users", "mapped_subscriptions", "postgres_tables"
    }
    checks = checks_by_name(result)
    # column_schema_change too: a run that does not plan that check gets its verdict from the load.
    assert set(checks) == {spec.name for c in (*CHECKS, postgres_tables) for spec in c.check_specs} | {"column_schema_change"}
    assert all(e.passed for e in checks.values()), {n: e.metadata for n, e in checks.items() if not e.passed}
    load = metadata_of(result, "postgres_tables")
    assert (load["users_inserted"], load["users_updated"], load["users_unchanged"]) == (25, 0, 0)
    assert load["dagster/row_count"] == 25
    assert "password" not in json.dumps({k: str(v) for k, v in load.items()})

    source = {u["user_id"]: u for u in json.loads(NESTED_SAMPLE.read_text())["users"]}
    rows = users_in(db)
    assert set(rows) == set(source)
    for user_id, (_, nickname, language, total, _, tier, referred_by, code, _) in rows.items():
        entry = source[user_id]
        assert (nickname, language, total) == (entry["faceit_nickname"], entry["language"], entry["total_requests"])
        sub = entry["subscription"]
        assert (tier, referred_by, code) == (sub["tier"].upper(), sub["referred_by"], sub["referral_code"])
    log = db.execute("SELECT status, total_items, processed_items, failed_items, metadata FROM migration_logs").fetchall()
    assert [(r[0], r[1], r[2], r[3]) for r in log] == [("success", 25, 25, 0)]
    assert log[0][4]["run_id"] == result.run_id


def test_a_second_run_on_the_same_file_changes_no_row(database_url, db, tmp_path):
    settings = make_resources(database_url, NESTED_SAMPLE, tmp_path)
    assert run(settings).success
    before = users_in(db)

    again = run(settings)

    assert again.success
    load = metadata_of(again, "postgres_tables")
    assert (load["users_inserted"], load["users_updated"], load["users_unchanged"]) == (0, 0, 25)
    assert (load["subscriptions_inserted"], load["subscriptions_updated"]) == (0, 0)
    assert users_in(db) == before  # same ids, same values, same updated_at


def test_a_rerun_reuses_the_validation_outcome_and_recognises_what_it_loaded(database_url, db, tmp_path):
    source = write_json(tmp_path / "data.json", json.loads(NESTED_SAMPLE.read_text()))
    settings = make_resources(database_url, source, tmp_path)
    with dg.instance_for_test() as instance:
        first = run(settings, instance)
        identity = metadata_of(first, "validated_frame")["input_identity"]
        kept = Path(instance.storage_directory()) / "validated" / f"{identity}.pickle"
        assert kept.exists() and stat.S_IMODE(kept.stat().st_mode) == 0o600
        assert stat.S_IMODE(kept.parent.stat().st_mode) == 0o700  # validated entries are personal data
        before = users_in(db)

        again = run(settings, instance)

        assert not metadata_of(first, "validated_frame")["reused_earlier_outcome"]
        assert again.success and metadata_of(again, "validated_frame")["input_identity"] == identity
        assert metadata_of(again, "validated_frame")["reused_earlier_outcome"]
        load = metadata_of(again, "postgres_tables")
        assert load["compared"] == (
            f"the tables hold what run {first.run_id} loaded from the same input (the same file bytes, time zone and "
            "code): no row was compared or written"
        )
        assert load["same_as_run"] == first.run_id
        assert users_in(db) == before
        assert all(e.passed for e in checks_by_name(again).values())  # still compared cell by cell

        document = json.loads(source.read_text())
        document["users"][0]["language"] = "de"
        write_json(source, document)
        changed = run(settings, instance)
        assert metadata_of(changed, "validated_frame")["input_identity"] != identity
        assert not metadata_of(changed, "validated_frame")["reused_earlier_outcome"]
        load = metadata_of(changed, "postgres_tables")
        assert load["compared"] == "every row of the file was compared with the tables"
        assert "same_as_run" not in load
        assert (load["users_updated"], load["users_unchanged"]) == (1, 24)


def test_step_values_of_only_the_newest_runs_are_kept(database_url, tmp_path):
    with dg.instance_for_test() as instance:
        runs = Path(instance.storage_directory()) / "runs"
        for age in range(7):
            (runs / f"old-{age}").mkdir(parents=True)
            (runs / f"old-{age}" / "raw_json").write_bytes(b"x")
            os.utime(runs / f"old-{age}", (1_000_000 + age, 1_000_000 + age))

        result = dg.materialize(
            [*ASSETS, *CHECKS],
            resources={**make_resources(database_url, FLAT_SAMPLE, tmp_path), "io_manager": RunScopedPickleIOManager()},
            instance=instance,
        )

        assert result.success
        assert {p.name for p in runs.iterdir()} == {result.run_id, "old-6", "old-5", "old-4", "old-3"}
        assert (runs / result.run_id / "mapped_users").stat().st_size > 0


def nasty_file(tmp_path: Path) -> Path:
    users = json.loads(FLAT_SAMPLE.read_text())["users"][:5]
    users.append({"user_id": "not-a-number", "faceit_nickname": "x"})
    users.append({**users[0], "faceit_nickname": "duplicate of the first"})
    users.append({"user_id": 42, "subscription": {"tier": "gold"}})
    return write_json(tmp_path / "nasty.json", {"users": users})


def test_rejects_fail_the_run_before_anything_is_loaded(database_url, db, tmp_path):
    result = run(make_resources(database_url, nasty_file(tmp_path), tmp_path))

    assert not result.success
    assert "postgres_tables" not in materialized(result)
    check = checks_by_name(result)["no_rejected_entries"]
    assert not check.passed and check.severity == dg.AssetCheckSeverity.ERROR
    assert "3 of 8 entries rejected" in check.description
    assert 'unknown tier "gold"' in check.description
    assert db.execute("SELECT to_regclass('users')").fetchone()[0] is None

    rejects_file = tmp_path / "backups" / result.run_id / "rejects.jsonl"
    rejects = [json.loads(line) for line in rejects_file.read_text().splitlines()]
    assert {(r["source_index"], r["field"]) for r in rejects} == {(5, "user_id"), (6, "user_id"), (7, "tier")}
    assert stat.S_IMODE(rejects_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(rejects_file.parent.stat().st_mode) == 0o700


def test_force_loads_the_valid_entries_and_keeps_the_rejects(database_url, db, tmp_path):
    result = run(make_resources(database_url, nasty_file(tmp_path), tmp_path, force=True))

    assert result.success
    check = checks_by_name(result)["no_rejected_entries"]
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    assert all(e.passed for n, e in checks_by_name(result).items() if n != "no_rejected_entries")
    loaded = db.execute("SELECT count(*) FROM users").fetchone()[0]
    rejected = db.execute(
        "SELECT source_index, user_id, field, reason, raw->>'faceit_nickname' FROM migration_rejects "
        "WHERE run_id = %s ORDER BY source_index", [result.run_id]
    ).fetchall()
    assert loaded == 5
    assert [(r[0], r[2]) for r in rejected] == [(5, "user_id"), (6, "user_id"), (7, "tier")]
    assert rejected[1][1] == json.loads(FLAT_SAMPLE.read_text())["users"][0]["user_id"]
    assert rejected[1][4] == "duplicate of the first"
    assert loaded + len({r[0] for r in rejected}) == 8


def test_truncate_replaces_what_an_earlier_file_loaded(database_url, db, tmp_path):
    assert run(make_resources(database_url, FLAT_SAMPLE, tmp_path)).success
    result = run(make_resources(database_url, NESTED_SAMPLE, tmp_path, truncate=True))

    assert result.success, checks_by_name(result)
    nested_ids = {u["user_id"] for u in json.loads(NESTED_SAMPLE.read_text())["users"]}
    assert set(users_in(db)) == nested_ids


def test_rows_the_file_does_not_have_are_kept_with_a_warning(database_url, db, tmp_path):
    """The flat sample's 25 users are not in the nested sample: the run keeps them, succeeds and
    says so (counts, a WARN check with their Telegram ids); the blocking checks judge the file's rows."""
    assert run(make_resources(database_url, FLAT_SAMPLE, tmp_path)).success
    flat_ids = sorted(u["user_id"] for u in json.loads(FLAT_SAMPLE.read_text())["users"])
    result = run(make_resources(database_url, NESTED_SAMPLE, tmp_path))

    assert result.success, checks_by_name(result)
    checks = checks_by_name(result)
    assert all(checks[name].passed for name in ("row_counts_match", "tier_counts_match", "content_matches"))
    assert checks["row_counts_match"].metadata["users_in_database"].value == 50
    warning = checks["rows_not_in_file"]
    assert (warning.passed, warning.severity) == (False, dg.AssetCheckSeverity.WARN)
    assert warning.metadata["users_not_in_file"].value == 25
    assert warning.metadata["examples"].value == ", ".join(map(str, flat_ids[:20]))  # shown as text
    assert warning.description == (
        "25 user(s) in public.users are not in the file and were kept (migrate with prune to delete them): "
        f"user_id {', '.join(map(str, flat_ids[:20]))}, …"
    )
    loaded = metadata_of(result, "postgres_tables")
    assert (loaded["users_kept_absent"], loaded["subscriptions_kept_absent"], loaded["users_deleted"]) == (25, 25, 0)
    assert loaded["absent_user_ids"] == flat_ids[:20]
    assert set(users_in(db)) == set(flat_ids) | {u["user_id"] for u in json.loads(NESTED_SAMPLE.read_text())["users"]}
    logged = db.execute("SELECT status, metadata->'load'->'users' FROM migration_logs ORDER BY start_time DESC").fetchone()
    assert logged == ("success", {"inserted": 25, "updated": 0, "unchanged": 0, "kept_absent": 25, "kept_rejected": 0, "deleted": 0})


def test_checks_called_directly_see_a_tampered_cell(database_url, db, tmp_path):
    settings = make_resources(database_url, NESTED_SAMPLE, tmp_path)
    result = run(settings)
    users = result.output_for_node("mapped_frames", "mapped_users")
    subscriptions = result.output_for_node("mapped_frames", "mapped_subscriptions")
    victim = int(users["user_id"].iloc[3])

    def checks() -> dict[str, dg.AssetCheckResult]:
        results = judge_tables_now(settings["migration_settings"], settings["postgres"], users, subscriptions,
                                   {spec.key for spec in TABLE_CHECK_SPECS})
        return {result.check_name: result for result in results}

    assert all(result.passed for result in checks().values())
    # Checks run alone write nothing: with dry_run set they still judge the real tables (their verdicts replace
    # the load's), never fail for want of a dry run's.
    dry = make_resources(database_url, NESTED_SAMPLE, tmp_path, dry_run=True)["migration_settings"]
    judged = judge_tables_now(dry, settings["postgres"], users, subscriptions, {spec.key for spec in TABLE_CHECK_SPECS})
    assert [(r.passed, r.metadata["dry_run"].value) for r in judged] == [(True, False)] * len(TABLE_CHECK_SPECS)
    db.execute("UPDATE users SET total_requests = total_requests + 1 WHERE user_id = %s", [victim])

    tampered = checks()
    assert [name for name, result in tampered.items() if not result.passed] == ["content_matches"]
    figures = {key: value.value for key, value in tampered["content_matches"].metadata.items()}
    assert figures["users.differing_cells.total_requests"] == 1  # a flat number per column
    assert figures["users.examples.total_requests"] == str(victim)  # rows are named by Telegram id
    # The differing cell as a person checks it: which user and column, the database's value and the file's.
    requests = int(users.loc[users["user_id"] == victim, "total_requests"].iloc[0])
    assert [r.data for r in figures["differing_values"].records] == [
        {"user_id": str(victim), "column": "users.total_requests", "in_database": str(requests + 1), "from_file": str(requests)}
    ]
    assert [c.name for c in figures["differing_values"].schema.columns] == ["user_id", "column", "in_database", "from_file"]


def test_a_broken_file_fails_naming_it_and_writes_nothing(database_url, db, tmp_path):
    broken = tmp_path / "data.json"
    broken.write_text('{"users": [{"user_id": 1,}]}')
    result = run(make_resources(database_url, broken, tmp_path))

    assert not result.success
    failure = result.get_step_failure_events()[0]
    assert failure.step_key == "raw_json"
    message = failure.step_failure_data.error.cause.message
    assert f"{broken}: not valid JSON at line 1, column 26" in message
    assert db.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()[0] == 0


def test_big_ids_into_the_bots_alembic_tables_stop_before_writing(database_url, db, tmp_path):
    db.execute(
        """CREATE TYPE subscriptiontier AS ENUM ('FREE', 'PREMIUM', 'PRO');
           CREATE TABLE users (id uuid PRIMARY KEY, user_id integer NOT NULL,
               faceit_player_id varchar(255), faceit_nickname varchar(255), last_checked_match_id varchar(255),
               waiting_for_nickname boolean, language varchar(10), notifications_enabled boolean,
               total_requests integer, created_at timestamptz NOT NULL DEFAULT now(),
               updated_at timestamptz NOT NULL DEFAULT now(), last_active_at timestamptz);
           CREATE UNIQUE INDEX ix_users_user_id ON users (user_id);
           CREATE TABLE user_subscriptions (id uuid PRIMARY KEY,
               user_id uuid NOT NULL UNIQUE REFERENCES users (id) ON DELETE CASCADE, tier subscriptiontier,
               expires_at timestamptz, auto_renew boolean, payment_method varchar(100), daily_requests integer,
               last_reset_date timestamptz, referred_by_user_id integer, referral_code varchar(20) UNIQUE,
               referrals_count integer, created_at timestamptz NOT NULL DEFAULT now(),
               updated_at timestamptz NOT NULL DEFAULT now());"""
    )
    result = run(make_resources(database_url, FLAT_SAMPLE, tmp_path))

    assert not result.success
    message = result.get_step_failure_events()[0].step_failure_data.error.message
    big = sum(u["user_id"] > 2**31 - 1 for u in json.loads(FLAT_SAMPLE.read_text())["users"])
    assert f"{big} value(s) of users.user_id exceed its 32-bit integer type" in message
    assert 'ALTER TABLE "public"."users" ALTER COLUMN "user_id" TYPE bigint;' in message
    assert db.execute("SELECT count(*) FROM users").fetchone()[0] == 0
    assert db.execute("SELECT status FROM migration_logs").fetchall() == [("failed",)]


def dagster_job_execute(database_url: str, source: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "DATA_FILE_PATH": str(source),
        "MIGRATION_BACKUP_DIR": str(tmp_path / "backups"),
        "DAGSTER_HOME": str(tmp_path),
    }
    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    command = [str(Path(sys.executable).parent / "dagster"), "job", "execute", "-m", "faceit_etl.definitions", "-j", "migrate_job"]
    return subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)


def test_dagster_job_execute_exits_zero_on_success(database_url, db, tmp_path):
    done = dagster_job_execute(database_url, NESTED_SAMPLE, tmp_path)

    assert done.returncode == 0, done.stderr[-3000:]
    assert "RUN_SUCCESS" in done.stderr
    assert db.execute("SELECT count(*) FROM user_subscriptions").fetchone()[0] == 25


def test_dagster_job_execute_exits_non_zero_on_rejects(database_url, db, tmp_path):
    done = dagster_job_execute(database_url, nasty_file(tmp_path), tmp_path)

    assert done.returncode != 0
    assert "RUN_FAILURE" in done.stderr
    assert db.execute("SELECT to_regclass('users')").fetchone()[0] is None


# Something in the database that changes what the load writes: the content check must see it.
ALTERING_TRIGGER = """
CREATE FUNCTION add_a_request() RETURNS trigger LANGUAGE plpgsql AS
$$ BEGIN NEW.total_requests := NEW.total_requests + 1; RETURN NEW; END $$;
CREATE TRIGGER add_a_request BEFORE INSERT OR UPDATE ON users FOR EACH ROW EXECUTE FUNCTION add_a_request();
"""


def test_dagster_job_execute_exits_non_zero_when_a_blocking_verdict_fails(database_url, db, tmp_path):
    assert dagster_job_execute(database_url, FLAT_SAMPLE, tmp_path).returncode == 0
    db.execute(ALTERING_TRIGGER)
    done = dagster_job_execute(database_url, NESTED_SAMPLE, tmp_path)  # its 25 users get one request more

    assert done.returncode != 0
    assert "verification failed, nothing was written: content_matches: users: 0 rows missing, 25 cells differ (in total_requests)" in done.stderr
    assert "RUN_FAILURE" in done.stderr
    assert db.execute("SELECT count(*) FROM users").fetchone()[0] == 25  # the first file's only: nothing committed


def test_definitions_expose_the_job_over_every_asset_and_check():
    job = defs.resolve_job_def("migrate_job")
    assert {k.to_user_string() for k in job.asset_layer.selected_asset_keys} == {
        "source_backup", "raw_json", "validated_frame", "mapped_users", "mapped_subscriptions", "postgres_tables",
        "bot_data_file",  # observed first, so each run records the file version it loaded
    }
    checks = {(spec.asset_key.to_user_string(), spec.name) for c in (*CHECKS, postgres_tables) for spec in c.check_specs}
    assert len(checks) == 8
    assert {c.node_def.name for c in (*CHECKS, postgres_tables)} <= {node.name for node in job.nodes}


def database_state(db) -> dict:
    """Every table of the schema with its full content, for byte-identical comparisons."""
    tables = [r[0] for r in db.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")]
    return {t: sorted(map(str, db.execute(f'SELECT * FROM "{t}"').fetchall())) for t in tables}


def test_a_dry_run_verifies_inside_the_transaction_and_leaves_the_database_identical(database_url, db, tmp_path):
    assert run(make_resources(database_url, FLAT_SAMPLE, tmp_path)).success
    before = database_state(db)

    result = run(make_resources(database_url, NESTED_SAMPLE, tmp_path, truncate=True, dry_run=True))

    assert result.success
    assert "postgres_tables" not in materialized(result)  # the tables must not look synced with this file
    load = dry_run_of(result)
    assert load["dry_run"] is True
    assert (load["users_inserted"], load["users_updated"], load["users_unchanged"]) == (25, 0, 0)
    # Its verdicts are its observation's, never the checks' results: those stay the real tables'.
    assert set(checks_by_name(result)) == {"no_rejected_entries"}
    assert {k: v for k, v in load.items() if k.startswith("dry_run.")} == {
        f"dry_run.{spec.name}": "passed" for spec in TABLE_CHECK_SPECS
    }
    assert load["verification"]["row_counts_match"]["metadata"]["users_in_database"] == 25  # seen inside the transaction
    assert database_state(db) == before


def test_a_dry_run_on_an_empty_database_creates_nothing(database_url, db, tmp_path):
    result = run(make_resources(database_url, NESTED_SAMPLE, tmp_path, dry_run=True))

    assert result.success
    assert dry_run_of(result)["created_tables"] is True
    assert database_state(db) == {}
    assert db.execute("SELECT count(*) FROM pg_type WHERE typname = 'subscriptiontier'").fetchone()[0] == 0


def test_a_dry_run_reports_a_failing_verdict_from_inside_the_transaction(database_url, db, tmp_path):
    assert run(make_resources(database_url, FLAT_SAMPLE, tmp_path)).success
    db.execute(ALTERING_TRIGGER)

    result = run(make_resources(database_url, NESTED_SAMPLE, tmp_path, dry_run=True))

    assert not result.success
    [failure] = result.get_step_failure_events()
    assert failure.step_key == "postgres_tables"
    verdict = failure.step_failure_data.user_failure_data.metadata["verification"].value["content_matches"]
    assert not verdict["passed"]
    assert verdict["metadata"]["users"]["differing_cells"] == {"total_requests": 25}
    # Beside the failure, the first 20 of those cells as a table: the trigger added one to each.
    shown = failure.step_failure_data.user_failure_data.metadata["differing_values"].value.records
    assert len(shown) == 20 and {r.data["column"] for r in shown} == {"users.total_requests"}
    assert all(int(r.data["in_database"]) == int(r.data["from_file"]) + 1 for r in shown)
    assert db.execute("SELECT count(*) FROM users").fetchone()[0] == 25  # the dry run wrote nothing


def test_a_log_row_left_running_by_a_dead_run_is_marked_failed_by_the_next_run(database_url, db, tmp_path):
    assert run(make_resources(database_url, FLAT_SAMPLE, tmp_path)).success
    db.execute(
        "INSERT INTO migration_logs (migration_type, start_time, status, metadata) "
        "VALUES ('json_to_postgresql', now() - interval '1 hour', 'running', '{\"run_id\": \"killed-run\"}')"
    )

    assert run(make_resources(database_url, FLAT_SAMPLE, tmp_path)).success

    rows = dict(db.execute("SELECT metadata->>'run_id', status FROM migration_logs").fetchall())
    assert rows["killed-run"] == "failed"
    assert sorted(rows.values()) == ["failed", "success", "success"]
    reason = db.execute("SELECT error_message FROM migration_logs WHERE status = 'failed'").fetchone()[0]
    assert "ended without finishing" in reason
