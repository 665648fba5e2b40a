"""Asset checks: is what the database holds exactly what the file said?

ERROR-severity checks are blocking: a wrong migration fails the run (and `dagster job execute`).
Referrers missing from the file and self-referrals are the bot's data as it is: WARN.
"""


import dagster as dg
import pandas as pd

from faceit_etl.database import connect
from faceit_etl.defs.assets import postgres_tables, validated_frame
from faceit_etl.defs.metadata import preview
from faceit_etl.defs.resources import MigrationSettings
from faceit_etl.target import ddl, verify
from faceit_etl.validation import ValidationOutcome

MAPPED_INS = {"mapped_users": dg.AssetIn("mapped_users"), "mapped_subscriptions": dg.AssetIn("mapped_subscriptions")}
EXAMPLES = 20


@dg.asset_check(
    asset=validated_frame,
    blocking=True,
    description=(
        "No entry was rejected. Fails the run before anything is loaded unless `force` is set; with "
        "`force` it warns and the valid entries are loaded."
    ),
)
def no_rejected_entries(
    validated_frame: ValidationOutcome, migration_settings: MigrationSettings
) -> dg.AssetCheckResult:
    rejects = validated_frame.rejects
    by_field = rejects.groupby("field").size().sort_values(ascending=False).to_dict()
    return dg.AssetCheckResult(
        passed=rejects.empty,
        severity=dg.AssetCheckSeverity.WARN if migration_settings.force else dg.AssetCheckSeverity.ERROR,
        description=None if rejects.empty else _reject_summary(validated_frame, migration_settings.force),
        metadata={
            "rejected_entries": validated_frame.rejected_count,
            "input_entries": validated_frame.input_count,
            "rejects_by_field": dg.MetadataValue.json({str(k): int(v) for k, v in by_field.items()}),
            "rejects": preview(rejects.drop(columns="raw"), rows=50),
        },
    )


def _reject_summary(outcome: ValidationOutcome, force: bool) -> str:
    lines = [
        f"{outcome.rejected_count} of {outcome.input_count} entries rejected"
        + (" (force: loading the rest)" if force else "; nothing loaded (set force to load the rest)")
    ]
    for row in outcome.rejects.head(EXAMPLES).itertuples():
        who = f"user_id {row.user_id}" if pd.notna(row.user_id) else "no valid user_id"
        lines.append(f"entry #{row.source_index} ({who}): {row.field}: {row.reason}")
    return "\n".join(lines)


@dg.asset_check(
    asset=postgres_tables,
    blocking=True,
    additional_ins=MAPPED_INS,
    description="Row counts of users and user_subscriptions equal the mapped frames'.",
)
def row_counts_match(
    migration_settings: MigrationSettings, mapped_users: pd.DataFrame, mapped_subscriptions: pd.DataFrame
) -> dg.AssetCheckResult:
    with connect(migration_settings.connection_url()) as conn:
        schema = migration_settings.target_schema
        counts = {
            ddl.USERS: (verify.row_count(conn, schema, ddl.USERS), len(mapped_users)),
            ddl.SUBSCRIPTIONS: (verify.row_count(conn, schema, ddl.SUBSCRIPTIONS), len(mapped_subscriptions)),
        }
    return dg.AssetCheckResult(
        passed=all(actual == expected for actual, expected in counts.values()),
        metadata={f"{name}_{side}": value for name, pair in counts.items() for side, value in zip(("in_database", "expected"), pair)},
    )


@dg.asset_check(
    asset=postgres_tables,
    blocking=True,
    additional_ins={"mapped_subscriptions": dg.AssetIn("mapped_subscriptions")},
    description="The number of subscriptions per tier equals the mapped frame's.",
)
def tier_counts_match(migration_settings: MigrationSettings, mapped_subscriptions: pd.DataFrame) -> dg.AssetCheckResult:
    with connect(migration_settings.connection_url()) as conn:
        actual = verify.tier_counts(conn, migration_settings.target_schema)
    expected = {str(k): int(v) for k, v in mapped_subscriptions["tier"].value_counts().sort_index().items()}
    return dg.AssetCheckResult(
        passed=actual == expected,
        metadata={"in_database": dg.MetadataValue.json(actual), "expected": dg.MetadataValue.json(expected)},
    )


@dg.asset_check(
    asset=postgres_tables,
    blocking=True,
    description="Every subscription belongs to an existing user.",
)
def subscriptions_have_users(migration_settings: MigrationSettings) -> dg.AssetCheckResult:
    with connect(migration_settings.connection_url()) as conn:
        orphans = verify.orphan_subscriptions(conn, migration_settings.target_schema)
    return dg.AssetCheckResult(passed=orphans == 0, metadata={"orphan_subscriptions": orphans})


@dg.asset_check(
    asset=postgres_tables,
    blocking=True,
    additional_ins=MAPPED_INS,
    description=(
        "Full content equality: every row and every column of both tables equals the mapped frames "
        "(read back with COPY and compared cell by cell; not a sample)."
    ),
)
def content_matches(
    migration_settings: MigrationSettings, mapped_users: pd.DataFrame, mapped_subscriptions: pd.DataFrame
) -> dg.AssetCheckResult:
    with connect(migration_settings.connection_url()) as conn:
        schema = migration_settings.target_schema
        diffs = [
            verify.compare_users(conn, schema, mapped_users),
            verify.compare_subscriptions(conn, schema, mapped_subscriptions),
        ]
    return dg.AssetCheckResult(
        passed=all(d.equal for d in diffs),
        metadata={d.table: dg.MetadataValue.json(d.summary()) for d in diffs},
    )


@dg.asset_check(
    asset=postgres_tables,
    description="Referrers named by users are users too (WARN: the bot's file may lack them).",
)
def referrers_present(migration_settings: MigrationSettings) -> dg.AssetCheckResult:
    with connect(migration_settings.connection_url()) as conn:
        missing = verify.missing_referrers(conn, migration_settings.target_schema)
    return dg.AssetCheckResult(
        passed=not missing,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"missing_referrers": len(missing), "examples": dg.MetadataValue.json(missing[:EXAMPLES])},
    )


@dg.asset_check(
    asset=postgres_tables,
    description="No user is their own referrer (WARN).",
)
def no_self_referrals(migration_settings: MigrationSettings) -> dg.AssetCheckResult:
    with connect(migration_settings.connection_url()) as conn:
        found = verify.self_referrals(conn, migration_settings.target_schema)
    return dg.AssetCheckResult(
        passed=not found,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"self_referrals": len(found), "examples": dg.MetadataValue.json(found[:EXAMPLES])},
    )


CHECKS = [
    no_rejected_entries,
    row_counts_match,
    tier_counts_match,
    subscriptions_have_users,
    content_matches,
    referrers_present,
    no_self_referrals,
]
