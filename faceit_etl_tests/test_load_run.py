"""`load_run`, a load as a run without Dagster: its migration_logs row, the snapshot into the run's
folder, the verdicts before commit, and a failure that names the database without its password."""

import json
import socket
from dataclasses import replace

import pytest

from faceit_etl.backups import MANIFEST, backup_source
from faceit_etl.launcher import PID_TAG, launcher_tags
from faceit_etl.mapping import map_frames
from faceit_etl.postgres.run import LoadFailed, LoadOptions, load_run
from faceit_etl.source import read_source
from faceit_etl.validation import validate_entries
from faceit_etl_tests.conftest import BOT_PASSWORD, FLAT_SAMPLE


def _options(url: str, folder, **changes) -> LoadOptions:
    return replace(
        LoadOptions(url=url, schema="public", run_id="run-1", root_run_id="run-1", folder=folder,
                    folder_has_manifest=False, settings_summary={"batch_size": 10}, batch_size=10),
        **changes,
    )


def _outcome():
    outcome = validate_entries(read_source(FLAT_SAMPLE), "UTC")
    return outcome, map_frames(outcome.valid)


def test_a_load_run_logs_itself_snapshots_into_its_own_folder_and_returns_its_verdicts(database_url, db, tmp_path):
    outcome, mapped = _outcome()
    progress: list[tuple[str, int, int]] = []

    done = load_run(_options(database_url, tmp_path / "run-1"), outcome, mapped,
                    progress=lambda *step: progress.append(step))

    assert all(verdict.passed for verdict in done.verdicts.values())
    assert done.stats.users.inserted == 25
    assert done.snapshot == {"users": "absent", "user_subscriptions": "absent"}
    manifest = json.loads((tmp_path / "run-1" / MANIFEST).read_text())
    assert (manifest["run_id"], manifest["root_run_id"], manifest["target"]["run_id"]) == ("run-1", "run-1", "run-1")
    assert progress[-1] == ("copy user_subscriptions", 25, 25)
    row = db.execute("SELECT id::text, status, metadata->'settings' FROM migration_logs").fetchone()
    assert row == (done.log_id, "success", {"batch_size": 10})


def test_a_folder_the_runs_source_backup_made_keeps_its_manifest(database_url, db, tmp_path):
    """The source copy's manifest section stays: the load adds its target, it does not start a new one."""
    copied = backup_source(FLAT_SAMPLE, tmp_path, "run-1")
    outcome, mapped = _outcome()

    load_run(_options(database_url, tmp_path / "run-1", folder_has_manifest=True), outcome, mapped)

    manifest = json.loads((tmp_path / "run-1" / MANIFEST).read_text())
    assert manifest["source"]["sha256"] == copied.sha256
    assert manifest["target"]["tables"]["users"] is None


def test_a_failed_load_run_marks_its_log_row_failed_and_names_no_password(password_database_url, db, tmp_path):
    db.execute("CREATE TABLE users (id int)")  # not the bot's table: the load refuses it
    outcome, mapped = _outcome()
    secret = BOT_PASSWORD.split()[0]  # its random part, in whatever encoding a message would carry it

    with pytest.raises(LoadFailed) as failed:
        load_run(_options(password_database_url, tmp_path / "run-1"), outcome, mapped)

    assert failed.value.verdicts is None
    assert str(failed.value).startswith("load into ")
    assert ", nothing was written: " in str(failed.value)
    assert secret not in str(failed.value)
    status, message = db.execute("SELECT status, error_message FROM migration_logs").fetchone()
    assert status == "failed" and message in str(failed.value) and secret not in message


def test_a_dry_run_load_run_writes_no_log_row_and_no_snapshot(database_url, db, tmp_path):
    outcome, mapped = _outcome()

    done = load_run(_options(database_url, tmp_path / "run-1", dry_run=True), outcome, mapped)

    assert done.log_id is None and done.stats.users.inserted == 25
    assert all(verdict.passed for verdict in done.verdicts.values())
    assert done.snapshot == "skipped (backup_tables off)"
    assert not (tmp_path / "run-1").exists()
    assert db.execute("SELECT to_regclass('users'), to_regclass('migration_logs')").fetchone() == (None, None)


def test_a_step_process_whose_launcher_is_gone_rolls_its_load_back_instead_of_committing(database_url, db, tmp_path):
    """A CLI killed alone (not its process group) leaves its step process loading: that load must not
    commit after the run may have been reported failed with nothing written. Its own launcher commits."""
    outcome, mapped = _outcome()
    gone = {**launcher_tags(), PID_TAG: "999999999"}  # above any pid_max: no such process

    with pytest.raises(LoadFailed) as failed:
        load_run(_options(database_url, tmp_path / "run-1", launcher=gone), outcome, mapped)

    said = (f"the faceit-etl process (pid 999999999 on host {socket.gethostname()}) that launched this run ended "
            "before the load's commit (killed?), so its step process rolled the load back instead of committing it")
    assert str(failed.value).endswith(f", nothing was written: {said}")
    assert db.execute("SELECT status, error_message FROM migration_logs").fetchall() == [("failed", said)]
    assert db.execute("SELECT to_regclass('public.users')").fetchone()[0] is None  # its transaction made it

    done = load_run(_options(database_url, tmp_path / "run-2", run_id="run-2", launcher=launcher_tags()), outcome, mapped)
    assert done.stats.users.inserted == 25
    assert db.execute("SELECT count(*) FROM users").fetchone()[0] == 25
