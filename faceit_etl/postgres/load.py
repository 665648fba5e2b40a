"""The load: COPY the mapped frames into staging, then one transaction that upserts into the target.

Users are matched on their Telegram id (`users.user_id`), never on the row id: a row that exists
keeps its `id` (the bot's ORM gives its rows random uuid4 ids) and its subscription is matched
through that id; new rows get ids derived from the Telegram id. New rows are inserted, changed rows
updated (`updated_at` moves only then), unchanged rows are left untouched, so re-running on the same
file writes nothing. Users the file does not have are kept (`kept_absent`), or deleted with `prune`,
which refuses before writing to delete more than `max_prune_fraction` of the users. `truncate`
replaces the tables' content instead. Everything, table creation included, happens in one
transaction: any failure leaves the target exactly as it was.

An empty target (a first migration, or `truncate`) is filled the fast way: its keys are set aside,
the frames are copied straight into the tables and the keys are rebuilt (`keys.py`). There is
nothing to compare against, so staging and the upsert would only cost time.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from fractions import Fraction

import pandas as pd
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from psycopg import sql

from faceit_etl.mapping import PRESENT, SUBSCRIPTION_COLUMNS, USER_COLUMNS, MappedFrames
from faceit_etl.postgres import kept, runlog
from faceit_etl.postgres.ddl import (
    BRING_INTO_SIGHT,
    MIGRATION_REJECTS,
    SUBSCRIPTIONS,
    USERS,
    TargetError,
    TargetFrame,
    check_column_widths,
    check_columns_present,
    check_nulls_fit,
    ensure_bookkeeping_tables,
    ensure_target_tables,
    rows_out_of_sight,
    table,
    table_exists,
)
from faceit_etl.postgres.fingerprint import fingerprint, left_by
from faceit_etl.postgres.keys import catalog_of, drop_keys, outside_references, refuse_changed_catalog, restore_keys, table_keys
from faceit_etl.postgres.lock import lock_schema
from faceit_etl.source.numbers import may_hold_decimal_number
from faceit_etl.source.repeats import loads_exact, written
from faceit_etl.validation.fields import SUBSCRIPTION_FIELDS, USER_FIELDS, presence_bit

REJECTS_TABLE_COLUMNS = ["run_id", "source_index", "user_id", "field", "reason", "value", "raw"]
# Columns whose change counts as a change of the row (ids and bookkeeping times excluded).
_USER_DATA = USER_COLUMNS[2:]
_SUBSCRIPTION_DATA = SUBSCRIPTION_COLUMNS[2:]

Progress = Callable[[str, int, int], None]  # (stage, done, total)
# The metadata keys under which a progress call is published as an event, for a watcher to read.
PROGRESS_STAGE, PROGRESS_DONE, PROGRESS_TOTAL = "progress_stage", "progress_rows_done", "progress_rows_total"
_NAMED_CLASHES = 20  # referral codes named in the error; the rest are counted
# (connection, run whose load of this input left the tables as they are or None, their fingerprint)
BeforeWrite = Callable[[psycopg.Connection, str | None, dict], None]


_ABSENT = sql.Identifier("_faceit_etl_absent")
_SAMPLE = 20  # Telegram ids of absent users named in the stats; the rest are counted


class PruneRefused(TargetError):
    """`prune` would delete more of the users than `max_prune_fraction` allows; nothing was written."""


LOAD_COUNTS = ("inserted", "updated", "unchanged", "kept_absent", "kept_rejected", "deleted")


@dataclass
class TableStats:
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    kept_absent: int = 0  # rows of users the file does not have, left as they are
    kept_rejected: int = 0  # rows of users whose entry the file has but rejected, left as they are
    deleted: int = 0  # rows of users the file does not have (prune), or every row before a truncate


@dataclass
class LoadStats:
    users: TableStats
    subscriptions: TableStats
    rejects_written: int
    created_tables: bool
    truncated: bool
    # The earlier run of the same input that left the tables as they were: nothing was compared.
    recognised_from_run: str | None = None
    pruned: bool = False
    # Telegram ids of users the file does not have (kept, or deleted with prune): the first few, sorted.
    absent_user_ids: list[int] = field(default_factory=list)
    absent_users: int = 0  # how many there are: absent_user_ids is the first of them
    # Every user prune deleted, sorted (bounded by max_prune_fraction): kept apart from the logged dict,
    # the caller stores it as a file and names it in `deleted_user_ids_file`.
    deleted_user_ids: list[int] = field(default_factory=list, repr=False)
    deleted_user_ids_file: str | None = None

    def as_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "deleted_user_ids"}

    def kept_absent(self) -> dict[str, int]:
        """Rows kept as they were per table (users the file lacks, and users whose entry it rejected),
        counted from the tables before the writes: what the count check adds to the file's rows."""
        return {name: t.kept_absent + t.kept_rejected for name, t in ((USERS, self.users), (SUBSCRIPTIONS, self.subscriptions))}


def load(
    conn: psycopg.Connection, schema: str, mapped: MappedFrames, rejects: pd.DataFrame, run_id: str, *,
    truncate: bool = False, batch_size: int = 10_000, progress: Progress | None = None,
    before_commit: Callable[[psycopg.Connection, LoadStats], None] | None = None,
    before_log: Callable[[LoadStats], None] | None = None, dry_run: bool = False, log: runlog.RunLog | None = None,
    input_identity: str | None = None, before_write: BeforeWrite | None = None, prune: bool = False,
    max_prune_fraction: float = 0.1,
) -> LoadStats:
    """Load in one transaction. `before_commit` (the verdicts) runs inside it with the stats, after every
    write of the transaction: the rows, the rejects and the run's `log` row marked `success` (a load that
    never commits leaves it `running`), so nothing a trigger on any of them does escapes the verdicts.
    `before_log` runs just before that row is written, for what it must name. With `dry_run` the
    transaction is then rolled back, so the stats say what would have been written.

    `before_write` (the table snapshot) runs under the lock, before anything is written, with the
    earlier run recognised (or None): the state it sees is exactly the one this load changes, as no
    other load or rollback can commit in between."""
    with conn.transaction():
        plan = _plan_under_lock(
            conn, schema, mapped, rejects,
            truncate=truncate, prune=prune, max_prune_fraction=max_prune_fraction, input_identity=input_identity,
        )
        if before_write is not None:
            before_write(conn, plan.recognised, plan.found)
        created = ensure_target_tables(conn, schema)
        _refuse_rows_the_tables_cannot_take(conn, schema, mapped, rejects, truncate, dry_run, created)
        users, subscriptions = _write_rows(conn, schema, mapped, plan, batch_size, progress)
        absent = _count_deleted_and_kept(conn, schema, plan, users, subscriptions)
        written = _write_rejects(conn, schema, rejects, run_id)
        stats = _load_stats(conn, plan, users, subscriptions, absent, written, USERS in created)
        if before_log is not None:
            before_log(stats)
        if log is not None and not dry_run:
            _log_success(conn, schema, log, plan, stats, mapped, rejects, input_identity)
        # Every write of this transaction is done: what it queued to run later (deferred constraints and
        # constraint triggers, ours or queued by our bookkeeping) runs now, so the verdicts come last.
        conn.execute("SET CONSTRAINTS ALL IMMEDIATE")
        if before_commit is not None:
            before_commit(conn, stats)
        if dry_run:
            raise psycopg.Rollback()
        if log is not None:
            runlog.ended(log, conn)
    return stats


@dataclass(frozen=True)
class _Plan:
    """What the load decided under the lock before its first write; the later phases only read it."""

    truncate: bool
    prune: bool  # prune asked for and no truncate (which deletes every row anyway)
    locked_at: datetime
    recognised: str | None  # the earlier run of this input that left the tables as they are now
    found: dict  # the tables' fingerprint, when it was read to recognise them
    rows_before: tuple[int, int]  # (users, subscriptions) in the tables
    rejected_ids: list[int]  # Telegram ids of rejected entries that no accepted entry has
    file_ids: list[int]  # the file's users: its accepted entries and those rejected ids
    kept_rejected: tuple[int, int]  # rows of the rejected ids, which the load leaves as they are
    absent: Absent  # the users prune deletes (none without prune)


def _plan_under_lock(conn, schema, mapped: MappedFrames, rejects: pd.DataFrame, *, truncate: bool, prune: bool,
                     max_prune_fraction: float, input_identity: str | None) -> _Plan:
    """Take the schema's lock and decide what the load does, writing no row yet. With `input_identity`
    (see `identity.py`) a load of an input whose earlier load left the tables as they are now is
    recognised: it will write nothing without comparing a row. A refused prune raises here."""
    lock_schema(conn, schema)
    if hidden := rows_out_of_sight(conn, schema):
        raise TargetError(
            f"refusing to load: {'; '.join(hidden)}. faceit-etl counts, verifies and snapshots every row of the "
            f"bot's tables, and would miss those. Nothing was written. {BRING_INTO_SIGHT}, then run again"
        )
    ensure_bookkeeping_tables(conn, schema)  # a dry run's, made here and rolled back with it
    # Loads commit in the order they take the lock: rollback orders migrations by this time.
    locked_at = conn.execute("SELECT clock_timestamp()").fetchone()[0]
    recognised, found = None, {}
    if input_identity is not None and not truncate:
        recognised, found = left_by(conn, schema, input_identity)
    rows_before = _row_counts(conn, schema)
    # The file's users are its accepted entries and its rejected ones whose Telegram id is known.
    rejected_ids = sorted(set(int(i) for i in rejects["user_id"].dropna()) - set(int(i) for i in mapped.users["user_id"]))
    file_ids = [int(i) for i in mapped.users["user_id"]] + rejected_ids
    kept_rejected = (0, 0) if truncate or not rejected_ids or not rows_before[0] else _rows_of(conn, schema, rejected_ids)
    absent = Absent()
    if prune and not truncate:
        absent = _absent_to_prune(conn, schema, rejects, rows_before[0], file_ids, max_prune_fraction)
        if absent.users:  # the tables hold users to delete: not as the earlier load left them
            recognised = None
    return _Plan(truncate, prune and not truncate, locked_at, recognised, found, rows_before, rejected_ids, file_ids,
                 kept_rejected, absent)


def _absent_to_prune(conn, schema, rejects: pd.DataFrame, users_in_table: int, file_ids: list[int],
                     max_prune_fraction: float) -> Absent:
    """The users `prune` deletes (their subscriptions with them), counted and judged before anything
    is written: refused when a rejected entry cannot be matched, or when they are more than
    `max_prune_fraction` of the users."""
    _refuse_unmatched_prune(rejects, users_in_table, schema)
    absent = _absent(conn, schema, file_ids)
    _refuse_large_prune(absent, schema, max_prune_fraction)
    return absent


def _refuse_rows_the_tables_cannot_take(conn, schema, mapped: MappedFrames, rejects: pd.DataFrame, truncate: bool,
                                        dry_run: bool, created: frozenset[str]) -> None:
    """Before any row is written: every column of the bot present, every value fitting its column
    (width, NOT NULL), and no truncate with no user to load. `created`: what this load made, which a
    refusal takes away again."""
    telegram_id_of = pd.Series(mapped.users["user_id"].to_numpy(), index=mapped.users["id"].to_numpy())
    targets = [
        TargetFrame(USERS, mapped.users, mapped.users["user_id"]),
        TargetFrame(
            SUBSCRIPTIONS, mapped.subscriptions,
            pd.Series(telegram_id_of.reindex(mapped.subscriptions["user_id"]).to_numpy(),
                      index=mapped.subscriptions.index),
        ),
    ]
    check_columns_present(conn, schema, created)
    check_column_widths(conn, schema, targets, dry_run)
    check_nulls_fit(conn, schema, targets, lambda ids: set() if truncate else _existing_user_ids(conn, schema, ids),
                    created)
    if truncate and mapped.users.empty:
        why = f"every entry of the file was rejected ({rejects['source_index'].nunique()})" if len(rejects) else "the file holds none"
        raise TargetError(f"refusing to truncate the tables with no user to load: {why}")


def _write_rows(conn, schema, mapped: MappedFrames, plan: _Plan, batch_size: int,
                progress: Progress | None) -> tuple[TableStats, TableStats]:
    """The rows, by one of three paths: none over tables recognised as this input's (loading the same
    rows again is a no-op), COPY straight into empty tables, else staging and the upsert."""
    if plan.recognised is not None:
        return TableStats(unchanged=len(mapped.users)), TableStats(unchanged=len(mapped.subscriptions))
    if _empty_after_lock(conn, schema, plan.truncate):
        return _fill_empty(conn, schema, mapped, batch_size, progress)
    return _stage_and_upsert(conn, schema, mapped, plan, batch_size, progress)


def _stage_and_upsert(conn, schema, mapped: MappedFrames, plan: _Plan, batch_size: int,
                      progress: Progress | None) -> tuple[TableStats, TableStats]:
    """Stage the frames, give them the existing rows' ids, delete what prune deletes, then upsert:
    only the rows that differ are written."""
    stage_users = _stage(conn, schema, USERS, mapped.users, USER_COLUMNS, batch_size, progress)
    stage_subscriptions = _stage(
        conn, schema, SUBSCRIPTIONS, mapped.subscriptions, SUBSCRIPTION_COLUMNS, batch_size, progress
    )
    _keep_existing_ids(conn, schema, stage_users, stage_subscriptions)
    deletes = plan.prune and plan.absent.users > 0
    kept.record(conn, schema, _ABSENT if deletes else None)
    if deletes:
        _delete_absent(conn, schema)
    _refuse_codes_held_outside_the_file(conn, schema, stage_users, stage_subscriptions, set(plan.rejected_ids))
    users = _upsert_users(conn, schema, stage_users, len(mapped.users))
    return users, _upsert_subscriptions(conn, schema, stage_subscriptions, len(mapped.subscriptions))


def _count_deleted_and_kept(conn, schema, plan: _Plan, users: TableStats, subscriptions: TableStats) -> Absent:
    """Fill in each table's deleted and kept counts; return the users the file does not have, counted
    again (for the sample of their ids) when rows were kept without prune."""
    if plan.truncate:
        users.deleted, subscriptions.deleted = plan.rows_before
        return plan.absent
    if plan.prune:
        users.deleted, subscriptions.deleted = plan.absent.users, plan.absent.subscriptions
    # What was kept, from the tables as they were before the writes (the rows there minus those the
    # file matched or prune deleted), never recounted after them: a row the writes removed or added
    # beside the file's then shows in the count check.
    for stats_of, before, rejected in zip((users, subscriptions), plan.rows_before, plan.kept_rejected):
        stats_of.kept_rejected = rejected
        stats_of.kept_absent = before - stats_of.updated - stats_of.unchanged - stats_of.deleted - rejected
    if not plan.prune and users.kept_absent:
        return _absent(conn, schema, plan.file_ids)  # for the sample of ids only
    return plan.absent


def _load_stats(conn, plan: _Plan, users: TableStats, subscriptions: TableStats, absent: Absent,
                rejects_written: int, created: bool) -> LoadStats:
    return LoadStats(
        users, subscriptions, rejects_written, created, plan.truncate, plan.recognised,
        pruned=plan.prune, absent_user_ids=absent.sample, absent_users=absent.users,
        deleted_user_ids=_deleted_ids(conn) if plan.prune and absent.users else [],
    )


def _log_success(conn, schema, log: runlog.RunLog, plan: _Plan, stats: LoadStats, mapped: MappedFrames,
                 rejects: pd.DataFrame, input_identity: str | None) -> None:
    """The run's log row, marked `success` inside the load's transaction. It keeps the `input_identity`
    with the tables' fingerprint, by which a later load of the same input recognises them."""
    runlog.finish(
        log,
        "success",
        processed_items=len(mapped.users),
        failed_items=int(rejects["source_index"].nunique()),
        # What the load leaves, whatever its path: rollback compares the tables with it.
        metadata={
            "load": stats.as_dict(),
            "locked_at": plan.locked_at.isoformat(),
            "fingerprint": plan.found if plan.recognised else fingerprint(conn, schema),
        }
        | ({"input_identity": input_identity} if input_identity is not None else {}),
        conn=conn,
    )


@dataclass(frozen=True)
class Absent:
    """The users the tables hold and the file does not have."""

    users: int = 0
    subscriptions: int = 0
    sample: list[int] = field(default_factory=list)
    users_in_table: int = 0


def _row_counts(conn, schema) -> tuple[int, int]:
    """(users, subscriptions) in the tables; none in a table that does not exist yet, each table on its
    own (users left without their subscriptions table are still there, and counted)."""
    users, subscriptions = (
        conn.execute(sql.SQL("SELECT count(*) FROM {}").format(table(schema, name))).fetchone()[0]
        if table_exists(conn, schema, name) else 0
        for name in (USERS, SUBSCRIPTIONS)
    )
    return users, subscriptions


def _existing_user_ids(conn, schema, telegram_ids: list[int]) -> set[int]:
    """Those of these Telegram ids the users table holds."""
    query = sql.SQL("SELECT user_id FROM {} WHERE user_id = ANY(%s::bigint[])").format(table(schema, USERS))
    return {row[0] for row in conn.execute(query, [telegram_ids])}


def _rows_of(conn, schema, telegram_ids: list[int]) -> tuple[int, int]:
    """(users, subscriptions) in the tables of these Telegram ids."""
    return conn.execute(
        sql.SQL(
            """WITH found AS (SELECT id FROM {users} WHERE user_id = ANY(%s::bigint[]))
               SELECT (SELECT count(*) FROM found), (SELECT count(*) FROM {subscriptions} WHERE user_id IN (SELECT id FROM found))"""
        ).format(users=table(schema, USERS), subscriptions=table(schema, SUBSCRIPTIONS)),
        [telegram_ids],
    ).fetchone()


def _refuse_unmatched_prune(rejects: pd.DataFrame, users_in_table: int, schema: str) -> None:
    """A rejected entry without a valid user_id stands for a user that cannot be matched: `prune` could
    delete the very user it was meant to be, so it refuses before writing anything."""
    unmatched = sorted(int(i) for i in rejects.loc[rejects["user_id"].isna(), "source_index"].unique())
    if unmatched and users_in_table:
        # Entries counted from 1, as every reject line says them.
        named = ", ".join(str(i + 1) for i in unmatched[:_SAMPLE]) + (", …" if len(unmatched) > _SAMPLE else "")
        entries = f"entr{'y' if len(unmatched) == 1 else 'ies'}"
        raise PruneRefused(
            f"refusing to prune: {len(unmatched)} rejected {entries} of the file "
            f"({entries} {named}) {'has' if len(unmatched) == 1 else 'have'} no valid user_id, so the user{'' if len(unmatched) == 1 else 's'} "
            f"meant cannot be told from users the file lacks in {schema}.{USERS}; nothing was written. Correct the "
            "entries, or migrate without prune to keep every user"
        )


def _absent(conn, schema, file_ids: list[int]) -> Absent:
    """Counted with the file's Telegram ids as one array (a hash anti-join; 1.5 s at 200,000 users,
    so only when needed). For `prune` it runs before the snapshot and the staging, so a refused prune
    has written nothing; the absent users' ids stay in a temporary table until the commit, and
    `prune` deletes exactly the users counted and judged here."""
    users_in_table = _row_counts(conn, schema)[0]
    if not users_in_table:
        return Absent()
    conn.execute(sql.SQL("CREATE TEMP TABLE {} (id uuid, user_id bigint) ON COMMIT DROP").format(_ABSENT))
    conn.execute(
        sql.SQL(
            """INSERT INTO {absent} SELECT u.id, u.user_id FROM {users} u
               WHERE NOT EXISTS (SELECT FROM unnest(%s::bigint[]) f(user_id) WHERE f.user_id = u.user_id)"""
        ).format(absent=_ABSENT, users=table(schema, USERS)),
        [file_ids],
    )
    users, sample = conn.execute(
        sql.SQL("SELECT (SELECT count(*) FROM {absent}), ARRAY(SELECT user_id FROM {absent} ORDER BY user_id LIMIT %s)")
        .format(absent=_ABSENT),
        [_SAMPLE],
    ).fetchone()
    subscriptions = conn.execute(
        sql.SQL("SELECT count(*) FROM {subscriptions} s JOIN {absent} a ON a.id = s.user_id")
        .format(absent=_ABSENT, subscriptions=table(schema, SUBSCRIPTIONS)),
    ).fetchone()[0] if table_exists(conn, schema, SUBSCRIPTIONS) else 0  # made by this load when absent
    return Absent(users, subscriptions, list(sample), users_in_table)


def prune_allowance(users_in_table: int, max_fraction: float) -> int:
    """The most users `prune` may delete: ⌊max_fraction × users⌋ in exact arithmetic, with the fraction
    read as the decimal it was written as (0.57 × 100 is 57, where floating point gives 56.99…)."""
    exact = Fraction(str(max_fraction))
    return users_in_table * exact.numerator // exact.denominator


def _refuse_large_prune(absent: Absent, schema: str, max_fraction: float) -> None:
    """A truncated or wrong file must never empty the bot's table."""
    total = absent.users_in_table
    allowed = prune_allowance(total, max_fraction)
    if absent.users > allowed:
        raise PruneRefused(
            f"refusing to prune: {absent.users} of the {total} users in {schema}.{USERS} "
            f"({absent.users / total:.1%}) are not in the file, more than max_prune_fraction {max_fraction:g} "
            f"allows ({allowed} user{'' if allowed == 1 else 's'}); nothing was written. Check that the file is complete, "
            "or raise max_prune_fraction, or migrate without prune to keep them"
        )


def _keep_existing_ids(conn, schema, stage_users, stage_subscriptions) -> None:
    """Give staged rows the ids of the rows that exist for the same Telegram id: a user keeps its
    `id` and its subscription stays attached to it and keeps its own `id`, whoever wrote the rows
    (the upsert never writes an existing row's id; the staged ones let the verdicts prove that)."""
    users = table(schema, USERS)
    conn.execute(
        sql.SQL(
            """UPDATE {stage_subscriptions} ss SET user_id = u.id FROM {stage_users} s JOIN {users} u ON u.user_id = s.user_id
               WHERE ss.user_id = s.id AND u.id <> s.id"""
        ).format(stage_subscriptions=stage_subscriptions, stage_users=stage_users, users=users)
    )
    conn.execute(
        sql.SQL("UPDATE {stage_users} s SET id = u.id FROM {users} u WHERE u.user_id = s.user_id AND u.id <> s.id").format(
            stage_users=stage_users, users=users
        )
    )
    conn.execute(
        sql.SQL("UPDATE {stage} ss SET id = t.id FROM {subscriptions} t WHERE t.user_id = ss.user_id AND t.id <> ss.id").format(
            stage=stage_subscriptions, subscriptions=table(schema, SUBSCRIPTIONS)
        )
    )


def _deleted_ids(conn) -> list[int]:
    """Every Telegram id prune deleted, from the absent set it deleted."""
    return [row[0] for row in conn.execute(sql.SQL("SELECT user_id FROM {} ORDER BY 1").format(_ABSENT))]


def _delete_absent(conn, schema) -> None:
    """Delete the absent users counted before the snapshot, their subscriptions explicitly first
    (whatever the foreign key's ON DELETE says)."""
    for name, key in ((SUBSCRIPTIONS, "user_id"), (USERS, "id")):
        conn.execute(
            sql.SQL("DELETE FROM {} t USING {} a WHERE t.{} = a.id").format(table(schema, name), _ABSENT, sql.Identifier(key))
        )


def _empty_after_lock(conn, schema, truncate: bool) -> bool:
    """Whether the tables are (or, with truncate, are made) empty, locked against every other session
    until commit. Tables that other tables reference keep their keys and take the upsert path."""
    targets = [table(schema, USERS), table(schema, SUBSCRIPTIONS)]
    if not truncate and not _looks_empty(conn, targets):
        return False
    if holders := outside_references(conn, schema, [USERS, SUBSCRIPTIONS]):
        if truncate:  # TRUNCATE would refuse anyway; say who holds the reference
            raise TargetError(
                f"refusing to truncate: other tables reference the bot's tables ({', '.join(holders)}); "
                "nothing was written"
            )
        return False
    conn.execute(sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(sql.SQL(", ").join(targets)))
    if truncate:
        conn.execute(sql.SQL("TRUNCATE {}").format(sql.SQL(", ").join(targets)))
        return True
    return _looks_empty(conn, targets)  # again, now that nobody else can write


def _looks_empty(conn, targets: list[sql.Identifier]) -> bool:
    query = sql.SQL(" AND ").join(sql.SQL("NOT EXISTS (SELECT FROM {})").format(t) for t in targets)
    return conn.execute(sql.SQL("SELECT ") + query).fetchone()[0]


def _fill_empty(conn, schema, mapped: MappedFrames, batch_size, progress) -> tuple[TableStats, TableStats]:
    """COPY straight into the empty tables with their keys set aside, then rebuild the keys (which
    also proves the rows unique and every subscription's user present, as the upsert would)."""
    kept.record_nothing(conn)
    keys = table_keys(conn, schema, [USERS, SUBSCRIPTIONS])
    before = catalog_of(conn, schema, [USERS, SUBSCRIPTIONS])
    drop_keys(conn, schema, keys)
    # As in the upsert: a user whose entry lacks created_at is created now (the load's time); a null given stays null.
    now = conn.execute("SELECT now()").fetchone()[0]
    lacked = (mapped.users[PRESENT].to_numpy(dtype="int64") & presence_bit(USER_FIELDS, "created_at")) == 0
    users = mapped.users.assign(created_at=mapped.users["created_at"].mask(lacked, pd.Timestamp(now)))
    copy_frame(conn, table(schema, USERS), users, USER_COLUMNS, batch_size, progress, f"copy {USERS}")
    copy_frame(
        conn, table(schema, SUBSCRIPTIONS), mapped.subscriptions, SUBSCRIPTION_COLUMNS, batch_size, progress,
        f"copy {SUBSCRIPTIONS}",
    )
    conn.execute("SET LOCAL maintenance_work_mem = '256MB'")  # index builds sort in memory
    # A deferred trigger's pending events would make the ALTERs that restore the keys fail: fire them now.
    conn.execute("SET CONSTRAINTS ALL IMMEDIATE")
    restore_keys(conn, schema, keys)
    refuse_changed_catalog(before, catalog_of(conn, schema, [USERS, SUBSCRIPTIONS]), schema)
    return TableStats(inserted=len(users)), TableStats(inserted=len(mapped.subscriptions))


def to_csv_chunks(frame: pd.DataFrame, batch_size: int):
    """The frame as PostgreSQL CSV, `batch_size` rows per chunk: NULL unquoted, empty text quoted."""
    arrow = _utc_text_timestamps(pa.Table.from_pandas(frame, preserve_index=False))
    options = pacsv.WriteOptions(include_header=False)
    for offset in range(0, arrow.num_rows, batch_size):
        buffer = io.BytesIO()
        chunk = arrow.slice(offset, batch_size)
        pacsv.write_csv(chunk, buffer, options)
        yield chunk.num_rows, buffer.getvalue()


def _utc_text_timestamps(arrow: pa.Table) -> pa.Table:
    """Zoned timestamps as UTC text with an explicit `+00`: Arrow's CSV writer formats zoned
    timestamps 15x slower than plain ones (2.4 s of a million users' 5 s of CSV)."""
    for index, column in enumerate(arrow.schema):
        if pa.types.is_timestamp(column.type) and column.type.tz is not None:
            utc = arrow.column(index).cast(pa.timestamp(column.type.unit)).cast(pa.string())
            arrow = arrow.set_column(index, column.name, pc.binary_join_element_wise(utc, pa.scalar("+00"), ""))
    return arrow


def copy_frame(conn, target: sql.Composable, frame: pd.DataFrame, columns: list[str], batch_size: int,
               progress: Progress | None = None, stage: str = "") -> None:
    statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv)").format(
        target, sql.SQL(", ").join(map(sql.Identifier, columns))
    )
    done = 0
    with conn.cursor().copy(statement) as copy:
        for rows, data in to_csv_chunks(frame[columns], batch_size):
            copy.write(data)
            done += rows
            if progress:
                progress(stage, done, len(frame))


def _stage(conn, schema, name, frame, columns, batch_size, progress) -> sql.Identifier:
    """A temporary table with the target's column types and each row's presence bits, filled by
    COPY. A frame without presence bits has every field (-1: all bits set)."""
    stage = kept.STAGE[name]
    conn.execute(
        sql.SQL("CREATE TEMP TABLE {} ON COMMIT DROP AS SELECT {}, 0::bigint AS {} FROM {} WITH NO DATA").format(
            stage, sql.SQL(", ").join(map(sql.Identifier, columns)), sql.Identifier(PRESENT), table(schema, name)
        )
    )
    if PRESENT not in frame.columns:
        frame = frame.assign(**{PRESENT: -1})
    copy_frame(conn, stage, frame, [*columns, PRESENT], batch_size, progress, f"copy {name}")
    conn.execute(sql.SQL("ANALYZE {}").format(stage))  # temp tables have no statistics otherwise
    return stage


def _upsert(conn, statement: sql.Composed, total: int, stage: sql.Composable, target: sql.Composable) -> TableStats:
    """Unchanged are the staged rows neither inserted nor updated that the table holds: a row the
    database dropped as it was written (a trigger returning NULL, a rule) is counted nowhere, so the
    row counts show it missing rather than kept as it was."""
    counted = sql.SQL(
        "WITH written AS ({}) SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted) FROM written"
    ).format(statement)
    inserted, updated = conn.execute(counted).fetchone()
    dropped = conn.execute(sql.SQL(
        "SELECT count(*) FROM {stage} s WHERE NOT EXISTS (SELECT FROM {target} t WHERE t.user_id = s.user_id)"
    ).format(stage=stage, target=target)).fetchone()[0]
    return TableStats(inserted, updated, total - inserted - updated - dropped)


def _differs(existing: str, staged: str, columns: list[str], staged_as: dict[str, sql.Composable] | None = None) -> sql.Composed:
    """`(existing.a, …) IS DISTINCT FROM (staged.a, …)`: only real changes are written. Used twice:
    as a read-only filter before ON CONFLICT (which would lock, and so write, every row it meets),
    and in ON CONFLICT's own WHERE against `excluded`."""
    staged_as = staged_as or {}
    return sql.SQL("({}) IS DISTINCT FROM ({})").format(
        sql.SQL(", ").join(sql.SQL("{}.{}").format(sql.Identifier(existing), sql.Identifier(c)) for c in columns),
        sql.SQL(", ").join(
            staged_as[c] if c in staged_as else sql.SQL("{}.{}").format(sql.Identifier(staged), sql.Identifier(c))
            for c in columns
        ),
    )


def _kept_unless_present(fields, columns: list[str]) -> dict[str, sql.Composable]:
    """Per column, the value to write: the staged one for a new row or when the file's entry has the
    field (its value, null included), otherwise the existing row's. Used for both the insert and
    the comparison, so a row whose only differences are fields the file lacks counts as unchanged."""
    return {
        c: sql.SQL("CASE WHEN existing.user_id IS NULL OR s.{present} & {bit} <> 0 THEN s.{c} ELSE existing.{c} END").format(
            present=sql.Identifier(PRESENT), bit=sql.Literal(presence_bit(fields, c)), c=sql.Identifier(c)
        )
        for c in columns
    }


def _assignments(columns: list[str]) -> sql.Composed:
    return sql.SQL(", ").join(sql.SQL("{0} = excluded.{0}").format(sql.Identifier(c)) for c in columns)


def _upsert_users(conn, schema, stage, total) -> TableStats:
    """A user whose entry lacks `created_at` keeps the one it has, or gets the load's time; a null given
    is the file's value, as for every field."""
    users = table(schema, USERS)
    data = list(_USER_DATA)
    values = _kept_unless_present(USER_FIELDS, data) | {"created_at": sql.SQL(
        "CASE WHEN s.{present} & {bit} <> 0 THEN s.created_at WHEN existing.user_id IS NULL THEN now() "
        "ELSE existing.created_at END"
    ).format(present=sql.Identifier(PRESENT), bit=sql.Literal(presence_bit(USER_FIELDS, "created_at")))}
    statement = sql.SQL(
        """INSERT INTO {users} AS t (id, user_id, {data})
           SELECT s.id, s.user_id, {s_data}
           FROM {stage} s LEFT JOIN {users} existing ON existing.user_id = s.user_id
           WHERE existing.user_id IS NULL OR {changed_existing}
           ON CONFLICT (user_id) DO UPDATE SET {assign}, updated_at = now()
           WHERE {changed}
           RETURNING (xmax = 0) AS inserted"""
    ).format(
        users=users,
        data=sql.SQL(", ").join(map(sql.Identifier, data)),
        s_data=sql.SQL(", ").join(values[c] for c in data),
        stage=stage,
        assign=_assignments(data),
        changed=_differs("t", "excluded", _USER_DATA),
        changed_existing=_differs("existing", "s", _USER_DATA, values),
    )
    return _upsert(conn, statement, total, stage, users)


def _refuse_codes_held_outside_the_file(conn, schema, stage_users, stage_subscriptions, rejected: set[int]) -> None:
    """A referral code the file gives one user while a user the file does not load (not in the file,
    or its entry rejected: `rejected`) holds it in the table cannot be written (the code is unique)
    and is not released by this file: stop before the upsert writes anything, naming each code, who
    claims it, who holds it and why the holder is not loaded."""
    clashes = conn.execute(
        sql.SQL(
            """SELECT s.referral_code, claimant.user_id, holder.user_id
               FROM {stage_subscriptions} s
               JOIN {subscriptions} held ON held.referral_code = s.referral_code AND held.user_id <> s.user_id
               JOIN {users} holder ON holder.id = held.user_id
               JOIN {stage_users} claimant ON claimant.id = s.user_id
               WHERE NOT EXISTS (SELECT FROM {stage_users} f WHERE f.user_id = holder.user_id)
               ORDER BY 1"""
        ).format(
            stage_subscriptions=stage_subscriptions,
            stage_users=stage_users,
            subscriptions=table(schema, SUBSCRIPTIONS),
            users=table(schema, USERS),
        )
    ).fetchall()
    if clashes:
        named = [
            f"{written(code)} given to user_id {claimant} is held by user_id {holder} "
            + ("(its entry in the file is rejected)" if holder in rejected else "(not in the file)")
            for code, claimant, holder in clashes
        ]
        raise TargetError(
            f"{len(clashes)} referral code(s) of the file are held in {schema}.{SUBSCRIPTIONS} by users the file "
            f"does not load: {'; '.join(named[:_NAMED_CLASHES])}"
            + (f"; and {len(named) - _NAMED_CLASHES} more" if len(named) > _NAMED_CLASHES else "")
            + ". Nothing was written. Clear the code of its holder in the database, or correct the file, "
            "then run again"
        )


_RELEASED = sql.Identifier("_faceit_etl_released")


def _release_moving_referral_codes(conn, schema, stage) -> None:
    """Codes that leave a row in this file (cleared, changed, passed on, swapped) would collide with
    the row that still holds them, since the unique key is checked row by row: clear them first.
    The cleared rows are kept in `_RELEASED`: each is a change of its row (its code differs from the
    file's), which the upsert must write and count even when the file's code is null, so the
    release never leaves a row changed but uncounted, with its `updated_at` unmoved."""
    conn.execute(
        sql.SQL(
            """CREATE TEMP TABLE {released} ON COMMIT DROP AS
               WITH cleared AS (
                   UPDATE {target} AS t SET referral_code = NULL FROM {stage} AS s
                   WHERE s.user_id = t.user_id AND t.referral_code IS NOT NULL AND s.{present} & {bit} <> 0
                     AND t.referral_code IS DISTINCT FROM s.referral_code
                   RETURNING t.id)
               SELECT id FROM cleared"""
        ).format(released=_RELEASED, target=table(schema, SUBSCRIPTIONS), stage=stage, present=sql.Identifier(PRESENT),
                 bit=sql.Literal(presence_bit(SUBSCRIPTION_FIELDS, "referral_code")))
    )


def _upsert_subscriptions(conn, schema, stage, total) -> TableStats:
    """A row whose code was released counts as changed whatever the comparison now sees."""
    _release_moving_referral_codes(conn, schema, stage)
    columns = sql.SQL(", ").join(map(sql.Identifier, SUBSCRIPTION_COLUMNS))
    values = _kept_unless_present(SUBSCRIPTION_FIELDS, _SUBSCRIPTION_DATA)
    statement = sql.SQL(
        """INSERT INTO {target} AS t ({columns}) SELECT {s_columns} FROM {stage} s
           LEFT JOIN {target} existing ON existing.user_id = s.user_id
           WHERE existing.user_id IS NULL OR {changed_existing}
              OR EXISTS (SELECT FROM {released} r WHERE r.id = existing.id)
           ON CONFLICT (user_id) DO UPDATE SET {assign}, updated_at = now()
           WHERE {changed} OR EXISTS (SELECT FROM {released} r WHERE r.id = t.id)
           RETURNING (xmax = 0) AS inserted"""
    ).format(
        target=table(schema, SUBSCRIPTIONS),
        columns=columns,
        stage=stage,
        released=_RELEASED,
        assign=_assignments(_SUBSCRIPTION_DATA),
        changed=_differs("t", "excluded", _SUBSCRIPTION_DATA),
        s_columns=sql.SQL(", ").join([sql.SQL("s.id, s.user_id"), *(values[c] for c in _SUBSCRIPTION_DATA)]),
        changed_existing=_differs("existing", "s", _SUBSCRIPTION_DATA, values),
    )
    return _upsert(conn, statement, total, stage, table(schema, SUBSCRIPTIONS))


def _write_rejects(conn, schema, rejects: pd.DataFrame, run_id: str) -> int:
    if rejects.empty:
        return 0
    frame = rejects.assign(run_id=run_id, raw=rejects["raw"].map(jsonb_safe))
    copy_frame(conn, table(schema, MIGRATION_REJECTS), frame, REJECTS_TABLE_COLUMNS, batch_size=len(frame))
    return len(frame)


def jsonb_safe(raw_json: str) -> str:
    """A reject's entry as jsonb can hold it: its text as written, except U+0000 spelled out as text and a
    number beyond jsonb's numeric (1e-20000) kept as a string of its text (`written(form="jsonb")`)."""
    if "\\u0000" not in raw_json and not may_hold_decimal_number(raw_json.encode()):
        return raw_json
    return written(loads_exact(raw_json)[0], form="jsonb")
