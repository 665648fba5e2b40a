"""What a load must leave as it was, recorded before its writes and proven unchanged before its commit.

Per user with something to keep, a 64-bit hash of its values (hash_record_extended: binary values,
not their text): the whole user and subscription rows of a user the file does not have (or whose
entry it rejected), and the cells of the fields an existing user's entry lacks (those keep the
table's values). After the writes the same hashes are taken again, and every file row's ids are
compared with the ids the load staged for it (an existing row's own): a difference is a row or cell
the load should have kept and did not, named by Telegram id. The record lives in a temporary table
of the load's transaction, so only verdicts taken inside that transaction see it.

It also tells the content check which of the file's users existed before the load: only those may
hold a value the file does not state; a new user must hold the file's value or the bot's default.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import psycopg
from psycopg import sql

from faceit_etl.mapping import PRESENT, SUBSCRIPTION_COLUMNS, USER_COLUMNS
from faceit_etl.postgres.ddl import SUBSCRIPTIONS, USERS, table
from faceit_etl.validation.fields import SUBSCRIPTION_FIELDS, USER_FIELDS, presence_bit

KEPT = sql.Identifier("_faceit_etl_kept")
STAGE = {name: sql.Identifier(f"_faceit_etl_stage_{name}") for name in (USERS, SUBSCRIPTIONS)}


@dataclass
class KeptRows:
    compared: int  # users whose kept rows or cells were hashed and compared
    changed: dict[str, list[int]] = field(default_factory=dict)  # table -> Telegram ids whose kept part changed


def _kept_cells(alias: str, stage: str, fields, columns: list[str]) -> list[sql.Composable]:
    """The cells of the fields the file's entry lacks (`created_at` too: a null given is the file's
    value); the others (the file's to set) as null."""
    cells = []
    for column in columns:
        kept = sql.SQL("{s}.{present} & {bit} = 0").format(
            s=sql.Identifier(stage), present=sql.Identifier(PRESENT), bit=sql.Literal(presence_bit(fields, column)))
        cells.append(sql.SQL("CASE WHEN {} THEN {}.{} END").format(kept, sql.Identifier(alias), sql.Identifier(column)))
    return cells


def _digests() -> sql.Composed:
    """users digest, subscription digest, from aliases u, s (the tables) and su, ss (the staged rows)."""
    def row_hash(alias, cells):
        return sql.SQL("hash_record_extended(ROW({}.id, {}), 0)").format(sql.Identifier(alias), sql.SQL(", ").join(cells))

    users = row_hash("u", _kept_cells("u", "su", USER_FIELDS, USER_COLUMNS[2:]))
    subscriptions = row_hash("s", _kept_cells("s", "ss", SUBSCRIPTION_FIELDS, SUBSCRIPTION_COLUMNS[2:]))
    return sql.SQL(
        """CASE WHEN su.user_id IS NULL THEN hash_record_extended(u, 0) ELSE {users} END AS users_digest,
           CASE WHEN s.id IS NULL THEN NULL WHEN su.user_id IS NULL THEN hash_record_extended(s, 0)
                ELSE {subscriptions} END AS subscription_digest"""
    ).format(users=users, subscriptions=subscriptions)


def _joined(schema: str) -> sql.Composed:
    """Each user of the table with its subscription and staged rows (a staged subscription carries the
    existing user's id once the load has matched it)."""
    return sql.SQL(
        """LEFT JOIN {subscriptions} s ON s.user_id = u.id
           LEFT JOIN {stage_users} su ON su.user_id = u.user_id
           LEFT JOIN {stage_subscriptions} ss ON ss.user_id = u.id"""
    ).format(subscriptions=table(schema, SUBSCRIPTIONS), stage_users=STAGE[USERS], stage_subscriptions=STAGE[SUBSCRIPTIONS])


def _lacks(stage: str, fields) -> sql.Composed:
    """Whether the staged row's entry lacks one of the fields (a frame without presence bits has all)."""
    return sql.SQL("(~{}.{} & {}) <> 0").format(
        sql.Identifier(stage), sql.Identifier(PRESENT), sql.Literal((1 << len(fields)) - 1))


def record(conn: psycopg.Connection, schema: str, deleted: sql.Identifier | None = None) -> None:
    """Before the writes, with the file's rows staged: the kept part of every user the load does not
    delete (`deleted`: a table of the ids prune deletes) and that has one: a user the file does not
    have (or rejected), or whose entry lacks a field. A user whose entry has every field keeps only
    its ids, which `compare` proves from the staged rows."""
    conditions = [sql.SQL("(su.user_id IS NULL OR {} OR (s.id IS NOT NULL AND {}))").format(
        _lacks("su", USER_FIELDS), _lacks("ss", SUBSCRIPTION_FIELDS))]
    if deleted is not None:
        conditions.append(sql.SQL("NOT EXISTS (SELECT FROM {} d WHERE d.id = u.id)").format(deleted))
    # Two steps: which users have a kept part (narrow rows), then the hashes of theirs only; one statement
    # would carry every user's whole row through the joins (1.5 s at 100k users, most of them all fields).
    conn.execute(
        sql.SQL(
            """CREATE TEMP TABLE {kept} ON COMMIT DROP AS
               SELECT u.user_id, su.user_id IS NOT NULL AS matched, NULL::bigint AS users_digest,
                      NULL::bigint AS subscription_digest
               FROM {users} u {joined} WHERE {conditions}"""
        ).format(kept=KEPT, users=table(schema, USERS), joined=_joined(schema), conditions=sql.SQL(" AND ").join(conditions))
    )
    conn.execute(sql.SQL("ANALYZE {}").format(KEPT))
    conn.execute(
        sql.SQL(
            """UPDATE {kept} k SET users_digest = n.users_digest, subscription_digest = n.subscription_digest
               FROM ({now}) n WHERE n.user_id = k.user_id"""
        ).format(kept=KEPT, now=_digests_of_kept(schema))
    )


def _digests_of_kept(schema: str) -> sql.Composed:
    return sql.SQL("SELECT u.user_id, {digests} FROM {kept} k JOIN {users} u ON u.user_id = k.user_id {joined}").format(
        digests=_digests(), kept=KEPT, users=table(schema, USERS), joined=_joined(schema))


def record_nothing(conn: psycopg.Connection) -> None:
    """Loading empty tables: no user existed, so every row must hold the file's values or the defaults."""
    conn.execute(
        sql.SQL(
            "CREATE TEMP TABLE {} (user_id bigint, matched boolean, users_digest bigint, subscription_digest bigint) "
            "ON COMMIT DROP"
        ).format(KEPT)
    )


def _recorded(conn: psycopg.Connection) -> bool:
    return conn.execute("SELECT to_regclass('pg_temp._faceit_etl_kept') IS NOT NULL").fetchone()[0]


def existed(conn: psycopg.Connection) -> np.ndarray | None:
    """Telegram ids of the file's users that existed before this transaction's load; None when no
    load recorded them in it (checks judged alone cannot tell)."""
    if not _recorded(conn):
        return None
    rows = conn.execute(sql.SQL("SELECT user_id FROM {} WHERE matched").format(KEPT)).fetchall()
    return np.array([row[0] for row in rows], dtype="int64")


def compare(conn: psycopg.Connection, schema: str) -> KeptRows | None:
    """The kept parts now against the record, and the row ids of the file's users against the staged
    ones (the load gives those the ids of the rows that exist); None when no load recorded them in
    this transaction."""
    if not _recorded(conn):
        return None
    compared = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(KEPT)).fetchone()[0]
    changed: dict[str, set[int]] = {USERS: set(), SUBSCRIPTIONS: set()}
    if compared:
        rows = conn.execute(
            sql.SQL(
                """SELECT user_id, user_changed, subscription_changed FROM (
                       SELECT k.user_id, n.users_digest IS DISTINCT FROM k.users_digest AS user_changed,
                              (NOT k.matched OR k.subscription_digest IS NOT NULL)
                              AND n.subscription_digest IS DISTINCT FROM k.subscription_digest AS subscription_changed
                       FROM {kept} k LEFT JOIN ({now}) n ON n.user_id = k.user_id
                   ) compared WHERE user_changed OR subscription_changed"""
            ).format(kept=KEPT, now=_digests_of_kept(schema))
        ).fetchall()
        for user_id, user, subscription in rows:
            if user:
                changed[USERS].add(user_id)
            if subscription:
                changed[SUBSCRIPTIONS].add(user_id)
    if conn.execute("SELECT to_regclass('pg_temp._faceit_etl_stage_users') IS NOT NULL").fetchone()[0]:
        changed[USERS].update(row[0] for row in conn.execute(sql.SQL(
            "SELECT su.user_id FROM {stage_users} su JOIN {users} u ON u.user_id = su.user_id WHERE u.id <> su.id"
        ).format(stage_users=STAGE[USERS], users=table(schema, USERS))))
        changed[SUBSCRIPTIONS].update(row[0] for row in conn.execute(sql.SQL(
            """SELECT su.user_id FROM {stage_subscriptions} ss JOIN {stage_users} su ON su.id = ss.user_id
               JOIN {subscriptions} s ON s.user_id = ss.user_id WHERE s.id <> ss.id"""
        ).format(stage_subscriptions=STAGE[SUBSCRIPTIONS], stage_users=STAGE[USERS],
                 subscriptions=table(schema, SUBSCRIPTIONS))))
    return KeptRows(compared, {name: sorted(ids) for name, ids in changed.items()})
