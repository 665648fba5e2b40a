"""docker-compose.yml, checked without Docker (no engine runs here): the file is validated by
docker-compose itself, and the exact commands its services run are started directly, against
Dagster storage in PostgreSQL as in the stack."""

from __future__ import annotations

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
import yaml

from faceit_etl_tests.test_instance import _as_url

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]


def compose_config(**env) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["docker-compose", "-f", str(ROOT / "docker-compose.yml"), "config"],
        cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True, timeout=60,
    )


@pytest.mark.db  # starts a process
def test_docker_compose_accepts_the_file_and_demands_a_password():
    done = compose_config(POSTGRES_PASSWORD="pw-from-env")
    assert done.returncode == 0, done.stderr
    resolved = yaml.safe_load(done.stdout)
    assert set(resolved["services"]) == {"postgres", "user_code", "webserver", "daemon"}
    env = resolved["services"]["webserver"]["environment"]
    assert env["DAGSTER_POSTGRES_URL"].startswith("postgresql+psycopg2://faceit:pw-from-env@postgres:5432/dagster")
    assert env["DATABASE_URL"] == "postgresql://faceit:pw-from-env@postgres:5432/faceit_bot"

    missing = compose_config(POSTGRES_PASSWORD="")
    assert missing.returncode != 0 and "set POSTGRES_PASSWORD" in missing.stderr


def test_every_service_has_a_health_check_and_waits_for_what_it_needs():
    for name, service in SERVICES.items():
        assert "healthcheck" in service, name
    for name in ("user_code", "webserver", "daemon"):
        assert SERVICES[name]["depends_on"]["postgres"] == {"condition": "service_healthy"}
    for name in ("webserver", "daemon"):
        assert SERVICES[name]["depends_on"]["user_code"] == {"condition": "service_healthy"}
    workspace = yaml.safe_load((ROOT / "docker" / "workspace.yaml").read_text())
    server = workspace["load_from"][0]["grpc_server"]
    assert (server["host"], server["port"]) == ("user_code", 4000)
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "COPY dagster.yaml docker/workspace.yaml ./" in dockerfile
    assert "-c constraints.txt" in dockerfile
    credentials = re.findall(r"faceit:([^@]*)@", (ROOT / "docker-compose.yml").read_text())
    assert credentials == ["${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD}"] * 2  # no password in the file


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def service_command(name: str, **replace: str) -> list[str]:
    """The service's command as docker-compose.yml says, with its host/port swapped for local ones."""
    return [replace.get(part, part) for part in SERVICES[name]["command"]]


@pytest.fixture
def stack_home(tmp_path, database_url):
    """What the containers share: DAGSTER_HOME with the project's dagster.yaml, Dagster's storage in
    PostgreSQL, and a workspace pointing at the user-code server."""
    shutil.copy(ROOT / "dagster.yaml", tmp_path / "dagster.yaml")
    env = {
        **os.environ,
        "DAGSTER_HOME": str(tmp_path),
        "DAGSTER_POSTGRES_URL": _as_url(database_url),
        "DATABASE_URL": database_url,
        "DATA_FILE_PATH": str(ROOT / "samples" / "bot_nested_subscription_format.json"),
        "PATH": f"{BIN}:{os.environ['PATH']}",
    }
    processes: list[subprocess.Popen] = []

    def start(command: list[str]) -> subprocess.Popen:
        log = (tmp_path / f"{Path(command[0]).name}-{len(processes)}.log").open("w")
        process = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        processes.append(process)
        return process

    yield tmp_path, env, start
    for process in processes:
        os.killpg(process.pid, signal.SIGTERM)
    for process in processes:
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


def wait_until(probe, what: str, seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    while not probe():
        assert time.monotonic() < deadline, f"{what} within {seconds} s"
        time.sleep(1)


def test_the_services_commands_run_together(stack_home, db):
    home, env, start = stack_home
    grpc_port, web_port = free_port(), free_port()
    (home / "workspace.yaml").write_text(
        (ROOT / "docker" / "workspace.yaml").read_text().replace("host: user_code", "host: 127.0.0.1")
        .replace("port: 4000", f"port: {grpc_port}")
    )

    start(service_command("user_code", **{"0.0.0.0": "127.0.0.1", "4000": str(grpc_port)}))
    health = [c.replace("4000", str(grpc_port)) for c in SERVICES["user_code"]["healthcheck"]["test"][1:]]
    wait_until(lambda: subprocess.run(health, env=env, capture_output=True).returncode == 0,
               "the user-code server answers its health check")

    start(service_command("webserver", **{"0.0.0.0": "127.0.0.1", "3000": str(web_port)}))
    start(service_command("daemon"))

    def webserver_up() -> bool:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{web_port}/server_info", timeout=2)
            return True
        except OSError:
            return False

    wait_until(webserver_up, "the webserver answers /server_info")
    liveness = SERVICES["daemon"]["healthcheck"]["test"][1:]
    wait_until(lambda: subprocess.run(liveness, env=env, cwd=home, capture_output=True).returncode == 0,
               "the daemon reports recent heartbeats", seconds=120)
    # Dagster's storage is the PostgreSQL database, as in the stack.
    assert db.execute("SELECT count(*) FROM daemon_heartbeats").fetchone()[0] >= 1
