"""`migrate --resume` without a run id reasons about the target's latest migration, whatever its state:
still running (its launcher alive, or gone while its step process still loads), successful, rolled back,
or a dry run (set by `--dry-run` or only by MIGRATION_DRY_RUN: passed over alike). It once skipped a run
in progress and named an older failed run as the reason of its refusal, and took a dry run set by the
environment for a migration."""

from __future__ import annotations

import os
import socket
import subprocess
import time

import dagster as dg
import psycopg
import pytest
from dagster._core.utils import make_new_run_id

import faceit_etl
from faceit_etl.api import TARGET_TAG
from faceit_etl.errors import ResumeRefusedError
from faceit_etl.launcher import PID_TAG, launcher_tags, process_start
from faceit_etl.postgres.database import run_session_name
from faceit_etl.resumption import START_A_NEW_RUN, ResumeRefused, _latest_failed
from faceit_etl_tests.conftest import FLAT_SAMPLE
from faceit_etl_tests.test_api import here, with_a_bad_entry  # noqa: F401 (here: a fixture)
from faceit_etl_tests.test_cli import CLI, faceit_etl as faceit_etl_cli, instance_at, tables_digest, workdir  # noqa: F401
from faceit_etl_tests.test_killed_runs import cli_killed_before_commit
from faceit_etl_tests.test_resume import migrate_runs
from faceit_etl_tests.test_resume_after_kills import _env

WAIT = ("wait for it to end, then check faceit-etl status, which says whether it committed; an older failure is never "
        "resumed behind it")


def never_loaded(run_id: str) -> str:
    return (f"run {run_id} never started its load (it stopped before the load, or was a dry run, which writes nothing "
            f"to resume); {START_A_NEW_RUN}")


def refusal() -> str:
    with pytest.raises(ResumeRefusedError) as refused:
        faceit_etl.resume()
    return str(refused.value)


def an_older_failure(folder) -> tuple[str, str]:
    """A migration of the target that failed (stopped by its rejects): the run an old default named. Its id, its target."""
    older = faceit_etl.migrate(with_a_bad_entry(folder))
    assert older.success is False
    with instance_at(folder) as instance:
        return older.run_id, instance.get_run_by_id(older.run_id).tags[TARGET_TAG]


@pytest.mark.db
@pytest.mark.parametrize("launcher", ["alive", "gone, a session of it open"])
def test_resume_names_a_migration_that_still_runs_as_running_by_default_or_by_its_id(here, db, database_url, launcher):
    older, target = an_older_failure(here)
    tags = {TARGET_TAG: target, **launcher_tags()} | ({PID_TAG: "999999999"} if launcher != "alive" else {})
    with instance_at(here) as instance:
        running = instance.add_run(dg.DagsterRun(job_name="migrate_job", run_id=make_new_run_id(), tags=tags,
                                                 status=dg.DagsterRunStatus.STARTED))
    with psycopg.connect(database_url, application_name=run_session_name(running.run_id)) as session:
        said = refusal()
        with pytest.raises(ResumeRefusedError) as named:
            faceit_etl.resume(run_id=running.run_id)
        with instance_at(here) as instance:
            assert instance.get_run_by_id(running.run_id).status == dg.DagsterRunStatus.STARTED  # not failed meanwhile
            assert [r.run_id for r in migrate_runs(instance)] == [running.run_id, older]  # no run started

        what = (f"STARTED: its faceit-etl process (pid {os.getpid()} on host {socket.gethostname()}) is running it"
                if launcher == "alive" else
                f"its faceit-etl process is gone, but database session (server pid {session.info.backend_pid}) of it "
                "can still write: it is still loading")
    assert said == f"the latest migration of {target}, run {running.run_id}, is still running ({what}): {WAIT}"
    assert str(named.value) == (f"run {running.run_id} is still running ({what}): wait for it to end, then check "
                                "faceit-etl status, which says whether it committed")


@pytest.mark.db
def test_the_default_resume_passes_over_dry_runs_however_set_and_names_a_successful_or_rolled_back_latest(
        here, db, monkeypatch):
    older, target = an_older_failure(here)

    flagged = faceit_etl.migrate(FLAT_SAMPLE, dry_run=True)
    assert flagged.success and flagged.dry_run
    after_flagged = refusal()
    monkeypatch.setenv("MIGRATION_DRY_RUN", "true")
    by_environment = faceit_etl.migrate(FLAT_SAMPLE)
    monkeypatch.delenv("MIGRATION_DRY_RUN")
    assert by_environment.success and by_environment.dry_run
    after_environment = refusal()
    assert db.execute("SELECT to_regclass('public.users')").fetchone()[0] is None  # the dry runs wrote nothing

    assert after_flagged == after_environment == never_loaded(older)

    done = faceit_etl.migrate(FLAT_SAMPLE)
    assert done.success
    assert refusal() == (f"run {done.run_id} of {target} succeeded after run {older} failed: the tables hold a later "
                         f"migration; {START_A_NEW_RUN}")

    assert faceit_etl.rollback().success
    before = db.execute("SELECT to_regclass('public.users')").fetchone()[0]

    assert refusal() == (f"the latest migration of {target}, run {done.run_id}, succeeded and was rolled back since: the "
                         f"tables are as before it, and an older failure is not resumed behind it; {START_A_NEW_RUN}")
    assert db.execute("SELECT to_regclass('public.users')").fetchone()[0] == before
    with instance_at(here) as instance:
        assert [r.run_id for r in migrate_runs(instance)] == [done.run_id, by_environment.run_id, flagged.run_id, older]


def test_a_killed_clis_orphaned_load_is_named_by_the_default_resume_as_still_loading(workdir, database_url, db):
    """`kill -9` of the CLI alone during `migrate --max-concurrent 2`: its step process goes on loading (held
    here just before its commit). `migrate --resume` refuses, exit 2, naming that run and what of it still
    writes (as status says), never the older failed run behind it; nothing is written."""
    assert faceit_etl_cli(workdir, database_url, "migrate", str(FLAT_SAMPLE)).returncode == 0
    bad = faceit_etl_cli(workdir, database_url, "migrate", str(with_a_bad_entry(workdir)))
    assert bad.returncode != 0, bad.stdout
    before = tables_digest(db)
    victim = subprocess.Popen([CLI, "-q", "migrate", str(FLAT_SAMPLE), "--max-concurrent", "2"], cwd=workdir,
                              env=_env(workdir, database_url), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    with cli_killed_before_commit(victim, database_url, db, workdir) as (step, sessions):
        with instance_at(workdir) as instance:
            [loading] = instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]))

        done = faceit_etl_cli(workdir, database_url, "migrate", "--resume")

        with instance_at(workdir) as instance:
            runs = migrate_runs(instance)
    # released: the orphan goes on, finds its launcher gone and rolls back
    writers = ", ".join([f"step postgres_tables (pid {step})", *(f"database session (server pid {p})" for p in sessions)])
    target = loading.tags[TARGET_TAG]
    assert (done.returncode, done.stdout, done.stderr) == (2, (
        f"resume refused, nothing was written: the latest migration of {target}, run {loading.run_id}, is still running "
        f"(its faceit-etl process is gone, but {writers} of it can still write: it is still loading): {WAIT}\n"), "")
    assert len(sessions) == 2  # the load's and its log row's
    assert runs[0].run_id == loading.run_id and runs[0].status == dg.DagsterRunStatus.STARTED and len(runs) == 3
    assert tables_digest(db) == before
    deadline = time.monotonic() + 60
    while process_start(step) is not None:  # the orphan ends, its load rolled back, before the database goes
        assert time.monotonic() < deadline, "the orphaned step process never ended"
        time.sleep(0.1)


TARGET = "db.example/faceit_bot/public"
LATEST = f"the latest migration of {TARGET}, run latest-run,"
# The default pick by the latest migration's state, with an older failed run behind it: the run picked,
# or the refusal's words (a run queued needs its code location to be made, and is not finished either).
BY_LATEST_STATE = {
    **{status: f"{LATEST} is still running (its step process loads): " for status in (
        dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.MANAGED, dg.DagsterRunStatus.STARTING,
        dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.SUSPENDED, dg.DagsterRunStatus.CANCELING)},
    dg.DagsterRunStatus.CANCELED: f"{LATEST} was canceled, not failed: there is nothing to resume; {START_A_NEW_RUN}",
    dg.DagsterRunStatus.FAILURE: "latest-run",
    dg.DagsterRunStatus.SUCCESS: "older-failure",  # which the pick then refuses as superseded
}


@pytest.mark.parametrize(("status", "outcome"), BY_LATEST_STATE.items(), ids=[s.value for s in BY_LATEST_STATE])
def test_the_default_pick_follows_the_latest_migrations_state_never_an_older_failure_behind_it(status, outcome):
    runs = [dg.DagsterRun(job_name="migrate_job", run_id="latest-run", status=status),
            dg.DagsterRun(job_name="migrate_job", run_id="older-failure", status=dg.DagsterRunStatus.FAILURE)]

    def pick():
        return _latest_failed(runs, TARGET, lambda run: "its step process loads", lambda run_id: False).run_id

    if outcome in ("latest-run", "older-failure"):
        assert pick() == outcome
    else:
        with pytest.raises(ResumeRefused) as refused:
            pick()
        assert str(refused.value).startswith(outcome)
