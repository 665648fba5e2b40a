"""faceit-etl's Python API: one function per verb, one result type, and async wrappers for asyncio code.

The command line is built on these functions, so a script, the bot's admin commands and `faceit-etl`
start the same Dagster jobs (`migrate_job`, `rollback_job`) on the same instance: their runs show in the
UI. Settings are `MigrationSettings`' fields as keyword arguments; what is not given comes from the
environment, as for every run.

What raises and what returns: a verb that could not start (a bad argument, a file that is not the
bot's JSON, an unreachable database before any run) raises a `MigrationError`; a verb that ran returns
a `MigrationResult`, `success=False` with its `errors` when it failed (a failed run wrote nothing).

`database_url` never enters run config (the UI shows run config) and this package never writes
`os.environ`: when it differs from the `DATABASE_URL` this process has, the verb runs in a child
process whose environment holds it, as every run's steps read it.
"""

from __future__ import annotations

import asyncio
import collections.abc
import contextlib
import fcntl
import functools
import inspect
import logging
import os
import pickle
import subprocess
import sys
import tempfile
import threading
import time
import types
import typing
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from faceit_etl.cli.interrupt import held_once_run
from faceit_etl.errors import (
    BOTH_NAMED,
    MigrationError,
    ProcessEnded,
    ResumeRefusedError,
    SettingsInvalid,
    SourceFileError,
    described,
    sanitise,
    wrapped,
)
from faceit_etl.postgres.database import describe, project_home, redact

log = logging.getLogger("faceit_etl.api")  # the CLI writes it to migration.log
INVOCATION_TAG = "faceit_etl/invocation"
TARGET_TAG = "faceit_etl/target"  # host:port/database/schema, never the password
STARTED_BY_TAG = "faceit_etl/started_by"
MAX_CONCURRENT = "max_concurrent"
# watch(instance, tags) wraps a run: the CLI's progress display finds the run by these tags.
Watch = Callable[[Any, dict[str, str]], AbstractContextManager]
# Executing a run configures process-global logging (Dagster's dictConfig): two runs executed at once
# in one process deadlock in it. Every run this process executes (migrate, resume, rollback) holds this
# lock: they take turns, as their loads do anyway under the target's advisory lock.
_RUN_IN_THIS_PROCESS = threading.Lock()


@dataclass
class Check:
    """One asset check's outcome in a run: the one type the API's result and the CLI's summary share.
    `dry_run`: the verdict a dry run took on the tables it rolled back, not a result of the check itself."""

    asset: str
    name: str
    passed: bool
    severity: str
    description: str | None = None
    dry_run: bool = False


@dataclass
class Reject:
    """One reason an entry was refused: its place in the file's list of users counted from 1 (as the
    validation report, the run page and the CLI count it: "entry 1" is the first), its user_id when known, the field,
    and the value as the file wrote it (JSON text, as the rejects table and the report show it: `1E400`, `"abc"`)."""

    entry: int
    user_id: int | None
    field: str | None
    reason: str
    value: str


class CheckedRun:
    """What a run's checks say, for the API's result and the CLI's summary alike."""

    checks: list[Check]

    @property
    def failed_checks(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]

    @property
    def validation_failed(self) -> bool:
        """A migration stopped by its rejects (more than max_rejects allows)."""
        return any(c.name == "no_rejected_entries" and not c.passed and c.severity == "ERROR" for c in self.checks)


@dataclass
class MigrationResult(CheckedRun):
    """What a verb did. `tables` holds, per table, the load's counts (inserted, updated, unchanged,
    kept_absent, kept_rejected, deleted); on a dry run what would have been written. `details` holds
    the verb's own facts: status' report, the rollback's restored tables, the backup's tables."""

    verb: str
    success: bool
    run_id: str | None = None
    backup_path: str | None = None
    dry_run: bool = False
    input_entries: int | None = None
    accepted_entries: int | None = None
    rejected_entries: int | None = None
    tables: dict[str, dict[str, int]] = field(default_factory=dict)
    rejects: list[Reject] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    reused_validation: bool = False  # the same file, time zone and code were judged by an earlier run
    ignored_fields: dict[str, int] = field(default_factory=dict)  # keys of entries no column takes -> entries
    ignored_top_level_keys: str | None = None  # the document's keys beside the users, comma-separated; None: none
    nothing_to_compare: str | None = None  # why the load compared no row, when it did not
    interrupted: bool = False  # Ctrl-C stopped a step
    refused: bool = False  # the request cannot be honoured as asked (a rollback refused); nothing changed
    report: str | None = None  # validate: the Markdown report
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def migrated_users(self) -> int:
        """Users of the file the tables hold after a committed run (inserted, updated or already there)."""
        users = self.tables.get("users")
        if not self.success or self.dry_run or not users:
            return 0
        return users["inserted"] + users["updated"] + users["unchanged"]

    @property
    def is_valid(self) -> bool:
        """validate: every entry was accepted."""
        return self.success

    def get_summary(self) -> dict[str, Any]:
        """The result as plain JSON values (datetimes as ISO text)."""
        summary = asdict(self)
        summary["migrated_users"] = self.migrated_users
        return _plain(summary)


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


# ---------------------------------------------------------------- arguments: every failure a MigrationError

LOG_LEVELS = ("CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG")
_WORDS = {str: "text", Path: "a path", bool: "True or False", int: "a whole number", float: "a number",
          type(None): "None"}


def _fits(value: Any, hint: Any) -> bool:
    """Whether `value` is of the annotated type as it is, without conversion: "false" is no bool, 1 no bool."""
    if hint is Any:
        return True
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return any(_fits(value, h) for h in typing.get_args(hint))
    if typing.get_origin(hint) is collections.abc.Callable:
        return callable(value)
    if hint in (bool, int):
        return type(value) is hint
    if hint is float:
        return type(value) in (int, float)
    if hint is Path:
        return isinstance(value, os.PathLike)
    return isinstance(value, hint)


def _expected(hint: Any) -> str:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_expected(h) for h in typing.get_args(hint))
    if typing.get_origin(hint) is collections.abc.Callable:
        return "a callable"
    return _WORDS.get(hint, getattr(hint, "__name__", str(hint)))


NAMES_NOTHING = "empty or only white space, which names nothing: give a value or leave it out"


def _blank(value: Any) -> bool:
    """A text or path argument that names nothing, refused as the CLI refuses its flags: `Path("")` is the
    current folder, `output_dir=" "` would make a folder named by a space, `database_url=""` read as unset
    would silently use another database."""
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    return isinstance(value, str) and not value.strip()


# Raised as they are: ours, and a closed pipe of the caller's own output (its progress callback), which
# is the caller's to handle (the CLI's never raises: it drops the line and exits 141 at its end), not a
# failure of the migration.
_PASSED_THROUGH = (MigrationError, BrokenPipeError)


def checked_arguments(function: Callable) -> Callable:
    """A verb of the API: a wrong argument (unknown, missing, of another type, never converted) raises
    SettingsInvalid naming it before anything runs, and any failure that is not already a MigrationError
    (Dagster's own, say) is raised as one, the original its `__cause__`: a caller catches MigrationError only.
    Every error raised, with its chain, is sanitised as the CLI's (errors.sanitise): no row, no password."""
    signature = inspect.signature(function)
    name = function.__qualname__.removesuffix(".__init__")

    def check(args: tuple, kwargs: dict) -> None:
        try:
            bound = signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise SettingsInvalid(f"{name}: {exc}") from None
        hints = typing.get_type_hints(function)
        for parameter, value in bound.arguments.items():
            kind = signature.parameters[parameter].kind
            if parameter == "self" or kind in (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL):
                continue
            hint = hints.get(parameter, Any)
            if not _fits(value, hint):
                raise SettingsInvalid(f"{name}: {parameter} {value!r}: expected {_expected(hint)}, "
                                      f"not {type(value).__name__} (never converted)")
            if _blank(value):
                raise SettingsInvalid(f"{name}: {parameter} {value!r}: {NAMES_NOTHING}")
        level = bound.arguments.get("log_level")
        if level is not None and level not in LOG_LEVELS:
            raise SettingsInvalid(f"{name}: log_level {level!r}: expected one of {', '.join(LOG_LEVELS)}")

    def as_ours(exc: Exception) -> MigrationError:
        import dagster as dg

        kind = SettingsInvalid if isinstance(exc, dg.DagsterInvalidConfigError) else MigrationError
        mine = kind(f"{name}: {described(exc)}")
        mine.__cause__ = exc
        return mine

    def sanitised(exc: Exception, kwargs: dict) -> Exception:
        """Every error a caller gets, ours or not, says what the CLI would (errors.sanitise): no rows, no password."""
        sanitise(exc, os.environ.get("DATABASE_URL"), kwargs.get("database_url"))
        return exc

    if inspect.iscoroutinefunction(function):
        @functools.wraps(function)
        async def verb_async(*args: Any, **kwargs: Any) -> Any:
            check(args, kwargs)
            try:
                return await function(*args, **kwargs)
            except _PASSED_THROUGH as exc:
                sanitised(exc, kwargs)
                raise
            except Exception as exc:
                raise as_ours(sanitised(exc, kwargs)) from exc
        return verb_async

    @functools.wraps(function)
    def verb(*args: Any, **kwargs: Any) -> Any:
        check(args, kwargs)
        try:
            return function(*args, **kwargs)
        except _PASSED_THROUGH as exc:
            sanitised(exc, kwargs)
            raise
        except Exception as exc:
            raise as_ours(sanitised(exc, kwargs)) from exc
    return verb


# ---------------------------------------------------------------- the instance and the settings


def instance_folder() -> Path:
    """The Dagster instance's folder: DAGSTER_HOME when set, else this folder when it holds a
    dagster.yaml (the project's, as `make ui` uses: its runs show there), else one under .faceit-etl/."""
    if os.environ.get("DAGSTER_HOME"):
        return Path(os.environ["DAGSTER_HOME"])
    if Path("dagster.yaml").is_file():
        return Path.cwd()
    home = project_home() / "dagster"
    home.mkdir(parents=True, exist_ok=True)
    return home


def open_instance(patience: float = 0.0):
    """The project's Dagster instance. Two verbs started at once on a fresh project would both create
    its SQLite storage and one would fail: the first opening is serialised by a file lock. Every opening
    first marks failed the runs whose faceit-etl process is gone (fail_abandoned_runs, given `patience`)."""
    import dagster as dg

    lock = project_home() / "instance.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with lock.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        instance = dg.DagsterInstance.from_config(str(instance_folder()))
        instance.get_runs(limit=1)  # storage is created here on first use
        fail_abandoned_runs(instance, patience)  # under the lock: two commands never mark one run twice
    return instance


UNFINISHED_RUN_STATUSES = ("NOT_STARTED", "STARTING", "STARTED", "CANCELING")


def fail_abandoned_runs(instance, patience: float = 0.0) -> None:
    """Mark failed each run a faceit-etl process started whose process is gone (`kill -9`, out of memory,
    a reboot): nothing else ever would, and a run left STARTED shows as running in the UI and holds the
    run queue's place. Runs the UI or the daemon launched carry no process tags and are left to the
    daemon. A run is failed only once nothing of it can write any more (`still_writing`): a launcher killed
    alone leaves its step process loading. A migration's `migration_logs` row is marked failed with it
    (when it is this target's and its session is gone), so both records tell one story. `patience`: seconds
    to wait for what still writes to end (the server drops a killed client's session a moment after)."""
    import dagster as dg

    from faceit_etl.launcher import abandoned_message, launcher_gone

    statuses = [dg.DagsterRunStatus[name] for name in UNFINISHED_RUN_STATUSES]
    gone = [run for run in instance.get_runs(dg.RunsFilter(statuses=statuses)) if launcher_gone(run.tags)]
    deadline = time.monotonic() + patience
    sessions = _run_sessions() if gone else {}
    while any(still_writing(instance, run, sessions) for run in gone) and time.monotonic() < deadline:
        time.sleep(0.1)
        sessions = _run_sessions()
    for run in gone:
        if not still_writing(instance, run, sessions):
            message = abandoned_message(run.tags, run.job_name, _committed(instance, run))
            instance.report_run_failed(run, message)
            log.error("run %s (%s) marked failed: %s", run.run_id, run.job_name, message)  # its killed CLI logged no outcome


def still_writing(instance, run, sessions: dict[str, list[int]]) -> list[str]:
    """What of a run whose launcher is gone can still write, in words: its step processes that live on (each
    STEP_START event names the process its step ran in) and the database sessions named after it (`sessions`,
    from `_run_sessions`). Until none is left, calling the run failed could be a lie."""
    import dagster as dg

    from faceit_etl.launcher import PID_TAG, alive_since
    from faceit_etl.postgres.database import run_session_name

    steps = []
    for record in instance.get_records_for_run(run.run_id, of_type=dg.DagsterEventType.STEP_START).records:
        entry = record.event_log_entry
        pid = entry.dagster_event.pid
        if pid is not None and str(pid) != run.tags.get(PID_TAG) and alive_since(pid, entry.timestamp):
            steps.append(f"step {entry.step_key} (pid {pid})")
    return steps + [f"database session (server pid {pid})" for pid in sessions.get(run_session_name(run.run_id), [])]


def _run_sessions() -> dict[str, list[int]]:
    """The target server's sessions named after runs (`run_sessions`); none when it cannot be reached: a
    session whose client process is gone cannot commit, so the processes are witness enough then."""
    import psycopg

    from faceit_etl.postgres.database import DatabaseUnavailable, InvalidConnectionString, run_sessions

    try:
        with target_database().get_connection(autocommit=True) as conn:
            return run_sessions(conn)
    except (DatabaseUnavailable, InvalidConnectionString, psycopg.Error):
        return {}


def _committed(instance, run) -> bool:
    """Whether the run's load (or restore) committed before its process ended. Its migration_logs row says
    so when the run is a migration of this target, which is also when it can be marked; else the run's
    own record, the materialization of the tables it reports right after its commit."""
    import dagster as dg

    from faceit_etl.postgres.database import DatabaseUnavailable, InvalidConnectionString

    if run.job_name == "migrate_job":
        try:
            schema = run.tags.get(TARGET_TAG, "").removeprefix(f"{target_database().database_label()}/")
        except (DatabaseUnavailable, InvalidConnectionString):
            schema = None
        if schema and schema != run.tags.get(TARGET_TAG):
            logged = _settled_log_row(schema, run.run_id)
            if logged is not None:
                return logged == "success"
    records = instance.get_records_for_run(run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION).records
    return any(r.event_log_entry.dagster_event.asset_key == dg.AssetKey("postgres_tables") for r in records)


def _settled_log_row(schema: str, run_id: str) -> str | None:
    """The status of a dead run's migration_logs row in this target's `schema` (`success`: its load
    committed), after marking it failed if it is still `running` and its session is gone; None when the
    run wrote no row or the database cannot be reached now."""
    import psycopg

    from faceit_etl.postgres import runlog
    from faceit_etl.postgres.database import DatabaseUnavailable, InvalidConnectionString

    try:
        with target_database().get_connection(autocommit=True) as conn:
            if runlog.run_status(conn, schema, run_id) == "running":
                runlog.fail_abandoned(conn, schema, run_id)
            return runlog.run_status(conn, schema, run_id)
    except (DatabaseUnavailable, InvalidConnectionString, psycopg.Error):
        return None


CHILD_SESSIONS_PATIENCE = 10.0  # seconds a dead child's sessions may take to end before its run is failed


def settle_runs(patience: float = 0.0) -> None:
    """For a verb that starts no run: it opens the instance all the same, which marks the runs of dead
    faceit-etl processes failed (fail_abandoned_runs, given `patience`), as every verb does."""
    with open_instance(patience):
        pass


def checked_source(path: str | Path) -> Path:
    """The data file, resolved; a missing file, a folder or a device is refused before anything runs."""
    source = Path(path)
    if not source.exists():
        raise SourceFileError(f"{source}: no such file")
    if source.is_dir():
        raise SourceFileError(f"{source}: is a folder, not the bot's data file")
    if not source.is_file():
        raise SourceFileError(f"{source}: not a regular file (a named pipe or device); give the data file itself")
    return source.resolve()


def resolved_settings(overrides: dict[str, Any]):
    """MigrationSettings from the given values (None: unset), the environment filling the rest, by the
    rule every run follows; a refused value raises SettingsInvalid naming it. `max_concurrent` is the
    executor's, not a field of them: it is judged here too (max_concurrent_of), as every setting is."""
    from faceit_etl.errors import InvalidDatabaseUrl
    from faceit_etl.postgres.database import InvalidConnectionString

    settings = checked_settings(overrides)
    try:
        target_database().check_database_url()
    except InvalidConnectionString as exc:
        raise InvalidDatabaseUrl(str(exc)) from None
    return settings


def checked_settings(overrides: dict[str, Any]):
    """MigrationSettings from the given values and the environment, each judged as a run judges it (and
    `max_concurrent`): what resolved_settings does but the target's URL, so a class's constructor refuses a
    bad setting when it is given, not when its verb is called."""
    from pydantic import ValidationError

    from faceit_etl.defs.resources import MigrationSettings, describe_invalid

    known = [*MigrationSettings.model_fields, MAX_CONCURRENT]
    unknown = sorted(set(overrides) - set(known))
    if unknown:
        raise SettingsInvalid(f"unknown setting {unknown[0]!r} (known: {', '.join(known)})")
    try:
        settings = MigrationSettings(**{k: v for k, v in overrides.items() if k != MAX_CONCURRENT})
    except ValidationError as exc:
        raise SettingsInvalid(describe_invalid(exc)) from None
    except ValueError as exc:
        raise SettingsInvalid(str(exc)) from None
    max_concurrent_of(overrides)
    return settings


def max_concurrent_of(overrides: dict[str, Any]) -> int:
    """Steps migrate_job's executor runs at once: the given value, else MIGRATION_MAX_CONCURRENT, else 1;
    read as strictly as every setting, a refusal naming it."""
    from faceit_etl.defs.resources import SettingsError, max_concurrent_from_environment, strict_max_concurrent

    given = overrides.get(MAX_CONCURRENT)
    try:
        return max_concurrent_from_environment() if given is None else strict_max_concurrent(given)
    except SettingsError as exc:
        raise SettingsInvalid(str(exc)) from None
    except ValueError as exc:
        raise SettingsInvalid(f"max_concurrent {given!r}: {exc}") from None


def target_database():
    """The target PostgreSQL, as a run in this process chooses it: DATABASE_URL, else the embedded server."""
    from faceit_etl.defs.resources import postgres_from_environment

    return postgres_from_environment()


def _run_config_settings(overrides: dict[str, Any]) -> dict[str, Any]:
    """The settings resource's run config: max_concurrent goes to the executor instead."""
    return {k: v for k, v in overrides.items() if k != MAX_CONCURRENT}


def _overrides(settings: dict[str, Any], source: Path | None = None) -> dict[str, Any]:
    """The run config's settings: those given (None is unset); the URL never goes there."""
    if "database_url" in settings:
        raise SettingsInvalid("give database_url as its own argument: it never goes into run config")
    if "source_path" in settings:
        raise SettingsInvalid("give the data file as the first argument, not as source_path")
    chosen = {k: str(v) if k == "max_rejects" and type(v) is int else v for k, v in settings.items() if v is not None}
    _as_given(chosen)
    if source is not None:
        chosen["source_path"] = str(source)
    return chosen


def _as_given(overrides: dict[str, Any]) -> None:
    """Each setting of its field's type as given, as run config takes it (Dagster would refuse "false" for
    a bool, "5" for a number, with an error of its own): refused here, naming it, never converted. An
    unknown name is left to resolved_settings, which names the known ones."""
    from faceit_etl.defs.resources import MigrationSettings

    for name, value in overrides.items():
        field_ = MigrationSettings.model_fields.get(name)
        hint = int if name == MAX_CONCURRENT else field_.annotation if field_ else Any
        if not _fits(value, hint):
            kinds = [h for h in typing.get_args(hint) if h is not type(None)] or [hint]
            raise SettingsInvalid(f"{name} {value!r}: expected {' or '.join(_expected(h) for h in kinds)}, "
                                  f"not {type(value).__name__} (never converted)")


def target_label(settings) -> str:
    """`host:port/database/schema`: how runs are tagged with their target, never the password."""
    return f"{target_database().database_label()}/{settings.target_schema}"


def _raising(call: Callable[[], Any]) -> Any:
    """Run a domain call, its known errors raised as the API's."""
    try:
        return call()
    except MigrationError:
        raise
    except Exception as exc:
        mine = wrapped(exc)
        if mine is None:
            raise
        raise mine from exc


# ---------------------------------------------------------------- in a child process, for another URL


URL_ARGUMENT = "the database_url argument"


def _elsewhere(database_url: str | None) -> bool:
    """Whether the call must run in a child process for `database_url`; a URL given that libpq cannot
    use is refused here, named as the argument it is (not as DATABASE_URL, which may hold another)."""
    _check_url_argument(database_url)
    return bool(database_url) and database_url != os.environ.get("DATABASE_URL")


def _check_url_argument(database_url: str | None) -> None:
    from faceit_etl.postgres.database import checked_url

    if database_url:
        _raising(lambda: checked_url(database_url, URL_ARGUMENT))


def _in_child(verb: str, database_url: str, watch: Watch | None, kwargs: dict[str, Any]) -> MigrationResult:
    """Run `verb` in a child process whose DATABASE_URL is `database_url` (this process's environment is
    left alone), watched from here: both use the same instance."""
    with tempfile.TemporaryDirectory(prefix="faceit-etl-call-") as folder:
        call, answer = Path(folder) / "call", Path(folder) / "answer"
        call.write_bytes(pickle.dumps((verb, kwargs)))
        code = f"from faceit_etl.api import _serve; _serve({folder!r})"
        env = {**os.environ, **({"DATABASE_URL": database_url} if database_url else {})}
        instance = open_instance() if watch else contextlib.nullcontext()
        with instance as opened, (watch(opened, kwargs["_start"].tags) if watch else contextlib.nullcontext()):
            child = subprocess.Popen([sys.executable, "-c", code], env=env, stdin=subprocess.DEVNULL)
            while child.poll() is None:
                try:
                    child.wait()
                except KeyboardInterrupt:  # Ctrl-C reached the child too: its run stops and it answers so
                    continue
        if not answer.exists():
            from faceit_etl.launcher import verb_process_ended

            # Its run, if it started one, is marked failed now, not by the next command: by a process whose
            # DATABASE_URL is the call's, where the run's sessions are (this one's may name another database).
            settle = f"from faceit_etl.api import settle_runs; settle_runs({CHILD_SESSIONS_PATIENCE})"
            subprocess.run([sys.executable, "-c", settle], env=env, stdin=subprocess.DEVNULL, check=False)
            raise ProcessEnded(verb_process_ended(verb, child.pid, child.returncode))
        kind, value = pickle.loads(answer.read_bytes())  # noqa: S301 (written by our own child, in a 0700 folder)
    if kind == "error":
        raise value
    return value


def _serve(folder: str) -> None:
    """The child's side of `_in_child`: the verb's result, or its error, pickled for the parent."""
    verb, kwargs = pickle.loads((Path(folder) / "call").read_bytes())  # noqa: S301 (written by our parent)
    try:
        answer = ("result", VERBS[verb](**kwargs))
    except KeyboardInterrupt:  # outside a run's steps (a step's Ctrl-C ends the run, which then answers)
        answer = ("error", KeyboardInterrupt())
    except MigrationError as exc:
        sanitise(exc, os.environ.get("DATABASE_URL"))
        answer = ("error", type(exc)(str(exc)))
    except Exception as exc:  # not one of ours: its words, never its object (it may not pickle)
        sanitise(exc, os.environ.get("DATABASE_URL"))
        answer = ("error", MigrationError(described(exc)))
    (Path(folder) / "answer").write_bytes(pickle.dumps(answer))


# ---------------------------------------------------------------- migrate


@checked_arguments
def migrate(
    path: str | Path,
    *,
    database_url: str | None = None,
    started_by: str = "api",
    log_level: str = "CRITICAL",
    watch: Watch | None = None,
    main_guarded: bool = False,
    **settings: Any,
) -> MigrationResult:
    """Run `migrate_job` on the file: back up, read, validate, map, load, verify. Returns the run's
    outcome; a run that failed (rejects over the limit, a failed check, a database error) has
    `success=False`, its `errors` saying why, and wrote nothing.

    Step processes (`max_concurrent` above 1) start by importing the caller's __main__ module: a script
    not guarded by `if __name__ == "__main__"` would run again in each. Such a run is started from a
    process of its own, whose __main__ is ours, unless the caller says its __main__ is guarded (the CLI's is)."""
    source = checked_source(path)
    start = _Start(started_by, log_level, watch, main_guarded)
    return _start_run("migrate", {"path": source}, start, settings, database_url,
                      lambda: max_concurrent_of(_overrides(settings, source)) > 1)


@dataclass
class _Start:
    """How migrate and resume start their run of migrate_job: who started it, its log level, the
    caller's watch, whether the caller's __main__ is guarded, and the tag a watcher finds the run by
    (execute_job picks the run id)."""

    started_by: str
    log_level: str
    watch: Watch | None
    main_guarded: bool
    tags: dict[str, str] = field(default_factory=lambda: {INVOCATION_TAG: uuid.uuid4().hex})
    chosen: Callable[[str, str], None] | None = None  # told the run a resume picked, and its target, before it runs

    def in_child(self) -> _Start:
        """As a child process gets it: watched from here; its __main__ is ours, so guarded."""
        return replace(self, watch=None, main_guarded=True, chosen=None)

    def run_tags(self, label: str) -> dict[str, str]:
        """Called in the process that runs it: its process tags are this one's (see launcher)."""
        from faceit_etl.launcher import launcher_tags

        return {STARTED_BY_TAG: self.started_by, **self.tags, TARGET_TAG: label, **launcher_tags()}

    def loggers(self) -> dict[str, Any]:
        return {"console": {"config": {"log_level": self.log_level}}}


def _start_run(verb: str, subject: dict[str, Any], start: _Start, settings: dict[str, Any], database_url: str | None,
               steps_in_processes: Callable[[], bool]) -> MigrationResult:
    """migrate's and resume's run: here, or from a child process when `database_url` names another
    database, or when step processes would import an unguarded caller's __main__ (see migrate)."""
    if _elsewhere(database_url) or (not start.main_guarded and steps_in_processes()):
        return _in_child(verb, database_url or os.environ.get("DATABASE_URL", ""), start.watch,
                         {**subject, "_start": start.in_child(), **settings})
    return VERBS[verb](**subject, _start=start, **settings)


def _migrate_here(source: Path, start: _Start, settings: dict[str, Any]) -> MigrationResult:
    import dagster as dg

    from faceit_etl.cli.summary import summarize
    from faceit_etl.definitions import get_migrate_job
    from faceit_etl.defs.io import forget_values
    from faceit_etl.defs.jobs import execution_config

    overrides = _overrides(settings, source)
    chosen = resolved_settings(overrides)
    run_config = {
        "resources": {"migration_settings": {"config": _run_config_settings(overrides)}},
        "execution": execution_config(max_concurrent_of(overrides)),
        "loggers": start.loggers(),
    }
    with open_instance() as instance, held_once_run() as run_ended:
        with _RUN_IN_THIS_PROCESS, start.watch(instance, start.tags) if start.watch else contextlib.nullcontext():
            executed = run_ended(dg.execute_job(dg.reconstructable(get_migrate_job), instance=instance,
                                                run_config=run_config, tags=start.run_tags(target_label(chosen))))
        forget_values(executed.run_id)
        summary = summarize(executed)
        return _run_result("migrate", summary, chosen, instance)


def _run_result(verb: str, summary, settings, instance) -> MigrationResult:
    """A migration run's result, from its summary; an interrupted run's log row is marked failed, and a
    step whose process died is said in words."""
    from faceit_etl.backups import run_folder

    folder = run_folder(settings.backup_dir, summary.run_id)
    result = MigrationResult(
        verb=verb,
        success=summary.success,
        run_id=summary.run_id,
        backup_path=str(folder) if folder.is_dir() else None,
        dry_run=summary.dry_run or bool(getattr(settings, "dry_run", False)),  # a dry run that failed says so too
        input_entries=summary.input_entries,
        accepted_entries=summary.accepted_entries,
        rejected_entries=summary.rejected_entries,
        tables=summary.load,
        rejects=_run_rejects(folder),
        checks=summary.checks,
        errors=[_safe(e) for e in summary.errors],
        reused_validation=summary.reused_validation,
        ignored_fields=summary.ignored_fields,
        ignored_top_level_keys=summary.ignored_top_level_keys,
        nothing_to_compare=summary.nothing_to_compare,
        interrupted=summary.interrupted,
    )
    if result.interrupted:
        _mark_interrupted(settings, result)
    if summary.ended_steps:
        _process_ended(settings, result, summary.ended_steps, instance)
    return result


def _process_ended(settings, result: MigrationResult, ended: dict[str, int | None], instance) -> None:
    """A step process died (killed, out of memory), of which Dagster says only ChildProcessCrashException:
    said in words, first among the errors, with what became of the target, which the run's migration_logs
    row tells (marked failed now if its session is gone, else by the next run). The same words go to the
    run's event log, where the UI shows them under its failure."""
    from faceit_etl.defs.io import target_of
    from faceit_etl.launcher import step_process_ended
    from faceit_etl.resumption import ancestors

    committed = _settled_log_row(settings.target_schema, result.run_id) == "success"
    run = instance.get_run_by_id(result.run_id)
    started = any(target_of(instance, r.run_id) is not None for r in ancestors(instance, run))
    said = [step_process_ended(step, code, committed=committed, dry_run=result.dry_run, load_started=started)
            for step, code in ended.items()]
    result.errors = said + result.errors
    for line in said:
        instance.report_engine_event(line, run)


def _run_rejects(folder: Path) -> list[Reject]:
    """Every entry the run rejected, with its reasons, as its validation step wrote them."""
    import json

    from faceit_etl.backups import REJECTS_FILE

    file = folder / REJECTS_FILE
    if not file.is_file():
        return []
    return _rejects([json.loads(line) for line in file.read_text(encoding="utf-8").splitlines() if line])


def _rejects(records: list[dict]) -> list[Reject]:
    from faceit_etl.validation.report import entry_number

    return [Reject(entry_number(r["source_index"]), r["user_id"], r["field"], r["reason"], r["value"]) for r in records]


def _mark_interrupted(settings, result: MigrationResult) -> None:
    """Ctrl-C stopped a step: its log row would stay `running` until the next run; mark it now."""
    from faceit_etl.postgres import ddl, runlog
    from faceit_etl.postgres.database import DatabaseUnavailable

    status, unmarked = None, None
    try:
        with target_database().get_connection(autocommit=True) as conn:
            if ddl.table_exists(conn, settings.target_schema, ddl.MIGRATION_LOGS):
                status = runlog.fail_interrupted(conn, settings.target_schema, result.run_id)
    except DatabaseUnavailable as exc:
        unmarked = f"the run's migration_logs row could not be marked failed: {exc}; the next run will do it"
    if status == "success":  # Ctrl-C came after the commit: the run is reported failed, but its load holds
        outcome = f"interrupted after run {result.run_id} committed its load; the tables hold it"
    else:
        outcome = "interrupted; nothing was written"
    result.details["interrupt"] = {"unmarked": unmarked, "outcome": outcome}
    result.errors += [line for line in (unmarked, outcome) if line]


def _safe(text: str) -> str:
    return redact(text, os.environ.get("DATABASE_URL"))


# ---------------------------------------------------------------- resume


@checked_arguments
def resume(
    run_id: str | None = None,
    *,
    database_url: str | None = None,
    started_by: str = "api",
    log_level: str = "CRITICAL",
    watch: Watch | None = None,
    main_guarded: bool = False,
    chosen: Callable[[str, str], None] | None = None,
    **settings: Any,
) -> MigrationResult:
    """Resume a failed migration (typically after the ALTER TABLE its failed load printed): re-execute
    `run_id`, else the latest failed migration of this target, from its failed step, with that run's own
    file and settings, reusing its backup, validation and mapping. Only `target_schema` may be given.

    As every verb: no run to resume (none failed, a later one of the target succeeded, `run_id` unknown or
    not failed) raises ResumeRefusedError before any run; a resume its load step refuses (the file changed,
    the reused step values are gone, the tables changed since the failed run's snapshot) returns
    `success=False`, `refused=True`, `errors` saying why. Nothing was written either way. `details`
    names the resumed run (`resumed_run`); `chosen(run_id, target)` is told it before it runs."""
    given = sorted(name for name, value in settings.items() if value is not None and name != "target_schema")
    if given:
        raise SettingsInvalid(f"resume takes no {', '.join(given)}: a resume reuses the failed run's file and "
                              "settings; start a new run to change them")
    # Whether steps run in processes depends on the failed run, found under the instance: _resume_here decides.
    return _start_run("resume", {"run_id": run_id}, _Start(started_by, log_level, watch, main_guarded, chosen=chosen),
                      settings, database_url, lambda: False)


def _resume_here(run_id: str | None, start: _Start, settings: dict[str, Any]) -> MigrationResult:
    import dagster as dg

    from faceit_etl import resumption
    from faceit_etl.cli.summary import summarize
    from faceit_etl.definitions import get_migrate_job
    from faceit_etl.defs.io import StepValuesGone, forget_values, target_of
    from faceit_etl.defs.jobs import executor_max_concurrent

    chosen_settings = resolved_settings(_overrides(settings))
    label = target_label(chosen_settings)
    with open_instance() as instance:
        try:
            failed = resumption.choose(
                instance, label, lambda run: target_of(instance, run), run_id,
                running=lambda run: _still_running(instance, run),
                rolled_back=lambda run: _settled_log_row(chosen_settings.target_schema, run) == "rolled_back",
            )
        except resumption.ResumeRefused as exc:
            raise ResumeRefusedError(str(exc)) from exc
        if start.chosen is not None:
            start.chosen(failed.run_id, label)
        # Its step processes import __main__ (see migrate): an unguarded caller's resume runs in a process of its own.
        if not start.main_guarded and executor_max_concurrent(failed.run_config) > 1:
            return _in_child("resume", os.environ.get("DATABASE_URL", ""), start.watch,
                             {"run_id": failed.run_id, "_start": start.in_child(), **settings})
        with held_once_run() as run_ended:
            with _RUN_IN_THIS_PROCESS, start.watch(instance, start.tags) if start.watch else contextlib.nullcontext():
                executed = run_ended(resumption.reexecute_failed_run(
                    dg.reconstructable(get_migrate_job), instance, failed,
                    tags=start.run_tags(label), run_config={"loggers": start.loggers()},
                ))
            forget_values(executed.run_id)
            summary = summarize(executed)
            ran = failed.run_config.get("resources", {}).get("migration_settings", {}).get("config", {})
            result = _run_result("resume", summary, resolved_settings(dict(ran)), instance)
    result.details["resumed_run"] = failed.run_id
    refusals = (resumption.ResumeRefused.__name__, StepValuesGone.__name__)
    for event in executed.get_step_failure_events():
        error = event.step_failure_data.error
        while error is not None and error.cls_name not in refusals:  # under Dagster's step and input errors
            error = error.cause
        if error is not None:
            result.refused = True
            result.errors = [_safe(error.message.split(": ", 1)[1].strip())]
    return result


# ---------------------------------------------------------------- validate


@checked_arguments
def validate(path: str | Path, *, database: bool = False, database_url: str | None = None,
             **settings: Any) -> MigrationResult:
    """Judge the file without loading it: `success` (`is_valid`) when every entry is accepted; `rejects`
    with their reasons; `report` the Markdown report. `database=True` adds the target's state."""
    source = checked_source(path)
    if database and _elsewhere(database_url):
        return _in_child("validate", database_url, None, {"path": source, "database": True, **settings})
    chosen = resolved_settings(_overrides(settings))
    settle_runs()
    return judge(_raising(lambda: _read(source)), str(path), chosen, database=database)


def _read(source: Path):
    from faceit_etl.source import read_source

    return read_source(source)


def judge(data, name: str, settings, *, database: bool = False) -> MigrationResult:
    """The validation verdict on a file already read (`read_source`)."""
    from faceit_etl.cli.report import validation_report
    from faceit_etl.mapping import map_frames
    from faceit_etl.validation import validate_entries
    from faceit_etl.validation.report import reject_line

    outcome = validate_entries(data, settings.source_timezone)
    mapped = map_frames(outcome.valid)
    target = _target_state(settings, mapped) if database else None
    records = outcome.reject_records()
    return MigrationResult(
        verb="validate",
        success=outcome.rejects.empty,
        input_entries=outcome.input_count,
        accepted_entries=len(outcome.valid),
        rejected_entries=outcome.rejected_count,
        ignored_fields=dict(outcome.ignored_fields),
        ignored_top_level_keys=", ".join(data.ignored_top_level_keys) or None,
        rejects=_rejects(records),
        errors=[reject_line(r["source_index"], r["user_id"], r["field"], r["reason"]) for r in records],
        report=validation_report(name, data.layout, outcome, mapped, target),
        details={"layout": data.layout, **({"target": target} if target is not None else {})},
    )


def _target_state(settings, mapped) -> dict:
    """The target's tables, rows and last migration. A database that cannot be reached (or refuses the
    password) raises DatabaseUnavailableError naming it: a report without the state asked for is no success."""
    from faceit_etl.postgres import state
    from faceit_etl.postgres.database import connect

    def read() -> dict:
        url = target_database().url_starting_embedded_server()
        with connect(url) as conn:
            schema = settings.target_schema
            last = state.latest_migrations(conn, schema, 1)
            return {
                "database": f"{describe(url)} (schema {schema})",
                "tables": ", ".join(
                    f"{name} {'absent' if rows is None else f'{rows} rows'}"
                    for name, rows in state.table_rows(conn, schema).items()
                ),
                "users of this file already in the table": state.users_already_present(
                    conn, schema, [int(i) for i in mapped.users["user_id"]]
                ),
                "last migration": migration_line(last[0]) if last else "none",
            }

    return _raising(read)


ENDED_RUN_STATUSES = ("FAILURE", "CANCELED")


def migration_line(m: dict) -> str:
    """One migration_logs row in words; a field the row leaves empty is said in words, never as None. A
    `running` row whose session is gone was left by a run that died mid-load: its load, one transaction,
    committed nothing. While that session lives the load may still commit, whatever its Dagster run
    (`run_status`) says: a step process outlives a launcher killed alone."""
    start = m["start_time"].isoformat(sep=" ", timespec="seconds") if m.get("start_time") else "no recorded time"
    if m["status"] == "running":
        if m.get("session_alive") is False:
            what = "its run ended without finishing (killed or lost); nothing was written"
        elif m.get("run_status") in ENDED_RUN_STATUSES:
            what = (f"its Dagster run says {m['run_status']}, but its session (server pid {m.get('session_pid')}) "
                    "is still open: its load may still commit")
        else:
            what = "still loading, nothing committed yet"
    elif m["processed_items"] is None and m["failed_items"] is None:
        what = "no counts recorded"
    else:
        what = f"{_counted(m['processed_items'])} loaded, {_counted(m['failed_items'])} rejected"
    run = f"run {m['run_id']}" if m["run_id"] else "no run recorded"
    return f"migration {m['id']} {m['status'] or 'without a status'} at {start}: {what} ({run})"


def _counted(count: int | None) -> str:
    return "an unrecorded number" if count is None else str(count)


# ---------------------------------------------------------------- status


@checked_arguments
def status(*, database_url: str | None = None, **settings: Any) -> MigrationResult:
    """Whether the database is reachable (host and database, never the password), the rows of each
    table, the last runs in migration_logs and the Dagster runs of this target, in `details`."""
    if _elsewhere(database_url):
        return _in_child("status", database_url, None, settings)
    from faceit_etl.postgres import state
    from faceit_etl.postgres.database import DatabaseUnavailable, connect

    chosen = resolved_settings(_overrides(settings))
    url = target_database().url_starting_embedded_server()
    report: dict = {"database": describe(url), "schema": chosen.target_schema}
    with open_instance() as instance:  # first: it marks the runs of dead processes failed, with their log rows
        try:
            with connect(url) as conn:
                report["reachable"] = True
                report["tables"] = state.table_rows(conn, chosen.target_schema)
                report["migrations"] = state.latest_migrations(conn, chosen.target_schema)
        except DatabaseUnavailable as exc:
            report |= {"reachable": False, "error": str(exc)}
        migrations = report.get("migrations", [])
        runs = target_runs(instance, chosen, [m["run_id"] for m in migrations if m["run_id"]])
        for m in migrations:
            run = instance.get_run_by_id(m["run_id"]) if m["status"] == "running" and m["run_id"] else None
            m["run_status"] = run.status.value if run else None
        report["dagster_runs"] = [
            {"run_id": r.run_id, "job": r.job_name, "status": r.status.value,
             "started_by": r.tags.get(STARTED_BY_TAG, "dagster")} | _orphaned(instance, r)
            for r in runs
        ]
    return MigrationResult(verb="status", success=report["reachable"],
                           errors=[report["error"]] if "error" in report else [], details=report)


def _still_running(instance, run) -> str:
    """What runs an unfinished run, in status' words: its faceit-etl process, or, that gone, what of it can
    still write (its step processes, its database sessions)."""
    from faceit_etl.launcher import HOST_TAG, PID_TAG, launcher_gone

    if launcher_gone(run.tags):
        writers = still_writing(instance, run, _run_sessions())
        if writers:
            return f"its faceit-etl process is gone, but {', '.join(writers)} of it can still write: it is still loading"
        return "its faceit-etl process is gone, and what it started has just ended"  # between open_instance and now
    if PID_TAG in run.tags:
        return (f"{run.status.value}: its faceit-etl process (pid {run.tags[PID_TAG]} on host "
                f"{run.tags.get(HOST_TAG)}) is running it")
    return f"{run.status.value} in Dagster"


def _orphaned(instance, run) -> dict[str, list[str]]:
    """`still_writing`: what still writes for an unfinished run whose launcher is gone (fail_abandoned_runs
    left it running); no such key for any other run."""
    from faceit_etl.launcher import launcher_gone

    if run.status.value not in UNFINISHED_RUN_STATUSES or not launcher_gone(run.tags):
        return {}
    writers = still_writing(instance, run, _run_sessions())
    return {"still_writing": writers} if writers else {}


def target_runs(instance, settings, logged_run_ids: list[str], limit: int = 5) -> list:
    """The Dagster runs that concern this database and schema: every run the API and the CLI start
    (migrations, resumes, rollbacks) is tagged with it; and the migrations its migration_logs names
    (runs started from the UI or the daemon)."""
    import dagster as dg

    records = instance.get_run_records(dg.RunsFilter(tags={TARGET_TAG: target_label(settings)}), limit=limit)
    if logged_run_ids:
        records += instance.get_run_records(dg.RunsFilter(job_name="migrate_job", run_ids=logged_run_ids))
    unique = {r.dagster_run.run_id: r for r in records}.values()
    return [r.dagster_run for r in sorted(unique, key=lambda r: r.create_timestamp, reverse=True)[:limit]]


# ---------------------------------------------------------------- rollback


@checked_arguments
def rollback_candidate(backup_path: str | Path | None = None, migration_id: str | None = None, *,
                       database_url: str | None = None, **settings: Any) -> dict[str, Any]:
    """The snapshot `rollback` would restore, without restoring it: the folder `rollback` takes (`folder`),
    its run and that run's migration_logs row (None when it has none), the folder whose snapshot is restored
    (`snapshot`), when it was taken and by which run's load (`snapshot_of_run`: a resumed migration's is its
    failed run's, in that run's folder; None for a manual backup, which no run took), and the latest migration in force (`latest_run_id`, for
    `rollback(expect_latest_run=...)`). For a question before a rollback: it names what will be restored."""
    _one_snapshot(backup_path, migration_id)
    if _elsewhere(database_url):
        result = _in_child("rollback_candidate", database_url, None,
                           {"backup_path": backup_path, "migration_id": migration_id, **settings})
        return result.details
    from faceit_etl.postgres import state
    from faceit_etl.backups import read_manifest
    from faceit_etl.restore import find_backup, latest_committed, refuse_not_in_force, snapshot_manifest, snapshot_of_run
    from faceit_etl.resumption import SNAPSHOT_FOLDER

    chosen = resolved_settings(_overrides(settings))

    def find() -> dict[str, Any]:
        with target_database().get_connection() as conn:
            folder = find_backup(conn, chosen.target_schema, chosen.backup_dir,
                                 backup_path=backup_path, migration_id=migration_id)
            manifest = snapshot_manifest(folder)  # a snapshot that is not whole is refused before the question
            refuse_not_in_force(conn, chosen.target_schema, folder)
            run_id = manifest.get("run_id", "?")
            logged = [m for m in state.latest_migrations(conn, chosen.target_schema, limit=100) if m["run_id"] == run_id]
            latest = latest_committed(conn, chosen.target_schema)
        target = manifest.get("target") or {}
        snapshot = Path(target.get(SNAPSHOT_FOLDER, folder))
        taken = manifest if snapshot == folder else read_manifest(snapshot)
        return {"folder": str(folder), "snapshot": str(snapshot), "taken_at": taken.get("taken_at", "?"),
                "snapshot_of_run": snapshot_of_run(manifest), "run_id": run_id,
                "migration": logged[0] if logged else None, "target": target_label(chosen),
                "latest_run_id": latest[1] if latest else None}

    return _raising(find)


def _one_snapshot(backup_path: str | Path | None, migration_id: str | None) -> None:
    if backup_path and migration_id:
        raise SettingsInvalid(BOTH_NAMED.format(backup_path="backup_path", migration_id="migration_id"))


def _candidate_result(**kwargs: Any) -> MigrationResult:
    return MigrationResult(verb="rollback_candidate", success=True, details=rollback_candidate(**kwargs))


@checked_arguments
def rollback(
    backup_path: str | Path | None = None,
    migration_id: str | None = None,
    *,
    discard_later_changes: bool = False,
    expect_latest_run: str | None = None,
    database_url: str | None = None,
    started_by: str = "api",
    log_level: str = "CRITICAL",
    **settings: Any,
) -> MigrationResult:
    """Run `rollback_job`: restore users and user_subscriptions to the snapshot in `backup_path` (a
    run's backup folder, as `MigrationResult.backup_path`), or the one before `migration_id`, else
    before the latest successful migration. `expect_latest_run` (as `rollback_candidate` gives it):
    refused unless that run is still the latest migration in force when the rollback holds the lock.
    A refused or failed rollback changed nothing: `success=False`, `refused` for a request that cannot
    be honoured as asked, `errors` saying why."""
    _one_snapshot(backup_path, migration_id)
    call = {"backup_path": backup_path, "migration_id": migration_id, "discard_later_changes": discard_later_changes,
            "expect_latest_run": expect_latest_run, "started_by": started_by, "log_level": log_level, **settings}
    if _elsewhere(database_url):
        return _in_child("rollback", database_url, None, call)
    from faceit_etl.cli.summary import step_causes
    from faceit_etl.definitions import load_definitions
    from faceit_etl.launcher import launcher_tags

    overrides = _overrides(settings)
    chosen = resolved_settings(overrides)
    op_config = {k: str(v) for k, v in (("backup_path", backup_path), ("migration_id", migration_id)) if v}
    op_config |= {"expect_latest_run": expect_latest_run} if expect_latest_run else {}
    op_config |= {"discard_later_changes": True} if discard_later_changes else {}
    with open_instance() as instance, held_once_run() as run_ended, _RUN_IN_THIS_PROCESS:
        executed = run_ended(load_definitions().resolve_job_def("rollback_job").execute_in_process(
            run_config={
                "ops": {"restore_tables": {"config": op_config}},
                "resources": {"migration_settings": {"config": _run_config_settings(overrides)}},
                "loggers": {"console": {"config": {"log_level": log_level}}},
            },
            instance=instance,
            raise_on_error=False,
            tags={STARTED_BY_TAG: started_by, TARGET_TAG: target_label(chosen), **launcher_tags()},
        ))
        # The step records the restore (its materialization) with its commit: a run Ctrl-C stopped after that has
        # restored; one stopped before its step began has no step failure to say why, and changed nothing.
        if not executed.get_asset_materialization_events():
            causes = step_causes(executed) or [("", "its run was stopped (Ctrl-C?) before its restore began")]
            return MigrationResult(verb="rollback", success=False, run_id=executed.run_id,
                                   refused=any(cls == "RollbackRefused" for cls, _ in causes),
                                   errors=[_safe(message) for _, message in causes])
        metadata = executed.get_asset_materialization_events()[0].event_specific_data.materialization.metadata
        return MigrationResult(
            verb="rollback",
            success=True,
            run_id=executed.run_id,
            backup_path=str(metadata["snapshot"].value),
            details={
                "rolled_back_run": metadata["rolled_back_run"].value,
                "restored_to": metadata["restored_to"].value,
                "restored": {
                    key.removeprefix("restored_").removesuffix("_rows"): {
                        "rows": entry.value, "sha256": metadata[key.removesuffix("_rows") + "_sha256"].value,
                    }
                    for key, entry in metadata.items() if key.startswith("restored_") and key.endswith("_rows")
                },
                "dropped_tables": [name for name in metadata["dropped_tables"].value.split(", ") if name != "none"],
                "origin_checked": metadata["origin_checked"].value,
            },
        )


# ---------------------------------------------------------------- backup


@checked_arguments
def backup(path: str | Path, *, output_dir: str | Path | None = None, database_url: str | None = None,
           **settings: Any) -> MigrationResult:
    """Back up the file and the tables without migrating, into a new folder (`backup_path`) under
    `output_dir` (default: backup_dir). Tables that cannot be reached: `success=False`, the file's copy kept."""
    source = checked_source(path)
    if _elsewhere(database_url):
        return _in_child("backup", database_url, None, {"path": source, "output_dir": output_dir, **settings})
    from faceit_etl.backups import backup_source, manual_backup_name, run_folder, update_manifest, whole_or_none
    from faceit_etl.postgres.database import DatabaseUnavailable
    from faceit_etl.postgres.snapshot import take_snapshot

    chosen = resolved_settings(_overrides(settings))
    settle_runs()
    root, name = output_dir or chosen.backup_dir, manual_backup_name()
    with whole_or_none(root, name) as folder:
        copied = _raising(lambda: backup_source(source, root, name, folder=folder))
        result = MigrationResult(verb="backup", success=True, backup_path=str(run_folder(root, name)),
                                 details={"source": str(copied.original), "sha256": copied.sha256})
        try:
            with target_database().get_connection() as conn:
                target = _raising(lambda: take_snapshot(conn, chosen.target_schema, folder))
        except DatabaseUnavailable as exc:  # the file's copy is whole, and kept
            result.success = False
            result.errors.append(f"tables not backed up: {exc}")
            return result
        update_manifest(folder, target=target)
    result.details["tables"] = {table: None if snap is None else snap["rows"] for table, snap in target["tables"].items()}
    return result


VERBS: dict[str, Callable[..., MigrationResult]] = {
    "migrate": lambda **kw: _migrate_here(kw.pop("path"), kw.pop("_start"), kw),
    "validate": validate,
    "status": status,
    "resume": lambda **kw: _resume_here(kw.pop("run_id"), kw.pop("_start"), kw),
    "rollback": rollback,
    "rollback_candidate": _candidate_result,
    "backup": backup,
}


# ---------------------------------------------------------------- async, the names of the replaced system


class DataMigration:
    """The replaced system's class for asyncio code: each call runs its verb in a worker thread
    (`asyncio.to_thread`), so the event loop keeps running during a whole migration.

    `validate_before=True` judges the file first, without a run, and starts none when any entry is
    rejected (even with `force` or `max_rejects`). The load is always verified cell by cell before it
    commits, so `validate_after` is always true; False is refused rather than silently ignored."""

    @checked_arguments
    def __init__(self, json_file_path: str | Path, batch_size: int | None = None, max_concurrent: int | None = None,
                 *, validate_before: bool = False, validate_after: bool = True, database_url: str | None = None,
                 **settings: Any):
        if validate_after is not True:
            raise SettingsInvalid("validate_after cannot be turned off: every load is verified before it commits")
        self.json_file_path = json_file_path
        self.validate_before = validate_before
        self.database_url = database_url
        self.settings = {"batch_size": batch_size, "max_concurrent": max_concurrent, **settings}
        # Judged now, as they are given (max_concurrent=0 was refused only by the first migrate()).
        checked_settings(_overrides(self.settings))
        _check_url_argument(database_url)

    @checked_arguments
    async def migrate(self, truncate_tables: bool | None = None, dry_run: bool | None = None,
                      **settings: Any) -> MigrationResult:
        if self.validate_before:
            judged = await self.validate()
            if not judged.is_valid:
                judged.errors.insert(0, f"validate_before: {judged.rejected_entries} of {judged.input_entries} "
                                        "entries rejected; no migration was started")
                return judged
        given = {**self.settings, "truncate": truncate_tables, "dry_run": dry_run, **settings}
        return await asyncio.to_thread(migrate, self.json_file_path, database_url=self.database_url, **given)

    @checked_arguments
    async def resume_migration(self, run_id: str | None = None, **options: Any) -> MigrationResult:
        """`resume` in a worker thread: the failed migration of this target (or `run_id`) from its failed step."""
        schema = {"target_schema": self.settings["target_schema"]} if self.settings.get("target_schema") else {}
        return await asyncio.to_thread(resume, run_id, database_url=self.database_url, **schema, **options)

    @checked_arguments
    async def rollback_migration(self, backup_path: str | Path | None = None, migration_id: str | None = None,
                                 **options: Any) -> MigrationResult:
        return await asyncio.to_thread(rollback, backup_path, migration_id, database_url=self.database_url,
                                       **self._database_settings(), **options)

    @checked_arguments
    async def validate(self) -> MigrationResult:
        return await asyncio.to_thread(validate, self.json_file_path,
                                       source_timezone=self.settings.get("source_timezone"))

    @checked_arguments
    async def status(self) -> MigrationResult:
        return await asyncio.to_thread(status, database_url=self.database_url, **self._database_settings())

    @checked_arguments
    async def backup(self, output_dir: str | Path | None = None) -> MigrationResult:
        return await asyncio.to_thread(backup, self.json_file_path, output_dir=output_dir,
                                       database_url=self.database_url, **self._database_settings())

    def _database_settings(self) -> dict[str, Any]:
        return {k: self.settings[k] for k in ("target_schema", "backup_dir") if self.settings.get(k) is not None}


class DataValidator:
    """The replaced system's validator: `await load_json_data()` reads the file (in a worker thread),
    then `validate_json_structure()` judges it (`.is_valid`, `.errors`, `.rejects`)."""

    @checked_arguments
    def __init__(self, json_file_path: str | Path, source_timezone: str | None = None):
        self.json_file_path = json_file_path
        self.source_timezone = source_timezone
        self.data = None
        checked_settings(_overrides({"source_timezone": source_timezone}))  # judged as given, not when used

    @checked_arguments
    async def load_json_data(self):
        source = checked_source(self.json_file_path)
        self.data = await asyncio.to_thread(_raising, lambda: _read(source))
        return self.data

    @checked_arguments
    def validate_json_structure(self) -> MigrationResult:
        if self.data is None:
            raise MigrationError("call `await load_json_data()` first: no file has been read")
        settings = resolved_settings(_overrides({"source_timezone": self.source_timezone}))
        return judge(self.data, str(self.json_file_path), settings)

    async def validate(self) -> MigrationResult:
        """Read and judge in one call, in a worker thread."""
        return await asyncio.to_thread(validate, self.json_file_path, source_timezone=self.source_timezone)
