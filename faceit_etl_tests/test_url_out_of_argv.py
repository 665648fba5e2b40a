"""`--database-url` puts the URL in DATABASE_URL and starts the command again: the restarted process
(and every process under it) must not carry the password in its arguments, which any user of the
machine reads (`ps`, /proc/<pid>/cmdline) for the whole run."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from urllib.parse import quote

import pytest

from faceit_etl_tests.conftest import BOT_PASSWORD, FLAT_SAMPLE
from faceit_etl_tests.test_cli import CLI, workdir  # noqa: F401 (workdir: a fixture)


def descendants(root: int) -> set[int]:
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):  # gone meanwhile
                continue
    found, todo = {root}, [root]
    while todo:
        pid = todo.pop()
        children = {child for child, parent in parents.items() if parent == pid} - found
        found |= children
        todo += children
    return found


def arguments_while_running(args: list[str], cwd: Path, env: dict) -> tuple[subprocess.CompletedProcess, list[str]]:
    """The command's outcome and every argument list seen under it while it ran."""
    seen = []
    with subprocess.Popen([CLI, *args], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          stdin=subprocess.DEVNULL, text=True) as process:
        while process.poll() is None:
            for pid in descendants(process.pid):
                try:
                    seen.append(Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").replace("\0", " "))
                except OSError:
                    continue
            time.sleep(0.02)
        output = process.stdout.read()
    return subprocess.CompletedProcess(args, process.returncode, output), seen


@pytest.mark.parametrize("form", ["separate", "equals", "abbreviated"])
def test_the_password_of_database_url_is_in_no_process_arguments_while_the_command_runs(workdir, password_database_url, form):
    url = password_database_url
    given = {"separate": ["--database-url", url], "equals": [f"--database-url={url}"], "abbreviated": ["--data", url]}[form]
    config = workdir / "settings.yaml"  # a database_url in --config loses to the flag, after the restart too
    config.write_text("database_url: postgresql://nobody@/absent?host=/nonexistent\n")
    env = {**os.environ, "MIGRATION_BACKUP_DIR": str(workdir / "backups")}
    env.pop("DATABASE_URL", None)
    env.pop("DAGSTER_HOME", None)

    done, seen = arguments_while_running(["--config", str(config), *given, "migrate", str(FLAT_SAMPLE)], workdir, env)

    assert done.returncode == 0, done.stdout
    users = len(json.loads(FLAT_SAMPLE.read_text())["users"])
    assert f"users: {users} inserted, 0 updated" in done.stdout  # into the flag's database
    restarted = [line for line in seen if "-m faceit_etl.cli" in line]
    assert restarted, seen  # the restarted process was seen, its arguments read
    assert all(line.endswith(f"-m faceit_etl.cli --config {config} migrate {FLAT_SAMPLE} ") for line in restarted), restarted
    for line in seen[seen.index(restarted[0]):]:
        assert quote(BOT_PASSWORD, safe="") not in line and BOT_PASSWORD not in line, line
