"""A rollback that names no snapshot undoes the latest migration that changed something, however it is
started: a later migration that wrote no row (it only kept the users its file lacks) is passed over."""

from __future__ import annotations

import os
import subprocess

import pytest

import faceit_etl
from faceit_etl import api
from faceit_etl.definitions import load_definitions
from faceit_etl_tests.conftest import write_json
from faceit_etl_tests.test_api import counts, here, table_users  # noqa: F401 (here: a fixture)
from faceit_etl_tests.test_cli import CLI, tables_digest, workdir  # noqa: F401 (workdir: a fixture)


def rolled_back_run(surface: str, folder) -> str:
    """Roll back with no snapshot named; the run whose snapshot was restored."""
    if surface == "cli":
        done = subprocess.run([CLI, "rollback", "--confirm"], cwd=folder, env=dict(os.environ), capture_output=True,
                              text=True, timeout=300, stdin=subprocess.DEVNULL)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout.splitlines()[0].removeprefix("Rolled back to the snapshot taken before run ")
    if surface == "api":
        undone = faceit_etl.rollback()
        assert undone.success, undone.errors
        return undone.details["rolled_back_run"]
    with api.open_instance() as instance:
        launched = load_definitions().resolve_job_def("rollback_job").execute_in_process(instance=instance)
        [event] = launched.get_asset_materialization_events()
        return event.materialization.metadata["rolled_back_run"].value


@pytest.mark.parametrize("surface", ["cli", "api", "rollback_job"])
def test_the_default_rollback_passes_over_a_later_migration_that_changed_nothing(here, db, surface):
    first = [{"user_id": i, "faceit_nickname": f"u{i}"} for i in (1, 2, 3)]
    second = [{"user_id": 1, "faceit_nickname": "renamed"}, *first[1:], {"user_id": 4, "faceit_nickname": "u4"}]
    loaded = faceit_etl.migrate(write_json(here / "a.json", {"users": first}))
    assert loaded.success
    after_first = tables_digest(db)
    changing = faceit_etl.migrate(write_json(here / "b.json", {"users": second}))
    assert changing.tables["users"] == counts(inserted=1, updated=1, unchanged=2)
    # B without its new user: nothing to write, the user the file lacks is kept.
    keeping = faceit_etl.migrate(write_json(here / "b_but_one.json", {"users": second[:3]}))
    assert keeping.tables["users"] == counts(unchanged=3, kept_absent=1)

    assert rolled_back_run(surface, here) == changing.run_id

    assert table_users(db) == [(1, "u1"), (2, "u2"), (3, "u3")]
    assert tables_digest(db) == after_first
    assert dict(db.execute("SELECT metadata->>'run_id', status FROM migration_logs").fetchall()) == {
        loaded.run_id: "success",
        changing.run_id: "rolled_back",
        keeping.run_id: "rolled_back",
    }


def test_the_default_rollback_undoes_a_later_migration_that_only_deleted_users(here, db):
    """A prune that deleted the users its file lacks and wrote nothing else changed the tables."""
    users = [{"user_id": i, "faceit_nickname": f"u{i}"} for i in (1, 2, 3, 4)]
    loaded = faceit_etl.migrate(write_json(here / "a.json", {"users": users}))
    assert loaded.success
    after_first = tables_digest(db)
    pruning = faceit_etl.migrate(write_json(here / "b.json", {"users": users[:3]}), prune=True, max_prune_fraction=0.5)
    assert pruning.tables["users"] == counts(unchanged=3, deleted=1)

    assert rolled_back_run("api", here) == pruning.run_id

    assert table_users(db) == [(1, "u1"), (2, "u2"), (3, "u3"), (4, "u4")]
    assert tables_digest(db) == after_first
    assert dict(db.execute("SELECT metadata->>'run_id', status FROM migration_logs").fetchall()) == {
        loaded.run_id: "success", pruning.run_id: "rolled_back"}
