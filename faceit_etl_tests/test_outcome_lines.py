"""migration.log holds, for every command, its command line once (it was written twice across the restart
that takes `--database-url` out of the arguments) and exactly one outcome line at the level of its exit
status (0 INFO, 2 WARNING, 1 ERROR; `status` wrote none, argparse's usage errors nothing at all, and
`validate` of a file with rejects said it at INFO), no line of it above that level, and never the password
of the `--database-url` it was given, in the log or its output."""

from __future__ import annotations

import json
import os
import re
import secrets
import shlex
import subprocess
from urllib.parse import quote

import pytest

from faceit_etl_tests.conftest import BOT_PASSWORD, FLAT_SAMPLE, write_json
from faceit_etl_tests.test_cli import CLI, faceit_etl, workdir  # noqa: F401 (a fixture)

LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (INFO|WARNING|ERROR) \[pid \d+(?: run [0-9a-f]{8})?\] (.*)$")
OUTCOME = re.compile(r"^faceit-etl(?: [a-z]+)? ended: exit (\d+), ")
LEVELS = {0: "INFO", 2: "WARNING", 1: "ERROR"}
ORDER = ["INFO", "WARNING", "ERROR"]
WRONG_PASSWORD = f"Wrong-{secrets.token_hex(8)}"

# (the command's arguments after --database-url, what it needs first, its exit status, its line in migration.log)
# `{file}`: the sample, `{rejects}`: a file with a reject, `{dir}`: the test's folder, `{url}`: the URL given.
CASES = {
    "migrate ok": (["migrate", "{file}"], None, 0, "faceit-etl migrate {file}"),
    "migrate rejects": (["migrate", "{rejects}"], None, 2, "faceit-etl migrate {rejects}"),
    "migrate unreachable": (["migrate", "{file}"], "wrong password", 1, "faceit-etl migrate {file}"),
    "migrate rejects allowed, unreachable": (["migrate", "--max-rejects", "1", "{rejects}"], "wrong password", 1,
                                             "faceit-etl migrate {rejects}"),  # its settings on a line of their own
    "resume refused": (["migrate", "--resume"], None, 2, "faceit-etl migrate --resume"),
    "validate ok": (["validate", "{file}"], None, 0, "faceit-etl validate {file}"),
    "validate rejects": (["validate", "{rejects}"], None, 2, "faceit-etl validate {rejects}"),
    "validate unreachable": (["validate", "{file}", "--database"], "wrong password", 1,
                             "faceit-etl validate {file} --database"),
    "status ok": (["status"], None, 0, "faceit-etl status"),
    "status unreachable": (["status"], "wrong password", 1, "faceit-etl status"),
    "rollback ok": (["rollback", "--confirm"], "migrated", 0, "faceit-etl rollback --confirm"),
    "rollback refused": (["rollback", "--confirm"], None, 2, "faceit-etl rollback --confirm"),
    "rollback unreachable": (["rollback", "--confirm"], "wrong password", 1, "faceit-etl rollback --confirm"),
    "backup ok": (["backup", "{file}", "--output-dir", "{dir}/mine"], None, 0,
                  "faceit-etl backup {file} --output-dir {dir}/mine"),
    "backup no file": (["backup"], None, 2, "faceit-etl backup"),
    "backup unreachable": (["backup", "{file}"], "wrong password", 1, "faceit-etl backup {file}"),
    "usage: unknown flag": (["migrate", "{file}", "--bogus"], None, 2, "faceit-etl migrate {file} --bogus"),
    "usage: missing argument": (["migrate", "--batch-size"], None, 2, "faceit-etl migrate --batch-size"),
    "usage: blank argument": (["validate", "{file}", "--report", " "], None, 2, "faceit-etl validate {file} --report ' '"),
    "usage: the url after the verb": (["status", "--database-url", "{url}"], None, 2,
                                      "faceit-etl status --database-url {redacted}"),
}


@pytest.mark.parametrize(("args", "before", "code", "command"), CASES.values(), ids=CASES.keys())
def test_every_command_logs_its_line_once_and_one_outcome_at_the_level_of_its_exit(
        workdir, password_database_url, args, before, code, command):
    url = password_database_url
    if before == "migrated":
        assert faceit_etl(workdir, url, "migrate", str(FLAT_SAMPLE)).returncode == 0
        (workdir / "migration.log").unlink()
    if before == "wrong password":
        url = url.replace(quote(BOT_PASSWORD, safe=""), WRONG_PASSWORD)
    users = json.loads(FLAT_SAMPLE.read_text())["users"][:3] + [{"user_id": -5}]
    names = {"file": str(FLAT_SAMPLE), "rejects": str(write_json(workdir / "rejects.json", {"users": users})),
             "dir": str(workdir), "url": url, "redacted": url.replace(quote(BOT_PASSWORD, safe=""), "***")}
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "DAGSTER_HOME", "DATA_FILE_PATH")}
    env["MIGRATION_BACKUP_DIR"] = str(workdir / "backups")

    done = subprocess.run([CLI, "--database-url", url, *[a.format(**names) for a in args]], cwd=workdir, env=env,
                          capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)

    assert done.returncode == code, done.stdout + done.stderr
    text = (workdir / "migration.log").read_text()
    lines = [LINE.match(line) for line in text.splitlines()]
    assert all(lines), text
    said = [line[2] for line in lines]
    expected = command.format(**names) if "{redacted}" not in command else shlex.join(command.format(**names).split())
    assert said.count(expected) == 1, text
    outcomes = [line for line in lines if OUTCOME.match(line[2])]
    assert len(outcomes) == 1, text
    [outcome] = outcomes
    assert (outcome[1], int(OUTCOME.match(outcome[2])[1])) == (LEVELS[code], code), text
    assert outcome is lines[-1], text
    assert max(ORDER.index(line[1]) for line in lines) == ORDER.index(LEVELS[code]), text
    assert all(line[1] == "WARNING" for line in lines if line[2].endswith("FAILED (WARN)")), text  # as the check is
    for secret in (BOT_PASSWORD, quote(BOT_PASSWORD, safe=""), BOT_PASSWORD.split()[0], WRONG_PASSWORD):
        assert secret not in text + done.stdout + done.stderr
