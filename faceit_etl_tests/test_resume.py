"""Resuming a failed migration (`faceit-etl migrate --resume`, and Dagster's re-execution from failure):
the CLI as a subprocess, real Dagster runs on a real instance, a real PostgreSQL.

The typical case: the bot's `users.user_id` is 32-bit, the file has 64-bit Telegram ids, the load
fails and prints the ALTER TABLE; the operator runs it and resumes; only the load step runs again.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import uuid
from pathlib import Path

import dagster as dg
import pytest

from faceit_etl.definitions import get_migrate_job
from faceit_etl.defs.checks import TABLE_CHECK_SPECS
from faceit_etl.defs import io
from faceit_etl.generate import generate_users
from faceit_etl.defs.resources import MigrationSettings
from faceit_etl_tests.conftest import write_json
from faceit_etl_tests.test_cli import CLI, faceit_etl, instance_at, tables_digest, workdir  # noqa: F401 (a fixture)
from faceit_etl_tests.test_restore import edit_manifest
from faceit_etl_tests.test_rollback_prompt import rollback_question

ALTER = 'ALTER TABLE "public"."users" ALTER COLUMN "user_id" TYPE bigint;'
ALL_STEPS = ["bot_data_file", "source_backup", "raw_json", "validated_frame", "validated_frame_no_rejected_entries",
             "mapped_frames", "postgres_tables"]


def small_and_big(seed: int = 13) -> tuple[list[dict], list[dict]]:
    users = generate_users(300, seed=seed)
    return [u for u in users if u["user_id"] < 2**31][:40], [u for u in users if u["user_id"] >= 2**31][:60]


def steps_run(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    return sorted({e.step_key for e in instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_START)})


def migrate_runs(instance: dg.DagsterInstance) -> list[dg.DagsterRun]:
    return list(instance.get_runs(dg.RunsFilter(job_name="migrate_job")))  # newest first


def failed_on_a_32_bit_column(workdir: Path, database_url: str, db) -> tuple[Path, list[dict]]:
    """A baseline of small ids, the column made 32-bit as the bot's Alembic makes it, then a file of
    64-bit ids through the CLI: the load fails and says which ALTER fixes it."""
    small, big = small_and_big()
    assert faceit_etl(workdir, database_url, "migrate", str(write_json(workdir / "small.json", {"users": small}))).returncode == 0
    db.execute("ALTER TABLE users ALTER COLUMN user_id TYPE integer")
    source = write_json(workdir / "data.json", {"users": small + big})
    failed = faceit_etl(workdir, database_url, "migrate", str(source))
    assert failed.returncode == 1, failed.stdout + failed.stderr
    # The UI's Re-execute → From failure only for runs the UI launched: for the CLI's (and `dagster job
    # execute`'s) runs, which have no workspace origin, Dagster fails it with a CheckError.
    assert ("Nothing was written. Widen the columns, then resume this run (faceit-etl migrate --resume, or, for a run "
            "launched from the UI, Re-execute → From failure: the file is not read again) or run again:\n  "
            f"{ALTER}") in failed.stdout
    return source, small + big


def test_after_the_printed_alter_a_resume_runs_only_the_load_and_its_checks(workdir, database_url, db):
    source, users = failed_on_a_32_bit_column(workdir, database_url, db)
    with instance_at(workdir) as instance:
        failed = migrate_runs(instance)[0]
    assert failed.status == dg.DagsterRunStatus.FAILURE
    db.execute(ALTER)  # what the operator is told to run

    done = faceit_etl(workdir, database_url, "migrate", "--resume")

    assert done.returncode == 0, done.stdout + done.stderr
    assert f"resuming run {failed.run_id} from its failed step" in done.stdout
    for check in ("row_counts_match", "tier_counts_match", "subscriptions_have_users", "content_matches"):
        assert f"check postgres_tables.{check}: passed" in done.stdout
    assert "users: 60 inserted, 0 updated, 40 unchanged" in done.stdout
    with instance_at(workdir) as instance:
        resumed = migrate_runs(instance)[0]
        assert (resumed.parent_run_id, resumed.status) == (failed.run_id, dg.DagsterRunStatus.SUCCESS)
        assert [s for s in steps_run(instance, failed.run_id) if not s.startswith("asset_check_")] == sorted(ALL_STEPS)
        # The file was not read, validated or backed up again: only the load and its checks ran.
        assert [s for s in steps_run(instance, resumed.run_id) if not s.startswith("asset_check_")] == ["postgres_tables"]
        checks = instance.all_logs(resumed.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION)
        evaluations = [e.dagster_event.event_specific_data for e in checks]
        assert len(evaluations) == len(TABLE_CHECK_SPECS) + 1  # and the column schema check
        assert {e.asset_key.to_user_string() for e in evaluations} == {"postgres_tables"}
        assert all(e.passed for e in evaluations if e.severity == dg.AssetCheckSeverity.ERROR)
    assert not (workdir / "backups" / resumed.run_id / "source.json").exists()
    rows = db.execute("SELECT user_id, faceit_nickname FROM users ORDER BY user_id").fetchall()
    assert rows == sorted((u["user_id"], u["faceit_nickname"]) for u in users)
    assert db.execute("SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'users'::regclass "
                      "AND attname = 'user_id'").fetchone()[0] == "bigint"
    statuses = dict(db.execute("SELECT metadata->>'run_id', status FROM migration_logs").fetchall())
    assert (statuses[failed.run_id], statuses[resumed.run_id]) == ("failed", "success")

    # Resumed, the failed run is superseded: there is nothing left to resume.
    again = faceit_etl(workdir, database_url, "migrate", "--resume")
    assert again.returncode == 2
    assert again.stdout.startswith(
        f"resume refused, nothing was written: run {resumed.run_id} of "
    ) and f"succeeded after run {failed.run_id} failed: the tables hold a later migration; resuming it would not " \
          "load what a new run loads; start a new run instead" in again.stdout


def test_rollback_of_a_resumed_migration_restores_its_original_runs_snapshot(workdir, database_url, db):
    failed_on_a_32_bit_column(workdir, database_url, db)
    db.execute(ALTER)
    before = tables_digest(db)  # as the failed run's snapshot holds them: the ALTER changed no value's text
    with instance_at(workdir) as instance:
        failed = migrate_runs(instance)[0]
    assert faceit_etl(workdir, database_url, "migrate", "--resume").returncode == 0
    with instance_at(workdir) as instance:
        resumed = migrate_runs(instance)[0]
    manifest = json.loads((workdir / "backups" / resumed.run_id / "manifest.json").read_text())
    # No second snapshot: the resumed load found the tables as its original run's snapshot holds them.
    assert manifest["target"]["snapshot_folder"] == str(workdir / "backups" / failed.run_id)
    assert (manifest["target"]["run_id"], manifest["target"]["snapshot_of_run"]) == (resumed.run_id, failed.run_id)
    assert not (workdir / "backups" / resumed.run_id / "users.copy").exists()

    done = faceit_etl(workdir, database_url, "rollback", "--confirm")

    assert done.returncode == 0, done.stdout + done.stderr
    # The snapshot is the failed run's, taken by its load: named by that run, not by the resume that reused it.
    restored_to = f"the snapshot taken before run {failed.run_id} (by its load; run {resumed.run_id} resumed it)"
    assert done.stdout.splitlines()[0] == f"Rolled back to {restored_to}"
    with instance_at(workdir) as instance:
        [record] = instance.fetch_materializations(dg.AssetKey("postgres_tables"), limit=1).records
    assert record.asset_materialization.description == f"rolled back to {restored_to}"
    assert record.asset_materialization.metadata["restored_to"].value == restored_to
    assert "users: 40 rows restored, content hash verified" in done.stdout
    assert tables_digest(db) == before
    statuses = [row[0] for row in db.execute("SELECT status FROM migration_logs ORDER BY start_time")]
    assert statuses == ["success", "failed", "rolled_back"]  # exactly the resumed migration is undone


def test_the_rollback_question_for_a_resumed_migration_names_the_snapshot_it_restores(workdir, database_url, db):
    """The resumed load took no snapshot: the question names the folder of the one restored (its failed run's,
    when that run took it) and not the resumed run's folder, and a yes restores exactly that snapshot."""
    failed_on_a_32_bit_column(workdir, database_url, db)
    db.execute(ALTER)
    before = tables_digest(db)
    assert faceit_etl(workdir, database_url, "migrate", "--resume").returncode == 0
    with instance_at(workdir) as instance:
        resumed, failed = migrate_runs(instance)[:2]
    taken = json.loads((workdir / "backups" / failed.run_id / "manifest.json").read_text())["taken_at"]
    with rollback_question(workdir, database_url) as (said, yes):
        code, answer = yes()

    assert (f"  to the snapshot {workdir / 'backups' / failed.run_id} (taken {taken} by the load of run {failed.run_id}, "
            f"which run {resumed.run_id} resumed),\n") in said.replace("\r\n", "\n")
    assert "undoing migration " in said and resumed.run_id in said.split("undoing", 1)[1]
    assert str(workdir / "backups" / resumed.run_id) not in said
    assert code == 0, answer
    assert [line for line in answer.splitlines() if line.startswith("Rolled back")] == [
        f"Rolled back to the snapshot taken before run {failed.run_id} (by its load; run {resumed.run_id} resumed it)"]
    assert tables_digest(db) == before
    statuses = [row[0] for row in db.execute("SELECT status FROM migration_logs ORDER BY start_time")]
    assert statuses == ["success", "failed", "rolled_back"]


# ------------------------------------------------------------------------- refusals


def refused(workdir: Path, database_url: str, db, failed_run_id: str) -> str:
    before = tables_digest(db)
    done = faceit_etl(workdir, database_url, "migrate", "--resume")
    assert done.returncode == 2, done.stdout + done.stderr
    assert tables_digest(db) == before
    prefix = f"resume of run {failed_run_id} refused, nothing was written: "
    line = next(line for line in done.stdout.splitlines() if line.startswith(prefix))
    return line.removeprefix(prefix)


def test_a_resume_is_refused_when_the_source_file_changed(workdir, database_url, db):
    source, users = failed_on_a_32_bit_column(workdir, database_url, db)
    db.execute(ALTER)
    write_json(source, {"users": users[:-1]})
    with instance_at(workdir) as instance:
        failed = migrate_runs(instance)[0]

    message = refused(workdir, database_url, db, failed.run_id)

    assert message.startswith(f"{source}: the source file changed since the failed run backed it up (sha256 ")
    assert message.endswith("now); resuming it would not load what a new run loads; start a new run instead")


def test_a_resume_is_refused_when_its_step_values_are_gone(workdir, database_url, db):
    failed_on_a_32_bit_column(workdir, database_url, db)
    db.execute(ALTER)
    with instance_at(workdir) as instance:
        failed = migrate_runs(instance)[0]
        shutil.rmtree(Path(instance.storage_directory()) / "runs" / failed.run_id)

    message = refused(workdir, database_url, db, failed.run_id)

    assert re.match(rf"the value of (source_backup|validated_frame|mapped_users|mapped_subscriptions) from run "
                    rf"{failed.run_id} is gone \(step values are kept for the newest 5 runs and the latest failed run of "
                    r"each target, until a later run of it succeeds\)", message), message
    assert message.endswith("so this run cannot be re-executed or resumed. Start a new run instead.")


@pytest.mark.parametrize("change", ["a row added", "a cell changed", "a row removed"])
def test_a_resume_is_refused_when_the_tables_changed_since_the_snapshot(workdir, database_url, db, change):
    failed_on_a_32_bit_column(workdir, database_url, db)
    db.execute(ALTER)
    with instance_at(workdir) as instance:
        failed = migrate_runs(instance)[0]
    statement, then_now = {
        "a row added": ("INSERT INTO users (id, user_id) VALUES (gen_random_uuid(), 424242)", "41 rows now, 40 then"),
        "a cell changed": ("UPDATE users SET faceit_nickname = 'by the bot' WHERE user_id = (SELECT min(user_id) FROM users)",
                           "40 rows now, 40 then, contents differ"),
        "a row removed": ("DELETE FROM users WHERE user_id = (SELECT min(user_id) FROM users)",  # its subscription too
                          "39 rows now, 40 then; user_subscriptions: 39 rows now, 40 then"),
    }[change]
    db.execute(statement)

    message = refused(workdir, database_url, db, failed.run_id)

    assert message == (
        f"the tables changed since run {failed.run_id} took its snapshot (users: {then_now}); resuming it would not "
        "load what a new run loads; start a new run instead"
    )


@pytest.mark.parametrize("origin", [{"name": "elsewhere"}, {"system_identifier": "12345"}])
def test_a_resume_is_refused_when_the_snapshot_was_taken_of_another_database(workdir, database_url, db, origin):
    """A database of the same name on another server (a restored dump, a replica promoted) is another
    database: its system identifier tells them apart, as much as the name does."""
    failed_on_a_32_bit_column(workdir, database_url, db)
    db.execute(ALTER)
    with instance_at(workdir) as instance:
        failed = migrate_runs(instance)[0]
    name, system = db.execute("SELECT current_database(), (pg_control_system()).system_identifier::text").fetchone()
    taken = {"name": name, "system_identifier": system} | origin
    edit_manifest(workdir / "backups" / failed.run_id, lambda m: m["target"].update(database=taken))

    message = refused(workdir, database_url, db, failed.run_id)

    assert message == (
        f"run {failed.run_id} loaded into database {taken['name']!r} (system {taken['system_identifier']}), not into "
        "this one; resuming it would not load what a new run loads; start a new run instead"
    )


def test_migrate_resume_takes_no_file_or_settings(workdir, database_url, db):
    done = faceit_etl(workdir, database_url, "migrate", "data.json", "--resume", "--truncate")
    assert done.returncode == 2
    assert done.stdout.strip() == (
        "faceit-etl: --resume takes no JSON_FILE or --truncate: a resume reuses the failed run's file and settings; "
        "start a new run to change them"
    )
    nothing = faceit_etl(workdir, database_url, "migrate", "--resume")
    assert nothing.returncode == 2
    assert "resume refused, nothing was written: no failed migration of " in nothing.stdout


# ------------------------------------------------------------------------- retention


def make_settings(source: Path, tmp_path: Path, **overrides) -> MigrationSettings:
    return MigrationSettings(source_path=str(source), backup_dir=str(tmp_path / "backups"), **overrides)


def job_run(instance, settings, **options):
    """migrate_job in this process; its target is the `postgres` resource, from DATABASE_URL (set by the test)."""
    config = settings.model_dump(include={"source_path", "backup_dir", "target_schema"})
    return dg.execute_job(dg.reconstructable(get_migrate_job), instance=instance, raise_on_error=False,
                          run_config={"resources": {"migration_settings": {"config": config}}}, **options)


def test_step_values_are_kept_for_the_latest_failed_run_of_each_target_until_superseded(
    database_url, db, tmp_path, monkeypatch
):
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setattr(io, "KEEP_RUNS", 1)  # the runs execute in this process
    small, big = small_and_big()
    other = make_settings(write_json(tmp_path / "other.json", {"users": small[:5]}), tmp_path,
                          target_schema="other")
    with dg.instance_for_test() as instance:
        kept = lambda: {p.name for p in (Path(instance.storage_directory()) / "runs").iterdir()}  # noqa: E731
        assert job_run(instance, make_settings(write_json(tmp_path / "s.json", {"users": small}), tmp_path)).success
        db.execute("ALTER TABLE users ALTER COLUMN user_id TYPE integer")
        settings = make_settings(write_json(tmp_path / "b.json", {"users": small + big}), tmp_path)
        earlier_failure = job_run(instance, settings)
        failed = job_run(instance, settings)
        assert not earlier_failure.success and not failed.success
        first_other = job_run(instance, other)
        second_other = job_run(instance, other)
        assert first_other.success and second_other.success
        # Another target's runs come and go; of its target's two failures the latest stays, the one a resume reads.
        assert kept() == {failed.run_id, second_other.run_id}

        db.execute(ALTER)
        resumed = job_run(instance, settings, reexecution_options=dg.ReexecutionOptions.from_failure(failed.run_id, instance))
        assert resumed.success
        assert db.execute("SELECT count(*) FROM users").fetchone()[0] == 100
        third_other = job_run(instance, other)
        # Superseded by its successful resume: nothing of it is kept beyond the newest run.
        assert kept() == {third_other.run_id}


def test_step_values_of_a_run_still_going_are_kept_however_many_runs_start_after_it(database_url, db, tmp_path, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setattr(io, "KEEP_RUNS", 1)  # the runs execute in this process
    settings = make_settings(write_json(tmp_path / "a.json", {"users": small_and_big()[0][:5]}), tmp_path)
    with dg.instance_for_test() as instance:
        runs = Path(instance.storage_directory()) / "runs"
        older = {}
        for status in (dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.SUCCESS):  # one still going, one that ended
            run = instance.add_run(dg.DagsterRun(job_name="migrate_job", run_id=str(uuid.uuid4()), status=status))
            (runs / run.run_id).mkdir(parents=True)
            (runs / run.run_id / "mapped_users").write_text("a value its next step reads")
            os.utime(runs / run.run_id, (1, 1))  # older than any run below
            older[status] = run.run_id

        first, second = job_run(instance, settings), job_run(instance, settings)

        assert first.success and second.success
        assert {p.name for p in runs.iterdir()} == {older[dg.DagsterRunStatus.STARTED], second.run_id}
        assert (runs / older[dg.DagsterRunStatus.STARTED] / "mapped_users").read_text() == "a value its next step reads"


def test_re_executing_the_load_of_a_successful_run_is_no_resume(database_url, db, tmp_path, monkeypatch):
    """Its parent committed, so the parent's snapshot is no longer the tables' state: the load
    snapshots as any run's does instead of being refused for tables that run itself changed."""
    monkeypatch.setenv("DATABASE_URL", database_url)
    small, big = small_and_big()
    settings = make_settings(write_json(tmp_path / "a.json", {"users": small}), tmp_path)
    with dg.instance_for_test() as instance:
        first = job_run(instance, settings)
        assert first.success
        again = job_run(instance, settings, reexecution_options=dg.ReexecutionOptions(
            parent_run_id=first.run_id, step_selection=["postgres_tables"]))

        assert again.success, [e.step_failure_data.error.message for e in again.get_step_failure_events()]
        target = json.loads((tmp_path / "backups" / again.run_id / "manifest.json").read_text())["target"]
        assert (target["run_id"], target["unchanged_since_run"]) == (again.run_id, first.run_id)
        assert "snapshot_folder" not in target


@pytest.mark.parametrize("stopped", ["a dry run", "rejected entries"])
def test_a_run_whose_load_never_started_is_refused_by_name_in_words(workdir, database_url, db, stopped):
    """A dry run writes nothing and records no target; a run stopped by rejects never reached the load:
    named with --resume, each is refused in a sentence (it once crashed with a run's repr)."""
    small, big = small_and_big()
    assert faceit_etl(workdir, database_url, "migrate", str(write_json(workdir / "small.json", {"users": small}))).returncode == 0
    if stopped == "a dry run":
        db.execute("ALTER TABLE users ALTER COLUMN user_id TYPE integer")
        args = ["migrate", "--dry-run", str(write_json(workdir / "data.json", {"users": small + big}))]
    else:
        args = ["migrate", str(write_json(workdir / "data.json", {"users": [*small, {"user_id": "x"}]}))]
    assert faceit_etl(workdir, database_url, *args).returncode != 0
    with instance_at(workdir) as instance:
        failed = migrate_runs(instance)[0]
    before = tables_digest(db)

    done = faceit_etl(workdir, database_url, "migrate", "--resume", failed.run_id)

    assert done.returncode == 2, done.stdout + done.stderr
    assert tables_digest(db) == before
    assert (f"resume refused, nothing was written: run {failed.run_id} never started its load (it stopped before the "
            "load, or was a dry run, which writes nothing to resume); resuming it would not load what a new run loads; "
            "start a new run instead") in done.stdout, done.stdout


def test_a_failed_dry_run_says_it_was_one_and_offers_no_resume(workdir, database_url, db):
    """A dry run counts for no resume (the resume refuses it), so its failure must not offer one."""
    small, big = small_and_big()
    assert faceit_etl(workdir, database_url, "migrate", str(write_json(workdir / "small.json", {"users": small}))).returncode == 0
    db.execute("ALTER TABLE users ALTER COLUMN user_id TYPE integer")

    failed = faceit_etl(workdir, database_url, "migrate", "--dry-run", str(write_json(workdir / "data.json", {"users": small + big})))

    assert failed.returncode == 1, failed.stdout + failed.stderr
    with instance_at(workdir) as instance:
        run = migrate_runs(instance)[0]
    lines = failed.stdout.splitlines()
    assert f"Migration run {run.run_id} FAILED (dry run)" in lines
    assert "  dry run: it stopped before its end; the database is unchanged" in lines
    assert f"Nothing was written. Widen the columns, then run again (this dry run cannot be resumed):\n  {ALTER}" in failed.stdout
    assert "resume" not in failed.stdout.replace("cannot be resumed", "")
