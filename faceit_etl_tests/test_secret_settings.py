"""A setting is quoted in errors, logs, run metadata and migration_logs: every string setting, from run
config (`{env: DATABASE_URL}` is a StringSource), the environment or code, refuses a value that carries a
password by the setting's name, never quoting it, before anything runs."""

from __future__ import annotations

import os
import shutil
import string

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from faceit_etl.defs.resources import ENVIRONMENT, MigrationSettings, describe_invalid
from faceit_etl_tests.conftest import FLAT_SAMPLE
from faceit_etl_tests.test_target_url import dagster_execute, every_byte_below

HOLDS_A_PASSWORD = (
    "holds a password (a URL with credentials, a password keyword or DATABASE_URL's password), so it is not "
    "quoted; the database URL belongs in DATABASE_URL only"
)
TEXT_SETTINGS = ("source_path", "backup_dir", "max_rejects", "source_timezone", "target_schema")
# A password as a URL carries it: anything but the `@` that ends it and white space.
PASSWORDS = st.text(alphabet=string.ascii_letters + string.digits + "!$%&*()-_=+[]{};:,.<>?~/#", min_size=6).map(
    lambda text: "Zq" + text)


# A URL with credentials and libpq's keywords: the two ways a connection string carries a password.
FORMS = st.sampled_from(["postgresql://faceit:{}@127.0.0.1:1/faceit_bot", "host=127.0.0.1 password={} dbname=faceit_bot"])


def _url(password: str, form: str = "postgresql://faceit:{}@127.0.0.1:1/faceit_bot") -> str:
    return form.format(password)


def _refusal(**settings) -> ValidationError:
    with pytest.raises(ValidationError) as refused:
        MigrationSettings(**settings)
    return refused.value


@given(password=PASSWORDS, name=st.sampled_from(TEXT_SETTINGS), form=FORMS)
def test_a_setting_holding_a_url_with_a_password_is_refused_by_name_never_quoted(password, name, form):
    refused = _refusal(**{name: _url(password, form)})

    assert f"{name} {HOLDS_A_PASSWORD}" in str(refused)
    assert describe_invalid(refused) == f"{name} {HOLDS_A_PASSWORD}"
    assert password not in str(refused) + describe_invalid(refused)


@given(password=PASSWORDS, name=st.sampled_from(TEXT_SETTINGS), form=FORMS)
def test_an_environment_variable_holding_a_url_with_a_password_is_refused_by_its_name(password, name, form):
    variable = ENVIRONMENT[name][0]
    saved = os.environ.get(variable)
    os.environ[variable] = _url(password, form)
    try:
        refused = _refusal()
    finally:
        os.environ.pop(variable) if saved is None else os.environ.__setitem__(variable, saved)

    assert describe_invalid(refused) == f"{variable} {HOLDS_A_PASSWORD}"
    assert password not in str(refused)


def test_the_database_urls_password_alone_is_refused_too(monkeypatch):
    """`target_schema: {env: PGPASSWORD}` would be a plain identifier: known as DATABASE_URL's password."""
    monkeypatch.setenv("DATABASE_URL", _url("Zq5ecretWord"))

    refused = _refusal(target_schema="Zq5ecretWord")

    assert describe_invalid(refused) == f"target_schema {HOLDS_A_PASSWORD}"
    assert "Zq5ecretWord" not in str(refused)


@pytest.mark.db  # starts `dagster`
@pytest.mark.parametrize("name", TEXT_SETTINGS)
def test_env_database_url_in_run_config_fails_the_run_naming_the_setting_and_no_file_of_the_instance_holds_it(tmp_path, name):
    password = "S3cret" + os.urandom(8).hex()
    home = tmp_path / "home"
    home.mkdir()
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"resources": {"migration_settings": {"config": {name: {"env": "DATABASE_URL"}}}}}))
    source = shutil.copy(FLAT_SAMPLE, tmp_path / "data.json")

    done = dagster_execute(home, {"DATABASE_URL": _url(password), "DATA_FILE_PATH": str(source),
                                  "MIGRATION_BACKUP_DIR": str(tmp_path / "backups")}, "-c", str(config))

    assert done.returncode == 1
    assert f"{name} {HOLDS_A_PASSWORD}" in done.stdout + done.stderr
    assert password not in done.stdout + done.stderr
    assert password.encode() not in every_byte_below(home)  # runs, event logs, compute logs
    assert not (tmp_path / "backups").exists()


@pytest.mark.parametrize("field", ["backup_path", "migration_id"])
def test_rollback_jobs_snapshot_names_refuse_a_password_unquoted(field):
    """`{env: DATABASE_URL}` as rollback_job's migration_id was quoted by its refusal: in the run's log and the UI."""
    from faceit_etl.defs.rollback import RollbackConfig

    with pytest.raises(ValueError) as refused:
        RollbackConfig(**{field: "postgresql://faceit:Rb-Secret-41@db.example/faceit_bot"})

    assert f"{field} holds a password" in str(refused.value)
    assert "Rb-Secret-41" not in str(refused.value)


@pytest.mark.db  # starts `dagster`
@pytest.mark.parametrize(("name", "variable", "text"), [("truncate", "MIGRATION_TRUNCATE", "no"), ("batch_size", "MIGRATION_BATCH_SIZE", "٥")])
def test_env_of_a_setting_that_is_not_text_is_refused_before_any_step(tmp_path, name, variable, text):
    """Dagster read `truncate: {env: XT}` with XT=no as true (the tables were emptied), and a number with int()."""
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"resources": {"migration_settings": {"config": {name: {"env": "XT"}}}}}))
    source = shutil.copy(FLAT_SAMPLE, tmp_path / "data.json")
    (tmp_path / "home").mkdir()

    done = dagster_execute(tmp_path / "home", {"XT": text, "DATA_FILE_PATH": str(source),
                                               "MIGRATION_BACKUP_DIR": str(tmp_path / "backups")}, "-c", str(config))

    assert done.returncode == 1
    assert (f"migration_settings.{name}: {{env: XT}} is refused for a setting that is not text" in done.stdout + done.stderr)
    assert f"set {variable} (read strictly)" in done.stdout + done.stderr
    assert not (tmp_path / "backups").exists()  # refused before any step: nothing backed up, nothing loaded


@pytest.mark.db  # starts `dagster`
def test_env_of_rollback_jobs_discard_later_changes_is_refused_before_anything_is_restored(tmp_path):
    """`discard_later_changes: {env: XDLC}` with XDLC=no was read as true: the bot's later rows were discarded."""
    import subprocess

    from faceit_etl_tests.test_target_url import BIN, ROOT

    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"ops": {"restore_tables": {"config": {"discard_later_changes": {"env": "XDLC"}}}}}))
    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")

    done = subprocess.run([str(BIN / "dagster"), "job", "execute", "-m", "faceit_etl.definitions", "-j", "rollback_job",
                           "-c", str(config)], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "DAGSTER_HOME": str(tmp_path), "XDLC": "no"})

    assert done.returncode == 1
    assert ("restore_tables.discard_later_changes: {env: XDLC} is refused for a setting that is not text"
            in done.stdout + done.stderr)
    assert "restored" not in done.stdout + done.stderr
