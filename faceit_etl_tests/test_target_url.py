"""The target's URL travels in DATABASE_URL only: run config cannot carry it, and a URL libpq cannot use
is refused before any step, by `dagster job execute` as by the CLI, saying where it came from."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import dagster as dg
import pytest
import yaml

from faceit_etl.postgres.database import AuthenticationFailed, InvalidConnectionString, checked_url, connect
from faceit_etl_tests.conftest import BOT_PASSWORD, FLAT_SAMPLE

pytestmark = pytest.mark.db  # starts `dagster` and the CLI

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parent.parent


def dagster_execute(home: Path, env: dict, *extra: str) -> subprocess.CompletedProcess:
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    return subprocess.run([str(BIN / "dagster"), "job", "execute", "-m", "faceit_etl.definitions", "-j", "migrate_job", *extra],
                          cwd=ROOT, env={**os.environ, "DAGSTER_HOME": str(home), **env}, capture_output=True, text=True)


def every_byte_below(folder: Path) -> bytes:
    return b"\n".join(path.read_bytes() for path in folder.rglob("*") if path.is_file())


@pytest.mark.parametrize("resource", ["postgres", "migration_settings"])
def test_a_database_url_in_run_config_is_refused_before_the_run_is_stored(tmp_path, resource):
    """Run config is stored in the instance and shown in the UI: a URL there is an unknown field of every
    resource, refused by config validation (the error shows the one field postgres has, which names
    DATABASE_URL), so no run, event or file of the instance holds its password."""
    secret = "Pw" + os.urandom(8).hex()
    home = tmp_path / "home"
    home.mkdir()
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"resources": {resource: {"config": {
        "database_url": f"postgresql://pwuser:{secret}@/pwdb?host=/x"}}}}))
    source = shutil.copy(FLAT_SAMPLE, tmp_path / "data.json")

    done = dagster_execute(home, {"DATA_FILE_PATH": str(source), "MIGRATION_BACKUP_DIR": str(tmp_path / "backups")},
                           "-c", str(config))

    assert done.returncode == 1
    assert f'Received unexpected config entry "database_url" at path root:resources:{resource}:config' in done.stderr
    if resource == "postgres":
        assert "Expected: \"{ url_from_environment_variable?: Literal['DATABASE_URL'] }\"" in done.stderr
    assert secret not in done.stdout + done.stderr
    assert secret.encode() not in every_byte_below(home)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert instance.get_runs() == []
    assert not (tmp_path / "backups").exists()


def test_the_postgres_resource_has_no_field_a_url_could_go_in():
    from faceit_etl.defs.resources import PostgresResource

    assert list(PostgresResource.model_fields) == ["url_from_environment_variable"]
    with pytest.raises(Exception, match="url_from_environment_variable"):
        PostgresResource(url_from_environment_variable="OTHER_URL")


UNUSABLE = {  # a URL libpq cannot parse, and one whose option value it refuses
    "unparsable": ("postgresql://u:{secret} w@[::1/db",
                   "the database URL (DATABASE_URL) is not a valid PostgreSQL connection string"),
    "bad sslmode": ("postgresql://u:{secret}@127.0.0.1:9/db?sslmode=bogus",
                    'the database URL (DATABASE_URL) has an option libpq refuses: invalid sslmode value: "bogus"'),
}


@pytest.mark.parametrize("kind", UNUSABLE)
def test_dagster_refuses_an_unusable_database_url_as_the_resource_is_built_before_any_step(tmp_path, kind):
    """As a bad time zone is: RESOURCE_INIT_FAILURE, no step started, no backup written, the URL unquoted."""
    secret = "Pw" + os.urandom(8).hex()
    url, expected = UNUSABLE[kind]
    home = tmp_path / "home"
    home.mkdir()
    source = shutil.copy(FLAT_SAMPLE, tmp_path / "data.json")

    done = dagster_execute(home, {"DATABASE_URL": url.format(secret=secret), "DATA_FILE_PATH": str(source),
                                  "MIGRATION_BACKUP_DIR": str(tmp_path / "backups")})

    output = done.stdout + done.stderr
    assert done.returncode == 1
    assert "RESOURCE_INIT_FAILURE" in output and expected in output
    assert "STEP_START" not in output
    assert not (tmp_path / "backups").exists()
    assert secret not in output and secret.encode() not in every_byte_below(home)


CLI = str(BIN / "faceit-etl")


@pytest.mark.parametrize(("given", "source"), [
    ("flag", "--database-url"), ("config", "database_url in --config {config}"), ("environment", "DATABASE_URL")])
def test_the_cli_names_where_an_unusable_url_came_from(tmp_path, given, source):
    secret = "Pw" + os.urandom(8).hex()
    url = f"postgresql://u:{secret}@127.0.0.1:9/db?sslmode=bogus"
    config = tmp_path / "settings.yaml"
    config.write_text(yaml.safe_dump({"database_url": url}))
    args = {"flag": ["--database-url", url], "config": ["--config", str(config)], "environment": []}[given]
    env = {**os.environ, "MIGRATION_BACKUP_DIR": str(tmp_path / "backups")}
    env.pop("DATABASE_URL", None)
    if given == "environment":
        env["DATABASE_URL"] = url

    done = subprocess.run([CLI, *args, "migrate", str(FLAT_SAMPLE)], cwd=tmp_path, env=env, capture_output=True, text=True)

    assert (done.returncode, done.stdout, done.stderr) == (2, (
        f"faceit-etl: the database URL ({source.format(config=config)}) has an option libpq refuses: "
        'invalid sslmode value: "bogus"\n'), "")
    assert not (tmp_path / "backups").exists()


def test_a_run_config_file_with_the_postgres_resource_is_refused_by_the_cli_not_dropped(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"resources": {"postgres": {"config": {"database_url": "postgresql:///x"}},
                                                    "migration_settings": {"config": {"batch_size": 5}}}}))
    done = subprocess.run([CLI, "--config", str(config), "migrate", str(FLAT_SAMPLE)], cwd=tmp_path,
                          capture_output=True, text=True)
    assert (done.returncode, done.stdout) == (2, (
        f"faceit-etl: --config {config}: resources postgres: only migration_settings is read here; give the "
        "database URL in DATABASE_URL or --database-url\n"))


@pytest.mark.parametrize("option", ["sslmode=bogus", "target_session_attrs=nope", "port=abc", "gssencmode=x"])
def test_an_option_value_libpq_refuses_is_a_usage_error_without_retries(option, monkeypatch):
    waits = []
    monkeypatch.setattr("faceit_etl.postgres.database.time.sleep", waits.append)
    url = f"postgresql://bot:Hunter2secret@127.0.0.1:9/faceit?{option}"
    for attempt in (lambda: checked_url(url), lambda: connect(url)):
        with pytest.raises(InvalidConnectionString, match=r"^the database URL \(DATABASE_URL\) has an option libpq refuses: invalid "):
            attempt()
    assert waits == []


def test_a_wrong_password_is_an_authentication_failure_without_retries(password_database_url, monkeypatch):
    waits = []
    monkeypatch.setattr("faceit_etl.postgres.database.time.sleep", waits.append)
    wrong = password_database_url.replace(quote(BOT_PASSWORD, safe=""), "Wrong" + os.urandom(6).hex())
    with pytest.raises(AuthenticationFailed) as refused:
        connect(wrong)
    message = str(refused.value)
    assert message.startswith("authentication failed at ") and "(wrong user or password): " in message
    assert 'password authentication failed for user "' in message
    assert wrong.split(":")[2].split("@")[0] not in message
    assert waits == []
