"""A dry run predicts the real run: across the cases the real-run tests use, a dry run's outcome,
counts and check verdicts equal those of a real run on the same database, and the dry run leaves
that database exactly as it was (schemas, types, relations and every row).

Each case prepares a database, runs `migrate_job` dry, proves nothing changed, then runs it for
real on that same (so identical) database and compares.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
import pytest

from faceit_etl.definitions import get_migrate_job
from faceit_etl.defs.checks import TABLE_CHECK_SPECS
from faceit_etl.generate import generate_users
from faceit_etl_tests.conftest import FLAT_SAMPLE, NESTED_SAMPLE, make_resources, write_json
from faceit_etl_tests.test_load import ALEMBIC_DDL, small_id_entries
from faceit_etl_tests.test_pipeline import checks_by_name, dry_run_of, materialized, metadata_of, nasty_file, run

LOAD_FACTS = (
    *(f"{table}_{count}" for table in ("users", "subscriptions")
      for count in ("inserted", "updated", "unchanged", "kept_absent", "kept_rejected", "deleted")),
    "pruned", "absent_user_ids", "rejected_entries", "created_tables", "truncated", "compared", "dagster/row_count",
)


def database_state(db) -> dict:
    """Everything a run could leave behind outside PostgreSQL's own schemas: schemas, types,
    relations (with their storage file, which a TRUNCATE would replace) and each table's rows with
    the transaction that wrote them."""
    user_namespaces = "n.nspname NOT LIKE 'pg\\_%' AND n.nspname <> 'information_schema'"
    state = {
        "schemas": db.execute(f"SELECT nspname FROM pg_namespace n WHERE {user_namespaces} ORDER BY 1").fetchall(),
        "types": db.execute(
            f"SELECT n.nspname, t.typname, t.typtype FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace "
            f"WHERE {user_namespaces} ORDER BY 1, 2"
        ).fetchall(),
        "relations": db.execute(
            f"SELECT n.nspname, c.relname, c.relkind, c.relfilenode::bigint FROM pg_class c "
            f"JOIN pg_namespace n ON n.oid = c.relnamespace WHERE {user_namespaces} ORDER BY 1, 2"
        ).fetchall(),
    }
    for schema, name, kind, _ in state["relations"]:
        if kind == "r":
            rows = db.execute(f'SELECT xmin::text, t::text FROM "{schema}"."{name}" t').fetchall()
            state[f"{schema}.{name}"] = sorted(rows)
    return state


TABLE_CHECKS = {spec.name for spec in TABLE_CHECK_SPECS} | {"column_schema_change"}


def outcome(result) -> dict:
    """What a run predicts: success, the load's counts (or its failure), every check's verdict: those
    on the tables as the load's transaction took them (a dry run records them with its observation,
    never as the checks' results), the others as the checks' results."""
    failures = [  # up to the advice, which differs by design: a dry run is never resumed, so it offers no resume
        (e.step_key, e.step_failure_data.error.message.splitlines()[0].split(" Widen the columns, then ")[0])
        for e in result.get_step_failure_events()
    ]
    loaded = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    dry = any("dry_run" in e.event_specific_data.asset_observation.metadata for e in result.get_asset_observation_events())
    load = dry_run_of(result) if dry else metadata_of(result, "postgres_tables") if "postgres_tables" in loaded else None
    return {
        "success": result.success,
        "failures": failures,
        "load": {k: load.get(k) for k in LOAD_FACTS} if load else None,  # absent_user_ids: only when there are some
        "verdicts": load["verification"] if load else _failure_verdicts(result),
        "checks": {
            name: (
                e.passed,
                e.severity,
                e.description,
                {k: v.value for k, v in e.metadata.items() if k != "dry_run"},
            )
            for name, e in sorted(checks_by_name(result).items())
            if name not in TABLE_CHECKS
        },
    }


def _failure_verdicts(result) -> dict | None:
    """The verdicts a failed load took before refusing to commit, when it got that far."""
    for event in result.get_step_failure_events():
        failure = event.step_failure_data.user_failure_data
        if failure and "verification" in failure.metadata:
            return failure.metadata["verification"].value
    return None


def entries(path: Path) -> list[dict]:
    return json.loads(path.read_text())["users"]


def document(tmp_path: Path, name: str, users: list[dict]) -> Path:
    return write_json(tmp_path / name, {"users": users, "analytics": {"total_users": len(users), "daily_stats": {}}})


@dataclass
class Case:
    """`prepare` readies the database (it may run migrations) and returns the file to migrate."""

    prepare: Callable[..., Path]
    settings: dict = field(default_factory=dict)
    succeeds: bool = True
    load_fails_with: str | None = None  # part of the load step's error


def fresh_database(db, database_url, tmp_path) -> Path:
    return NESTED_SAMPLE


def existing_rows(db, database_url, tmp_path) -> Path:
    """50 users loaded; the file changes 10 of them, keeps 30 as they are and adds 10."""
    users = generate_users(60, seed=11)
    assert run(make_resources(database_url, document(tmp_path, "first.json", users[:50]), tmp_path)).success
    for user in users[:10]:
        user["language"] = "en" if user["language"] != "en" else "ru"
        user["subscription"]["daily_requests"] += 1
    return document(tmp_path, "second.json", users)


def rows_the_file_lacks(db, database_url, tmp_path) -> Path:
    assert run(make_resources(database_url, FLAT_SAMPLE, tmp_path)).success
    return NESTED_SAMPLE


def loaded_before(db, database_url, tmp_path) -> Path:
    """The same file again: recognised, nothing compared or written."""
    source = document(tmp_path, "data.json", entries(NESTED_SAMPLE))
    assert run(make_resources(database_url, source, tmp_path)).success
    return source


def rejects_on_existing_rows(db, database_url, tmp_path) -> Path:
    """3 of the file's 5 valid users loaded, one of them since changed in the file."""
    nasty = nasty_file(tmp_path)
    loaded = entries(nasty)[:3]
    loaded[1] = {**loaded[1], "total_requests": loaded[1]["total_requests"] + 5}
    assert run(make_resources(database_url, document(tmp_path, "first.json", loaded), tmp_path)).success
    return nasty


def code_held_outside_the_file(db, database_url, tmp_path) -> Path:
    """A newcomer gets the referral code of a loaded user the file no longer has."""
    users = generate_users(31, seed=12)
    holder = next(u for u in users[:30] if u["subscription"]["referral_code"])
    assert run(make_resources(database_url, document(tmp_path, "first.json", users[:30]), tmp_path)).success
    users[30]["subscription"]["referral_code"] = holder["subscription"]["referral_code"]
    return document(tmp_path, "second.json", [u for u in users if u is not holder])


def rows_the_bot_wrote(db, database_url, tmp_path) -> Path:
    """The bot's Alembic tables, holding 20 of the file's users and 3 others as its ORM wrote them."""
    from faceit_etl_tests.test_sync import orm_write

    db.execute(ALEMBIC_DDL)
    users = small_id_entries(40)
    orm_write(db, users[:20] + [{"user_id": 900 + i} for i in range(3)])
    return document(tmp_path, "small.json", users)


def dropped_users(db, database_url, tmp_path) -> Path:
    """60 users loaded; the file lacks 5 of them, changes 10."""
    users = generate_users(60, seed=13)
    assert run(make_resources(database_url, document(tmp_path, "first.json", users), tmp_path)).success
    for user in users[5:15]:
        user["total_requests"] += 1
    return document(tmp_path, "second.json", users[5:])


def alembic_tables(db, database_url, tmp_path) -> Path:
    db.execute(ALEMBIC_DDL)
    return document(tmp_path, "small.json", small_id_entries(40))


def alembic_tables_big_ids(db, database_url, tmp_path) -> Path:
    db.execute(ALEMBIC_DDL)
    return FLAT_SAMPLE


def file_with_rejects(db, database_url, tmp_path) -> Path:
    return nasty_file(tmp_path)


CASES = {
    "fresh database": Case(fresh_database),
    "fresh schema": Case(fresh_database, {"target_schema": "bot"}),
    "fresh database, rejects, force": Case(file_with_rejects, {"force": True}),
    "existing rows: inserts, updates, unchanged": Case(existing_rows),
    "existing rows the file lacks: kept": Case(rows_the_file_lacks),
    "existing rows the file lacks, prune": Case(rows_the_file_lacks, {"prune": True, "max_prune_fraction": 1.0}),
    "existing rows the file lacks, prune refused": Case(
        rows_the_file_lacks, {"prune": True}, succeeds=False, load_fails_with=(
            "refusing to prune: 25 of the 25 users in public.users (100.0%) are not in the file"
        ),
    ),
    "users dropped and changed: kept": Case(dropped_users),
    "users dropped and changed, prune": Case(dropped_users, {"prune": True}),
    "rows the bot's ORM wrote": Case(rows_the_bot_wrote),
    "rows the bot's ORM wrote, prune": Case(rows_the_bot_wrote, {"prune": True, "max_prune_fraction": 0.5}),
    "existing rows, truncate": Case(rows_the_file_lacks, {"truncate": True}),
    "existing rows, rejects, force": Case(rejects_on_existing_rows, {"force": True}),
    "the same file again": Case(loaded_before),
    "a referral code held by a user the file lacks": Case(
        code_held_outside_the_file, succeeds=False, load_fails_with=(
            "failed, nothing was written: 1 referral code(s) of the file are held in public.user_subscriptions "
            'by users the file does not load: "'
        ),
    ),
    "a referral code held by a user the file lacks, prune": Case(code_held_outside_the_file, {"prune": True}),
    "32-bit Alembic tables, small ids": Case(alembic_tables),
    "32-bit Alembic tables, big ids": Case(
        alembic_tables_big_ids, succeeds=False, load_fails_with="value(s) of users.user_id exceed its 32-bit integer type"
    ),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_a_dry_run_predicts_the_real_run_and_changes_nothing(db, database_url, tmp_path, case):
    source = case.prepare(db, database_url, tmp_path)
    before = database_state(db)

    with dg.instance_for_test() as instance:
        dry = run(make_resources(database_url, source, tmp_path, dry_run=True, **case.settings), instance)
        assert database_state(db) == before
        real = run(make_resources(database_url, source, tmp_path, **case.settings), instance)

    predicted, happened = outcome(dry), outcome(real)
    assert predicted == happened
    assert happened["success"] is case.succeeds, happened
    load_failures = [message for step, message in happened["failures"] if step == "postgres_tables"]
    assert [case.load_fails_with in message for message in load_failures] == ([True] if case.load_fails_with else [])
    assert TABLE_CHECKS & set(checks_by_name(dry)) == set()  # the tables' checks keep the real verdicts
    if predicted["load"] is not None:
        assert dry_run_of(dry)["dry_run"] is True
        assert {k: v for k, v in dry_run_of(dry).items() if k.startswith("dry_run.")} == {
            f"dry_run.{name}": "passed" if verdict["passed"]
            else f"failed: {verdict['description']}" if verdict["description"] else "failed"
            for name, verdict in predicted["verdicts"].items()
        }
        assert "postgres_tables" not in materialized(dry)  # a dry run never makes the tables look synced
        assert metadata_of(real, "postgres_tables")["dry_run"] is False


def test_a_dry_run_leaves_the_tables_checks_with_the_verdicts_of_what_they_hold(tmp_path, monkeypatch, database_url, db):
    """migrate_job, as the CLI and the UI's migrate_job page run it: a dry run after a load adds no
    evaluation of the tables' checks, so each still shows the load's verdict; its own are its observation's."""
    source = write_json(tmp_path / "data.json", {"users": entries(NESTED_SAMPLE)})
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("MIGRATION_BACKUP_DIR", str(tmp_path / "backups"))
    monkeypatch.setenv("DATA_FILE_PATH", str(source))
    with dg.instance_for_test() as instance:
        with dg.execute_job(dg.reconstructable(get_migrate_job), instance=instance) as loaded:
            assert loaded.success
        write_json(source, {"users": entries(NESTED_SAMPLE)[:20]})
        monkeypatch.setenv("MIGRATION_DRY_RUN", "true")
        with dg.execute_job(dg.reconstructable(get_migrate_job), instance=instance) as dry:
            assert dry.success
            [observed] = [e.event_specific_data.asset_observation.metadata for e in dry.get_asset_observation_events()
                          if "dry_run" in e.event_specific_data.asset_observation.metadata]
        evaluated = instance.all_logs(dry.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION)
        latest = {name: instance.event_log_storage.get_asset_check_execution_history(
            dg.AssetCheckKey(dg.AssetKey("postgres_tables"), name), limit=1)[0] for name in TABLE_CHECKS}

    assert {e.dagster_event.event_specific_data.check_name for e in evaluated} == {"no_rejected_entries"}
    assert {name: record.run_id for name, record in latest.items()} == dict.fromkeys(TABLE_CHECKS, loaded.run_id)
    # What the dry run found, under its own names: the 5 users the file no longer has would be kept.
    assert observed["dry_run.rows_not_in_file"].value.startswith("failed: ")
    assert observed["dry_run.content_matches"].value == "passed"
    assert db.execute("SELECT count(*) FROM users").fetchone()[0] == 25
