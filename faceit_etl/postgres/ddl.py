"""The bot's tables, created when absent, and the checks an existing target must pass.

Our DDL follows the bot's SQLAlchemy models (its columns' types and sizes come from the field
catalog, `validation/fields.py`) with one deliberate difference: Telegram ids are bigint. Tables
made by the bot's own Alembic revision (32-bit ids, no id defaults) are loaded as they are, unless
an id would not fit: then we stop before writing and say which ALTER fixes it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd
import psycopg
from psycopg import sql

from faceit_etl.mapping import PRESENT
from faceit_etl.postgres.lock import lock_bookkeeping, lock_schema
from faceit_etl.validation.fields import INT32_MAX, SUBSCRIPTION_FIELDS, TIERS, USER_FIELDS, Field, Kind, presence_bit

USERS = "users"
SUBSCRIPTIONS = "user_subscriptions"
MIGRATION_LOGS = "migration_logs"
MIGRATION_REJECTS = "migration_rejects"
TIER_TYPE = "subscriptiontier"
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


class TargetError(RuntimeError):
    """The target database cannot take this load as it is; nothing was written."""


def checked_identifier(name: str) -> str:
    """Configurable names (the schema) must be plain identifiers; anything else is refused."""
    if not _IDENTIFIER.fullmatch(name):
        raise ValueError(
            f"invalid schema name {name!r}: use letters, digits and underscores, "
            "starting with a letter or underscore (at most 63 characters)"
        )
    # PostgreSQL keeps these for itself (`pg_` as written, case and all): it refuses to create such a
    # schema, refuses tables in pg_catalog and pg_toast, drops pg_temp's at the session's end, and
    # information_schema holds its catalog views.
    if name.startswith("pg_") or name == "information_schema":
        raise ValueError(
            f"schema name {name!r} is reserved by PostgreSQL for its own catalogs "
            "(names starting with pg_, and information_schema): choose another schema, such as public"
        )
    return name


def table(schema: str, name: str) -> sql.Identifier:
    return sql.Identifier(schema, name)


_BOOKKEEPING = """
CREATE TABLE IF NOT EXISTS {logs} (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    migration_type varchar(100),
    start_time timestamptz,
    end_time timestamptz,
    status varchar(20),
    total_items integer,
    processed_items integer,
    failed_items integer,
    error_message text,
    metadata jsonb,
    created_at timestamptz DEFAULT now()
);
CREATE TABLE IF NOT EXISTS {rejects} (
    run_id text NOT NULL,
    source_index integer NOT NULL,
    user_id bigint,
    field text NOT NULL,
    reason text NOT NULL,
    raw jsonb,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS {rejects_run_index} ON {rejects} (run_id);
ALTER TABLE {rejects} ADD COLUMN IF NOT EXISTS {entry} integer GENERATED ALWAYS AS (source_index + 1) STORED;
ALTER TABLE {rejects} ADD COLUMN IF NOT EXISTS {value} text;
"""
# The entry's number as every report counts it (from 1); source_index stays the 0-based index its readers know.
REJECT_ENTRY = "entry"
# The value the reject was for, as every surface shows it: `raw` cannot show a refused entry's text as written.
REJECT_VALUE = "value"

# Each field's column type, from the field catalog (its varchar length too): the catalog is the one
# place a column's size is written.
_SQL_TYPES = {
    Kind.TELEGRAM_ID: "bigint",
    Kind.COUNT: "integer",
    Kind.FLAG: "boolean",
    Kind.TIMESTAMP: "timestamptz",
    Kind.TIER: "{tier}",
}
_STAMP = "timestamptz NOT NULL DEFAULT now()"  # created_at / updated_at as the bot's models make them
_NOT_NULL = {"user_id": " NOT NULL", "created_at": " NOT NULL DEFAULT now()"}  # users' fields


def _column_type(field: Field) -> str:
    return f"varchar({field.max_length})" if field.kind is Kind.TEXT else _SQL_TYPES[field.kind]


def _field_columns(fields: tuple[Field, ...]) -> list[tuple[str, str, str]]:
    return [(f.name, _column_type(f) + _NOT_NULL.get(f.name, ""), "UNIQUE" if f.name == "referral_code" else "")
            for f in fields]


# (column, type, key) in the order of the bot's models: `users` keeps updated_at after created_at.
_USERS_COLUMNS = [("id", "uuid", "PRIMARY KEY"), *_field_columns(USER_FIELDS)]
_USERS_COLUMNS.insert([c[0] for c in _USERS_COLUMNS].index("created_at") + 1, ("updated_at", _STAMP, ""))
_SUBSCRIPTIONS_COLUMNS = [
    ("id", "uuid", "PRIMARY KEY"),
    ("user_id", "uuid NOT NULL", "UNIQUE REFERENCES {users} (id) ON DELETE CASCADE"),
    *_field_columns(SUBSCRIPTION_FIELDS),
    ("created_at", _STAMP, ""),
    ("updated_at", _STAMP, ""),
]
_INDEXES = """CREATE UNIQUE INDEX IF NOT EXISTS ix_users_user_id ON {users} (user_id);
CREATE INDEX IF NOT EXISTS ix_users_faceit_player_id ON {users} (faceit_player_id);
CREATE INDEX IF NOT EXISTS ix_users_faceit_nickname ON {users} (faceit_nickname);
"""


def target_tables_sql(keys: bool = True) -> str:
    """The bot's two tables as a template ({users}, {subscriptions}, {tier}); without `keys`, bare:
    no primary, unique or foreign key and no index (what a bulk load adds after its COPY)."""
    def create(name: str, columns: list[tuple[str, str, str]]) -> str:
        lines = ",\n".join(f"    {column} {type_}" + (f" {key}" if key and keys else "") for column, type_, key in columns)
        return f"CREATE TABLE IF NOT EXISTS {{{name}}} (\n{lines}\n);\n"

    return "\n" + create("users", _USERS_COLUMNS) + (_INDEXES if keys else "") + create("subscriptions", _SUBSCRIPTIONS_COLUMNS)


_TARGET = target_tables_sql()


def ensure_bookkeeping_tables(conn: psycopg.Connection, schema: str) -> None:
    """Our own tables (run log, rejects) and the schema, and the rejects' `entry` and `value` columns on a
    table an older faceit-etl made. A real run makes them in their own transaction before its load; the load makes them too, so that a dry run does inside its
    transaction what a real run does. Nothing runs when they exist: CREATE INDEX IF NOT EXISTS
    would still lock the rejects table until the load commits.

    Made under a lock: two runs creating them at once would otherwise collide in the catalog
    (`IF NOT EXISTS` does not serialise: "type migration_logs already exists")."""
    if _bookkeeping_exist(conn, schema):
        return
    with conn.transaction():
        lock_bookkeeping(conn, schema)
        if _bookkeeping_exist(conn, schema):  # made by the run that held the lock before us
            return
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        conn.execute(
            sql.SQL(_BOOKKEEPING).format(
                logs=table(schema, MIGRATION_LOGS),
                rejects=table(schema, MIGRATION_REJECTS),
                rejects_run_index=sql.Identifier(f"ix_{MIGRATION_REJECTS}_run_id"),
                entry=sql.Identifier(REJECT_ENTRY),
                value=sql.Identifier(REJECT_VALUE),
            )
        )


def _bookkeeping_exist(conn: psycopg.Connection, schema: str) -> bool:
    """Both tables, and the rejects' `entry` and `value` columns, which tables of an older faceit-etl lack."""
    return all(table_exists(conn, schema, name) for name in (MIGRATION_LOGS, MIGRATION_REJECTS)) and {
        REJECT_ENTRY, REJECT_VALUE
    } <= {column for column, _, _ in column_types(conn, schema, MIGRATION_REJECTS)}


def refuse_hooks_outside_the_load(conn: psycopg.Connection, schema: str) -> None:
    """Refuse, before any write, what would act on writes we commit outside the load's transaction (the
    log row's start and failure, our tables' DDL): whatever it changed would be committed unverified, and
    before the snapshot a rollback restores: a user trigger or rule on our bookkeeping tables. Event
    triggers are left alone: a database's own guards use them (the compose stack's refuses new schemas),
    and our only DDL outside the load makes the bookkeeping tables on a first run."""
    bookkeeping = [MIGRATION_LOGS, MIGRATION_REJECTS]
    found = [
        f"trigger {name} on {schema}.{relation}"
        for relation, name in conn.execute(
            """SELECT c.relname, t.tgname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
               JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE n.nspname = %s AND c.relname = ANY(%s) AND NOT t.tgisinternal AND t.tgenabled <> 'D'
               ORDER BY 1, 2""",
            [schema, bookkeeping],
        )
    ] + [
        f"rule {name} on {schema}.{relation}"
        for relation, name in conn.execute(
            "SELECT tablename, rulename FROM pg_rules WHERE schemaname = %s AND tablename = ANY(%s) ORDER BY 1, 2",
            [schema, bookkeeping],
        )
    ]
    if found:
        raise TargetError(
            f"refusing to load: {'; '.join(found)} would act on faceit-etl's own bookkeeping writes, which commit "
            "outside the load's transaction and its verification; drop or disable "
            + ("them" if len(found) > 1 else "it")
        )


# What brings the rows that `rows_out_of_sight` names into sight, as the refusals of a load and a rollback say it.
BRING_INTO_SIGHT = ("Connect as a role with BYPASSRLS (or disable row-level security on those tables), or move the "
                    "inheriting tables' rows out")


def rows_out_of_sight(conn: psycopg.Connection, schema: str) -> list[str]:
    """What puts rows of the bot's tables out of this role's sight or among another table's: row-level
    security active for the role (its counts, snapshot and verification would miss rows the table holds)
    and tables inheriting from them (their rows read as the table's, and a restore would move them into it)."""
    found = []
    for relation, hidden, heirs in conn.execute(
        """SELECT c.relname, row_security_active(c.oid),
                  (SELECT array_agg(format('%%I.%%I', hn.nspname, h.relname) ORDER BY hn.nspname, h.relname)
                   FROM pg_inherits i JOIN pg_class h ON h.oid = i.inhrelid
                   JOIN pg_namespace hn ON hn.oid = h.relnamespace WHERE i.inhparent = c.oid)
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE n.nspname = %s AND c.relname = ANY(%s) AND c.relkind = 'r' ORDER BY 1""",
        [schema, [USERS, SUBSCRIPTIONS]],
    ):
        if hidden:
            found.append(f"row-level security hides rows of {schema}.{relation} from this role")
        if heirs:
            found.append(f"{', '.join(heirs)} inherit(s) from {schema}.{relation}")
    return found


def ensure_target_tables(conn: psycopg.Connection, schema: str) -> frozenset[str]:
    """Create the enum and the bot's tables when absent; returns the names of those it created.

    Runs inside the load's transaction, so a failed load leaves no half-made tables behind, and
    under the schema's lock (the load's own), so two callers never create them at once. What it
    created is gone again when the load fails: advice must not name it as if it existed.
    """
    lock_schema(conn, schema)
    absent = {name for name in (USERS, SUBSCRIPTIONS) if not table_exists(conn, schema, name)}
    if not type_exists(conn, schema, TIER_TYPE):
        conn.execute(_create_tier_type(schema))
        absent.add(TIER_TYPE)
    check_tier_labels(conn, schema)
    conn.execute(
        sql.SQL(_TARGET).format(
            users=table(schema, USERS),
            subscriptions=table(schema, SUBSCRIPTIONS),
            tier=table(schema, TIER_TYPE),
        )
    )
    return frozenset(absent)


def _create_tier_type(schema: str) -> sql.Composed:
    return sql.SQL("CREATE TYPE {} AS ENUM ({})").format(
        table(schema, TIER_TYPE), sql.SQL(", ").join(map(sql.Literal, TIERS))
    )


def check_tier_labels(conn: psycopg.Connection, schema: str) -> None:
    """Stop before writing when the enum the tiers go into lacks one of the bot's labels (one made by hand
    as 'free', 'premium', 'pro'): COPY would fail on the first such tier, and no tier is ever rewritten
    to fit. The enum is the one the existing `tier` column uses, else the schema's own."""
    found = conn.execute(
        """SELECT t.typname, n.nspname, array_agg(e.enumlabel::text ORDER BY e.enumsortorder)
           FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace JOIN pg_enum e ON e.enumtypid = t.oid
           WHERE t.oid = coalesce(
               (SELECT atttypid FROM pg_attribute WHERE attrelid = to_regclass(format('%%I.%%I', %s::text, %s::text))
                AND attname = 'tier' AND NOT attisdropped),
               to_regtype(format('%%I.%%I', %s::text, %s::text)))
           GROUP BY t.typname, n.nspname""",
        [schema, SUBSCRIPTIONS, schema, TIER_TYPE],
    ).fetchone()
    if found is None:  # the tier column is not an enum (text, varchar): any tier fits
        return
    name, namespace, labels = found
    missing = [label for label in TIERS if label not in labels]
    if missing:
        raise TargetError(
            f"the enum {namespace}.{name} of {schema}.{SUBSCRIPTIONS}.tier has the labels "
            f"{', '.join(map(repr, labels))}; the bot's tiers need {', '.join(map(repr, TIERS))} "
            f"(missing {', '.join(map(repr, missing))}). Nothing was written. Give the enum the bot's labels "
            f"(ALTER TYPE ... RENAME VALUE or ADD VALUE), then run again"
        )


def table_exists(conn: psycopg.Connection, schema: str, name: str) -> bool:
    query = "SELECT to_regclass(format('%%I.%%I', %s::text, %s::text)) IS NOT NULL"
    return conn.execute(query, [schema, name]).fetchone()[0]


def type_exists(conn: psycopg.Connection, schema: str, name: str) -> bool:
    query = """SELECT EXISTS (SELECT 1 FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
               WHERE n.nspname = %s AND t.typname = %s)"""
    return conn.execute(query, [schema, name]).fetchone()[0]


@dataclass(frozen=True)
class TargetFrame:
    """The rows a load writes into `table`, with the Telegram user id of each (to name them)."""

    table: str
    frame: pd.DataFrame
    user_ids: pd.Series


_INTEGER_RANGES = {"smallint": 2**15 - 1, "integer": INT32_MAX}
_NAMED_USERS = 5


def check_columns_present(conn: psycopg.Connection, schema: str, created: frozenset[str]) -> None:
    """Stop before writing when an existing table lacks a column we write (one dropped by hand): the
    bot's models and Alembic revision have every one, so the fix is to add it back, not to load without it.
    The enum a tier column needs is created first when this load made it (`created`): the failed load
    takes it away again."""
    missing = []
    for name, columns in ((USERS, _USERS_COLUMNS), (SUBSCRIPTIONS, _SUBSCRIPTIONS_COLUMNS)):
        present = {row[0] for row in conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = %s AND table_name = %s",
            [schema, name],
        )}
        missing += [(name, column, type_.split(" NOT NULL")[0]) for column, type_, _ in columns if column not in present]
    if missing:
        enum_needed = TIER_TYPE in created and any(type_ == "{tier}" for _, _, type_ in missing)
        fixes = [_create_tier_type(schema)] if enum_needed else []
        fixes += [
            sql.SQL("ALTER TABLE {} ADD COLUMN {} {}").format(
                table(schema, name), sql.Identifier(column),
                table(schema, TIER_TYPE) if type_ == "{tier}" else sql.SQL(type_),
            )
            for name, column, type_ in missing
        ]
        raise TargetError(
            "the existing tables lack column(s) the bot's models have: "
            + ", ".join(f"{schema}.{name}.{column}" for name, column, _ in missing)
            + (f" (and the enum {schema}.{TIER_TYPE} does not exist)" if enum_needed else "")
            + ". Nothing was written. Add them back (the bot's Alembic revision creates them), then run again:\n  "
            + "\n  ".join(fix.as_string(conn) + ";" for fix in fixes)
        )


def check_column_widths(conn: psycopg.Connection, schema: str, targets: list[TargetFrame], dry_run: bool = False) -> None:
    """Stop before writing when a value would not fit the existing table's actual column: a string
    longer than its varchar(n)/char(n), a number beyond its smallint/integer (the bot's Alembic
    tables have 32-bit Telegram ids). Validation knows only our own DDL's sizes; without this check
    COPY would fail the whole load on the first such value. Names each column, its size, how many
    values do not fit and whose, and the ALTER that makes them fit; a dry run's failure offers no resume,
    since a dry run is never resumed."""
    problems, fixes, integers = [], [], False
    for target in targets:
        columns = conn.execute(
            """SELECT column_name, data_type, character_maximum_length FROM information_schema.columns
               WHERE table_schema = %s AND table_name = %s ORDER BY ordinal_position""",
            [schema, target.table],
        ).fetchall()
        for column, data_type, max_length in columns:
            if column not in target.frame.columns:
                continue
            values = target.frame[column]
            if max_length is not None and data_type in ("character varying", "character"):
                lengths = values.dropna().astype(str).str.len()
                too_long = lengths[lengths > max_length]
                if too_long.empty:
                    continue
                whose = _first_user_ids(target.user_ids, too_long.index)
                problems.append(
                    f"{len(too_long)} value(s) of {target.table}.{column} are longer than its {data_type}({max_length})"
                    f" (the longest has {int(too_long.max())} characters; user_id {whose})"
                )
                fixes.append(_alter(conn, schema, target.table, column, sql.SQL(f"varchar({int(too_long.max())})")))
            elif data_type in _INTEGER_RANGES:
                limit = _INTEGER_RANGES[data_type]
                numbers = pd.to_numeric(values, errors="coerce").dropna()
                beyond = numbers[(numbers > limit) | (numbers < -limit - 1)]
                if beyond.empty:
                    continue
                bits = "32-bit integer" if data_type == "integer" else "16-bit smallint"
                problems.append(
                    f"{len(beyond)} value(s) of {target.table}.{column} exceed its {bits} type"
                    f" (user_id {_first_user_ids(target.user_ids, beyond.index)})"
                )
                fixes.append(_alter(conn, schema, target.table, column, sql.SQL("bigint")))
                integers = True
    if problems:
        raise TargetError(
            "; ".join(problems)
            + ". The existing tables' columns are narrower than the data"
            + (" (Telegram ids need 64 bits)" if integers else "")
            + ". Nothing was written. Widen the columns, then "
            # The UI's re-execution needs the run's workspace origin, which runs launched outside the UI lack.
            + ("run again (this dry run cannot be resumed):\n  " if dry_run else
               "resume this run (faceit-etl migrate --resume, or, for a run launched from the UI, "
               + "Re-execute → From failure: the file is not read again) or run again:\n  ")
            + "\n  ".join(fixes)
        )


_FILLED_BY_THE_LOAD = {"id", "user_id"}  # never null in a frame
_LOAD_TIME_WHEN_ABSENT = {"created_at"}  # a new row whose entry lacks it gets the load's time; a null given stays null


def check_nulls_fit(
    conn: psycopg.Connection, schema: str, targets: list[TargetFrame], existing_user_ids: Callable[[list[int]], set[int]],
    created: frozenset[str],
) -> None:
    """Stop before writing when a null would go into a column the table declares NOT NULL: a
    null is the file's value and is never replaced by a default. A row writes null where its entry
    gives null, or where the row is new and its entry lacks a field without a default
    (`existing_user_ids` tells, only asked when there is such a null). Names each column, how many
    nulls and whose, and the ALTER that lets the column hold NULL. A table this load `created` is gone
    again when it fails, so the ALTER alone would name nothing: the advice says how to make it first."""
    problems, fixes, fields, existing = [], [], [], None
    for target in targets:
        not_null = conn.execute(
            """SELECT column_name FROM information_schema.columns
               WHERE table_schema = %s AND table_name = %s AND is_nullable = 'NO' ORDER BY ordinal_position""",
            [schema, target.table],
        ).fetchall()
        catalog = USER_FIELDS if target.table == USERS else SUBSCRIPTION_FIELDS
        for (column,) in not_null:
            if column not in target.frame.columns or column in _FILLED_BY_THE_LOAD:
                continue
            null = target.frame[column].isna().to_numpy()
            if not null.any():
                continue
            if existing is None:
                existing = existing_user_ids(sorted({int(i) for i in target.user_ids[null].dropna()}))
            given = (target.frame[PRESENT].to_numpy(dtype="int64") & presence_bit(catalog, column)) != 0
            new = ~target.user_ids.isin(existing).to_numpy() & (column not in _LOAD_TIME_WHEN_ABSENT)
            written = target.frame.index[null & (given | new)]
            if written.empty:
                continue
            problems.append(
                f"{len(written)} value(s) of {target.table}.{column} are null in the file "
                f"(user_id {_first_user_ids(target.user_ids, written)}), but "
                + ("faceit-etl creates that column NOT NULL, as the bot's models do" if target.table in created
                   else "the column is NOT NULL")
            )
            fixes.append(
                sql.SQL("ALTER TABLE {} ALTER COLUMN {} DROP NOT NULL;")
                .format(table(schema, target.table), sql.Identifier(column)).as_string(conn)
            )
            fields.append((target.table, column))
    if not problems:
        return
    absent = sorted({name for name, _ in fields} & created)
    give = "Give those entries a " + ", a ".join(sorted({column for _, column in fields}))
    if absent:
        raise TargetError(
            "; ".join(problems) + f". Nothing was written, and {', '.join(f'{schema}.{name}' for name in absent)} "
            + ("do" if len(absent) > 1 else "does") + " not exist yet. " + give
            + ', or, to keep them null, first create the tables (migrate a file holding {"users": []}) and let the '
            + "column hold NULL (" + " ".join(fixes) + "), then run again"
        )
    raise TargetError(
        "; ".join(problems) + ". Nothing was written. " + give + ", or let the column hold NULL ("
        + " ".join(fixes) + "), then run again"
    )


def _first_user_ids(user_ids: pd.Series, index: pd.Index) -> str:
    named = [str(u) for u in user_ids.loc[index[:_NAMED_USERS]]]
    more = len(index) - len(named)
    return ", ".join(named) + (f" and {more} more" if more else "")


def _alter(conn: psycopg.Connection, schema: str, name: str, column: str, new_type: sql.Composable) -> str:
    return (
        sql.SQL("ALTER TABLE {} ALTER COLUMN {} TYPE {};")
        .format(table(schema, name), sql.Identifier(column), new_type)
        .as_string(conn)
    )


def column_types(conn: psycopg.Connection, schema: str, name: str) -> list[tuple[str, str, bool]]:
    """(column, type, nullable) of a table as the database has it."""
    return conn.execute(
        """SELECT column_name, CASE WHEN data_type = 'USER-DEFINED' THEN udt_name
                                    WHEN character_maximum_length IS NOT NULL
                                    THEN data_type || '(' || character_maximum_length || ')'
                                    ELSE data_type END,
                  is_nullable = 'YES'
           FROM information_schema.columns WHERE table_schema = %s AND table_name = %s
           ORDER BY ordinal_position""",
        [schema, name],
    ).fetchall()
