"""Dagster's own storage, chosen when the instance loads: PostgreSQL when DAGSTER_POSTGRES_URL is
set (runs, event logs, schedules through dagster-postgres), SQLite files otherwise.

dagster.yaml cannot say "if"; this class does, and hands back the real storage class, so run
workers and the daemon rebuild exactly that storage. The URL stays in the environment: the
instance's config only names the variable, so the password is never written or shown.
"""

from __future__ import annotations

import os

import yaml
from dagster._core.storage.base_storage import DagsterStorage
from dagster._serdes import ConfigurableClass, ConfigurableClassData

POSTGRES_URL_VARIABLE = "DAGSTER_POSTGRES_URL"


class EnvironmentStorage(DagsterStorage, ConfigurableClass):
    @classmethod
    def config_type(cls) -> dict:
        return {"sqlite_base_dir": str}

    @classmethod
    def from_config_value(cls, inst_data, config_value) -> DagsterStorage:
        url = os.environ.get(POSTGRES_URL_VARIABLE)
        if url:
            # SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3, which breaks Dagster's
            # event log (BRIEF §4): name the driver dagster-postgres is built for.
            if url.startswith(("postgresql://", "postgres://")):
                os.environ[POSTGRES_URL_VARIABLE] = "postgresql+psycopg2://" + url.split("://", 1)[1]
            data = ConfigurableClassData(
                "dagster_postgres", "DagsterPostgresStorage", yaml.safe_dump({"postgres_url": {"env": POSTGRES_URL_VARIABLE}})
            )
        else:
            data = ConfigurableClassData(
                "dagster._core.storage.sqlite_storage",
                "DagsterSqliteStorage",
                yaml.safe_dump({"base_dir": config_value["sqlite_base_dir"]}),
            )
        return data.rehydrate(as_type=DagsterStorage)

    @property
    def inst_data(self):  # never instantiated: from_config_value returns the real storage
        return None
