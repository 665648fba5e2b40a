"""Verbs called at once in one process (threads, asyncio.gather) finish, and an error without a message
still says what and where."""

from __future__ import annotations

import importlib
import inspect
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

import faceit_etl
from faceit_etl import MigrationError, api, mapping
from faceit_etl.defs import assets
from faceit_etl.errors import described
from faceit_etl.generate import generate_users
from faceit_etl.postgres import state
from faceit_etl_tests.conftest import NESTED_SAMPLE, write_json
from faceit_etl_tests.test_api import here  # noqa: F401 (a fixture)
from faceit_etl_tests.test_cli import instance_at, workdir  # noqa: F401 (workdir: a fixture)

cli = importlib.import_module("faceit_etl.cli.main")  # the package exports its main() under the same name
USERS = 3_000
# Run in a process of its own: without the turns, its threads deadlock for good, and only a process can be
# ended on a timeout. It prints each verb's result (or its error) as JSON.
SCENARIO = r"""
import asyncio, json, sys, threading, time
import faceit_etl
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
    except subprocess.TimeoutExpired:  # failed outside this clause: the timeout's text repeats the whole script
        done = None
    if done is None:
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


# ---------------------------------------------------------------- an error without a message


def line_of(function, text: str) -> int:
    """The line of `text` in the function's source: where the error is said to be raised."""
    lines, first = inspect.getsourcelines(inspect.unwrap(function))
    return next(first + offset for offset, line in enumerate(lines) if text in line)


def silent_failure(*args, **kwargs):
    raise AssertionError()


def test_a_verbs_error_without_a_message_names_its_type_and_where_it_was_raised(monkeypatch, tmp_path):
    monkeypatch.setattr(api, "checked_source", silent_failure)

    with pytest.raises(MigrationError) as raised:
        faceit_etl.migrate(tmp_path / "data.json")

    where = line_of(api.migrate, "source = checked_source(path)")
    assert str(raised.value) == f"migrate: AssertionError without a message, raised at faceit_etl/api.py:{where}"
    assert type(raised.value.__cause__) is AssertionError


def test_a_steps_error_without_a_message_names_its_type_and_where_it_was_raised(here, db, monkeypatch):
    monkeypatch.setattr(mapping, "map_frames", silent_failure)  # the run's steps run in this process

    result = faceit_etl.migrate(NESTED_SAMPLE)

    where = line_of(assets.mapped_frames.op.compute_fn.decorated_fn, "mapped = mapping.map_frames(")
    assert (result.success, result.errors) == \
        (False, [f"mapped_frames: AssertionError without a message, raised at faceit_etl/defs/assets.py:{where}"])
    assert db.execute("SELECT to_regclass('users')").fetchone() == (None,)


def test_a_child_process_answers_an_error_without_a_message_with_its_type_and_place(monkeypatch, tmp_path):
    monkeypatch.setitem(api.VERBS, "status", silent_failure)
    (tmp_path / "call").write_bytes(pickle.dumps(("status", {})))

    api._serve(str(tmp_path))

    kind, error = pickle.loads((tmp_path / "answer").read_bytes())
    where = line_of(api._serve, 'answer = ("result", VERBS[verb](**kwargs))')
    assert (kind, type(error), str(error)) == \
        ("error", MigrationError, f"AssertionError without a message, raised at faceit_etl/api.py:{where}")


def test_the_clis_error_line_for_an_error_without_a_message_names_its_type_and_place(monkeypatch, tmp_path, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(cli.COMMANDS, "status", silent_failure)

    code = cli.main(["status"])

    where = line_of(cli._verb, "return COMMANDS[args.command](args)")
    assert code == cli.EXIT_FAILED
    out = capsys.readouterr()
    assert f"faceit-etl status failed: AssertionError without a message, raised at faceit_etl/cli/main.py:{where}\n" \
        in out.out + out.err


@pytest.mark.parametrize("message", ["", "  ", "\n\t"])
def test_an_error_without_a_message_or_traceback_still_says_its_type(message):
    assert described(AssertionError(message)) == \
        "AssertionError without a message, raised at an unknown place (the error carries no traceback)"
    assert described(KeyError("users")) == "KeyError: 'users'"
