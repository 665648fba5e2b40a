"""Where step values live between steps: a folder per run in the instance's storage.

Dagster's default filesystem IO manager keeps one file per asset, shared by every run, so two
migrations running at once (the CLI and the UI, say) could read each other's half-written values.
Here each run writes under its own id; an input is read from the run that produced it.

Only the newest `KEEP_RUNS` runs' values are kept (enough to re-execute a recent run from the UI):
at a million users one run leaves 0.7 GiB here, which a daily schedule would otherwise pile up.

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
            _prune(path.parent.parent)
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
                f"the value of {path.name} from run {context.upstream_output.run_id} is gone: only the "
                f"newest {KEEP_RUNS} runs' step values are kept, so this run cannot be re-executed. "
                "Start a new run instead."
            ) from None
        value = pickle.loads(data)
        if isinstance(value, SourceData) and value.path is not None and value.pieces is None:
            return replace(read_source(value.path), sha256=value.sha256)
        return value  # a source read in pieces parses them when asked: nothing to read here


def _prune(runs: Path) -> None:
    """Delete the step values of all but the newest `KEEP_RUNS` runs."""
    by_age = sorted(runs.iterdir(), key=lambda folder: folder.stat().st_mtime_ns, reverse=True)
    for old in by_age[KEEP_RUNS:]:
        shutil.rmtree(old, ignore_errors=True)
