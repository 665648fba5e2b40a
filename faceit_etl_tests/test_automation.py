"""The schedule and the file sensor that keep PostgreSQL in step with the bot's file."""

from __future__ import annotations

import importlib
import json
import os

import dagster as dg
import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from faceit_etl.cron import NAMED_SCHEDULES, SHAPE
from faceit_etl.definitions import defs, get_migrate_job, load_definitions
from faceit_etl.defs import automation
from faceit_etl.defs.resources import MigrationSettings, PostgresResource, SettingsError
from faceit_etl_tests.conftest import NESTED_SAMPLE, write_json
from faceit_etl_tests.test_settings import NOT_TIME_ZONES


def evaluate(sensor, settings, instance, cursor=None):
    """One tick, the target read from DATABASE_URL as the daemon's process reads it."""
    context = dg.build_sensor_context(
        instance=instance, cursor=cursor, resources={"migration_settings": settings, "postgres": PostgresResource()}
    )
    return sensor(context), context.cursor


def test_the_sensor_requests_a_run_per_new_content_and_never_twice(tmp_path, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "postgresql://localhost/never_connected")  # the target it is named by
    sensor = defs.get_sensor_def("source_file_changed")
    source = write_json(tmp_path / "data.json", {"users": [{"user_id": 1}]})
    settings = MigrationSettings(source_path=str(source))
    with dg.instance_for_test() as instance:
        first, cursor = evaluate(sensor, settings, instance)
        assert isinstance(first, dg.RunRequest)
        assert first.tags["faceit_etl/source_sha256"] == json.loads(cursor)["sha256"]

        untouched, cursor = evaluate(sensor, settings, instance, cursor)
        assert isinstance(untouched, dg.SkipReason)
        assert untouched.skip_message == "this content is already requested and not yet loaded"

        os.utime(source, ns=(1, 1))  # rewritten by the bot with the same content, its run not yet over
        same, cursor = evaluate(sensor, settings, instance, cursor)
        assert isinstance(same, dg.SkipReason)
        assert same.skip_message == "this content is already requested and not yet loaded"

        write_json(source, {"users": [{"user_id": 1}, {"user_id": 2}]})
        changed, cursor = evaluate(sensor, settings, instance, cursor)
        assert isinstance(changed, dg.RunRequest) and changed.run_key != first.run_key
        assert changed.tags["faceit_etl/source_sha256"] != first.tags["faceit_etl/source_sha256"]

        # A reset cursor forgets the requests, not the keys already used: its keys are new too.
        after_reset, _ = evaluate(sensor, settings, instance)
        assert isinstance(after_reset, dg.RunRequest) and after_reset.run_key not in {first.run_key, changed.run_key}


def run_request(instance, request):
    with dg.execute_job(
        dg.reconstructable(get_migrate_job), instance=instance, run_config=request.run_config,
        tags={**request.tags, "dagster/run_key": request.run_key}, raise_on_error=False,
    ) as result:
        return result.success


def test_a_failed_load_is_requested_again_once_the_file_is_written_and_a_loaded_one_never(
    tmp_path, monkeypatch, database_url, db
):
    """A loads; B fails (a rejected entry, no rejects allowed): the sensor does not retry B in a loop,
    but once the cause is fixed and the bot writes the file again, B is requested and loaded, though B
    was requested before. Then the tables hold B and nothing more is requested."""
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("MIGRATION_BACKUP_DIR", str(tmp_path / "backups"))
    source = tmp_path / "data.json"
    monkeypatch.setenv("DATA_FILE_PATH", str(source))
    sensor = defs.get_sensor_def("source_file_changed")
    settings = MigrationSettings()
    b = {"users": [{"user_id": 7, "faceit_nickname": "B"}, {"user_id": 8, "language": "a language name too long"}]}
    with dg.instance_for_test() as instance:
        write_json(source, {"users": [{"user_id": 7, "faceit_nickname": "A"}]})
        request, cursor = evaluate(sensor, settings, instance)
        assert run_request(instance, request)

        write_json(source, b)
        request, cursor = evaluate(sensor, settings, instance, cursor)
        assert isinstance(request, dg.RunRequest)
        assert not run_request(instance, request)  # over the reject limit: nothing written
        failed = instance.get_runs(dg.RunsFilter(tags={"dagster/run_key": request.run_key}))[0].run_id

        waiting, cursor = evaluate(sensor, settings, instance, cursor)
        assert isinstance(waiting, dg.SkipReason)
        assert waiting.skip_message.startswith(f"run {failed} failed without loading this content; it is requested again")

        monkeypatch.setenv("MIGRATION_MAX_REJECTS", "1")  # the fix
        stat = source.stat()
        os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))  # the bot writes the same content again
        again, cursor = evaluate(sensor, settings, instance, cursor)
        assert isinstance(again, dg.RunRequest) and again.run_key != request.run_key
        assert again.tags["faceit_etl/source_sha256"] == request.tags["faceit_etl/source_sha256"]
        assert run_request(instance, again)
        assert db.execute("SELECT faceit_nickname FROM users WHERE user_id = 7").fetchone()[0] == "B"

        loaded, _ = evaluate(sensor, settings, instance, cursor)
        assert isinstance(loaded, dg.SkipReason)
        assert loaded.skip_message == _skipped_as_loaded(run_id_of(instance, again))


def run_id_of(instance, request) -> str:
    return instance.get_runs(dg.RunsFilter(tags={"dagster/run_key": request.run_key}))[0].run_id


def _skipped_as_loaded(run_id: str) -> str:
    """The sensor's words for a file whose content a run loaded: a claim about the file, not the tables."""
    return (
        f"the file holds the content run {run_id} loaded (the same sha256); this sensor looks at the file only: "
        "a change made in the database since is found by the checks or the schedule's re-run"
    )


def test_the_sensor_follows_the_file_back_to_earlier_content_and_the_database_too(tmp_path, monkeypatch, database_url, db):
    """A → B → A, A put back with its original mtime (as `cp -p`, `rsync -a` or `tar` do): each
    change is a run the daemon would launch (a run key never used before), and the database ends
    holding A again."""
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("MIGRATION_BACKUP_DIR", str(tmp_path / "backups"))
    source = tmp_path / "data.json"
    monkeypatch.setenv("DATA_FILE_PATH", str(source))
    sensor = defs.get_sensor_def("source_file_changed")
    cursor, nicknames = None, []
    with dg.instance_for_test() as instance:
        mtimes = {"first": 10**18, "second": 10**18 + 1}
        for step, nickname in enumerate(["first", "second", "first"]):
            write_json(source, {"users": [{"user_id": 7, "faceit_nickname": nickname}]})
            os.utime(source, ns=(mtimes[nickname], mtimes[nickname]))
            request, cursor = evaluate(sensor, MigrationSettings(), instance, cursor)
            assert isinstance(request, dg.RunRequest), f"change {step + 1} ({nickname}) requested no run: {request}"
            used = {r.tags.get("dagster/run_key") for r in instance.get_runs()}
            assert request.run_key not in used, f"change {step + 1}: run key already used, the daemon would skip it"
            with dg.execute_job(
                dg.reconstructable(get_migrate_job), instance=instance, run_config=request.run_config,
                tags={**request.tags, "dagster/run_key": request.run_key},
            ) as result:
                assert result.success
            nicknames.append(db.execute("SELECT faceit_nickname FROM users WHERE user_id = 7").fetchone()[0])
    assert nicknames == ["first", "second", "first"]


@pytest.fixture
def other_database_url(postgres_server_url, database_url):
    """Another empty database on the test server, beside `database_url`'s."""
    name = f"{psycopg.conninfo.conninfo_to_dict(database_url)['dbname']}_other"
    with psycopg.connect(postgres_server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield make_conninfo(postgres_server_url, dbname=name)
    with psycopg.connect(postgres_server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def nicknames(url: str) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT user_id, faceit_nickname FROM users ORDER BY user_id").fetchall()


def sensor_on(tmp_path, monkeypatch, nickname: str):
    """The sensor, and the bot's file holding one user of this nickname, in the environment of a daemon."""
    monkeypatch.setenv("MIGRATION_BACKUP_DIR", str(tmp_path / "backups"))
    source = write_json(tmp_path / "data.json", {"users": [{"user_id": 7, "faceit_nickname": nickname}]})
    monkeypatch.setenv("DATA_FILE_PATH", str(source))
    return defs.get_sensor_def("source_file_changed")


def test_a_load_into_another_database_is_no_load_of_the_sensors_target(tmp_path, monkeypatch, database_url, other_database_url):
    """C loaded into X; the sensor restarted aimed at an empty Y requests C, and then skips."""
    sensor = sensor_on(tmp_path, monkeypatch, "C")
    with dg.instance_for_test() as instance:
        monkeypatch.setenv("DATABASE_URL", database_url)
        request, _ = evaluate(sensor, MigrationSettings(), instance)
        assert run_request(instance, request)

        monkeypatch.setenv("DATABASE_URL", other_database_url)
        into_y, cursor = evaluate(sensor, MigrationSettings(), instance)
        assert isinstance(into_y, dg.RunRequest), into_y
        assert run_request(instance, into_y)
        loaded, _ = evaluate(sensor, MigrationSettings(), instance, cursor)
        assert isinstance(loaded, dg.SkipReason)
        assert loaded.skip_message == _skipped_as_loaded(run_id_of(instance, into_y))
    assert nicknames(other_database_url) == [(7, "C")]


def test_a_load_of_other_content_into_another_database_requests_nothing(
    tmp_path, monkeypatch, database_url, other_database_url
):
    """C loaded into Y by the sensor's run; then the CLI (another DATABASE_URL, the same instance) loads
    other content into Z: the sensor aimed at Y still finds C loaded there, by its cursor or without."""
    sensor = sensor_on(tmp_path, monkeypatch, "C")
    with dg.instance_for_test() as instance:
        monkeypatch.setenv("DATABASE_URL", database_url)
        request, cursor = evaluate(sensor, MigrationSettings(), instance)
        assert run_request(instance, request)

        with monkeypatch.context() as elsewhere:
            elsewhere.setenv("DATABASE_URL", other_database_url)
            elsewhere.setenv("DATA_FILE_PATH", str(write_json(tmp_path / "other.json", {"users": [{"user_id": 8}]})))
            with dg.execute_job(dg.reconstructable(get_migrate_job), instance=instance) as other:
                assert other.success

        untouched, _ = evaluate(sensor, MigrationSettings(), instance, cursor)
        after_restart, _ = evaluate(sensor, MigrationSettings(), instance)
        said = _skipped_as_loaded(run_id_of(instance, request))
    assert isinstance(untouched, dg.SkipReason) and untouched.skip_message == said
    assert isinstance(after_restart, dg.SkipReason) and after_restart.skip_message == said
    assert nicknames(other_database_url) == [(8, None)]


def test_a_rollback_is_not_undone_by_the_sensor_while_the_file_is_unchanged(tmp_path, monkeypatch, database_url, db):
    """A then B loaded, B rolled back: the file still holds B, and the sensor leaves the tables as the
    rollback made them, saying so, until the file's content changes."""
    monkeypatch.setenv("DATABASE_URL", database_url)
    sensor = sensor_on(tmp_path, monkeypatch, "A")
    source = tmp_path / "data.json"
    cursor = None
    with dg.instance_for_test() as instance:
        for nickname in ("A", "B"):
            write_json(source, {"users": [{"user_id": 7, "faceit_nickname": nickname}]})
            request, cursor = evaluate(sensor, MigrationSettings(), instance, cursor)
            assert run_request(instance, request)
        loaded_b = run_id_of(instance, request)
        rollback = load_definitions().resolve_job_def("rollback_job").execute_in_process(instance=instance)
        assert rollback.success
        assert nicknames(database_url) == [(7, "A")]

        kept, cursor = evaluate(sensor, MigrationSettings(), instance, cursor)
        after_restart, _ = evaluate(sensor, MigrationSettings(), instance)
        assert nicknames(database_url) == [(7, "A")]

        write_json(source, {"users": [{"user_id": 7, "faceit_nickname": "C"}]})
        changed, cursor = evaluate(sensor, MigrationSettings(), instance, cursor)
        assert isinstance(changed, dg.RunRequest), changed
        assert run_request(instance, changed)
    assert nicknames(database_url) == [(7, "C")]
    said = (f"the tables were rolled back from this content by run {rollback.run_id} (run {loaded_b} "
            "loaded it): a new content of the file, or a manual run of migrate_job, loads it again")
    assert isinstance(kept, dg.SkipReason) and kept.skip_message == said
    assert isinstance(after_restart, dg.SkipReason) and after_restart.skip_message == said


def test_a_dry_run_of_new_content_is_no_load_and_the_sensor_still_requests_it(tmp_path, monkeypatch, database_url, db):
    """A loaded; the file now holds B and someone dry-runs it: nothing was written, so the sensor
    still requests B, and that run loads it."""
    monkeypatch.setenv("DATABASE_URL", database_url)
    sensor = sensor_on(tmp_path, monkeypatch, "A")
    source = tmp_path / "data.json"
    with dg.instance_for_test() as instance:
        request, cursor = evaluate(sensor, MigrationSettings(), instance)
        assert run_request(instance, request)
        write_json(source, {"users": [{"user_id": 7, "faceit_nickname": "B"}]})
        with dg.execute_job(
            dg.reconstructable(get_migrate_job), instance=instance,
            run_config={"resources": {"migration_settings": {"config": {"dry_run": True}}}},
        ) as dry_run:
            assert dry_run.success
        assert nicknames(database_url) == [(7, "A")]

        after_dry_run, cursor = evaluate(sensor, MigrationSettings(), instance, cursor)
        assert isinstance(after_dry_run, dg.RunRequest), after_dry_run
        assert after_dry_run.tags["faceit_etl/source_sha256"] != request.tags["faceit_etl/source_sha256"]
        assert run_request(instance, after_dry_run)
    assert nicknames(database_url) == [(7, "B")]


def test_the_sensor_skips_a_missing_file(tmp_path):
    sensor = defs.get_sensor_def("source_file_changed")
    with dg.instance_for_test() as instance:
        result, cursor = evaluate(sensor, MigrationSettings(source_path=str(tmp_path / "absent.json")), instance)
    assert isinstance(result, dg.SkipReason) and "no such file" in result.skip_message
    assert cursor is None


def test_the_schedule_runs_migrate_job_on_the_configured_cron(monkeypatch):
    """Schedule and sensor are module-level definitions: the environment is read when the code location
    loads (here: the module is loaded again under it)."""
    monkeypatch.setenv("MIGRATION_SCHEDULE_CRON", "*/15 * * * *")
    monkeypatch.setenv("MIGRATION_SCHEDULE_TIMEZONE", "Europe/Moscow")
    monkeypatch.setenv("MIGRATION_SCHEDULE_ENABLED", "true")
    try:
        schedule = importlib.reload(automation).migrate_schedule
        sensor = automation.source_file_changed
    finally:
        monkeypatch.undo()
        importlib.reload(automation)

    assert (schedule.cron_schedule, schedule.execution_timezone) == ("*/15 * * * *", "Europe/Moscow")
    assert schedule.job_name == "migrate_job"
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    assert sensor.default_status == dg.DefaultSensorStatus.STOPPED  # MIGRATION_SENSOR_ENABLED unset
    assert defs.get_schedule_def("migrate_schedule").cron_schedule == "0 3 * * *"
    assert defs.get_schedule_def("migrate_schedule").default_status == dg.DefaultScheduleStatus.STOPPED


@pytest.mark.parametrize(("variable", "value"), [("MIGRATION_SENSOR_ENABLED", "maybe"), ("MIGRATION_SCHEDULE_ENABLED", "2")])
def test_a_switch_that_is_no_boolean_is_refused_when_the_location_loads(monkeypatch, variable, value):
    """The same strict rule as every setting: a word that is neither true nor false never means off."""
    monkeypatch.setenv(variable, value)
    try:
        with pytest.raises(SettingsError) as refused:
            importlib.reload(automation)
    finally:
        monkeypatch.undo()
        importlib.reload(automation)
    assert str(refused.value) == f"{variable}={value!r}: expected true or false"


@pytest.mark.parametrize(("variable", "value", "why"), [
    ("MIGRATION_SCHEDULE_CRON", "61 * * * *", "minute 61 is out of 0-59"),
    ("MIGRATION_SCHEDULE_CRON", "daily", f"1 field(s); a cron schedule has 5: {SHAPE}"),
    *(("MIGRATION_SCHEDULE_TIMEZONE", zone, "not a known time zone") for zone in NOT_TIME_ZONES if "\x00" not in zone),
])
def test_a_schedule_setting_dagster_cannot_use_is_refused_naming_the_variable(monkeypatch, variable, value, why):
    """Dagster's own refusal ("invalid cron schedule … for schedule 'migrate_schedule'") names neither the
    variable nor where to fix it."""
    monkeypatch.setenv(variable, value)
    try:
        with pytest.raises(SettingsError) as refused:
            importlib.reload(automation)
    finally:
        monkeypatch.undo()
        importlib.reload(automation)
    assert str(refused.value) == f"{variable}={value!r}: {why}"


# What Dagster 1.13's schedules take, and what they refuse with the reason we give: a table of both.
GOOD_CRONS = [
    "0 3 * * *", "*/15 * * * *", "0 0 1 jan *", "0 3 * * MON-FRI", "0 3 * * 7", "0 3 * * 0-7", "5/15 * * * *",
    "*/90 * * * *", "5-1 * * * *", "0 0 L * *", "0 0 * * 5#3", "0 0 * * 1#1", "0 0 * * 1#5", "0 0 * * L5", "0 0 ? * *", "0 0 29 2 *",
    "0 0 31 2,3 *", "@daily", "@DAILY", "@hourly", "@midnight", "@weekly", "@monthly", "@yearly", "@annually",
    "0  3 * * *",
]
BAD_CRONS = [
    ("61 * * * *", "minute 61 is out of 0-59"),
    ("60 * * * *", "minute 60 is out of 0-59"),
    ("1,2,61 * * * *", "minute 61 is out of 0-59"),
    ("0 25 * * *", "hour 25 is out of 0-23"),
    ("0 24 * * *", "hour 24 is out of 0-23"),
    ("0 0 32 * *", "day-of-month 32 is out of 1-31"),
    ("0 0 0 * *", "day-of-month 0 is out of 1-31"),
    ("0 0 32-1 * *", "day-of-month 32 is out of 1-31"),
    ("0 0 1 13 *", "month 13 is out of 1-12"),
    ("0 0 1 0 *", "month 0 is out of 1-12"),
    ("0 0 * * 8", "day-of-week 8 is out of 0-7"),
    ("0 0 * * 7-8", "day-of-week 8 is out of 0-7"),
    ("0 0 * * 8#1", "day-of-week 8 is out of 0-7"),
    ("0 0 * * 1#6", "day-of-week '1#6': the week's number 6 is out of 1-5"),
    ("0 0 * * 5#0", "day-of-week '5#0': the week's number 0 is out of 1-5"),
    ("*/0 * * * *", "minute step 0 repeats nothing: a step is at least 1"),
    ("0 0 * */0 *", "month step 0 repeats nothing: a step is at least 1"),
    ("*/x * * * *", "minute step 'x' is no number"),
    ("-1 * * * *", "minute '-1' is not a number 0-59, a range a-b, a list a,b or a step */n"),
    ("0 0 1 foo *", "month 'foo' is not a number 1-12, or a name jan-dec, a range a-b, a list a,b or a step */n"),
    ("0 0 15W * *", "day-of-month '15W' is not a number 1-31, a range a-b, a list a,b or a step */n"),
    ("H * * * *", "minute 'H' is not a number 0-59, a range a-b, a list a,b or a step */n"),
    ("0 0 30 2 *", "day-of-month 30 of month 2 never comes: February has at most 29 days"),
    ("0 0 31 feb *", "day-of-month 31 of month feb never comes: February has at most 29 days"),
    ("* * * *", f"4 field(s); a cron schedule has 5: {SHAPE}"),
    ("0 0 3 * * *", f"6 field(s) (Dagster takes no seconds or year field); a cron schedule has 5: {SHAPE}"),
    ("0 0 0 3 * * 2030", f"7 field(s) (Dagster takes no seconds or year field); a cron schedule has 5: {SHAPE}"),
    ("0 0 0 3 * * 2030 x", f"8 field(s); a cron schedule has 5: {SHAPE}"),
    ("@reboot", f"@reboot is no schedule name Dagster knows: {', '.join(NAMED_SCHEDULES)}"),
    ("@daily ", "@daily takes nothing around it"),
]


def dagster_takes(cron: str) -> bool:
    """Dagster's own judgement, with no setting of ours in between."""
    try:
        dg.ScheduleDefinition(name="any", job_name="migrate_job", cron_schedule=cron)
    except dg.DagsterInvalidDefinitionError:
        return False
    return True


def schedule_under(monkeypatch, variable: str, value: str) -> dg.ScheduleDefinition:
    """migrate_schedule as the code location builds it with `variable` set to `value` (refusals raise)."""
    monkeypatch.setenv(variable, value)
    try:
        return importlib.reload(automation).migrate_schedule
    finally:
        monkeypatch.undo()
        importlib.reload(automation)


@pytest.mark.parametrize("cron", GOOD_CRONS)
def test_every_cron_dagster_takes_is_the_schedules(monkeypatch, cron):
    assert dagster_takes(cron)  # the table is of crons Dagster takes
    assert schedule_under(monkeypatch, "MIGRATION_SCHEDULE_CRON", cron).cron_schedule == cron


@pytest.mark.parametrize(("cron", "why"), BAD_CRONS)
def test_a_cron_dagster_refuses_is_refused_naming_the_field_and_its_range(monkeypatch, cron, why):
    """Not "not 5 fields" for a well-formed expression with a value out of range: the part to change."""
    assert not dagster_takes(cron)
    with pytest.raises(SettingsError) as refused:
        schedule_under(monkeypatch, "MIGRATION_SCHEDULE_CRON", cron)
    assert str(refused.value) == f"MIGRATION_SCHEDULE_CRON={cron!r}: {why}"


@pytest.mark.parametrize(("value", "running"), [("off", False), ("No", False), ("0", False), ("ON", True), ("1", True), ("", False)])
def test_each_word_for_true_or_false_switches_the_sensor(monkeypatch, value, running):
    monkeypatch.setenv("MIGRATION_SENSOR_ENABLED", value)
    try:
        sensor = importlib.reload(automation).source_file_changed
    finally:
        monkeypatch.undo()
        importlib.reload(automation)
    assert sensor.default_status == (dg.DefaultSensorStatus.RUNNING if running else dg.DefaultSensorStatus.STOPPED)
