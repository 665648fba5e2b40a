"""A snapshot that is not whole (a file missing, truncated, altered, with extra bytes, or a manifest
entry that does not fit it) is refused before any write, naming the file and what is wrong with it;
and no server text quoting a row (PostgreSQL's DETAIL and CONTEXT) reaches the CLI's output,
migration.log, the API's errors or Dagster's event log of a rollback. Real runs, the CLI as a
subprocess, the real embedded PostgreSQL."""

from __future__ import annotations

import importlib
import json
import os
import pty
import subprocess
from pathlib import Path

import dagster as dg
import psycopg
import pytest

import faceit_etl
from faceit_etl.errors import RollbackRefusedError
from faceit_etl_tests.conftest import NESTED_SAMPLE, write_json
from faceit_etl_tests.test_api import here  # noqa: F401 (a fixture)
from faceit_etl_tests.test_cli import CLI, instance_at, workdir  # noqa: F401 (workdir: a fixture)
from faceit_etl_tests.test_migration_log import LINE
from faceit_etl_tests.test_rollback import database_state

cli_main = importlib.import_module("faceit_etl.cli.main")  # the package's `main` names the function
# A user's nickname, personal data that only the tables and the snapshot's files may hold.
NICKNAME = "Nick-Of-Private-Person-7301"
NOT_WHOLE = "the snapshot is not whole, so it cannot be restored: nothing was changed"


def two_files(folder: Path) -> tuple[Path, Path]:
    """A: five users, the third named NICKNAME. B: the same users, the third renamed: B's snapshot holds A."""
    users = json.loads(NESTED_SAMPLE.read_text(encoding="utf-8"))["users"][:5]
    users[2]["faceit_nickname"] = NICKNAME
    first = write_json(folder / "a.json", {"users": users})
    users[2]["faceit_nickname"] = "renamed"
    return first, write_json(folder / "b.json", {"users": users})


def cli(workdir: Path, database_url: str, *args: str, terminal: bool = False) -> subprocess.CompletedProcess:
    """The CLI, its input a terminal when asked (rollback then asks its question), else nothing."""
    env = {**os.environ, "DATABASE_URL": database_url, "MIGRATION_BACKUP_DIR": str(workdir / "backups")}
    env.pop("DAGSTER_HOME", None)
    controller, tty = pty.openpty()
    os.write(controller, b"n\n")  # were it asked, the answer
    try:
        return subprocess.run([CLI, *args], cwd=workdir, env=env, capture_output=True, text=True, timeout=300,
                              stdin=tty if terminal else subprocess.DEVNULL)
    finally:
        os.close(controller)
        os.close(tty)


def rollback_events(workdir: Path) -> str:
    """Every event of every rollback_job run in the folder's instance, serialized whole."""
    with instance_at(workdir) as instance:
        runs = instance.get_runs(dg.RunsFilter(job_name="rollback_job"))
        assert runs
        return "".join(dg.serialize_value(entry) for run in runs for entry in instance.all_logs(run.run_id))


def marker_line(copy: Path) -> tuple[int, int]:
    """(start, end) of the snapshot line holding NICKNAME, end after its newline."""
    data = copy.read_bytes()
    at = data.index(NICKNAME.encode())
    start = data.rindex(b"\n", 0, at) + 1
    return start, data.index(b"\n", at) + 1


def truncated_in_the_users_row(copy: Path) -> None:
    start, _ = marker_line(copy)
    data = copy.read_bytes()
    copy.write_bytes(data[: data.index(NICKNAME.encode(), start) + len(NICKNAME) + 3])


def a_byte_of_its_id_flipped(copy: Path) -> None:
    """The same size, one byte of the user's uuid made a letter no uuid has."""
    start, _ = marker_line(copy)
    data = bytearray(copy.read_bytes())
    data[start] = ord("z")
    copy.write_bytes(bytes(data))


def its_row_repeated(copy: Path) -> None:
    start, end = marker_line(copy)
    data = copy.read_bytes()
    copy.write_bytes(data + data[start:end])


def emptied(copy: Path) -> None:
    copy.write_bytes(b"")


def snapshot_folder(workdir: Path) -> Path:
    """The second migration's backup folder: the only one whose snapshot holds the tables (the first created them)."""
    [folder] = [p for p in (workdir / "backups").iterdir() if (p / "users.copy").is_file()]
    return folder


def not_in_outputs_nor_the_log(*outputs: str, workdir: Path) -> None:
    """The nickname is in no output and no line of migration.log, and every line of migration.log has
    its prefix (a raw multi-line message would add lines without one)."""
    log = (workdir / "migration.log").read_text() if (workdir / "migration.log").exists() else ""
    assert all(LINE.match(line) for line in log.splitlines()), log
    for text in (*outputs, log):
        assert NICKNAME not in text, text


def nowhere_but_the_tables(*outputs: str, workdir: Path) -> None:
    """Nor in any event of a rollback run."""
    not_in_outputs_nor_the_log(*outputs, workdir=workdir)
    assert NICKNAME not in rollback_events(workdir)


@pytest.mark.db
def test_the_cli_refuses_a_damaged_snapshot_naming_the_file_and_quotes_no_row(workdir, database_url, db):
    """The reported cases: users.copy truncated in a user's row, then user_subscriptions.copy deleted."""
    first, second = two_files(workdir)
    assert cli(workdir, database_url, "-q", "migrate", str(first)).returncode == 0
    done = cli(workdir, database_url, "-q", "migrate", str(second))
    assert done.returncode == 0, done.stdout + done.stderr
    folder = snapshot_folder(workdir)
    tables = json.loads((folder / "manifest.json").read_text())["target"]["tables"]
    whole = (folder / "users.copy").read_bytes()
    before = database_state(db)

    truncated_in_the_users_row(folder / "users.copy")
    truncated = cli(workdir, database_url, "rollback", "--confirm")

    size = (folder / "users.copy").stat().st_size
    refusal = (f"rollback refused, nothing changed: {folder}/users.copy: truncated: {size} bytes of the "
               f"{len(whole)} the manifest records; {NOT_WHOLE}")
    assert truncated.returncode == 2, truncated.stdout + truncated.stderr
    assert truncated.stdout.splitlines() == [refusal], truncated.stdout + truncated.stderr
    assert database_state(db) == before
    asked = cli(workdir, database_url, "rollback", terminal=True)  # refused before its question
    assert (asked.returncode, asked.stdout.splitlines()) == (2, [refusal]), asked.stdout + asked.stderr

    (folder / "users.copy").write_bytes(whole)
    (folder / "user_subscriptions.copy").unlink()
    missing = cli(workdir, database_url, "rollback", "--confirm")

    assert missing.returncode == 2, missing.stdout + missing.stderr
    assert missing.stdout.splitlines() == [
        f"rollback refused, nothing changed: {folder}/user_subscriptions.copy: missing (the manifest records "
        f"{tables['user_subscriptions']['rows']} rows of user_subscriptions in it); {NOT_WHOLE}"
    ], missing.stdout + missing.stderr
    assert database_state(db) == before
    nowhere_but_the_tables(truncated.stdout, truncated.stderr, missing.stdout, missing.stderr, workdir=workdir)


def altered_entry(manifest: Path, change) -> None:
    document = json.loads(manifest.read_text())
    change(document["target"]["tables"])
    manifest.write_text(json.dumps(document))


def test_the_api_refuses_every_kind_of_damage_before_any_write_naming_the_file(here, db):
    first, second = two_files(here)
    assert faceit_etl.migrate(first).success
    assert faceit_etl.migrate(second).success
    folder = snapshot_folder(here)
    users, manifest = folder / "users.copy", folder / "manifest.json"
    kept = {path: path.read_bytes() for path in (users, manifest)}
    entry = json.loads(manifest.read_text())["target"]["tables"]["users"]
    rows, size = entry["rows"], users.stat().st_size
    start, end = marker_line(users)
    rows_left = kept[users][:start].count(b"\n")  # by truncated_in_the_users_row
    before = database_state(db)

    def unrecorded_size_then_truncated(copy: Path) -> None:  # a manifest of before sizes were recorded
        altered_entry(manifest, lambda t: t["users"].pop("bytes"))
        truncated_in_the_users_row(copy)

    def a_folder_instead(copy: Path) -> None:
        copy.unlink()
        copy.mkdir()

    damages = [
        (a_byte_of_its_id_flipped, f"{users}: altered: it has the {size} bytes the manifest records, but not their sha256"),
        (its_row_repeated, f"{users}: {end - start} bytes more than the {size} the manifest records"),
        (emptied, f"{users}: empty, but the manifest records {rows} rows in it"),
        (unrecorded_size_then_truncated, f"{users}: truncated or damaged: its sha256 does not match the manifest's "
                                         f"({rows_left} rows in it, {rows} recorded)"),
        (a_folder_instead, f"{users}: cannot be read (Is a directory)"),
        (lambda _: altered_entry(manifest, lambda t: t["users"].update(rows=rows + 1)),
         f"{manifest}: the entry for table users records {rows + 1} rows and {size} bytes, but users.copy, whose "
         f"sha256 it records, holds {rows} rows and {size} bytes: the manifest was altered"),
        (lambda _: altered_entry(manifest, lambda t: t["users"].update(file="../users.copy")),
         f"{manifest}: the entry for table users is not a snapshot's (its file users.copy, a row count and a sha256)"),
        (lambda _: altered_entry(manifest, lambda t: t.pop("user_subscriptions")),
         f"{manifest}: no entry for table user_subscriptions (its snapshot file, or that the table was absent then)"),
    ]
    said = []
    for damage, what in damages:
        damage(users)

        result = faceit_etl.rollback(folder)

        assert (result.success, result.refused, result.errors) == (False, True, [f"{what}; {NOT_WHOLE}"])
        with pytest.raises(RollbackRefusedError) as asked:  # what the CLI's question is about
            faceit_etl.api.rollback_candidate(folder)
        assert str(asked.value) == f"{what}; {NOT_WHOLE}"
        assert database_state(db) == before
        said += result.errors
        if users.is_dir():
            users.rmdir()
        for path, data in kept.items():
            path.write_bytes(data)
    manifest.write_text('{"run_id": ')
    broken = faceit_etl.rollback()

    assert (broken.success, broken.refused, broken.errors) == (False, True, [
        f"{manifest}: damaged, not a manifest's JSON (Expecting value: line 1 column 12 (char 11)); nothing was changed"
    ])
    assert database_state(db) == before
    nowhere_but_the_tables(*said, *broken.errors, workdir=here)


def test_a_server_error_during_a_rollback_is_said_without_the_row_it_quotes(here, database_url, db):
    """A whole snapshot the database refuses (a check added since that its rows break): PostgreSQL's
    DETAIL is `Failing row contains (...)`, the user's row."""
    first, second = two_files(here)
    assert faceit_etl.migrate(first).success
    assert faceit_etl.migrate(second).success
    db.execute(f"ALTER TABLE users ADD CONSTRAINT no_such_nick CHECK (faceit_nickname <> '{NICKNAME}') NOT VALID")
    before = database_state(db)
    said = ('PostgreSQL stopped the rollback: new row for relation "users" violates check constraint "no_such_nick" '
            "(table public.users, constraint no_such_nick); nothing was changed")

    by_cli = cli(here, database_url, "rollback", "--confirm")
    by_api = faceit_etl.rollback()

    assert by_cli.returncode == 1, by_cli.stdout + by_cli.stderr
    assert by_cli.stdout.splitlines() == [f"rollback failed, nothing changed: {said}"], by_cli.stdout + by_cli.stderr
    assert (by_api.success, by_api.refused, by_api.errors) == (False, False, [said])
    assert database_state(db) == before
    nowhere_but_the_tables(by_cli.stdout, by_cli.stderr, workdir=here)


def test_the_clis_last_resort_says_a_server_error_without_its_detail_and_logs_each_line_with_its_prefix(
    workdir, db, monkeypatch, capsys
):
    """Any verb's server error that no verb describes reaches the CLI's catch-all: its line and the
    traceback in migration.log name the error and where (table, constraint), never the key it quotes."""
    db.execute("CREATE TABLE nicknames (nickname text UNIQUE)")
    db.execute("INSERT INTO nicknames VALUES (%s)", [NICKNAME])

    def verb(args):
        try:
            db.execute("INSERT INTO nicknames VALUES (%s)", [NICKNAME])  # DETAIL: Key (nickname)=(...) already exists.
        except psycopg.Error as exc:
            raise RuntimeError("the verb gave up") from exc

    def raw(args):
        db.execute("INSERT INTO nicknames VALUES (%s)", [NICKNAME])

    monkeypatch.chdir(workdir)
    sentence = ('duplicate key value violates unique constraint "nicknames_nickname_key" '
                "(table public.nicknames, constraint nicknames_nickname_key)")
    said = []
    for command in (verb, raw):
        monkeypatch.setattr(cli_main.package_log, "handlers", [])  # each start's own handler of migration.log, as in a process
        monkeypatch.setitem(cli_main.COMMANDS, "status", command)
        assert cli_main.main(["status"]) == 1
        said.append(capsys.readouterr())
        for handler in cli_main.package_log.handlers:
            handler.close()

    assert [s.out for s in said] == ["faceit-etl status failed: the verb gave up\n",
                                     f"faceit-etl status failed: {sentence}\n"]
    log = (workdir / "migration.log").read_text()
    assert log.count(f"psycopg.errors.UniqueViolation: {sentence}\n") == 2, log
    assert "The above exception was the direct cause of the following exception:" in log
    not_in_outputs_nor_the_log(*(s.out + s.err for s in said), workdir=workdir)


@pytest.mark.parametrize(
    ("statement", "said"),
    [
        ("SELECT %s::int", 'invalid input syntax for type integer: "<the value, left out>"'),
        ("SELECT %s::date", 'invalid input syntax for type date: "<the value, left out>"'),
        ("COPY typed (n) FROM STDIN",
         'invalid input syntax for type integer: "<the value, left out>" (table typed, column n)'),
    ],
    ids=["cast", "date", "copy"],
)
def test_a_data_exception_is_said_without_the_value_it_quotes(db, statement, said):
    """A value the column cannot take is quoted in the server's own sentence, not only in DETAIL or CONTEXT:
    the rollback and the load printed `invalid input syntax for type integer: "<a nickname>"`."""
    from faceit_etl.postgres.database import server_error_text

    db.execute("CREATE TABLE typed (n int)")
    with pytest.raises(psycopg.errors.DataError) as raised:
        if statement.startswith("COPY"):
            with db.cursor().copy(statement) as copy:
                copy.write(f"{NICKNAME}\n")
        else:
            db.execute(statement, [NICKNAME])

    assert NICKNAME in str(raised.value)
    assert server_error_text(raised.value) == said


@pytest.mark.parametrize(
    ("raise_", "said"),
    [
        ("RAISE EXCEPTION 'nickname % refused', new.nick",
         "a function of the database (PL/pgSQL function guard()) raised an error (SQLSTATE P0001); its own "
         "words are left out, as they may quote a row"),
        ("RAISE EXCEPTION 'row %', new USING ERRCODE = 'unique_violation'",
         "a function of the database (PL/pgSQL function guard()) raised an error (SQLSTATE 23505); its own "
         "words are left out, as they may quote a row"),
        ("ASSERT new.nick IS NULL, new.nick",
         "a function of the database (PL/pgSQL function guard()) raised an error (SQLSTATE P0004); its own "
         "words are left out, as they may quote a row"),
    ],
    ids=["raise", "raise-with-another-sqlstate", "assert"],
)
def test_a_database_functions_own_words_are_left_out_naming_the_function(db, raise_, said):
    """A trigger's RAISE may quote the row it refuses (`nickname <a nickname> refused`): its words reached the CLI,
    migration.log and the API's errors whole. Only the function and the SQLSTATE are said."""
    from faceit_etl.postgres.database import server_error_text

    db.execute("CREATE TABLE guarded (nick text)")
    db.execute(f"CREATE FUNCTION guard() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN {raise_}; RETURN new; END $$")
    db.execute("CREATE TRIGGER guard BEFORE INSERT ON guarded FOR EACH ROW EXECUTE FUNCTION guard()")
    with pytest.raises(psycopg.Error) as raised:
        db.execute("INSERT INTO guarded VALUES (%s)", [NICKNAME])

    assert NICKNAME in str(raised.value)
    assert server_error_text(raised.value) == said


def test_an_error_of_the_servers_own_inside_a_function_keeps_its_sentence(db):
    """Not every error raised in a function is the function's words: the server's own keep their sentence."""
    from faceit_etl.postgres.database import server_error_text

    db.execute("CREATE FUNCTION halve(n int) RETURNS int LANGUAGE plpgsql AS $$ BEGIN RETURN n / 0; END $$")
    with pytest.raises(psycopg.errors.DivisionByZero) as raised:
        db.execute("SELECT halve(2)")

    assert server_error_text(raised.value) == "division by zero"
