"""`faceit-etl`: the seed's command line, running the Dagster job on the persistent instance.

Runs started here appear in the Dagster UI next to the ones started there. Exit codes: 0 success,
1 the migration or a blocking check failed, 2 usage error or failed validation.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import yaml

from faceit_etl.database import project_home, redact

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
SETTING_FLAGS = ("batch_size", "max_concurrent", "truncate", "force", "dry_run", "source_timezone", "target_schema")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="faceit-etl", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="show Dagster's own log lines")
    parser.add_argument("-q", "--quiet", action="store_true", help="print only the outcome")
    parser.add_argument("--config", type=Path, help="YAML file of migration settings (as in run_config)")
    parser.add_argument("--database-url", help="target PostgreSQL URL (default: DATABASE_URL, else embedded)")
    commands = parser.add_subparsers(dest="command", required=True)

    migrate = commands.add_parser("migrate", help="migrate a bot data file into PostgreSQL")
    migrate.add_argument("json_file", type=Path)
    migrate.add_argument("--batch-size", type=int, help="rows per COPY chunk")
    migrate.add_argument("--max-concurrent", type=int, help="steps run at once")
    migrate.add_argument("--dry-run", action="store_true", default=None, help="load, verify, roll back")
    migrate.add_argument("--truncate", action="store_true", default=None, help="replace the tables' content")
    migrate.add_argument("--force", action="store_true", default=None, help="load valid entries despite rejects")
    migrate.add_argument("--source-timezone", help="time zone of naive timestamps in the file (default UTC)")
    migrate.add_argument("--target-schema", help="PostgreSQL schema of the bot's tables (default public)")
    return parser


def use_project_instance() -> None:
    """Point Dagster at the project's instance (dagster.yaml here), else one under .faceit-etl/."""
    if os.environ.get("DAGSTER_HOME"):
        return
    if Path("dagster.yaml").is_file():
        os.environ["DAGSTER_HOME"] = str(Path.cwd())
    else:
        home = project_home() / "dagster"
        home.mkdir(parents=True, exist_ok=True)
        os.environ["DAGSTER_HOME"] = str(home)


def settings_config(args: argparse.Namespace) -> dict:
    """Resource config from --config and flags. The database URL never goes into run config
    (the UI shows run config): it travels in the DATABASE_URL environment variable instead."""
    config: dict = {}
    if args.config:
        loaded = yaml.safe_load(args.config.read_text()) or {}
        config.update(loaded.get("resources", {}).get("migration_settings", {}).get("config", loaded))
    url = args.database_url or config.pop("database_url", None)
    if url:
        os.environ["DATABASE_URL"] = url
    if getattr(args, "json_file", None):
        config["source_path"] = str(args.json_file.resolve())
    for name in SETTING_FLAGS:
        value = getattr(args, name, None)
        if value is not None:
            config[name] = value
    return config


def migrate(args: argparse.Namespace) -> int:
    import dagster as dg

    from faceit_etl.definitions import defs
    from faceit_etl.summary import summarize

    if not args.json_file.is_file():
        print(f"faceit-etl: {args.json_file}: no such file", file=sys.stderr)
        return EXIT_USAGE
    use_project_instance()
    run_config = {
        "resources": {"migration_settings": {"config": settings_config(args)}},
        "loggers": {"console": {"config": {"log_level": "DEBUG" if args.verbose else "CRITICAL"}}},
    }
    with dg.DagsterInstance.get() as instance:
        result = defs.resolve_job_def("migrate_job").execute_in_process(
            run_config=run_config, instance=instance, raise_on_error=False
        )
    summary = summarize(result)
    print_summary(summary, quiet=args.quiet)
    if summary.success:
        return EXIT_OK
    return EXIT_USAGE if summary.validation_failed else EXIT_FAILED


def print_summary(summary, quiet: bool = False) -> None:
    out = sys.stdout
    status = "succeeded" if summary.success else "FAILED"
    print(f"Migration run {summary.run_id} {status}", file=out)
    if summary.input_entries is not None:
        print(
            f"  entries: {summary.input_entries} read, {summary.accepted_entries} accepted, "
            f"{summary.rejected_entries} rejected",
            file=out,
        )
    if summary.dry_run:
        print("  dry run: the load was verified, then rolled back; the database is unchanged", file=out)
    would = "would be " if summary.dry_run else ""
    for table, counts in summary.load.items():
        print(
            f"  {table}: {counts['inserted']} {would}inserted, {counts['updated']} {would}updated, "
            f"{counts['unchanged']} unchanged",
            file=out,
        )
    if not quiet:
        for check in summary.checks:
            mark = "passed" if check.passed else f"FAILED ({check.severity})"
            print(f"  check {check.asset}.{check.name}: {mark}", file=out)
            if not check.passed and check.description:
                for line in check.description.splitlines():
                    print(f"      {line}", file=out)
    for error in summary.errors:
        print(f"  error: {redact(error, os.environ.get('DATABASE_URL'))}", file=out)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return {"migrate": migrate}[args.command](args)
    except (ValueError, OSError, yaml.YAMLError) as exc:
        print(f"faceit-etl: {redact(str(exc), os.environ.get('DATABASE_URL'))}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
