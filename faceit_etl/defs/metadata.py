"""What the UI shows of a frame: its column schema (with the rules that judged it) and a preview table."""

from __future__ import annotations

import dagster as dg
import pandas as pd

from faceit_etl.postgres.ddl import SUBSCRIPTIONS, USERS
from faceit_etl.validation import report
from faceit_etl.validation.fields import column_description
from faceit_etl.validation.pandera_import import pa

PREVIEW_ROWS = 10
INTERNAL_COLUMNS = ("fields_present", "user_fields_present", "subscription_fields_present")
RECENT_MIGRATIONS = 10  # on postgres_tables' page, for rollback_job's migration_id
REJECT_ROWS = 50  # rejects.jsonl in the run's backup folder holds them all


def refusal(context: dg.OpExecutionContext, sentence: str, metadata: dict | None = None) -> dg.Failure:
    """A failure the tool means (rejects, a refusal, a mismatch), to raise: its sentence is logged at ERROR,
    so the run page reads it as a line of its own, and is the failure's description. Dagster 1.13 still
    prints the Failure's trace under a step's failure event (its run page shows every failure's stack)."""
    context.log.error(sentence)
    return dg.Failure(description=sentence, metadata=metadata, allow_retries=False)


def without_empty(value):
    """JSON metadata as the UI should show it: a list or mapping with nothing in it (examples of none,
    counts of nothing) is left out, as `checks.flat` leaves it out of a check's figures; `[]` reads as a value."""
    if isinstance(value, dict):
        kept = {key: without_empty(item) for key, item in value.items()}
        return {key: item for key, item in kept.items() if item != [] and item != {}}
    if isinstance(value, list):
        return [without_empty(item) for item in value]
    return value


def column_schema(frame: pd.DataFrame, descriptions: dict[str, str] | None = None) -> dg.TableSchema:
    descriptions = descriptions or {}
    return dg.TableSchema(
        columns=[
            dg.TableColumn(name=str(name), type=str(dtype), description=descriptions.get(str(name)))
            for name, dtype in frame.dtypes.items()
        ]
    )


def rules_schema(*schemas: pa.DataFrameSchema, unique: dict[str, str] | None = None) -> dg.TableSchema:
    """The columns the schemas judge, each with its rules as the UI's column constraints: nullable,
    unique (pandera's flag, or a column in `unique`, which a check keeps to its first entry), and each
    check's own text (its name and bounds, then the reason a reject shows)."""
    unique = unique or {}
    return dg.TableSchema(
        columns=[
            dg.TableColumn(
                name=name,
                type=str(column.dtype),
                description=schema.name,
                constraints=dg.TableColumnConstraints(
                    nullable=column.nullable,
                    unique=column.unique or name in unique,
                    other=[_check_text(check) for check in column.checks],
                ),
            )
            for schema in schemas
            for name, column in schema.columns.items()
        ]
    )


def _check_text(check: pa.Check) -> str:
    bounds = ", ".join(f"{key}={value!r}" for key, value in (check.statistics or {}).items() if value is not None)
    named = check.name if check.name and check.name != "<lambda>" else ""
    rule = f"{named}({bounds})" if named and bounds else named
    return f"{rule}: {check.error}" if rule else str(check.error)


def preview(frame: pd.DataFrame, rows: int = PREVIEW_ROWS, descriptions: dict[str, str] | None = None) -> dg.TableMetadataValue:
    """The first rows as a table with its schema: every value as text, so a Telegram id keeps all its
    digits and a negative number shows as itself; a missing value is an empty cell."""
    shown = frame.head(rows)
    schema = column_schema(shown, descriptions)
    records = [
        dg.TableRecord({name: None if pd.isna(value) else str(value) for name, value in zip(shown.columns, values)})
        for values in shown.itertuples(index=False, name=None)
    ]
    return dg.MetadataValue.table(records, schema=schema)


def rejects_table(rejects: pd.DataFrame, rows: int = REJECT_ROWS) -> dg.TableMetadataValue:
    """Rejected entries, one row per entry, field and reason: the entry counted from 1, the offending value."""
    columns = [
        dg.TableColumn("entry", "int", description="place in the file's list of users, counted from 1"),
        dg.TableColumn("user_id", "string", description="the entry's Telegram user_id, when it has a valid one"),
        dg.TableColumn("field", "string"),
        dg.TableColumn("value", "string", description="the value the file holds, as JSON"),
        dg.TableColumn("reason", "string"),
    ]
    records = [dg.TableRecord(row) for row in report.reject_rows(rejects.head(rows))]
    return dg.MetadataValue.table(records, schema=dg.TableSchema(columns=columns))


def as_people_see_it(frame: pd.DataFrame, users: pd.DataFrame | None = None) -> pd.DataFrame:
    """A frame without the row UUIDs the bot's ORM keys on and the bookkeeping of which fields an entry
    had; a subscription names its user by Telegram user_id (looked up in `users`), not by a UUID. Only
    the users `frame` names are indexed: a preview's few rows never index a million users (0.3 s at 200,000)."""
    shown = frame.drop(columns=[c for c in (*INTERNAL_COLUMNS, "id") if c in frame.columns])
    if users is not None and "user_id" in shown.columns:
        named = users.loc[users["id"].isin(shown["user_id"]), ["id", "user_id"]]
        shown = shown.assign(user_id=shown["user_id"].map(named.set_index("id")["user_id"]))
    return shown


def counts_table(name: str, counted: str, counts: dict[str, int]) -> dg.TableMetadataValue:
    """A count per name (such as a key from the file, which may be any text) as a two-column table."""
    schema = dg.TableSchema(columns=[dg.TableColumn(name, "string"), dg.TableColumn(counted, "int")])
    return dg.MetadataValue.table([dg.TableRecord({name: key, counted: n}) for key, n in counts.items()], schema=schema)


def frame_metadata(frame: pd.DataFrame, users: pd.DataFrame | None = None) -> dict:
    """Row count, columns, and the first rows when there are any (an empty preview would show nothing)."""
    return {
        "dagster/row_count": len(frame),
        "dagster/column_schema": column_schema(frame),
        **({"preview": preview(as_people_see_it(frame.head(PREVIEW_ROWS), users))} if len(frame) else {}),
    }


def migrations_table(migrations: list[dict]) -> dg.TableMetadataValue:
    """The latest migrations as rollback_job's `migration_id` takes them, newest first. The page shows a
    table's first columns: what a person chooses by (when, what it changed) comes right after the id."""
    columns = [
        dg.TableColumn("migration_id", "string", description="migration_logs id: rollback_job's migration_id"),
        dg.TableColumn("finished", "string"),
        dg.TableColumn("status", "string"),
        dg.TableColumn("rows_changed", "int", description="rows inserted, updated or deleted in both tables"),
        dg.TableColumn("run_id", "string", description="the Dagster run (rollback_job takes it too)"),
    ]
    records = [
        dg.TableRecord({
            "migration_id": row["id"], "run_id": row["run_id"],
            "finished": row["end_time"].isoformat(timespec="seconds") if row["end_time"] else None,
            "status": row["status"], "rows_changed": rows_changed(row["load"]),
        })
        for row in migrations
    ]
    return dg.MetadataValue.table(records, schema=dg.TableSchema(columns=columns))


def rows_changed(load: dict[str, dict[str, int]] | None) -> int:
    return sum(counts.get(k, 0) for counts in (load or {}).values() for k in ("inserted", "updated", "deleted"))


def tables_metadata(schema: str, columns: list[tuple[str, str, bool]], rows: dict[str, int]) -> dict:
    """The tables' own figures after anything that changed them (load, prune, rollback): their names,
    rows per table and columns (`table.column`, as the database has them) with what each holds.
    `dagster/row_count` and `dagster/table_name` are of `users`, the table a user is a row of."""
    return {
        "dagster/table_name": f"{schema}.{USERS}",
        "subscriptions_table": f"{schema}.{SUBSCRIPTIONS}",
        "dagster/row_count": rows.get(USERS, 0),
        "users_rows": rows.get(USERS, 0),
        "user_subscriptions_rows": rows.get(SUBSCRIPTIONS, 0),
        "dagster/column_schema": dg.TableSchema(columns=[
            dg.TableColumn(name, data_type, description=column_description(name),
                           constraints=dg.TableColumnConstraints(nullable=nullable))
            for name, data_type, nullable in columns
        ]),
    }
