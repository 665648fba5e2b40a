"""The project's dagster.yaml: Dagster's storage in PostgreSQL when DAGSTER_POSTGRES_URL is set."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import yaml
from dagster._core.instance.ref import InstanceRef

ROOT = Path(__file__).resolve().parent.parent


@dg.asset
def marker() -> int:
    return 1


def project_instance() -> dg.DagsterInstance:
    return dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(ROOT)))


def test_storage_is_postgres_when_its_url_is_set(monkeypatch, database_url, db, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DAGSTER_POSTGRES_URL", _as_url(database_url))

    with project_instance() as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        result = dg.materialize([marker], instance=instance)
        assert result.success
        assert instance.get_run_by_id(result.run_id).status == dg.DagsterRunStatus.SUCCESS

    assert db.execute("SELECT run_id, status FROM runs").fetchall() == [(result.run_id, "SUCCESS")]
    assert db.execute("SELECT count(*) FROM event_logs WHERE run_id = %s", [result.run_id]).fetchone()[0] > 5
    assert not list(tmp_path.rglob("*.db"))  # no SQLite storage beside it


def test_storage_is_local_sqlite_otherwise(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DAGSTER_POSTGRES_URL", raising=False)

    with project_instance() as instance:
        assert type(instance.run_storage).__name__ == "SqliteRunStorage"
        assert dg.materialize([marker], instance=instance).success

    assert (tmp_path / ".faceit-etl" / "dagster" / "storage" / "history" / "runs.db").is_file()


def test_the_instance_queues_runs_one_at_a_time_without_telemetry_or_first_visit_modal():
    config = yaml.safe_load((ROOT / "dagster.yaml").read_text())
    assert config["run_coordinator"]["class"] == "QueuedRunCoordinator"
    assert config["run_coordinator"]["config"]["max_concurrent_runs"] == 1
    assert config["telemetry"] == {"enabled": False}
    assert config["nux"] == {"enabled": False}
    assert "password" not in (ROOT / "dagster.yaml").read_text().lower()


def _as_url(conninfo: str) -> str:
    """The test server's conninfo ("user=postgres dbname=x host=/socket") as a postgresql:// URL."""
    parts = dict(item.split("=", 1) for item in conninfo.split())
    return f"postgresql://{parts['user']}:@/{parts['dbname']}?host={parts['host']}"
