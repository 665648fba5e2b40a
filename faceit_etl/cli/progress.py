"""Progress of a running migration, read from the Dagster instance's event log while it runs.

On a terminal: a rich progress bar per stage (rows for the load's COPY); elsewhere plain lines.
The run's steps stay free of any knowledge of how they are being watched.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import dagster as dg
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from faceit_etl.cli.summary import INTERRUPTED
from faceit_etl.postgres.load import PROGRESS_DONE, PROGRESS_STAGE, PROGRESS_TOTAL

STAGES = {
    "source_backup": "back up the file",
    "raw_json": "read the JSON file",
    "validated_frame": "validate entries",
    "mapped_frames": "map to the bot's tables",
    "postgres_tables": "load into PostgreSQL",
}
POLL_SECONDS = 0.2


class RunWatcher:
    """Polls the run's events in a background thread and reports them through `line`; `on_run` learns the
    run's id as soon as the run is found."""

    def __init__(self, instance: dg.DagsterInstance, tags: dict[str, str], console: Console | None,
                 line: Callable[[str], None], on_run: Callable[[str], None]):
        self.instance, self.tags, self.line, self.on_run = instance, tags, line, on_run
        self.run_id: str | None = None
        self.progress = (
            Progress(
                TextColumn("{task.description:<28}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=console,
            )
            if console is not None
            else None
        )
        self.tasks: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._cursor: str | None = None

    def __enter__(self) -> RunWatcher:
        if self.progress:
            self.progress.start()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._drain()
        if self.progress:
            self.progress.stop()

    def _poll(self) -> None:
        while not self._stop.wait(POLL_SECONDS):
            self._drain()

    def _drain(self) -> None:
        if self.run_id is None:
            runs = self.instance.get_run_records(dg.RunsFilter(tags=self.tags), limit=1)
            if not runs:
                return
            self.run_id = runs[0].dagster_run.run_id
            self.on_run(self.run_id)
        try:
            connection = self.instance.get_records_for_run(self.run_id, cursor=self._cursor)
        except Exception:  # the run may not be stored yet
            return
        self._cursor = connection.cursor
        for record in connection.records:
            self._on(record.event_log_entry)

    def _on(self, entry) -> None:
        event = entry.dagster_event
        step = entry.step_key or ""
        if event is None:
            return
        kind = event.event_type_value
        if kind == "ASSET_OBSERVATION":
            seen = {key: value.value for key, value in entry.asset_observation.metadata.items()}
            if PROGRESS_STAGE in seen:
                self._rows(seen[PROGRESS_STAGE], seen[PROGRESS_DONE], seen[PROGRESS_TOTAL])
            return
        if step in STAGES and kind == "STEP_START":
            self._start(step, STAGES[step])
        elif step in STAGES and kind == "STEP_SUCCESS":
            self._finish(step, STAGES[step], "done")
        elif step in STAGES and kind == "STEP_FAILURE":
            self._finish(step, STAGES[step], "interrupted" if _interrupted(event) else "FAILED")

    def _start(self, key: str, label: str, total: int = 1) -> None:
        if self.progress:
            self.tasks[key] = self.progress.add_task(label, total=total)
        else:
            self.line(f"{label} ...")

    def _finish(self, key: str, label: str, outcome: str) -> None:
        if self.progress:
            task = self.tasks.get(key)
            if task is not None:
                self.progress.update(task, completed=self.progress.tasks[task].total,
                                     description=label + ("" if outcome == "done" else f" {outcome}"))
        else:
            self.line(f"{label} {outcome}")

    def _rows(self, key: str, done: int, total: int) -> None:
        if self.progress:
            if key not in self.tasks:
                self.tasks[key] = self.progress.add_task(f"  {key} (rows)", total=total)
            self.progress.update(self.tasks[key], completed=done, total=total)
        elif done == total:
            self.line(f"  {key}: {total} rows")


def _interrupted(event) -> bool:
    """Whether Ctrl-C stopped the step: not its failure, and possibly after its load committed, which the
    command's last line says (the load step can be stopped after its COMMIT, while it reads what it reports)."""
    return event.step_failure_data.error.cls_name == INTERRUPTED
