"""What a start of the command line loads. Dagster, pandas and pandera take seconds to import: a verb
loads only what it uses, and a --database-url (or a --config file's URL) is handed over to the
command's second start before the first has loaded any of them."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import dagster as dg
import pytest

from faceit_etl_tests.conftest import FLAT_SAMPLE
from faceit_etl_tests.test_cli import faceit_etl, instance_at, workdir  # noqa: F401 (workdir: a fixture)

HEAVY = {"dagster", "pandas", "pandera"}
IMPORTED = re.compile(r"^import time:\s+\d+ \|\s+\d+ \|\s*([\w.]+)$")


def first_start(workdir, args: list[str], env: dict[str, str]) -> tuple[subprocess.CompletedProcess, set[str]]:
    """Run the command as `python -m faceit_etl.cli`; `-X importtime` applies to this first start only (a
    second start is a fresh interpreter without the option): the top-level packages it imported."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "faceit_etl.cli", *args], cwd=workdir,
                          env=env, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    packages = {m.group(1).split(".")[0] for line in done.stderr.splitlines() if (m := IMPORTED.match(line))}
    assert "faceit_etl" in packages, done.stderr[-2000:]  # the log is there: an empty set proves nothing
    return done, packages


def environment(workdir, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "DAGSTER_HOME")}
    return env | {"MIGRATION_BACKUP_DIR": str(workdir / "backups")} | extra


@pytest.mark.parametrize("elsewhere", [None, "postgresql://env:Env-Secret-7@127.0.0.1:1/elsewhere"],
                         ids=["DATABASE_URL unset", "DATABASE_URL naming another server"])
@pytest.mark.parametrize("how", ["flag", "config file"])
def test_a_database_url_is_handed_over_before_dagster_or_pandas_is_loaded(workdir, database_url, db, how, elsewhere):
    """What is given on the command line (or in its --config file) beats DATABASE_URL."""
    config = workdir / "settings.yaml"
    config.write_text(json.dumps({"database_url": database_url}))
    given = ["--database-url", database_url] if how == "flag" else ["--config", str(config)]
    env = environment(workdir) | ({"DATABASE_URL": elsewhere} if elsewhere else {})

    done, packages = first_start(workdir, [*given, "status", "--json"], env)

    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)  # the second start's: it reached the database the first was given
    assert report["reachable"] is True
    assert report["database"] == db.info.host + "/" + db.info.dbname
    assert packages & HEAVY == set()
    # Once, by the restarted command: the first start hands over before it logs anything.
    assert (workdir / "migration.log").read_text().count("] faceit-etl status\n") == 1


@pytest.mark.parametrize(
    ("args", "code", "absent"),
    [
        (["--help"], 0, HEAVY),
        (["migrate"], 2, HEAVY),  # argparse: the file is missing
        (["status"], 0, {"pandera"}),
        (["rollback"], 2, {"pandera"}),  # no --confirm and no terminal: refused before anything is read
    ],
    ids=["help", "usage error", "status", "rollback refused"],
)
def test_a_verb_loads_only_what_it_uses(workdir, database_url, db, args, code, absent):
    done, packages = first_start(workdir, args, environment(workdir, DATABASE_URL=database_url))

    assert done.returncode == code, done.stdout + done.stderr
    assert packages & absent == set()


def test_the_flag_url_beats_the_config_files_and_neither_reaches_run_config(workdir, database_url, db):
    """Flags beat --config: the config file's URL (and its password) is neither used nor kept anywhere."""
    other = "postgresql://bot:Config-File-Secret-9@127.0.0.1:1/other"
    config = workdir / "settings.yaml"
    config.write_text(json.dumps({"database_url": other, "batch_size": 7}))

    done = faceit_etl(workdir, database_url, "--database-url", database_url, "--config", str(config),
                      "migrate", str(FLAT_SAMPLE), env={"DATABASE_URL": ""})

    assert done.returncode == 0, done.stdout + done.stderr
    assert db.execute("SELECT count(*) FROM users").fetchone()[0] == 25
    with instance_at(workdir) as instance:
        [run] = instance.get_runs(dg.RunsFilter(job_name="migrate_job"))
    assert run.run_config["resources"]["migration_settings"]["config"]["batch_size"] == 7
    assert "Config-File-Secret-9" not in json.dumps(run.run_config) + json.dumps(run.tags)
    assert "Config-File-Secret-9" not in (workdir / "migration.log").read_text()


def test_a_config_files_url_that_is_not_text_is_a_usage_error(workdir, database_url, db):
    config = workdir / "settings.yaml"
    config.write_text("database_url: 5432\n")

    done = faceit_etl(workdir, database_url, "--config", str(config), "status", env={"DATABASE_URL": ""})

    assert (done.returncode, done.stdout, done.stderr) == (
        2, f"faceit-etl: --config {config}: database_url must be text (a PostgreSQL URL)\n", "")
