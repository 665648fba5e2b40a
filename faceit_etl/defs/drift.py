"""Schema drift: the bot's Alembic may add or retype a column of its tables between two loads.

`postgres_tables` records the tables' columns as the database has them (`dagster/column_schema`,
read inside its transaction); this check compares the latest load's with the one before and names
every column added, removed or retyped. A warning: the load itself writes only the columns it knows.
"""

import warnings

import dagster as dg

from faceit_etl.defs.assets import postgres_tables

with warnings.catch_warnings():  # a beta API in Dagster 1.13: its notice would reach every CLI run's output
    warnings.simplefilter("ignore", dg.BetaWarning)
    column_schema_checks = dg.build_column_schema_change_checks(assets=[postgres_tables])
