"""`redact` and `describe`: a password never survives, whatever its characters and however the connection
string is written, even when libpq refuses the string and quotes part of it back; and the traceback a log
keeps is Python's own, but for what a server error says."""

from __future__ import annotations

import logging
import socket
import sys
import traceback
from urllib.parse import quote

import psycopg
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from faceit_etl.cli import RedactingFormatter
from faceit_etl.postgres.database import (
    INVALID_URL, AuthenticationFailed, DatabaseUnavailable, InvalidConnectionString, checked_url, connect, describe, redact,
    refused_option, traceback_text,
)
from faceit_etl.defs.resources import postgres_from_environment
from faceit_etl_tests.conftest import BOT_PASSWORD, PostgresAt

# Any characters but `*`, which the mask itself is made of; at least 4 so a hit is not a coincidence.
passwords = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="*\0"), min_size=4)


def keyword_quoted(secret: str) -> str:
    return "'" + secret.replace("\\", "\\\\").replace("'", "\\'") + "'"


def forms(secret: str) -> set[str]:
    return {secret, quote(secret, safe=""), keyword_quoted(secret)} | {word for word in secret.split() if len(word) >= 4}


@given(secret=passwords)
@example(secret="a/b c:d@e%f'g\\h#i?j")
def test_a_url_password_of_any_characters_is_redacted_wherever_it_appears(secret):
    url = f"postgresql://bot:{quote(secret, safe='')}@db.example:5432/faceit_bot"
    text = f"connect {url} failed; password was {secret} ({quote(secret, safe='')})"
    redacted = redact(text, url)
    for form in forms(secret) - {keyword_quoted(secret)}:
        assert form not in redacted
    # The rest stays readable, unless it holds the password itself (then masking it there is right).
    if not any(form in "db.example:5432/faceit_bot" for form in forms(secret)):
        assert "db.example:5432/faceit_bot" in redacted
    assert redact(url) == "postgresql://bot:***@db.example:5432/faceit_bot"  # even without knowing the URL


@given(secret=passwords)
@example(secret="a/b c:d@e%f'g\\h#i?j")
def test_a_keyword_password_of_any_characters_is_redacted_wherever_it_appears(secret):
    url = f"host=db.example port=5432 dbname=faceit_bot user=bot password={keyword_quoted(secret)}"
    redacted = redact(f"{url} / {secret} / {quote(secret, safe='')}", url)
    for form in forms(secret):
        assert form not in redacted
    assert redact(url) == "host=db.example port=5432 dbname=faceit_bot user=bot password=***"


@given(secret=passwords, broken=st.sampled_from(["%zz", " x", "%"]))
def test_a_url_libpq_refuses_is_refused_without_quoting_any_of_it(secret, broken):
    """libpq quotes the token it stumbled on (`invalid percent-encoded token: "<password as written>"`):
    the refusal is a fixed text, whether at settings time or at connect time."""
    written = quote(secret, safe="") + broken
    url = f"postgresql://bot:{written}@db.example/faceit_bot"
    for attempt in (lambda: connect(url), lambda: checked_url(url), lambda: PostgresAt(url=url).check_database_url(),
                    lambda: PostgresAt(url=url).url_starting_embedded_server()):
        with pytest.raises(InvalidConnectionString) as refused:
            attempt()
        assert str(refused.value) == INVALID_URL


def test_words_after_an_unquoted_keyword_password_are_redacted_too():
    """`password=my secret` is a keyword string libpq refuses, naming the word `secret`."""
    url = "host=db.example dbname=faceit_bot password=hunter2 Zebra7 port=5432"
    with pytest.raises(InvalidConnectionString, match="^the database URL"):
        connect(url)
    assert redact("hunter2 Zebra7 port=5432 db.example", url) == "*** port=5432 db.example"


@pytest.mark.parametrize(("url", "words"), [
    ("postgresql://bot:Secret-77@127.0.0.1:9/db?sslmode=bogus", 'invalid sslmode value: "bogus"'),
    ("postgresql://bot:notaport@127.0.0.1/db?port=notaport", 'invalid integer value "***" for connection option "port"'),
    ("host=127.0.0.1 password=Secret-77 target_session_attrs=Secret-77", 'invalid target_session_attrs value: "***"'),
    ("postgresql://bot:Secret-77@127.0.0.1:9/db", None),
])
def test_an_option_libpq_refuses_is_said_in_its_words_and_a_value_that_is_the_password_is_masked(url, words):
    assert refused_option(url) == words
    if words:  # refused at once, not tried again as a server that did not answer
        with pytest.raises(InvalidConnectionString) as refused:
            connect(url)
        assert str(refused.value) == f"the database URL (DATABASE_URL) has an option libpq refuses: {words}"


def test_libpqs_words_on_a_refused_connection_are_said_without_a_password_they_happen_to_hold(monkeypatch):
    """libpq names the address it tried (`hostaddr`), which `describe` leaves out: a password that is the
    same text is masked there too."""
    monkeypatch.setattr("faceit_etl.postgres.database.time.sleep", lambda seconds: None)
    with pytest.raises(DatabaseUnavailable) as refused:
        connect("host=localhost hostaddr=127.0.0.1 port=9 dbname=faceit_bot user=bot password=127.0.0.1")
    message = str(refused.value)
    assert message.startswith("cannot connect to PostgreSQL at localhost:9/faceit_bot after 3 attempts: connection")
    assert "Connection refused" in message and "127.0.0.1" not in message


def test_a_password_that_is_also_the_user_name_is_not_said_when_authentication_fails(password_role, password_database_url):
    """libpq names the user it refused: when the password is the same word (postgres:postgres), saying
    the user says the password."""
    url = password_database_url.replace(quote(BOT_PASSWORD, safe=""), password_role)
    with pytest.raises(AuthenticationFailed) as refused:
        connect(url)
    message = str(refused.value)
    assert message.startswith(f"authentication failed at {describe(url)} (wrong user or password): ")
    assert message.endswith('password authentication failed for user "***"') and password_role not in message


def test_a_url_from_the_environment_is_refused_when_a_step_asks_for_the_target(monkeypatch):
    """The Dagster entry points (UI, `dagster job execute`, schedule) resolve the URL in the resource."""
    monkeypatch.setenv("DATABASE_URL", "bob:Secret123@127.0.0.1/db")
    with pytest.raises(InvalidConnectionString) as refused:
        postgres_from_environment().url_starting_embedded_server()
    assert "Secret123" not in str(refused.value)


def test_the_log_files_tracebacks_are_redacted_too(monkeypatch):
    """`log.exception` appends the traceback after filters ran: the formatter redacts the whole record."""
    url = "postgresql://bot:Sesame4711@db.example/faceit_bot"
    monkeypatch.setenv("DATABASE_URL", url)
    try:
        raise RuntimeError(f"cannot use {url}: Sesame4711")
    except RuntimeError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", None, sys.exc_info())
    text = RedactingFormatter("%(message)s").format(record)
    assert "Traceback" in text and "RuntimeError: cannot use postgresql://bot:***@db.example/faceit_bot: ***" in text
    assert "Sesame4711" not in text
    said = logging.LogRecord("x", logging.INFO, __file__, 1, "connecting as %s\nwith %s", ("bot", "Sesame4711"), None)
    assert RedactingFormatter("%(levelname)s %(message)s").format(said) == "INFO connecting as bot\nINFO with ***"


class Quiet(Exception):
    """An exception of this module, without words."""


def raised(make) -> BaseException:
    try:
        make()
    except BaseException as error:  # noqa: BLE001 (each kind of chain is the point)
        return error
    raise AssertionError("nothing raised")


def _plain():
    raise ValueError("bad value")


def _caused():
    try:
        _plain()
    except ValueError as error:
        raise KeyError("missing") from error


def _during():
    try:
        _plain()
    except ValueError:
        raise Quiet()  # noqa: B904 (raised while handling, on purpose)


def _from_none():
    try:
        _plain()
    except ValueError:
        raise RuntimeError("hidden cause") from None


def _cause_and_context():
    try:
        _caused()
    except KeyError as cause:
        try:
            raise OSError("first")
        except OSError:
            raise Quiet("with both") from cause


def _cycle():
    first, second = raised(_plain), raised(_during)
    first.__context__, second.__context__ = second, first
    raise first


@pytest.mark.parametrize("make", [_plain, _caused, _during, _from_none, _cause_and_context, _cycle])
def test_a_logged_traceback_without_a_server_error_is_the_one_python_prints(make):
    """The log's traceback (`traceback_text`) changes only what a server error says: every other chain,
    raised from, while handling, with its context suppressed, or looping, reads as Python prints it."""
    error = raised(make)
    assert traceback_text(error) == "".join(traceback.format_exception(error))


def test_a_quoted_keyword_password_in_a_string_libpq_refuses_is_redacted_bare_and_whole():
    url = "host=db.example password='hunter22 Zebra7' bogus"
    assert redact("tried hunter22 Zebra7, then 'hunter22 Zebra7'", url) == "tried ***, then ***"
    assert redact("pw: aaaa zzzz.", "host=h password='aaaa zzzz'") == "pw: ***."  # the longest form first
    assert redact("after abcd, zz stays", "host=h password=zz abcd") == "after ***, zz stays"  # words of 4 and more
    assert redact("Xhunter22X", "host=h password='Xhunter22X' bogus") == "***"  # only the quotes are stripped


def test_a_database_that_does_not_answer_is_named_after_bounded_attempts(monkeypatch):
    waits = []
    monkeypatch.setattr("faceit_etl.postgres.database.time.sleep", waits.append)
    with pytest.raises(DatabaseUnavailable) as refused:
        connect("postgresql://bot:s3cretpw@127.0.0.1:9/faceit_bot")
    message = str(refused.value)
    assert message.startswith("cannot connect to PostgreSQL at 127.0.0.1:9/faceit_bot after 3 attempts: connection")
    assert "Connection refused" in message and "s3cretpw" not in message
    assert waits == [0.5, 1.0]  # between attempts, none after the last


@pytest.mark.db  # a server of its own, and three real timeouts (libpq waits at least 2 s each)
def test_a_database_that_accepts_but_never_answers_is_given_up_on(monkeypatch):
    """A server that takes the connection and says nothing must not hold the run forever: each attempt
    ends at its own timeout, three in all, however fast or slow the machine."""
    monkeypatch.setattr("faceit_etl.postgres.database.CONNECT_TIMEOUT_SECONDS", 1)
    monkeypatch.setattr("faceit_etl.postgres.database.time.sleep", lambda seconds: None)
    ended, real_connect = [], psycopg.connect

    def attempt(*args, **kwargs):
        try:
            return real_connect(*args, **kwargs)
        except psycopg.OperationalError as error:
            ended.append(("timeout expired" in str(error), kwargs["connect_timeout"]))
            raise

    monkeypatch.setattr(psycopg, "connect", attempt)
    with socket.create_server(("127.0.0.1", 0)) as silent:
        port = silent.getsockname()[1]
        with pytest.raises(DatabaseUnavailable) as refused:
            connect(f"postgresql://bot:s3cretpw@127.0.0.1:{port}/faceit_bot")
    assert ended == [(True, 1)] * 3
    assert str(refused.value).startswith(f"cannot connect to PostgreSQL at 127.0.0.1:{port}/faceit_bot after 3 attempts: ")
    assert "timeout expired" in str(refused.value)


def test_describe_names_host_port_and_database_only():
    assert describe("postgresql://bot:s3cret@db.example:6543/faceit_bot") == "db.example:6543/faceit_bot"
    assert describe("host=/run/pg dbname=faceit_bot password=s3cret") == "/run/pg/faceit_bot"
    assert describe("postgresql://bot:s3cret@db.example") == "db.example:5432/bot"
    assert describe("postgresql://db.example") == "db.example:5432/postgres"
    assert describe("postgresql:///faceit_bot") == "localhost:5432/faceit_bot"
    assert describe("postgresql://bot:s3%zz@db.example/x") == "<unparseable connection string>"


def test_text_without_a_password_is_left_as_it_is():
    text = "cannot connect to PostgreSQL at db.example:5432/faceit_bot: password authentication failed"
    assert redact(text, "postgresql://bot@db.example/faceit_bot") == text
    assert redact("postgresql://bot:@db.example/x") == "postgresql://bot:@db.example/x"
