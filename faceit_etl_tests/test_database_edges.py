"""Where the embedded database lives, and which database URL a run uses: decided before any server starts."""

from __future__ import annotations

import pytest

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
