"""`redact` and `describe`: a password never survives, whatever its characters and however the connection
string is written, even when libpq refuses the string and quotes part of it back."""

from __future__ import annotations

import logging
import socket
import sys
from urllib.parse import quote

import psycopg
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from faceit_etl.cli import RedactingFormatter
from faceit_etl.postgres.database import INVALID_URL, DatabaseUnavailable, InvalidConnectionString, checked_url, connect, describe, redact
from faceit_etl.defs.resources import postgres_from_environment
from faceit_etl_tests.conftest import PostgresAt

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
