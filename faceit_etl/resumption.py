"""Resuming a failed migration: Dagster's re-execution from failure of its run, which reuses the values
its finished steps left (the file's backup copy, the validated file, the mapping) and runs only the
failed step and those after it, typically the load after the operator ran the ALTER TABLE it printed.

A resume is refused, with the advice to start a new run, when it would not do what a new run does:
- the source file's content (its sha256) is no longer the one the failed run backed up: it would load
  old data;
- the step values it would reuse are gone (`defs/io.py` keeps them for the latest failed run of each
  target until a later run of that target succeeds);
- the tables changed since the snapshot the failed run's load took. "Changed" means their rows, as a
  rollback restores and verifies them: each table's row count and the sha256 of the snapshot's columns
  in COPY text, or a table or column of the snapshot gone, or another database. Widening a column
  (`integer` to `bigint`, the ALTER a failed load asks for) keeps every value's text, so it is no change;
  any row written, removed or changed since is. The resumed load then reuses that snapshot instead of
  taking its own, so rolling the resumed migration back restores exactly what its original run saw.

The checks that need the tables run in the load step, under the migration's lock, so a re-execution
started from the Dagster UI is refused alike; `resume` only chooses the run and launches it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg

from faceit_etl.backups import BackupError, SourceSnapshot, read_manifest, run_folder
from faceit_etl.identity import look_at_file
from faceit_etl.postgres.ddl import table_exists
from faceit_etl.postgres.fingerprint import fingerprint
from faceit_etl.postgres.snapshot import SNAPSHOT_TABLES, UNCHANGED_SINCE, database_identity, digest_table, stored_columns

if TYPE_CHECKING:
    import dagster as dg

START_A_NEW_RUN = "resuming it would not load what a new run loads; start a new run instead"
SNAPSHOT_FOLDER = "snapshot_folder"  # a resumed load's manifest: where the reused snapshot's files are
SNAPSHOT_OF_RUN = "snapshot_of_run"  # and which run's load took it

_WAIT_FOR_IT = "wait for it to end, then check faceit-etl status, which says whether it committed"


class ResumeRefused(RuntimeError):
    """This failed run cannot be resumed (or there is none): nothing was written."""


def refuse_changed_source(original: str, sha256: str, last_look: Mapping | None = None) -> None:
    """The file the failed run backed up must still hold the bytes it copied. `last_look` (the latest
    observation of the file) spares reading a file whose inode, size and mtime are unchanged."""
    path = Path(original)
    if not path.is_file():
        raise ResumeRefused(f"{original}: the source file of the failed run is gone; {START_A_NEW_RUN}")
    look, _ = look_at_file(path, last_look if last_look and last_look.get("path") == str(path) else None)
    if look.sha256 != sha256:
        raise ResumeRefused(
            f"{original}: the source file changed since the failed run backed it up (sha256 {sha256[:12]}… then, "
            f"{look.sha256[:12]}… now); {START_A_NEW_RUN}"
        )


def family_snapshot(folders: Sequence[Path]) -> tuple[Path, dict] | None:
    """The table snapshot the nearest of these runs' loads took (their backup folders, the failed run's
    first, then its parents'): the folder holding its files, and the manifest's record of it."""
    for folder in folders:
        try:
            target = read_manifest(folder).get("target")
        except BackupError:
            continue
        if target is not None:
            return Path(target.get(SNAPSHOT_FOLDER, folder)), target
    return None


def refuse_changed_tables(conn: psycopg.Connection, schema: str, target: dict) -> None:
    """The tables must hold exactly the rows of the failed run's snapshot (see the module's docstring)."""
    taken = target.get(SNAPSHOT_OF_RUN, target.get("run_id"))
    if target["schema"] != schema:
        raise ResumeRefused(f"run {taken} loaded into schema {target['schema']!r}, not {schema!r}; {START_A_NEW_RUN}")
    origin = target.get("database")
    if origin is not None and origin != database_identity(conn):
        raise ResumeRefused(
            f"run {taken} loaded into database {origin['name']!r} (system {origin['system_identifier']}), not into "
            f"this one; {START_A_NEW_RUN}"
        )
    if UNCHANGED_SINCE in target:  # that load found the tables as an earlier one left them: their fingerprint
        now = fingerprint(conn, schema) if all(table_exists(conn, schema, n) for n in SNAPSHOT_TABLES) else {}
        changed = [] if now == target["fingerprint"] else ["their content differs"]
    else:
        changed = [c for name in SNAPSHOT_TABLES if (c := _change(conn, schema, name, target["tables"].get(name)))]
    if changed:
        raise ResumeRefused(
            f"the tables changed since run {taken} took its snapshot ({'; '.join(changed)}); {START_A_NEW_RUN}"
        )


def _change(conn: psycopg.Connection, schema: str, name: str, snap: dict | None) -> str | None:
    exists = table_exists(conn, schema, name)
    if snap is None:
        return f"{name}: absent then, present now" if exists else None
    if not exists:
        return f"{name}: {snap['rows']} rows then, gone now"
    columns = snap.get("columns")
    if columns is not None and (gone := [c for c in columns if c not in stored_columns(conn, schema, name)]):
        return f"{name}: column {', '.join(gone)} gone"
    now = digest_table(conn, schema, name, columns=columns)
    if (now.rows, now.sha256) == (snap["rows"], snap["sha256"]):
        return None
    return f"{name}: {now.rows} rows now, {snap['rows']} then" + (", contents differ" if now.rows == snap["rows"] else "")


def reused_snapshot(snapshot: tuple[Path, dict], run_id: str) -> dict:
    """The manifest's record for a resumed load that found the tables as its family's snapshot holds
    them: that snapshot, named as this run's, with where its files are."""
    folder, target = snapshot
    return target | {
        "run_id": run_id, SNAPSHOT_FOLDER: str(folder), SNAPSHOT_OF_RUN: target.get(SNAPSHOT_OF_RUN, target["run_id"])
    }


# ---------------------------------------------------------------- choosing and launching (Dagster)
# Dagster is imported where it is used: the load imports this module for the checks above.


def in_load_step(
    instance: dg.DagsterInstance, run: dg.DagsterRun, source_backup: SourceSnapshot, backup_dir: str
) -> tuple[Path, dict] | None:
    """When this run's load reuses an earlier run's source backup (a re-execution from failure, from the
    CLI or the UI), refuse a changed source file, and return the snapshot its family's load took, which
    the load then checks the tables against under its lock. None for a run that backed up the file itself."""
    import dagster as dg

    # The runs it resumes: its parent and their parents while they failed (a successful one committed its
    # load, so its snapshot is no longer the tables' state; re-executing steps of it is no resume).
    failed = ancestors(instance, run)[1:]
    failed = failed[: next((i for i, r in enumerate(failed) if r.status != dg.DagsterRunStatus.FAILURE), len(failed))]
    if Path(source_backup.folder) == run_folder(backup_dir, run.run_id) or not failed:
        return None
    observed = instance.fetch_observations(dg.AssetKey("bot_data_file"), limit=1).records
    last = {k: v.value for k, v in observed[0].asset_observation.metadata.items()} if observed else None
    refuse_changed_source(source_backup.original, source_backup.sha256, last)
    return family_snapshot([run_folder(backup_dir, r.run_id) for r in failed])



def ancestors(instance: dg.DagsterInstance, run: dg.DagsterRun) -> list[dg.DagsterRun]:
    """The run, then its parent, up to the root: a re-execution's family."""
    family = [run]
    while run.parent_run_id and (parent := instance.get_run_by_id(run.parent_run_id)) is not None:
        family.append(parent)
        run = parent
    return family


def choose(
    instance: dg.DagsterInstance, target: str, target_of, run_id: str | None = None, *,
    running: Callable[[dg.DagsterRun], str] = lambda run: run.status.value,
    rolled_back: Callable[[str], bool] = lambda run_id: False,
) -> dg.DagsterRun:
    """The failed migration to resume: `run_id`, else the latest migration of `target` (`host:port/database/
    schema`; dry runs aside, which neither write nor resume), when that one is resumable: an older failure
    was superseded by it, so resuming that would load something the operator no longer runs. Whatever the
    latest is (running, successful, rolled back, canceled), the refusal names it: never an older run behind
    it. `target_of(run_id)` says which target a run's load was for (None: its load never started);
    `running(run)` what of an unfinished run still runs, in words; `rolled_back(run_id)` whether a rollback
    undid that run's load. Refused, saying why and what to do instead, for a run that did not fail, whose
    load never started, that was resumed already, whose every step finished (nothing to re-execute), or
    after which a migration of that target succeeded."""
    import dagster as dg

    from faceit_etl.api import TARGET_TAG

    records = instance.get_run_records(dg.RunsFilter(job_name="migrate_job"))  # newest first, every status
    mine = [r.dagster_run for r in records
            if (target_of(r.dagster_run.run_id) or r.dagster_run.tags.get(TARGET_TAG)) == target]
    attempts = [run for run in mine if not dry_run(run)]  # a dry run neither supersedes nor is resumed
    if run_id is None:
        chosen = _latest_failed(attempts, target, running, rolled_back)
    else:
        chosen = instance.get_run_by_id(run_id)
        if chosen is None or chosen.job_name != "migrate_job":
            raise ResumeRefused(f"no migration run {run_id!r} in this Dagster instance")
        if not chosen.is_finished:
            raise ResumeRefused(f"run {run_id} is still running ({running(chosen)}): {_WAIT_FOR_IT}")
        if chosen.status != dg.DagsterRunStatus.FAILURE:
            raise ResumeRefused(f"run {run_id} did not fail (it is {chosen.status.value}): there is nothing to resume")
    order = [run.run_id for run in attempts]
    later = next((run for run in attempts if run.status == dg.DagsterRunStatus.SUCCESS), None)
    if later is not None and chosen.run_id in order and order.index(later.run_id) < order.index(chosen.run_id):
        raise ResumeRefused(
            f"run {later.run_id} of {target} succeeded after run {chosen.run_id} failed: the tables hold a later "
            f"migration; {START_A_NEW_RUN}"
        )
    loaded = next((t for run in ancestors(instance, chosen) if (t := target_of(run.run_id)) is not None), None)
    if loaded is None:
        raise ResumeRefused(
            f"run {chosen.run_id} never started its load (it stopped before the load, or was a dry run, which writes "
            f"nothing to resume); {START_A_NEW_RUN}"
        )
    if loaded != target:
        raise ResumeRefused(f"run {chosen.run_id} loaded into {loaded}, not {target}")
    resumed = [r.dagster_run for r in records if r.dagster_run.parent_run_id == chosen.run_id]  # newest first
    if resumed:
        raise ResumeRefused(
            f"run {chosen.run_id} was resumed already, by run {resumed[0].run_id} ({resumed[0].status.value}); a run is "
            f"resumed once: resume that run if it failed, else start a new run"
        )
    if not steps_to_resume(instance, chosen):
        raise ResumeRefused(
            f"every step of run {chosen.run_id} finished (its load committed: the tables hold it) before the run was "
            "marked failed, so there is nothing to resume; faceit-etl status shows what the tables hold"
        )
    return chosen


def _latest_failed(
    attempts: Sequence[dg.DagsterRun], target: str, running: Callable[[dg.DagsterRun], str],
    rolled_back: Callable[[str], bool],
) -> dg.DagsterRun:
    """The default pick among the target's migrations (dry runs aside, newest first), by the latest one's
    state. A successful one yields the latest failure before it, which choose then refuses as superseded."""
    import dagster as dg

    if not attempts:
        raise ResumeRefused(f"no failed migration of {target} to resume")
    latest = attempts[0]
    named = f"the latest migration of {target}, run {latest.run_id},"
    if not latest.is_finished:
        raise ResumeRefused(
            f"{named} is still running ({running(latest)}): {_WAIT_FOR_IT}; an older failure is never resumed behind it"
        )
    if latest.status == dg.DagsterRunStatus.CANCELED:
        raise ResumeRefused(f"{named} was canceled, not failed: there is nothing to resume; {START_A_NEW_RUN}")
    if latest.status == dg.DagsterRunStatus.SUCCESS and rolled_back(latest.run_id):
        raise ResumeRefused(
            f"{named} succeeded and was rolled back since: the tables are as before it, and an older failure is "
            f"not resumed behind it; {START_A_NEW_RUN}"
        )
    failed = next((run for run in attempts if run.status == dg.DagsterRunStatus.FAILURE), None)
    if failed is None:
        raise ResumeRefused(f"no failed migration of {target} to resume")
    return latest if latest.status == dg.DagsterRunStatus.FAILURE else failed


DRY_RUN_TAG = "faceit_etl/dry_run"  # "true" on a dry run, however set (run config or MIGRATION_DRY_RUN)


def dry_run(run: dg.DagsterRun) -> bool:
    """Whether `run` is a dry run: its run config says so, or its first step tagged it (MIGRATION_DRY_RUN in
    its process's environment, which run config does not show)."""
    given = run.run_config.get("resources", {}).get("migration_settings", {}).get("config", {}).get("dry_run")
    return bool(given) or run.tags.get(DRY_RUN_TAG) == "true"


def steps_to_resume(instance: dg.DagsterInstance, run: dg.DagsterRun) -> list[str]:
    """The steps of `run`'s plan that did not succeed (failed, or never started), which a re-execution from
    failure runs again. None, when every step finished before the run was marked failed (its launching
    process was killed while its last step went on): Dagster then refuses the re-execution with a
    misleading "Cannot perform reexecution with in-memory io managers"."""
    import dagster as dg

    planned = instance.get_execution_plan_snapshot(run.execution_plan_snapshot_id).step_keys_to_execute
    succeeded = {event.step_key for event in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_SUCCESS)}
    return [step for step in planned if step not in succeeded]


def reexecute_failed_run(
    job, instance: dg.DagsterInstance, failed: dg.DagsterRun, *, tags: Mapping[str, str], run_config: dict | None = None
) -> dg.ExecutionResult:
    """Re-execute `failed` from its failed step, with its own run config (`run_config` entries replace
    its top-level sections) and `tags` added to its own (Dagster's own tags it sets again itself)."""
    import dagster as dg

    config = {**failed.run_config, **(run_config or {})}
    own = {key: value for key, value in failed.tags.items() if not key.lstrip(".").startswith("dagster/")}
    return dg.execute_job(
        job, instance=instance, run_config=config, tags={**own, **tags},
        reexecution_options=dg.ReexecutionOptions.from_failure(failed.run_id, instance),
    )
