"""migration_settings: flag > --config > run config > environment > default, through every entry point."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC
from pathlib import Path

import dagster as dg
import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from pydantic import ValidationError

from faceit_etl.cli.main import fraction, positive_int
from faceit_etl.definitions import defs, get_migrate_job, load_definitions
from faceit_etl.defs.checks import CHECKS
from faceit_etl.defs.resources import ENVIRONMENT as VARIABLES
from faceit_etl.defs.resources import (
    LARGEST_INT,
    MigrationSettings,
    PostgresResource,
    SettingsError,
    describe_invalid,
    max_concurrent_from_environment,
    postgres_from_environment,
    strict_max_concurrent,
)
from faceit_etl_tests.conftest import ASSETS, NESTED_SAMPLE, examples, write_json

ROOT = Path(__file__).resolve().parent.parent
ENVIRONMENT = {
    "DATA_FILE_PATH": "/data/bot.json",
    "MIGRATION_BATCH_SIZE": "500",
    "MIGRATION_MAX_CONCURRENT": "3",
    "MIGRATION_BACKUP_DIR": "/var/backups/faceit",
    "MIGRATION_FORCE": "true",
    "MIGRATION_TRUNCATE": "1",
    "MIGRATION_PRUNE": "no",
    "MIGRATION_MAX_PRUNE_FRACTION": "0.3",
    "MIGRATION_DRY_RUN": "no",
    "MIGRATION_SOURCE_TIMEZONE": "Europe/Moscow",
    "MIGRATION_TARGET_SCHEMA": "bot",
}


def test_defaults_come_from_the_replaced_systems_environment_names(monkeypatch):
    for name, value in ENVIRONMENT.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("DATABASE_URL", "postgresql://bot:hunter2@db:5432/faceit")

    settings = MigrationSettings()

    assert (settings.source_path, settings.batch_size, max_concurrent_from_environment()) == ("/data/bot.json", 500, 3)
    assert (settings.backup_dir, settings.force, settings.truncate, settings.dry_run) == (
        "/var/backups/faceit", True, True, False
    )
    assert (settings.source_timezone, settings.target_schema) == ("Europe/Moscow", "bot")
    assert (settings.prune, settings.max_prune_fraction) == (False, 0.3)
    target = postgres_from_environment()
    assert target.url_starting_embedded_server() == "postgresql://bot:hunter2@db:5432/faceit"
    assert "hunter2" not in str(settings.safe_summary() | target.safe_summary())
    assert target.safe_summary()["embedded_database"] is False
    # truncate and prune are refused together when the settings are built: each is read on its own.
    monkeypatch.setenv("MIGRATION_TRUNCATE", "0")
    monkeypatch.setenv("MIGRATION_PRUNE", "yes")
    assert (MigrationSettings().truncate, MigrationSettings().prune) == (False, True)


def test_run_config_overrides_the_environment_and_keeps_the_database_url(monkeypatch, database_url, db, tmp_path):
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("DATA_FILE_PATH", str(tmp_path / "absent.json"))
    monkeypatch.setenv("MIGRATION_BACKUP_DIR", str(tmp_path / "backups"))
    settings = MigrationSettings()

    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [*ASSETS, *CHECKS],
            resources={"migration_settings": settings, "postgres": PostgresResource()},
            instance=instance,
            run_config={"resources": {"migration_settings": {"config": {"source_path": str(NESTED_SAMPLE)}}}},
        )

    assert result.success
    assert db.execute("SELECT count(*) FROM users").fetchone()[0] == 25


# Each way ZoneInfo refuses a name: not found, a path or a NUL or a file of no zone (ValueError), a folder
# of zones or a name too long for a file (OSError).
NOT_TIME_ZONES = ["Mars/Olympus", "utc", "/UTC", "../etc/passwd", "Europe/../UTC", "UTC\x00", "zone.tab", "Europe",
                  "a" * 300]


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("target_schema", "public; DROP TABLE users", "invalid schema name"),
        ("target_schema", "information_schema", "schema name 'information_schema' is reserved by PostgreSQL"),
        ("target_schema", "pg_toast", "schema name 'pg_toast' is reserved by PostgreSQL"),
        *(("source_timezone", zone, "not a known time zone") for zone in NOT_TIME_ZONES),
    ],
)
def test_unusable_settings_are_refused_naming_the_setting(field, value, message):
    with pytest.raises(ValueError, match=message):
        MigrationSettings(**{field: value})


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"target_schema": "pg_toast"}, "target_schema 'pg_toast': schema name 'pg_toast' is reserved by PostgreSQL"),
        ({"source_timezone": "Mars/Olympus"}, "source_timezone 'Mars/Olympus': not a known time zone"),
        ({"truncate": True, "prune": True}, "truncate and prune cannot be combined: truncate replaces every row"),
    ],
)
def test_settings_are_validated_once_when_built_and_the_error_quotes_no_database_url(given, message, monkeypatch):
    """Steps use the resource as built: no step checks it again. The refusal names the setting, never
    the URL (a pydantic error would print every value given, the password with them)."""
    url = "host=db.example dbname=faceit_bot user=bot password=Zebra7secret"  # last: a cut-short value shows its end
    monkeypatch.setenv("DATABASE_URL", url)
    with pytest.raises(ValidationError) as refused:
        MigrationSettings(**given)
    assert describe_invalid(refused.value).startswith(message)
    assert "Zebra7secret" not in str(refused.value)
    assert "Zebra7secret" not in describe_invalid(refused.value)


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("MIGRATION_FORCE", "maybe", "MIGRATION_FORCE='maybe': expected true or false"),
        ("MIGRATION_DRY_RUN", "2", "MIGRATION_DRY_RUN='2': expected true or false"),
        ("MIGRATION_BATCH_SIZE", "10k", "MIGRATION_BATCH_SIZE='10k': expected a whole number"),
        ("MIGRATION_BATCH_SIZE", "0", "batch_size 0: input should be greater than 0"),
        ("MIGRATION_PRUNE", "maybe", "MIGRATION_PRUNE='maybe': expected true or false"),
        *[
            ("MIGRATION_MAX_PRUNE_FRACTION", value,
             f"MIGRATION_MAX_PRUNE_FRACTION={value!r}: expected a fraction from 0 to 1, such as 0.1")
            for value in ("10%", "1.5", "-0.1", "nan", "inf")
        ],
    ],
)
def test_an_environment_value_that_means_nothing_is_refused_never_read_as_a_default(monkeypatch, variable, value, message):
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValidationError) as refused:
        MigrationSettings()
    assert describe_invalid(refused.value) == message


BOUNDED = [  # (field, its variable, the CLI's type of its flag, its two edges, a value just past each)
    ("batch_size", "MIGRATION_BATCH_SIZE", positive_int, ("1", str(LARGEST_INT)), ("0", str(LARGEST_INT + 1))),
    ("max_prune_fraction", "MIGRATION_MAX_PRUNE_FRACTION", fraction, ("0", "1"), ("-0.001", "1.001")),
]


@pytest.mark.parametrize(("field", "variable", "flag_type", "edges", "past"), BOUNDED, ids=[b[0] for b in BOUNDED])
def test_each_edge_of_a_numeric_setting_is_taken_from_every_source_and_a_step_past_it_is_refused(
    monkeypatch, field, variable, flag_type, edges, past
):
    """The bounds are inclusive wherever a value comes from: `--max-prune-fraction 0` (prune nothing
    beyond what the guard allows: none) is a setting, not a usage error."""
    for edge in edges:
        number = json.loads(edge)
        monkeypatch.setenv(variable, edge)
        assert getattr(MigrationSettings(), field) == number
        monkeypatch.delenv(variable)
        assert getattr(MigrationSettings(**{field: number}), field) == number
        assert getattr(MigrationSettings(**{field: flag_type(edge)}), field) == number
    for value in past:
        monkeypatch.setenv(variable, value)
        with pytest.raises(ValidationError):
            MigrationSettings()
        monkeypatch.delenv(variable)
        with pytest.raises(ValidationError):
            MigrationSettings(**{field: json.loads(value)})


def test_each_edge_of_max_concurrent_is_taken_and_a_step_past_it_is_refused(monkeypatch):
    for edge in ("1", str(LARGEST_INT)):
        monkeypatch.setenv("MIGRATION_MAX_CONCURRENT", edge)
        assert max_concurrent_from_environment() == strict_max_concurrent(edge) == positive_int(edge) == int(edge)
    for value in ("0", str(LARGEST_INT + 1)):
        monkeypatch.setenv("MIGRATION_MAX_CONCURRENT", value)
        with pytest.raises(SettingsError, match="MIGRATION_MAX_CONCURRENT"):
            max_concurrent_from_environment()
        with pytest.raises(ValueError, match="from 1 to"):
            strict_max_concurrent(value)


# ------------------------------------------------- one precedence rule through every entry point

KATHMANDU_CREATED_AT = "2025-08-21T16:58:37+00:00"  # the sample's 22:43:37 at +05:45
UTC_CREATED_AT = "2025-08-21T22:43:37+00:00"


def bot_file_with_one_reject(folder: Path) -> Path:
    users = json.loads(NESTED_SAMPLE.read_text())["users"] + [{"user_id": -5}]
    return write_json(folder / "data.json", {"users": users})


def settings_environment(tmp_path: Path, database_url: str, source: Path, **extra: str) -> dict[str, str]:
    """Every setting away from its default, in the environment only."""
    return {
        "DATABASE_URL": database_url,
        "DATA_FILE_PATH": str(source),
        "MIGRATION_BATCH_SIZE": "7",
        "MIGRATION_MAX_CONCURRENT": "2",
        "MIGRATION_BACKUP_DIR": str(tmp_path / "env-backups"),
        "MIGRATION_BACKUP_TABLES": "false",
        "MIGRATION_FORCE": "true",
        "MIGRATION_TRUNCATE": "true",
        "MIGRATION_PRUNE": "false",  # with truncate it is refused; test_cli reads it from the environment
        "MIGRATION_MAX_PRUNE_FRACTION": "0.25",
        "MIGRATION_DRY_RUN": "false",
        "MIGRATION_SOURCE_TIMEZONE": "Asia/Kathmandu",
        "MIGRATION_TARGET_SCHEMA": "s",
        **extra,
    }


def run_cli(tmp_path, env, source):
    done = subprocess.run(
        [str(Path(sys.executable).parent / "faceit-etl"), "migrate", str(source)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
    )
    return done.returncode, done.stdout + done.stderr


def run_dagster_job_execute(tmp_path, env, source):
    config = tmp_path / "run_config.yaml"
    config.write_text(f"resources:\n  migration_settings:\n    config:\n      source_path: {source}\n")
    done = subprocess.run(
        [str(Path(sys.executable).parent / "dagster"), "job", "execute", "-m", "faceit_etl.definitions",
         "-j", "migrate_job", "-c", str(config)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
    )
    return done.returncode, done.stdout + done.stderr


def run_dg_launch(tmp_path, env, source):
    """`dg launch` from the project root: it loads the definitions in its own process and runs there."""
    assets = "bot_data_file,source_backup,raw_json,validated_frame,mapped_users,mapped_subscriptions,postgres_tables"
    done = subprocess.run(
        [str(Path(sys.executable).parent / "dg"), "launch", "--assets", assets],
        cwd=ROOT, env={**env, "VIRTUAL_ENV": sys.prefix}, capture_output=True, text=True, timeout=300,
        stdin=subprocess.DEVNULL,
    )
    return done.returncode, done.stdout + done.stderr


def run_in_process(tmp_path, env, source, monkeypatch):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with dg.instance_for_test() as instance:
        result = load_definitions().resolve_job_def("migrate_job").execute_in_process(
            run_config={"resources": {"migration_settings": {"config": {"source_path": str(source)}}}},
            instance=instance, raise_on_error=False,
        )
    return (0 if result.success else 1), ""


def run_as_scheduled(tmp_path, env, source, monkeypatch):
    """What the daemon launches for a schedule tick: the request's run config and tags, the job's resources."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    schedule = defs.get_schedule_def("migrate_schedule")
    with dg.instance_for_test() as instance:
        request = schedule.evaluate_tick(dg.build_schedule_context(instance=instance)).run_requests[0]
        with dg.execute_job(
            dg.reconstructable(get_migrate_job), instance=instance, run_config=request.run_config, tags=request.tags
        ) as result:
            return (0 if result.success else 1), ""


ENTRY_POINTS = {
    "cli": lambda tmp_path, env, source, monkeypatch: run_cli(tmp_path, env, source),
    "dagster_job_execute": lambda tmp_path, env, source, monkeypatch: run_dagster_job_execute(tmp_path, env, source),
    "dg_launch": lambda tmp_path, env, source, monkeypatch: run_dg_launch(tmp_path, env, source),
    "execute_in_process": run_in_process,
    "schedule": run_as_scheduled,
}


def subprocess_env(tmp_path: Path, settings: dict[str, str]) -> dict[str, str]:
    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    base = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "DATA_FILE_PATH") and not k.startswith("MIGRATION_")}
    return base | {"DAGSTER_HOME": str(tmp_path)} | settings


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_every_setting_from_the_environment_is_what_the_run_uses(entry, tmp_path, database_url, db, monkeypatch):
    source = bot_file_with_one_reject(tmp_path)
    db.execute("CREATE SCHEMA s")
    db.execute("CREATE TABLE s.stray (x int)")  # nothing of the pipeline's in public either way
    env = subprocess_env(tmp_path, settings_environment(tmp_path, database_url, source))

    code, output = ENTRY_POINTS[entry](tmp_path, env, source, monkeypatch)

    assert code == 0, output
    assert db.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()[0] == 0
    assert db.execute("SELECT count(*) FROM s.users").fetchone()[0] == 25  # force: the 25 valid ones
    created = db.execute("SELECT created_at FROM s.users WHERE user_id = 1650423192").fetchone()[0]
    assert created.astimezone(UTC).isoformat() == KATHMANDU_CREATED_AT
    used = db.execute("SELECT metadata->'settings' FROM s.migration_logs").fetchone()[0]
    assert used == {
        "source_path": str(source),
        "batch_size": 7,
        "max_concurrent": 2,
        "backup_dir": str(tmp_path / "env-backups"),
        "backup_tables": False,
        "force": True,
        "max_rejects": "0",
        "truncate": True,
        "prune": False,
        "max_prune_fraction": 0.25,
        "dry_run": False,
        "source_timezone": "Asia/Kathmandu",
        "target_schema": "s",
        "embedded_database": False,
    }
    (run_folder,) = (tmp_path / "env-backups").iterdir()
    manifest = json.loads((run_folder / "manifest.json").read_text())
    assert "target" not in manifest or manifest["target"] is None  # backup_tables false: no snapshot


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_a_dry_run_from_the_environment_writes_nothing(entry, tmp_path, database_url, db, monkeypatch):
    source = write_json(tmp_path / "data.json", json.loads(NESTED_SAMPLE.read_text()))
    db.execute("CREATE SCHEMA s")
    env = subprocess_env(
        tmp_path,
        settings_environment(tmp_path, database_url, source, MIGRATION_DRY_RUN="yes", MIGRATION_MAX_CONCURRENT="1"),
    )

    code, output = ENTRY_POINTS[entry](tmp_path, env, source, monkeypatch)

    assert code == 0, output
    assert db.execute("SELECT count(*) FROM pg_tables WHERE schemaname IN ('public', 's')").fetchone()[0] == 0


CHOICES = {
    "source_path": ("a.json", "b.json"),
    "batch_size": (3, 9),
    "backup_dir": ("x", "y"),
    "backup_tables": (False, True),
    "force": (True, False),
    "max_rejects": ("5", "1%"),
    "truncate": (True, False),
    "dry_run": (True, False),
    "source_timezone": ("Asia/Kathmandu", "Europe/Moscow"),
    "target_schema": ("s", "t"),
}


@given(
    in_run_config=st.sets(st.sampled_from(sorted(CHOICES))),
    in_environment=st.sets(st.sampled_from(sorted(CHOICES))),
)
@hypothesis_settings(max_examples=examples(60), deadline=None)
def test_run_config_beats_the_environment_which_beats_the_default_for_every_setting(in_run_config, in_environment):
    """Each setting: the run config's value when given, else the environment's, else the default."""
    environment = {VARIABLES[name][0]: str(CHOICES[name][1]) for name in in_environment}
    with pytest.MonkeyPatch.context() as patch:
        for name in CHOICES:
            patch.delenv(VARIABLES[name][0], raising=False)
        for variable, value in environment.items():
            patch.setenv(variable, value)
        resolved = MigrationSettings(**{name: CHOICES[name][0] for name in in_run_config})

    for name, (run_config_value, environment_value) in CHOICES.items():
        expected = (
            run_config_value if name in in_run_config
            else environment_value if name in in_environment
            else VARIABLES[name][1]
        )
        assert getattr(resolved, name) == expected, name


def test_the_target_is_chosen_where_the_definitions_load_from_that_processs_environment(monkeypatch):
    """Every run's process loads the definitions itself and `postgres` reads DATABASE_URL there, else it is
    the embedded server; its one config field names the variable (the UI shows it), never a URL. The URL
    and the executor's step count are no migration settings."""
    monkeypatch.setenv("DATABASE_URL", "postgresql://bot:Hunter2secret@db:5432/faceit")
    target = load_definitions().resources["postgres"]
    assert target.url_from_environment_variable == "DATABASE_URL"
    assert target.configured_url() == "postgresql://bot:Hunter2secret@db:5432/faceit"

    monkeypatch.delenv("DATABASE_URL")
    assert load_definitions().resources["postgres"].safe_summary() == {"embedded_database": True}
    assert {"database_url", "max_concurrent"}.isdisjoint(MigrationSettings.model_fields)
