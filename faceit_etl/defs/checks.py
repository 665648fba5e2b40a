"""Asset checks: is what the database holds exactly what the file said?

ERROR-severity checks are blocking: a wrong migration fails the run (and `dagster job execute`).
Referrers missing from the file and self-referrals are the bot's data as it is: WARN. The verdicts
themselves live in `target/verdicts.py`; in a dry run they were taken inside the load's transaction
before its rollback, and the checks report those.
"""

from pathlib import Path

import dagster as dg
import pandas as pd

from faceit_etl import backup
from faceit_etl.postgres.database import connect
from faceit_etl.defs.assets import DRY_RUN_VERIFICATION, REJECTS_FILE, postgres_tables, validated_frame
from faceit_etl.defs.metadata import preview
from faceit_etl.defs.resources import MigrationSettings
from faceit_etl.postgres.verdicts import VERDICTS, Verdict, all_verdicts
from faceit_etl.validation import ValidationOutcome

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
    context: dg.AssetCheckExecutionContext, validated_frame: ValidationOutcome, migration_settings: MigrationSettings
) -> dg.AssetCheckResult:
    rejects = validated_frame.rejects
    by_field = rejects.groupby("field").size().sort_values(ascending=False).to_dict()
    return dg.AssetCheckResult(
        passed=rejects.empty,
        severity=dg.AssetCheckSeverity.WARN if migration_settings.force else dg.AssetCheckSeverity.ERROR,
        description=None if rejects.empty else _reject_summary(
            validated_frame, migration_settings.force,
            backup.run_folder(migration_settings.backup_dir, context.run.run_id) / REJECTS_FILE,
        ),
        metadata={
            "rejected_entries": validated_frame.rejected_count,
            "input_entries": validated_frame.input_count,
            "rejects_by_field": dg.MetadataValue.json({str(k): int(v) for k, v in by_field.items()}),
            "rejects": preview(rejects.drop(columns="raw"), rows=50),
        },
    )


def _reject_summary(outcome: ValidationOutcome, force: bool, all_rejects: Path) -> str:
    """The first rejects, and where the others are: a list cut short must say so."""
    lines = [
        f"{outcome.rejected_count} of {outcome.input_count} entries rejected"
        + (" (force: loading the rest)" if force else "; nothing loaded (set force to load the rest)")
    ]
    for row in outcome.rejects.head(EXAMPLES).itertuples():
        who = f"user_id {row.user_id}" if pd.notna(row.user_id) else "no valid user_id"
        lines.append(f"entry #{row.source_index} ({who}): {row.field}: {row.reason}")
    if len(outcome.rejects) > EXAMPLES:
        lines.append(f"… and {len(outcome.rejects) - EXAMPLES} more: see {all_rejects}")
    return "\n".join(lines)


def _dry_run_verdicts(context: dg.AssetCheckExecutionContext) -> dict[str, Verdict]:
    event = context.instance.get_latest_materialization_event(postgres_tables.key)
    if event is None or event.run_id != context.run.run_id:
        missing = Verdict(False, {"error": "no dry-run verification was recorded by postgres_tables in this run"})
        return dict.fromkeys(VERDICTS, missing)
    recorded = event.asset_materialization.metadata[DRY_RUN_VERIFICATION].value
    return {name: Verdict(**recorded[name]) for name in VERDICTS}


def _kept_absent(context: dg.AssetCheckExecutionContext) -> dict[str, int] | None:
    """The rows this run's load kept of users the file does not have, per table."""
    event = context.instance.get_latest_materialization_event(postgres_tables.key)
    if event is None or event.run_id != context.run.run_id:
        return None
    metadata = event.asset_materialization.metadata
    return {table: metadata[f"{prefix}_kept_absent"].value for table, prefix in KEPT_ABSENT_KEYS}


KEPT_ABSENT_KEYS = (("users", "users"), ("user_subscriptions", "subscriptions"))
ERROR, WARN = dg.AssetCheckSeverity.ERROR, dg.AssetCheckSeverity.WARN
_ABOUT = {
    "row_counts_match": (
        "Row counts of users and user_subscriptions equal the mapped frames' plus the rows the load kept "
        "of users the file does not have.",
        ERROR,
    ),
    "tier_counts_match": ("The number of subscriptions per tier equals the mapped frame's.", ERROR),
    "subscriptions_have_users": ("Every subscription belongs to an existing user.", ERROR),
    "content_matches": (
        "Full content equality: every row and every column of both tables equals the mapped frames "
        "(read back with COPY and compared cell by cell; not a sample).",
        ERROR,
    ),
    "referrers_present": ("Referrers named by users are users too (WARN: the bot's file may lack them).", WARN),
    "no_self_referrals": ("No user is their own referrer (WARN).", WARN),
    "rows_not_in_file": (
        "Users the table holds and the file does not were kept (WARN, with a sample of their Telegram "
        "ids): the file adds and updates, only `prune` deletes.",
        WARN,
    ),
}


@dg.multi_asset_check(
    name="postgres_tables_checks",
    specs=[
        dg.AssetCheckSpec(
            name,
            asset=postgres_tables,
            blocking=severity == ERROR,
            description=description,
            additional_deps=["mapped_users", "mapped_subscriptions"],
        )
        for name, (description, severity) in _ABOUT.items()
    ],
    ins={"mapped_users": dg.AssetIn("mapped_users"), "mapped_subscriptions": dg.AssetIn("mapped_subscriptions")},
)
def postgres_tables_checks(
    context: dg.AssetCheckExecutionContext,
    migration_settings: MigrationSettings,
    mapped_users: pd.DataFrame,
    mapped_subscriptions: pd.DataFrame,
):
    """Every check on the loaded tables in one step: one connection, the frames read once. In a
    dry run, the verdicts taken inside the load's transaction before its rollback."""
    if migration_settings.dry_run:
        verdicts = _dry_run_verdicts(context)
    else:
        with connect(migration_settings.connection_url()) as conn:
            verdicts = all_verdicts(
                conn, migration_settings.target_schema, mapped_users, mapped_subscriptions, _kept_absent(context)
            )
    for name, verdict in verdicts.items():
        yield dg.AssetCheckResult(
            asset_key=postgres_tables.key,
            check_name=name,
            passed=verdict.passed,
            severity=_ABOUT[name][1],
            description=verdict.description,
            metadata={
                "dry_run": migration_settings.dry_run,
                **{
                    key: dg.MetadataValue.json(value) if isinstance(value, (dict, list)) else value
                    for key, value in verdict.metadata.items()
                },
            },
        )


CHECKS = [no_rejected_entries, postgres_tables_checks]
