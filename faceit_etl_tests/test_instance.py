"""The instance files: dagster.yaml (SQLite under .faceit-etl/) for local use, docker/dagster.yaml
(PostgreSQL, every value from the environment) for the compose stack."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest
import yaml
from psycopg.conninfo import conninfo_to_dict

ROOT = Path(__file__).resolve().parent.parent
INSTANCE_FILES = [ROOT / "dagster.yaml", ROOT / "docker" / "dagster.yaml"]


@dg.asset
def marker() -> int:
    return 1


def test_the_stack_instance_keeps_dagster_storage_in_postgres(monkeypatch, database_url, db, tmp_path):
    """docker/dagster.yaml as the stack reads it. The test server has no TCP port: the empty host
    makes libpq take the socket folder from PGHOST, everything else is the file's own."""
    monkeypatch.chdir(tmp_path)
    server = conninfo_to_dict(database_url)
    monkeypatch.setenv("DAGSTER_PG_HOST", "")
    monkeypatch.setenv("PGHOST", server["host"])
    monkeypatch.setenv("DAGSTER_PG_PORT", server.get("port") or "5432")
    monkeypatch.setenv("DAGSTER_PG_USERNAME", server["user"])
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", "")
    monkeypatch.setenv("DAGSTER_PG_DB", server["dbname"])

    with dg.DagsterInstance.from_config(str(ROOT / "docker")) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        result = dg.materialize([marker], instance=instance)
        assert result.success
        assert instance.get_run_by_id(result.run_id).status == dg.DagsterRunStatus.SUCCESS

    assert db.execute("SELECT run_id, status FROM runs").fetchall() == [(result.run_id, "SUCCESS")]
    assert db.execute("SELECT count(*) FROM event_logs WHERE run_id = %s", [result.run_id]).fetchone()[0] > 5
    assert not list(tmp_path.rglob("*.db"))  # no SQLite storage beside it


@pytest.mark.db  # Dagster's SQLite storage starts a process of its own
def test_the_local_instance_is_sqlite_under_faceit_etl(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)

    with dg.DagsterInstance.from_config(str(ROOT)) as instance:
        assert type(instance.run_storage).__name__ == "SqliteRunStorage"
        assert dg.materialize([marker], instance=instance).success
        assert Path(instance.storage_directory()).resolve() == tmp_path / ".faceit-etl" / "dagster" / "storage"

    assert (tmp_path / ".faceit-etl" / "dagster" / "storage" / "history" / "runs.db").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".faceit-etl"]  # nothing else written here


def test_both_instances_queue_runs_one_at_a_time_without_telemetry_first_visit_modal_or_password():
    for path in INSTANCE_FILES:
        assert "dagster._" not in path.read_text(), path  # Dagster's documented module names only
        config = yaml.safe_load(path.read_text())
        assert config["run_queue"] == {"max_concurrent_runs": 1}, path
        assert config["telemetry"] == {"enabled": False}, path
        assert config["nux"] == {"enabled": False}, path
    stack = yaml.safe_load(INSTANCE_FILES[1].read_text())["storage"]["postgres"]["postgres_db"]
    assert stack.pop("scheme") == "postgresql+psycopg2"  # SQLAlchemy 2.1 would read postgresql:// as psycopg 3
    assert all(set(value) == {"env"} for value in stack.values()), stack  # no value, so no password, in the file
