"""Steps pass what they need through resources, outputs and structured events: connections from the
settings resource, progress as observations with metadata (not log text), the backup folder as an
input (not looked up on disk), the load's verdicts as its own check results (not read back)."""

import time

import dagster as dg

from faceit_etl.cli.progress import RunWatcher
from faceit_etl.defs.checks import CHECKS
from faceit_etl.postgres.load import PROGRESS_DONE, PROGRESS_STAGE, PROGRESS_TOTAL
from faceit_etl_tests.conftest import ASSETS, FLAT_SAMPLE, PostgresAt, make_resources

TAGS = {"test": "progress"}


def _watched_lines(instance: dg.DagsterInstance, said: list[str] | None = None) -> list[str]:
    """The watcher's lines; `said` gets them too, after the run it found (`run <id>`)."""
    lines: list[str] = []
    said = [] if said is None else said
    with RunWatcher(instance, TAGS, console=None, line=lambda text: (lines.append(text), said.append(text)),
                    on_run=lambda run_id: said.append(f"run {run_id}")):
        pass  # the run is over: leaving the watcher reads every event it left
    return lines


def test_the_load_publishes_its_copy_progress_as_observations_and_the_watcher_shows_them(database_url, db, tmp_path):
    settings = make_resources(database_url, FLAT_SAMPLE, tmp_path, batch_size=10)
    with dg.instance_for_test() as instance:
        result = dg.materialize([*ASSETS, *CHECKS], resources=settings, instance=instance, tags=TAGS)
        assert result.success
        observed = [
            {key: value.value for key, value in event.asset_observation_data.asset_observation.metadata.items()}
            for event in result.all_events
            if event.event_type_value == "ASSET_OBSERVATION" and event.asset_key == dg.AssetKey("postgres_tables")
        ]
        said: list[str] = []
        lines = _watched_lines(instance, said)

    # A fresh database: both tables are filled by COPY straight into them, 25 rows in chunks of 10.
    assert observed == [
        {PROGRESS_STAGE: f"copy {table}", PROGRESS_DONE: done, PROGRESS_TOTAL: 25}
        for table in ("users", "user_subscriptions")
        for done in (10, 20, 25)
    ]
    assert "  copy users: 25 rows" in lines
    assert said == [f"run {result.run_id}", *lines]  # learnt before any of its lines
    assert "  copy user_subscriptions: 25 rows" in lines
    assert lines.index("load into PostgreSQL ...") < lines.index("  copy users: 25 rows") < lines.index("load into PostgreSQL done")


@dg.asset
def _copying(context: dg.AssetExecutionContext) -> None:
    """Progress published as the load publishes it, with no log line beside it."""
    for done in (40, 70):
        context.log_event(dg.AssetObservation(
            asset_key=context.asset_key, metadata={PROGRESS_STAGE: "copy users", PROGRESS_DONE: done, PROGRESS_TOTAL: 70},
        ))


def test_each_event_is_shown_once_however_often_the_watcher_reads_the_run():
    """The watcher reads on from where it left off: a read that started over would print every line again."""
    with dg.instance_for_test() as instance:
        assert dg.materialize([_copying], instance=instance, tags=TAGS).success
        reads, read = [], instance.get_records_for_run
        instance.get_records_for_run = lambda *args, **kwargs: (reads.append(1), read(*args, **kwargs))[1]
        lines: list[str] = []
        with RunWatcher(instance, TAGS, console=None, line=lines.append, on_run=lambda run_id: None):
            deadline = time.monotonic() + 60
            while len(reads) < 3 and time.monotonic() < deadline:
                time.sleep(0.05)

    assert len(reads) >= 4  # three polls, and the read when it stops
    assert lines == ["  copy users: 70 rows"]


def test_the_watcher_reads_progress_from_event_metadata_without_any_log_text():
    with dg.instance_for_test() as instance:
        assert dg.materialize([_copying], instance=instance, tags=TAGS).success
        lines = _watched_lines(instance)

    assert lines == ["  copy users: 70 rows"]


def test_the_load_learns_its_backup_folder_from_source_backups_output_not_from_the_disk():
    """postgres_tables takes source_backup's snapshot as an input: whether this run's backup made the
    folder (a re-execution reads its parent's copy and needs a folder of its own) is passed, not looked up."""
    from faceit_etl.defs.assets import postgres_tables, source_backup

    assert postgres_tables.keys_by_input_name["source_backup"] == source_backup.key


def test_the_postgres_resource_hands_out_connections_in_known_sessions(database_url, db):
    """Steps take connections from the resource, never a URL: the session settings are set, the block
    commits, and a database that cannot be reached is named without its password after bounded retries."""
    from faceit_etl.postgres.database import CONNECT_ATTEMPTS, DatabaseUnavailable

    with PostgresAt(url=database_url).get_connection() as conn:
        assert conn.execute(
            "SELECT current_setting('TimeZone'), current_setting('DateStyle'), current_setting('search_path')"
        ).fetchone() == ("UTC", "ISO, MDY", "pg_catalog, pg_temp")
        conn.execute("CREATE TABLE public.handed_out (n int)")
    assert db.execute("SELECT to_regclass('public.handed_out') IS NOT NULL").fetchone()[0]  # committed at the block's end

    dead = PostgresAt(url="postgresql://bot:Hunter2secret@127.0.0.1:1/faceit")
    try:
        with dead.get_connection():
            raise AssertionError("connected to a closed port")
    except DatabaseUnavailable as refused:
        message = str(refused)
    assert message.startswith(f"cannot connect to PostgreSQL at 127.0.0.1:1/faceit after {CONNECT_ATTEMPTS} attempts")
    assert "Hunter2secret" not in message
    assert dead.database_label() == "127.0.0.1:1/faceit"


def _table_check_events(result) -> dict[str, dg.DagsterEvent]:
    return {
        event.event_specific_data.check_name: event
        for event in result.all_events
        if event.event_type_value == "ASSET_CHECK_EVALUATION"
        and event.event_specific_data.asset_key == dg.AssetKey("postgres_tables")
    }


def test_the_load_returns_the_verdicts_it_took_before_commit_as_its_own_check_results(database_url, db, tmp_path):
    """No check step reads the load's metadata back from the instance: postgres_tables' own step
    yields the seven results, with their severities and the verdicts' metadata."""
    from faceit_etl.postgres.verdicts import BLOCKING

    settings = make_resources(database_url, FLAT_SAMPLE, tmp_path)
    with dg.instance_for_test() as instance:
        result = dg.materialize([*ASSETS, *CHECKS], resources=settings, instance=instance)
    events = _table_check_events(result)

    assert set(events) == {
        "row_counts_match", "tier_counts_match", "subscriptions_have_users", "content_matches",
        "referrers_present", "no_self_referrals", "rows_not_in_file",
        "column_schema_change",  # no drift check in this run: the load reports it too
    }
    events.pop("column_schema_change")  # Dagster's own check's words: no verdict of the transaction
    assert {event.step_key for event in events.values()} == {"postgres_tables"}
    for name, event in events.items():
        evaluation = event.event_specific_data
        assert evaluation.passed, name
        assert evaluation.severity == (dg.AssetCheckSeverity.ERROR if name in BLOCKING else dg.AssetCheckSeverity.WARN)
        assert evaluation.metadata["seen_before_commit"].value is True
        assert evaluation.metadata["dry_run"].value is False
    counted = {key: value.value for key, value in events["row_counts_match"].event_specific_data.metadata.items()}
    assert (counted["users_in_database"], counted["users_expected"], counted["users_kept_absent"]) == (25, 25, 0)
    recorded = result.asset_materializations_for_node("postgres_tables")[0].metadata["verification"].value
    assert recorded["content_matches"]["passed"] is True


def test_the_table_checks_alone_judge_the_tables_as_they_are_now_without_loading(database_url, db, tmp_path):
    settings = make_resources(database_url, FLAT_SAMPLE, tmp_path)
    with dg.instance_for_test() as instance:
        assert dg.materialize([*ASSETS, *CHECKS], resources=settings, instance=instance).success
        victim = db.execute("SELECT user_id FROM users ORDER BY user_id LIMIT 1").fetchone()[0]
        db.execute("UPDATE users SET total_requests = total_requests + 1 WHERE user_id = %s", [victim])
        checked = dg.materialize(
            [*ASSETS, *CHECKS], resources=settings, instance=instance,
            selection=dg.AssetSelection.checks_for_assets("postgres_tables"), raise_on_error=False,
        )
    events = _table_check_events(checked)

    assert not checked.success  # content_matches is blocking with ERROR severity
    assert checked.get_asset_materialization_events() == []  # nothing was loaded
    assert [name for name, event in events.items() if not event.event_specific_data.passed] == ["content_matches"]
    content = events["content_matches"].event_specific_data
    assert content.metadata["seen_before_commit"].value is False
    assert content.metadata["users.differing_cells.total_requests"].value == 1
    assert db.execute("SELECT count(*) FROM migration_logs").fetchone()[0] == 1  # the first run's row only
