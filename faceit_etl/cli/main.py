"""`faceit-etl`: the replaced system's verbs, running the Dagster jobs on the persistent instance.

Each verb parses its flags, calls the Python API's function of the same name (faceit_etl.api) and
prints its result, so the command line and the API cannot drift apart. Runs started here appear in
the Dagster UI next to the ones started there. Exit codes: 0 success,
1 the migration, the rollback or a blocking check failed, 2 a usage error, failed validation or a
refused rollback, 130 interrupted (Ctrl-C), 141 the reader of stdout went away (`| head`).
Everything said here also goes to `migration.log`, passwords removed, each line naming its process
and, once it is known, its run.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import difflib
import json
import logging
import math
import os
import re
import shlex
import sys
import threading
from fractions import Fraction
from pathlib import Path
from typing import NoReturn

import yaml

from faceit_etl import errors
from faceit_etl.cli.interrupt import (
    INTERRUPTED, discard_closed_standard_streams, interrupts_held, interrupts_raised, release_stderr,
)
from faceit_etl.postgres.database import InvalidConnectionString, checked_url, redact, server_error_text, traceback_text
from faceit_etl.validation.limit import EXPECTED as MAX_REJECTS_EXPECTED

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130  # 130: the shell's code for SIGINT
EXIT_BROKEN_PIPE = 141  # the shell's code for a SIGPIPE death: the reader (`| head`) stopped reading
# Every line of a command is logged at most at the level of its exit status: a refusal (exit 2) is a WARNING.
REFUSED = logging.WARNING
OUTCOMES = {EXIT_OK: ("succeeded", logging.INFO), EXIT_USAGE: ("refused", REFUSED),
            EXIT_INTERRUPTED: ("interrupted", logging.ERROR)}
LOG_FILE = "migration.log"
BEFORE_ANY_RUN = "faceit-etl: interrupted; the tables were left as they were"  # a KeyboardInterrupt escapes no run
SETTING_FLAGS = ("batch_size", "max_concurrent", "truncate", "prune", "max_prune_fraction", "force", "max_rejects",
                 "dry_run", "source_timezone", "target_schema")
log = logging.getLogger("faceit_etl.cli")
# migration.log takes the records of the whole package (the API's too), through this logger's handler.
package_log = logging.getLogger("faceit_etl")


FILE_VARIABLE = "DATA_FILE_PATH"
FILE_DEFAULT = f"default: source_path in --config, else {FILE_VARIABLE}"


class UsageError(Exception):
    """Wrong arguments or an unusable file: exit 2."""


class ArgumentsRefused(SystemExit):
    """argparse's usage error (exit 2, as argparse exits), carrying its line for migration.log."""

    def __init__(self, line: str) -> None:
        super().__init__(EXIT_USAGE)
        self.line = line


class Parser(argparse.ArgumentParser):
    """argparse, whose usage errors reach migration.log (see _main) and never quote a password (an
    unknown argument can be a URL)."""

    def error(self, message: str) -> NoReturn:
        line = f"{self.prog}: error: {redact(message)}"
        self.print_usage(sys.stderr)
        print(line, file=sys.stderr)
        raise ArgumentsRefused(line)


def source_file(args: argparse.Namespace, verb: str, alternative: str = "") -> Path:
    """The bot's data file of a verb that reads one, by the rule every setting follows: its JSON_FILE
    argument, else `source_path` in --config, else DATA_FILE_PATH; with none, a usage error naming all
    three. A file not given as the argument is said, with where it came from."""
    if args.json_file is not None:
        return args.json_file
    given = read_config(args.config).get("source_path") if args.config else None
    where = f"source_path in --config {args.config}"
    if given is None:
        given, where = os.environ.get(FILE_VARIABLE), FILE_VARIABLE
    if given is None:
        raise UsageError(f"{verb} needs the bot's data file: give it as JSON_FILE, as source_path in --config, "
                         f"or in {FILE_VARIABLE}{alternative}")
    if not isinstance(given, str) or not given.strip():
        raise UsageError(f"{where}: {given!r} names no file: give the path of the bot's data file")
    say(f"{verb}: the bot's data file {given} (from {where})", args=args)
    return Path(given)


def positive_int(text: str) -> int:
    """ASCII digits only, as every source of a setting: int() would also take ' 3', '1_0' or '３'."""
    from faceit_etl.defs.resources import strict_int

    try:
        value = strict_int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return value


def fraction(text: str) -> float:
    from faceit_etl.defs.resources import strict_fraction

    try:
        return strict_fraction(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{exc}, got {text!r}") from None


def named(text: str) -> str:
    """A value that names something: blank, it would name the current folder (`Path("")` is `.`) or nothing."""
    if not text.strip():
        raise argparse.ArgumentTypeError("empty or only white space, which names nothing: give a value or leave it out")
    return text


def named_path(text: str) -> Path:
    return Path(named(text))


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="faceit-etl", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="also show Dagster's own log lines")
    parser.add_argument("-q", "--quiet", action="store_true", help="print only the outcome")
    parser.add_argument("--config", type=named_path, help="YAML file of migration settings (keys as in run_config.example.yaml)")
    parser.add_argument("--database-url", type=named, help="target PostgreSQL URL (default: DATABASE_URL, else the embedded one)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    migrate = commands.add_parser("migrate", help="migrate a bot data file into PostgreSQL")
    migrate.add_argument("json_file", type=named_path, nargs="?", help=f"the bot's data file (not with --resume; {FILE_DEFAULT})")
    migrate.add_argument("--resume", nargs="?", const="", metavar="RUN_ID",
                         help="re-execute a failed migration from its failed step (default: the latest of this target)")
    migrate.add_argument("--batch-size", type=positive_int, help="rows per COPY chunk (default 10000)")
    migrate.add_argument("--max-concurrent", type=positive_int, help="steps run at once (default 1: one process)")
    migrate.add_argument("--dry-run", action="store_true", default=None, help="load and verify, then roll back")
    migrate.add_argument("--no-backup", dest="backup_tables", action="store_false", default=None,
                         help="skip the snapshot of the tables (the run cannot be rolled back)")
    migrate.add_argument("--backup", dest="backup_tables", action="store_true",
                         help="snapshot the tables before loading (the default)")
    migrate.add_argument("--truncate", action="store_true", default=None, help="replace the tables' content")
    migrate.add_argument("--prune", action="store_true", default=None,
                         help="delete the users the file does not have (default: keep them)")
    migrate.add_argument("--max-prune-fraction", type=fraction,
                         help="--prune refuses to delete more than this fraction of the users (default 0.1)")
    migrate.add_argument("--force", action="store_true", default=None, help="load the valid entries despite rejects")
    migrate.add_argument("--max-rejects", metavar="N|P%",
                         help="rejects allowed before the run fails: a count or a percentage of the entries read (default 0)")
    migrate.add_argument("--source-timezone", help="time zone of the file's naive timestamps (default UTC)")

    validate = commands.add_parser("validate", help="check a data file without loading it")
    validate.add_argument("json_file", type=named_path, nargs="?", help=f"the bot's data file ({FILE_DEFAULT})")
    validate.add_argument("--database", action="store_true", help="add the target database's state")
    validate.add_argument("--report", type=named_path, help="write the Markdown report here (0600)")
    validate.add_argument("--source-timezone", help="time zone of the file's naive timestamps (default UTC)")

    status = commands.add_parser("status", help="database, tables and the last runs")
    status.add_argument("--json", action="store_true", help="print JSON")

    rollback = commands.add_parser("rollback", help="restore the tables from the snapshot taken before a migration")
    rollback.add_argument("--backup-path", type=named_path, help="a run's backup folder (default: see --migration-id)")
    rollback.add_argument("--migration-id", type=named, help="migration_logs id or run id (default: the latest successful one)")
    rollback.add_argument("--confirm", action="store_true", help="do not ask")
    rollback.add_argument("--discard-later-changes", action="store_true",
                          help="restore even if the tables changed since the latest migration (those changes are lost)")

    backup = commands.add_parser("backup", help="back up a data file and the tables, without migrating")
    backup.add_argument("json_file", type=named_path, nargs="?", help=f"the bot's data file ({FILE_DEFAULT})")
    backup.add_argument("--output-dir", type=named_path, help="where to put the backup folder (default: backup_dir)")
    for command in commands.choices.values():
        command.add_argument("--target-schema", help="schema of the bot's tables (default: MIGRATION_TARGET_SCHEMA, else public)")
    return parser


def cli_settings(args: argparse.Namespace) -> dict:
    """The settings of --config and the flags, for the API (which puts them in run config): flags over
    --config. The database URL is not among them: it is in DATABASE_URL by now (handed_over_database_url)."""
    config: dict = read_config(args.config) if args.config else {}
    if "max_rejects" in config:
        config["max_rejects"] = yaml_max_rejects(config["max_rejects"], args.config)
    config.pop("database_url", None)
    config.pop("source_path", None)  # a verb's file is its argument (source_file), never a setting of the API's
    for name in (*SETTING_FLAGS, "backup_tables"):
        value = getattr(args, name, None)
        if value is not None:
            config[name] = value
    return config


def yaml_max_rejects(value, path: Path) -> object:
    """`max_rejects` of a --config file as run config holds it (text). YAML reads `5` and `2.0` as
    numbers: a whole one is that count; `2.5` or `.inf` means no count and is refused, never rounded."""
    if type(value) is bool:  # YAML's true/yes/on: no count
        raise UsageError(f"--config {path}: max_rejects {value}: {MAX_REJECTS_EXPECTED}")
    if type(value) is int:
        return str(value)
    if type(value) is float:
        if value.is_integer() and value >= 0:
            return str(int(value))
        raise UsageError(f"--config {path}: max_rejects {value}: {MAX_REJECTS_EXPECTED}")
    return value


def handed_over_database_url(args: argparse.Namespace) -> str | None:
    """The URL of --database-url (else of the --config file) when DATABASE_URL does not hold it yet: the
    command must then start again with it there. Decided before a verb imports Dagster or pandas, so
    the first start costs little more than reading the arguments."""
    if os.environ.get(URL_FROM_FLAG) and os.environ.get("DATABASE_URL"):  # restarted: --database-url wins over --config
        return None
    url, source = args.database_url, "--database-url"
    if not url and args.config:
        url, source = config_file_settings(args.config).get("database_url"), f"database_url in --config {args.config}"
        if url is not None and not isinstance(url, str):
            raise UsageError(f"--config {args.config}: database_url must be text (a PostgreSQL URL)")
    if not url or url == os.environ.get("DATABASE_URL"):
        return None
    return checked_url(url, source)  # refused here, naming where it was given: after the restart it is DATABASE_URL


def restart_with_database_url(argv: list[str], url: str) -> NoReturn:
    """Run this same command again, in this process, with the URL in DATABASE_URL: a run's steps (in
    step processes too) read it from their environment, and the command never rewrites its own. The
    URL leaves the argument list, which any user on the machine reads (`ps`) for the whole run."""
    for handler in package_log.handlers:
        handler.flush()
    sys.stdout.flush()
    sys.stderr.flush()
    release_stderr()  # the new image forwards its own
    kept = without_database_url(argv)
    marker = {URL_FROM_FLAG: "1"} if kept != argv else {}
    os.execve(sys.executable, [sys.executable, "-m", "faceit_etl.cli", *kept], {**os.environ, "DATABASE_URL": url, **marker})


# Set when the restart took the URL from --database-url out of the arguments: that URL, now DATABASE_URL's,
# still wins over a database_url in --config.
URL_FROM_FLAG = "FACEIT_ETL_DATABASE_URL_FROM_FLAG"


def without_database_url(argv: list[str]) -> list[str]:
    """`argv` without each `--database-url URL` and `--database-url=URL` (also as argparse's abbreviations,
    `--data URL`) among the options before the command, the only place the parser reads it."""
    def abbreviates(word: str, option: str) -> bool:
        return len(word) > 2 and option.startswith(word)

    kept, i = [], 0
    while i < len(argv) and argv[i].startswith("-") and argv[i] != "--":
        name, equals, _ = argv[i].partition("=")
        width = 1 if equals or not (abbreviates(name, "--database-url") or abbreviates(name, "--config")) else 2
        if not abbreviates(name, "--database-url"):
            kept += argv[i : i + width]
        i += width
    return kept + argv[i:]


class _DecimalLoader(yaml.SafeLoader):
    """YAML 1.1 reads `0x3` as 3, `1_0` as 10, `0o7`, `0b1` and `1:30` (90) as numbers: here they stay
    text, which no numeric setting takes, so a setting is never a number its writer did not write.
    A key given twice is refused: PyYAML would keep its last value without a word (`truncate: false`,
    then `truncate: true` further down, truncates)."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":  # `<<`: explicit keys override merged ones
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    repeated = key in seen
                except TypeError:  # unhashable: the mapping's own construction says so
                    continue
                if repeated:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"key {key!r} given more than once, so which value is meant is ambiguous",
                        key_node.start_mark,
                    )
                seen.add(key)
        return super().construct_mapping(node, deep)


class _InexactNumber(str):
    """A decimal with more digits than a float keeps (`0.39999999999999999999`): refused by read_config,
    naming the key, rather than passed on as text that a setting refuses as "not a number"."""


def _decimal_or_text(kind: str, pattern: str):
    plain = re.compile(pattern)
    construct = getattr(yaml.SafeLoader, f"construct_yaml_{kind}")

    def constructor(loader, node):
        if not plain.fullmatch(node.value):
            return loader.construct_scalar(node)
        value = construct(loader, node)
        # A decimal with more digits than a float keeps stays text, which the setting refuses.
        if kind == "float" and math.isfinite(value) and Fraction(node.value) != Fraction(repr(value)):
            return _InexactNumber(loader.construct_scalar(node))
        return value
    return constructor


_DecimalLoader.add_constructor("tag:yaml.org,2002:int", _decimal_or_text("int", r"[-+]?[0-9]+"))
_DecimalLoader.add_constructor(
    "tag:yaml.org,2002:float", _decimal_or_text("float", r"[-+]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][-+]?[0-9]+)?|[-+]?\.(inf|Inf|INF)|\.(nan|NaN|NAN)")
)


def read_config(path: Path) -> dict:
    """The settings of a `--config` file: a mapping of known keys (flat, or as in run config), else a
    usage error naming the file and what is wrong with it."""
    from faceit_etl.defs.resources import INEXACT_FRACTION, MigrationSettings

    settings = config_file_settings(path)
    known = [*MigrationSettings.model_fields, "database_url", "max_concurrent"]
    for key in settings:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(known)})"
            raise UsageError(f"--config {path}: unknown setting {key!r}{hint}")
        if settings[key] is None:  # null or ~ would silently mean "unset": the environment's value or the default
            raise UsageError(f"--config {path}: {key} has no value (null); give one, or remove the key")
        if isinstance(settings[key], _InexactNumber):
            raise UsageError(f"--config {path}: {key} {settings[key]}: {INEXACT_FRACTION}")
    return settings


def config_file_settings(path: Path) -> dict:
    """The mapping a `--config` file holds (flat, or as in run config), its keys not checked yet; else a
    usage error naming the file and what is wrong with it."""
    if not path.exists():
        raise UsageError(f"--config {path}: no such file")
    if path.is_dir():
        raise UsageError(f"--config {path}: is a folder, not a YAML file")
    try:
        loaded = yaml.load(path.read_text(encoding="utf-8"), Loader=_DecimalLoader)  # noqa: S506 (a SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise UsageError(f"--config {path}: not valid YAML{where}: {exc.problem}") from None
    except (yaml.YAMLError, UnicodeDecodeError):
        raise UsageError(f"--config {path}: not a readable YAML text file") from None
    except OSError as exc:
        raise UsageError(f"--config {path}: cannot read it: {exc.strerror}") from None
    settings = {} if loaded is None else loaded
    if isinstance(settings, dict) and "resources" in settings:  # the layout of run config
        beside = sorted(str(key) for key in settings if key != "resources")
        if beside:  # never dropped unread: a flat `truncate: false` beside a nested `truncate: true` truncated
            raise UsageError(f"--config {path}: {', '.join(beside)} beside resources: give every setting in one layout, "
                             "flat or under resources: migration_settings: config:")
        resources = settings["resources"]
        others = sorted(str(key) for key in resources if key != "migration_settings") if isinstance(resources, dict) else []
        if others:  # never dropped unread; postgres has no URL field: the URL is DATABASE_URL's
            raise UsageError(f"--config {path}: resources {', '.join(others)}: only migration_settings is read here; "
                             "give the database URL in DATABASE_URL or --database-url")
        try:
            settings = settings["resources"]["migration_settings"]["config"]
        except (KeyError, TypeError):
            raise UsageError(f"--config {path}: expected resources: migration_settings: config: <settings>") from None
    if not isinstance(settings, dict):
        raise UsageError(f"--config {path}: expected a mapping of settings (key: value), found a {type(settings).__name__}")
    return dict(settings)


def load_counts(counts: dict, would: str = "") -> str:
    """What a load did to one table, in the words of every summary."""
    return (f"{counts['inserted']} {would}inserted, {counts['updated']} {would}updated, "
            # A load logged before these two were counted: unknown, not zero.
            f"{counts['unchanged']} unchanged, {counts.get('kept_absent', '?')} {would}kept (not in the file), "
            + (f"{counts['kept_rejected']} {would}kept (entry rejected), " if counts.get("kept_rejected") else "")
            + f"{counts.get('deleted', '?')} {would}deleted")


def say(text: str, *, quiet_too: bool = False, args=None, level: int = logging.INFO) -> None:
    """A line of the output, and of migration.log at `level` (errors at ERROR). A reader gone (`| head`) stops
    neither the command nor its log: the line is dropped, and main() exits 141 once the command has done all
    of its work."""
    log.log(level, text)
    if quiet_too or not (args and args.quiet):
        show(text)


def show(text: str) -> None:
    """Print a line; a reader gone is remembered for the exit status, never raised (see say)."""
    try:
        print(text)
    except BrokenPipeError:
        stdout_gone()


_STDOUT_GONE = threading.Event()  # set from whichever thread's line met the closed pipe first


def stdout_gone() -> None:
    """The reader of stdout (`| head`) has gone: send what is left to /dev/null, so neither a later line
    nor the flush at exit raises again, and remember it for the exit status."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    _STDOUT_GONE.set()


# ---------------------------------------------------------------- migrate


def migrate(args: argparse.Namespace) -> int:
    from faceit_etl import api

    if args.resume is not None:
        return resume_migration(args)
    source = source_file(args, "migrate", " (or --resume to resume a failed migration)")
    settings = cli_settings(args)
    log.info("migrate %s settings %s", source, settings)
    result = api.migrate(source, started_by="cli", log_level="DEBUG" if args.verbose else "CRITICAL",
                         watch=_watch(args), main_guarded=True, **settings)
    with interrupts_held():
        return _migration_outcome(result, args)


def typed_flag(name: str, value) -> str:
    """The flag as the user typed it: `backup_tables` is set by --backup or --no-backup."""
    if name == "backup_tables":
        return "--backup" if value else "--no-backup"
    return f"--{name.replace('_', '-')}"


def rows(count: int) -> str:
    return f"{count} row" if count == 1 else f"{count} rows"


def resume_migration(args: argparse.Namespace) -> int:
    """`migrate --resume [RUN_ID]`: api.resume, which re-executes the latest failed migration of this
    target (or RUN_ID) from its failed step, with its own file and settings; exit 2 when refused."""
    from faceit_etl import api

    given = [typed_flag(name, getattr(args, name)) for name in (*SETTING_FLAGS, "backup_tables")
             if name != "target_schema" and getattr(args, name, None) is not None]
    if args.json_file is not None or given:
        raise UsageError(
            f"--resume takes no {' or '.join([*(['JSON_FILE'] if args.json_file else []), *given])}: a resume reuses the "
            "failed run's file and settings; start a new run to change them"
        )
    settings = {k: v for k, v in cli_settings(args).items() if k == "target_schema"}

    def chosen(run_id: str, target: str) -> None:
        picked = "" if args.resume else f" (the latest migration of {target})"
        say(f"resuming run {run_id} from its failed step{picked}", args=args)

    try:
        result = api.resume(args.resume or None, started_by="cli", log_level="DEBUG" if args.verbose else "CRITICAL",
                            watch=_watch(args), chosen=chosen, **settings)
    except api.ResumeRefusedError as exc:
        say(f"resume refused, nothing was written: {exc}", quiet_too=True, level=REFUSED)
        return EXIT_USAGE
    with interrupts_held():
        return _resume_outcome(result, args)


def _resume_outcome(result, args: argparse.Namespace) -> int:
    if result.refused:
        for error in result.errors:
            say(f"resume of run {result.details['resumed_run']} refused, nothing was written: {error}", quiet_too=True,
                level=REFUSED)
        return EXIT_USAGE
    return _migration_outcome(result, args)


def _watch(args: argparse.Namespace):
    """The API's watch: the progress display (a terminal) or its lines, with Dagster's console lines dropped."""
    console = _console() if sys.stdout.isatty() and not args.quiet and not args.verbose else None

    @contextlib.contextmanager
    def watch(instance, tags):
        from faceit_etl.cli.progress import RunWatcher

        quiet_steps = contextlib.nullcontext() if args.verbose else without_dagster_console_lines()
        with quiet_steps, RunWatcher(instance, tags, console, line=lambda text: say(text, args=args),
                                     on_run=RUN_LABEL.found):
            yield

    return watch


def _migration_outcome(result, args: argparse.Namespace) -> int:
    if result.interrupted:
        note = result.details["interrupt"]
        if note["unmarked"]:
            say(note["unmarked"], quiet_too=True, level=logging.ERROR)
        say(f"faceit-etl: {note['outcome']}", quiet_too=True, level=logging.ERROR)
        return EXIT_INTERRUPTED
    code = EXIT_OK if result.success else EXIT_USAGE if result.validation_failed else EXIT_FAILED
    print_summary(result, args, exit_level(code))
    return code


DAGSTER_CONSOLE_LINE = re.compile(rb"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d{4} - dagster - [A-Z]+ - ")


@contextlib.contextmanager
def without_dagster_console_lines():
    """Step processes print their first event with Dagster's default console logger (DEBUG), whatever
    the run's logger config says: drop Dagster's console lines from this process's stderr, which
    they inherit, and pass everything else (warnings, tracebacks) through."""
    sys.stderr.flush()
    saved = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)

    def forward() -> None:
        with os.fdopen(read_end, "rb") as lines:
            for line in lines:
                if not DAGSTER_CONSOLE_LINE.match(line):
                    os.write(saved, line)

    thread = threading.Thread(target=forward, daemon=True)
    thread.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)  # the pipe closes once no step process holds it either
        thread.join(timeout=5)
        os.close(saved)


def _console():
    from rich.console import Console

    return Console(stderr=False)


def print_summary(result, args, level: int) -> None:
    """The run's outcome at `level`, its exit status's, and its counts and checks; none of them above a
    WARNING unless it exits 1 (a run stopped by its rejects exits 2: its failed blocking check is a WARNING)."""
    status = "succeeded" if result.success else "FAILED"
    say(f"Migration run {result.run_id} {status}{' (dry run)' if result.dry_run else ''}", quiet_too=True, level=level)
    ceiling = max(level, logging.WARNING)
    if result.input_entries is not None:
        say(
            f"  entries: {result.input_entries} read, {result.accepted_entries} accepted, "
            f"{result.rejected_entries} rejected",
            quiet_too=True,
        )
    if result.ignored_fields or result.ignored_top_level_keys:
        ignored = [f"{name} ({n} {'entry' if n == 1 else 'entries'})" for name, n in result.ignored_fields.items()]
        say("  ignored, no column takes them: " + "; ".join(
            ([f"fields {', '.join(ignored)}"] if ignored else [])
            + ([f"top-level keys {result.ignored_top_level_keys}"] if result.ignored_top_level_keys else [])
        ), args=args)
    if result.reused_validation:
        say("  validation: the outcome of an earlier run of the same file, time zone and code", args=args)
    if result.nothing_to_compare:
        say(f"  load: {result.nothing_to_compare}", args=args)
    if result.dry_run:
        done = "the load was verified, then rolled back" if result.success else "it stopped before its end"
        say(f"  dry run: {done}; the database is unchanged", quiet_too=True)
    would = "would be " if result.dry_run else ""
    for table, counts in result.tables.items():
        say(f"  {table}: {load_counts(counts, would)}", quiet_too=True)
    from faceit_etl.postgres.verdicts import COMPARED_NOTHING

    described = []  # how an error raised by a check whose description is printed begins
    for check in result.checks:
        failed = not check.passed
        mark = f"FAILED ({check.severity})" if failed else "passed"
        if not failed and (check.description or "").startswith(COMPARED_NOTHING):  # never a bare "passed"
            mark += f" ({check.description.removesuffix('.').lower()})"
        said = " (dry run)" if check.dry_run else ""
        level = min(logging.ERROR if check.severity == "ERROR" else logging.WARNING, ceiling) if failed else logging.INFO
        say(f"  check {check.asset}.{check.name}{said}: {mark}", quiet_too=failed, args=args, level=level)
        if failed and check.description:
            for line in check.description.splitlines():
                say(f"      {line}", quiet_too=True, level=level)
            described += [f"check {check.asset}.{check.name} failed: ", f"{check.asset}_{check.name}: "]
    # The check's description (every reject listed, where the rest are) already says why: not twice.
    for error in result.errors:
        if not error.startswith(tuple(described)):
            say(f"  error: {error}", quiet_too=True, level=ceiling)


# ---------------------------------------------------------------- validate


def validate(args: argparse.Namespace) -> int:
    from faceit_etl import api
    from faceit_etl.backups import private_writer

    source = source_file(args, "validate")
    settings = cli_settings(args)
    if args.report and not args.report.parent.is_dir():
        raise UsageError(f"--report {args.report}: the folder {args.report.parent} does not exist")
    result = api.validate(source, database=args.database, **settings)
    if args.report:
        try:
            with private_writer(args.report) as handle:
                handle.write(result.report.encode())
        except OSError as exc:
            raise UsageError(f"--report {args.report}: cannot write it: {exc.strerror}") from None
        say(f"report written to {args.report}", args=args)
    elif not args.quiet:
        show(result.report)
    code = EXIT_OK if result.is_valid else EXIT_USAGE
    say(
        f"{source}: {result.input_entries} entries, {result.accepted_entries} valid, "
        f"{result.rejected_entries} rejected",
        quiet_too=True, level=exit_level(code),
    )
    return code


# ---------------------------------------------------------------- status


def status(args: argparse.Namespace) -> int:
    from faceit_etl import api

    report = api.status(**cli_settings(args)).details
    if args.json:
        show(json.dumps(report, default=str, indent=2))
    else:
        reach = "reachable" if report["reachable"] else f"NOT reachable: {report.get('error')}"
        show(f"database {report['database']} (schema {report['schema']}): {reach}")
        for name, count in report.get("tables", {}).items():
            show(f"  {name}: {'absent' if count is None else rows(count)}")
        for m in report.get("migrations", []):
            show(f"  {api.migration_line(m)}")
            for table, counts in (m["load"] or {}).items():
                show(f"      {table}: {load_counts(counts)}")
        for r in report["dagster_runs"]:
            orphaned = (f": its faceit-etl process is gone, but {', '.join(r['still_writing'])} of it can still write"
                        if r.get("still_writing") else "")
            show(f"  dagster run {r['run_id']} {r['job']} {r['status']} ({r['started_by']}){orphaned}")
    return EXIT_OK if report["reachable"] else EXIT_FAILED


# ---------------------------------------------------------------- rollback


def rollback(args: argparse.Namespace) -> int:
    from faceit_etl import api
    from faceit_etl.errors import RollbackRefusedError

    if args.backup_path and args.migration_id:
        raise UsageError(errors.BOTH_NAMED.format(backup_path="--backup-path", migration_id="--migration-id"))
    settings = cli_settings(args)
    api.resolved_settings(settings)  # a wrong setting is a usage error before the question
    backup_path, migration_id, expect_latest_run = args.backup_path, args.migration_id, None
    if not args.confirm:
        if not sys.stdin.isatty():
            say("refusing to roll back without --confirm when not run from a terminal; nothing changed", quiet_too=True,
                level=REFUSED)
            return EXIT_USAGE
        try:
            candidate = api.rollback_candidate(args.backup_path, args.migration_id, **settings)
        except RollbackRefusedError as exc:
            say(f"rollback refused, nothing changed: {exc}", quiet_too=True, level=REFUSED)
            return EXIT_USAGE
        except api.MigrationError as exc:
            say(f"rollback failed, nothing changed: {exc}", quiet_too=True, level=logging.ERROR)
            return EXIT_FAILED
        taken_by, manual = candidate["snapshot_of_run"], candidate["snapshot_of_run"] is None
        which = (api.migration_line(candidate["migration"]) if candidate["migration"] else
                 "every migration committed after it" if manual else f"run {candidate['run_id']}")
        taken_by = ("" if taken_by in (None, candidate["run_id"]) else
                    f" by the load of run {taken_by}, which run {candidate['run_id']} resumed")
        question = (
            f"Restore users and user_subscriptions in {candidate['target']}\n"
            f"  to the snapshot {candidate['snapshot']} (taken {candidate['taken_at']}{taken_by}),\n"
            f"  undoing {which}? [y/N] "
        )
        if not confirmed(input(question)):
            say("rollback cancelled; nothing changed", quiet_too=True, level=REFUSED)
            return EXIT_USAGE
        # After a yes, exactly the snapshot named, and only while the tables are as when asked.
        backup_path, migration_id, expect_latest_run = candidate["folder"], None, candidate["latest_run_id"]
    result = api.rollback(backup_path, migration_id, discard_later_changes=args.discard_later_changes,
                          expect_latest_run=expect_latest_run, started_by="cli", log_level="DEBUG" if args.verbose else "CRITICAL", **settings)
    with interrupts_held():
        return _rollback_outcome(result)


def confirmed(answer: str) -> bool:
    """Only a yes restores: the question's default is no, so Enter, a typo or anything else cancels."""
    return answer.strip().lower() in ("y", "yes")


def _rollback_outcome(result) -> int:
    if result.success:
        say(f"Rolled back to {result.details['restored_to']}", quiet_too=True)
        for name, digest in result.details["restored"].items():
            say(f"  {name}: {rows(digest['rows'])} restored, content hash verified", quiet_too=True)
        for name in result.details["dropped_tables"]:
            say(f"  {name}: dropped (it did not exist when the snapshot was taken)", quiet_too=True)
        if not result.details["origin_checked"]:
            from faceit_etl.restore import UNCHECKED_ORIGIN

            say(f"  warning: {UNCHECKED_ORIGIN}", quiet_too=True, level=logging.WARNING)
        return EXIT_OK
    for message in result.errors:
        say(f"rollback {'refused' if result.refused else 'failed'}, nothing changed: {message}", quiet_too=True,
            level=REFUSED if result.refused else logging.ERROR)
    return EXIT_USAGE if result.refused else EXIT_FAILED


# ---------------------------------------------------------------- backup


def backup(args: argparse.Namespace) -> int:
    from faceit_etl import api

    source = source_file(args, "backup")
    result = api.backup(source, output_dir=args.output_dir, **cli_settings(args))
    source = result.details
    say(f"source {source['source']} (sha256 {source['sha256']}) copied to {result.backup_path}", quiet_too=True)
    if not result.success:
        for error in result.errors:
            say(error, quiet_too=True, level=logging.ERROR)
        return EXIT_FAILED
    for table_name, count in result.details["tables"].items():
        say(f"  {table_name}: {'absent' if count is None else rows(count)}", quiet_too=True)
    return EXIT_OK


COMMANDS = {"migrate": migrate, "validate": validate, "status": status, "rollback": rollback, "backup": backup}


class RedactingFormatter(logging.Formatter):
    """Redacts the whole formatted record, so the traceback and exception text of `log.exception` (which
    the formatter appends after any filter has run) lose the password as the message does. Each line of
    a record gets the format's prefix (a multi-line message or a traceback would leave lines nobody can
    tell the process of), and a traceback says server errors without the rows they quote."""

    def format(self, record: logging.LogRecord) -> str:
        record.message = record.getMessage()
        record.asctime = self.formatTime(record, self.datefmt)
        lines = record.message.splitlines() or [""]
        if record.exc_info:
            lines += self.formatException(record.exc_info).splitlines()
        if record.stack_info:
            lines += self.formatStack(record.stack_info).splitlines()
        text = "\n".join(self.formatMessage(_with_message(record, line)) for line in lines)
        return redact(text, os.environ.get("DATABASE_URL"))

    def formatException(self, exc_info) -> str:  # noqa: N802 (logging's name)
        return traceback_text(exc_info[1])


def _with_message(record: logging.LogRecord, message: str) -> logging.LogRecord:
    line = copy.copy(record)
    line.message = message
    return line


class RunLabel(logging.Filter):
    """Names on each line of migration.log the process and, once its run is known, the run (the first 8
    characters of its id, as the Dagster UI shows it): the lines of two migrations at once interleave there."""

    def __init__(self) -> None:
        super().__init__()
        self.run_id: str | None = None

    def found(self, run_id: str) -> None:
        self.run_id = run_id

    def filter(self, record: logging.LogRecord) -> bool:
        record.run = f"pid {os.getpid()}" + (f" run {self.run_id[:8]}" if self.run_id else "")
        return True


RUN_LABEL = RunLabel()


def _log_to_file() -> None:
    """The CLI's lines and the API's (a killed run another command marks failed) go to migration.log."""
    handler = logging.FileHandler(LOG_FILE, encoding="utf-8")
    handler.addFilter(RUN_LABEL)
    handler.setFormatter(RedactingFormatter("%(asctime)s %(levelname)s [%(run)s] %(message)s"))
    package_log.addHandler(handler)
    package_log.setLevel(logging.INFO)
    # The terminal's lines are printed (say): a handler some library gives the root logger (a root-level
    # `logging.info()` runs `basicConfig()`) would print each again as `INFO:faceit_etl.cli:…`.
    package_log.propagate = False
    # psycopg reports its own clean-up after a lost connection; the run's error already says it.
    logging.getLogger("psycopg").setLevel(logging.CRITICAL)


# The arguments that say what a command acts on, as typed; settings are logged with the run (never a URL).
SUBJECT_FLAGS = {
    "migrate": (("json_file", None), ("resume", "--resume")),
    "validate": (("json_file", None), ("database", "--database"), ("report", "--report")),
    "rollback": (("backup_path", "--backup-path"), ("migration_id", "--migration-id"),
                 ("discard_later_changes", "--discard-later-changes"), ("confirm", "--confirm")),
    "backup": (("json_file", None), ("output_dir", "--output-dir")),
}


def command_line(args: argparse.Namespace) -> str:
    """The command and what it acts on, for its line in migration.log: `rollback --migration-id 3f0c…
    --discard-later-changes`, `migrate --resume` (the default run) or `migrate --resume <run>`."""
    words = [args.command]
    for name, flag in SUBJECT_FLAGS.get(args.command, ()):
        value = getattr(args, name, None)
        if value is None or value is False:
            continue
        words += [word for word in (flag, None if value in (True, "") else str(value)) if word is not None]
    return redact(" ".join(words), os.environ.get("DATABASE_URL"))


def refused_setting(error: BaseException) -> Exception | None:
    """The refused setting behind an error, if any: loading the definitions folder wraps what building
    the settings from the environment raised."""
    from pydantic import ValidationError

    from faceit_etl.defs.resources import SettingsError

    while error is not None:
        if isinstance(error, (ValidationError, SettingsError)):
            return error
        error = error.__cause__ or error.__context__
    return None


def main(argv: list[str] | None = None) -> int:
    """The command's exit status; 141 whenever its output met a closed pipe, whatever the command's own
    outcome (which migration.log holds), as a shell reports a writer its reader left."""
    discard_closed_standard_streams()
    try:
        code = _main(argv)
    except BrokenPipeError:  # argparse's --help or usage, the rollback question's prompt: nothing done yet
        stdout_gone()
        code = EXIT_BROKEN_PIPE
    return EXIT_BROKEN_PIPE if _STDOUT_GONE.is_set() else code


def exit_level(code: int) -> int:
    """The level of a command's outcome in migration.log, from its exit status: 0 INFO, 2 (refused) WARNING,
    any other ERROR."""
    return OUTCOMES.get(code, ("failed", logging.ERROR))[1]


def log_outcome(verb: str | None, code: int) -> None:
    """The command's last line in migration.log, one per command whatever ended it, at its exit status's level."""
    word = OUTCOMES.get(code, ("failed",))[0]
    gone = f"; its output's reader had gone (exit {EXIT_BROKEN_PIPE})" if _STDOUT_GONE.is_set() else ""
    log.log(exit_level(code), "faceit-etl%s ended: exit %s, %s%s", f" {verb}" if verb else "", code, word, gone)


def _main(argv: list[str] | None) -> int:
    typed = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(typed)
    except ArgumentsRefused as refused:  # argparse printed it; nothing else was done
        _log_to_file()
        log.info("faceit-etl %s", redact(shlex.join(without_database_url(typed))))
        log.log(REFUSED, "%s", refused.line)
        log_outcome(next((word for word in typed if word in COMMANDS), None), EXIT_USAGE)
        raise
    args.argv = typed
    _log_to_file()
    code = _command(args)
    log_outcome(args.command, code)
    return code


def _command(args: argparse.Namespace) -> int:
    """The command's exit status: 130 after Ctrl-C at any moment, also one its verb said an outcome after (Dagster
    lets a run end whose last step had finished, or fails it without a step failure): that outcome holds."""
    code = _verb(args)
    if INTERRUPTED.is_set() and code != EXIT_INTERRUPTED:
        say(f"faceit-etl: interrupted; what the {args.command} said above holds", quiet_too=True, level=logging.ERROR)
        return EXIT_INTERRUPTED
    return code


def _verb(args: argparse.Namespace) -> int:
    """The verb's exit status; its errors said in a line each, never a bare traceback."""
    from pydantic import ValidationError

    url = None
    try:
        try:
            url = handed_over_database_url(args)
        finally:
            if url is None:  # else the restarted command logs it: once per command
                log.info("faceit-etl %s", command_line(args))
        if url:
            restart_with_database_url(args.argv, url)
        with interrupts_raised():
            return COMMANDS[args.command](args)
    except KeyboardInterrupt:  # before any run: from a run's end on it is only noted (held_once_run)
        say(BEFORE_ANY_RUN, quiet_too=True, level=logging.ERROR)
        return EXIT_INTERRUPTED
    except (InvalidConnectionString, errors.InvalidDatabaseUrl) as exc:  # a fixed text that quotes nothing: its example form stays readable
        say(f"faceit-etl: {exc}", quiet_too=True, level=REFUSED)
        return EXIT_USAGE
    except (UsageError, errors.SettingsInvalid, errors.ValidationError) as exc:  # bad arguments, or a file that is not the bot's
        say(f"faceit-etl: {redact(str(exc), os.environ.get('DATABASE_URL'))}", quiet_too=True, level=REFUSED)
        return EXIT_USAGE
    except BrokenPipeError:
        raise
    except Exception as exc:  # a clear line, never a bare traceback; the log has the details
        refused = refused_setting(exc)
        if refused is not None:  # settings built from the environment when the definitions load
            from faceit_etl.defs.resources import describe_invalid

            message = describe_invalid(refused) if isinstance(refused, ValidationError) else str(refused)
            say(f"faceit-etl: {redact(message, os.environ.get('DATABASE_URL'))}", quiet_too=True, level=REFUSED)
            return EXIT_USAGE
        log.exception("failed")
        # A server error's own sentence (its DETAIL quotes rows); an empty message: its type and where it was raised.
        said = server_error_text(exc).strip() or errors.described(exc)
        say(f"faceit-etl {args.command} failed: {redact(said, os.environ.get('DATABASE_URL'))}", quiet_too=True,
            level=logging.ERROR)
        return EXIT_FAILED
