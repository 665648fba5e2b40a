"""What a load must leave as it was, recorded before its writes and proven unchanged before its commit.

Per user the tables hold, a 64-bit hash of the values (binary, not their text: a third of the time) of what the
file does not decide: the whole user and
subscription rows of a user the file does not have (or whose entry it rejected), and, of a user the
file has, its row ids and the cells of the fields its entry lacks (those keep the table's values).
After the writes the same hashes are taken again: a difference is a row or cell the load should
have kept and did not, named by Telegram id. The record lives in a temporary table of the load's
transaction, so only verdicts taken inside that transaction see it.

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
EXAMPLES = 20


@dataclass
class KeptRows:
    compared: int  # users whose kept rows or cells were compared
    changed: dict[str, list[int]] = field(default_factory=dict)  # table -> Telegram ids whose kept part changed

    @property
    def unchanged(self) -> bool:
        return not any(self.changed.values())


def _kept_cells(alias: str, stage: str, fields, columns: list[str]) -> list[sql.Composable]:
    """The cells of the fields the file's entry lacks; the others (the file's to set) as null. A user
    without `created_at` in the file keeps the one it has, whether the key is absent or null."""
    cells = []
    for column in columns:
        if column == "created_at":
            kept = sql.SQL("{s}.created_at IS NULL").format(s=sql.Identifier(stage))
        else:
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


def record(conn: psycopg.Connection, schema: str, deleted: sql.Identifier | None = None) -> None:
    """Before the writes, with the file's rows staged: the kept part of every user the load does not
    delete (`deleted`: a table of the ids prune deletes)."""
    spared = sql.SQL("WHERE NOT EXISTS (SELECT FROM {} d WHERE d.id = u.id)").format(deleted) if deleted else sql.SQL("")
    conn.execute(
        sql.SQL(
            """CREATE TEMP TABLE {kept} ON COMMIT DROP AS
               SELECT u.user_id, su.user_id IS NOT NULL AS matched, {digests}
               FROM {users} u {joined} {spared}"""
        ).format(kept=KEPT, digests=_digests(), users=table(schema, USERS), joined=_joined(schema), spared=spared)
    )


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
    """The kept parts now against the record; None when no load recorded them in this transaction."""
    if not _recorded(conn):
        return None
    compared = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(KEPT)).fetchone()[0]
    if not compared:
        return KeptRows(0, {USERS: [], SUBSCRIPTIONS: []})
    rows = conn.execute(
        sql.SQL(
            """SELECT user_id, user_changed, subscription_changed FROM (
                   SELECT k.user_id, n.users_digest IS DISTINCT FROM k.users_digest AS user_changed,
                          (NOT k.matched OR k.subscription_digest IS NOT NULL)
                          AND n.subscription_digest IS DISTINCT FROM k.subscription_digest AS subscription_changed
                   FROM {kept} k LEFT JOIN (SELECT u.user_id, {digests} FROM {users} u {joined}) n ON n.user_id = k.user_id
               ) compared WHERE user_changed OR subscription_changed ORDER BY 1"""
        ).format(kept=KEPT, digests=_digests(), users=table(schema, USERS), joined=_joined(schema))
    ).fetchall()
    return KeptRows(
        compared,
        {USERS: [user_id for user_id, user, _ in rows if user], SUBSCRIPTIONS: [user_id for user_id, _, sub in rows if sub]},
    )
