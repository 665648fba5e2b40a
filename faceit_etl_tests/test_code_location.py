"""The code location as Dagster's own tools see it: `dg` from the project root, the bot's file on the
graph as an observable source (data version = the file's sha256), data versions and code versions on
the assets, and no private Dagster API in the package."""

from __future__ import annotations

import ast
import hashlib
import os
import time
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from faceit_etl.definitions import defs, load_definitions
from faceit_etl.defs.assets import CODE_VERSION
from faceit_etl.defs.metadata import rules_schema
from faceit_etl.defs.resources import MigrationSettings
from faceit_etl.defs.source_file import bot_data_file
from faceit_etl.identity import code_version, input_identity, look_at_file
from faceit_etl.validation.schemas import UNIQUE_COLUMNS, schemas
from faceit_etl_tests.conftest import NESTED_SAMPLE, examples

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "faceit_etl"
BOT_FILE = dg.AssetKey("bot_data_file")
MIGRATION_ASSETS = {"source_backup", "raw_json", "validated_frame", "mapped_users", "mapped_subscriptions",
                    "postgres_tables"}


def modules() -> list[tuple[str, ast.Module]]:
    return [(str(path.relative_to(ROOT)), ast.parse(path.read_text(encoding="utf-8")))
            for path in sorted(PACKAGE.rglob("*.py"))]


def test_no_module_of_the_package_uses_a_private_dagster_module():
    private = []
    for name, tree in modules():
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("dagster._"):
                private.append((name, node.module))
            elif isinstance(node, ast.Import):
                private += [(name, alias.name) for alias in node.names if alias.name.startswith("dagster._")]
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) and "dagster._" in node.value:
                private.append((name, node.value))  # a module named in a string, for importlib or config
            elif isinstance(node, ast.Attribute) and node.attr.startswith("_") and _names_dagster(node.value):
                private.append((name, f"dagster.{node.attr}"))
    assert private == []


def _names_dagster(node: ast.AST) -> bool:
    return isinstance(node, ast.Name) and node.id in {"dagster", "dg"}


def environment_writes() -> list[tuple[str, str]]:
    """Every place the package changes its own environment: os.environ[...] = / del, and the
    mutating methods of os.environ, os.putenv and os.unsetenv."""
    writes = []
    for name, tree in modules():
        for node in ast.walk(tree):
            targets = node.targets if isinstance(node, (ast.Assign, ast.Delete)) else [node.target] \
                if isinstance(node, ast.AugAssign) else []
            for target in targets:
                if isinstance(target, ast.Subscript) and ast.unparse(target.value) == "os.environ":
                    writes.append((name, ast.unparse(target.slice)))
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                called = ast.unparse(node.func)
                if called in {"os.putenv", "os.unsetenv"} or (
                    ast.unparse(node.func.value) == "os.environ"
                    and node.func.attr in {"update", "setdefault", "pop", "popitem", "clear"}
                ):
                    writes.append((name, called))
    return writes


def test_nothing_in_the_package_writes_the_environment():
    """The instance is chosen by files and DAGSTER_HOME; the CLI hands --database-url to a run by
    starting itself again with it in DATABASE_URL, never by rewriting its own environment. The one write
    removes what pandera's import added (test_api.py runs a verb and compares the environment)."""
    assert environment_writes() == [("faceit_etl/validation/pandera_import.py", "os.environ.pop")]


def dg_command(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DAGSTER_HOME": str(ROOT), "VIRTUAL_ENV": str(Path(sys.prefix))}
    return subprocess.run([str(Path(sys.executable).parent / "dg"), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.db  # starts dg
def test_dg_checks_and_lists_the_definitions_from_the_project_root():
    checked = dg_command("check", "defs")
    assert checked.returncode == 0, checked.stderr
    assert "All definitions loaded successfully." in checked.stdout + checked.stderr

    listed = dg_command("list", "defs", "--json")
    assert listed.returncode == 0, listed.stderr
    for name in ["bot_data_file", *MIGRATION_ASSETS, "migrate_job", "rollback_job", "migrate_schedule",
                 "source_file_changed", "migration_settings", "postgres", "io_manager"]:
        assert f'"{name}"' in listed.stdout, name


def test_the_location_is_assembled_from_the_defs_folder():
    assert {key.to_user_string() for key in defs.resolve_all_asset_keys()} == MIGRATION_ASSETS | {"bot_data_file"}
    assert {job.name for job in defs.jobs} == {"migrate_job", "rollback_job"}
    # migrate_job observes the file first: each materialization records the file version it was made from.
    migrate = defs.resolve_job_def("migrate_job")
    assert {k.to_user_string() for k in migrate.asset_layer.selected_asset_keys} == MIGRATION_ASSETS | {"bot_data_file"}
    assert [s.name for s in defs.schedules] == ["migrate_schedule"]
    assert [s.name for s in defs.sensors] == ["source_file_changed"]
    graph = defs.resolve_asset_graph()
    assert graph.get(dg.AssetKey("source_backup")).parent_keys == {BOT_FILE}
    assert graph.get(BOT_FILE).is_observable and not graph.get(BOT_FILE).is_materializable
    # Every asset carries the package's code version: a code change shows them unsynced.
    assert {graph.get(dg.AssetKey(name)).code_version for name in MIGRATION_ASSETS} == {CODE_VERSION}
    assert CODE_VERSION == code_version()  # whole: the UI shows no cut hash


observe_job = dg.define_asset_job("observe_bot_data_file", selection=[BOT_FILE])


def observe(instance: dg.DagsterInstance, source: Path) -> dict:
    """One observation of bot_data_file, as the UI's "Observe sources" runs it; its data version and metadata."""
    result = dg.Definitions(
        assets=[bot_data_file], jobs=[observe_job],
        resources={"migration_settings": MigrationSettings(source_path=str(source))},
    ).resolve_job_def("observe_bot_data_file").execute_in_process(instance=instance)
    assert result.success
    observation = instance.fetch_observations(BOT_FILE, limit=1).records[0].asset_observation
    version = instance.get_latest_data_version_record(BOT_FILE)
    assert version.asset_observation == observation
    return {"data_version": observation.tags["dagster/data_version"],
            **{name: value.value for name, value in observation.metadata.items()}}


@pytest.mark.db  # a Dagster instance starts processes of its own
def test_the_observed_data_version_is_the_files_sha256_and_moves_with_content_only(tmp_path):
    source = tmp_path / "data.json"
    source.write_bytes(b'{"users": [{"user_id": 1}]}')
    with dg.instance_for_test() as instance:
        first = observe(instance, source)
        assert first["data_version"] == hashlib.sha256(source.read_bytes()).hexdigest()
        assert first["hashed"] is True

        untouched = observe(instance, source)
        assert (untouched["data_version"], untouched["hashed"]) == (first["data_version"], False)  # not read again

        os.utime(source, ns=(10**18, 10**18))  # touched, same content: read again, same version
        touched = observe(instance, source)
        assert (touched["data_version"], touched["hashed"]) == (first["data_version"], True)

        source.write_bytes(b'{"users": [{"user_id": 22}]}')
        os.utime(source, ns=(10**18, 10**18))  # new content, even given the mtime of the last look back
        changed = observe(instance, source)
        assert changed["data_version"] == hashlib.sha256(source.read_bytes()).hexdigest() != first["data_version"]


@settings(max_examples=examples(40), deadline=None)
@given(content=st.binary(max_size=3000), other=st.binary(max_size=3000))
def test_a_look_reuses_a_hash_only_for_the_same_stat(tmp_path_factory, content, other):
    path = tmp_path_factory.mktemp("look") / "data.json"
    path.write_bytes(content)
    look, hashed = look_at_file(path)
    assert (look.sha256, look.size_bytes, hashed) == (hashlib.sha256(content).hexdigest(), len(content), True)

    vouched = {**look.as_dict(), "sha256": "what the last look found"}
    assert look_at_file(path, vouched) == (look.__class__(**vouched), False)  # same stat: the hash is trusted

    for field in ("size_bytes", "mtime_ns", "ctime_ns", "device", "inode"):
        stale = {**vouched, field: vouched[field] + 1}
        again, hashed = look_at_file(path, stale)
        assert (again.sha256, hashed) == (hashlib.sha256(content).hexdigest(), True), field

    path.write_bytes(other)
    os.utime(path, ns=(look.mtime_ns + 1, look.mtime_ns + 1))
    after, hashed = look_at_file(path, look.as_dict())
    assert (after.sha256, hashed) == (hashlib.sha256(other).hexdigest(), True)


def test_a_rewrite_of_the_same_length_with_its_mtime_put_back_is_hashed_again(tmp_path):
    """What `touch -d <old mtime>`, `rsync -t --inplace` or a one-second-timestamp copy leave: the same
    inode, size and mtime over other bytes. Only the change time, which no writer sets, tells."""
    path = tmp_path / "data.json"
    path.write_bytes(b'{"users": [{"user_id": 1, "faceit_nickname": "player_0"}]}')
    look, _ = look_at_file(path)
    time.sleep(0.01)  # the change time's clock must move on
    with path.open("r+b") as handle:  # in place: the same inode
        handle.write(b'{"users": [{"user_id": 1, "faceit_nickname": "player_Y"}]}')
    os.utime(path, ns=(look.mtime_ns, look.mtime_ns))

    after, hashed = look_at_file(path, look.as_dict())

    assert (after.inode, after.size_bytes, after.mtime_ns) == (look.inode, look.size_bytes, look.mtime_ns)
    assert (after.sha256, hashed) == (hashlib.sha256(path.read_bytes()).hexdigest(), True)
    assert after.sha256 != look.sha256


def test_a_migrate_job_run_records_the_file_version_and_validated_frame_its_input_identity(
    database_url, tmp_path, monkeypatch
):
    """migrate_job observes bot_data_file first, so source_backup records the file's sha256 as the version
    it was made from (what the UI compares to call it synced); validated_frame's data version is its
    input identity (file, time zone, code)."""
    source = tmp_path / "data.json"
    source.write_bytes(NESTED_SAMPLE.read_bytes())
    sha256 = hashlib.sha256(source.read_bytes()).hexdigest()
    monkeypatch.setenv("DATABASE_URL", database_url)
    with dg.instance_for_test() as instance:
        result = load_definitions().resolve_job_def("migrate_job").execute_in_process(
            run_config={"resources": {"migration_settings": {"config": {
                "source_path": str(source), "backup_dir": str(tmp_path / "backups")}}}},
            instance=instance,
        )
        assert result.success
        observed = instance.fetch_observations(BOT_FILE, limit=1).records[0]
        backed_up = instance.get_latest_materialization_event(dg.AssetKey("source_backup")).asset_materialization
        validated = instance.get_latest_materialization_event(dg.AssetKey("validated_frame")).asset_materialization
    assert observed.run_id == result.run_id
    assert observed.asset_observation.tags["dagster/data_version"] == sha256
    assert backed_up.tags["dagster/input_data_version/bot_data_file"] == sha256
    assert backed_up.tags["dagster/data_version"] == sha256  # the copy: same bytes, raw_json stays synced
    identity = input_identity(sha256, "UTC")
    assert validated.tags["dagster/data_version"] == identity == validated.metadata["input_identity"].value
    assert validated.metadata["dagster/column_schema"].value == rules_schema(*schemas(), unique=UNIQUE_COLUMNS)


def test_the_column_schema_shows_each_columns_rules_from_the_pandera_schemas():
    """Built in the test, not at import, so that `make mutate` sees a changed rule of the schemas."""
    users_schema, subscriptions_schema = schemas()
    schema = rules_schema(users_schema, subscriptions_schema, unique=UNIQUE_COLUMNS)
    columns = {column.name: column for column in schema.columns}

    assert list(columns) == [*users_schema.columns, *subscriptions_schema.columns]
    text, instant = "string[pyarrow]", "datetime64[us, UTC]"
    assert {name: column.type for name, column in columns.items()} == {
        "user_id": "Int64", "faceit_player_id": text, "faceit_nickname": text, "last_checked_match_id": text,
        "waiting_for_nickname": "boolean", "language": text, "notifications_enabled": "boolean",
        "total_requests": "Int64", "created_at": instant, "last_active_at": instant, "tier": text,
        "expires_at": instant, "auto_renew": "boolean", "payment_method": text, "daily_requests": "Int64",
        "last_reset_date": instant, "referred_by_user_id": "Int64", "referral_code": text, "referrals_count": "Int64",
        "has_subscription": "boolean",
    }
    subscription_columns = ["tier", "expires_at", "auto_renew", "payment_method", "daily_requests", "last_reset_date",
                            "referred_by_user_id", "referral_code", "referrals_count", "has_subscription"]
    assert {name: column.description for name, column in columns.items()} == {  # the table each column goes to
        name: "subscriptions" if name in subscription_columns else "users" for name in columns
    }
    assert columns["user_id"].constraints == dg.TableColumnConstraints(nullable=False, unique=True, other=[
        "greater_than_or_equal_to(min_value=1): must be a positive Telegram id",
        "user_id seen before: the first entry wins, as in the bot",
    ])
    assert columns["faceit_nickname"].constraints.other == [
        "str_length(max_value=255): longer than 255 characters (the target column's size)",
        "contains a NUL character, which PostgreSQL text cannot hold",
    ]
    assert columns["tier"].constraints == dg.TableColumnConstraints(
        nullable=True, unique=False, other=["isin(allowed_values=('FREE', 'PREMIUM', 'PRO')): unknown tier"])
    assert columns["has_subscription"].constraints == dg.TableColumnConstraints(nullable=False, unique=False, other=[])
    every_check = [check for s in (users_schema, subscriptions_schema) for c in s.columns.values() for check in c.checks]
    assert sum(len(column.constraints.other) for column in schema.columns) == len(every_check) > 0
