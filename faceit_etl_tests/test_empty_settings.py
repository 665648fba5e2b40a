"""An empty or white-space-only path or name means nothing (an empty backup_dir put every run's folder in
the current directory): refused by the setting's (or variable's) name when the resource is built, before
any step."""

from __future__ import annotations

import dagster as dg
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from faceit_etl.defs.checks import CHECKS
from faceit_etl.defs.resources import ENVIRONMENT, MigrationSettings, SettingsError, describe_invalid, environment_value
from faceit_etl_tests.conftest import ASSETS, FLAT_SAMPLE, PostgresAt

EMPTY = "empty or only white space, which names nothing: give a value, or leave it unset for its default"
TEXT_SETTINGS = ("source_path", "backup_dir", "max_rejects", "source_timezone", "target_schema")
BLANKS = st.text(alphabet=" \t\n\r\u00a0\u2003\u3000", max_size=4)


@given(name=st.sampled_from(TEXT_SETTINGS), blank=BLANKS)
def test_an_empty_or_blank_text_setting_is_refused_by_name(name, blank):
    with pytest.raises(ValidationError) as refused:
        MigrationSettings(**{name: blank})

    assert describe_invalid(refused.value) == f"{name} {blank!r}: {EMPTY}"


@given(name=st.sampled_from(TEXT_SETTINGS), blank=BLANKS.filter(bool))
def test_a_blank_environment_variable_is_refused_by_its_name(name, blank):
    variable = ENVIRONMENT[name][0]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(variable, blank)
        with pytest.raises(SettingsError) as refused:
            environment_value(name)

    assert str(refused.value) == f"{variable}={blank!r}: {EMPTY}"


def test_an_empty_backup_dir_in_run_config_fails_the_run_before_any_step(database_url, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATA_FILE_PATH", str(FLAT_SAMPLE))
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [*ASSETS, *CHECKS], instance=instance, raise_on_error=False,
            resources={"migration_settings": MigrationSettings(), "postgres": PostgresAt(url=database_url)},
            run_config={"resources": {"migration_settings": {"config": {"backup_dir": ""}}}},
        )
        failures = [e for e in result.all_events if e.event_type_value == "RESOURCE_INIT_FAILURE"]

    assert not result.success
    assert [e.step_key for e in result.all_events if e.event_type_value == "STEP_START"] == []
    assert f"backup_dir\n  Value error, {EMPTY}" in str(failures[0].event_specific_data.error)
    assert list(tmp_path.iterdir()) == []  # no run folder in the current directory
