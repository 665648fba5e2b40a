"""Where step values live between steps: a folder per run in the instance's storage.

Dagster's default filesystem IO manager keeps one file per asset, shared by every run, so two
migrations running at once (the CLI and the UI, say) could read each other's half-written values.
Here each run writes under its own id; an input is read from the run that produced it. An input whose
asset this run does not make (a subset: "Materialize unsynced", `dg launch --assets`, the checks alone)
is read from the run that last materialized that asset, and only when that value was made by this code
from the bytes the bot's file holds now (followed through the inputs Dagster recorded for each step back
to `source_backup`, whose data version is the file's sha256): a mapping of other content would load stale
rows. Otherwise the step is refused before it runs, saying what to select instead.

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

Every other value is still written (a resume reads it); the validation outcome, already pickled where
its step keeps it for re-runs, is written as a hard link to that file. But a later step of the same run in the same
process (the in-process executor, the CLI's default) takes the object itself: reading the validation
outcome back three times and the mapped frames once cost seconds at 1M users, and the frames read back
no longer shared the validated columns they were selected from. The values of one run at a time are
held: the next run's first value, or `forget_values` when its run has ended, lets them go.
"""

import os
import pickle
import shutil
import uuid
from dataclasses import dataclass, replace
from pathlib import Path

import dagster as dg

from faceit_etl.backups import newest_first, private_writer
from faceit_etl.identity import code_version, look_at_file
from faceit_etl.source import SourceData, read_source
from faceit_etl.validation import ValidationOutcome, memo

_HANDED_OVER: dict[Path, object] = {}  # by the path the value is written to, which names its run
KEEP_RUNS = 5
_UNFINISHED = {dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
               dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING}


# The provenance Dagster records on each materialization: per input, the event it was read from.
INPUT_EVENT_POINTER = "dagster/input_event_pointer/"
CODE_VERSION_TAG = "dagster/code_version"
SOURCE_BACKUP = dg.AssetKey("source_backup")
MATERIALIZE_ALL = "materialize all (or select {upstream} and what it needs too)"


class StepValuesGone(RuntimeError):
    """A re-execution needs a step value of a run whose values were pruned."""


class NotOfThisFile(RuntimeError):
    """A step of a subset needs a value its run does not make, and the last one made is of other content
    or code, or gone: the run is refused before that step runs."""


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
        for other in [kept for kept in _HANDED_OVER if kept.parent != path.parent]:  # another run's
            _HANDED_OVER.pop(other, None)
        _HANDED_OVER[path] = obj
        if isinstance(obj, SourceData) and obj.path is not None:
            obj = replace(obj, entries=[], id_keys=None)  # the reference: where to read it again
        if isinstance(obj, ValidationOutcome) and obj.input_identity is not None and _linked(
            memo.kept(Path(context.step_context.instance.storage_directory()) / memo.FOLDER, obj.input_identity), path
        ):
            return
        with private_writer(path, durable=False) as handle:
            pickle.dump(obj, handle, protocol=pickle.HIGHEST_PROTOCOL)

    def load_input(self, context: dg.InputContext):
        instance, upstream = context.instance, context.upstream_output
        if instance.get_run_by_id(upstream.run_id) is None:  # not made by this run nor the one it re-executes
            path = _last_of_this_file(instance, context.op_def.name, upstream.asset_key, self._path)
        else:
            path = self._path(instance, upstream)
        # Only this run's own values: a re-execution reads its parent's from disk, where pruning may have removed them.
        if upstream.run_id == context.step_context.run_id and path in _HANDED_OVER:  # parsed entries once
            return _HANDED_OVER.pop(path) if isinstance(_HANDED_OVER[path], SourceData) else _HANDED_OVER[path]
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


def _linked(kept: Path, path: Path) -> bool:
    """`path` made a hard link to `kept`, the outcome the validation step kept and returned, already pickled
    (pickling it again cost 1.7-2.4 s at 1M users); False when `kept` is gone (another run pruned it) or
    the file system makes no links: the caller pickles it. Safe as no writer changes a file in place."""
    temp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.link")
    try:
        os.link(kept, temp)
    except OSError:
        return False
    os.replace(temp, path)
    return True


def forget_values(run_id: str) -> None:
    """Let go of the values a run handed over in this process, once it has ended."""
    for kept in [kept for kept in _HANDED_OVER if kept.parent.name == run_id]:
        _HANDED_OVER.pop(kept, None)


def _last_of_this_file(instance: dg.DagsterInstance, consumer: str, key: dg.AssetKey, where) -> Path:
    """Where the last materialization of `key` keeps its value, when it was made by this code from the
    file's content as it is now; else refused, naming what to select."""
    upstream = key.to_user_string()
    advice = MATERIALIZE_ALL.format(upstream=upstream)
    latest = instance.get_latest_materialization_event(key)
    if latest is None:
        raise NotOfThisFile(f"{consumer} needs {upstream}, which was never materialized: {advice}")
    made_by = (latest.asset_materialization.tags or {}).get(CODE_VERSION_TAG)
    if made_by != code_version():
        raise NotOfThisFile(
            f"{consumer} needs {upstream} made by this code, and the last {upstream} (run {latest.run_id}) was "
            f"made by other code: {advice}"
        )
    source = _source_of(instance, latest)
    if source is None:
        raise NotOfThisFile(f"{consumer} needs {upstream} of a known file, and the last one (run {latest.run_id}) "
                            f"cannot be traced to the file it was made from: {advice}")
    original = source.metadata["source"].value
    then = source.tags["dagster/data_version"]
    observed = instance.fetch_observations(dg.AssetKey("bot_data_file"), limit=1).records
    last_look = {k: v.value for k, v in observed[0].asset_observation.metadata.items()} if observed else None
    try:
        now = look_at_file(original, last_look if last_look and last_look.get("path") == original else None)[0].sha256
    except FileNotFoundError:
        now = None
    if now != then:
        state = "the file is gone" if now is None else f"sha256 {then} then, {now} now"
        raise NotOfThisFile(
            f"{consumer} needs {upstream} from a run of {original} as it is now, and the last {upstream} "
            f"(run {latest.run_id}) was made from it when it held other bytes ({state}). {advice[0].upper()}{advice[1:]}"
        )
    path = where(instance, _Made(latest.run_id, key))
    if not path.exists():
        raise NotOfThisFile(
            f"{consumer} needs {upstream} from run {latest.run_id}, the last to materialize it, and that run's step "
            f"values are gone (kept for the newest {KEEP_RUNS} runs and the latest failed run of each target): {advice}"
        )
    return path


@dataclass(frozen=True)
class _Made:
    """Where an earlier run's output lives: its run and asset, as `_name` and `_path` read them."""

    run_id: str
    asset_key: dg.AssetKey
    has_asset_key: bool = True


def _source_of(instance: dg.DagsterInstance, record) -> dg.AssetMaterialization | None:
    """The `source_backup` materialization a value was made from, followed through the event each step
    read its input from (every asset between has one input of the migration besides the file)."""
    materialization = record.asset_materialization
    while materialization.asset_key != SOURCE_BACKUP:
        pointers = {
            name[len(INPUT_EVENT_POINTER):]: int(storage_id)
            for name, storage_id in (materialization.tags or {}).items()
            if name.startswith(INPUT_EVENT_POINTER) and name != f"{INPUT_EVENT_POINTER}bot_data_file"
        }
        if len(pointers) != 1:
            return None
        [(parent, storage_id)] = pointers.items()
        found = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey.from_user_string(parent), storage_ids=[storage_id]), limit=1
        ).records
        if not found:
            return None
        materialization = found[0].asset_materialization
    return materialization


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
    by_age = newest_first(folders.values())
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
