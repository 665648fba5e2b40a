"""Asset checks: is what the database holds exactly what the file said?

ERROR-severity checks are blocking: a wrong migration fails the run (and `dagster job execute`).
Referrers missing from the file, self-referrals and users the file lacks are the bot's data: WARN. The verdicts
themselves live in `postgres/verdicts.py`. The checks on `postgres_tables` are its own check specs: the
load takes every verdict inside its transaction, before the commit (which a failed blocking verdict
prevents), and returns them as its check results, so a run never pays for the full comparison twice.
The checks selected without the load judge the tables as they are now.
"""

from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path

import dagster as dg
import pandas as pd

from faceit_etl import backups as backup
from faceit_etl.defs.metadata import refusal, rejects_table
from faceit_etl.defs.resources import TABLES_ASSET, MigrationSettings, PostgresResource
from faceit_etl.postgres.verdicts import BLOCKING, DIFFERING_VALUES, Verdict, all_verdicts, nothing_to_compare
from faceit_etl.validation import ValidationOutcome, report
from faceit_etl.validation.limit import STOPPED_BY, RejectLimit

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
):
    """Over the limit, the step fails with the reason in one line (logged at ERROR and as the failure's
    own description), not with Dagster's generic "blocking asset check failed" and its trace."""
    rejects = validated_frame.rejects
    by_field = rejects.groupby("field").size().sort_values(ascending=False).to_dict()
    limit = migration_settings.reject_limit()
    allowed = validated_frame.input_count if limit is None else limit.allowed(validated_frame.input_count)
    stops = report.too_many_rejects(rejects, validated_frame.rejected_count, validated_frame.input_count, limit)
    nothing, said = ({}, None) if validated_frame.input_count else nothing_to_compare("the file holds no entry")
    yield dg.AssetCheckResult(
        passed=rejects.empty,
        severity=ERROR if stops else WARN,
        description=said if nothing else None if rejects.empty else _reject_summary(
            validated_frame, limit, allowed,
            backup.run_folder(migration_settings.backup_dir, context.run.run_id) / backup.REJECTS_FILE,
        ),
        metadata=nothing | {
            "rejected": validated_frame.rejected_count,
            "limit": allowed,  # the most rejects this run may have and still load
            "max_rejects": "force: any number" if limit is None else limit.text,
            "input_entries": validated_frame.input_count,
            **{f"rejected_for_{name}": int(count) for name, count in by_field.items()},
            **({"rejects": rejects_table(rejects)} if not rejects.empty else {}),
        },
    )
    if stops:
        stop_for_rejects(context, stops)


def refuse_too_many_rejects(
    context: dg.AssetExecutionContext, outcome: ValidationOutcome, settings: MigrationSettings
) -> None:
    """The load's own refusal, judged as no_rejected_entries judges: a run that selects the load without
    that check (Materialize unsynced, `dg launch --assets`) must not load past `max_rejects`."""
    line = report.too_many_rejects(outcome.rejects, outcome.rejected_count, outcome.input_count, settings.reject_limit())
    if line:
        stop_for_rejects(context, line)


def stop_for_rejects(context: dg.OpExecutionContext, line: str) -> None:
    raise refusal(context, line, {STOPPED_BY: "rejects"})


def _reject_summary(outcome: ValidationOutcome, limit: RejectLimit | None, allowed: int, all_rejects: Path) -> str:
    """Whether the rejects stop the run and how to change that, then the first rejects as a Markdown
    list (single line breaks vanish in the UI's Markdown), and where the others are."""
    head = report.reject_head(outcome.rejected_count, outcome.input_count, limit, allowed)
    if limit is not None and outcome.rejected_count > allowed:
        head = f"{head}. {report.WHAT_TO_DO}"
    lines = [head, ""]
    for row in outcome.rejects.head(EXAMPLES).itertuples():
        lines.append(f"- {report.reject_line(row.source_index, row.user_id, row.field, row.reason)}")
    if len(outcome.rejects) > EXAMPLES:
        lines += ["", f"… and {len(outcome.rejects) - EXAMPLES} more: see {all_rejects}"]
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


TABLES = TABLES_ASSET
# The checks of `postgres_tables`, declared on the asset: its load returns their results.
TABLE_CHECK_SPECS = [
    dg.AssetCheckSpec(name, asset=TABLES, blocking=name in BLOCKING, description=description)
    for name, description in _ABOUT.items()
]


def table_check_results(
    verdicts: dict[str, Verdict], *, dry_run: bool, seen_before_commit: bool, selected: set[dg.AssetCheckKey] | None = None
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
                **shown(verdict.metadata),
            },
        )
        for name, verdict in verdicts.items()
        if selected is None or dg.AssetCheckKey(TABLES, name) in selected
    ]


def as_evaluation(result: dg.AssetCheckResult) -> dg.AssetCheckEvaluation:
    """A check result the load reports without the check being planned in its run (see migrate_job)."""
    return dg.AssetCheckEvaluation(
        asset_key=TABLES, check_name=result.check_name, passed=result.passed, metadata=result.metadata,
        severity=result.severity, description=result.description, blocking=result.check_name in BLOCKING,
    )


def shown(metadata: dict) -> dict:
    """A verdict's figures as the UI shows them: flat numbers, and differing cells as a table."""
    cells = metadata.get(DIFFERING_VALUES)
    figures = flat({k: v for k, v in metadata.items() if k != DIFFERING_VALUES})
    return figures | ({DIFFERING_VALUES: differing_values_table(cells)} if cells else {})


def differing_values_table(cells: list[dict]) -> dg.TableMetadataValue:
    """The cells where the tables differ from the file, one row each, with the database's and the file's value."""
    columns = [
        dg.TableColumn("user_id", "string", description="the row's Telegram user_id"),
        dg.TableColumn("column", "string", description="table.column"),
        dg.TableColumn("in_database", "string", description="what the table holds"),
        dg.TableColumn("from_file", "string", description="what the file says it should hold"),
    ]
    return dg.MetadataValue.table([dg.TableRecord(cell) for cell in cells], schema=dg.TableSchema(columns=columns))


def flat(metadata: dict, prefix: str = "") -> dict:
    """Nested figures as one number per key (`users.rows_compared`, `in_database.PREMIUM`), so each shows
    and plots on its own; a list of ids as text; nothing empty."""
    shown = {}
    for key, value in metadata.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            shown |= flat(value, f"{name}.")
        elif isinstance(value, list):
            if value:
                shown[name] = ", ".join(map(str, value))
        else:
            shown[name] = value
    return shown


SCHEMA_CHANGE = dg.AssetCheckKey(TABLES, "column_schema_change")  # the check is built in defs/drift.py
SCHEMA_TARGET = ("database", "schema")  # what a materialization of the tables records of its target
LOOKED_AT = 100  # earlier materializations searched for one of the same target


def schema_target(metadata: Mapping) -> tuple:
    """The target (database without the password, schema) a materialization's metadata names."""
    return tuple(getattr(metadata.get(key), "value", metadata.get(key)) for key in SCHEMA_TARGET)


def earlier_of_target(records: Sequence[dg.EventLogRecord], target: tuple) -> dg.EventLogRecord | None:
    """The newest of these materializations of the tables made in `target`: one asset serves every target,
    and tables of another database or schema are no earlier state of these."""
    return next((r for r in records if schema_target(r.asset_materialization.metadata) == target), None)


def _columns(value) -> dg.TableSchema | None:
    return value.schema if isinstance(value, dg.TableSchemaMetadataValue) else value


def column_schema_change_result(
    previous: dg.EventLogRecord | None, latest: dg.TableSchema | dg.TableSchemaMetadataValue | None, target: tuple
) -> dg.AssetCheckResult:
    """column_schema_change: the latest load's columns against the last earlier materialization of the
    same target, naming every column added, removed or retyped. A warning: the load writes only the
    columns it knows."""
    metadata = {"target": "/".join(str(part) for part in target),
                "compared_with_run": previous.run_id if previous else "none: the first materialization of this target"}
    result = partial(dg.AssetCheckResult, asset_key=TABLES, check_name=SCHEMA_CHANGE.name, severity=WARN, metadata=metadata)
    if previous is None:
        compared, description = nothing_to_compare("the first load of this database and schema, no earlier columns")
        return result(passed=True, description=description, metadata=metadata | compared)
    columns = [_columns(previous.asset_materialization.metadata.get("dagster/column_schema")), _columns(latest)]
    if None in columns:
        which = "Latest" if columns[1] is None else "Previous"
        return result(passed=False, description=f"{which} materialization has no column schema metadata")
    before = {column.name: column.type for column in columns[0].columns}
    after = {column.name: column.type for column in columns[1].columns}
    added = [name for name in after if name not in before]
    removed = [name for name in before if name not in after]
    retyped = [f"\n- {name}: {before[name]} -> {after[name]}" for name in after if name in before and before[name] != after[name]]
    if not (added or removed or retyped):
        return result(passed=True, description="No changes to column schema between previous and latest materialization")
    return result(passed=False, description=(
        "Column schema changed between previous and latest materialization."
        + (f"\n\nAdded columns: {', '.join(added)}" if added else "")
        + (f"\n\nRemoved columns: {', '.join(removed)}" if removed else "")
        + ("\n\nColumn type changes:" + "".join(retyped) if retyped else "")))


def planned_checks(context: dg.AssetExecutionContext) -> set[dg.AssetCheckKey]:
    """The checks this run plans (and so runs, or marks failed when it fails)."""
    events = context.instance.all_logs(context.run.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION_PLANNED)
    return {dg.AssetCheckKey(e.dagster_event.event_specific_data.asset_key, e.dagster_event.event_specific_data.check_name)
            for e in events}


def judge_tables_now(
    settings: MigrationSettings, postgres: PostgresResource, mapped_users: pd.DataFrame,
    mapped_subscriptions: pd.DataFrame, selected: set[dg.AssetCheckKey],
) -> list[dg.AssetCheckResult]:
    """The checks run without the load: the tables as they are now, on one connection. They write
    nothing, so `dry_run` changes nothing: their verdicts are of the real tables."""
    with postgres.get_connection() as conn:
        verdicts = all_verdicts(conn, settings.target_schema, mapped_users, mapped_subscriptions)
    return table_check_results(verdicts, dry_run=False, seen_before_commit=False, selected=selected)


CHECKS = [no_rejected_entries]
