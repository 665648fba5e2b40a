"""migration.log is shared by every CLI command run in a folder: each line names its process and, once
the run is known, its run, so the lines of two migrations at once can be told apart."""

from __future__ import annotations

import os
import re
import subprocess

import dagster as dg

from faceit_etl.generate import generate_users
from faceit_etl_tests.conftest import write_json
from faceit_etl_tests.test_cli import CLI, instance_at, workdir  # noqa: F401 (a fixture)

LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (?:INFO|WARNING|ERROR) \[pid (\d+)(?: run ([0-9a-f]{8}))?\] ")


def test_the_lines_of_two_migrations_at_once_name_their_run(workdir, database_url, db):
    users = generate_users(400, seed=5)
    env = {**os.environ, "DATABASE_URL": database_url, "MIGRATION_BACKUP_DIR": str(workdir / "backups")}
    env.pop("DAGSTER_HOME", None)
    started = [
        subprocess.Popen([CLI, "migrate", str(write_json(workdir / f"{half}.json", {"users": part}))], cwd=workdir,
                         env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for half, part in (("first", users[:200]), ("second", users[200:]))
    ]
    outputs = [process.communicate(timeout=300) for process in started]
    assert [process.returncode for process in started] == [0, 0], outputs
    with instance_at(workdir) as instance:
        runs = {run.run_id[:8] for run in instance.get_runs(dg.RunsFilter(job_name="migrate_job"))}

    lines = (workdir / "migration.log").read_text().splitlines()
    labels = [LINE.match(line) for line in lines]
    assert all(labels), [line for line, label in zip(lines, labels) if not label]
    by_process: dict[str, list[tuple[str | None, str]]] = {}
    for line, label in zip(lines, labels):
        by_process.setdefault(label[1], []).append((label[2], line[label.end():]))
    assert sorted(by_process) == sorted(str(process.pid) for process in started)
    named = set()
    for (stdout, _), process in zip(outputs, started):
        said = by_process[str(process.pid)]
        run_id = re.search(r"^Migration run ([0-9a-f-]{36}) succeeded$", stdout, re.M)[1]
        named.add(run_id[:8])
        # Every line from the run's first progress line on names it: its copy counts and its outcome.
        first = next(i for i, (_, text) in enumerate(said) if text == "back up the file ...")
        assert {run for run, _ in said[first:]} == {run_id[:8]}
        assert (run_id[:8], "  copy users: 200 rows") in said and (run_id[:8], stdout.splitlines()[-1]) in said
        assert "[pid" not in stdout  # the terminal's lines are as they were
    assert named == runs and len(runs) == 2
