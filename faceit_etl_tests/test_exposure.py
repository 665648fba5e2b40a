"""Who can reach the deployed UI and what they can do there, with the real programs: a read-only
dagster-webserver asked through its GraphQL API to launch the migration, and Debian's own Caddy binary
run with docker/Caddyfile in front of it, all on 127.0.0.1."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from faceit_etl_tests.conftest import NESTED_SAMPLE
from faceit_etl_tests.test_compose import (LAUNCH, MIGRATE_JOB, SERVICES, answers, free_port, graphql,
                                           launch_migrate, request, wait_until)

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
CADDY = "/usr/bin/caddy"

RUNS = "{ runsOrError { ... on Runs { results { runId jobName } } } }"


def run_ids(base: str, auth=None) -> list[str]:
    return [run["runId"] for run in graphql(base, RUNS, auth=auth)["runsOrError"]["results"]]


class Processes:
    """Servers started in their own session, stopped with SIGTERM (SIGKILL after 30 s)."""

    def __init__(self, folder: Path, env: dict):
        self.folder, self.env, self.started = folder, env, []

    def start(self, command: list[str], env: dict | None = None) -> subprocess.Popen:
        log = self.folder / f"{Path(command[0]).name}-{len(self.started)}.log"
        with log.open("w") as out:
            process = subprocess.Popen(command, cwd=self.folder, env=env or self.env, stdout=out,
                                       stderr=subprocess.STDOUT, start_new_session=True)
        process.log = log
        self.started.append(process)
        return process

    def stop(self) -> None:
        for process in self.started:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.started:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)


def webserver_command(service: str, port: int) -> list[str]:
    """The service's command as docker-compose.yml says, on the project's own workspace and 127.0.0.1."""
    replace = {"0.0.0.0": "127.0.0.1", "3000": str(port), "workspace.yaml": str(ROOT / "workspace.yaml")}
    return [replace.get(part, part) for part in SERVICES[service]["command"]]


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """One Dagster instance (the project's dagster.yaml, SQLite storage) shared by every webserver."""
    folder = tmp_path_factory.mktemp("exposure")
    shutil.copy(ROOT / "dagster.yaml", folder / "dagster.yaml")
    env = {**os.environ, "DAGSTER_HOME": str(folder), "DATA_FILE_PATH": str(NESTED_SAMPLE),
           "PATH": f"{BIN}:{os.environ['PATH']}"}
    env.pop("DAGSTER_POSTGRES_URL", None)
    processes = Processes(folder, env)
    yield folder, processes
    processes.stop()


@pytest.fixture(scope="module")
def readonly(home):
    """The public profile's webserver_readonly service, running its command."""
    _, processes = home
    port = free_port()
    command = webserver_command("webserver_readonly", port)
    assert "--read-only" in command
    processes.start(command)
    base = f"http://127.0.0.1:{port}"
    wait_until(lambda: answers(base), "the read-only webserver answers /server_info", seconds=180)
    return base


def test_the_read_only_webserver_refuses_to_launch_a_run_that_the_normal_one_accepts(home, readonly):
    _, processes = home

    refused = launch_migrate(readonly)

    assert refused == {"__typename": "UnauthorizedError", "message": "Authorization failed"}
    assert run_ids(readonly) == []  # nothing was created in the instance

    # Control, same instance and mutation: the local webserver (the one published on loopback) accepts it.
    port = free_port()
    processes.start(webserver_command("webserver", port))
    normal = f"http://127.0.0.1:{port}"
    wait_until(lambda: answers(normal), "the normal webserver answers /server_info", seconds=180)
    accepted = launch_migrate(normal)
    assert accepted["__typename"] == "LaunchRunSuccess", accepted
    assert run_ids(readonly) == [accepted["run"]["runId"]]  # observers see it, they just cannot start one


def hash_password(password: str) -> str:
    done = subprocess.run([CADDY, "hash-password", "--plaintext", password], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.fixture(scope="module")
def caddy_env(home):
    """What the proxy service gets, with loopback addresses: its environment from docker-compose.yml
    (the upstream is the read-only webserver), the login from the operator's environment."""
    folder, _ = home
    compose_env = SERVICES["proxy"]["environment"]
    assert compose_env["FACEIT_ETL_UPSTREAM"] == "webserver_readonly:3000"
    return {
        "PATH": os.environ["PATH"], "HOME": str(folder), "XDG_DATA_HOME": str(folder / "caddy-data"),
        "XDG_CONFIG_HOME": str(folder / "caddy-config"),
        "FACEIT_ETL_PROXY_ADMIN": f"127.0.0.1:{free_port()}",
        "FACEIT_ETL_UI_USER": "observer", "FACEIT_ETL_UI_PASSWORD_HASH": hash_password("s3cret pass"),
    }


def start_caddy(processes: Processes, env: dict) -> subprocess.Popen:
    """The proxy service's command, with Debian's caddy and the repository's Caddyfile (mounted there)."""
    replace = {"caddy": CADDY, "/etc/caddy/Caddyfile": str(ROOT / "docker" / "Caddyfile")}
    return processes.start([replace.get(part, part) for part in SERVICES["proxy"]["command"]], env=env)


def test_the_proxy_lets_through_only_the_login_and_only_to_the_read_only_webserver(home, readonly, caddy_env):
    _, processes = home
    port = free_port()
    proxy = f"http://127.0.0.1:{port}"
    upstream = readonly.removeprefix("http://")
    start_caddy(processes, {**caddy_env, "FACEIT_ETL_PUBLIC_ADDRESS": proxy, "FACEIT_ETL_UPSTREAM": upstream})
    wait_until(lambda: _status(f"{proxy}/server_info") is not None, "Caddy answers")

    status, body = request(f"{proxy}/server_info")
    assert (status, body) == (401, "")
    for wrong in [("observer", "wrong"), ("admin", "s3cret pass"), ("observer", ""), ("", "")]:
        assert request(f"{proxy}/server_info", auth=wrong)[0] == 401, wrong
    no_login = request(f"{proxy}/graphql", {"query": LAUNCH, "variables": {"params": MIGRATE_JOB}})
    assert no_login[0] == 401

    # The compose health check's URL (Caddy's admin API, never published) answers without a login.
    health = SERVICES["proxy"]["healthcheck"]["test"][-1].replace("localhost:2019", caddy_env["FACEIT_ETL_PROXY_ADMIN"])
    assert request(health)[0] == 200

    login = ("observer", "s3cret pass")
    status, body = request(f"{proxy}/server_info", auth=login)
    assert status == 200 and "dagster_webserver_version" in body
    assert launch_migrate(proxy, login) == {"__typename": "UnauthorizedError", "message": "Authorization failed"}


def _status(url: str) -> int | None:
    try:
        return request(url)[0]
    except OSError:
        return None


@pytest.mark.parametrize("missing, caddy_refuses_to_start", [
    (["FACEIT_ETL_UI_PASSWORD_HASH"], True), (["FACEIT_ETL_UI_USER"], True),
    (["FACEIT_ETL_UI_USER", "FACEIT_ETL_UI_PASSWORD_HASH"], False),  # no account: every request refused
])
def test_the_proxy_without_a_login_configured_lets_nothing_through(home, readonly, caddy_env, missing,
                                                                   caddy_refuses_to_start):
    """An empty hash or user name (docker-compose.yml passes an unset one as empty) never opens the UI."""
    _, processes = home
    port = free_port()
    proxy = f"http://127.0.0.1:{port}"
    env = {**caddy_env, "FACEIT_ETL_PUBLIC_ADDRESS": proxy, "FACEIT_ETL_UPSTREAM": readonly.removeprefix("http://"),
           **dict.fromkeys(missing, "")}
    caddy = start_caddy(processes, env)

    wait_until(lambda: caddy.poll() is not None or _status(f"{proxy}/server_info") is not None, "Caddy starts or exits")
    if caddy_refuses_to_start:
        assert caddy.wait(30) == 1
        assert "username and password cannot be empty" in caddy.log.read_text()
    else:
        assert caddy.poll() is None
        for auth in [None, ("observer", "s3cret pass"), ("", "")]:
            assert request(f"{proxy}/server_info", auth=auth)[0] == 401, auth
