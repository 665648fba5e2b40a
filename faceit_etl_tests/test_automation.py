"""The schedule and the file sensor that keep PostgreSQL in step with the bot's file."""

from __future__ import annotations

import json
import os

import dagster as dg

from faceit_etl.definitions import defs, migrate_job
from faceit_etl.defs.automation import build_schedule
from faceit_etl.defs.resources import MigrationSettings
from faceit_etl_tests.conftest import NESTED_SAMPLE, write_json


def evaluate(sensor, settings, cursor=None):
    context = dg.build_sensor_context(cursor=cursor, resources={"migration_settings": settings})
    return sensor(context), context.cursor


def test_the_sensor_requests_a_run_per_new_content_and_never_twice(tmp_path):
    sensor = defs.get_sensor_def("source_file_changed")
    source = write_json(tmp_path / "data.json", {"users": [{"user_id": 1}]})
    settings = MigrationSettings(source_path=str(source))

    first, cursor = evaluate(sensor, settings)
    assert isinstance(first, dg.RunRequest)
    assert first.run_key == json.loads(cursor)["sha256"]

    untouched, cursor = evaluate(sensor, settings, cursor)
    assert isinstance(untouched, dg.SkipReason) and "not been touched" in untouched.skip_message

    os.utime(source, ns=(1, 1))  # rewritten by the bot with the same content
    same, cursor = evaluate(sensor, settings, cursor)
    assert isinstance(same, dg.SkipReason) and "same content" in same.skip_message

    write_json(source, {"users": [{"user_id": 1}, {"user_id": 2}]})
    changed, cursor = evaluate(sensor, settings, cursor)
    assert isinstance(changed, dg.RunRequest) and changed.run_key != first.run_key
    assert changed.tags["faceit_etl/source_sha256"] == changed.run_key


def test_the_sensor_skips_a_missing_file(tmp_path):
    sensor = defs.get_sensor_def("source_file_changed")
    result, cursor = evaluate(sensor, MigrationSettings(source_path=str(tmp_path / "absent.json")))
    assert isinstance(result, dg.SkipReason) and "no such file" in result.skip_message
    assert cursor is None


def test_the_schedule_runs_migrate_job_on_the_configured_cron(monkeypatch):
    monkeypatch.setenv("MIGRATION_SCHEDULE_CRON", "*/15 * * * *")
    monkeypatch.setenv("MIGRATION_SCHEDULE_TIMEZONE", "Europe/Moscow")
    monkeypatch.setenv("MIGRATION_SCHEDULE_ENABLED", "true")

    schedule = build_schedule(migrate_job)

    assert (schedule.cron_schedule, schedule.execution_timezone) == ("*/15 * * * *", "Europe/Moscow")
    assert schedule.job_name == "migrate_job"
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    assert defs.get_schedule_def("migrate_schedule").cron_schedule == "0 3 * * *"
