"""The verbs that read the bot's file (migrate, validate, backup) take it by the rule every setting
follows: the JSON_FILE argument, else `source_path` in --config, else DATA_FILE_PATH; with none of
them, one usage error names all three. Verbs that read no file accept a --config that names one."""

from __future__ import annotations

import itertools
import json
import os
import subprocess

import dagster as dg
import pytest

from faceit_etl_tests.conftest import NESTED_SAMPLE, write_json
from faceit_etl_tests.test_cli import CLI, faceit_etl, instance_at, workdir  # noqa: F401 (workdir: a fixture)

WAYS = ("argument", "config", "environment")


def files(workdir) -> dict[str, object]:
    """One file per way of giving it, each with its own number of users, so the count says which was read."""
    users = json.loads(NESTED_SAMPLE.read_text())["users"]
    return {way: write_json(workdir / f"{way}.json", {"users": users[: 5 * (i + 1)]}) for i, way in enumerate(WAYS)}


def run(workdir, database_url, verb: str, given: dict[str, object], *extra: str):
    """`verb` with the file given in each way of `given` (argument, config, environment)."""
    config = workdir / "settings.yaml"
    config.write_text(f"batch_size: 7\nsource_path: {given['config']}\n" if "config" in given else "batch_size: 7\n")
    env = {k: v for k, v in os.environ.items() if k not in ("DATA_FILE_PATH", "DAGSTER_HOME")}
    env |= {"DATABASE_URL": database_url, "MIGRATION_BACKUP_DIR": str(workdir / "backups")}
    if "environment" in given:
        env["DATA_FILE_PATH"] = str(given["environment"])
    arguments = [str(given["argument"])] if "argument" in given else []
    done = subprocess.run([CLI, "--config", str(config), verb, *arguments, *extra], cwd=workdir, env=env,
                          capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    return done, config


@pytest.mark.parametrize(
    "ways", [c for n in range(len(WAYS) + 1) for c in itertools.combinations(WAYS, n)], ids=lambda c: "+".join(c) or "none"
)
def test_validate_reads_the_argument_else_the_configs_source_path_else_data_file_path(workdir, database_url, db, ways):
    paths = files(workdir)
    given = {way: paths[way] for way in ways}

    done, config = run(workdir, database_url, "validate", given)

    if not ways:
        assert (done.returncode, done.stdout) == (2, (
            "faceit-etl: validate needs the bot's data file: give it as JSON_FILE, as source_path in --config, "
            "or in DATA_FILE_PATH\n"))
        return
    chosen = ways[0]
    entries = 5 * (WAYS.index(chosen) + 1)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines()[-1] == f"{paths[chosen]}: {entries} entries, {entries} valid, 0 rejected"
    where = {"config": f"source_path in --config {config}", "environment": "DATA_FILE_PATH"}.get(chosen)
    said = [line for line in done.stdout.splitlines() if line.startswith("validate: the bot's data file")]
    assert said == ([f"validate: the bot's data file {paths[chosen]} (from {where})"] if where else [])


@pytest.mark.parametrize("way", ["config", "environment"])
def test_migrate_loads_the_file_its_config_or_environment_names_and_its_run_is_tagged_with_it(workdir, database_url, db, way):
    path = files(workdir)[way]

    done, _ = run(workdir, database_url, "migrate", {way: path})

    assert done.returncode == 0, done.stdout + done.stderr
    entries = 5 * (WAYS.index(way) + 1)
    assert f"  entries: {entries} read, {entries} accepted, 0 rejected" in done.stdout
    assert db.execute("SELECT count(*) FROM users").fetchone()[0] == entries
    with instance_at(workdir) as instance:
        [migration] = instance.get_runs(dg.RunsFilter(job_name="migrate_job"))
    assert migration.tags["faceit_etl/source_file"] == str(path.resolve())
    assert migration.run_config["resources"]["migration_settings"]["config"]["source_path"] == str(path.resolve())
    assert migration.run_config["resources"]["migration_settings"]["config"]["batch_size"] == 7


@pytest.mark.parametrize("way", ["config", "environment"])
def test_backup_copies_the_file_its_config_or_environment_names(workdir, database_url, db, way):
    path = files(workdir)[way]

    done, _ = run(workdir, database_url, "backup", {way: path}, "--output-dir", str(workdir / "mine"))

    assert done.returncode == 0, done.stdout + done.stderr
    [folder] = (workdir / "mine").iterdir()
    assert f"source {path.resolve()} (sha256 " in done.stdout
    assert (folder / "source.json").read_bytes() == path.read_bytes()


@pytest.mark.parametrize(
    ("verb", "message"),
    [
        ("migrate", "faceit-etl: migrate needs the bot's data file: give it as JSON_FILE, as source_path in --config, "
                    "or in DATA_FILE_PATH (or --resume to resume a failed migration)\n"),
        ("backup", "faceit-etl: backup needs the bot's data file: give it as JSON_FILE, as source_path in --config, "
                   "or in DATA_FILE_PATH\n"),
    ],
)
def test_a_verb_given_no_file_in_any_way_names_all_three_and_writes_nothing(workdir, database_url, db, verb, message):
    done, _ = run(workdir, database_url, verb, {})

    assert (done.returncode, done.stdout) == (2, message)
    assert not (workdir / "backups").exists()
    assert db.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()[0] == 0


@pytest.mark.parametrize(("text", "shown"), [('""', "''"), ("'  '", "'  '"), ("5", "5")])
def test_a_source_path_in_the_config_that_names_no_file_is_a_usage_error(workdir, database_url, db, text, shown):
    config = workdir / "settings.yaml"
    config.write_text(f"source_path: {text}\n")

    done = faceit_etl(workdir, database_url, "--config", str(config), "validate")

    assert (done.returncode, done.stdout) == (
        2, f"faceit-etl: source_path in --config {config}: {shown} names no file: give the path of the bot's data file\n")


def test_status_and_rollback_take_a_config_that_names_the_file(workdir, database_url, db):
    """A --config that serves migrate (source_path in it) serves the verbs that read no file too."""
    path = files(workdir)["config"]
    assert run(workdir, database_url, "migrate", {"config": path})[0].returncode == 0

    status, config = run(workdir, database_url, "status", {"config": path})
    rollback = faceit_etl(workdir, database_url, "--config", str(config), "rollback", "--confirm")

    assert status.returncode == 0, status.stdout
    assert "  users: 10 rows" in status.stdout
    assert rollback.returncode == 0, rollback.stdout
    assert db.execute("SELECT to_regclass('users')").fetchone()[0] is None  # the run created them: dropped
