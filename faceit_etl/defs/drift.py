"""Schema drift: the bot's Alembic may add or retype a column of its tables between two loads.

`postgres_tables` records the tables' columns as the database has them (`dagster/column_schema`,
read inside its transaction), with the target they were read from (`database`: host, port and
database, never the password; `schema`). This check compares the latest load's columns with the last
earlier materialization of the *same* target (`column_schema_change_result` in defs/checks.py, which
a migrate_job load also reports itself).
"""

import dagster as dg

from faceit_etl.defs.assets import postgres_tables
from faceit_etl.defs.checks import LOOKED_AT, column_schema_change_result, earlier_of_target, schema_target


@dg.asset_check(
    asset=postgres_tables,
    name="column_schema_change",
    description="The loaded tables' columns are as at the last materialization of the same database and schema.",
)
def column_schema_change(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
    latest, *earlier = context.instance.fetch_materializations(postgres_tables.key, limit=LOOKED_AT).records
    target = schema_target(latest.asset_materialization.metadata)
    return column_schema_change_result(
        earlier_of_target(earlier, target), latest.asset_materialization.metadata.get("dagster/column_schema"), target
    )
