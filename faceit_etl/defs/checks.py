"""Asset checks: is what the database holds exactly what the file said?

ERROR-severity checks are blocking: a wrong migration fails the run (and `dagster job execute`).
Referrers missing from the file, self-referrals and users the file lacks are the bot's data: WARN. The verdicts
themselves live in `postgres/verdicts.py`. The checks on `postgres_tables` are its own check specs: the
load takes every verdict inside its transaction, before the commit (which a failed blocking verdict
prevents), and returns them as its check results, so a run never pays for the full comparison twice.
The checks selected without the load judge the tables as they are now.
"""

from pathlib import Path

import dagster as dg
import pandas as pd

from faceit_etl import backups as backup
from faceit_etl.defs.metadata import preview
from faceit_etl.defs.resources import MigrationSettings, PostgresResource
from faceit_etl.postgres.verdicts import BLOCKING, VERDICTS, Verdict, all_verdicts
from faceit_etl.validation import ValidationOutcome
from faceit_etl.validation.limit import RejectLimit

EXAMPLES = 20
ERROR, WARN = dg.AssetCheckSeverity.ERROR, dg.AssetCheckSeverity.WARN


@dg.asset_check(
    asset="validated_frame",
    blocking=True,
    description=(
        "No entry was rejected. More rejects than `max_rejects` allows (default 0; a count, or a "
        "percentage of the entries read) fail the run before anything is loaded; within it, or with "
        "`force`, it warns and the valid entries are loaded. Metadata: `rejected` and `limit`."
    ),
)
def no_rejected_entries(
    context: dg.AssetCheckExecutionContext, validated_frame: ValidationOutcome, migration_settings: MigrationSettings
) -> dg.AssetCheckResult:
    rejects = validated_frame.rejects
    by_field = rejects.groupby("field").size().sort_values(ascending=False).to_dict()
    limit = migration_settings.reject_limit()
    allowed = validated_frame.input_count if limit is None else limit.allowed(validated_frame.input_count)
    return dg.AssetCheckResult(
        passed=rejects.empty,
        severity=WARN if validated_frame.rejected_count <= allowed else ERROR,
        description=None if rejects.empty else _reject_summary(
            validated_frame, limit, allowed,
            backup.run_folder(migration_settings.backup_dir, context.run.run_id) / backup.REJECTS_FILE,
        ),
        metadata={
            "rejected": validated_frame.rejected_count,
            "limit": allowed,  # the most rejects this run may have and still load
            "max_rejects": "force: any number" if limit is None else limit.text,
            "input_entries": validated_frame.input_count,
            "rejects_by_field": dg.MetadataValue.json({str(k): int(v) for k, v in by_field.items()}),
            "rejects": preview(rejects.drop(columns="raw"), rows=50),
        },
    )


def _reject_summary(outcome: ValidationOutcome, limit: RejectLimit | None, allowed: int, all_rejects: Path) -> str:
    """Whether the rejects stop the run and how to change that, the first rejects, and where the
    others are: a list cut short must say so."""
    rejected = f"{outcome.rejected_count} of {outcome.input_count} entries rejected"
    if limit is None:
        head = f"{rejected} (force: loading the rest)"
    elif outcome.rejected_count <= allowed:
        head = f"{rejected}, within max_rejects {limit.text} (at most {allowed}): loading the rest"
    else:
        head = (
            f"{rejected}, more than max_rejects {limit.text} allows ({allowed}); nothing loaded. Raise the limit "
            "(--max-rejects, MIGRATION_MAX_REJECTS or max_rejects in run config: a count, or a percentage of "
            "the entries read such as 1%) or set force to load the rest"
        )
    lines = [head]
    for row in outcome.rejects.head(EXAMPLES).itertuples():
        who = f"user_id {row.user_id}" if pd.notna(row.user_id) else "no valid user_id"
        lines.append(f"entry #{row.source_index} ({who}): {row.field}: {row.reason}")
    if len(outcome.rejects) > EXAMPLES:
        lines.append(f"… and {len(outcome.rejects) - EXAMPLES} more: see {all_rejects}")
    return "\n".join(lines)


_BEFORE_COMMIT = " Judged inside the load's transaction: when it fails, the load is not committed."
_ABOUT = {
    "row_counts_match": (
        "Row counts of users and user_subscriptions equal the mapped frames' plus the rows the load kept "
        "of users the file does not have." + _BEFORE_COMMIT
    ),
    "tier_counts_match": "The number of subscriptions per tier of the file's users equals the mapped frame's." + _BEFORE_COMMIT,
    "subscriptions_have_users": "Every subscription belongs to an existing user." + _BEFORE_COMMIT,
    "content_matches": (
        "Full content equality: every row and every column of both tables equals the mapped frames "
        "(read back with COPY and compared cell by cell; not a sample)." + _BEFORE_COMMIT
    ),
    "referrers_present": "Referrers named by users are users too (WARN: the bot's file may lack them).",
    "no_self_referrals": "No user is their own referrer (WARN).",
    "rows_not_in_file": (
        "Users the table holds and the file does not were kept (WARN, with a sample of their Telegram "
        "ids): the file adds and updates, only `prune` deletes."
    ),
}


def _severity(name: str) -> dg.AssetCheckSeverity:
    return ERROR if name in BLOCKING else WARN


TABLES = dg.AssetKey("postgres_tables")
# The checks of `postgres_tables`, declared on the asset: its load returns their results.
TABLE_CHECK_SPECS = [
    dg.AssetCheckSpec(name, asset=TABLES, blocking=name in BLOCKING, description=description)
    for name, description in _ABOUT.items()
]


def table_check_results(
    verdicts: dict[str, Verdict], *, dry_run: bool, seen_before_commit: bool, selected: set[dg.AssetCheckKey]
) -> list[dg.AssetCheckResult]:
    """The selected checks' results from the verdicts, each with its severity and the verdict's metadata."""
    return [
        dg.AssetCheckResult(
            asset_key=TABLES,
            check_name=name,
            passed=verdict.passed,
            severity=_severity(name),
            description=verdict.description,
            metadata={
                "dry_run": dry_run,
                "seen_before_commit": seen_before_commit,
                **{
                    key: dg.MetadataValue.json(value) if isinstance(value, (dict, list)) else value
                    for key, value in verdict.metadata.items()
                },
            },
        )
        for name, verdict in verdicts.items()
        if dg.AssetCheckKey(TABLES, name) in selected
    ]


def judge_tables_now(
    settings: MigrationSettings, postgres: PostgresResource, mapped_users: pd.DataFrame,
    mapped_subscriptions: pd.DataFrame, selected: set[dg.AssetCheckKey],
) -> list[dg.AssetCheckResult]:
    """The checks run without the load: the tables as they are now, on one connection. A dry run has
    nothing loaded to judge: its checks fail saying so."""
    if settings.dry_run:
        missing = Verdict(False, {"error": "no dry-run verification was recorded by postgres_tables in this run"})
        verdicts = dict.fromkeys(VERDICTS, missing)
    else:
        with postgres.get_connection() as conn:
            verdicts = all_verdicts(conn, settings.target_schema, mapped_users, mapped_subscriptions)
    return table_check_results(verdicts, dry_run=settings.dry_run, seen_before_commit=False, selected=selected)


CHECKS = [no_rejected_entries]
