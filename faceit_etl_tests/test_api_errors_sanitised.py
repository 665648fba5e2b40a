"""Errors from the Python API are sanitised as the CLI's: a server error that reaches a caller of any verb
says its own sentence and where, never the row its DETAIL quotes or the value a data error's sentence
quotes, and no password, in the raised error or in any error of its chain. A real server's errors,
raised where every verb passes (its settings), so each entry point is tried on the same failure."""

from __future__ import annotations

import asyncio
import pickle
import tempfile
import traceback
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest
from psycopg import sql

import faceit_etl
from faceit_etl import api
from faceit_etl.errors import MigrationError, sanitise
from faceit_etl_tests.conftest import BOT_PASSWORD, FLAT_SAMPLE
from faceit_etl_tests.test_cli import workdir  # noqa: F401 (a fixture)

NICKNAME = "Vasya_Secret_Nick"
# A trigger of the bot's database: its DETAIL quotes the row (as `Failing row contains (...)` does), its
# message a secret of the DBA's (the connection's password): a function's own words, left out whole.
TRIGGER = """
CREATE TABLE public.bot_notes (nickname text, age integer);
CREATE FUNCTION public.refuse_note() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'nickname refused (ask %)', {password}
    USING DETAIL = format('Failing row contains (%s)', NEW.nickname), ERRCODE = 'check_violation',
          SCHEMA = TG_TABLE_SCHEMA, TABLE = TG_TABLE_NAME, COLUMN = 'nickname';
END $$;
CREATE TRIGGER refuse_note BEFORE INSERT ON public.bot_notes FOR EACH ROW WHEN (NEW.age IS NULL)
  EXECUTE FUNCTION public.refuse_note();
"""
FAILURES = {  # the statement, and what the caller is told of it
    "a trigger's error": (
        "INSERT INTO public.bot_notes (nickname) VALUES (%s)", [NICKNAME],
        "CheckViolation: a function of the database (PL/pgSQL function refuse_note()) raised an error (SQLSTATE "
        "23514); its own words are left out, as they may quote a row (table public.bot_notes, column nickname)"),
    "a data error": (
        "INSERT INTO public.bot_notes (nickname, age) VALUES (%s, %s)", ["x", NICKNAME],
        'InvalidTextRepresentation: invalid input syntax for type integer: "<the value, left out>"'),
}


def _verbs() -> dict[str, object]:
    """Every entry point of the API, each a call that raises."""
    def validated():
        validator = faceit_etl.DataValidator(FLAT_SAMPLE)
        asyncio.run(validator.load_json_data())
        return validator.validate_json_structure()

    migration = faceit_etl.DataMigration(json_file_path=FLAT_SAMPLE)
    return {
        "migrate": lambda: faceit_etl.migrate(FLAT_SAMPLE),
        "resume": faceit_etl.resume,
        "rollback": faceit_etl.rollback,
        "rollback_candidate": faceit_etl.rollback_candidate,
        "status": faceit_etl.status,
        "backup": lambda: faceit_etl.backup(FLAT_SAMPLE),
        "validate": lambda: faceit_etl.validate(FLAT_SAMPLE),
        "DataMigration.migrate": lambda: asyncio.run(migration.migrate()),
        "DataMigration.resume_migration": lambda: asyncio.run(migration.resume_migration()),
        "DataMigration.rollback_migration": lambda: asyncio.run(migration.rollback_migration()),
        "DataMigration.validate": lambda: asyncio.run(migration.validate()),
        "DataMigration.status": lambda: asyncio.run(migration.status()),
        "DataMigration.backup": lambda: asyncio.run(migration.backup()),
        "DataValidator.validate": lambda: asyncio.run(faceit_etl.DataValidator(FLAT_SAMPLE).validate()),
        "DataValidator.validate_json_structure": validated,
    }


def shown(error: BaseException) -> list[str]:
    """What a caller is shown of an error: its text and each text of its chain, causes and contexts."""
    texts, links = [], [error]
    while links:
        link = links.pop()
        texts.append(f"{type(link).__name__}: {link}")
        links += [nxt for nxt in (link.__cause__, link.__context__) if nxt is not None]
    return texts


@pytest.fixture
def failing_server(workdir, password_database_url, monkeypatch):  # noqa: F811 (a fixture)
    """The project folder, the target reached with a password, and each verb's settings followed by a
    statement the server refuses (the test's parameter)."""
    monkeypatch.chdir(workdir)
    monkeypatch.setenv("DATABASE_URL", password_database_url)
    monkeypatch.setenv("MIGRATION_BACKUP_DIR", str(workdir / "backups"))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    with psycopg.connect(password_database_url, autocommit=True) as conn:
        conn.execute(sql.SQL(TRIGGER).format(password=sql.Literal(BOT_PASSWORD)))

    def fail_with(statement: str, values: list[str]) -> None:
        settings = api.resolved_settings

        def then_fail(overrides):
            chosen = settings(overrides)
            with psycopg.connect(password_database_url) as conn:
                conn.execute(statement, values)
            return chosen
        monkeypatch.setattr(api, "resolved_settings", then_fail)
    return fail_with


@pytest.mark.db
@pytest.mark.parametrize("failure", FAILURES)
def test_every_api_verb_says_a_server_error_without_the_row_its_value_or_the_password(failing_server, failure):
    statement, values, said = FAILURES[failure]
    failing_server(statement, values)

    for verb, call in _verbs().items():
        with pytest.raises(MigrationError) as raised:
            call()
        texts = shown(raised.value)
        assert str(raised.value).endswith(f": {said}"), (verb, texts)
        for secret in (NICKNAME, BOT_PASSWORD, quote(BOT_PASSWORD, safe="")):
            assert not [text for text in texts if secret in text], (verb, secret, texts)
        assert any(text == said for text in texts), (verb, texts)  # the server's own error, rewritten, is kept


@pytest.mark.db
def test_the_process_an_api_call_runs_its_verb_in_answers_a_server_error_sanitised(failing_server):
    """For another database_url the verb runs in a child process (api._serve), which answers its error's words."""
    statement, values, said = FAILURES["a trigger's error"]
    failing_server(statement, values)
    with tempfile.TemporaryDirectory() as folder:
        start = api._Start("api", "CRITICAL", None, True)
        (Path(folder) / "call").write_bytes(pickle.dumps(("migrate", {"path": FLAT_SAMPLE, "_start": start})))
        api._serve(folder)
        kind, error = pickle.loads((Path(folder) / "answer").read_bytes())

    assert (kind, type(error), str(error)) == ("error", MigrationError, said)


@pytest.mark.parametrize("link", ["__cause__", "__context__"])
def test_a_password_is_removed_from_every_error_of_the_chain_raised_from_or_while_handling(link):
    url = "postgresql://bot:Zebra7secret@db.example/faceit_bot"
    outer = ValueError("the load failed")
    setattr(outer, link, RuntimeError(f"could not reach {url}"))

    sanitise(outer, url)

    printed = "".join(traceback.format_exception(outer))
    assert "Zebra7secret" not in printed
    assert "could not reach postgresql://bot:" in printed and "the load failed" in printed  # the chain is kept
