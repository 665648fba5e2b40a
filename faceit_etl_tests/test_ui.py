"""The user's day in the Dagster UI, in a real Chromium: open the asset graph, click "Materialize
all", see the run succeed and every asset check pass. Keeps a screenshot in test-artifacts/."""

from __future__ import annotations

import json
import os
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

from faceit_etl.defs.checks import CHECKS
from faceit_etl_tests.conftest import NESTED_SAMPLE

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
    shutil.copy(ROOT / "dagster.yaml", tmp_path / "dagster.yaml")
    port = free_port()
    env = {
        **os.environ,
        "DAGSTER_HOME": str(tmp_path),
        "DATABASE_URL": database_url,
        "DATA_FILE_PATH": str(NESTED_SAMPLE),
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


def test_materialize_all_in_the_ui_succeeds_and_every_check_passes(dagster_ui, db):
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        page.goto(f"{dagster_ui}/asset-groups/faceit_migration")
        expect(page.get_by_text("postgres_tables").first).to_be_visible(timeout=60_000)
        page.get_by_role("button", name="Materialize all").click()
        expect(page.get_by_text("Launched run")).to_be_visible(timeout=30_000)

        deadline = time.monotonic() + 180
        while True:
            runs = graphql(dagster_ui, "{ runsOrError { ... on Runs { results { runId status } } } }")
            runs = runs["runsOrError"]["results"]
            if runs and runs[0]["status"] in ("SUCCESS", "FAILURE", "CANCELED"):
                break
            assert time.monotonic() < deadline, f"the run did not finish in 180 s: {runs}"
            time.sleep(0.5)
        assert [r["status"] for r in runs] == ["SUCCESS"]

        page.goto(f"{dagster_ui}/runs/{runs[0]['runId']}")
        expect(page.get_by_text("Success").first).to_be_visible(timeout=30_000)
        page.goto(f"{dagster_ui}/assets/postgres_tables?view=checks")
        names = [spec.name for check in CHECKS for spec in check.check_specs if spec.asset_key.path == ["postgres_tables"]]
        for name in names:
            expect(page.get_by_text(name, exact=True).first).to_be_visible(timeout=30_000)
        expect(page.get_by_text("Succeeded")).to_have_count(len(names), timeout=30_000)
        expect(page.get_by_text("Passed").first).to_be_visible()
        page.screenshot(path=str(ARTIFACTS / "ui-checks-passed.png"))
        browser.close()

    assert db.execute("SELECT count(*) FROM users").fetchone()[0] == 25
