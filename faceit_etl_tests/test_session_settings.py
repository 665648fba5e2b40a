"""Every connection the tool opens sets the session settings it reads and writes values with, so a
database or role with other defaults (DateStyle, TimeZone, IntervalStyle, client encoding, float
digits) gets the same rows and the same output as one with PostgreSQL's defaults."""

from __future__ import annotations

import json
import re

import psycopg
from psycopg.conninfo import make_conninfo

from faceit_etl_tests.conftest import NESTED_SAMPLE
from faceit_etl_tests.test_cli import faceit_etl, workdir  # noqa: F401  (the fixture)

ODD_DEFAULTS = {
    "datestyle": "SQL, DMY",
    "timezone": "Pacific/Chatham",
    "intervalstyle": "sql_standard",
    "client_encoding": "LATIN1",
    "extra_float_digits": "-15",
    "bytea_output": "escape",
}


def rows(url: str) -> list[tuple]:
    """Both tables as text in a session of fixed settings, without the load's own times (updated_at, a subscription's created_at)."""
    with psycopg.connect(url) as conn:
        conn.execute("SET datestyle = 'ISO, MDY'; SET timezone = 'UTC'")
        users = conn.execute("SELECT to_jsonb(u) - 'updated_at' FROM users u ORDER BY user_id").fetchall()
        subscriptions = conn.execute(
            "SELECT to_jsonb(s) - 'updated_at' - 'created_at' FROM user_subscriptions s ORDER BY referral_code").fetchall()
    return users + subscriptions


def stable(text: str) -> str:
    """Output with what differs between any two runs (run ids, clock times, durations) masked."""
    text = re.sub(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "<id>", text)
    text = re.sub(r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(\.\d+)?(\+00:00|Z)?", "<time>", text)
    text = re.sub(r"(test|odd)(_\d+)+", "<db>", text)
    return re.sub(r"\d+(\.\d+)? ?(s|ms|seconds)\b", "<duration>", text)


def test_a_database_with_odd_session_defaults_loads_the_same_rows_and_says_the_same(
    workdir, postgres_server_url, database_url  # noqa: F811
):
    odd = f"odd_{abs(hash(database_url)) % 10**8}"
    with psycopg.connect(postgres_server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{odd}"')
        for name, value in ODD_DEFAULTS.items():
            conn.execute(f"ALTER DATABASE \"{odd}\" SET {name} = '{value}'")
    odd_url = make_conninfo(postgres_server_url, dbname=odd)
    try:
        said = {}
        for url in (database_url, odd_url):
            project = workdir / ("odd" if url == odd_url else "usual")  # each its own Dagster instance
            project.mkdir()
            (project / "dagster.yaml").write_text((workdir / "dagster.yaml").read_text())
            migrated = faceit_etl(project, url, "migrate", str(NESTED_SAMPLE))
            assert migrated.returncode == 0, migrated.stdout + migrated.stderr
            status = faceit_etl(project, url, "status")
            assert status.returncode == 0, status.stdout + status.stderr
            status_json = json.loads(faceit_etl(project, url, "status", "--json").stdout)
            said[url] = (stable(migrated.stdout), stable(status.stdout), status_json["tables"])

        assert rows(odd_url) == rows(database_url)
        assert len(rows(odd_url)) > 25
        assert said[odd_url] == said[database_url]
        assert "Pacific/Chatham" not in json.dumps(said[odd_url])
    finally:
        with psycopg.connect(postgres_server_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE "{odd}" WITH (FORCE)')
