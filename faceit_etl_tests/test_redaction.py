"""`redact` and `describe`: a password never survives, whatever its characters and however the connection
string is written, even when libpq refuses the string and quotes part of it back."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from faceit_etl.database import DatabaseUnavailable, connect, describe, redact

# Any characters but `*`, which the mask itself is made of; at least 4 so a hit is not a coincidence.
passwords = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="*\0"), min_size=4)


def keyword_quoted(secret: str) -> str:
    return "'" + secret.replace("\\", "\\\\").replace("'", "\\'") + "'"


def forms(secret: str) -> set[str]:
    return {secret, quote(secret, safe=""), keyword_quoted(secret)} | {word for word in secret.split() if len(word) >= 4}


@given(secret=passwords)
def test_a_url_password_of_any_characters_is_redacted_wherever_it_appears(secret):
    url = f"postgresql://bot:{quote(secret, safe='')}@db.example:5432/faceit_bot"
    text = f"connect {url} failed; password was {secret} ({quote(secret, safe='')})"
    redacted = redact(text, url)
    for form in forms(secret) - {keyword_quoted(secret)}:
        assert form not in redacted
    assert "db.example:5432/faceit_bot" in redacted  # the rest stays readable
    assert redact(url) == "postgresql://bot:***@db.example:5432/faceit_bot"  # even without knowing the URL


@given(secret=passwords)
def test_a_keyword_password_of_any_characters_is_redacted_wherever_it_appears(secret):
    url = f"host=db.example port=5432 dbname=faceit_bot user=bot password={keyword_quoted(secret)}"
    redacted = redact(f"{url} / {secret} / {quote(secret, safe='')}", url)
    for form in forms(secret):
        assert form not in redacted
    assert redact(url) == "host=db.example port=5432 dbname=faceit_bot user=bot password=***"


@given(secret=passwords, broken=st.sampled_from(["%zz", " x", "%"]))
def test_a_url_libpq_refuses_has_its_password_redacted_from_libpqs_message(secret, broken):
    """libpq quotes the token it stumbled on: `invalid percent-encoded token: "<password as written>"`."""
    written = quote(secret, safe="") + broken
    url = f"postgresql://bot:{written}@db.example/faceit_bot"
    with pytest.raises(DatabaseUnavailable) as refused:
        connect(url)
    message = str(refused.value)
    assert message.startswith("the database connection string is not valid: ")
    for form in forms(secret) | {written}:
        assert form not in message


def test_words_after_an_unquoted_keyword_password_are_redacted_too():
    """`password=my secret` is a keyword string libpq refuses, naming the word `secret`."""
    url = "host=db.example dbname=faceit_bot password=hunter2 Zebra7 port=5432"
    with pytest.raises(DatabaseUnavailable) as refused:
        connect(url)
    assert str(refused.value) == 'the database connection string is not valid: missing "=" after "***" in connection info string'
    assert redact("hunter2 Zebra7 port=5432 db.example", url) == "*** port=5432 db.example"


def test_describe_names_host_port_and_database_only():
    assert describe("postgresql://bot:s3cret@db.example:6543/faceit_bot") == "db.example:6543/faceit_bot"
    assert describe("host=/run/pg dbname=faceit_bot password=s3cret") == "/run/pg/faceit_bot"
    assert describe("postgresql://bot:s3cret@db.example") == "db.example:5432/bot"
    assert describe("postgresql://db.example") == "db.example:5432/postgres"
    assert describe("postgresql://bot:s3%zz@db.example/x") == "<unparseable connection string>"


def test_text_without_a_password_is_left_as_it_is():
    text = "cannot connect to PostgreSQL at db.example:5432/faceit_bot: password authentication failed"
    assert redact(text, "postgresql://bot@db.example/faceit_bot") == text
    assert redact("postgresql://bot:@db.example/x") == "postgresql://bot:@db.example/x"
