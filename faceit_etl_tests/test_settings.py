"""migration_settings: defaults from the environment, run config over them, no secret shown."""

from __future__ import annotations

import dagster as dg
import pytest

from faceit_etl.definitions import ASSETS
from faceit_etl.defs.checks import CHECKS
from faceit_etl.defs.resources import MigrationSettings
from faceit_etl_tests.conftest import NESTED_SAMPLE

ENVIRONMENT = {
    "DATA_FILE_PATH": "/data/bot.json",
    "MIGRATION_BATCH_SIZE": "500",
    "MIGRATION_MAX_CONCURRENT": "3",
    "MIGRATION_BACKUP_DIR": "/var/backups/faceit",
    "MIGRATION_FORCE": "true",
    "MIGRATION_TRUNCATE": "1",
    "MIGRATION_DRY_RUN": "no",
    "MIGRATION_SOURCE_TIMEZONE": "Europe/Moscow",
    "MIGRATION_TARGET_SCHEMA": "bot",
}


def test_defaults_come_from_the_seeds_environment_names(monkeypatch):
    for name, value in ENVIRONMENT.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("DATABASE_URL", "postgresql://bot:hunter2@db:5432/faceit")

    settings = MigrationSettings.from_environment()

    assert (settings.source_path, settings.batch_size, settings.max_concurrent) == ("/data/bot.json", 500, 3)
    assert (settings.backup_dir, settings.force, settings.truncate, settings.dry_run) == (
        "/var/backups/faceit", True, True, False
    )
    assert (settings.source_timezone, settings.target_schema) == ("Europe/Moscow", "bot")
    assert settings.connection_url() == "postgresql://bot:hunter2@db:5432/faceit"
    assert "hunter2" not in str(settings.safe_summary())
    assert settings.safe_summary()["embedded_database"] is False


def test_run_config_overrides_the_environment_and_keeps_the_database_url(monkeypatch, database_url, db, tmp_path):
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("DATA_FILE_PATH", str(tmp_path / "absent.json"))
    monkeypatch.setenv("MIGRATION_BACKUP_DIR", str(tmp_path / "backups"))
    settings = MigrationSettings.from_environment()

    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [*ASSETS, *CHECKS],
            resources={"migration_settings": settings},
            instance=instance,
            run_config={"resources": {"migration_settings": {"config": {"source_path": str(NESTED_SAMPLE)}}}},
        )

    assert result.success
    assert db.execute("SELECT count(*) FROM users").fetchone()[0] == 25


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("target_schema", "public; DROP TABLE users", "invalid schema name"),
        ("source_timezone", "Mars/Olympus", "not a known time zone"),
    ],
)
def test_unusable_settings_are_refused_naming_the_setting(field, value, message):
    with pytest.raises(ValueError, match=message):
        MigrationSettings(**{field: value}).checked()
