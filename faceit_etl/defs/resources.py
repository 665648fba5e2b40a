"""`migration_settings`: every knob of a migration in one resource (the seed's MigrationSettings).

Defaults come from the environment under the seed's and the bot's names; run config
(`resources: {migration_settings: {config: {...}}}`) overrides them. The database URL is an
`EnvVar`, so the UI shows the variable's name, never its value.
"""

from __future__ import annotations

import os
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import dagster as dg
from pydantic import Field

from faceit_etl.database import resolve_database_url
from faceit_etl.target.ddl import checked_identifier

_TRUE = {"1", "true", "yes", "on"}


class MigrationSettings(dg.ConfigurableResource):
    database_url: str = Field(
        default="",
        description=(
            "PostgreSQL URL of the target. Empty: DATABASE_URL from the environment when the run "
            "starts, else an embedded PostgreSQL under .faceit-etl/."
        ),
    )
    source_path: str = Field(default="data.json", description="The bot's JSON data file (DATA_FILE_PATH).")
    batch_size: int = Field(default=10_000, gt=0, description="Rows per COPY chunk (and per progress step).")
    max_concurrent: int = Field(default=1, gt=0, description="Steps run at once by the job's executor.")
    backup_dir: str = Field(default="backups", description="Where each run's backup folder is written.")
    backup_tables: bool = Field(
        default=True,
        description="Snapshot the target tables before the load, so the run can be rolled back.",
    )
    force: bool = Field(default=False, description="Load the valid entries even when some are rejected.")
    truncate: bool = Field(default=False, description="Replace the tables' content instead of upserting.")
    dry_run: bool = Field(default=False, description="Do everything, then roll the load back.")
    source_timezone: str = Field(default="UTC", description="Time zone of the file's naive timestamps.")
    target_schema: str = Field(default="public", description="PostgreSQL schema of the bot's tables.")

    def connection_url(self) -> str:
        return resolve_database_url(self._configured_url())

    def _configured_url(self) -> str:
        # An EnvVar is resolved by Dagster at launch, but not when the resource is used directly
        # (tests, the CLI); and Dagster drops it when run config sets other fields: read it here too.
        url = self.database_url
        if isinstance(url, dg.EnvVar):
            url = url.get_value() or ""
        return url or os.environ.get("DATABASE_URL", "")

    def checked(self) -> MigrationSettings:
        """Refuse unusable values before anything runs, naming the setting."""
        checked_identifier(self.target_schema)
        try:
            ZoneInfo(self.source_timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"source_timezone {self.source_timezone!r} is not a known time zone") from None
        return self

    def safe_summary(self) -> dict:
        """The settings as they may be shown or stored: no database URL, which may hold a password."""
        return self.model_dump(exclude={"database_url"}) | {"embedded_database": not self._configured_url()}

    @classmethod
    def from_environment(cls) -> MigrationSettings:
        env = os.environ
        return cls(
            database_url=dg.EnvVar("DATABASE_URL") if env.get("DATABASE_URL") else "",
            source_path=env.get("DATA_FILE_PATH", "data.json"),
            batch_size=int(env.get("MIGRATION_BATCH_SIZE", "10000")),
            max_concurrent=int(env.get("MIGRATION_MAX_CONCURRENT", "1")),
            backup_dir=env.get("MIGRATION_BACKUP_DIR", "backups"),
            backup_tables=env.get("MIGRATION_BACKUP_TABLES", "true").lower() in _TRUE,
            force=env.get("MIGRATION_FORCE", "").lower() in _TRUE,
            truncate=env.get("MIGRATION_TRUNCATE", "").lower() in _TRUE,
            dry_run=env.get("MIGRATION_DRY_RUN", "").lower() in _TRUE,
            source_timezone=env.get("MIGRATION_SOURCE_TIMEZONE", "UTC"),
            target_schema=env.get("MIGRATION_TARGET_SCHEMA", "public"),
        )
