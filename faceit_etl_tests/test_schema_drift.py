"""The schema-drift check on the loaded tables, with real runs of migrate_job on a real PostgreSQL."""

from __future__ import annotations

import dagster as dg
import pytest

from faceit_etl.definitions import get_migrate_job
from faceit_etl_tests.conftest import NESTED_SAMPLE


@pytest.fixture
def environment(tmp_path, monkeypatch, database_url):
    """What migrate_job's definitions read from the environment: the test's database, a backup folder,
    the nested sample; a test changes it through the returned monkeypatch."""
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("MIGRATION_BACKUP_DIR", str(tmp_path / "backups"))
    monkeypatch.setenv("DATA_FILE_PATH", str(NESTED_SAMPLE))
    return monkeypatch


# Nothing to compare with: said so, never a bare pass.
FIRST_LOAD = "Compared nothing: the first load of this database and schema, no earlier columns."


def migrate(instance) -> dict[str, dg.AssetCheckEvaluation]:
    return migrate_run(instance)[1]


def migrate_run(instance) -> tuple[str, dict[str, dg.AssetCheckEvaluation]]:
    with dg.execute_job(dg.reconstructable(get_migrate_job), instance=instance) as result:
        assert result.success
        return result.run_id, {e.check_name: e for e in result.get_asset_check_evaluations()}


def test_a_column_the_bots_alembic_adds_drops_or_retypes_between_loads_is_flagged_by_name(environment, db):
    with dg.instance_for_test() as instance:
        first = migrate(instance)["column_schema_change"]
        assert first.passed and first.description == FIRST_LOAD

        unchanged = migrate(instance)["column_schema_change"]
        assert unchanged.passed

        # What a later revision of the bot's Alembic might do between two loads.
        db.execute("ALTER TABLE users ADD COLUMN premium_until timestamptz")
        db.execute("ALTER TABLE user_subscriptions ALTER COLUMN payment_method TYPE text")
        drifted = migrate(instance)["column_schema_change"]

        assert not drifted.passed
        assert drifted.severity == dg.AssetCheckSeverity.WARN  # the load wrote only the columns it knows
        assert drifted.asset_key == dg.AssetKey("postgres_tables")
        assert "Added columns: users.premium_until" in drifted.description
        assert "user_subscriptions.payment_method: character varying(100) -> text" in drifted.description

        settled = migrate(instance)["column_schema_change"]
        assert settled.passed

        db.execute("ALTER TABLE users DROP COLUMN premium_until")  # and a revision after it drops one
        dropped = migrate(instance)["column_schema_change"]
        assert (dropped.passed, dropped.description) == (
            False, "Column schema changed between previous and latest materialization.\n\nRemoved columns: users.premium_until")


def test_a_rollback_records_the_tables_column_schema_so_the_next_load_sees_no_drift(environment, db):
    from faceit_etl.definitions import load_definitions
    from faceit_etl_tests.conftest import FLAT_SAMPLE

    with dg.instance_for_test() as instance:
        migrate(instance)
        environment.setenv("DATA_FILE_PATH", str(FLAT_SAMPLE))
        unchanged = migrate(instance)["column_schema_change"]
        loaded = instance.get_latest_materialization_event(dg.AssetKey("postgres_tables")).asset_materialization
        rolled = load_definitions().resolve_job_def("rollback_job").execute_in_process(instance=instance)
        assert rolled.success
        restored = instance.get_latest_materialization_event(dg.AssetKey("postgres_tables")).asset_materialization
        users = db.execute("SELECT count(*) FROM users").fetchone()[0]

        after = migrate(instance)["column_schema_change"]

    assert after.passed, after.description
    assert after.description == unchanged.description
    assert restored.metadata["dagster/column_schema"] == loaded.metadata["dagster/column_schema"]
    assert restored.metadata["dagster/row_count"].value == users


def test_the_drift_check_compares_only_with_the_last_load_of_the_same_target(environment, db):
    """postgres_tables is one asset for every target: a load into schema `other`, whose tables have a column
    the bot's Alembic added, is no earlier state of `public`'s tables, and the reverse; of a target's loads,
    the newest is the one compared with."""
    with dg.instance_for_test() as instance:
        first_run = migrate_run(instance)[0]
        environment.setenv("MIGRATION_TARGET_SCHEMA", "other")
        elsewhere_run, checks = migrate_run(instance)
        elsewhere = checks["column_schema_change"]
        db.execute("ALTER TABLE other.users ADD COLUMN premium_until timestamptz")
        drifted_run, checks = migrate_run(instance)
        drifted = checks["column_schema_change"]
        settled = migrate(instance)["column_schema_change"]
        environment.setenv("MIGRATION_TARGET_SCHEMA", "public")
        back = migrate(instance)["column_schema_change"]

    assert elsewhere.passed and elsewhere.description == FIRST_LOAD
    assert not drifted.passed and "Added columns: users.premium_until" in drifted.description
    assert drifted.metadata["compared_with_run"].value == elsewhere_run
    assert settled.passed, settled.description  # compared with the newest load of `other`, not its first
    assert settled.metadata["compared_with_run"].value == drifted_run
    assert back.passed, back.description  # compared with the first load of public, not with `other`'s
    assert back.metadata["compared_with_run"].value == first_run
    assert back.metadata["target"].value.endswith(f"/{db.info.dbname}/public")
