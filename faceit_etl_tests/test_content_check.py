"""`content_matches` compares every column of both tables: for each column of the DDL, one row is
altered in the database and the check must fail naming that column.

The columns come from the DDL text itself (and are checked against the created tables), so a
column the comparison stops reading, or a column added to the tables and never compared, fails here.
"""

from __future__ import annotations

import math
import re
from datetime import datetime

import pandas as pd
import psycopg
import pytest
from psycopg import sql

from faceit_etl.generate import generate_users, write_data_file
from faceit_etl.mapping import SUBSCRIPTION_COLUMNS, USER_COLUMNS
from faceit_etl.postgres import ddl, verify
from faceit_etl.postgres.load import load
from faceit_etl.postgres.verdicts import DIFFERING_VALUES, content_matches
from faceit_etl_tests.test_load import chain, document

SCHEMA = "public"


def ddl_columns() -> list[tuple[str, str]]:
    """(table, column) for every column the target DDL creates, in order."""
    found = []
    for name, body in re.findall(r"CREATE TABLE IF NOT EXISTS \{(\w+)\} \((.*?)\n\);", ddl._TARGET, re.S):
        table = {"users": ddl.USERS, "subscriptions": ddl.SUBSCRIPTIONS}[name]
        found += [(table, m) for m in re.findall(r"^    (\w+) ", body, re.M)]
    return found


# Columns the bot's file has no value for: the database sets them (`updated_at` on every write,
# a subscription's `created_at` at its insert), so no file can be compared with them.
NOT_IN_THE_FILE = {
    (ddl.USERS, "updated_at"),
    (ddl.SUBSCRIPTIONS, "created_at"),
    (ddl.SUBSCRIPTIONS, "updated_at"),
}

# A different value of the column's type, never equal to the old one (NULL included) and unique
# where the column must be.
_CHANGE = {
    "uuid": "gen_random_uuid()",
    "bigint": "(SELECT coalesce(max({c}), 0) + 1 FROM {t})",
    "integer": "(SELECT coalesce(max({c}), 0) + 1 FROM {t})",
    "boolean": "NOT coalesce({c}, false)",
    "timestamp with time zone": "coalesce({c}, now()) + interval '1 second'",
    "subscriptiontier": "(CASE WHEN {c} = 'PRO' THEN 'FREE' ELSE 'PRO' END)::subscriptiontier",
}


def test_the_ddl_columns_are_the_tables_columns(db):
    """The parse above reads the DDL right, and the only columns the mapped frames lack are the
    ones the file has no value for."""
    ddl.ensure_target_tables(db, SCHEMA)
    created = [(t, c) for t in (ddl.USERS, ddl.SUBSCRIPTIONS) for c, _, _ in ddl.column_types(db, SCHEMA, t)]
    assert ddl_columns() == created
    assert len(created) == 25
    compared = {ddl.USERS: USER_COLUMNS, ddl.SUBSCRIPTIONS: SUBSCRIPTION_COLUMNS}
    assert {(t, c) for t, c in created if c not in compared[t]} == NOT_IN_THE_FILE


@pytest.mark.parametrize(("table", "column"), ddl_columns(), ids=[f"{t}.{c}" for t, c in ddl_columns()])
def test_a_change_in_any_column_of_one_row_fails_content_matches_naming_it(db, database_url, tmp_path, table, column):
    mapped, rejects = chain(write_data_file(tmp_path / "data.json", 60, seed=3))
    with psycopg.connect(database_url) as conn:
        load(conn, SCHEMA, mapped, rejects, "run-1")
    assert content_matches(db, SCHEMA, mapped.users, mapped.subscriptions).passed

    frame = mapped.users if table == ddl.USERS else mapped.subscriptions
    # A row whose file value is present, so the change is one from a value the file gave.
    rows = frame[frame[column].notna()] if column in frame else frame
    row_id = str(rows["id"].iloc[0])
    data_type = {c: t for c, t, _ in ddl.column_types(db, SCHEMA, table)}[column]
    change = _CHANGE.get(data_type.split("(")[0], "'zz'")  # varchar: no file value is 'zz'
    before = db.execute(
        sql.SQL("SELECT {}::text FROM {} WHERE id = %s").format(sql.Identifier(column), ddl.table(SCHEMA, table)),
        [row_id],
    ).fetchone()[0]
    with db.transaction():
        db.execute("SET LOCAL session_replication_role = replica")  # let a key column point anywhere
        new_id = db.execute(
            sql.SQL("UPDATE {t} SET {c} = " + change + " WHERE id = %s RETURNING id::text").format(
                t=ddl.table(SCHEMA, table), c=sql.Identifier(column)
            ),
            [row_id],
        ).fetchone()[0]
    after = db.execute(
        sql.SQL("SELECT {}::text FROM {} WHERE id = %s").format(sql.Identifier(column), ddl.table(SCHEMA, table)),
        [new_id],
    ).fetchone()[0]
    assert after != before

    verdict = content_matches(db, SCHEMA, mapped.users, mapped.subscriptions)

    if (table, column) in NOT_IN_THE_FILE or (table, column) == (ddl.SUBSCRIPTIONS, "id"):
        # A row's own id is not compared: a row that existed before the load keeps the one it had.
        assert verdict.passed and verdict.description is None
        return
    assert not verdict.passed
    users_of = dict(zip(mapped.users["id"], mapped.users["user_id"]))
    telegram_id = int(rows["user_id"].iloc[0]) if table == ddl.USERS else int(users_of[rows["user_id"].iloc[0]])
    users, subscriptions = verdict.metadata[ddl.USERS], verdict.metadata[ddl.SUBSCRIPTIONS]
    if column in ("id", "user_id"):  # what ties the row to its Telegram id: the file's row is missing
        moved = table == ddl.USERS and column == "user_id"  # the user and its subscription now have another id
        assert users["examples"] == ({"missing": [telegram_id], "not_in_file": [int(after)]} if moved else {})
        assert subscriptions["examples"] == (
            {"missing": [telegram_id], "not_in_file": [int(after)]} if moved else {"missing": [telegram_id]}
        )
        assert subscriptions["rows_not_in_file"] == int(moved)
        assert verdict.description == "; ".join(
            ([f"{ddl.USERS}: 1 rows missing, 0 cells differ"] if moved else [])
            + [f"{ddl.SUBSCRIPTIONS}: 1 rows missing, 0 cells differ"]
        )
    else:
        summary = verdict.metadata[table]
        other = ddl.SUBSCRIPTIONS if table == ddl.USERS else ddl.USERS
        assert verdict.metadata[other]["examples"] == {}
        assert (summary["rows_compared"], summary["missing_rows"], summary["rows_not_in_file"]) == (len(frame), 0, 0)
        assert summary["differing_cells"] == {column: 1}
        assert summary["examples"] == {column: [telegram_id]}
        assert verdict.description == f"{table}: 0 rows missing, 1 cells differ (in {column})"
        file_value = frame.loc[frame["id"].astype(str) == row_id, column].iloc[0] if column in frame else None
        stored = db.execute(
            sql.SQL("SELECT {} FROM {} WHERE id = %s").format(sql.Identifier(column), ddl.table(SCHEMA, table)), [new_id]
        ).fetchone()[0]
        assert verdict.metadata[DIFFERING_VALUES] == [{
            "user_id": str(telegram_id), "column": f"{table}.{column}",
            "in_database": _as_shown(stored), "from_file": _as_shown(file_value),
        }]


def test_subscriptions_are_tied_to_their_users_telegram_ids_whatever_the_users_order(db, database_url, tmp_path):
    """`compare_subscriptions` looks each subscription's user up in the users frame by row id, not by
    position: the pipeline keeps the two frames aligned, but the comparison must not rest on it."""
    mapped, rejects = chain(write_data_file(tmp_path / "data.json", 30, seed=5))
    with psycopg.connect(database_url) as conn:
        load(conn, SCHEMA, mapped, rejects, "run-1")
    reversed_users = mapped.users.iloc[::-1].reset_index(drop=True)

    diff = verify.compare_subscriptions(db, SCHEMA, mapped.subscriptions, reversed_users)

    assert diff.equal
    assert len(mapped.subscriptions) == 30
    assert diff.summary() == {  # a count of duplicates only when there are some
        "rows_compared": 30, "missing_rows": 0, "rows_not_in_file": 0, "differing_cells": {}, "examples": {}}


def test_at_most_twenty_differing_cells_are_shown_per_table_across_its_columns(db, database_url, tmp_path):
    """Fifteen users differ in two columns each: the first column's fifteen cells are shown, then five of
    the second's, twenty in all, while the counts name all thirty."""
    mapped, rejects = chain(write_data_file(tmp_path / "data.json", 40, seed=4))
    with psycopg.connect(database_url) as conn:
        load(conn, SCHEMA, mapped, rejects, "run-1")
    changed = sorted(int(i) for i in mapped.users["user_id"].iloc[:15])
    db.execute(
        sql.SQL("UPDATE {} SET language = 'zz', total_requests = total_requests + 1000 WHERE user_id = ANY(%s)").format(
            ddl.table(SCHEMA, ddl.USERS)
        ),
        [changed],
    )

    verdict = content_matches(db, SCHEMA, mapped.users, mapped.subscriptions)

    assert verdict.metadata[ddl.USERS]["differing_cells"] == {"language": 15, "total_requests": 15}
    shown = [(cell["column"], int(cell["user_id"])) for cell in verdict.metadata[DIFFERING_VALUES]]
    assert shown == [(f"{ddl.USERS}.language", i) for i in changed] + [(f"{ddl.USERS}.total_requests", i) for i in changed[:5]]


def _as_shown(value) -> str | None:
    """A differing value as a person reads it: a timestamp in ISO 8601 UTC, a number without a
    fraction it never had, nothing for an empty cell."""
    if value is None or value is pd.NaT or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, datetime):
        return pd.Timestamp(value).tz_convert("UTC").isoformat()
    return str(value.item() if hasattr(value, "item") else value)


@pytest.mark.parametrize("texts", [
    {"faceit_nickname": ["007", "0017", "0027"], "referral_code": ["01", "02", "03"]},
    {"faceit_nickname": ["NULL", "N/A", "NaN"], "last_checked_match_id": ["", "null", "#N/A"]},
], ids=["digits", "null-words-and-empty"])
def test_text_is_compared_as_the_text_it_is(db, database_url, texts):
    """A failing comparison reads the tables back typed by the file's columns, with only an unquoted
    empty field as NULL: text of digits ("007") read as a number, or "NULL", "N/A" and "" read as no
    value, would differ from the file's text in every row and hide the one real change."""
    entries = generate_users(3, seed=5)
    for field, values in texts.items():
        for entry, value in zip(entries, values):
            (entry["subscription"] if field == "referral_code" else entry)[field] = value
    mapped, rejects = chain(document(entries))
    assert rejects.empty
    with psycopg.connect(database_url) as conn:
        load(conn, SCHEMA, mapped, rejects, "run-1")
    changed = entries[1]["user_id"]
    db.execute(sql.SQL("UPDATE {} SET total_requests = total_requests + 1 WHERE user_id = %s").format(
        ddl.table(SCHEMA, ddl.USERS)), [changed])

    verdict = content_matches(db, SCHEMA, mapped.users, mapped.subscriptions)

    assert verdict.description == f"{ddl.USERS}: 0 rows missing, 1 cells differ (in total_requests)"
    assert verdict.metadata[ddl.USERS]["examples"] == {"total_requests": [changed]}
