"""Where step values live between steps: a folder per run in the instance's storage.

Dagster's default filesystem IO manager keeps one file per asset, shared by every run, so two
migrations running at once (the CLI and the UI, say) could read each other's half-written values.
Here each run writes under its own id; an input is read from the run that produced it.
"""

import pickle
from pathlib import Path

import dagster as dg


def _name(context: dg.OutputContext) -> str:
    """An asset's key, or an op's step and output (rollback_job's op has no asset)."""
    return "__".join(context.asset_key.path) if context.has_asset_key else f"{context.step_key}.{context.name}"


class RunScopedPickleIOManager(dg.ConfigurableIOManager):
    def _path(self, instance: dg.DagsterInstance, output: dg.OutputContext) -> Path:
        return Path(instance.storage_directory()) / "runs" / output.run_id / _name(output)

    def handle_output(self, context: dg.OutputContext, obj) -> None:
        path = self._path(context.step_context.instance, context)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(path.name + ".tmp")
        with temporary.open("wb") as handle:
            pickle.dump(obj, handle, protocol=pickle.HIGHEST_PROTOCOL)
        temporary.replace(path)

    def load_input(self, context: dg.InputContext):
        return pickle.loads(self._path(context.instance, context.upstream_output).read_bytes())
