"""`bot_data_file`: the bot's JSON file on the graph, as an observable source.

Its data version is the file's sha256, so the UI shows the migration's assets as unsynced once the
file's content differs from what they were made from. An observation reuses the last observation's
hash while the file's size, mtime, change time and inode are unchanged (an untouched 700 MB file is not read), or the
look of the sensor that requested the run: new content is hashed once between them.
"""

import json
from pathlib import Path

import dagster as dg

from faceit_etl.defs.assets import GROUP
from faceit_etl.defs.automation import SOURCE_LOOK_TAG, observed_look
from faceit_etl.defs.resources import MigrationSettings
from faceit_etl.identity import look_at_file


@dg.observable_source_asset(
    name="bot_data_file",
    group_name=GROUP,
    description="The bot's JSON data file (DATA_FILE_PATH), by content: its data version is the file's sha256.",
)
def bot_data_file(context: dg.OpExecutionContext, migration_settings: MigrationSettings) -> dg.ObserveResult:
    source = Path(migration_settings.source_path).resolve()
    if not source.is_file():  # no version to give; a migration's source_backup then fails naming the file
        return dg.ObserveResult(metadata={"path": str(source), "missing": True})
    requested = json.loads(context.run.tags.get(SOURCE_LOOK_TAG, "{}"))  # the sensor's look, if it asked
    if requested.get("path") != str(source):
        requested = None  # another file: its look says nothing about this one
    look, hashed = look_at_file(source, observed_look(context.instance, source), requested)
    return dg.ObserveResult(
        data_version=dg.DataVersion(look.sha256),
        metadata={"path": str(source), **look.as_dict(), "hashed": hashed},
    )
