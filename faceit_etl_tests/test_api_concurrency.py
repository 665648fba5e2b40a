"""Verbs called at once in one process (threads, asyncio.gather) finish."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from faceit_etl.generate import generate_users
from faceit_etl.postgres import state
from faceit_etl_tests.conftest import write_json
from faceit_etl_tests.test_cli import instance_at, workdir  # noqa: F401 (workdir: a fixture)

USERS = 3_000
# Run in a process of its own: without the turns, its threads deadlock for good, and only a process can be
# ended on a timeout. It prints each verb's result (or its error) as JSON.
SCENARIO = r"""
import asyncio, json, sys, threading, time
from faceit_etl import DataMigration

def plain(result):
    if isinstance(result, BaseException):
        return {"raised": repr(result)}
    return {"verb": result.verb, "success": result.success, "run_id": result.run_id, "errors": result.errors,
            "accepted": result.accepted_entries, "tables": result.tables, "details": result.details}

a, b, how = sys.argv[1:]
if how == "threads":
    results = {}
    def call(name, path):
        try:
            results[name] = faceit_etl.migrate(path)
        except BaseException as exc:
            results[name] = exc
    threads = [threading.Thread(target=call, args=(name, path)) for name, path in (("a", a), ("b", b), ("a2", a))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print(json.dumps({"results": [plain(results[name]) for name in ("a", "b", "a2")]}))
else:
    async def main():
        ticks = []
        async def ticker():
            while True:
                ticks.append(time.monotonic())
                await asyncio.sleep(0.05)
        task = asyncio.create_task(ticker())
        first, second = DataMigration(json_file_path=a), DataMigration(json_file_path=b)
        results = await asyncio.gather(first.migrate(), second.migrate(), first.backup(), second.validate(),
                                       first.status(), return_exceptions=True)
        task.cancel()
        return results, max(y - x for x, y in zip(ticks, ticks[1:]))
    results, longest_gap = asyncio.run(main())
    print(json.dumps({"results": [plain(r) for r in results], "longest_gap": longest_gap}))
"""


def two_files(folder: Path) -> tuple[Path, Path]:
    """The same users twice, the second file's nicknames changed: a load of either changes the other's rows."""
    users = generate_users(USERS, seed=7)
    first = write_json(folder / "a.json", {"users": users})
    second = write_json(folder / "b.json", {"users": [{**u, "faceit_nickname": f"b{u['user_id']}"} for u in users]})
    return first, second


def nicknames(path: Path) -> list[tuple[int, str]]:
    return sorted((u["user_id"], u["faceit_nickname"]) for u in json.loads(path.read_text(encoding="utf-8"))["users"])


def run_scenario(workdir: Path, database_url: str, how: str, first: Path, second: Path) -> dict:
    env = {**os.environ, "DATABASE_URL": database_url, "MIGRATION_BACKUP_DIR": str(workdir / "backups")}
    for name in ("DAGSTER_HOME", "MIGRATION_MAX_CONCURRENT"):
        env.pop(name, None)
    try:
        done = subprocess.run([sys.executable, "-c", SCENARIO, str(first), str(second), how], cwd=workdir, env=env,
                              capture_output=True, text=True, timeout=420, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{how}: verbs called at once in one process did not finish in 420 s (deadlocked)")
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1])


def assert_loads_took_turns(workdir: Path, db, migrations: list[dict], files: list[Path]) -> None:
    """Every migration succeeded; each in migration_logs, in some order; the first inserted every user, each
    later one changed them only when its file differs from the one before; the tables hold the last file."""
    assert [(m["verb"], m["success"], m["errors"], m["accepted"]) for m in migrations] == \
        [("migrate", True, [], USERS)] * len(migrations)
    logged = list(reversed(state.latest_migrations(db, "public", limit=10)))  # oldest first
    assert sorted(m["run_id"] for m in logged) == sorted(m["run_id"] for m in migrations)
    assert [m["status"] for m in logged] == ["success"] * len(migrations)
    by_run = {m["run_id"]: (m, file) for m, file in zip(migrations, files)}
    in_order = [by_run[m["run_id"]] for m in logged]
    previous = None
    for result, file in in_order:
        users = result["tables"]["users"]
        expected = ("inserted" if previous is None else "unchanged" if file == previous else "updated")
        assert users[expected] == USERS, (expected, users)
        assert result["tables"]["user_subscriptions"]["inserted" if previous is None else "unchanged"] == USERS
        previous = file
    assert db.execute("SELECT user_id, faceit_nickname FROM users ORDER BY user_id").fetchall() == nicknames(previous)
    with instance_at(workdir) as instance:
        runs = instance.get_runs()
    assert sorted(r.run_id for r in runs) == sorted(m["run_id"] for m in migrations)
    assert {r.status for r in runs} == {dg.DagsterRunStatus.SUCCESS}  # none left NOT_STARTED or STARTED


def test_migrations_in_threads_of_one_process_take_turns_and_all_finish(workdir, database_url, db):
    first, second = two_files(workdir)

    done = run_scenario(workdir, database_url, "threads", first, second)

    assert_loads_took_turns(workdir, db, done["results"], [first, second, first])


def test_gathered_verbs_of_the_async_api_all_finish_and_the_loop_keeps_running(workdir, database_url, db):
    first, second = two_files(workdir)

    done = run_scenario(workdir, database_url, "gather", first, second)

    migrated, backed_up, validated, status = done["results"][:2], *done["results"][2:]
    assert_loads_took_turns(workdir, db, migrated, [first, second])
    assert (backed_up["verb"], backed_up["success"], backed_up["errors"]) == ("backup", True, [])
    # Taken before, between or after the loads: absent, or one file's users.
    assert set(backed_up["details"]["tables"]) == {"users", "user_subscriptions"}
    assert set(backed_up["details"]["tables"].values()) <= {None, USERS}
    assert (validated["verb"], validated["success"], validated["accepted"], validated["errors"]) == \
        ("validate", True, USERS, [])
    assert (status["verb"], status["success"], status["details"]["reachable"]) == ("status", True, True)
    assert done["longest_gap"] < 5  # the loop ran all along: 0.05 s ticks, a worker thread per verb
