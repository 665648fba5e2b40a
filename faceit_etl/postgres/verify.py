"""Post-migration verification: what the database holds, compared with the mapped frames.

Content is compared in full, every row and column: the tables are read back with COPY (times as
epoch microseconds, so nothing depends on the session's time zone) and compared column by column
against the frames, keyed by row id. Differences are counted per column with example keys.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import psycopg
import pyarrow as pa
import pyarrow.csv as pacsv
from psycopg import sql

from faceit_etl.mapping import SUBSCRIPTION_COLUMNS, USER_COLUMNS
from faceit_etl.postgres.ddl import SUBSCRIPTIONS, USERS, table

EXAMPLES = 5


def row_count(conn: psycopg.Connection, schema: str, name: str) -> int:
    return conn.execute(sql.SQL("SELECT count(*) FROM {}").format(table(schema, name))).fetchone()[0]


def tier_counts(conn: psycopg.Connection, schema: str) -> dict[str, int]:
    rows = conn.execute(
        sql.SQL("SELECT tier::text, count(*) FROM {} GROUP BY 1 ORDER BY 1").format(table(schema, SUBSCRIPTIONS))
    ).fetchall()
    return {tier or "NULL": count for tier, count in rows}


def orphan_subscriptions(conn: psycopg.Connection, schema: str) -> int:
    query = sql.SQL(
        "SELECT count(*) FROM {subs} s LEFT JOIN {users} u ON u.id = s.user_id WHERE u.id IS NULL"
    ).format(subs=table(schema, SUBSCRIPTIONS), users=table(schema, USERS))
    return conn.execute(query).fetchone()[0]


def missing_referrers(conn: psycopg.Connection, schema: str) -> list[int]:
    """Telegram ids that users name as their referrer but that are not users here."""
    query = sql.SQL(
        """SELECT DISTINCT s.referred_by_user_id FROM {subs} s
           WHERE s.referred_by_user_id IS NOT NULL
             AND NOT EXISTS (SELECT 1 FROM {users} u WHERE u.user_id = s.referred_by_user_id)
           ORDER BY 1"""
    ).format(subs=table(schema, SUBSCRIPTIONS), users=table(schema, USERS))
    return [row[0] for row in conn.execute(query).fetchall()]


def self_referrals(conn: psycopg.Connection, schema: str) -> list[int]:
    query = sql.SQL(
        """SELECT u.user_id FROM {subs} s JOIN {users} u ON u.id = s.user_id
           WHERE s.referred_by_user_id = u.user_id ORDER BY 1"""
    ).format(subs=table(schema, SUBSCRIPTIONS), users=table(schema, USERS))
    return [row[0] for row in conn.execute(query).fetchall()]


@dataclass
class ContentDiff:
    table: str
    rows_compared: int
    missing: list[str] = field(default_factory=list)  # keys in the frame, not in the table
    unexpected: list[str] = field(default_factory=list)  # keys in the table, not in the frame
    differing: dict[str, list[str]] = field(default_factory=dict)  # column -> keys that differ

    @property
    def equal(self) -> bool:
        return not (self.missing or self.unexpected or self.differing)

    def summary(self) -> dict:
        return {
            "rows_compared": self.rows_compared,
            "missing_rows": len(self.missing),
            "unexpected_rows": len(self.unexpected),
            "differing_cells": {c: len(keys) for c, keys in self.differing.items()},
            "examples": {
                **({"missing": self.missing[:EXAMPLES]} if self.missing else {}),
                **({"unexpected": self.unexpected[:EXAMPLES]} if self.unexpected else {}),
                **{c: keys[:EXAMPLES] for c, keys in self.differing.items()},
            },
        }


def compare_users(conn: psycopg.Connection, schema: str, frame: pd.DataFrame) -> ContentDiff:
    # A created_at the file does not have is whatever the table holds (set at first load).
    return _compare(conn, schema, USERS, USER_COLUMNS, frame, any_value_where_missing={"created_at"})


def compare_subscriptions(conn: psycopg.Connection, schema: str, frame: pd.DataFrame) -> ContentDiff:
    return _compare(conn, schema, SUBSCRIPTIONS, SUBSCRIPTION_COLUMNS, frame, set())


def _compare(conn, schema, name, columns, frame, any_value_where_missing) -> ContentDiff:
    expected = _canonical(frame[columns]).set_index("id")
    actual = _read_table(conn, schema, name, columns, frame[columns]).set_index("id")
    diff = ContentDiff(name, len(expected))
    diff.missing = sorted(expected.index.difference(actual.index))
    diff.unexpected = sorted(actual.index.difference(expected.index))
    common = expected.index.intersection(actual.index)
    left, right = expected.loc[common], actual.loc[common]
    for column in columns[1:]:
        a, b = left[column], right[column]
        same = (a == b).fillna(False) | (a.isna() & b.isna())
        if column in any_value_where_missing:
            same |= a.isna()
        if not same.all():
            diff.differing[column] = sorted(common[~same.to_numpy()])
    return diff


def _canonical(frame: pd.DataFrame) -> pd.DataFrame:
    """Timestamps as epoch microseconds, so both sides compare as plain numbers."""
    out = frame.copy()
    for column in out.columns:
        if isinstance(out[column].dtype, pd.DatetimeTZDtype):
            naive = out[column].dt.tz_convert("UTC").dt.tz_localize(None).dt.as_unit("us")
            micros = pd.Series(naive.to_numpy().view("int64"), index=out.index, dtype="Int64")
            out[column] = micros.mask(naive.isna())
    return out


def _read_table(conn, schema, name, columns, like: pd.DataFrame) -> pd.DataFrame:
    select = []
    for column in columns:
        ident = sql.Identifier(column)
        if isinstance(like[column].dtype, pd.DatetimeTZDtype):
            select.append(sql.SQL("(extract(epoch FROM {0}) * 1000000)::bigint AS {0}").format(ident))
        else:
            select.append(ident)
    statement = sql.SQL("COPY (SELECT {} FROM {}) TO STDOUT (FORMAT csv, HEADER)").format(
        sql.SQL(", ").join(select), table(schema, name)
    )
    buffer = io.BytesIO()
    with conn.cursor().copy(statement) as copy:
        for block in copy:
            buffer.write(block)
    buffer.seek(0)
    types = {c: _arrow_type(like[c].dtype) for c in columns}
    arrow = pacsv.read_csv(
        buffer,
        convert_options=pacsv.ConvertOptions(
            column_types=types,
            null_values=[""],
            strings_can_be_null=True,
            quoted_strings_can_be_null=False,
            true_values=["t"],
            false_values=["f"],
        ),
    )
    return arrow.to_pandas(types_mapper=_pandas_type)


def _arrow_type(dtype) -> pa.DataType:
    if isinstance(dtype, pd.DatetimeTZDtype) or str(dtype) == "Int64":
        return pa.int64()
    if str(dtype) == "boolean":
        return pa.bool_()
    return pa.string()


def _pandas_type(arrow_type: pa.DataType):
    if arrow_type == pa.int64():
        return pd.Int64Dtype()
    if arrow_type == pa.bool_():
        return pd.BooleanDtype()
    if arrow_type in (pa.string(), pa.large_string()):
        return pd.StringDtype("pyarrow", na_value=np.nan)
    return None
