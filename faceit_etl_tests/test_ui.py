"""The user's day in the Dagster UI, in a real Chromium: open the asset graph, observe the bot's file,
click "Materialize all", see the run succeed and every asset check pass, then see the assets unsynced
once the file changes and the file's new sha256 as its data version; and the database's password
nowhere. Keeps screenshots in test-artifacts/."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from playwright.sync_api import expect, sync_playwright

from faceit_etl.defs.checks import TABLE_CHECK_SPECS
from faceit_etl.defs.drift import column_schema_change
from faceit_etl_tests.conftest import BOT_PASSWORD, NESTED_SAMPLE

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def graphql(base: str, query: str) -> dict:
    request = urllib.request.Request(f"{base}/graphql", json.dumps({"query": query}).encode(),
                                     {"content-type": "application/json"})
    return json.load(urllib.request.urlopen(request, timeout=10))["data"]


@pytest.fixture
def dagster_ui(tmp_path, database_url):
    """`dagster dev` (webserver and daemon) on this project, its own instance, the test database."""
    with running_ui(tmp_path, database_url) as base:
        yield base


@pytest.fixture
def dagster_ui_with_password(tmp_path, password_database_url):
    """The same, its database reached as a role that must give its password (in DATABASE_URL)."""
    with running_ui(tmp_path, password_database_url) as base:
        yield base


@contextlib.contextmanager
def running_ui(tmp_path: Path, database_url: str):
    shutil.copy(ROOT / "dagster.yaml", tmp_path / "dagster.yaml")
    shutil.copy(NESTED_SAMPLE, tmp_path / "data.json")  # the bot's file, which the test then changes
    port = free_port()
    env = {
        **os.environ,
        "DAGSTER_HOME": str(tmp_path),
        "DATABASE_URL": database_url,
        "DATA_FILE_PATH": str(tmp_path / "data.json"),
        "MIGRATION_BACKUP_DIR": str(tmp_path / "backups"),
    }
    env.pop("DAGSTER_POSTGRES_URL", None)
    log = (tmp_path / "dagster-dev.log").open("w")
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "dagster"), "dev", "-w", str(ROOT / "workspace.yaml"),
         "-h", "127.0.0.1", "-p", str(port)],
        cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"{base}/server_info", timeout=2)
                break
            except OSError:
                assert process.poll() is None, (tmp_path / "dagster-dev.log").read_text()[-3000:]
                assert time.monotonic() < deadline, "the Dagster UI did not come up in 120 s"
                time.sleep(0.5)
        yield base
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
        log.close()


def finished_runs(base: str, count: int) -> list[dict]:
    """The instance's runs, newest first, once `count` of them exist and the newest has ended."""
    deadline = time.monotonic() + 180
    while True:
        runs = graphql(base, "{ runsOrError { ... on Runs { results { runId status } } } }")["runsOrError"]["results"]
        if len(runs) >= count and runs[0]["status"] in ("SUCCESS", "FAILURE", "CANCELED"):
            return runs
        assert time.monotonic() < deadline, f"run {count} did not finish in 180 s: {runs}"
        time.sleep(0.5)


def materialize_all(page, base: str, runs: int) -> list[dict]:
    """Click "Materialize all" on the page open now, see the run launched, and wait until it ends."""
    page.get_by_role("button", name="Materialize all").click()
    expect(page.get_by_text("Launched run")).to_be_visible(timeout=60_000)
    return finished_runs(base, runs)


def stale_status(base: str) -> dict[str, str]:
    nodes = graphql(base, "{ assetNodes { assetKey { path } staleStatus } }")["assetNodes"]
    return {"/".join(node["assetKey"]["path"]): node["staleStatus"] for node in nodes}


def observe_sources(page, base: str, runs: int) -> list[dict]:
    """Observe bot_data_file from the asset graph: the menu beside "Materialize all" holds "Observe"."""
    page.goto(f"{base}/asset-groups/faceit_migration")
    materialize = page.get_by_role("button", name="Materialize all")
    expect(materialize).to_be_visible(timeout=60_000)
    materialize.locator("xpath=../following-sibling::*[1]//button").click()
    page.get_by_role("menuitem").filter(has_text=re.compile(r"^Observe")).click()
    return finished_runs(base, runs)


def graph_screenshot(page, base: str, name: str) -> None:
    """The whole asset graph as a person sees it, every asset's synced state on its node."""
    page.goto(f"{base}/asset-groups/faceit_migration")
    expect(page.get_by_text("postgres_tables").first).to_be_visible(timeout=60_000)
    page.wait_for_timeout(2000)  # the nodes' states arrive after the graph is drawn
    page.screenshot(path=str(ARTIFACTS / name))


def test_materialize_all_in_the_ui_succeeds_and_every_check_passes(dagster_ui, db, tmp_path):
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        # The bot's file is on the graph: observing it records its sha256 as its data version.
        assert [r["status"] for r in observe_sources(page, dagster_ui, 1)] == ["SUCCESS"]
        page.goto(f"{dagster_ui}/asset-groups/faceit_migration")
        expect(page.get_by_text("postgres_tables").first).to_be_visible(timeout=60_000)
        runs = materialize_all(page, dagster_ui, 2)
        assert [r["status"] for r in runs] == ["SUCCESS", "SUCCESS"]

        page.goto(f"{dagster_ui}/runs/{runs[0]['runId']}")
        expect(page.get_by_text("Success").first).to_be_visible(timeout=30_000)
        page.goto(f"{dagster_ui}/assets/postgres_tables?view=checks")
        names = [spec.name for spec in TABLE_CHECK_SPECS]
        names += [spec.name for spec in column_schema_change.check_specs]
        assert "column_schema_change" in names  # a first load has nothing to compare with: it passes
        for name in names:
            expect(page.get_by_text(name, exact=True).first).to_be_visible(timeout=30_000)
        expect(page.get_by_text("Succeeded")).to_have_count(len(names), timeout=30_000)
        expect(page.get_by_text("Passed").first).to_be_visible()
        page.screenshot(path=str(ARTIFACTS / "ui-checks-passed.png"))

        # Synced after the run; new content in the file makes the asset made from it unsynced.
        migration = {"source_backup", "raw_json", "validated_frame", "mapped_users", "mapped_subscriptions",
                     "postgres_tables"}
        assert stale_status(dagster_ui) == dict.fromkeys(migration | {"bot_data_file"}, "FRESH")
        page.goto(f"{dagster_ui}/assets/source_backup")
        expect(page.get_by_text("Latest materialization")).to_be_visible(timeout=30_000)
        expect(page.get_by_text("Unsynced")).to_have_count(0)
        page.screenshot(path=str(ARTIFACTS / "ui-synced-after-the-run.png"))
        graph_screenshot(page, dagster_ui, "ui-graph-synced-after-the-run.png")

        source = tmp_path / "data.json"
        os.utime(source)  # touched, same content: the same data version, nothing unsynced
        assert [r["status"] for r in observe_sources(page, dagster_ui, 3)] == ["SUCCESS"] * 3
        assert stale_status(dagster_ui) == dict.fromkeys(migration | {"bot_data_file"}, "FRESH")
        source.write_text(source.read_text(encoding="utf-8").replace('"faceit_nickname": "', '"faceit_nickname": "x'),
                          encoding="utf-8")
        assert [r["status"] for r in observe_sources(page, dagster_ui, 4)] == ["SUCCESS"] * 4
        # Every asset made from the file's content, not only the first: "Materialize unsynced" reloads them all.
        assert stale_status(dagster_ui) == {**dict.fromkeys(migration, "STALE"), "bot_data_file": "FRESH"}
        page.goto(f"{dagster_ui}/assets/bot_data_file")
        expect(page.get_by_text(hashlib.sha256(source.read_bytes()).hexdigest()[:12]).first).to_be_visible(timeout=30_000)
        page.screenshot(path=str(ARTIFACTS / "ui-bot-data-file-observed.png"))
        # An observable source (Observe, nothing to materialize) whose latest observation's data version,
        # shown among its tags, is the changed file's sha256.
        page.goto(f"{dagster_ui}/assets/bot_data_file?view=events")
        expect(page.get_by_role("button", name="Observe")).to_be_visible(timeout=30_000)
        expect(page.get_by_role("button", name="Materialize")).to_have_count(0)
        page.get_by_text("Show tags").click()
        version = page.locator("tr", has=page.get_by_text("data_version", exact=True))
        expect(version).to_contain_text(hashlib.sha256(source.read_bytes()).hexdigest(), timeout=30_000)
        page.screenshot(path=str(ARTIFACTS / "ui-bot-data-file-data-version.png"))
        page.goto(f"{dagster_ui}/assets/source_backup")
        expect(page.get_by_text("Unsynced").first).to_be_visible(timeout=30_000)
        page.screenshot(path=str(ARTIFACTS / "ui-unsynced-after-the-file-changed.png"))
        graph_screenshot(page, dagster_ui, "ui-graph-unsynced-after-the-file-changed.png")
        browser.close()

    assert db.execute("SELECT count(*) FROM users").fetchone()[0] == 25


def step_keys(base: str, run_id: str) -> list[str]:
    """The steps a run executed, as the UI's run page lists them."""
    query = '{ runOrError(runId: "%s") { ... on Run { stepStats { stepKey } } } }' % run_id
    return sorted(step["stepKey"] for step in graphql(base, query)["runOrError"]["stepStats"])


def re_execute_from_failure(page, base: str, run_id: str, runs: int) -> list[dict]:
    """On the failed run's page: the menu beside "Re-execute all (*)", then "From failure"."""
    page.goto(f"{base}/runs/{run_id}")
    reexecute = page.get_by_role("button", name=re.compile(r"^Re-execute"))
    expect(reexecute.first).to_be_visible(timeout=60_000)
    reexecute.first.locator("xpath=following-sibling::*[1]//button").click()
    page.get_by_role("menuitem", name="From failure").click()
    return finished_runs(base, runs)


def test_re_execute_from_failure_in_the_ui_resumes_only_the_load(dagster_ui, db, tmp_path):
    """The CLI's `migrate --resume` case, clicked in the UI: a 32-bit `users.user_id` stops the load;
    re-executed from failure while a row was written since, it is refused as the CLI's resume is; after
    the ALTER it prints, it runs only the load and its checks."""
    from faceit_etl.generate import generate_users
    from faceit_etl.postgres.ddl import ensure_target_tables

    users = [u for u in generate_users(200, seed=21) if u["user_id"] >= 2**31][:30]
    (tmp_path / "data.json").write_text(json.dumps({"users": users}), encoding="utf-8")
    with db.transaction():
        ensure_target_tables(db, "public")
        db.execute("ALTER TABLE users ALTER COLUMN user_id TYPE integer")  # as the bot's Alembic made it
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        page.goto(f"{dagster_ui}/asset-groups/faceit_migration")
        failed = materialize_all(page, dagster_ui, 1)[0]
        assert failed["status"] == "FAILURE"

        db.execute("INSERT INTO users (id, user_id) VALUES (gen_random_uuid(), 424242)")  # the bot wrote a row
        refused = re_execute_from_failure(page, dagster_ui, failed["runId"], 2)[0]
        assert refused["status"] == "FAILURE"
        page.goto(f"{dagster_ui}/runs/{refused['runId']}")
        expect(page.get_by_text("the tables changed since run").first).to_be_visible(timeout=60_000)
        page.screenshot(path=str(ARTIFACTS / "ui-resume-refused.png"))

        db.execute("DELETE FROM users WHERE user_id = 424242")
        db.execute('ALTER TABLE "public"."users" ALTER COLUMN "user_id" TYPE bigint;')  # what the failure says
        runs = re_execute_from_failure(page, dagster_ui, refused["runId"], 3)
        assert [r["status"] for r in runs] == ["SUCCESS", "FAILURE", "FAILURE"]
        page.goto(f"{dagster_ui}/runs/{runs[0]['runId']}")
        expect(page.get_by_text("Success").first).to_be_visible(timeout=30_000)
        expect(page.get_by_text("Loading run logs")).to_have_count(0, timeout=60_000)
        page.screenshot(path=str(ARTIFACTS / "ui-resumed-from-failure.png"))
        browser.close()

    # The file was not read, validated or backed up again: the load and its checks only (the column schema
    # check is a step of its own).
    assert step_keys(dagster_ui, runs[0]["runId"]) == ["postgres_tables", "postgres_tables_column_schema_change"]
    assert {"source_backup", "raw_json", "validated_frame", "mapped_frames"} < set(step_keys(dagster_ui, failed["runId"]))
    assert sorted(r[0] for r in db.execute("SELECT user_id FROM users")) == sorted(u["user_id"] for u in users)
    logs = {row[0]: row[1:] for row in db.execute("SELECT metadata->>'run_id', status, error_message FROM migration_logs")}
    assert logs[runs[0]["runId"]] == ("success", None)
    assert logs[refused["runId"]] == ("failed", (
        f"the tables changed since run {failed['runId']} took its snapshot (users: 1 rows now, 0 then); resuming it "
        "would not load what a new run loads; start a new run instead"))
    assert logs[failed["runId"]][0] == "failed"


POSTGRES_RESOURCE = """{ topLevelResourceDetailsOrError(resourceSelector: {repositoryLocationName: "faceit_etl",
    repositoryName: "__repository__", resourceName: "postgres"}) {
    ... on ResourceDetails { configuredValues { key value type } } } }"""


def test_the_database_password_is_nowhere_in_the_ui_or_the_instance(dagster_ui_with_password, tmp_path):
    """The target comes from DATABASE_URL in each run's own process: "Materialize all" reaches a database
    that demands the password, and neither the resource page (the variable's name), run config,
    events, metadata, logs nor any file of the instance holds it."""
    secret = BOT_PASSWORD.split()[0]  # its random part: found in any encoding that keeps it
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        page.goto(f"{dagster_ui_with_password}/asset-groups/faceit_migration")
        (run,) = materialize_all(page, dagster_ui_with_password, 1)
        assert run["status"] == "SUCCESS"

        page.goto(f"{dagster_ui_with_password}/locations/faceit_etl/resources/postgres")
        expect(page.get_by_text("DATABASE_URL").first).to_be_visible(timeout=30_000)
        page.screenshot(path=str(ARTIFACTS / "ui-postgres-resource.png"))
        assert secret not in page.content()
        page.goto(f"{dagster_ui_with_password}/runs/{run['runId']}")
        expect(page.get_by_text("Success").first).to_be_visible(timeout=30_000)
        assert secret not in page.content()
        browser.close()

    configured = graphql(dagster_ui_with_password, POSTGRES_RESOURCE)["topLevelResourceDetailsOrError"]
    assert configured["configuredValues"] == [{"key": "url_from_environment_variable", "value": '"DATABASE_URL"', "type": "VALUE"}]
    holding = [path for path in tmp_path.rglob("*") if path.is_file() and secret.encode() in path.read_bytes()]
    assert holding == []


def run_tags(base: str, run_id: str) -> dict[str, str]:
    run = graphql(base, f'{{ runOrError(runId: "{run_id}") {{ ... on Run {{ jobName tags {{ key value }} }} }} }}')["runOrError"]
    return {"job": run["jobName"], **{tag["key"]: tag["value"] for tag in run["tags"]}}


def test_a_migration_from_migrate_job_shows_its_file_and_a_rejected_file_says_why_on_the_run_page(
    dagster_ui, db, tmp_path
):
    ARTIFACTS.mkdir(exist_ok=True)
    source = tmp_path / "data.json"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1600, "height": 1000})

        # A migration started from migrate_job's page runs as migrate_job, tagged with the file it migrated.
        page.goto(f"{dagster_ui}/locations/faceit_etl/jobs/migrate_job")
        runs = materialize_all(page, dagster_ui, 1)
        assert runs[0]["status"] == "SUCCESS"
        tags = run_tags(dagster_ui, runs[0]["runId"])
        sha256 = hashlib.sha256(source.read_bytes()).hexdigest()
        assert (tags["job"], tags["faceit_etl/source_file"], tags["faceit_etl/source_sha256"]) == (
            "migrate_job", str(source), sha256
        )
        page.goto(f"{dagster_ui}/runs")
        expect(page.get_by_text(f"faceit_etl/source_file: {source}").first).to_be_visible(timeout=30_000)
        page.screenshot(path=str(ARTIFACTS / "ui-runs-list-with-the-files-tag.png"))
        page.goto(f"{dagster_ui}/assets/postgres_tables")
        expect(page.get_by_text("Latest materialization")).to_be_visible(timeout=30_000)
        page.wait_for_timeout(2000)
        figures = page.get_by_text("user_subscriptions_rows").first
        expect(figures).to_be_visible(timeout=30_000)
        figures.scroll_into_view_if_needed()  # the page scrolls inside its own pane: full_page shows the top only
        page.screenshot(path=str(ARTIFACTS / "ui-tables-figures.png"))

        # Three broken entries: the run page says why, in words, without a click.
        users = json.loads(source.read_text(encoding="utf-8"))["users"]
        users[2]["user_id"] = -7
        users[4]["subscription"]["tier"] = "gold"
        users[6]["total_requests"] = "many"
        source.write_text(json.dumps({"users": users}), encoding="utf-8")
        page.goto(f"{dagster_ui}/locations/faceit_etl/jobs/migrate_job")
        runs = materialize_all(page, dagster_ui, 2)
        assert runs[0]["status"] == "FAILURE"
        page.goto(f"{dagster_ui}/runs/{runs[0]['runId']}")
        reason = page.get_by_text(re.compile(
            r"^3 of 25 entries rejected, more than max_rejects 0 allows; nothing was written\. "
            r"entry 3 \(no valid user_id\): user_id: must be a positive Telegram id; entry 5 \(user_id \d+\): tier: "
        )).first
        expect(reason).to_be_visible(timeout=30_000)
        expect(page.get_by_text("Fix these entries in the file and run again, or set force").first).to_be_visible()
        expect(page.get_by_text("DagsterAssetCheckFailedError")).to_have_count(0)
        page.screenshot(path=str(ARTIFACTS / "ui-rejected-file-run-page.png"))
        page.goto(f"{dagster_ui}/assets/validated_frame?view=checks")
        expect(page.get_by_text("no_rejected_entries").first).to_be_visible(timeout=30_000)
        page.screenshot(path=str(ARTIFACTS / "ui-rejected-file-checks.png"), full_page=True)
        # The tables are as the first load left them: their checks keep its verdicts, none marked failed.
        page.goto(f"{dagster_ui}/assets/postgres_tables?view=checks")
        names = [spec.name for spec in TABLE_CHECK_SPECS] + ["column_schema_change"]
        for name in names:
            expect(page.get_by_text(name, exact=True).first).to_be_visible(timeout=30_000)
        expect(page.get_by_text("Succeeded")).to_have_count(len(names), timeout=30_000)
        expect(page.get_by_text("Execution failed")).to_have_count(0)
        expect(page.get_by_text("Failed", exact=True)).to_have_count(0)
        page.screenshot(path=str(ARTIFACTS / "ui-tables-checks-after-a-rejected-file.png"), full_page=True)
        assert db.execute("SELECT count(*) FROM users").fetchone()[0] == 25  # the first load's, untouched

        # Rollback: the migration is chosen from the list on the tables' page, in rollback_job's own launchpad.
        [(migration_id, run_id)] = db.execute(
            "SELECT id::text, metadata->>'run_id' FROM migration_logs WHERE status = 'success'"
        ).fetchall()
        page.goto(f"{dagster_ui}/assets/postgres_tables")
        expect(page.get_by_text("recent_migrations").first).to_be_visible(timeout=30_000)
        listed = page.get_by_text(migration_id).first
        expect(listed).to_be_visible(timeout=30_000)
        listed.scroll_into_view_if_needed()
        page.screenshot(path=str(ARTIFACTS / "ui-recent-migrations.png"))
        page.goto(f"{dagster_ui}/locations/faceit_etl/jobs/rollback_job/playground")
        editor = page.locator(".CodeMirror").first
        expect(editor).to_contain_text("migration_id", timeout=30_000)
        expect(editor).to_contain_text("discard_later_changes")
        expect(editor).not_to_contain_text("max_rejects")  # the migration's settings stay out of it
        editor.click()
        page.keyboard.press("Control+A")
        page.keyboard.insert_text(  # as a person types it: one option a line, all of it in sight
            f'ops:\n  restore_tables:\n    config:\n      migration_id: "{migration_id}"\n      discard_later_changes: false\n'
        )
        page.screenshot(path=str(ARTIFACTS / "ui-rollback-launchpad.png"))
        page.get_by_role("button", name=re.compile("Launch Run", re.I)).click()
        runs = finished_runs(dagster_ui, 3)
        assert runs[0]["status"] == "SUCCESS"
        page.goto(f"{dagster_ui}/runs/{runs[0]['runId']}")
        expect(page.get_by_text(f"rolled back to the snapshot taken before run {run_id}").first).to_be_visible(timeout=30_000)
        page.screenshot(path=str(ARTIFACTS / "ui-rollback-run.png"))
        browser.close()

    # The first load created the tables: undoing it leaves none.
    assert db.execute("SELECT to_regclass('users')").fetchone()[0] is None
    assert db.execute("SELECT status FROM migration_logs WHERE id = %s", [migration_id]).fetchone()[0] == "rolled_back"


def data_version(base: str, asset: str) -> str | None:
    query = '{ assetNodeOrError(assetKey: {path: ["%s"]}) { ... on AssetNode { dataVersion } } }' % asset
    return graphql(base, query)["assetNodeOrError"]["dataVersion"]


def test_after_a_rollback_the_tables_show_unsynced_and_materialize_unsynced_loads_the_file_again(dagster_ui, db, tmp_path):
    """A rollback puts earlier data in the tables: the UI shows them as that (a data version naming the
    snapshot, unsynced with the file), not as a load of the file, and "Materialize unsynced" loads it again."""
    ARTIFACTS.mkdir(exist_ok=True)
    migration = {"source_backup", "raw_json", "validated_frame", "mapped_users", "mapped_subscriptions"}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        page.goto(f"{dagster_ui}/locations/faceit_etl/jobs/migrate_job")
        page.get_by_role("button", name="Materialize all").click()
        expect(page.get_by_text("Launched run")).to_be_visible(timeout=60_000)
        (loaded,) = finished_runs(dagster_ui, 1)
        assert loaded["status"] == "SUCCESS"
        assert stale_status(dagster_ui) == dict.fromkeys(migration | {"bot_data_file", "postgres_tables"}, "FRESH")

        page.goto(f"{dagster_ui}/locations/faceit_etl/jobs/rollback_job/playground")
        expect(page.locator(".CodeMirror").first).to_contain_text("migration_id", timeout=30_000)
        page.get_by_role("button", name=re.compile("Launch Run", re.I)).click()
        rolled_back = finished_runs(dagster_ui, 2)[0]
        assert rolled_back["status"] == "SUCCESS"
        assert db.execute("SELECT to_regclass('users')").fetchone()[0] is None  # the first load made the tables

        # The tables are what the snapshot held, unsynced with the file; nothing made from the file changed.
        assert stale_status(dagster_ui) == {**dict.fromkeys(migration | {"bot_data_file"}, "FRESH"),
                                            "postgres_tables": "STALE"}
        assert data_version(dagster_ui, "postgres_tables") == (
            f"rolled back to the snapshot taken before run {loaded['runId']}"
        )
        page.goto(f"{dagster_ui}/assets/postgres_tables")
        expect(page.get_by_text("Unsynced").first).to_be_visible(timeout=30_000)
        page.screenshot(path=str(ARTIFACTS / "ui-tables-unsynced-after-a-rollback.png"))

        page.goto(f"{dagster_ui}/asset-groups/faceit_migration")
        materialize = page.get_by_role("button", name="Materialize all")
        expect(materialize).to_be_visible(timeout=60_000)
        materialize.locator("xpath=../following-sibling::*[1]//button").click()
        page.get_by_role("menuitem", name="Materialize unsynced").click()
        launch = page.get_by_role("button", name=re.compile(r"^Materialize"))
        expect(launch.last).to_be_visible(timeout=30_000)
        page.screenshot(path=str(ARTIFACTS / "ui-materialize-unsynced-after-a-rollback.png"))
        launch.last.click()
        reloaded = finished_runs(dagster_ui, 3)[0]
        assert reloaded["status"] == "SUCCESS"
        browser.close()

    assert step_keys(dagster_ui, reloaded["runId"])[0] == "postgres_tables"  # only the load (and its checks)
    assert stale_status(dagster_ui) == dict.fromkeys(migration | {"bot_data_file", "postgres_tables"}, "FRESH")
    assert db.execute("SELECT count(*) FROM users").fetchone()[0] == 25
