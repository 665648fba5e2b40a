"""Who can reach the deployed UI and what they can do there, with the real programs: a read-only
dagster-webserver asked through its GraphQL API to launch the migration, Debian's own Caddy binary
run with docker/Caddyfile (public) and docker/Caddyfile.local (the loopback proxy of the writable
webserver) in front of them, and Chromium through the loopback proxy, all on 127.0.0.1."""

from __future__ import annotations

import base64
import http.client
import json
import os
import socket
import ssl
import urllib.parse
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from playwright.sync_api import expect, sync_playwright

from faceit_etl_tests.conftest import NESTED_SAMPLE
from faceit_etl_tests.test_compose import (LAUNCH, MIGRATE_JOB, SERVICES, answers, free_port, graphql,
                                           launch_migrate, request, wait_until)

pytestmark = [pytest.mark.db,  # every test here starts a tool or a server
              pytest.mark.xdist_group("exposure")]  # one worker starts the module's servers, once

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


def test_the_read_only_webserver_refuses_to_launch_a_run_that_the_normal_one_accepts(readonly, writable):
    before = run_ids(readonly)
    refused = launch_migrate(readonly)

    assert refused == {"__typename": "UnauthorizedError", "message": "Authorization failed"}
    assert run_ids(readonly) == before  # nothing was created in the instance

    # Control, same instance and mutation: the local (writable) webserver accepts it.
    accepted = launch_migrate(writable)
    assert accepted["__typename"] == "LaunchRunSuccess", accepted
    assert accepted["run"]["runId"] in run_ids(readonly)  # observers see it, they just cannot start one


@pytest.fixture(scope="module")
def writable(home):
    """The default profile's webserver service (not published: behind ui_proxy), running its command."""
    _, processes = home
    port = free_port()
    processes.start(webserver_command("webserver", port))
    base = f"http://127.0.0.1:{port}"
    wait_until(lambda: answers(base), "the writable webserver answers /server_info", seconds=180)
    return base


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


def start_caddy(processes: Processes, env: dict, service: str = "proxy") -> subprocess.Popen:
    """The proxy service's command, with Debian's caddy and the repository's Caddyfile that
    docker-compose.yml mounts at /etc/caddy/Caddyfile (docker/guard.caddy mounted beside it)."""
    mounts = {v.split(":")[1]: v.split(":")[0] for v in SERVICES[service]["volumes"]}
    assert mounts["/etc/caddy/guard.caddy"] == "./docker/guard.caddy"
    replace = {"caddy": CADDY, "/etc/caddy/Caddyfile": str(ROOT / mounts["/etc/caddy/Caddyfile"])}
    return processes.start([replace.get(part, part) for part in SERVICES[service]["command"]], env=env)


def send(url: str, method: str = "GET", body: bytes | None = None, headers: dict | None = None,
         context: ssl.SSLContext | None = None) -> tuple[int, str, dict]:
    """One HTTP request exactly as given (any Host, Origin, Content-Type): status, body, headers."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "https":
        conn = http.client.HTTPSConnection(parts.hostname, parts.port, timeout=30, context=context)
    else:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        conn.request(method, parts.path + (f"?{parts.query}" if parts.query else ""), body=body,
                     headers=headers or {})
        answer = conn.getresponse()
        return answer.status, answer.read().decode(), dict(answer.getheaders())
    finally:
        conn.close()


def websocket_upgrade(base: str, headers: dict) -> str:
    """The status line answering the websocket handshake the UI opens at /graphql for subscriptions."""
    parts = urllib.parse.urlsplit(base)
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        lines = ["GET /graphql HTTP/1.1", f"Host: {parts.netloc}", "Upgrade: websocket", "Connection: Upgrade",
                 "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version: 13",
                 "Sec-WebSocket-Protocol: graphql-ws", *(f"{k}: {v}" for k, v in headers.items())]
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        return sock.recv(4096).decode(errors="replace").split("\r\n", 1)[0]


ROLLBACK = ('mutation { launchRun(executionParams: {selector: {repositoryLocationName: "faceit_etl", '
            'repositoryName: "__repository__", jobName: "rollback_job"}}) { __typename } }')


@pytest.fixture(scope="module")
def local_proxy(home, writable):
    """The default profile's ui_proxy service in front of the writable webserver."""
    folder, processes = home
    assert SERVICES["ui_proxy"]["environment"] == {"FACEIT_ETL_UPSTREAM": "webserver:3000"}
    assert SERVICES["ui_proxy"]["ports"] == ["127.0.0.1:3000:3000"]
    port = free_port()
    env = {"PATH": os.environ["PATH"], "HOME": str(folder), "XDG_DATA_HOME": str(folder / "caddy-local-data"),
           "XDG_CONFIG_HOME": str(folder / "caddy-local-config"), "FACEIT_ETL_PROXY_ADMIN": f"127.0.0.1:{free_port()}",
           "FACEIT_ETL_LOCAL_PORT": str(port), "FACEIT_ETL_UPSTREAM": writable.removeprefix("http://")}
    start_caddy(processes, env, "ui_proxy")
    base = f"http://127.0.0.1:{port}"
    wait_until(lambda: _status(f"{base}/server_info") is not None, "the loopback proxy answers")
    return base


def test_the_local_proxy_refuses_every_request_a_web_page_could_forge(writable, local_proxy):
    """CSRF (an <img src>, an auto-submitted form, a script on another site) and DNS rebinding, each
    first shown to work against the webserver itself, then refused by the proxy; nothing launched."""
    own = local_proxy.removeprefix("http://")
    forged_get = "/graphql?" + urllib.parse.urlencode({"query": ROLLBACK})
    direct = send(writable + forged_get)
    assert direct[0] == 200 and json.loads(direct[1])["data"]["launchRun"]["__typename"] == "LaunchRunSuccess"
    # fetch(..., {mode: "no-cors"}) may send this type without asking; the webserver reads it as JSON.
    sneaky_type = "text/plain; charset=application/json"
    direct = send(writable + "/graphql", "POST", json.dumps({"query": ROLLBACK}).encode(),
                  {"Content-Type": sneaky_type, "Origin": "http://evil.example"})
    assert direct[0] == 200 and json.loads(direct[1])["data"]["launchRun"]["__typename"] == "LaunchRunSuccess"
    before = run_ids(writable)

    body = json.dumps({"query": ROLLBACK}).encode()
    forgeries = {
        "GraphQL over GET": (forged_get, "GET", None, {}),
        "GraphQL over GET, same origin": (forged_get, "GET", None, {"Origin": local_proxy}),
        "text/plain POST (a form)": ("/graphql", "POST", body, {"Content-Type": "text/plain"}),
        "text/plain naming JSON": ("/graphql", "POST", body, {"Content-Type": sneaky_type}),
        "form-encoded POST": ("/graphql", "POST", b"query=x", {"Content-Type": "application/x-www-form-urlencoded"}),
        "multipart POST": ("/report_asset_materialization/users", "POST", b"", {"Content-Type": "multipart/form-data"}),
        "POST without a type": ("/graphql", "POST", body, {}),
        "JSON from another origin": ("/graphql", "POST", body,
                                     {"Content-Type": "application/json", "Origin": "http://evil.example"}),
        "JSON from another port": ("/graphql", "POST", body,
                                   {"Content-Type": "application/json", "Origin": "http://127.0.0.1:1"}),
        "DNS rebinding": ("/graphql", "POST", body, {"Content-Type": "application/json", "Host": "evil.example:3000",
                                                    "Origin": "http://evil.example:3000"}),
        "DNS rebinding read": ("/runs", "GET", None, {"Host": "evil.example:3000"}),
    }
    statuses = {name: send(local_proxy + path, method, data, headers)[0]
                for name, (path, method, data, headers) in forgeries.items()}
    assert statuses == {
        "GraphQL over GET": 403, "GraphQL over GET, same origin": 403, "text/plain POST (a form)": 415,
        "text/plain naming JSON": 415, "form-encoded POST": 415, "multipart POST": 415, "POST without a type": 415,
        "JSON from another origin": 403,
        "JSON from another port": 403, "DNS rebinding": 421, "DNS rebinding read": 421}
    assert send(local_proxy + forged_get)[1] == "refused: GraphQL over GET (only the websocket upgrade)"
    assert websocket_upgrade(local_proxy, {"Origin": "http://evil.example"}).startswith("HTTP/1.1 403")
    assert run_ids(writable) == before  # nothing was launched

    # The UI's own traffic passes: its page, its JSON POSTs (a launch), its websocket subscriptions.
    for host in [own, own.replace("127.0.0.1", "localhost")]:
        status, page, _ = send(local_proxy + "/runs", headers={"Host": host})
        assert status == 200 and ">Dagster</title>" in page, host
    status, text, _ = send(local_proxy + "/graphql", "POST", json.dumps({"query": LAUNCH, "variables": {
        "params": MIGRATE_JOB}}).encode(), {"Content-Type": "application/json", "Origin": local_proxy})
    assert status == 200 and json.loads(text)["data"]["launchRun"]["__typename"] == "LaunchRunSuccess", text
    assert websocket_upgrade(local_proxy, {"Origin": local_proxy}) == "HTTP/1.1 101 Switching Protocols"
    assert websocket_upgrade(local_proxy, {}) == "HTTP/1.1 101 Switching Protocols"


def caddy_ca(env: dict) -> ssl.SSLContext:
    """Trusts the local CA that Caddy made for an IP address's certificate (a domain gets a public one)."""
    return ssl.create_default_context(cafile=str(Path(env["XDG_DATA_HOME"]) / "caddy/pki/authorities/local/root.crt"))


def https_answers(url: str, env: dict) -> bool:
    try:
        return send(url, context=caddy_ca(env))[0] > 0
    except OSError:
        return False


def basic(user: str, password: str) -> dict:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def start_public_proxy(processes: Processes, caddy_env: dict, readonly: str, **env: str) -> tuple[str, dict]:
    port = free_port()
    env = {**caddy_env, "FACEIT_ETL_PUBLIC_ADDRESS": f"127.0.0.1:{port}",
           "FACEIT_ETL_PROXY_HTTP_PORT": str(free_port()),
           "FACEIT_ETL_UPSTREAM": readonly.removeprefix("http://"), **env}
    start_caddy(processes, env)
    proxy = "https://" + env["FACEIT_ETL_PUBLIC_ADDRESS"].split()[0]
    wait_until(lambda: https_answers(f"{proxy}/server_info", env), "Caddy answers over HTTPS")
    return proxy, env


def test_the_proxy_lets_through_only_the_login_and_only_to_the_read_only_webserver(home, readonly, caddy_env):
    _, processes = home
    proxy, env = start_public_proxy(processes, caddy_env, readonly)
    ca = caddy_ca(env)

    status, body, headers = send(f"{proxy}/server_info", context=ca)
    assert (status, body, headers["Www-Authenticate"]) == (401, "", 'Basic realm="restricted"')
    for wrong in [("observer", "wrong"), ("admin", "s3cret pass"), ("observer", ""), ("", "")]:
        assert send(f"{proxy}/server_info", headers=basic(*wrong), context=ca)[0] == 401, wrong
    launch = json.dumps({"query": LAUNCH, "variables": {"params": MIGRATE_JOB}}).encode()
    json_post = {"Content-Type": "application/json"}
    assert send(f"{proxy}/graphql", "POST", launch, json_post, context=ca)[0] == 401

    # The compose health check's URL (Caddy's admin API, never published) answers without a login.
    health = SERVICES["proxy"]["healthcheck"]["test"][-1].replace("localhost:2019", caddy_env["FACEIT_ETL_PROXY_ADMIN"])
    assert request(health)[0] == 200

    login = basic("observer", "s3cret pass")
    status, body, _ = send(f"{proxy}/server_info", headers=login, context=ca)
    assert status == 200 and "dagster_webserver_version" in body
    status, body, _ = send(f"{proxy}/graphql", "POST", launch, {**login, **json_post, "Origin": proxy}, context=ca)
    assert (status, json.loads(body)["data"]["launchRun"]) == (
        200, {"__typename": "UnauthorizedError", "message": "Authorization failed"})
    # docker/guard.caddy's rules hold here too, even with the login (a browser resends it cross-site).
    forged_get = "/graphql?" + urllib.parse.urlencode({"query": RUNS})
    assert send(f"{proxy}{forged_get}", headers=login, context=ca)[0] == 403
    assert send(f"{proxy}/graphql", "POST", launch, {**login, **json_post, "Origin": "https://evil.example"},
                context=ca)[:2] == (403, "refused: request from another origin")
    assert send(f"{proxy}/graphql", "POST", launch, {**login, "Content-Type": "text/plain"}, context=ca)[0] == 415
    # Another Host name (DNS rebinding) matches no site: nothing reaches the webserver.
    assert send(f"{proxy}/server_info", headers={**login, "Host": "evil.example"}, context=ca)[:2] == (200, "")


def test_the_public_proxy_never_asks_for_the_password_over_plain_http(home, readonly, caddy_env):
    """HTTP gets a redirect to HTTPS, and an http address slipped into FACEIT_ETL_PUBLIC_ADDRESS as a
    second word gets a refusal: never the login challenge, so the browser never sends the password."""
    _, processes = home
    http_port, second = free_port(), free_port()
    address = f"127.0.0.1:{free_port()}"
    proxy, env = start_public_proxy(processes, caddy_env, readonly, FACEIT_ETL_PROXY_HTTP_PORT=str(http_port),
                                    FACEIT_ETL_PUBLIC_ADDRESS=f"{address} http://127.0.0.1:{second}")
    assert proxy == f"https://{address}"
    status, _, headers = send(f"http://127.0.0.1:{http_port}/server_info")
    assert (status, headers["Location"]) == (308, f"https://{address}/server_info")
    status, body, headers = send(f"http://127.0.0.1:{second}/server_info", headers=basic("observer", "s3cret pass"))
    assert (status, body) == (403, "refused: HTTPS only") and "Www-Authenticate" not in headers
    assert send(f"{proxy}/server_info", context=caddy_ca(env))[0] == 401  # HTTPS still asks for the login


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
    proxy = f"https://127.0.0.1:{port}"
    env = {**caddy_env, "FACEIT_ETL_PUBLIC_ADDRESS": f"127.0.0.1:{port}",
           "FACEIT_ETL_PROXY_HTTP_PORT": str(free_port()),
           "FACEIT_ETL_UPSTREAM": readonly.removeprefix("http://"), **dict.fromkeys(missing, "")}
    caddy = start_caddy(processes, env)

    wait_until(lambda: caddy.poll() is not None or https_answers(f"{proxy}/server_info", env), "Caddy starts or exits")
    if caddy_refuses_to_start:
        assert caddy.wait(30) == 1
        assert "username and password cannot be empty" in caddy.log.read_text()
    else:
        assert caddy.poll() is None
        for auth in [{}, basic("observer", "s3cret pass"), basic("", "")]:
            assert send(f"{proxy}/server_info", headers=auth, context=caddy_ca(env))[0] == 401, auth


def test_the_dagster_ui_works_in_chromium_through_the_local_proxy(writable, local_proxy):
    """The real UI, as the operator uses it through ui_proxy: every request it sends passes (none
    refused), a click launches a run, and the run's page gets its live logs over the websocket."""
    refused, answered = [], []  # responses >= 400; websockets that received a frame
    before = set(run_ids(writable))
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"])
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        page.on("response", lambda r: r.status >= 400 and refused.append((r.request.method, r.url, r.status)))
        page.on("websocket", lambda ws: ws.on("framereceived", lambda _: answered.append(ws.url)))
        page.goto(f"{local_proxy}/asset-groups/faceit_migration")
        expect(page.get_by_text("postgres_tables").first).to_be_visible(timeout=60_000)
        page.get_by_role("button", name="Materialize all").click()
        expect(page.get_by_text("Launched run")).to_be_visible(timeout=30_000)
        launched = set(run_ids(writable)) - before
        assert len(launched) == 1
        run_id = launched.pop()
        page.goto(f"{local_proxy}/runs/{run_id}")
        expect(page.get_by_text(run_id[:8]).first).to_be_visible(timeout=30_000)
        for _ in range(60):  # playwright delivers events while the page is waited on
            if f"{local_proxy.replace('http', 'ws', 1)}/graphql" in answered:
                break
            page.wait_for_timeout(500)
        assert f"{local_proxy.replace('http', 'ws', 1)}/graphql" in answered, answered
        browser.close()
    assert refused == []
