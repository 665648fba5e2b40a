"""Schema drift: the bot's Alembic may add or retype a column of its tables between two loads.

`postgres_tables` records the tables' columns as the database has them (`dagster/column_schema`,
read inside its transaction), with the target they were read from (`database`: host, port and
database, never the password; `schema`). This check compares the latest load's columns with the last
earlier materialization of the *same* target and names every column added, removed or retyped: one
asset serves every target, and tables of another database or schema are no earlier state of these. A
warning: the load itself writes only the columns it knows.
"""

import dagster as dg

from faceit_etl.defs.assets import postgres_tables

TARGET = ("database", "schema")
LOOKED_AT = 100  # earlier materializations searched for one of the same target


def _target(materialization: dg.AssetMaterialization) -> tuple:
    return tuple(getattr(materialization.metadata.get(key), "value", None) for key in TARGET)


def schema_change(previous: dg.TableSchema, latest: dg.TableSchema) -> str | None:
    """What changed between two column schemas, in words, or None."""
    before = {column.name: column.type for column in previous.columns}
    after = {column.name: column.type for column in latest.columns}
    added = [name for name in after if name not in before]
    removed = [name for name in before if name not in after]
    retyped = [f"\n- {name}: {before[name]} -> {after[name]}" for name in after if name in before and before[name] != after[name]]
    if not (added or removed or retyped):
        return None
    return ("Column schema changed between previous and latest materialization."
            + (f"\n\nAdded columns: {', '.join(added)}" if added else "")
            + (f"\n\nRemoved columns: {', '.join(removed)}" if removed else "")
            + ("\n\nColumn type changes:" + "".join(retyped) if retyped else ""))


@dg.asset_check(
    asset=postgres_tables,
    name="column_schema_change",
    description="The loaded tables' columns are as at the last materialization of the same database and schema.",
)
def column_schema_change(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
    latest, *earlier = context.instance.fetch_materializations(postgres_tables.key, limit=LOOKED_AT).records
    target = _target(latest.asset_materialization)
    previous = next((r for r in earlier if _target(r.asset_materialization) == target), None)
    metadata = {"target": "/".join(str(part) for part in target),
                "compared_with_run": previous.run_id if previous else "none: the first materialization of this target"}
    if previous is None:
        return dg.AssetCheckResult(passed=True, severity=dg.AssetCheckSeverity.WARN, metadata=metadata,
                                   description="The asset has been materialized fewer than 2 times")
    columns = [getattr(r.asset_materialization.metadata.get("dagster/column_schema"), "value", None) for r in (previous, latest)]
    if None in columns:
        which = "Latest" if columns[1] is None else "Previous"
        return dg.AssetCheckResult(passed=False, severity=dg.AssetCheckSeverity.WARN, metadata=metadata,
                                   description=f"{which} materialization has no column schema metadata")
    changed = schema_change(*columns)
    return dg.AssetCheckResult(
        passed=changed is None, severity=dg.AssetCheckSeverity.WARN, metadata=metadata,
        description=changed or "No changes to column schema between previous and latest materialization")
