"""Where step values live between steps: a folder per run in the instance's storage.

Dagster's default filesystem IO manager keeps one file per asset, shared by every run, so two
migrations running at once (the CLI and the UI, say) could read each other's half-written values.
Here each run writes under its own id; an input is read from the run that produced it.

The newest `KEEP_RUNS` runs' values are kept, and those a resume needs: the latest failed run of each
target (with the runs it re-executed, whose values it reads) until a later run of that target succeeds.
At a million users one run leaves 0.7 GiB here, which a daily schedule would otherwise pile up. A run's
target (`host:port/database/schema`) is recorded by its load step (`record_target`), in a small file
kept apart from the values: a run that failed before its load has read no table, and resuming it
would do what a new run does.

The parsed source travels by reference. Its bytes are already on disk (the run's backup copy), and
pickling a million parsed entries, then reading them back, cost 10 s at 1M users: more than parsing
the file. A step in the same process gets the parsed entries handed over in memory (once, so they
are freed as soon as validation holds them); any other reader parses the backup copy again.
"""

import pickle
import shutil
from dataclasses import replace
from pathlib import Path

import dagster as dg

from faceit_etl.source import SourceData, read_source

_HANDED_OVER: dict[Path, SourceData] = {}
KEEP_RUNS = 5
_UNFINISHED = {dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
               dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING}


class StepValuesGone(RuntimeError):
    """A re-execution needs a step value of a run whose values were pruned."""


def _name(context: dg.OutputContext) -> str:
    """An asset's key, or an op's step and output (rollback_job's op has no asset)."""
    return "__".join(context.asset_key.path) if context.has_asset_key else f"{context.step_key}.{context.name}"


class RunScopedPickleIOManager(dg.ConfigurableIOManager):
    def _path(self, instance: dg.DagsterInstance, output: dg.OutputContext) -> Path:
        return Path(instance.storage_directory()) / "runs" / output.run_id / _name(output)

    def handle_output(self, context: dg.OutputContext, obj) -> None:
        path = self._path(context.step_context.instance, context)
        if not path.parent.exists():
            path.parent.mkdir(parents=True)
            _prune(context.step_context.instance, path.parent.parent)
        if isinstance(obj, SourceData) and obj.path is not None:
            _HANDED_OVER[path] = obj
            obj = replace(obj, entries=[], id_keys=None)  # the reference: where to read it again
        temporary = path.with_name(path.name + ".tmp")
        with temporary.open("wb") as handle:
            pickle.dump(obj, handle, protocol=pickle.HIGHEST_PROTOCOL)
        temporary.replace(path)

    def load_input(self, context: dg.InputContext):
        path = self._path(context.instance, context.upstream_output)
        if path in _HANDED_OVER:
            return _HANDED_OVER.pop(path)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise StepValuesGone(
                f"the value of {path.name} from run {context.upstream_output.run_id} is gone (step values are "
                f"kept for the newest {KEEP_RUNS} runs and the latest failed run of each target, until a later "
                "run of it succeeds), so this run cannot be re-executed or resumed. Start a new run instead."
            ) from None
        value = pickle.loads(data)
        if isinstance(value, SourceData) and value.path is not None and value.pieces is None:
            return replace(read_source(value.path), sha256=value.sha256)
        return value  # a source read in pieces parses them when asked: nothing to read here


def _targets(instance: dg.DagsterInstance) -> Path:
    return Path(instance.storage_directory()) / "run_targets"


def record_target(instance: dg.DagsterInstance, run_id: str, target: str) -> None:
    """Which target (`host:port/database/schema`, no password) this run's load is for. A few bytes a
    run, kept after its values are deleted: whether a later run of the target succeeded stays known."""
    folder = _targets(instance)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / run_id).write_text(target)


def target_of(instance: dg.DagsterInstance, run_id: str) -> str | None:
    """The target a run's load was for; None when its load never started."""
    try:
        return (_targets(instance) / run_id).read_text()
    except FileNotFoundError:
        return None


def _prune(instance: dg.DagsterInstance, runs: Path) -> None:
    """Delete the step values of all runs but the newest `KEEP_RUNS`, those still going, and those a
    resume of each target's latest failed run reads."""
    folders = {folder.name: folder for folder in runs.iterdir()}
    by_age = sorted(folders.values(), key=lambda folder: folder.stat().st_mtime_ns, reverse=True)
    keep = {folder.name for folder in by_age[:KEEP_RUNS]} | _needed(instance, list(folders))
    for name, folder in folders.items():
        if name not in keep:
            shutil.rmtree(folder, ignore_errors=True)


def _needed(instance: dg.DagsterInstance, run_ids: list[str]) -> set[str]:
    """Runs still going, and per target its latest failed run that has values, with the runs it
    re-executed, unless a migration of that target succeeded after it."""
    records = instance.get_run_records(dg.RunsFilter(run_ids=run_ids))
    runs = {r.dagster_run.run_id: r.dagster_run for r in records}
    needed = {run_id for run_id, run in runs.items() if run.status in _UNFINISHED}
    latest_failed: dict[str, dg.RunRecord] = {}
    for record in sorted(records, key=lambda r: r.create_timestamp, reverse=True):
        target = target_of(instance, record.dagster_run.run_id)
        if target is not None and target not in latest_failed and record.dagster_run.status == dg.DagsterRunStatus.FAILURE:
            latest_failed[target] = record
    for target, record in latest_failed.items():
        later = instance.get_run_records(dg.RunsFilter(
            job_name=record.dagster_run.job_name, statuses=[dg.DagsterRunStatus.SUCCESS], created_after=record.create_timestamp
        ))
        if any(target_of(instance, r.dagster_run.run_id) == target for r in later):
            continue  # superseded
        run = record.dagster_run
        while run is not None:
            needed.add(run.run_id)
            run = runs.get(run.parent_run_id) if run.parent_run_id else None
    return needed
