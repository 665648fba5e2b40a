"""The Python API, called as a script or the bot's asyncio code calls it: real files, the real database,
real Dagster runs on the folder's instance (the CLI's), every verb sync and async."""

from __future__ import annotations

import ast
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

import dagster as dg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import faceit_etl
from faceit_etl import DataMigration, DataValidator, MigrationError
from faceit_etl.api import Reject
from faceit_etl.backups import read_manifest, sha256_of
from faceit_etl.validation.report import WHAT_TO_DO
from faceit_etl.errors import (
    DatabaseOperationError,
    DatabaseUnavailableError,
    MappingError,
    ResumeRefusedError,
    RollbackRefusedError,
    SettingsInvalid,
    SourceFileError,
    ValidationError,
)
from faceit_etl_tests.conftest import BOT_PASSWORD, FLAT_SAMPLE, NESTED_SAMPLE, SAMPLES, write_json
from faceit_etl_tests.test_cli import instance_at, tables_digest, workdir  # noqa: F401 (workdir: a fixture)

README = Path(__file__).resolve().parent.parent / "README.md"
COUNTS = ("inserted", "updated", "unchanged", "kept_absent", "kept_rejected", "deleted")


@pytest.fixture
def here(workdir, database_url, monkeypatch):
    """A user's project folder with its own instance, the target in DATABASE_URL, as a script runs."""
    monkeypatch.chdir(workdir)
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("MIGRATION_BACKUP_DIR", str(workdir / "backups"))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    return workdir


def counts(**given: int) -> dict[str, int]:
    return {name: given.get(name, 0) for name in COUNTS}


def sample_users(path: Path) -> list[dict]:
    return json.loads(path.read_text(encoding="utf-8"))["users"]


def table_users(db) -> list[tuple]:
    return db.execute("SELECT user_id, faceit_nickname FROM users ORDER BY user_id").fetchall()


def with_a_bad_entry(folder: Path) -> Path:
    users = sample_users(FLAT_SAMPLE)[:3]
    users[1]["user_id"] = "abc"
    return write_json(folder / "bad.json", {"users": users})


# ---------------------------------------------------------------- migrate


def test_migrate_returns_the_runs_counts_checks_and_backup_and_runs_the_clis_job(here, db):
    result = faceit_etl.migrate(NESTED_SAMPLE)

    assert (result.success, result.errors, result.rejects) == (True, [], [])
    assert (result.input_entries, result.accepted_entries, result.rejected_entries) == (25, 25, 0)
    assert result.tables == {"users": counts(inserted=25), "user_subscriptions": counts(inserted=25)}
    assert result.migrated_users == 25
    verdicts = {(c.asset, c.name): (c.passed, c.severity) for c in result.checks}
    assert verdicts[("postgres_tables", "content_matches")] == (True, "ERROR")
    assert verdicts[("validated_frame", "no_rejected_entries")] == (True, "WARN")
    expected = sorted((u["user_id"], u["faceit_nickname"]) for u in sample_users(NESTED_SAMPLE))
    assert table_users(db) == expected
    assert read_manifest(result.backup_path)["run_id"] == result.run_id
    with instance_at(here) as instance:
        run = instance.get_run_by_id(result.run_id)
    assert (run.job_name, run.status, run.tags["faceit_etl/started_by"]) == ("migrate_job", dg.DagsterRunStatus.SUCCESS, "api")
    summary = result.get_summary()
    assert json.loads(json.dumps(summary)) == summary
    assert (summary["success"], summary["migrated_users"], summary["run_id"]) == (True, 25, result.run_id)
    assert summary["tables"]["users"] == counts(inserted=25)

    again = faceit_etl.migrate(NESTED_SAMPLE)
    assert again.tables["users"] == counts(unchanged=25)
    assert (again.reused_validation, again.migrated_users) == (True, 25)


def test_a_failed_run_returns_success_false_with_every_reject_and_writes_nothing(here, db):
    result = faceit_etl.migrate(with_a_bad_entry(here))

    assert result.success is False
    assert result.rejects == [Reject(2, None, "user_id", 'expected a whole number, got "abc"', '"abc"')]
    assert (result.input_entries, result.accepted_entries, result.rejected_entries) == (3, 2, 1)
    assert result.validation_failed and result.migrated_users == 0
    assert [(c.name, c.passed, c.severity) for c in result.failed_checks] == [("no_rejected_entries", False, "ERROR")]
    assert result.errors == [
        "validated_frame_no_rejected_entries: 1 of 3 entries rejected, more than max_rejects 0 allows; nothing was "
        'written. entry 2 (no valid user_id): user_id: expected a whole number, got "abc". ' + WHAT_TO_DO + "."
    ]
    assert db.execute("SELECT to_regclass('users')").fetchone() == (None,)

    forced = faceit_etl.migrate(here / "bad.json", force=True)
    assert (forced.success, forced.migrated_users, len(forced.rejects)) == (True, 2, 1)
    assert [u for u, _ in table_users(db)] == sorted(u["user_id"] for i, u in enumerate(sample_users(FLAT_SAMPLE)[:3]) if i != 1)


def test_async_migrate_never_blocks_the_event_loop(here, db):
    async def scenario():
        ticks, stop = [], asyncio.Event()

        async def ticker():
            while not stop.is_set():
                ticks.append(time.monotonic())
                await asyncio.sleep(0.01)

        task = asyncio.create_task(ticker())
        await asyncio.sleep(0)  # the ticker's first tick
        started = time.monotonic()
        result = await DataMigration(json_file_path=str(FLAT_SAMPLE), batch_size=100).migrate(truncate_tables=True)
        finished = time.monotonic()
        stop.set()
        await task
        return result, [started, *(t for t in ticks if started < t < finished), finished]

    result, moments = asyncio.run(scenario())

    assert result.success and result.migrated_users == 25
    assert len(table_users(db)) == 25
    # A blocked loop ticks not once between start and finish: one gap as long as the whole migration.
    longest_gap, whole = max(b - a for a, b in zip(moments, moments[1:])), moments[-1] - moments[0]
    assert len(moments) > 12 and longest_gap < whole / 4


def test_validate_before_starts_no_run_when_an_entry_is_rejected(here, db):
    async def scenario():
        migration = DataMigration(json_file_path=str(with_a_bad_entry(here)), validate_before=True,
                                  validate_after=True, force=True)
        return await migration.migrate()

    result = asyncio.run(scenario())

    assert (result.success, result.run_id, result.verb) == (False, None, "validate")
    assert result.errors == ["validate_before: 1 of 3 entries rejected; no migration was started",
                             'entry 2 (no valid user_id): user_id: expected a whole number, got "abc"']
    with instance_at(here) as instance:
        assert instance.get_runs() == []
    with pytest.raises(SettingsInvalid, match="validate_after cannot be turned off"):
        DataMigration(json_file_path=str(FLAT_SAMPLE), validate_after=False)


def test_a_database_url_argument_reaches_the_run_never_its_config_nor_this_process_environment(
    workdir, password_database_url, db, monkeypatch
):
    monkeypatch.chdir(workdir)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.setenv("MIGRATION_BACKUP_DIR", str(workdir / "backups"))

    result = faceit_etl.migrate(FLAT_SAMPLE, database_url=password_database_url)

    assert result.success, result.errors
    assert len(table_users(db)) == 25  # in the database the URL names, not an embedded one
    assert "DATABASE_URL" not in os.environ
    with instance_at(workdir) as instance:
        [run] = instance.get_runs(dg.RunsFilter(job_name="migrate_job"))
        stored = json.dumps(run.run_config) + json.dumps(run.tags)
    for secret in (BOT_PASSWORD, quote(BOT_PASSWORD, safe="")):
        assert secret not in stored
        assert secret not in json.dumps(result.get_summary())
    assert run.run_id == result.run_id and "database_url" not in stored

    status = faceit_etl.status(database_url=password_database_url)
    assert status.details["tables"]["users"] == 25


def test_a_script_that_is_not_guarded_by_main_runs_once_under_step_processes(here, db):
    """Step processes import the __main__ module of the process that runs the job: a caller's script
    without `if __name__ == "__main__"` would start again in each, migrating again and again."""
    starts = here / "starts.txt"
    script = here / "script.py"
    script.write_text(
        "import faceit_etl\n"
        f"open({str(starts)!r}, 'a').write('started\\n')\n"
        f"result = faceit_etl.migrate({str(FLAT_SAMPLE)!r}, max_concurrent=2)\n"
        "print(result.success, result.migrated_users)\n"
    )

    done = subprocess.run([sys.executable, str(script)], cwd=here, capture_output=True, text=True, timeout=600)

    assert done.stdout == "True 25\n", done.stdout + done.stderr[-3000:]
    assert starts.read_text() == "started\n"
    assert len(table_users(db)) == 25


# ---------------------------------------------------------------- validate


def test_validate_and_the_async_validator_give_every_reject_with_its_reason(here):
    bad = with_a_bad_entry(here)

    result = faceit_etl.validate(bad)
    validator = DataValidator(str(bad))
    asyncio.run(validator.load_json_data())
    report = validator.validate_json_structure()
    judged_async = asyncio.run(validator.validate())

    for judged in (result, report, judged_async):
        assert (judged.is_valid, judged.input_entries, judged.accepted_entries) == (False, 3, 2)
        assert judged.rejects == [Reject(2, None, "user_id", 'expected a whole number, got "abc"', '"abc"')]
        assert judged.errors == ['entry 2 (no valid user_id): user_id: expected a whole number, got "abc"']
        assert '| 2 |  | user_id | "abc" | expected a whole number, got "abc" |' in judged.report
    good = faceit_etl.validate(FLAT_SAMPLE)
    assert (good.is_valid, good.errors, good.accepted_entries) == (True, [], 25)
    with instance_at(here) as instance:
        assert instance.get_runs() == []  # validating loads nothing and starts no run


@pytest.mark.parametrize("how", ["unreachable", "wrong password"])
def test_validate_with_the_database_raises_when_it_cannot_reach_it_naming_it_without_the_password(
    here, password_database_url, how
):
    if how == "unreachable":
        url, named = "postgresql://bot:Validate-Secret-7@127.0.0.1:1/faraway", "127.0.0.1:1/faraway"
    else:
        url = password_database_url.replace(quote(BOT_PASSWORD, safe=""), "Validate-Secret-7")
        named = "/" + password_database_url.rsplit("/", 1)[1].split("?")[0]

    with pytest.raises(DatabaseUnavailableError) as raised:
        faceit_etl.validate(FLAT_SAMPLE, database=True, database_url=url)

    assert named in str(raised.value) and "Validate-Secret-7" not in str(raised.value)
    assert ("authentication failed" in str(raised.value)) == (how == "wrong password")


@settings(max_examples=25, deadline=None)
@given(st.sets(st.integers(min_value=0, max_value=7), max_size=8))
def test_every_surface_counts_a_rejected_entry_from_1(bad):
    """The API's rejects, its error lines and the validation report name the same entry: the first is 1."""
    users = sample_users(FLAT_SAMPLE)[:8]
    for index in bad:
        users[index]["user_id"] = "abc"
    with tempfile.TemporaryDirectory() as folder:
        result = faceit_etl.validate(write_json(Path(folder) / "data.json", {"users": users}))

    numbers = sorted(index + 1 for index in bad)
    assert [r.entry for r in result.rejects] == numbers
    assert [int(re.match(r"entry (\d+) ", line)[1]) for line in result.errors] == numbers
    assert [int(n) for n in re.findall(r"^\| (\d+) \|", result.report, re.M)] == numbers


# ---------------------------------------------------------------- rollback


def test_rollback_restores_a_runs_snapshot_sync_and_async(here, db):
    first = faceit_etl.migrate(FLAT_SAMPLE)
    after_first = tables_digest(db)
    users = sample_users(FLAT_SAMPLE)
    users[0]["faceit_nickname"] = "renamed"
    second = faceit_etl.migrate(write_json(here / "changed.json", {"users": users}))
    assert second.tables["users"] == counts(updated=1, unchanged=24)

    undone = faceit_etl.rollback(second.backup_path)

    assert undone.success, undone.errors
    assert undone.details["rolled_back_run"] == second.run_id
    assert {n: d["rows"] for n, d in undone.details["restored"].items()} == {"users": 25, "user_subscriptions": 25}
    assert tables_digest(db) == after_first

    async def undo_first():
        return await DataMigration(json_file_path=str(FLAT_SAMPLE)).rollback_migration(first.backup_path)

    dropped = asyncio.run(undo_first())
    assert (dropped.success, dropped.details["dropped_tables"]) == (True, ["users", "user_subscriptions"])
    assert db.execute("SELECT to_regclass('users'), to_regclass('user_subscriptions')").fetchone() == (None, None)
    with instance_at(here) as instance:
        runs = instance.get_runs(dg.RunsFilter(job_name="rollback_job"))
    assert [r.tags["faceit_etl/started_by"] for r in runs] == ["api", "api"]


def test_a_refused_rollback_returns_refused_and_says_why(here, db):
    faceit_etl.migrate(FLAT_SAMPLE)
    missing = here / "backups" / "no-such-run"

    result = faceit_etl.rollback(missing)

    assert (result.success, result.refused) == (False, True)
    assert len(result.errors) == 1 and str(missing) in result.errors[0]
    with pytest.raises(RollbackRefusedError) as raised:
        faceit_etl.api.rollback_candidate(missing)
    assert isinstance(raised.value, MigrationError) and str(missing) in str(raised.value)
    assert len(table_users(db)) == 25


def test_a_migration_rolled_back_already_is_refused_before_the_question_and_by_the_rollback(here, db):
    first = faceit_etl.migrate(FLAT_SAMPLE)
    assert faceit_etl.rollback().success
    run_id = first.run_id

    with pytest.raises(RollbackRefusedError) as raised:
        faceit_etl.api.rollback_candidate(migration_id=run_id)
    result = faceit_etl.rollback(migration_id=run_id)

    assert f"(run {run_id}) was rolled back already at " in str(raised.value)
    assert (result.success, result.refused) == (False, True)
    assert len(result.errors) == 1 and f"(run {run_id}) was rolled back already at " in result.errors[0]
    assert db.execute("SELECT to_regclass('users'), to_regclass('user_subscriptions')").fetchone() == (None, None)


NOTHING = ", so there is nothing to roll back"


@pytest.mark.parametrize(
    ("run", "what"),
    [
        (lambda here: faceit_etl.migrate(FLAT_SAMPLE, dry_run=True), "was a dry run: it wrote nothing" + NOTHING),
        (lambda here: faceit_etl.migrate(with_a_bad_entry(here)),
         "failed before its load (its rejects, or a target it refused) and wrote nothing" + NOTHING),
        (lambda here: faceit_etl.migrate(NESTED_SAMPLE, backup_tables=False),
         "was made with --no-backup (backup_tables off), which takes none: cannot roll back to before it"),
    ],
    ids=["dry run", "stopped by rejects", "no backup"],
)
def test_rolling_back_a_run_without_a_snapshot_says_what_it_was_and_what_to_roll_back(here, db, run, what):
    committed = faceit_etl.migrate(FLAT_SAMPLE)
    logged = db.execute("SELECT id::text FROM migration_logs").fetchone()[0]
    later = run(here)
    before = tables_digest(db)

    result = faceit_etl.rollback(later.backup_path)

    assert (result.success, result.refused) == (False, True)
    instead = (
        "`faceit-etl status` lists the migrations that committed" if later.migrated_users  # it committed: the latest
        else f"The latest committed migration is {logged} (run {committed.run_id}): roll that one back instead"
    )
    assert result.errors == [
        f"{later.backup_path}: this backup holds no snapshot of the tables: run {later.run_id} {what}. {instead}"
    ]
    assert tables_digest(db) == before


# ---------------------------------------------------------------- status and backup


def test_status_sync_and_async_name_the_tables_the_migrations_and_the_runs(here, database_url, db):
    migrated = faceit_etl.migrate(FLAT_SAMPLE)

    now = faceit_etl.status()
    later = asyncio.run(DataMigration(json_file_path=str(FLAT_SAMPLE)).status())

    for result in (now, later):
        assert result.success and result.details["reachable"] is True
        assert result.details["tables"] == {"users": 25, "user_subscriptions": 25, "migration_logs": 1, "migration_rejects": 0}
        [logged] = result.details["migrations"]
        assert (logged["run_id"], logged["status"], logged["load"]["users"]["inserted"]) == (migrated.run_id, "success", 25)
        assert result.details["dagster_runs"] == [
            {"run_id": migrated.run_id, "job": "migrate_job", "status": "SUCCESS", "started_by": "api"}
        ]


def test_status_lists_every_run_the_api_made_against_its_database_rollbacks_too(here, db):
    migrated = faceit_etl.migrate(FLAT_SAMPLE)
    undone = faceit_etl.rollback(migrated.backup_path)
    refused = faceit_etl.rollback(here / "backups" / "no-such-run")
    assert (undone.success, refused.refused) == (True, True)

    runs = faceit_etl.status().details["dagster_runs"]

    assert [(r["run_id"], r["job"], r["status"]) for r in runs] == [
        (refused.run_id, "rollback_job", "FAILURE"),
        (undone.run_id, "rollback_job", "SUCCESS"),
        (migrated.run_id, "migrate_job", "SUCCESS"),
    ]
    assert faceit_etl.status(target_schema="elsewhere").details["dagster_runs"] == []


def test_status_of_an_unreachable_database_returns_its_error_without_the_password(here):
    result = faceit_etl.status(database_url="postgresql://bot:Status-Secret-7@127.0.0.1:1/faraway")

    assert (result.success, result.details["reachable"]) == (False, False)
    assert "127.0.0.1" in result.errors[0] and "faraway" in result.errors[0]
    assert "Status-Secret-7" not in json.dumps(result.get_summary())


def test_backup_sync_and_async_copy_the_file_and_snapshot_the_tables(here, db):
    faceit_etl.migrate(FLAT_SAMPLE)

    made = faceit_etl.backup(NESTED_SAMPLE, output_dir=here / "manual")
    made_async = asyncio.run(DataMigration(json_file_path=str(NESTED_SAMPLE)).backup(here / "manual"))

    assert made.backup_path != made_async.backup_path
    for result in (made, made_async):
        assert result.success and Path(result.backup_path).parent == here / "manual"
        assert result.details["sha256"] == sha256_of(NESTED_SAMPLE)
        assert result.details["tables"] == {"users": 25, "user_subscriptions": 25}
        assert read_manifest(result.backup_path)["target"]["tables"]["users"]["rows"] == 25


# ---------------------------------------------------------------- errors


def test_the_package_exports_the_verbs_even_after_its_modules_are_loaded():
    """`faceit_etl.backup` and `faceit_etl.rollback` are the API's functions, not modules of the same name
    that the pipeline's own imports would put in their place."""
    import faceit_etl.definitions  # noqa: F401 (loads every module of the pipeline)
    from faceit_etl import api

    for name in ("migrate", "validate", "resume", "rollback", "status", "backup"):
        assert getattr(faceit_etl, name) is getattr(api, name)
    from faceit_etl import backup, resume, rollback

    assert (backup, resume, rollback) == (api.backup, api.resume, api.rollback)


def environment_writes(source: str) -> list[int]:
    """Lines of `source` that change the process environment: os.environ[...] = / del, its mutating
    methods, os.putenv / os.unsetenv."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        targets = node.targets if isinstance(node, (ast.Assign, ast.Delete)) else [node.target] if isinstance(node, ast.AugAssign) else []
        for target in targets:
            if isinstance(target, ast.Subscript) and ast.unparse(target.value) == "os.environ":
                lines.append(node.lineno)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            owner, method = ast.unparse(node.func.value), node.func.attr
            if (owner == "os.environ" and method in ("update", "setdefault", "pop", "popitem", "clear")) or (
                owner == "os" and method in ("putenv", "unsetenv")
            ):
                lines.append(node.lineno)
    return lines


def test_nothing_in_the_package_writes_the_process_environment():
    """A database URL travels to a run in a child's environment, never by rewriting this process's."""
    assert environment_writes("import os\nos.environ['A'] = 'x'\nos.environ.update(B='y')\nos.putenv('C', 'z')\n") == [2, 3, 4]
    package = Path(faceit_etl.__file__).parent
    found = {str(path.relative_to(package)): environment_writes(path.read_text(encoding="utf-8"))
             for path in sorted(package.rglob("*.py"))}
    # The one write removes what pandera's import added: see the test below, which compares the environment.
    assert [name for name, lines in found.items() if lines] == ["validation/pandera_import.py"]
    assert len(found) > 40  # every module was read


@pytest.mark.db  # starts a process
def test_importing_the_package_and_running_verbs_leaves_the_callers_environment_as_it_was(here, database_url):
    """A library imported into the bot must not change the bot's environment (pandera, on import, sets
    SPARK_LOCAL_IP and PYARROW_IGNORE_TIMEZONE for pyspark)."""
    script = (
        "import json, os, sys\n"
        "before = dict(os.environ)\n"
        "import faceit_etl\n"
        f"judged = faceit_etl.validate({str(FLAT_SAMPLE)!r}, database=True)\n"
        f"migrated = faceit_etl.migrate({str(FLAT_SAMPLE)!r})\n"
        "after = dict(os.environ)\n"
        "print(json.dumps([judged.is_valid, migrated.success, 'pandera' in sys.modules,\n"
        "                  {k: [before.get(k), after.get(k)] for k in set(before) | set(after) if before.get(k) != after.get(k)}]))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("SPARK_LOCAL_IP", "PYARROW_IGNORE_TIMEZONE")}

    done = subprocess.run([sys.executable, "-c", script], cwd=here, env=env, capture_output=True, text=True, timeout=600)

    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.splitlines()[-1]) == [True, True, True, {}]


def test_a_checks_outcome_has_one_type_for_the_api_and_the_cli():
    from faceit_etl.cli import summary

    assert summary.Check is faceit_etl.api.Check
    assert not [name for name in vars(summary) if name.endswith("Outcome")]


def test_the_seeds_error_names_are_one_hierarchy():
    for name in ("ValidationError", "MappingError", "DatabaseOperationError"):
        assert issubclass(getattr(faceit_etl, name), faceit_etl.MigrationError)
    assert issubclass(DatabaseUnavailableError, DatabaseOperationError)
    assert issubclass(RollbackRefusedError, DatabaseOperationError)
    assert issubclass(SourceFileError, ValidationError)
    assert MappingError.__mro__[1] is MigrationError


def test_every_domain_error_is_caught_as_a_migration_error_with_its_message():
    from faceit_etl.backups import BackupError
    from faceit_etl.defs.resources import SettingsError
    from faceit_etl.errors import wrapped
    from faceit_etl.postgres.database import DatabaseUnavailable
    from faceit_etl.postgres.ddl import TargetError
    from faceit_etl.postgres.snapshot import SnapshotError
    from faceit_etl.restore import RollbackError, RollbackRefused
    from faceit_etl.source import SourceError

    for domain, ours in [(SourceError, SourceFileError), (BackupError, faceit_etl.errors.BackupFailed),
                         (SnapshotError, faceit_etl.errors.BackupFailed), (TargetError, faceit_etl.errors.TargetInvalid),
                         (DatabaseUnavailable, DatabaseUnavailableError), (RollbackError, faceit_etl.errors.RollbackFailed),
                         (RollbackRefused, RollbackRefusedError), (SettingsError, SettingsInvalid)]:
        error = domain("what went wrong, and where")
        mine = wrapped(error)
        assert type(mine) is ours and isinstance(mine, MigrationError)
        assert (str(mine), mine.__cause__) == ("what went wrong, and where", error)
    assert wrapped(KeyError("x")) is None


BOTH = "give backup_path or migration_id, not both: each chooses the snapshot to restore, and they may name different ones"


def test_the_rollback_step_refuses_a_snapshot_named_twice_before_reading_anything(tmp_path):
    """As the UI's launchpad gives them to rollback_job: refused before the database or the folder is read."""
    from faceit_etl.restore import RollbackRefused, find_backup

    with pytest.raises(RollbackRefused) as raised:
        find_backup(None, "public", tmp_path, backup_path=tmp_path, migration_id="run-1")
    assert str(raised.value) == BOTH


@pytest.mark.parametrize("named", [{"migration_id": ""}, {"migration_id": " \t"}, {"backup_path": " "}])
def test_a_blank_snapshot_name_is_refused_never_read_as_the_latest_migration(tmp_path, named):
    """An empty variable in a script (`--migration-id "$ID"`) names nothing: read as "not given" it rolled
    back the latest migration, which nobody asked for."""
    from faceit_etl.restore import RollbackRefused, find_backup

    with pytest.raises(RollbackRefused) as raised:
        find_backup(None, "public", tmp_path, **named)
    (name,) = named
    assert str(raised.value) == (f"{name} is empty or only white space, which names nothing: name a migration or a "
                                 "backup folder, or leave it out to roll back the latest migration")


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda tmp: faceit_etl.migrate(tmp / "absent.json"), SourceFileError, "absent.json: no such file"),
        (lambda tmp: faceit_etl.validate(tmp), SourceFileError, "is a folder, not the bot's data file"),
        (lambda tmp: faceit_etl.validate(write_json(tmp / "x.json", 5)), SourceFileError, "a number"),
        (lambda tmp: faceit_etl.migrate(FLAT_SAMPLE, batch_size=0), SettingsInvalid, "batch_size 0: input should be greater than 0"),
        (lambda tmp: faceit_etl.migrate(FLAT_SAMPLE, batch_sise=5), SettingsInvalid, "unknown setting 'batch_sise'"),
        (lambda tmp: faceit_etl.migrate(FLAT_SAMPLE, truncate=True, prune=True), SettingsInvalid, "truncate and prune cannot be combined"),
        (lambda tmp: faceit_etl.migrate(FLAT_SAMPLE, database_url="postgresql://x:Pw-9%zz@h/d"),
         faceit_etl.errors.InvalidDatabaseUrl,
         "the database URL (the database_url argument) is not a valid PostgreSQL connection string"),
        (lambda tmp: faceit_etl.status(database_url="postgresql://x:Pw-9@h/d?sslmode=bogus"),
         faceit_etl.errors.InvalidDatabaseUrl, "the database URL (the database_url argument) has an option libpq refuses"),
        (lambda tmp: faceit_etl.validate(FLAT_SAMPLE, database=True, database_url="postgresql://x:Pw-9%zz@h/d"),
         faceit_etl.errors.InvalidDatabaseUrl, "(the database_url argument) is not a valid"),
        (lambda tmp: asyncio.run(DataMigration(FLAT_SAMPLE, database_url="postgresql://x:Pw-9%zz@h/d").status()),
         faceit_etl.errors.InvalidDatabaseUrl, "(the database_url argument) is not a valid"),
        (lambda tmp: faceit_etl.rollback(tmp, "run-1"), SettingsInvalid, BOTH),
        (lambda tmp: faceit_etl.rollback(backup_path=tmp, migration_id="run-1", database_url="postgresql://x:Pw-9@h/d"),
         SettingsInvalid, BOTH),
        (lambda tmp: faceit_etl.api.rollback_candidate(tmp, "run-1"), SettingsInvalid, BOTH),
        (lambda tmp: asyncio.run(DataMigration(FLAT_SAMPLE).rollback_migration(tmp, "run-1")), SettingsInvalid, BOTH),
    ],
    ids=["missing file", "a folder", "not the bot's layout", "bad setting", "unknown setting", "conflicting settings", "bad url",
         "refused url option", "bad url to validate", "bad url to the async class", "rollback: snapshot named twice",
         "rollback elsewhere: snapshot named twice", "rollback candidate: snapshot named twice", "async rollback: snapshot named twice"],
)
def test_bad_arguments_raise_a_migration_error_naming_what_is_wrong(tmp_path, call, error, message):
    with pytest.raises(error) as raised:
        call(tmp_path)
    assert isinstance(raised.value, MigrationError)
    assert message in str(raised.value) and "Pw-9" not in str(raised.value)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: faceit_etl.migrate(None), "migrate: path None: expected text or a path, not NoneType (never converted)"),
        (lambda: faceit_etl.validate(123), "validate: path 123: expected text or a path, not int (never converted)"),
        (lambda: faceit_etl.migrate(FLAT_SAMPLE, dry_run="false"),
         "dry_run 'false': expected True or False, not str (never converted)"),
        (lambda: faceit_etl.migrate(FLAT_SAMPLE, batch_size="5"), "batch_size '5': expected a whole number, not str (never converted)"),
        (lambda: faceit_etl.migrate(FLAT_SAMPLE, max_concurrent="2"),
         "max_concurrent '2': expected a whole number, not str (never converted)"),
        (lambda: faceit_etl.migrate(FLAT_SAMPLE, log_level="LOUD"),
         "migrate: log_level 'LOUD': expected one of CRITICAL, ERROR, WARNING, INFO, DEBUG"),
        (lambda: faceit_etl.migrate(), "migrate: missing a required argument: 'path'"),
        (lambda: faceit_etl.validate(FLAT_SAMPLE, database="yes"),
         "validate: database 'yes': expected True or False, not str (never converted)"),
        (lambda: faceit_etl.validate(FLAT_SAMPLE, databse=True), "unknown setting 'databse' (known: source_path, batch_size, "
         "backup_dir, backup_tables, force, max_rejects, truncate, prune, max_prune_fraction, dry_run, source_timezone, "
         "target_schema, max_concurrent)"),
        (lambda: faceit_etl.rollback(discard_later_changes="yes"),
         "rollback: discard_later_changes 'yes': expected True or False, not str (never converted)"),
        (lambda: faceit_etl.resume(run_id=5), "resume: run_id 5: expected text or None, not int (never converted)"),
        (lambda: faceit_etl.DataValidator("data.json", strict=True), "DataValidator: got an unexpected keyword argument 'strict'"),
        (lambda: faceit_etl.DataMigration(FLAT_SAMPLE, batch_size="5"),
         "DataMigration: batch_size '5': expected a whole number or None, not str (never converted)"),
        (lambda: asyncio.run(faceit_etl.DataMigration(FLAT_SAMPLE).migrate(truncate_tables="yes")),
         "DataMigration.migrate: truncate_tables 'yes': expected True or False or None, not str (never converted)"),
        (lambda: asyncio.run(faceit_etl.DataMigration(FLAT_SAMPLE).migrate(dry_run="false")),
         "DataMigration.migrate: dry_run 'false': expected True or False or None, not str (never converted)"),
    ],
    ids=["migrate(None)", "validate(123)", "dry_run text", "batch_size text", "max_concurrent text", "log level",
         "no path", "validate database text", "misspelt keyword", "rollback flag text", "run id number",
         "unknown keyword to the validator", "batch_size text to the class", "async flag text", "async dry_run text"],
)
def test_a_wrong_argument_is_a_settings_error_naming_it_never_converted_nor_a_dagster_error(here, db, call, message):
    with pytest.raises(MigrationError) as raised:
        call()
    assert (type(raised.value), str(raised.value)) == (SettingsInvalid, message)
    assert db.execute("SELECT to_regclass('users'), to_regclass('migration_logs')").fetchone() == (None, None)
    with instance_at(here) as instance:
        assert instance.get_runs() == []  # refused before any run


# ---------------------------------------------------------------- the README's examples, as printed


def readme_api_examples() -> list[str]:
    section = README.read_text(encoding="utf-8").split("\n## Python API\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def test_the_readmes_api_examples_run_as_printed(here, db):
    shutil.copytree(SAMPLES, here / "samples")
    examples = readme_api_examples()
    assert len(examples) == 2
    assert "from faceit_etl import DataMigration, DataValidator" in examples[0]
    names: dict = {}

    async def run_all():
        for example in examples:
            code = compile(example, str(README), "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
            pending = eval(code, names)  # noqa: S307 (the README's own examples)
            if pending is not None:
                await pending

    asyncio.run(run_all())

    result, report = names["result"], names["report"]
    assert (result.success, result.migrated_users, result.errors) == (True, 25, [])
    assert result.get_summary()["tables"]["users"]["inserted"] == 25
    assert db.execute("SELECT to_regclass('users')").fetchone() == (None,)  # the rollback dropped what the run made
    assert (report.is_valid, report.errors, report.accepted_entries) == (True, [], 25)


# ---------------------------------------------------------------- resume


def failed_on_a_32_bit_user_id(db) -> list[dict]:
    """A baseline of small ids, `users.user_id` made 32-bit as the bot's Alembic makes it, then a file of
    64-bit ids: that load fails, nothing written. The users of the failed file."""
    from faceit_etl_tests.test_resume import small_and_big

    small, big = small_and_big()
    assert faceit_etl.migrate(write_json(Path("small.json"), {"users": small})).success
    db.execute("ALTER TABLE users ALTER COLUMN user_id TYPE integer")
    failed = faceit_etl.migrate(write_json(Path("data.json"), {"users": small + big}))
    assert not failed.success and any("ALTER COLUMN" in e for e in failed.errors), failed.errors
    assert db.execute("SELECT count(*) FROM users").fetchone()[0] == len(small)
    return small + big


def load_only(run_id: str) -> list[str]:
    from faceit_etl_tests.test_resume import steps_run

    from faceit_etl.api import open_instance

    with open_instance() as instance:
        return [s for s in steps_run(instance, run_id) if not s.startswith("asset_check_")]


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_resume_after_the_alter_runs_only_the_load_and_its_rows_are_the_files(here, db, mode):
    from faceit_etl_tests.test_resume import ALTER

    users = failed_on_a_32_bit_user_id(db)
    failed_run = faceit_etl.status().details["dagster_runs"][0]
    assert failed_run["status"] == "FAILURE"
    db.execute(ALTER)

    if mode == "sync":
        result = faceit_etl.resume()
    else:
        result = asyncio.run(DataMigration("data.json").resume_migration())

    assert (result.verb, result.success, result.refused, result.errors) == ("resume", True, False, [])
    assert result.details["resumed_run"] == failed_run["run_id"]
    assert result.tables["users"] == counts(inserted=60, unchanged=40)
    assert all(c.passed for c in result.checks if c.severity == "ERROR")
    assert load_only(result.run_id) == ["postgres_tables"]
    assert table_users(db) == sorted((u["user_id"], u["faceit_nickname"]) for u in users)
    statuses = dict(db.execute("SELECT metadata->>'run_id', status FROM migration_logs").fetchall())
    assert (statuses[failed_run["run_id"]], statuses[result.run_id]) == ("failed", "success")


def test_resume_refusals_raise_before_a_run_or_return_refused_from_the_load(here, db):
    from faceit_etl_tests.test_resume import ALTER

    with pytest.raises(ResumeRefusedError, match=r"^no failed migration of .*/public to resume"):
        faceit_etl.resume()
    with pytest.raises(SettingsInvalid, match=r"^resume takes no truncate: a resume reuses the failed run's file"):
        faceit_etl.resume(truncate=True)

    failed_on_a_32_bit_user_id(db)
    db.execute(ALTER)
    db.execute("DELETE FROM users WHERE user_id = (SELECT min(user_id) FROM users)")  # a change since the snapshot
    before = tables_digest(db)
    result = asyncio.run(DataMigration("data.json").resume_migration())

    assert (result.success, result.refused) == (False, True)
    assert len(result.errors) == 1 and result.errors[0].startswith("the tables changed since run ")
    assert result.errors[0].endswith("start a new run instead")
    assert tables_digest(db) == before
