"""The location's resources: `migration_settings`, every knob of a migration, and `postgres`, the target.

One precedence rule for every entry point (CLI verbs, `dagster job execute`, the UI, schedule and
sensor): CLI flag > `--config` file > run config > environment > default. The CLI turns its flags
and `--config` into run config; every field left unset (None) there is filled from the environment
*when the resource is built for a run*, so a run config that sets only `source_path` keeps the
environment's other values, and code imported long before the run cannot freeze stale ones.
The database URL is `postgres`'s alone: `DATABASE_URL`, read in the run's own process, never in run
config or metadata. How many steps run at once is the executor's (defs/jobs.py), not a setting here.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from fractions import Fraction
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import dagster as dg
import psycopg
from pydantic import ConfigDict, Field, ValidationError, field_validator, model_validator

from faceit_etl.postgres.database import URL_VARIABLE, checked_url, connect, describe, redact, resolve_database_url
from faceit_etl.postgres.ddl import checked_identifier
from faceit_etl.validation.limit import EXPECTED, RejectLimit, parse_max_rejects

# setting -> (environment variable, default)
ENVIRONMENT: dict[str, tuple[str, Any]] = {
    "source_path": ("DATA_FILE_PATH", "data.json"),
    "batch_size": ("MIGRATION_BATCH_SIZE", 10_000),
    "backup_dir": ("MIGRATION_BACKUP_DIR", "backups"),
    "backup_tables": ("MIGRATION_BACKUP_TABLES", True),
    "force": ("MIGRATION_FORCE", False),
    "max_rejects": ("MIGRATION_MAX_REJECTS", "0"),
    "truncate": ("MIGRATION_TRUNCATE", False),
    "prune": ("MIGRATION_PRUNE", False),
    "max_prune_fraction": ("MIGRATION_MAX_PRUNE_FRACTION", 0.1),
    "dry_run": ("MIGRATION_DRY_RUN", False),
    "source_timezone": ("MIGRATION_SOURCE_TIMEZONE", "UTC"),
    "target_schema": ("MIGRATION_TARGET_SCHEMA", "public"),
}
# Integers are bounded by what they are used as: a COPY chunk length and a process count, both C ints
# further down (pandas, the executor); a larger value would fail mid-run instead of here.
LARGEST_INT = 2**31 - 1
_BOOLEANS = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}
# Numbers as text: ASCII digits only, nothing around them (no sign, space, underscore, other script's
# digits, hex), as every source spells them; Python's int() and float() accept all of those.
_DIGITS = re.compile(r"[0-9]+")
_DECIMAL = re.compile(r"[0-9]+(?:\.[0-9]+)?")
EXPECTED_INT = "expected a whole number"
EXPECTED_FRACTION = "expected a fraction from 0 to 1, such as 0.1"
INEXACT_FRACTION = "more digits than can be kept exactly; give at most 15 significant digits"
EXPECTED_BOOL = "expected true or false"
INT_SETTINGS = ("batch_size",)
TEXT_SETTINGS = ("source_path", "backup_dir", "max_rejects", "source_timezone", "target_schema")
TABLES_ASSET = dg.AssetKey("postgres_tables")  # the load: a run that selects it is a migration
# An empty backup_dir would put every run's folder in the current directory, an empty source_path name it.
EMPTY = "empty or only white space, which names nothing: give a value, or leave it unset for its default"
MAX_CONCURRENT_VARIABLE = "MIGRATION_MAX_CONCURRENT"
BOOL_SETTINGS = ("backup_tables", "force", "truncate", "prune", "dry_run")


class SettingsError(ValueError):
    """A setting's value cannot be used; the message names the setting and where it came from."""


HOLDS_A_PASSWORD = (
    "holds a password (a URL with credentials, a password keyword or DATABASE_URL's password), so it is "
    "not quoted; the database URL belongs in DATABASE_URL only"
)


def refuse_a_secret(where: str, value: Any) -> None:
    """A setting is quoted in errors, logs, run metadata and migration_logs; one whose value carries a
    password (`{env: DATABASE_URL}` given as a path or a schema) is refused by name, never quoted."""
    if isinstance(value, str) and redact(value, os.environ.get(URL_VARIABLE)) != value:
        raise SettingsError(f"{where} {HOLDS_A_PASSWORD}")


def refuse_loose_environment(config: Any, where: str, text_settings: tuple[str, ...] = TEXT_SETTINGS) -> None:
    """Dagster reads `{env: NAME}` given for a boolean as true unless the variable says false, 0 or none
    ("no" and "maybe" are true), and for a number with Python's int() ("٥" is 5): looser than faceit-etl
    reads every other source. Given for a setting that is not text, it is refused, naming the setting's
    own variable, which is read strictly."""
    for name, value in (config if isinstance(config, dict) else {}).items():
        if isinstance(value, dict) and "env" in value and name not in text_settings:
            own = ENVIRONMENT.get(name, (None,))[0]
            instead = f"set {own} (read strictly) or write the value" if own else "write the value"
            raise SettingsError(
                f"{where}.{name}: {{env: {value['env']}}} is refused for a setting that is not text, since Dagster "
                f'reads such a variable more loosely than faceit-etl ("no" as true); {instead}'
            )


def strict_int(value: Any) -> int:
    """A whole number: an int (a bool is no number) or its ASCII digits; ValueError otherwise."""
    if type(value) is int:
        return value
    if isinstance(value, str) and _DIGITS.fullmatch(value):
        return int(value)
    raise ValueError(EXPECTED_INT)


def strict_fraction(value: Any) -> float:
    """A fraction from 0 to 1: a number (not a bool) or a plain decimal in ASCII digits.

    The prune guard reads the float back as its shortest decimal (`0.1` is exactly 1/10), so a
    decimal with more digits than a float keeps (`0.39999999999999999999`, which would become 0.4)
    is refused: it would allow more than was written."""
    if type(value) in (int, float):
        number = float(value)
    elif isinstance(value, str) and _DECIMAL.fullmatch(value):
        number = float(value)
        if Fraction(value) != Fraction(repr(number)):
            raise ValueError(INEXACT_FRACTION)
    else:
        raise ValueError(EXPECTED_FRACTION)
    if not 0 <= number <= 1:  # NaN too
        raise ValueError(EXPECTED_FRACTION)
    return number


def strict_bool(value: Any) -> bool:
    """True or false: a bool, or one of the words for it (any case); a number is refused."""
    if type(value) is bool:
        return value
    if isinstance(value, str) and value.lower() in _BOOLEANS:
        return _BOOLEANS[value.lower()]
    raise ValueError(EXPECTED_BOOL)


def strict_max_concurrent(value: Any) -> int:
    """Steps the executor runs at once: a whole number (strict, as every setting) from 1 to LARGEST_INT."""
    count = strict_int(value)
    if not 1 <= count <= LARGEST_INT:
        raise ValueError(f"expected a whole number from 1 to {LARGEST_INT}")
    return count


def max_concurrent_from_environment() -> int:
    """MIGRATION_MAX_CONCURRENT, else 1 (every step in one process): the migration executor's default,
    read in the process that builds the job. A value that means nothing is refused, naming the variable."""
    raw = os.environ.get(MAX_CONCURRENT_VARIABLE, "")
    if not raw:
        return 1
    refuse_a_secret(MAX_CONCURRENT_VARIABLE, raw)
    try:
        return strict_max_concurrent(raw)
    except ValueError as exc:
        raise SettingsError(f"{MAX_CONCURRENT_VARIABLE}={raw!r}: {exc}") from None


def environment_value(name: str) -> Any:
    """The environment's value for a setting, typed, or None when the variable is unset or empty.
    A value that means nothing (`MIGRATION_FORCE=maybe`) is refused, never read as false."""
    variable, default = ENVIRONMENT[name]
    raw = os.environ.get(variable, "")
    if not raw:
        return None
    refuse_a_secret(variable, raw)
    if not raw.strip():
        raise SettingsError(f"{variable}={raw!r}: {EMPTY}")
    parse = {bool: strict_bool, int: strict_int, float: strict_fraction}.get(type(default))
    if parse is not None:
        try:
            return parse(raw)
        except ValueError as exc:
            raise SettingsError(f"{variable}={raw!r}: {exc}") from None
    if name == "max_rejects":
        try:
            parse_max_rejects(raw)
        except ValueError as exc:
            raise SettingsError(f"{variable}={raw!r}: {exc}") from None
    return raw


def environment_or_default(name: str) -> Any:
    value = environment_value(name)
    return ENVIRONMENT[name][1] if value is None else value


def resolve(given: dict[str, Any]) -> dict[str, Any]:
    """Every setting: the given value when set (not None), else the environment's, else the default."""
    return {
        name: environment_or_default(name) if given.get(name) is None else given[name] for name in ENVIRONMENT
    }


def describe_invalid(error: ValidationError) -> str:
    """One plain line per refused setting: which setting, the value, what is wrong (no pydantic
    error codes or web links)."""
    lines = []
    for problem in error.errors(include_url=False):
        message = problem["msg"].removeprefix("Value error, ")
        if problem["loc"]:
            setting = ".".join(str(part) for part in problem["loc"])
            message = f"{setting} {problem['input']!r}: {message[:1].lower()}{message[1:]}"
        lines.append(redact(message, os.environ.get(URL_VARIABLE)))
    return "; ".join(lines)


class PostgresResource(dg.ConfigurableResource):
    """The target PostgreSQL: the URL in DATABASE_URL, read in the process that uses it; without it, an
    embedded PostgreSQL under .faceit-etl/. No config field holds a URL: run config, which the instance
    stores and the UI shows, cannot carry one (a `database_url` there is an unknown field, refused before
    the run is created, by an error that shows the one field there is). The URL may hold a password, so no
    error quotes it."""

    url_from_environment_variable: Literal["DATABASE_URL"] = Field(
        default=URL_VARIABLE,
        description="The URL of the target is read from this environment variable only, never from config.",
    )

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        """A URL libpq cannot use fails the run as the resource is built, before any step."""
        self.check_database_url()

    def url_starting_embedded_server(self) -> str:
        """The target's URL; with none configured this starts (or reuses) the embedded server."""
        return resolve_database_url(self.configured_url())

    @contextmanager
    def get_connection(self, *, autocommit: bool = False) -> Iterator[psycopg.Connection]:
        """A connection to the target in the tool's session settings, after a few bounded retries; a failure
        names host and database only. Committed when the block ends normally, rolled back otherwise."""
        with connect(self.url_starting_embedded_server(), autocommit=autocommit) as conn:
            yield conn

    def database_label(self) -> str:
        """`host:port/database` of the target: what may be shown, never the password."""
        return describe(self.url_starting_embedded_server())

    def check_database_url(self) -> None:
        """Refuse a configured URL libpq cannot parse or whose options it refuses, in words that quote no
        password. Not a validator: pydantic's error would carry the value, password and all."""
        if self.configured_url():
            checked_url(self.configured_url())

    def safe_summary(self) -> dict:
        """What a run may record about its target: whether it is the embedded server, never the URL."""
        return {"embedded_database": not self.configured_url()}

    def configured_url(self) -> str:
        """DATABASE_URL as this process has it now, or "" for the embedded server."""
        return os.environ.get(self.url_from_environment_variable, "")


def postgres_from_environment() -> PostgresResource:
    """The target of this process: DATABASE_URL, else the embedded server."""
    return PostgresResource()


def known_time_zone(name: str) -> bool:
    """Whether `name` is a time zone of the IANA database. ZoneInfo refuses other names in three ways:
    ZoneInfoNotFoundError, ValueError (a path, a NUL, a file that holds no zone) and OSError (a folder of
    zones such as `Europe`, a name too long for a file)."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return False
    return True


class MigrationSettings(dg.ConfigurableResource):
    """Validated once, when built (for a run: in its own process, at its start); an error never
    quotes the values given."""

    model_config = ConfigDict(hide_input_in_errors=True)
    # Every field defaults to None ("not set here"): a concrete default in the config schema would be
    # filled in by Dagster and could not be told apart from a value someone chose.
    source_path: str | None = Field(default=None, description="The bot's JSON data file. Unset: DATA_FILE_PATH, else data.json.")
    batch_size: int | None = Field(default=None, gt=0, le=LARGEST_INT, description="Rows per COPY chunk. Unset: MIGRATION_BATCH_SIZE, else 10000.")
    backup_dir: str | None = Field(default=None, description="Where each run's backup folder is written. Unset: MIGRATION_BACKUP_DIR, else backups.")
    backup_tables: bool | None = Field(
        default=None,
        description="Snapshot the target tables before the load, so the run can be rolled back. Unset: MIGRATION_BACKUP_TABLES, else true.",
    )
    force: bool | None = Field(default=None, description="Load the valid entries even when some are rejected. Unset: MIGRATION_FORCE, else false.")
    max_rejects: str | None = Field(
        default=None,
        description=(
            "Rejected entries a run may have and still load the rest: a count (\"5\") or a percentage of the "
            "entries read (\"1%\"); more fails the run before anything is written. `force` lifts it. "
            "Unset: MIGRATION_MAX_REJECTS, else 0."
        ),
    )
    truncate: bool | None = Field(default=None, description="Replace the tables' content instead of upserting. Unset: MIGRATION_TRUNCATE, else false.")
    prune: bool | None = Field(
        default=None,
        description="Delete the users the file does not have (their subscriptions too); they are kept otherwise. Unset: MIGRATION_PRUNE, else false.",
    )
    max_prune_fraction: float | None = Field(
        default=None, ge=0, le=1, allow_inf_nan=False,
        description="prune refuses, before writing, to delete more than this fraction of the users. Unset: MIGRATION_MAX_PRUNE_FRACTION, else 0.1.",
    )
    dry_run: bool | None = Field(default=None, description="Do everything, then roll the load back. Unset: MIGRATION_DRY_RUN, else false.")
    source_timezone: str | None = Field(default=None, description="Time zone of the file's naive timestamps. Unset: MIGRATION_SOURCE_TIMEZONE, else UTC.")
    target_schema: str | None = Field(default=None, description="PostgreSQL schema of the bot's tables. Unset: MIGRATION_TARGET_SCHEMA, else public.")

    @model_validator(mode="before")
    @classmethod
    def _fill_from_environment(cls, data: Any) -> Any:
        """Runs whenever the resource is built, so in the run's own process at run time; before any field's
        own validator, which may quote the value."""
        if isinstance(data, dict):
            for name, value in data.items():
                refuse_a_secret(name, value)
            data = {**data, **resolve(data)}
        return data

    @field_validator(*INT_SETTINGS, mode="before")
    @classmethod
    def _strict_int(cls, value: Any) -> Any:
        return value if value is None else strict_int(value)

    @field_validator("max_prune_fraction", mode="before")
    @classmethod
    def _strict_fraction(cls, value: Any) -> Any:
        return value if value is None else strict_fraction(value)

    @field_validator(*BOOL_SETTINGS, mode="before")
    @classmethod
    def _strict_bool(cls, value: Any) -> Any:
        return value if value is None else strict_bool(value)

    @field_validator("max_rejects", mode="before")
    @classmethod
    def _whole_number_as_text(cls, value: Any) -> Any:
        """`max_rejects: 5` in a YAML file is a number: the same limit as "5". A bool is no count."""
        if type(value) is bool:
            raise ValueError(EXPECTED)
        return str(value) if type(value) is int else value

    @field_validator("max_rejects")
    @classmethod
    def _a_limit(cls, value: str | None) -> str | None:
        return value if value is None else parse_max_rejects(value).text

    @field_validator("target_schema")
    @classmethod
    def _a_schema(cls, value: str | None) -> str | None:
        return value if value is None else checked_identifier(value)

    @field_validator("source_timezone")
    @classmethod
    def _a_time_zone(cls, value: str | None) -> str | None:
        if value is not None and not known_time_zone(value):
            raise SettingsError("not a known time zone")
        return value

    @field_validator(*TEXT_SETTINGS, mode="before")
    @classmethod
    def _not_empty(cls, value: Any) -> Any:
        """Defined last, so it runs before the fields' other validators (pydantic runs `before` ones last first)."""
        if isinstance(value, str) and not value.strip():
            raise SettingsError(EMPTY)
        return value

    @model_validator(mode="after")
    def _one_way_to_remove_rows(self) -> MigrationSettings:
        """truncate deletes every row the file lacks: prune's guard would guard nothing."""
        if self.truncate and self.prune:
            raise SettingsError(
                "truncate and prune cannot be combined: truncate replaces every row, prune deletes only the users "
                "the file lacks, within max_prune_fraction; choose one"
            )
        return self

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        """The run's config as given (`{env: NAME}` unresolved), which the fields no longer show."""
        given = ((context.dagster_run.run_config if context.dagster_run else None) or {}).get("resources") or {}
        refuse_loose_environment((given.get("migration_settings") or {}).get("config"), "migration_settings")

    def reject_limit(self) -> RejectLimit | None:
        """The reject limit of a run; None with `force`, which loads whatever was rejected."""
        return None if self.force else parse_max_rejects(self.max_rejects)

    def safe_summary(self) -> dict:
        """The settings a run used, as they may be shown or stored (none of them is a secret)."""
        return self.model_dump()


def tag_run_with_target(context: dg.OpExecutionContext, settings: MigrationSettings, postgres: PostgresResource) -> None:
    """Tag the run with its target (`host:port/database/schema`, never the password): `status` lists a
    target's runs by this tag. The CLI and the API tag the runs they start; a run launched from the UI, the
    launchpad, a sensor or `dagster job execute` has no tag until a step that knows the target adds it. Each
    step of the migration does, from the first, so a run stopped before its load (by rejects, say) or a dry
    run is listed too; a run that selects neither the tables nor the whole job (a preview of the file) is no migration.
    A dry run is tagged so too (`DRY_RUN_TAG`), however it was set: `migrate --resume`'s default passes over it
    alike whether run config or MIGRATION_DRY_RUN made it one."""
    from faceit_etl.api import TARGET_TAG
    from faceit_etl.resumption import DRY_RUN_TAG

    selection = context.run.asset_selection  # None or empty: the whole job (execute_in_process leaves it empty)
    if selection and TABLES_ASSET not in selection:
        return
    label = f"{postgres.database_label()}/{settings.target_schema}"
    tags = {TARGET_TAG: label} | ({DRY_RUN_TAG: "true"} if settings.dry_run else {})
    if any(context.run.tags.get(key) != value for key, value in tags.items()):
        context.instance.add_run_tags(context.run_id, tags)


@dg.definitions
def run_environment() -> dg.Definitions:
    """What every run is given. Nothing is set on the settings here: each run fills every setting it is
    not given from the environment of its own process. The target is chosen here, and every run's
    process loads the definitions itself, so it is chosen from the run's own environment. One process
    for all steps, as migrate_job runs by default, is the executor of "Materialize all" in the UI."""
    from faceit_etl.defs.io import RunScopedPickleIOManager

    return dg.Definitions(
        resources={
            "migration_settings": MigrationSettings(),
            "postgres": postgres_from_environment(),
            "io_manager": RunScopedPickleIOManager(),
        },
        executor=dg.in_process_executor,
    )
