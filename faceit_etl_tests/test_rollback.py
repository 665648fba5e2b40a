"""Snapshots before the load and rollback_job: real runs on a real PostgreSQL, no mocks.

The promise: source_backup snapshots `users` and `user_subscriptions` (when they exist) into the
run's private backup folder; rollback_job puts exactly that content back, in one verified
transaction, marks the run `rolled_back`, drops tables the run created, and touches nothing else.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from unittest import mock

import dagster as dg
import psycopg
import pytest

from faceit_etl.definitions import defs, get_migrate_job
from faceit_etl.defs.checks import CHECKS
from faceit_etl.generate import generate_users, write_data_file
from faceit_etl.mapping import map_frames
from faceit_etl.restore import RollbackError, RollbackRefused, find_backup, rollback_to_snapshot
from faceit_etl.source import read_source
from faceit_etl.postgres import runlog
from faceit_etl.postgres.fingerprint import fingerprint
from faceit_etl.postgres.load import load
from faceit_etl.postgres.lock import lock_schema
from faceit_etl.postgres.snapshot import SnapshotError, digest_table
from faceit_etl.validation.validate import validate_entries
from faceit_etl_tests.conftest import ASSETS, FLAT_SAMPLE, NESTED_SAMPLE, make_resources, write_json

TABLES = ("users", "user_subscriptions")
CLI = str(Path(sys.executable).parent / "faceit-etl")


# ------------------------------------------------------------------------------------ helpers


@pytest.fixture(scope="module")
def instance():
    """One Dagster test instance for the module's runs (a new one per run costs ~0.4 s)."""
    with dg.instance_for_test() as shared:
        yield shared


def run(settings, instance):
    """One migration (every asset and check), as test_pipeline.py runs it."""
    return dg.materialize(
        [*ASSETS, *CHECKS],
        resources=settings,
        instance=instance,
        raise_on_error=False,
    )


def migrate(settings, instance):
    result = run(settings, instance)
    assert result.success, [e.step_failure_data.error for e in result.get_step_failure_events()]
    return result


@contextlib.contextmanager
def target_in_environment(resources: dict) -> Iterator[None]:
    """The test's database as DATABASE_URL, where the tool's postgres resource reads it, for the run."""
    before = os.environ.get("DATABASE_URL")
    os.environ["DATABASE_URL"] = resources["postgres"].url
    try:
        yield
    finally:
        if before is None:
            del os.environ["DATABASE_URL"]
        else:
            os.environ["DATABASE_URL"] = before


def execute_rollback_job(resources: dict, instance, config: dict, **options):
    """rollback_job as the location defines it: its default run config (the launchpad's own options) fixes
    its config schema to the location's resources, so the test's settings go in as run config and its
    database in DATABASE_URL."""
    settings = resources["migration_settings"].model_dump(exclude_none=True)
    with target_in_environment(resources):
        return defs.resolve_job_def("rollback_job").execute_in_process(
            run_config={"ops": {"restore_tables": {"config": config}},
                        "resources": {"migration_settings": {"config": settings}}},
            instance=instance,
            **options,
        )


def roll_back(settings, instance, **config):
    """rollback_job through Dagster, with RollbackConfig fields as op config."""
    return execute_rollback_job(settings, instance, config, raise_on_error=False)


def rolled_back(settings, instance, **config):
    result = roll_back(settings, instance, **config)
    assert result.success, failure_of(result)
    return result


def failure_of(result) -> tuple[str, str]:
    """(exception class, message) of the user code error that failed the run."""
    events = result.get_step_failure_events()
    assert events, "the run did not fail"
    error = events[0].step_failure_data.error
    cause = error.cause or error
    head, _, message = cause.message.partition(": ")  # "package.module.Class: message\n"
    assert head.endswith(cause.cls_name), cause.message
    return cause.cls_name, message.strip()


def target_state(db) -> dict:
    """users and user_subscriptions in full (ids, created_at, updated_at included), or None if absent."""
    db.execute("SET TIME ZONE 'UTC'")
    state = {}
    for name in TABLES:
        if db.execute("SELECT to_regclass(%s)", [name]).fetchone()[0] is None:
            state[name] = None
            continue
        state[name] = {
            "digest": digest_table(db, "public", name),
            "rows": db.execute(f'SELECT * FROM "{name}" ORDER BY id').fetchall(),
        }
    state["tier_type"] = db.execute(
        "SELECT array_agg(enumlabel ORDER BY enumsortorder) FROM pg_enum e "
        "JOIN pg_type t ON t.oid = e.enumtypid WHERE t.typname = 'subscriptiontier'"
    ).fetchone()[0]
    return state


def database_state(db) -> dict:
    """Every table of the schema with its full content, for byte-identical comparisons."""
    db.execute("SET TIME ZONE 'UTC'")  # as digest_table leaves the session: same tzinfo in every repr
    tables = [r[0] for r in db.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")]
    return {t: sorted(map(str, db.execute(f'SELECT * FROM "{t}"').fetchall())) for t in tables}


def statuses(db) -> dict[str, str]:
    return dict(db.execute("SELECT metadata->>'run_id', status FROM migration_logs").fetchall())


def backup_folder(tmp_path: Path, run_id: str) -> Path:
    return (tmp_path / "backups" / run_id).resolve()


def manifest_of(tmp_path: Path, run_id: str) -> dict:
    return json.loads((backup_folder(tmp_path, run_id) / "manifest.json").read_text())


def rollback_materialization(result) -> dict:
    events = [e for e in result.all_events if e.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION]
    assert len(events) == 1
    materialization = events[0].event_specific_data.materialization
    assert materialization.asset_key == dg.AssetKey("postgres_tables")
    return {k: v.value for k, v in materialization.metadata.items()}


def restored(metadata: dict) -> dict:
    """The flat restored_<table>_rows / _sha256 figures, per table."""
    tables = {key[len("restored_"):-len("_rows")] for key in metadata if key.startswith("restored_") and key.endswith("_rows")}
    return {name: {"rows": metadata[f"restored_{name}_rows"], "sha256": metadata[f"restored_{name}_sha256"]} for name in tables}


def generated_files(tmp_path: Path) -> tuple[Path, Path]:
    """File A: 1,000 generated users. File B: 50 of them deleted, 30 edited, 50 new ones added."""
    users = generate_users(1050, seed=11, layout="nested")
    first = users[:1000]
    second = json.loads(json.dumps(users[50:1050]))
    for offset, user in enumerate(second[50:80]):
        user["faceit_nickname"] = f"renamed-{offset}-Ünï"
        user["total_requests"] += 1000
        user["language"] = "en" if user["language"] != "en" else "de"
        user["subscription"]["tier"] = "pro" if user["subscription"]["tier"] != "pro" else "free"
        user["subscription"]["daily_requests"] = 0
    file_a = write_json(tmp_path / "data_a.json", {"users": first, "analytics": {"total_users": 1000}})
    file_b = write_json(tmp_path / "data_b.json", {"users": second, "analytics": {"total_users": 1000}})
    return file_a, file_b


# ------------------------------------------------------------------------ 1. the backup folder


def test_each_run_folder_holds_a_private_manifest_and_copy_files(database_url, db, tmp_path, instance):
    first_settings = make_resources(database_url, NESTED_SAMPLE, tmp_path)
    first = migrate(first_settings, instance)

    manifest = manifest_of(tmp_path, first.run_id)
    assert manifest["run_id"] == first.run_id
    assert manifest["source"]["path"] == str(NESTED_SAMPLE.resolve())
    assert manifest["source"]["sha256"] == hashlib.sha256(NESTED_SAMPLE.read_bytes()).hexdigest()
    assert manifest["source"]["size_bytes"] == NESTED_SAMPLE.stat().st_size
    assert manifest["target"]["schema"] == "public"
    assert manifest["target"]["tables"] == {"users": None, "user_subscriptions": None}  # first run: nothing there
    assert manifest["target"]["tier_type_existed"] is False
    assert not list(backup_folder(tmp_path, first.run_id).glob("*.copy"))

    after_first = target_state(db)
    second_file = write_json(
        tmp_path / "second.json",
        {"users": json.loads(NESTED_SAMPLE.read_text())["users"][:20] + json.loads(FLAT_SAMPLE.read_text())["users"][:5]},
    )
    second = migrate(make_resources(database_url, second_file, tmp_path, truncate=True), instance)

    folder = backup_folder(tmp_path, second.run_id)
    manifest = manifest_of(tmp_path, second.run_id)
    assert manifest["run_id"] == second.run_id
    assert manifest["source"]["path"] == str(second_file.resolve())
    assert manifest["source"]["sha256"] == hashlib.sha256(second_file.read_bytes()).hexdigest()
    assert manifest["target"]["tier_type_existed"] is True
    for name in TABLES:
        snap = manifest["target"]["tables"][name]
        expected = after_first[name]["digest"]
        assert (snap["rows"], snap["sha256"]) == (expected.rows, expected.sha256) == (25, expected.sha256)
        copy = folder / snap["file"]
        assert copy == folder / f"{name}.copy"
        data = copy.read_bytes()
        assert hashlib.sha256(data).hexdigest() == snap["sha256"]  # the file's hash is the table's content hash
        assert data.count(b"\n") == 25
    users_copy = (folder / "users.copy").read_text().splitlines()
    assert sorted(line.split("\t")[0] for line in users_copy) == sorted(str(r[0]) for r in after_first["users"]["rows"])

    # the source was copied before the load started; the tables were snapshotted by that run's load
    assert manifest["target"]["run_id"] == second.run_id
    taken_at = datetime.fromisoformat(manifest["taken_at"])
    assert taken_at.tzinfo is not None
    started = db.execute(
        "SELECT start_time FROM migration_logs WHERE metadata->>'run_id' = %s", [second.run_id]
    ).fetchone()[0]
    assert taken_at <= started

    # personal data: the run folder 0700, every file in it 0600, no temp file left behind
    for run_id in (first.run_id, second.run_id):
        run_folder = backup_folder(tmp_path, run_id)
        assert stat.S_IMODE(run_folder.stat().st_mode) == 0o700
        files = sorted(p.name for p in run_folder.iterdir())
        expected_files = ["manifest.json", "source.json"] + (
            ["user_subscriptions.copy", "users.copy"] if run_id == second.run_id else []
        )
        assert files == sorted(expected_files)
        for path in run_folder.iterdir():
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


# ------------------------------------------------------------- 2. rollback restores exactly


def test_rollback_after_a_changed_file_restores_the_previous_state_exactly(database_url, db, tmp_path, instance):
    file_a, file_b = generated_files(tmp_path)
    first = migrate(make_resources(database_url, file_a, tmp_path), instance)
    after_a = target_state(db)
    assert after_a["users"]["digest"].rows == after_a["user_subscriptions"]["digest"].rows == 1000

    second = migrate(make_resources(database_url, file_b, tmp_path, truncate=True), instance)
    after_b = target_state(db)
    user_ids_b = {r[1] for r in after_b["users"]["rows"]}
    user_ids_a = {r[1] for r in after_a["users"]["rows"]}
    assert len(user_ids_a - user_ids_b) == 50 and len(user_ids_b - user_ids_a) == 50
    renamed = "SELECT count(*) FROM users WHERE faceit_nickname LIKE 'renamed-%'"
    assert db.execute(renamed).fetchone()[0] == 30
    assert after_b["users"]["digest"] != after_a["users"]["digest"]
    assert after_b["user_subscriptions"]["digest"] != after_a["user_subscriptions"]["digest"]

    result = rolled_back(make_resources(database_url, file_b, tmp_path), instance)

    assert target_state(db) == after_a  # every column of every row: ids, created_at, updated_at
    assert db.execute(renamed).fetchone()[0] == 0
    assert statuses(db) == {first.run_id: "success", second.run_id: "rolled_back"}
    assert rollback_materialization(result)["rolled_back_run"] == second.run_id
    metadata = db.execute(
        "SELECT metadata FROM migration_logs WHERE metadata->>'run_id' = %s", [second.run_id]
    ).fetchone()[0]
    assert metadata["rolled_back_to_snapshot"] == str(backup_folder(tmp_path, second.run_id))
    # the restored tables still have their keys: a new migration of B works on top of them
    again = migrate(make_resources(database_url, file_b, tmp_path, truncate=True), instance)
    assert {r[1] for r in target_state(db)["users"]["rows"]} == user_ids_b
    assert statuses(db)[again.run_id] == "success"


# ------------------------------------------------------- 3. the run that created the tables


def test_rolling_back_the_run_that_created_the_tables_drops_them(database_url, db, tmp_path, instance):
    users = json.loads(FLAT_SAMPLE.read_text())["users"][:10] + [{"user_id": "not-a-number"}]
    source = write_json(tmp_path / "with_reject.json", {"users": users})
    settings = make_resources(database_url, source, tmp_path, force=True)
    first = migrate(settings, instance)
    assert db.execute("SELECT count(*) FROM users").fetchone()[0] == 10
    rejects_before = db.execute("SELECT * FROM migration_rejects ORDER BY source_index").fetchall()
    assert len(rejects_before) == 1
    log_before = db.execute("SELECT id, total_items, processed_items, start_time FROM migration_logs").fetchall()

    result = rolled_back(settings, instance)

    assert db.execute("SELECT to_regclass('users'), to_regclass('user_subscriptions')").fetchone() == (None, None)
    assert db.execute("SELECT count(*) FROM pg_type WHERE typname = 'subscriptiontier'").fetchone()[0] == 0
    assert db.execute("SELECT * FROM migration_rejects ORDER BY source_index").fetchall() == rejects_before
    assert db.execute("SELECT id, total_items, processed_items, start_time FROM migration_logs").fetchall() == log_before
    assert statuses(db) == {first.run_id: "rolled_back"}
    assert {r[0] for r in db.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")} == {
        "migration_logs", "migration_rejects"
    }
    metadata = rollback_materialization(result)
    assert sorted(metadata["dropped_tables"].split(", ")) == ["user_subscriptions", "users"]
    assert restored(metadata) == {}
    assert (metadata["users_rows"], metadata["user_subscriptions_rows"]) == (0, 0)

    # "exactly what was there before": and the next migration starts from scratch again
    again = migrate(settings, instance)
    assert db.execute("SELECT count(*) FROM user_subscriptions").fetchone()[0] == 10
    assert manifest_of(tmp_path, again.run_id)["target"]["tables"] == {"users": None, "user_subscriptions": None}


# -------------------------------------------------------------- 4. choosing the snapshot


def three_migrations(database_url, db, tmp_path, instance) -> tuple[list, list]:
    """A (flat sample) on an empty database, B (nested sample), C (120 generated users); states after each."""
    generated = write_data_file(tmp_path / "generated.json", 120, seed=5)
    results, states = [], []
    for source in (FLAT_SAMPLE, NESTED_SAMPLE, generated):
        results.append(migrate(make_resources(database_url, source, tmp_path, truncate=bool(results)), instance))
        states.append(target_state(db))
    assert states[0] != states[1] != states[2] != states[0]
    return results, states


def test_rollback_picks_the_snapshot_named_by_run_id_log_id_or_folder(database_url, db, tmp_path, instance):
    (a, b, c), (after_a, _, after_c) = three_migrations(database_url, db, tmp_path, instance)
    settings = make_resources(database_url, FLAT_SAMPLE, tmp_path)
    folder = {r.run_id: backup_folder(tmp_path, r.run_id) for r in (a, b, c)}
    log_id = dict(db.execute("SELECT metadata->>'run_id', id::text FROM migration_logs").fetchall())

    with psycopg.connect(database_url) as conn:  # the choice alone, for every way of naming a snapshot
        def choose(**named) -> Path:
            return Path(find_backup(conn, "public", settings["migration_settings"].backup_dir, **named)).resolve()

        assert choose() == folder[c.run_id]  # default: the latest successful migration
        assert choose(migration_id=a.run_id) == folder[a.run_id]
        assert choose(migration_id=log_id[b.run_id]) == folder[b.run_id]
        assert choose(backup_path=str(folder[a.run_id])) == folder[a.run_id]
        assert choose(backup_path=str(folder[b.run_id] / "manifest.json")) == folder[b.run_id]

    by_run_id = rolled_back(settings, instance, migration_id=b.run_id)  # the snapshot taken before B, not C's
    assert target_state(db) == after_a
    assert rollback_materialization(by_run_id)["rolled_back_run"] == b.run_id
    # restoring the state before B undoes B and every later migration
    assert statuses(db) == {a.run_id: "success", b.run_id: "rolled_back", c.run_id: "rolled_back"}

    by_folder = rolled_back(settings, instance, backup_path=str(folder[a.run_id] / "manifest.json"))
    assert target_state(db) == {"users": None, "user_subscriptions": None, "tier_type": None}  # before A: nothing
    assert rollback_materialization(by_folder)["rolled_back_run"] == a.run_id
    assert statuses(db) == {a.run_id: "rolled_back", b.run_id: "rolled_back", c.run_id: "rolled_back"}
    assert target_state(db) != after_c

    missing = roll_back(settings, instance, migration_id="no-such-run")
    assert not missing.success
    assert failure_of(missing) == ("RollbackRefused", "no migration 'no-such-run' in public.migration_logs")


def test_rolling_back_twice_walks_back_one_successful_migration_each_time(database_url, db, tmp_path, instance):
    (a, b, c), (after_a, after_b, _) = three_migrations(database_url, db, tmp_path, instance)
    settings = make_resources(database_url, FLAT_SAMPLE, tmp_path)

    assert rollback_materialization(rolled_back(settings, instance))["rolled_back_run"] == c.run_id
    assert target_state(db) == after_b
    assert statuses(db) == {a.run_id: "success", b.run_id: "success", c.run_id: "rolled_back"}

    assert rollback_materialization(rolled_back(settings, instance))["rolled_back_run"] == b.run_id
    assert target_state(db) == after_a
    assert statuses(db) == {a.run_id: "success", b.run_id: "rolled_back", c.run_id: "rolled_back"}

    assert rollback_materialization(rolled_back(settings, instance))["rolled_back_run"] == a.run_id
    assert target_state(db) == {"users": None, "user_subscriptions": None, "tier_type": None}

    nothing_left = roll_back(settings, instance)
    assert not nothing_left.success
    assert failure_of(nothing_left) == (
        "RollbackRefused", "no successful migration to roll back (migration_logs has none)"
    )
    assert set(statuses(db).values()) == {"rolled_back"}


def test_a_migration_rolled_back_already_is_refused_by_name_or_folder_and_changes_nothing(
    database_url, db, tmp_path, instance
):
    """Restoring the snapshot of a migration undone already would undo the migrations in force now and bring
    back what its rollback undid (here: C's snapshot holds B, and B's undoes D)."""
    (a, b, c), (after_a, _, _) = three_migrations(database_url, db, tmp_path, instance)
    settings = make_resources(database_url, FLAT_SAMPLE, tmp_path)
    rolled_back(settings, instance, migration_id=b.run_id)
    d = migrate(make_resources(database_url, NESTED_SAMPLE, tmp_path), instance)
    in_force = target_state(db)
    assert in_force != after_a
    log_id = dict(db.execute("SELECT metadata->>'run_id', id::text FROM migration_logs").fetchall())
    before = statuses(db)
    assert before == {a.run_id: "success", b.run_id: "rolled_back", c.run_id: "rolled_back", d.run_id: "success"}

    for undone, named in ((c, {"migration_id": c.run_id}), (b, {"migration_id": log_id[b.run_id]}),
                          (b, {"backup_path": str(backup_folder(tmp_path, b.run_id))})):
        refused = roll_back(settings, instance, **named)

        assert not refused.success
        kind, message = failure_of(refused)
        assert kind == "RollbackRefused"
        assert message.startswith(
            f"{backup_folder(tmp_path, undone.run_id)}: migration {log_id[undone.run_id]} (run {undone.run_id}) "
            "was rolled back already at "), message
        assert message.endswith(
            ": nothing of it is in force to undo, and restoring its snapshot again would undo the migrations in "
            "force now and bring back what that rollback undid; nothing was changed. `faceit-etl status` lists "
            "the migrations in force"), message
        assert target_state(db) == in_force
        assert statuses(db) == before

    assert rollback_materialization(rolled_back(settings, instance, migration_id=d.run_id))["rolled_back_run"] == d.run_id
    assert target_state(db) == after_a


def test_of_two_rollbacks_at_once_the_later_migrations_one_is_refused_once_the_older_has_undone_it(
    database_url, db, tmp_path, instance
):
    """A rollback of B waiting for the lock while a rollback of A (older) holds it finds B undone once it gets
    the lock: restoring B's snapshot then would bring A back."""
    (a, b, _), _ = three_migrations(database_url, db, tmp_path, instance)
    outcome: dict[str, BaseException | None] = {}

    def roll_back_b() -> None:
        with psycopg.connect(database_url) as conn:
            try:
                rollback_to_snapshot(conn, "public", backup_folder(tmp_path, b.run_id))
                outcome["b"] = None
            except RollbackError as error:
                outcome["b"] = error

    with psycopg.connect(database_url) as first:
        lock_schema(first, "public")  # A's rollback holds the lock (it takes it again inside, at once)
        waiting = threading.Thread(target=roll_back_b)
        waiting.start()
        waiting.join(timeout=3)
        assert waiting.is_alive()  # B's rollback waits for the lock
        rollback_to_snapshot(first, "public", backup_folder(tmp_path, a.run_id))
        first.commit()
    waiting.join(timeout=60)

    assert isinstance(outcome["b"], RollbackRefused), outcome
    assert f"(run {b.run_id}) was rolled back already at " in str(outcome["b"])
    assert target_state(db) == {"users": None, "user_subscriptions": None, "tier_type": None}  # before A: nothing
    assert set(statuses(db).values()) == {"rolled_back"}


def test_a_rerun_that_found_the_tables_as_left_takes_no_snapshot_and_rollback_undoes_the_real_change(
    database_url, db, tmp_path, instance
):
    users = generate_users(60, seed=3)
    first_file = write_json(tmp_path / "first.json", {"users": users[:40]})
    second_file = write_json(tmp_path / "second.json", {"users": users})  # 20 more users
    migrate(make_resources(database_url, first_file, tmp_path), instance)
    after_first = target_state(db)
    changing = migrate(make_resources(database_url, second_file, tmp_path), instance)
    after_second = target_state(db)

    rerun = migrate(make_resources(database_url, second_file, tmp_path), instance)

    manifest = manifest_of(tmp_path, rerun.run_id)
    assert manifest["target"] == {
        "schema": "public",
        "unchanged_since_run": changing.run_id,
        "fingerprint": manifest["target"]["fingerprint"],
        "run_id": rerun.run_id,
    }
    assert not list(backup_folder(tmp_path, rerun.run_id).glob("*.copy"))  # no 2M-row snapshot of nothing
    assert target_state(db) == after_second
    settings = make_resources(database_url, second_file, tmp_path)

    named = roll_back(settings, instance, migration_id=rerun.run_id)
    assert not named.success
    assert failure_of(named) == (
        "RollbackRefused",
        f"{backup_folder(tmp_path, rerun.run_id)}: run {rerun.run_id} changed nothing (it found the tables "
        f"as run {changing.run_id} left them): roll back that run to undo its load",
    )
    assert target_state(db) == after_second

    assert rollback_materialization(rolled_back(settings, instance))["rolled_back_run"] == changing.run_id
    assert target_state(db) == after_first
    assert statuses(db)[changing.run_id] == statuses(db)[rerun.run_id] == "rolled_back"


# ------------------------------------------------------------- 5. no other table is touched


def test_rollback_leaves_an_unrelated_table_byte_identical(database_url, db, tmp_path, instance):
    migrate(make_resources(database_url, FLAT_SAMPLE, tmp_path), instance)
    after_a = target_state(db)
    db.execute(
        """CREATE TABLE bot_settings (id integer PRIMARY KEY, key text NOT NULL, value jsonb, changed_at timestamptz);
           INSERT INTO bot_settings VALUES (1, 'maintenance', 'false', '2025-01-02 03:04:05.123456+00'),
                                           (2, 'greeting', '"Привет"', NULL), (3, 'limits', '{"free": 10}', now())"""
    )
    second = migrate(make_resources(database_url, NESTED_SAMPLE, tmp_path, truncate=True), instance)
    untouched = "SELECT xmin::text, ctid::text, * FROM bot_settings ORDER BY id"  # a rewritten row changes xmin/ctid
    before = db.execute(untouched).fetchall()
    before_digest = digest_table(db, "public", "bot_settings")
    relfilenode = db.execute("SELECT relfilenode FROM pg_class WHERE relname = 'bot_settings'").fetchone()[0]

    rolled_back(make_resources(database_url, NESTED_SAMPLE, tmp_path), instance)

    assert target_state(db) == after_a
    assert statuses(db)[second.run_id] == "rolled_back"
    assert db.execute(untouched).fetchall() == before
    assert digest_table(db, "public", "bot_settings") == before_digest
    assert db.execute("SELECT relfilenode FROM pg_class WHERE relname = 'bot_settings'").fetchone()[0] == relfilenode


def test_a_foreign_key_from_another_table_refuses_the_rollback_in_plain_words_and_changes_nothing(
    database_url, db, tmp_path, instance
):
    migrate(make_resources(database_url, FLAT_SAMPLE, tmp_path), instance)
    second = migrate(make_resources(database_url, NESTED_SAMPLE, tmp_path, truncate=True), instance)
    db.execute(
        """CREATE TABLE user_notes (id serial PRIMARY KEY, user_id uuid NOT NULL REFERENCES users (id)
                                    ON DELETE CASCADE, note text);
           INSERT INTO user_notes (user_id, note) SELECT id, 'vip' FROM users ORDER BY user_id LIMIT 3"""
    )
    before = database_state(db)
    before_target = target_state(db)

    # Even when later changes may be discarded: PostgreSQL would refuse to empty the table.
    for options in ({}, {"discard_later_changes": True}):
        result = roll_back(make_resources(database_url, NESTED_SAMPLE, tmp_path), instance, **options)

        assert not result.success
        assert failure_of(result) == (
            "RollbackRefused",
            "refusing to roll back: other tables reference the bot's tables (public.user_notes (user_notes_user_id_fkey)), "
            "and restoring must empty them first; nothing was changed. Drop those foreign keys (or empty those "
            "tables) and roll back again",
        )
        assert database_state(db) == before
        assert target_state(db) == before_target
        assert statuses(db)[second.run_id] == "success"


# ----------------------------------------------------------------------- 6. no usable snapshot


def test_no_migration_logs_means_a_clear_rollback_error(database_url, db, tmp_path, instance):
    settings = make_resources(database_url, NESTED_SAMPLE, tmp_path)
    with psycopg.connect(database_url) as conn, pytest.raises(RollbackError) as raised:
        find_backup(conn, "public", settings["migration_settings"].backup_dir)
    assert str(raised.value) == "no migration has been recorded in public.migration_logs: nothing to roll back"

    result = roll_back(settings, instance)

    assert not result.success
    assert failure_of(result) == ("RollbackRefused", str(raised.value))
    assert database_state(db) == {}


def test_a_run_without_table_backup_cannot_be_rolled_back(database_url, db, tmp_path, instance):
    first = migrate(make_resources(database_url, FLAT_SAMPLE, tmp_path), instance)
    second = migrate(make_resources(database_url, NESTED_SAMPLE, tmp_path, truncate=True, backup_tables=False), instance)
    folder = backup_folder(tmp_path, second.run_id)
    assert "target" not in json.loads((folder / "manifest.json").read_text())
    assert not list(folder.glob("*.copy"))
    before = database_state(db)

    result = roll_back(make_resources(database_url, NESTED_SAMPLE, tmp_path), instance)

    assert not result.success
    kind, message = failure_of(result)
    assert kind == "RollbackRefused"
    assert str(folder) in message and "cannot roll back" in message
    with psycopg.connect(database_url) as conn, pytest.raises(RollbackError, match="holds no snapshot of the tables"):
        rollback_to_snapshot(conn, "public", folder)
    assert database_state(db) == before
    assert statuses(db) == {first.run_id: "success", second.run_id: "success"}


def tamper(path: Path) -> None:
    """Change one byte of a nickname: still valid COPY data, one row different."""
    lines = path.read_bytes().split(b"\n")
    for number, line in enumerate(lines):
        fields = line.split(b"\t")
        if len(fields) > 3 and fields[3] not in (b"\\N", b""):
            nickname = bytearray(fields[3])
            nickname[0] = ord("Q") if nickname[0] != ord("Q") else ord("Z")
            fields[3] = bytes(nickname)
            lines[number] = b"\t".join(fields)
            path.write_bytes(b"\n".join(lines))
            return
    raise AssertionError(f"{path}: no nickname to tamper with")


def test_a_tampered_snapshot_fails_verification_and_leaves_the_database_as_it_was(database_url, db, tmp_path, instance):
    migrate(make_resources(database_url, FLAT_SAMPLE, tmp_path), instance)
    second = migrate(make_resources(database_url, NESTED_SAMPLE, tmp_path, truncate=True), instance)
    folder = backup_folder(tmp_path, second.run_id)
    whole = (folder / "users.copy").read_bytes()
    tamper(folder / "users.copy")
    before = database_state(db)
    before_target = target_state(db)

    # The file is checked against its manifest before anything is written.
    altered = f"{folder}/users.copy: altered: it has the {len(whole)} bytes the manifest records, but not their sha256"
    with psycopg.connect(database_url) as conn, pytest.raises(RollbackRefused, match=re.escape(altered)):
        rollback_to_snapshot(conn, "public", folder)
    result = roll_back(make_resources(database_url, NESTED_SAMPLE, tmp_path), instance)

    assert not result.success
    kind, message = failure_of(result)
    assert (kind, message[:len(altered)]) == ("RollbackRefused", altered)
    assert database_state(db) == before
    assert target_state(db) == before_target
    assert statuses(db)[second.run_id] == "success"

    # A whole file the database alters as it is written back: the restored tables are verified too.
    (folder / "users.copy").write_bytes(whole)
    db.execute("CREATE FUNCTION shout() RETURNS trigger LANGUAGE plpgsql AS "
               "$$ BEGIN NEW.faceit_nickname := upper(NEW.faceit_nickname); RETURN NEW; END $$")
    db.execute("CREATE TRIGGER t_shout BEFORE INSERT ON users FOR EACH ROW EXECUTE FUNCTION shout()")
    before = database_state(db)
    with psycopg.connect(database_url) as conn, pytest.raises(SnapshotError, match="does not match the snapshot"):
        rollback_to_snapshot(conn, "public", folder)
    shouted = roll_back(make_resources(database_url, NESTED_SAMPLE, tmp_path), instance)

    assert not shouted.success
    kind, message = failure_of(shouted)
    assert (kind, "restored public.users does not match the snapshot") == ("SnapshotError", message[:49])
    assert database_state(db) == before
    assert statuses(db)[second.run_id] == "success"

    shutil.rmtree(folder)  # a pruned backup: the error names the folder it looked for
    gone = roll_back(make_resources(database_url, NESTED_SAMPLE, tmp_path), instance)
    assert not gone.success
    kind, message = failure_of(gone)
    assert (kind, message) == ("RollbackRefused", f"{folder}: no manifest.json here; not a faceit-etl backup folder; "
                                                  "nothing was changed")
    with pytest.raises(RollbackRefused):
        rollback_to_snapshot(db, "public", folder)
    assert database_state(db) == before


# --------------------------------------------------------------- 7. rollback_job in Dagster


def test_rollback_job_records_a_materialization_of_postgres_tables(database_url, db, tmp_path):
    settings = make_resources(database_url, FLAT_SAMPLE, tmp_path)
    with dg.instance_for_test() as instance:
        migrate(settings, instance)
        after_a = target_state(db)
        second = migrate(make_resources(database_url, NESTED_SAMPLE, tmp_path, truncate=True), instance)
        manifest = manifest_of(tmp_path, second.run_id)

        result = execute_rollback_job(settings, instance, {"migration_id": second.run_id})

        assert result.success
        metadata = rollback_materialization(result)
        assert metadata["rolled_back_run"] == second.run_id
        assert metadata["snapshot"] == str(backup_folder(tmp_path, second.run_id))
        assert restored(metadata) == {
            name: {"rows": snap["rows"], "sha256": snap["sha256"]} for name, snap in manifest["target"]["tables"].items()
        }
        assert (metadata["users_rows"], metadata["user_subscriptions_rows"]) == (
            manifest["target"]["tables"]["users"]["rows"], manifest["target"]["tables"]["user_subscriptions"]["rows"]
        )
        assert metadata["dagster/table_name"] == "public.users"
        assert metadata["dropped_tables"] == "none"
        latest = instance.get_latest_materialization_event(dg.AssetKey("postgres_tables"))
        assert latest.run_id == result.run_id
        assert latest.asset_materialization.metadata["rolled_back_run"].value == second.run_id
        # Its data version names the snapshot; no version of the file or of any step made from it made it.
        tags = latest.asset_materialization.tags
        restored_to = f"rolled back to the snapshot taken before run {second.run_id}"
        assert tags["dagster/data_version"] == restored_to
        assert {k: v for k, v in tags.items() if k.startswith("dagster/input_data_version/")} == {
            f"dagster/input_data_version/{parent}": f"none: {restored_to}"
            for parent in ("bot_data_file", "source_backup", "validated_frame", "mapped_users", "mapped_subscriptions")
        }
    assert target_state(db) == after_a
    assert statuses(db)[second.run_id] == "rolled_back"


# ------------------------------------------------------------- 8. re-execution from failure


def job_run(instance, settings, **options):
    """migrate_job as the CLI and the UI launch it, so that it can be re-executed: the target in
    DATABASE_URL, where the run's process reads it."""
    config = settings["migration_settings"].model_dump(include={"source_path", "backup_dir"})
    with mock.patch.dict(os.environ, {"DATABASE_URL": settings["postgres"].url}):
        return dg.execute_job(
            dg.reconstructable(get_migrate_job),
            instance=instance,
            run_config={"resources": {"migration_settings": {"config": config}}},
            raise_on_error=False,
            **options,
        )


def from_failure(instance, settings, failed):
    return job_run(instance, settings, reexecution_options=dg.ReexecutionOptions.from_failure(failed.run_id, instance))


def a_load_that_fails_on_a_32_bit_column(database_url, db, tmp_path, instance):
    """A baseline whose ids fit 32 bits, the column made 32-bit, then a file that overflows it."""
    users = generate_users(200, seed=13)
    small = [u for u in users if u["user_id"] < 2**31][:40]
    big = [u for u in users if u["user_id"] >= 2**31][:60]
    baseline = job_run(instance, make_resources(database_url, write_json(tmp_path / "small.json", {"users": small}), tmp_path))
    assert baseline.success
    db.execute("ALTER TABLE users ALTER COLUMN user_id TYPE integer")
    settings = make_resources(database_url, write_json(tmp_path / "big.json", {"users": small + big}), tmp_path)
    failed = job_run(instance, settings)
    assert not failed.success
    assert [e.step_key for e in failed.get_step_failure_events()] == ["postgres_tables"]
    return baseline, settings, failed


def test_rollback_works_after_re_execution_from_failure(database_url, db, tmp_path):
    with dg.instance_for_test() as instance:
        baseline, settings, failed = a_load_that_fails_on_a_32_bit_column(database_url, db, tmp_path, instance)
        db.execute("ALTER TABLE users ALTER COLUMN user_id TYPE bigint")  # the fix the error asks for
        before = target_state(db)
        # The failed load's snapshot describes no migration: rollback refuses it.
        refused = roll_back(settings, instance, migration_id=failed.run_id)
        assert failure_of(refused) == (
            "RollbackRefused",
            f"{backup_folder(tmp_path, failed.run_id)}: the load of run {failed.run_id} did not commit "
            "(its migration is 'failed'): it changed nothing, there is nothing of it to roll back",
        )
        assert target_state(db) == before

        again = from_failure(instance, settings, failed)

        assert again.success
        assert instance.get_run_by_id(again.run_id).root_run_id == failed.run_id
        assert db.execute("SELECT count(*) FROM users").fetchone()[0] == 100
        # The re-execution read its parent's source copy and snapshotted into a folder of its own.
        manifest = manifest_of(tmp_path, again.run_id)
        assert (manifest["root_run_id"], manifest["target"]["run_id"]) == (failed.run_id, again.run_id)
        assert "source" not in manifest and not (backup_folder(tmp_path, again.run_id) / "source.json").exists()
        assert manifest_of(tmp_path, failed.run_id)["target"]["run_id"] == failed.run_id

        result = rolled_back(settings, instance)

        assert rollback_materialization(result)["rolled_back_run"] == again.run_id
        assert target_state(db) == before
        assert statuses(db) == {baseline.run_id: "success", failed.run_id: "failed", again.run_id: "rolled_back"}


def test_re_executing_a_run_whose_step_values_were_pruned_says_to_start_a_new_run(database_url, db, tmp_path):
    with dg.instance_for_test() as instance:
        _, settings, failed = a_load_that_fails_on_a_32_bit_column(database_url, db, tmp_path, instance)
        db.execute("ALTER TABLE users ALTER COLUMN user_id TYPE bigint")
        before = target_state(db)
        shutil.rmtree(Path(instance.storage_directory()) / "runs" / failed.run_id)  # as pruning leaves it

        again = from_failure(instance, settings, failed)

        assert not again.success
        kind, message = failure_of(again)
        assert kind == "StepValuesGone"  # the first of the load's inputs that Dagster asks for
        assert re.fullmatch(
            rf"the value of (source_backup|validated_frame|mapped_users|mapped_subscriptions) from run {failed.run_id} is "
            r"gone \(step values are kept for the newest 5 runs and the latest failed run of each target, until a later "
            r"run of it succeeds\), so this run cannot be re-executed or resumed\. Start a new run instead\.",
            message,
        ), message
        assert target_state(db) == before


def test_re_executing_a_successful_run_in_full_keeps_its_snapshot_for_rollback(database_url, db, tmp_path):
    users = generate_users(80, seed=17)
    with dg.instance_for_test() as instance:
        assert job_run(instance, make_resources(database_url, write_json(tmp_path / "a.json", {"users": users[:40]}), tmp_path)).success
        after_first = target_state(db)
        settings = make_resources(database_url, write_json(tmp_path / "b.json", {"users": users}), tmp_path)
        changing = job_run(instance, settings)
        assert changing.success

        again = job_run(instance, settings, reexecution_options=dg.ReexecutionOptions(parent_run_id=changing.run_id))

        assert again.success  # it copied the file again and found the tables as its root run left them
        assert manifest_of(tmp_path, again.run_id)["target"]["unchanged_since_run"] == changing.run_id
        assert manifest_of(tmp_path, changing.run_id)["target"]["run_id"] == changing.run_id
        result = rolled_back(settings, instance)
        assert rollback_materialization(result)["rolled_back_run"] == changing.run_id
        assert target_state(db) == after_first


# ------------------------------------------------------------ 9. rows written since the migration


def test_rollback_refuses_to_discard_rows_written_since_the_migration_unless_told(database_url, db, tmp_path, instance):
    users = generate_users(60, seed=4)
    settings = make_resources(database_url, write_json(tmp_path / "first.json", {"users": users[:40]}), tmp_path)
    first = migrate(settings, instance)
    after_first = target_state(db)
    second_file = write_json(tmp_path / "second.json", {"users": users})
    second = migrate(make_resources(database_url, second_file, tmp_path), instance)  # upsert over the first
    users_then = db.execute("SELECT count(*) FROM users").fetchone()[0]
    subscriptions_then = db.execute("SELECT count(*) FROM user_subscriptions").fetchone()[0]
    db.execute("INSERT INTO users (id, user_id, faceit_nickname) VALUES (gen_random_uuid(), 424242, 'written by bot')")
    before = database_state(db)

    refused = roll_back(settings, instance)

    assert not refused.success
    assert failure_of(refused) == (
        "RollbackRefused",
        f"the tables changed since run {second.run_id} committed (users: {users_then + 1} rows now, {users_then} "
        "then): restoring the snapshot would discard those changes; nothing was changed. Roll back with "
        "--discard-later-changes (rollback_job: discard_later_changes) to restore it anyway",
    )
    assert database_state(db) == before
    assert statuses(db) == {first.run_id: "success", second.run_id: "success"}

    # The same number of rows, one cell changed: still a change, named as such.
    db.execute("DELETE FROM users WHERE user_id = 424242")
    db.execute(
        "UPDATE user_subscriptions SET daily_requests = daily_requests + 1 "
        "WHERE id = (SELECT id FROM user_subscriptions ORDER BY id LIMIT 1)"
    )
    changed = roll_back(settings, instance)
    assert failure_of(changed)[1].startswith(
        f"the tables changed since run {second.run_id} committed (user_subscriptions: {subscriptions_then} rows "
        f"now, {subscriptions_then} then, contents differ): "
    )

    rolled_back(settings, instance, discard_later_changes=True)
    assert target_state(db) == after_first
    assert statuses(db) == {first.run_id: "success", second.run_id: "rolled_back"}
    # The tables are again as the first migration left them: its own rollback needs no permission.
    rolled_back(settings, instance)
    assert target_state(db) == {"users": None, "user_subscriptions": None, "tier_type": None}


def test_every_committed_load_records_the_fingerprint_of_the_tables_it_left(database_url, db, tmp_path, instance):
    """Empty target, upsert, recognised re-run, truncate, and a load given no input identity."""
    users = generate_users(60, seed=9)
    first, second = (write_json(tmp_path / f"{n}.json", {"users": users[:n]}) for n in (40, 60))
    runs = [
        (first, {}),  # empty target: filled the fast way
        (second, {}),  # upsert
        (second, {}),  # recognised: nothing written
        (FLAT_SAMPLE, {"truncate": True}),
    ]

    def recorded(run_id: str) -> dict:
        return db.execute(
            "SELECT metadata->'fingerprint' FROM migration_logs WHERE metadata->>'run_id' = %s", [run_id]
        ).fetchone()[0]

    db.execute("SET TIME ZONE 'Asia/Tokyo'")  # another zone than the loads': the same fingerprint
    for source, options in runs:
        result = migrate(make_resources(database_url, source, tmp_path, **options), instance)
        assert recorded(result.run_id) == fingerprint(db, "public"), source
    assert db.execute("SELECT current_setting('TimeZone')").fetchone()[0] == "Asia/Tokyo"


    # A load given no input identity (the load's own API): it records its fingerprint too.
    outcome = validate_entries(read_source(second))
    log = runlog.start(db, "public", run_id="no-identity", total_items=outcome.input_count, metadata={})
    with psycopg.connect(database_url) as conn:
        load(conn, "public", map_frames(outcome.valid), outcome.rejects, "no-identity", log=log)
    assert recorded("no-identity") == fingerprint(db, "public")
    assert fingerprint(db, "public")["users"].startswith(f"{len(outcome.valid) + 25}:")  # and the flat sample's 25


def test_rollback_recreates_the_schema_dropped_since_its_snapshot(database_url, db, tmp_path, instance):
    db.execute("CREATE SCHEMA nb")
    migrate(make_resources(database_url, FLAT_SAMPLE, tmp_path, target_schema="nb"), instance)
    with psycopg.connect(database_url) as conn:
        after_first = {name: digest_table(conn, "nb", name) for name in TABLES}
    labels = db.execute("SELECT enum_range(NULL::nb.subscriptiontier)::text").fetchone()[0]
    settings = make_resources(database_url, NESTED_SAMPLE, tmp_path, target_schema="nb", truncate=True)
    second = migrate(settings, instance)
    db.execute("DROP SCHEMA nb CASCADE")

    result = rolled_back(settings, instance, backup_path=str(backup_folder(tmp_path, second.run_id)))

    assert restored(rollback_materialization(result)) == {
        name: {"rows": digest.rows, "sha256": digest.sha256} for name, digest in after_first.items()
    }
    with psycopg.connect(database_url) as conn:
        assert {name: digest_table(conn, "nb", name) for name in TABLES} == after_first
        assert conn.execute("SELECT enum_range(NULL::nb.subscriptiontier)::text").fetchone()[0] == labels


@pytest.mark.db
def test_the_cli_refuses_a_rollback_over_later_rows_and_discards_them_only_when_told(database_url, db, tmp_path):
    """The reported case: a row the bot wrote after the migration, in a schema of its own."""
    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    source = write_json(tmp_path / "t_d.json", {"users": [{"user_id": 1, "faceit_nickname": "z"}]})
    env = {**os.environ, "DATABASE_URL": database_url, "MIGRATION_BACKUP_DIR": str(tmp_path / "backups")}
    env.pop("DAGSTER_HOME", None)

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([CLI, *args, "--target-schema", "cc5"], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=300, stdin=subprocess.DEVNULL)

    db.execute("CREATE SCHEMA cc5")
    assert cli("-q", "migrate", str(source)).returncode == 0
    run_id = db.execute("SELECT metadata->>'run_id' FROM cc5.migration_logs").fetchone()[0]
    db.execute("INSERT INTO cc5.users (id, user_id, faceit_nickname) "
               "VALUES (gen_random_uuid(), 424242, 'written by bot after migration')")

    refused = cli("rollback", "--confirm")

    assert refused.returncode == 2, refused.stdout + refused.stderr  # a refusal, like any unusable request
    assert refused.stdout.strip() == (
        f"rollback refused, nothing changed: the tables changed since run {run_id} committed (users: 2 rows now, "
        "1 then): restoring the snapshot would discard those changes; nothing was changed. Roll back with "
        "--discard-later-changes (rollback_job: discard_later_changes) to restore it anyway"
    ), refused.stdout + refused.stderr
    assert db.execute("SELECT user_id FROM cc5.users ORDER BY user_id").fetchall() == [(1,), (424242,)]

    done = cli("rollback", "--confirm", "--discard-later-changes")

    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines()[0] == f"Rolled back to the snapshot taken before run {run_id}"
    assert db.execute("SELECT to_regclass('cc5.users')").fetchone()[0] is None  # the run created the tables


def test_rolling_back_the_creating_run_under_a_view_or_a_column_of_the_enum_is_refused_in_plain_words(
    database_url, db, tmp_path, instance
):
    settings = make_resources(database_url, FLAT_SAMPLE, tmp_path)
    created = migrate(settings, instance)
    db.execute("CREATE VIEW pro_users AS SELECT u.user_id FROM users u JOIN user_subscriptions s ON s.user_id = u.id")
    db.execute("CREATE TABLE tier_prices (tier subscriptiontier PRIMARY KEY, price numeric)")
    before = database_state(db), target_state(db)

    refused = roll_back(settings, instance)

    assert failure_of(refused) == (
        "RollbackRefused",
        "refusing to roll back: the snapshot is from before the tables were created, and public.tier_prices.tier, "
        "view public.pro_users depend(s) on what dropping them removes; nothing was changed. Drop those first and "
        "roll back again",
    )
    assert (database_state(db), target_state(db)) == before
    assert statuses(db) == {created.run_id: "success"}

    db.execute("DROP VIEW pro_users; DROP TABLE tier_prices")
    rolled_back(settings, instance)
    assert target_state(db) == {"users": None, "user_subscriptions": None, "tier_type": None}


# ------------------------------------------------------------- a snapshot from another database


@pytest.fixture
def other_database_url(database_url, postgres_server_url):
    """A second fresh database on the same server: same system identifier, another name."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    name = conninfo_to_dict(database_url)["dbname"] + "_other"
    with psycopg.connect(postgres_server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield make_conninfo(postgres_server_url, dbname=name)
    with psycopg.connect(postgres_server_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def test_a_snapshot_of_another_database_is_refused_and_changes_nothing(
    database_url, other_database_url, db, tmp_path, instance
):
    """Each database migrated, then the other's run snapshot named: its rows would replace these."""
    other = migrate(make_resources(other_database_url, NESTED_SAMPLE, tmp_path), instance)
    settings = make_resources(database_url, FLAT_SAMPLE, tmp_path)
    here = migrate(settings, instance)
    taken = manifest_of(tmp_path, other.run_id)["target"]["database"]
    with psycopg.connect(other_database_url) as conn:
        system, name = conn.execute("SELECT (pg_control_system()).system_identifier::text, current_database()").fetchone()
    assert taken == {"system_identifier": system, "name": name}
    this = db.execute("SELECT current_database()").fetchone()[0]
    before = database_state(db), target_state(db)

    refused = roll_back(settings, instance, backup_path=str(backup_folder(tmp_path, other.run_id)))

    assert failure_of(refused) == (
        "RollbackRefused",
        f"{backup_folder(tmp_path, other.run_id)}: the snapshot was taken from database {name!r} (system {system}), "
        f"not from this one, {this!r} (system {system}): restoring it would replace this database's rows with "
        "another's; nothing was changed",
    )
    assert (database_state(db), target_state(db)) == before
    assert statuses(db) == {here.run_id: "success"}


def test_a_snapshot_that_records_no_database_is_restored_and_says_its_origin_was_unchecked(
    database_url, db, tmp_path, instance
):
    """Snapshots written before the origin was recorded stay usable, with the check's absence stated."""
    settings = make_resources(database_url, FLAT_SAMPLE, tmp_path)
    migrate(settings, instance)
    after_first = target_state(db)
    second = migrate(make_resources(database_url, NESTED_SAMPLE, tmp_path, truncate=True), instance)
    folder = backup_folder(tmp_path, second.run_id)
    manifest = json.loads((folder / "manifest.json").read_text())
    del manifest["target"]["database"]
    (folder / "manifest.json").write_text(json.dumps(manifest))

    result = rolled_back(settings, instance, backup_path=str(folder))

    assert rollback_materialization(result)["origin_checked"] is False
    assert target_state(db) == after_first
