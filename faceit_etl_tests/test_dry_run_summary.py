"""What a dry run reports: its verdicts are its observation's (`dry_run.<check>`), not the tables' checks'
results, and the CLI and the API still say every one of them, marked as the dry run's; a failed
blocking verdict fails the dry run's result."""

from __future__ import annotations

import json

import dagster as dg
import pytest

import faceit_etl
from faceit_etl.api import Check
from faceit_etl.cli.summary import summarize
from faceit_etl.postgres.verdicts import BLOCKING, VERDICTS
from faceit_etl_tests.conftest import NESTED_SAMPLE, write_json
from faceit_etl_tests.test_api import here  # noqa: F401 (a fixture)
from faceit_etl_tests.test_cli import faceit_etl as cli, instance_at, workdir  # noqa: F401 (workdir: a fixture)


def observed_verdicts(instance: dg.DagsterInstance, run_id: str) -> dict[str, str]:
    """The `dry_run.<check>` entries of the run's dry-run observation, as the run recorded them."""
    [observation] = [
        e.dagster_event.event_specific_data.asset_observation
        for e in instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_OBSERVATION)
        if "dry_run" in e.dagster_event.event_specific_data.asset_observation.metadata
    ]
    return {k.removeprefix("dry_run."): v.value for k, v in observation.metadata.items() if k.startswith("dry_run.")}


def fewer_users(folder, loaded: int = 25, then: int = 20):
    """A file loaded whole, then cut to its first `then` users: a dry run of it fails rows_not_in_file (WARN)."""
    users = json.loads(NESTED_SAMPLE.read_text())["users"]
    source = write_json(folder / "data.json", {"users": users[:loaded]})
    return source, lambda: write_json(source, {"users": users[:then]})


def test_the_clis_dry_run_prints_every_verdict_it_took_as_check_lines_marked_dry_run(workdir, database_url, db):
    source, cut = fewer_users(workdir)
    assert cli(workdir, database_url, "migrate", str(source)).returncode == 0
    cut()

    done = cli(workdir, database_url, "migrate", str(source), "--dry-run")

    assert done.returncode == 0, done.stdout + done.stderr
    with instance_at(workdir) as instance:
        run = instance.get_runs(dg.RunsFilter(job_name="migrate_job"), limit=1)[0]
        verdicts = observed_verdicts(instance, run.run_id)
    assert set(verdicts) == set(VERDICTS)
    assert verdicts["rows_not_in_file"].startswith("failed: ")
    lines = done.stdout.splitlines()
    assert f"Migration run {run.run_id} succeeded (dry run)" in lines
    said = [line for line in lines if line.startswith("  check ") and "(dry run)" in line]
    assert said == [
        f"  check postgres_tables.{name} (dry run): "
        + ("passed" if verdict == "passed" else f"FAILED ({'ERROR' if name in BLOCKING else 'WARN'})")
        for name, verdict in verdicts.items()
    ]
    # A failed WARN verdict says why on the lines below it, as a check's does.
    failed = lines.index("  check postgres_tables.rows_not_in_file (dry run): FAILED (WARN)")
    why = verdicts["rows_not_in_file"].removeprefix("failed: ").splitlines()
    assert lines[failed + 1: failed + 1 + len(why)] == [f"      {line}" for line in why]
    assert db.execute("SELECT count(*) FROM users").fetchone()[0] == 25


def test_the_apis_dry_run_result_carries_every_verdict_as_a_dry_run_check(here, db):
    source, cut = fewer_users(here)
    assert faceit_etl.migrate(source).success
    cut()

    result = faceit_etl.migrate(source, dry_run=True)

    assert (result.success, result.dry_run, result.errors) == (True, True, [])
    with instance_at(here) as instance:
        verdicts = observed_verdicts(instance, result.run_id)
    assert [c for c in result.checks if c.dry_run] == [
        Check(asset="postgres_tables", name=name, passed=verdict == "passed",
              severity="ERROR" if name in BLOCKING else "WARN",
              description=None if verdict in ("passed", "failed") else verdict.removeprefix("failed: "), dry_run=True)
        for name, verdict in verdicts.items()
    ]
    assert [(c.name, c.dry_run) for c in result.checks if not c.dry_run] == [("no_rejected_entries", False)]


@pytest.mark.parametrize(
    ("verdicts", "success", "errors"),
    [
        ({"content_matches": "passed", "referrers_present": "failed: 2 referrers unknown"}, True, []),
        ({"content_matches": "failed: 3 cells differ", "referrers_present": "passed"}, False,
         ["check postgres_tables.content_matches failed in the dry run: 3 cells differ"]),
    ],
    ids=["a failed WARN verdict", "a failed blocking verdict"],
)
def test_a_failed_blocking_dry_run_verdict_fails_the_result_and_says_why(verdicts, success, errors):
    """A real Dagster run whose observation holds the verdicts, as the load records a dry run's: a blocking
    one failed means the real run would fail, so the dry run's result is a failure with the verdict's words."""

    @dg.op
    def load(context):
        context.log_event(dg.AssetObservation(
            asset_key="postgres_tables", metadata={"dry_run": True, **{f"dry_run.{k}": v for k, v in verdicts.items()}}
        ))

    @dg.job
    def dry():
        load()

    summary = summarize(dry.execute_in_process())

    assert (summary.success, summary.dry_run, summary.errors) == (success, True, errors)
    assert [(c.name, c.passed, c.severity, c.description, c.dry_run) for c in summary.checks] == [
        (name, said == "passed", "ERROR" if name in BLOCKING else "WARN",
         None if said in ("passed", "failed") else said.removeprefix("failed: "), True)
        for name, said in verdicts.items()
    ]
