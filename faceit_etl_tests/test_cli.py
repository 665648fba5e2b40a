"""The faceit-etl command line, run as a user runs it: a subprocess on real files and a real database."""

from __future__ import annotations

import gzip
import json
import os
import pty
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest

from faceit_etl import api as faceit_etl_api
from faceit_etl.cli.main import confirmed
from faceit_etl.generate import generate_users
from faceit_etl.postgres.snapshot import digest_table
from faceit_etl_tests.conftest import FLAT_SAMPLE, NESTED_SAMPLE, write_json

CLI = str(Path(sys.executable).parent / "faceit-etl")


@pytest.fixture
def workdir(tmp_path):
    """A folder like a user's project: its own Dagster instance and migration.log."""
    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    return tmp_path


def faceit_etl(workdir: Path, database_url: str, *args: str, stdin: str | None = None,
               env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "DATABASE_URL": database_url, "MIGRATION_BACKUP_DIR": str(workdir / "backups"), **(env or {})}
    env.pop("DAGSTER_HOME", None)
    return subprocess.run(
        [CLI, *args], cwd=workdir, env=env, capture_output=True, text=True, timeout=300,
        input=stdin, stdin=None if stdin is not None else subprocess.DEVNULL,
    )


def instance_at(folder: Path) -> dg.DagsterInstance:
    return dg.DagsterInstance.from_config(str(folder))


def tables_digest(db) -> dict:
    return {name: digest_table(db, "public", name) for name in ("users", "user_subscriptions")}


def test_migrate_prints_the_outcome_logs_it_and_the_run_is_in_the_instance(workdir, database_url, db):
    done = faceit_etl(workdir, database_url, "migrate", str(NESTED_SAMPLE))

    assert done.returncode == 0, done.stdout + done.stderr
    assert "entries: 25 read, 25 accepted, 0 rejected" in done.stdout
    assert "users: 25 inserted, 0 updated, 0 unchanged" in done.stdout
    assert "check postgres_tables.content_matches: passed" in done.stdout
    assert "load into PostgreSQL done" in done.stdout  # plain progress lines off a terminal
    assert db.execute("SELECT count(*) FROM users").fetchone()[0] == 25
    log = (workdir / "migration.log").read_text()
    assert "users: 25 inserted" in log
    with instance_at(workdir) as instance:
        runs = instance.get_runs(dg.RunsFilter(job_name="migrate_job"))
    assert [r.status for r in runs] == [dg.DagsterRunStatus.SUCCESS]
    assert runs[0].tags["faceit_etl/started_by"] == "cli"
    assert "validation: the outcome of an earlier run" not in done.stdout

    again = faceit_etl(workdir, database_url, "migrate", str(NESTED_SAMPLE))
    assert again.returncode == 0, again.stdout + again.stderr
    assert "users: 0 inserted, 0 updated, 25 unchanged" in again.stdout
    assert "validation: the outcome of an earlier run of the same file, time zone and code" in again.stdout
    assert f"load: the tables hold what run {runs[0].run_id} loaded from the same input" in again.stdout


@pytest.mark.parametrize("how", ["flags", "environment"])
def test_prune_with_truncate_is_a_usage_error_before_anything_runs(workdir, database_url, db, how):
    source = write_json(workdir / "data.json", json.loads(FLAT_SAMPLE.read_text()))
    flags = ["--prune", "--truncate"] if how == "flags" else []
    env = {"MIGRATION_TRUNCATE": "true", "MIGRATION_PRUNE": "true"} if how == "environment" else {}

    done = faceit_etl(workdir, database_url, "migrate", str(source), *flags, env=env)

    assert done.returncode == 2
    assert "truncate and prune cannot be combined: truncate replaces every row, prune deletes only the users " \
           "the file lacks, within max_prune_fraction; choose one" in done.stdout + done.stderr
    assert db.execute("SELECT to_regclass('users'), to_regclass('migration_logs')").fetchone() == (None, None)


def test_rejects_exit_2_and_load_nothing_unless_forced(workdir, database_url, db):
    users = json.loads(FLAT_SAMPLE.read_text())["users"][:4] + [{"user_id": -5}]
    source = write_json(workdir / "data.json", {"users": users})

    refused = faceit_etl(workdir, database_url, "migrate", str(source))
    assert refused.returncode == 2
    assert "1 of 5 entries rejected" in refused.stdout
    # Said once: as the error that stopped the run, not again under its check.
    assert refused.stdout.count("entry 5 (no valid user_id): user_id: must be a positive Telegram id") == 1
    assert refused.stdout.count("1 of 5 entries rejected") == 1
    assert db.execute("SELECT to_regclass('users')").fetchone()[0] is None

    forced = faceit_etl(workdir, database_url, "migrate", str(source), "--force")
    assert forced.returncode == 0
    assert db.execute("SELECT count(*) FROM users").fetchone()[0] == 4
    assert db.execute("SELECT source_index, field FROM migration_rejects").fetchall() == [(4, "user_id")]


def test_validate_with_the_database_fails_exit_1_when_it_cannot_reach_it(workdir, database_url):
    done = faceit_etl(workdir, database_url, "--database-url", "postgresql://bot:Cli-Secret-7@127.0.0.1:1/faraway",
                      "validate", str(FLAT_SAMPLE), "--database")

    assert done.returncode == 1, done.stdout + done.stderr
    [line] = [line for line in done.stdout.splitlines() if line.startswith("faceit-etl validate failed: ")]
    assert "127.0.0.1:1/faraway" in line
    assert "Cli-Secret-7" not in done.stdout + done.stderr + (workdir / "migration.log").read_text()


def test_migrate_change_migrate_rollback_restores_the_first_state_exactly(workdir, database_url, db):
    entries = generate_users(300, seed=3)
    source = write_json(workdir / "data.json", {"users": entries})
    assert faceit_etl(workdir, database_url, "migrate", str(source)).returncode == 0
    first = tables_digest(db)
    entries[0]["faceit_nickname"] = "renamed"
    entries[5]["subscription"]["tier"] = "pro"
    entries.extend(generate_users(310, seed=4)[300:])
    write_json(source, {"users": entries})
    assert faceit_etl(workdir, database_url, "migrate", str(source)).returncode == 0
    assert tables_digest(db) != first

    done = faceit_etl(workdir, database_url, "rollback", "--confirm")

    assert done.returncode == 0, done.stdout + done.stderr
    assert "users: 300 rows restored, content hash verified" in done.stdout
    assert tables_digest(db) == first
    statuses = [r[0] for r in db.execute("SELECT status FROM migration_logs ORDER BY start_time")]
    assert statuses == ["success", "rolled_back"]


def test_rollback_of_the_run_that_created_the_tables_drops_them(workdir, database_url, db):
    assert faceit_etl(workdir, database_url, "migrate", str(FLAT_SAMPLE)).returncode == 0

    done = faceit_etl(workdir, database_url, "rollback", "--confirm")

    assert done.returncode == 0
    assert "users: dropped" in done.stdout
    assert db.execute("SELECT to_regclass('users'), to_regclass('user_subscriptions')").fetchone() == (None, None)


def test_rollback_without_a_terminal_or_confirm_changes_nothing(workdir, database_url, db):
    assert faceit_etl(workdir, database_url, "migrate", str(FLAT_SAMPLE)).returncode == 0
    before = tables_digest(db)

    done = faceit_etl(workdir, database_url, "rollback")

    assert done.returncode == 2
    assert "refusing to roll back without --confirm" in done.stdout
    assert tables_digest(db) == before
    assert db.execute("SELECT status FROM migration_logs").fetchall() == [("success",)]


def test_rollback_with_both_a_backup_path_and_a_migration_id_is_a_usage_error(workdir, database_url, db):
    assert faceit_etl(workdir, database_url, "migrate", str(FLAT_SAMPLE)).returncode == 0
    before = tables_digest(db)

    done = faceit_etl(workdir, database_url, "rollback", "--confirm", "--backup-path", str(workdir), "--migration-id", "x")

    assert (done.returncode, done.stdout) == (2, (
        "faceit-etl: give --backup-path or --migration-id, not both: each chooses the snapshot to restore, and they "
        "may name different ones\n"))
    assert tables_digest(db) == before


def test_a_run_without_backup_cannot_be_rolled_back(workdir, database_url, db):
    assert faceit_etl(workdir, database_url, "migrate", str(FLAT_SAMPLE), "--no-backup").returncode == 0

    done = faceit_etl(workdir, database_url, "rollback", "--confirm")

    run_id = db.execute("SELECT metadata->>'run_id' FROM migration_logs").fetchone()[0]
    assert (done.returncode, done.stdout) == (2, (
        f"rollback refused, nothing changed: {workdir}/backups/{run_id}: this backup holds no snapshot of the "
        f"tables: run {run_id} was made with --no-backup (backup_tables off), which takes none: cannot roll back to "
        "before it. `faceit-etl status` lists the migrations that committed\n"))
    assert db.execute("SELECT count(*) FROM users").fetchone()[0] == 25


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--migration-id", "nonsense"], "no migration 'nonsense' in public.migration_logs"),
        (["--backup-path", "{workdir}/absent"], "{workdir}/absent: no manifest.json here; not a faceit-etl backup folder"),
        (["--backup-path", "{snapshot}", "--target-schema", "public"],
         "{snapshot}: the snapshot is of schema 'r6', not 'public'"),
    ],
    ids=["unknown migration", "absent backup folder", "other schema"],
)
def test_a_refused_rollback_exits_2_in_plain_words_and_changes_nothing(workdir, database_url, db, args, message):
    for schema in ("public", "r6"):
        assert faceit_etl(workdir, database_url, "migrate", str(FLAT_SAMPLE), "--target-schema", schema).returncode == 0
    run_id = db.execute("SELECT metadata->>'run_id' FROM r6.migration_logs").fetchone()[0]
    names = {"workdir": str(workdir), "snapshot": str(workdir / "backups" / run_id)}
    before = tables_digest(db)

    done = faceit_etl(workdir, database_url, "rollback", "--confirm", *[a.format(**names) for a in args])

    assert (done.returncode, done.stdout, done.stderr) == (2, f"rollback refused, nothing changed: {message.format(**names)}\n", "")
    assert tables_digest(db) == before
    assert db.execute("SELECT status FROM migration_logs").fetchall() == [("success",)]


def test_dry_run_says_what_would_happen_and_leaves_the_target_identical(workdir, database_url, db):
    assert faceit_etl(workdir, database_url, "migrate", str(FLAT_SAMPLE)).returncode == 0
    before = tables_digest(db), db.execute("SELECT count(*) FROM migration_logs").fetchone()

    done = faceit_etl(workdir, database_url, "migrate", str(NESTED_SAMPLE), "--truncate", "--dry-run")

    assert done.returncode == 0, done.stdout
    assert "users: 25 would be inserted, 0 would be updated, 0 unchanged" in done.stdout
    assert "the database is unchanged" in done.stdout
    assert (tables_digest(db), db.execute("SELECT count(*) FROM migration_logs").fetchone()) == before


def test_validate_writes_a_private_report_with_every_reject(workdir, database_url, db):
    users = json.loads(NESTED_SAMPLE.read_text())["users"]
    users[2]["subscription"]["tier"] = "gold"
    users.append({"user_id": "abc"})
    source = write_json(workdir / "data.json", {"users": users})
    report = workdir / "report.md"

    done = faceit_etl(workdir, database_url, "validate", str(source), "--database", "--report", str(report))

    assert done.returncode == 2
    assert "26 entries, 24 valid, 2 rejected" in done.stdout
    text = report.read_text()
    assert "- entries read: 26" in text and "- rejected: 2" in text
    # Entries counted from 1, with the value the file holds, as the run page shows them.
    assert f"| 3 | {users[2]['user_id']} | tier | \"gold\" | unknown tier \"gold\", expected one of free, premium, pro |" in text
    assert '| 26 |  | user_id | "abc" | expected a whole number, got "abc" |' in text
    assert "| FREE |" in text and "## Target database" in text and "- tables: users absent, user_subscriptions absent" in text
    assert oct(report.stat().st_mode & 0o777) == "0o600"
    assert db.execute("SELECT to_regclass('users')").fetchone()[0] is None  # validate writes nothing


def test_status_json_parses_and_names_a_dead_database_without_its_password(workdir, database_url, db):
    assert faceit_etl(workdir, database_url, "migrate", str(FLAT_SAMPLE)).returncode == 0
    alive = faceit_etl(workdir, database_url, "status", "--json")
    report = json.loads(alive.stdout)
    assert report["reachable"] is True
    assert report["tables"] == {"users": 25, "user_subscriptions": 25, "migration_logs": 1, "migration_rejects": 0}
    assert report["migrations"][0]["status"] == "success"
    assert report["dagster_runs"][0]["status"] == "SUCCESS"

    dead_url = "postgresql://bot:S3cretPassw0rd@127.0.0.1:1/faceit"
    dead = faceit_etl(workdir, dead_url, "status", "--json")
    assert dead.returncode == 1
    down = json.loads(dead.stdout)
    assert down["reachable"] is False and "127.0.0.1:1/faceit" in down["error"]
    assert "S3cretPassw0rd" not in dead.stdout + dead.stderr + (workdir / "migration.log").read_text()


def test_backup_writes_a_private_folder_with_the_file_and_the_tables(workdir, database_url, db):
    assert faceit_etl(workdir, database_url, "migrate", str(FLAT_SAMPLE)).returncode == 0

    done = faceit_etl(workdir, database_url, "backup", str(FLAT_SAMPLE), "--output-dir", str(workdir / "mine"))

    assert done.returncode == 0
    folder = next((workdir / "mine").iterdir())
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["target"]["tables"]["users"]["rows"] == 25
    assert (folder / "source.json").read_bytes() == FLAT_SAMPLE.read_bytes()
    assert {oct(p.stat().st_mode & 0o777) for p in folder.iterdir()} == {"0o600"}
    assert oct(folder.stat().st_mode & 0o777) == "0o700"


def test_config_file_and_flags_reach_the_run(workdir, database_url, db):
    config = workdir / "settings.yaml"
    config.write_text("batch_size: 7\nsource_timezone: Europe/Moscow\n")

    done = faceit_etl(workdir, database_url, "--config", str(config), "migrate", str(NESTED_SAMPLE), "--max-concurrent", "2")

    assert done.returncode == 0, done.stdout + done.stderr
    settings = db.execute("SELECT metadata->'settings' FROM migration_logs").fetchone()[0]
    assert (settings["batch_size"], settings["source_timezone"], settings["max_concurrent"]) == (7, "Europe/Moscow", 2)
    created = db.execute("SELECT created_at FROM users WHERE user_id = 1650423192").fetchone()[0]
    assert created.isoformat() == "2025-08-21T19:43:37+00:00"  # 22:43:37 Moscow time
    with instance_at(workdir) as instance:
        run = instance.get_runs(dg.RunsFilter(job_name="migrate_job"))[0]
    assert run.run_config["execution"] == {"config": {"multiprocess": {"max_concurrent": 2}}}


def test_a_database_url_in_the_config_file_reaches_step_processes(workdir, database_url, db):
    """With no DATABASE_URL in its environment, the CLI hands the config file's URL to the run's step
    processes (it starts itself again with it in DATABASE_URL), and the URL stays out of run config."""
    config = workdir / "settings.yaml"
    config.write_text(json.dumps({"database_url": database_url}))  # JSON is YAML
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "DAGSTER_HOME")}
    env["MIGRATION_BACKUP_DIR"] = str(workdir / "backups")
    done = subprocess.run(
        [CLI, "--config", str(config), "migrate", str(NESTED_SAMPLE), "--max-concurrent", "2"],
        cwd=workdir, env=env, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
    )

    assert done.returncode == 0, done.stdout + done.stderr
    assert "  users: 25 inserted, 0 updated, 0 unchanged, 0 kept (not in the file), 0 deleted\n" in done.stdout
    assert db.execute("SELECT count(*) FROM users").fetchone()[0] == 25
    assert not (workdir / ".faceit-etl" / "pgdata").exists()  # no embedded server was started instead
    with instance_at(workdir) as instance:
        run = instance.get_runs(dg.RunsFilter(job_name="migrate_job"))[0]
    assert run.run_config["execution"] == {"config": {"multiprocess": {"max_concurrent": 2}}}
    assert database_url not in json.dumps(run.run_config)
    # Once, by the restarted command: the first start hands over before it logs anything.
    assert (workdir / "migration.log").read_text().count(f"] faceit-etl migrate {NESTED_SAMPLE}\n") == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["migrate", "absent.json"], "absent.json: no such file"),
        (["migrate", "{sample}", "--target-schema", "public; DROP TABLE users"], "invalid schema name"),
        *[(["migrate", "{sample}", "--target-schema", schema],
           f"schema name '{schema}' is reserved by PostgreSQL for its own catalogs (names starting with pg_, "
           "and information_schema): choose another schema, such as public")
          for schema in ("pg_toast", "pg_temp", "pg_catalog", "information_schema", "pg_new")],
    ],
)
def test_usage_errors_exit_2_with_a_clear_line(workdir, database_url, db, args, message):
    args = [a.format(sample=FLAT_SAMPLE) for a in args]
    done = faceit_etl(workdir, database_url, *args)

    assert done.returncode == 2
    assert message in done.stdout
    assert "Traceback" not in done.stdout + done.stderr
    assert db.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()[0] == 0


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ("target_shema: s_typo\n", "unknown setting 'target_shema' (did you mean 'target_schema'?)"),
        ("- a\n", "expected a mapping of settings (key: value), found a list"),
        ("batch_size: [\n", "not valid YAML at line 2, column 1: expected the node content, but found '<stream end>'"),
        ("resources:\n  migration_settings: {}\n", "expected resources: migration_settings: config: <settings>"),
        ("batch_size: 99999999999999999999\n", None),
        (None, "no such file"),
        ("folder", "is a folder, not a YAML file"),
        ("truncate: false\ntruncate: true\n",
         "not valid YAML at line 2, column 1: key 'truncate' given more than once, so which value is meant is ambiguous"),
        ("max_prune_fraction: 0.39999999999999999999\n",
         "max_prune_fraction 0.39999999999999999999: more digits than can be kept exactly; give at most 15 significant digits"),
    ],
    ids=["misspelt key", "a list", "bad YAML", "run config without config", "huge batch size", "absent", "folder",
         "key given twice", "more digits than a float keeps"],
)
def test_an_unusable_config_file_is_named_in_one_plain_line_exit_2_before_any_work(workdir, database_url, db, config, message):
    path = workdir / "settings.yaml"
    if config == "folder":
        path.mkdir()
    elif config is not None:
        path.write_text(config)
    message = (f"faceit-etl: --config {path}: {message}" if message
               else "faceit-etl: batch_size 99999999999999999999: input should be less than or equal to 2147483647")

    done = faceit_etl(workdir, database_url, "--config", str(path), "migrate", str(FLAT_SAMPLE))

    assert (done.returncode, done.stdout, done.stderr) == (2, message + "\n", "")
    assert not (workdir / "backups").exists()
    assert db.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()[0] == 0


LARGEST = "input should be less than or equal to 2147483647"


@pytest.mark.parametrize(
    ("args", "env", "said"),
    [
        (["migrate", "{sample}", "--batch-size", "99999999999999999999"], {}, LARGEST),
        # The executor's count, judged as the executor's: from 1 to the largest 32-bit integer.
        (["migrate", "{sample}", "--max-concurrent", "2147483648"], {},
         "faceit-etl: max_concurrent 2147483648: expected a whole number from 1 to 2147483647"),
        (["migrate", "{sample}"], {"MIGRATION_BATCH_SIZE": "2147483648"}, LARGEST),
    ],
    ids=["flag", "max concurrent", "environment"],
)
def test_an_integer_setting_too_large_for_its_use_is_a_usage_error_before_any_work(workdir, database_url, db, args,
                                                                                   env, said):
    done = faceit_etl(workdir, database_url, *[a.format(sample=FLAT_SAMPLE) for a in args], env=env)

    assert done.returncode == 2, done.stdout + done.stderr
    assert said in done.stdout
    assert not (workdir / "backups").exists()


def test_a_summary_cut_short_says_how_many_rejects_more_and_where_they_all_are(workdir, database_url, db):
    users = json.loads(FLAT_SAMPLE.read_text())["users"][:4] + [{"user_id": -n} for n in range(1, 30)]
    source = write_json(workdir / "data.json", {"users": users})

    done = faceit_etl(workdir, database_url, "migrate", str(source))

    assert done.returncode == 2
    [run_id] = [line.split()[2] for line in done.stdout.splitlines() if line.startswith("Migration run ")]
    rejects = workdir / "backups" / run_id / "rejects.jsonl"
    assert len(rejects.read_text().splitlines()) == 29
    assert sum("(no valid user_id): user_id: must be a positive Telegram id" in line for line in done.stdout.splitlines()) == 20
    assert f"      … and 9 more: see {rejects}" in done.stdout.splitlines()


CLOSED_STDOUT_COMMANDS = {
    "status": ["status"],
    "validate": ["validate", "{sample}"],
    "migrate": ["migrate", "{sample}"],
    "quiet migrate": ["-q", "migrate", "{sample}"],
    "rollback": ["rollback", "--confirm"],
    "backup": ["backup", "{sample}"],
}


@pytest.mark.parametrize(("command", "reader"), [
    *((command, "gone before the first line") for command in CLOSED_STDOUT_COMMANDS),
    # Its progress lines come seconds apart, so the line after the first finds `head` gone. A command that
    # writes its whole output at once may fit it in the pipe before `head` exits: no write fails then.
    ("migrate", "head -1"),
])
def test_a_reader_that_stops_reading_gets_exit_141_and_the_command_still_does_all_of_its_work(
    workdir, database_url, db, command, reader
):
    """`faceit-etl migrate FILE | head -1`: exit 141 whichever line met the closed pipe first (a progress
    line of the watcher's thread, or the main thread's), no traceback, and the command's work is done whole
    and its outcome still logged: the migration commits verified, the rollback restores, the backup is written."""
    if command == "rollback":
        assert faceit_etl(workdir, database_url, "-q", "migrate", str(FLAT_SAMPLE)).returncode == 0
    env = {**os.environ, "DATABASE_URL": database_url, "MIGRATION_BACKUP_DIR": str(workdir / "backups")}
    env.pop("DAGSTER_HOME", None)
    argv = [CLI, *[a.format(sample=FLAT_SAMPLE) for a in CLOSED_STDOUT_COMMANDS[command]]]
    if reader == "head -1":
        shell = f"{shlex.join(argv)} | head -1 >/dev/null; exit ${{PIPESTATUS[0]}}"
        done = subprocess.run(["bash", "-c", shell], cwd=workdir, env=env, stderr=subprocess.PIPE, text=True, timeout=300)
    else:
        read_end, write_end = os.pipe()
        os.close(read_end)
        try:
            done = subprocess.run(argv, cwd=workdir, env=env, stdout=write_end, stderr=subprocess.PIPE, text=True,
                                  timeout=300)
        finally:
            os.close(write_end)

    assert (done.returncode, done.stderr) == (141, "")
    log = (workdir / "migration.log").read_text()
    if "migrate" in command:
        assert db.execute("SELECT status FROM migration_logs").fetchall() == [("success",)]
        assert db.execute("SELECT count(*) FROM users").fetchone()[0] == 25
        assert "check postgres_tables.content_matches: passed" in log or command == "quiet migrate"
        with instance_at(workdir) as instance:
            assert [r.status for r in instance.get_runs()] == [dg.DagsterRunStatus.SUCCESS]
    elif command == "rollback":  # the migration created the tables: rolling it back drops them
        assert db.execute("SELECT to_regclass('users')").fetchone()[0] is None
        assert db.execute("SELECT status FROM migration_logs").fetchall() == [("rolled_back",)]
    elif command == "backup":
        [folder] = (workdir / "backups").glob("manual-*")
        assert (folder / "manifest.json").is_file()
        assert f"copied to {folder}" in log
    elif command == "validate":
        assert f"{FLAT_SAMPLE}: 25 entries, 25 valid, 0 rejected" in log


@pytest.mark.parametrize("executor", [[], ["--max-concurrent", "2"]], ids=["one process", "step processes"])
def test_quiet_prints_only_the_outcome(workdir, database_url, db, executor):
    done = faceit_etl(workdir, database_url, "-q", "migrate", str(FLAT_SAMPLE), *executor)

    assert done.returncode == 0
    assert done.stderr == ""
    assert done.stdout.splitlines()[1:] == [
        "  entries: 25 read, 25 accepted, 0 rejected",
        "  users: 25 inserted, 0 updated, 0 unchanged, 0 kept (not in the file), 0 deleted",
        "  user_subscriptions: 25 inserted, 0 updated, 0 unchanged, 0 kept (not in the file), 0 deleted",
    ]


def test_database_url_flag_backup_flag_verbose_and_module_entry(workdir, database_url, db):
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "DAGSTER_HOME")}
    env["MIGRATION_BACKUP_DIR"] = str(workdir / "backups")
    done = subprocess.run(
        [sys.executable, "-m", "faceit_etl.cli", "-v", "--database-url", database_url,
         "migrate", str(FLAT_SAMPLE), "--backup", "--batch-size", "10"],
        cwd=workdir, env=env, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
    )

    assert done.returncode == 0, done.stdout + done.stderr
    assert "STEP_SUCCESS" in done.stderr  # -v shows Dagster's own log lines
    assert "copy users: 10/25 rows" in done.stderr
    assert db.execute("SELECT count(*) FROM users").fetchone()[0] == 25
    run_folder = next((workdir / "backups").iterdir())
    assert json.loads((run_folder / "manifest.json").read_text())["target"]["tables"]["users"] is None


def test_ctrl_c_during_migrate_marks_its_log_row_failed_says_so_and_exits_130(workdir, database_url, db):
    from faceit_etl.postgres.lock import advisory_lock_key

    db.execute("SELECT pg_advisory_lock(%s)", [advisory_lock_key("public")])  # holds the load at its start
    env = {**os.environ, "DATABASE_URL": database_url, "MIGRATION_BACKUP_DIR": str(workdir / "backups")}
    env.pop("DAGSTER_HOME", None)
    run = subprocess.Popen([CLI, "migrate", str(FLAT_SAMPLE)], cwd=workdir, env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not db.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted").fetchone()[0]:
        assert run.poll() is None and time.monotonic() < deadline, "the load never reached its lock"
        time.sleep(0.05)

    run.send_signal(signal.SIGINT)
    stdout, stderr = run.communicate(timeout=120)
    db.execute("SELECT pg_advisory_unlock_all()")

    assert run.returncode == 130, stdout + stderr
    assert stdout.splitlines()[-1] == "faceit-etl: interrupted; nothing was written"
    assert "Dagster" not in stdout + stderr and "Traceback" not in stdout + stderr
    assert db.execute("SELECT status, error_message FROM migration_logs").fetchall() == [
        ("failed", "interrupted (Ctrl-C); nothing of its load was committed")
    ]
    assert db.execute("SELECT to_regclass('users'), to_regclass('user_subscriptions')").fetchone() == (None, None)


def _bot_alembic_users_table(workdir, database_url, db, source, users):
    """The bot's own 32-bit user_id column: the load refuses the file's larger id."""
    db.execute("CREATE TABLE users (id uuid PRIMARY KEY, user_id integer NOT NULL UNIQUE)")


def _a_trigger_that_rewrites_nicknames(workdir, database_url, db, source, users):
    """Written rows differ from the file: the blocking content verdict fails before the commit."""
    assert faceit_etl(workdir, database_url, "migrate", str(source), "--force").returncode == 0
    db.execute("CREATE FUNCTION shout() RETURNS trigger AS $$ BEGIN NEW.faceit_nickname := upper(NEW.faceit_nickname); "
               "RETURN NEW; END $$ LANGUAGE plpgsql")
    db.execute("CREATE TRIGGER shout BEFORE INSERT OR UPDATE ON users FOR EACH ROW EXECUTE FUNCTION shout()")
    users[1]["faceit_nickname"] = "changed"
    write_json(source, {"users": users})


@pytest.mark.parametrize(
    ("prepare", "failure"),
    [(_bot_alembic_users_table, "error: postgres_tables: load into"),
     (_a_trigger_that_rewrites_nicknames, "error: postgres_tables: verification failed, nothing was written: content_matches")],
)
def test_a_forced_run_that_then_fails_exits_1_not_2(workdir, database_url, db, prepare, failure):
    users = json.loads(FLAT_SAMPLE.read_text())["users"][:3] + [{"user_id": -5}]
    users[0]["user_id"] = 2**31 + 5
    source = write_json(workdir / "data.json", {"users": users})
    prepare(workdir, database_url, db, source, users)

    done = faceit_etl(workdir, database_url, "migrate", str(source), "--force")

    assert done.returncode == 1, done.stdout + done.stderr
    assert "1 of 4 entries rejected (force: loading the rest)" in done.stdout
    assert failure in done.stdout


def test_every_verb_uses_the_environments_schema_flags_and_config_over_it_and_status_keeps_to_its_target(
    workdir, database_url, db
):
    for schema in ("s", "t", "u"):
        db.execute(f"CREATE SCHEMA {schema}")
    config = workdir / "settings.yaml"
    config.write_text("target_schema: t\n")
    env = {"MIGRATION_TARGET_SCHEMA": "s"}

    assert faceit_etl(workdir, database_url, "migrate", str(FLAT_SAMPLE), env=env).returncode == 0
    assert faceit_etl(workdir, database_url, "--config", str(config), "migrate", str(NESTED_SAMPLE), env=env).returncode == 0
    assert faceit_etl(workdir, database_url, "--config", str(config), "migrate", str(NESTED_SAMPLE),
                      "--target-schema", "u", env=env).returncode == 0
    loaded = {schema: db.execute(f"SELECT metadata->>'run_id' FROM {schema}.migration_logs").fetchone()[0]
              for schema in ("s", "t", "u")}
    assert db.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()[0] == 0

    status = json.loads(faceit_etl(workdir, database_url, "status", "--json", env=env).stdout)
    assert (status["schema"], status["tables"]["users"]) == ("s", 25)
    assert [r["run_id"] for r in status["dagster_runs"]] == [loaded["s"]]
    other = json.loads(faceit_etl(workdir, database_url, "status", "--json", "--target-schema", "t", env=env).stdout)
    assert [r["run_id"] for r in other["dagster_runs"]] == [loaded["t"]]

    judged = faceit_etl(workdir, database_url, "validate", str(FLAT_SAMPLE), "--database", env=env)
    assert judged.returncode == 0, judged.stdout
    assert "- users of this file already in the table: 25" in judged.stdout
    assert "- last migration: migration " in judged.stdout and "success at 20" in judged.stdout
    assert f"(run {loaded['s']})" in judged.stdout
    assert "datetime" not in judged.stdout

    rolled = faceit_etl(workdir, database_url, "rollback", "--confirm", env=env)
    assert rolled.returncode == 0, rolled.stdout
    assert db.execute("SELECT to_regclass('s.users'), to_regclass('t.users') IS NOT NULL").fetchone() == (None, True)
    assert db.execute("SELECT count(*) FROM u.users").fetchone()[0] == 25


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["migrate", "{folder}"], "faceit-etl: {folder}: is a folder, not the bot's data file"),
        (["validate", "{fifo}"], "faceit-etl: {fifo}: not a regular file (a named pipe or device); give the data file itself"),
        (["migrate", "{sample}", "--batch-size", "0"],
         "faceit-etl migrate: error: argument --batch-size: expected a whole number of at least 1, got '0'"),
        (["validate", "{sample}", "--report", "{folder}/absent/report.md"],
         "faceit-etl: --report {folder}/absent/report.md: the folder {folder}/absent does not exist"),
        (["validate", "{gzip}"], "faceit-etl: {gzip}: gzip-compressed, not the bot's JSON text; decompress it first"),
    ],
    ids=["folder", "fifo", "batch size 0", "report folder", "gzip"],
)
def test_wrong_arguments_are_named_plainly_and_exit_2(workdir, database_url, db, args, message):
    os.mkfifo(workdir / "pipe")
    (workdir / "data.json.gz").write_bytes(gzip.compress(FLAT_SAMPLE.read_bytes()))
    names = {"folder": str(workdir), "fifo": str(workdir / "pipe"), "sample": str(FLAT_SAMPLE),
             "gzip": str(workdir / "data.json.gz")}

    done = faceit_etl(workdir, database_url, *[a.format(**names) for a in args])

    assert done.returncode == 2
    assert message.format(**names) in (done.stdout + done.stderr).splitlines()
    assert not any(word in done.stdout + done.stderr for word in ("pydantic", "http", ".tmp", "Traceback"))
    assert list(workdir.glob("**/*.tmp")) == []


def test_the_rollback_prompt_names_the_snapshot_and_the_migration_it_undoes(workdir, database_url, db):
    assert faceit_etl(workdir, database_url, "migrate", str(FLAT_SAMPLE)).returncode == 0
    log_id, run_id = db.execute("SELECT id::text, metadata->>'run_id' FROM migration_logs").fetchone()
    controller, terminal = pty.openpty()
    env = {**os.environ, "DATABASE_URL": database_url, "MIGRATION_BACKUP_DIR": str(workdir / "backups")}
    env.pop("DAGSTER_HOME", None)
    os.write(controller, b"n\n")

    done = subprocess.run([CLI, "rollback"], cwd=workdir, env=env, stdin=terminal, capture_output=True, text=True,
                          timeout=300)

    os.close(controller), os.close(terminal)
    assert done.returncode == 2, done.stdout + done.stderr
    folder = workdir / "backups" / run_id
    assert f"  to the snapshot {folder} (taken 20" in done.stdout
    assert f"  undoing migration {log_id} success at 20" in done.stdout
    assert "rollback cancelled; nothing changed" in done.stdout
    assert db.execute("SELECT status FROM migration_logs").fetchall() == [("success",)]


@pytest.mark.parametrize("answer", ["y", "Y", "yes", " YES \n", "Yes"])
def test_only_a_yes_confirms_a_rollback(answer):
    assert confirmed(answer)


@pytest.mark.parametrize("answer", ["", "\n", "n", "no", "N", "maybe", "ye", "yess", "y y", "jes", "да"])
def test_enter_or_any_answer_but_yes_cancels_a_rollback(answer):
    """The question's default is no ([y/N]): Enter must never restore a snapshot."""
    assert not confirmed(answer)


def test_migrate_names_the_fields_and_top_level_keys_no_column_takes(workdir, database_url, db, tmp_path):
    """A tier written beside an entry rather than in its subscription is no column's: the run says so
    rather than leaving it to the validation report, as it says the document's other keys."""
    source = write_json(tmp_path / "bot.json", {
        "users": [{"user_id": 111, "tier": "premium"}, {"user_id": 112, "subscription_tier": "pro"},
                  {"user_id": 113, "tier": "pro"}],
        "subscriptions": {"112": {"tier": "pro"}},
    })

    done = faceit_etl(workdir, database_url, "migrate", str(source))

    assert done.returncode == 0, done.stdout + done.stderr
    assert ("  ignored, no column takes them: fields subscription_tier (1 entry), tier (2 entries); "
            "top-level keys subscriptions") in done.stdout.splitlines()
    assert db.execute("SELECT count(*) FROM users").fetchone()[0] == 3
    judged = faceit_etl_api.validate(source)
    assert (judged.ignored_fields, judged.ignored_top_level_keys) == ({"subscription_tier": 1, "tier": 2}, "subscriptions")
