"""The API's edge against a real `corral up`: the access token and the login link, Host and Origin checks,
content types, body sizes while reading, nesting depth and YAML aliases, and parsing off the event loop."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.harness import Cluster, wait_until
from tests.support import LAUGHS

pytestmark = pytest.mark.timeout(120)
MiB = 1024 * 1024
DEEP_JSON = b"[" * 1000 + b"]" * 1000
DEEP_YAML = "".join("  " * i + "a:\n" for i in range(1000)).encode() + b"  " * 1000 + b"x\n"


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp("edge"))
    c.up("--runtime", "process", env={"CORRAL_RATE_LIMIT": "off"})
    yield c
    c.close()


def bare(c: Cluster, **kw: Any) -> httpx.Client:
    """A client without the token, as a web page or another program on this machine would be."""
    return httpx.Client(base_url=c.url, timeout=10, **kw)


def server_process(c: Cluster) -> psutil.Process:
    assert c.server and c.server.popen
    return psutil.Process(c.server.popen.pid)


def completes(c: Cluster, marker: Path | None = None) -> None:
    """Another job submitted now completes: the server and its scheduler are fine."""
    run = f"touch {marker}" if marker else "true"
    job = c.submit({"tasks": [{"run": run}]})
    assert c.wait_job(job["id"], timeout=30)["state"] == "completed"


def test_the_token_is_needed_and_kept_in_the_data_dir(up: Cluster) -> None:
    token_file = up.tmp / "data" / "token"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert up.token and token_file.read_text().strip() == up.token and len(up.token) >= 32
    with bare(up) as anon:
        r = anon.get("/v1/jobs")
        assert r.status_code == 401 and r.headers["content-type"] == "application/problem+json"
        assert str(token_file) in r.json()["detail"] and r.headers["www-authenticate"] == "Bearer"
        r = anon.post("/v1/jobs", json={"tasks": [{"run": "true"}]})
        assert r.status_code == 401
        assert anon.get("/v1/jobs", headers={"Authorization": "Bearer not-the-token"}).status_code == 401
        assert anon.get("/metrics").status_code == 401
        # Each API answers in its own shape.
        assert "error" in anon.get("/api/tasks").json() and "message" in anon.get("/jobs").json()
        assert anon.get("/openapi.json").status_code == 401
        # Probes answer without it.
        for probe in ("/healthz", "/readyz", "/health/live", "/health/ready", "/health"):
            assert anon.get(probe).status_code == 200, probe
        ok = anon.get("/v1/jobs", headers={"Authorization": f"Bearer {up.token}"})
        assert ok.status_code == 200
    completes(up)


def test_the_local_token_is_the_local_admin_wherever_a_dialect_takes_credentials(up: Cluster) -> None:
    with bare(up) as anon:
        for how in ({"headers": {"X-API-KEY": str(up.token)}}, {"params": {"api_key": str(up.token)}},
                    {"headers": {"Authorization": f"Bearer {up.token}"}}):
            who = anon.get("/v1/whoami", **how)  # type: ignore[arg-type]
            assert who.status_code == 200 and who.json()["kind"] == "local" and who.json()["role"] == "admin"
            assert anon.get("/stacks", **how).status_code == 200  # type: ignore[arg-type]
            assert anon.get("/api/v1/tasks", **how).status_code == 200  # type: ignore[arg-type]
        assert anon.get("/stacks", headers={"X-API-KEY": "not-it"}).status_code == 401
        # keys made by the local admin work on `corral up` too
        r = anon.post("/v1/keys", json={"name": "ro", "role": "viewer"}, headers={"X-API-KEY": str(up.token)})
        assert r.status_code == 201, r.text
        viewer = {"Authorization": f"Bearer {r.json()['key']}"}
        assert anon.get("/v1/jobs", headers=viewer).status_code == 200
        assert anon.post("/v1/jobs", json={"tasks": [{"run": "true"}]}, headers=viewer).status_code == 403


def test_the_login_link_sets_a_cookie_that_works_once(up: Cluster) -> None:
    assert up.server is not None
    link = re.search(r"http://127\.0\.0\.1:\d+/login\?code=\S+", up.server.output())
    assert link, up.server.output()
    with bare(up) as browser:
        r = browser.get(link.group(0))
        assert r.status_code == 303 and r.headers["location"] == "/ui/"  # the dashboard
        cookie = r.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie and up.token not in link.group(0)
        assert browser.get("/ui/").status_code == 200
        assert browser.get("/docs").status_code == 200
        assert browser.get("/openapi.json").status_code == 200
        assert browser.get("/v1/jobs").status_code == 200
    with bare(up) as other:
        again = other.get(link.group(0))  # one time
        assert again.status_code == 401 and other.get("/v1/jobs").status_code == 401
        # The token itself works as a login link too.
        assert other.get(f"/login?token={up.token}").status_code == 303
        assert other.get("/v1/jobs").status_code == 200


def test_the_cli_finds_the_token_by_itself(up: Cluster, tmp_path: Path) -> None:
    base = {k: v for k, v in os.environ.items() if k not in ("CORRAL_API_TOKEN", "CORRAL_DATA_DIR", "CORRAL_SERVER")}

    def cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "corral", "nodes", "--server", up.url, *args], cwd=tmp_path,
                              env={**base, **env}, capture_output=True, text=True, timeout=60)

    denied = cli()  # no token anywhere
    assert denied.returncode == 1 and "access token" in denied.stderr and "Traceback" not in denied.stderr
    assert "local" in cli(CORRAL_DATA_DIR=str(up.tmp / "data")).stdout
    assert "local" in cli("--token", str(up.token)).stdout
    (tmp_path / ".corral").mkdir()
    (tmp_path / ".corral" / "token").write_text(str(up.token))
    found = cli()  # ./.corral/token, as after `corral up` in this directory
    assert found.returncode == 0 and "local" in found.stdout, found.stderr


def test_cross_site_posts_get_415_and_nothing_runs(up: Cluster, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    job = json.dumps({"tasks": [{"run": f"touch {marker}"}]})
    before = up.get("/v1/jobs")["total"]
    with bare(up) as page:
        for path, body in [("/v1/jobs", job), ("/v1/jobs/batch", json.dumps({"jobs": [json.loads(job)]})),
                           ("/api/jobs", json.dumps({"command": f"touch {marker}"})),
                           ("/api/tasks", json.dumps({"user_id": "u", "docker_image": "x", "command": "true"})),
                           ("/jobs", job), ("/v1/schedules", json.dumps({"cron": "* * * * *", "job": job}))]:
            for ctype in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"):
                # Even with the token (a page cannot have it): the content type alone is refused.
                r = page.post(path, content=body, headers={"Content-Type": ctype,
                                                            "Authorization": f"Bearer {up.token}"})
                assert r.status_code == 415, (path, ctype, r.text)
            r = up.client.post(path, content=body)  # no content type at all
            assert r.status_code == 415, (path, r.text)
        # A page of another site, with a JSON type (a preflight the browser would need): its Origin is refused.
        r = page.post("/v1/jobs", content=job, headers={"Content-Type": "application/json",
                                                        "Origin": "http://evil.example",
                                                        "Authorization": f"Bearer {up.token}"})
        assert r.status_code == 403 and "Origin" in r.json()["detail"]
    completes(up)  # the scheduler ran a job since: had the refused ones been stored, they would have run
    assert up.get("/v1/jobs")["total"] == before + 1 and not marker.exists()


def test_a_foreign_host_is_refused(up: Cluster) -> None:
    with bare(up) as c:
        for host in ("evil.example", f"evil.example:{up.port}", "127.0.0.1.nip.io"):
            r = c.get("/healthz", headers={"Host": host})
            assert r.status_code == 400 and "--allow-host" in r.json()["detail"], host
            r = c.get("/v1/jobs", headers={"Host": host, "Authorization": f"Bearer {up.token}"})
            assert r.status_code == 400
        for host in (f"localhost:{up.port}", f"127.0.0.1:{up.port}", "LOCALHOST"):
            assert c.get("/healthz", headers={"Host": host}).status_code == 200, host


def test_the_telemetry_websocket_needs_the_token_and_its_own_origin(up: Cluster) -> None:
    url = f"ws://127.0.0.1:{up.port}/ws/telemetry"
    auth = {"Authorization": f"Bearer {up.token}"}
    with pytest.raises(InvalidStatus) as e:
        connect(url, open_timeout=10)
    assert e.value.response.status_code == 401
    for origin in ("http://evil.example", f"http://localhost:{up.port}", "null"):
        with pytest.raises(InvalidStatus) as e:
            connect(url, open_timeout=10, additional_headers=auth, origin=origin)
        assert e.value.response.status_code == 403, origin
    with connect(url, open_timeout=10, additional_headers=auth,
                 origin=f"http://127.0.0.1:{up.port}") as ws:
        assert json.loads(ws.recv(timeout=10))["type"] == "telemetry_update"
    with connect(f"{url}?token={up.token}", open_timeout=10) as ws:  # a browser's way: it cannot set a header
        assert json.loads(ws.recv(timeout=10))["type"] == "telemetry_update"


class Health:
    """Times GET /healthz every 50 ms in a thread until stopped."""

    def __init__(self, c: Cluster) -> None:
        self.c = c
        self.worst = 0.0
        self.count = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        with bare(self.c) as client:
            while not self.stop.is_set():
                t = time.monotonic()
                assert client.get("/healthz", timeout=5).status_code == 200
                self.worst = max(self.worst, time.monotonic() - t)
                self.count += 1
                self.stop.wait(0.05)

    def __enter__(self) -> Health:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10)


def test_a_300_mb_chunked_body_is_stopped_while_it_streams(up: Cluster) -> None:
    proc = server_process(up)
    base = proc.memory_info().rss
    peak = base
    sent = 0

    def body() -> Iterator[bytes]:  # generated lazily: never 300 MB in memory here either
        nonlocal sent, peak
        chunk = b"x" * (256 * 1024)
        while sent < 300 * MiB:
            sent += len(chunk)
            if sent % (4 * MiB) == 0:
                peak = max(peak, proc.memory_info().rss)
            yield chunk

    # The agent's routes read a body only from the node itself (its secret): here the standalone's own.
    node = up.nodes()[0]["id"]
    node_auth = {"X-Corral-Node-Secret": (up.tmp / "data" / "worker" / "node-secret").read_text().strip()}
    with Health(up) as health:
        for path in ("/v1/jobs", "/api/tasks", "/jobs", f"/v1/agent/nodes/{node}/report"):
            sent = 0
            r = up.client.post(path, content=body(), headers={"Content-Type": "application/json",
                                                              **(node_auth if "/agent/" in path else {})})
            assert r.status_code == 413, (path, r.text)
            assert sent < 100 * MiB, f"{path}: {sent} bytes were sent before the 413"
            peak = max(peak, proc.memory_info().rss)
        wait_until(lambda: health.count >= 3, 10, what="health checks")
    assert peak - base < 100 * MiB, f"the server grew by {(peak - base) // MiB} MiB"
    assert health.worst < 1.0, f"/healthz took {health.worst:.2f}s"
    completes(up)


def test_the_agent_report_route_refuses_an_oversized_body(up: Cluster) -> None:
    node = up.nodes()[0]["id"]
    line = {"execution_id": "0" * 32, "stream": "stdout", "line": "y" * 1000, "ts": 1.0}
    big = json.dumps({"updates": [], "logs": [line] * 9000}).encode()  # about 9 MiB, with a Content-Length
    assert len(big) > 8 * MiB
    r = up.client.post(f"/v1/agent/nodes/{node}/report", content=big, headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and "8388608" in r.json()["detail"]
    r = up.client.post(f"/v1/agent/nodes/{node}/report", content=b"updates=", headers={"Content-Type": "text/plain"})
    assert r.status_code == 415
    completes(up)


YAML_ROUTES = ["/v1/jobs", "/v1/schedules", "/jobs", "/scheduled-jobs"]
JSON_ROUTES = [*YAML_ROUTES, "/v1/jobs/batch", "/api/jobs", "/api/tasks", "/v1/agent/register"]


@pytest.mark.parametrize("path", JSON_ROUTES)
def test_deep_json_is_a_400_on_every_route(up: Cluster, path: str) -> None:
    r = up.client.post(path, content=DEEP_JSON, headers={"Content-Type": "application/json"})
    assert r.status_code == 400, r.text
    assert "64 levels" in r.text


@pytest.mark.parametrize("path", YAML_ROUTES)
@pytest.mark.parametrize("body,words", [(DEEP_YAML, "64 levels"), (LAUGHS, "alias expansion limit")])
def test_deep_yaml_and_billion_laughs_are_a_400_fast(up: Cluster, path: str, body: bytes, words: str) -> None:
    t = time.monotonic()
    r = up.client.post(path, content=body, headers={"Content-Type": "text/yaml"})
    assert r.status_code == 400 and words in r.text, r.text
    assert time.monotonic() - t < 5


@pytest.mark.parametrize("path", ["/api/jobs", "/api/tasks"])
def test_yaml_is_not_read_where_only_json_is_documented(up: Cluster, path: str) -> None:
    r = up.client.post(path, content=LAUGHS, headers={"Content-Type": "text/yaml"})
    assert r.status_code == 415 and "application/json" in r.text


def test_health_answers_while_a_10_mb_body_is_parsed(up: Cluster) -> None:
    task = {"run": "true", "env": {f"V{i}": "v" * 1000 for i in range(90)}}
    body = json.dumps({"name": "big", "tasks": [task] * 100}).encode()
    assert 8 * MiB < len(body) < 10 * MiB
    with Health(up) as health:
        r = up.client.post("/v1/jobs", content=body, headers={"Content-Type": "application/json"})
        assert r.status_code == 201, r.text[:300]
        wait_until(lambda: health.count >= 3, 10, what="health checks")
    assert health.worst < 1.0, f"/healthz took {health.worst:.2f}s"
    assert up.client.post(f"/v1/jobs/{r.json()['id']}/cancel").status_code == 200
    completes(up)


def test_no_token_answers_everyone_and_says_why_not_to(cluster: Cluster) -> None:
    cluster.up("--no-token", "--runtime", "process")
    assert cluster.token is None and not (cluster.tmp / "data" / "token").exists()
    assert cluster.server and "warning: --no-token" in cluster.server.output()
    assert "login" not in cluster.server.output()
    with bare(cluster) as anon:
        assert anon.get("/v1/jobs").status_code == 200
        # The Host check and the content types stay.
        assert anon.get("/v1/jobs", headers={"Host": "evil.example"}).status_code == 400
        assert anon.post("/v1/jobs", content=b"{}", headers={"Content-Type": "text/plain"}).status_code == 415
    completes(cluster)


def test_a_restart_reuses_the_token_and_allow_host_adds_a_name(cluster: Cluster) -> None:
    cluster.up("--runtime", "process", "--allow-host", "corral.test")
    first = cluster.token
    assert cluster.server is not None
    cluster.server.stop()
    cluster.up("--runtime", "process", "--allow-host", "corral.test")
    assert cluster.token == first
    with bare(cluster) as c:
        auth = {"Authorization": f"Bearer {first}"}
        assert c.get("/v1/jobs", headers={"Host": f"corral.test:{cluster.port}", **auth}).status_code == 200
        assert c.get("/v1/jobs", headers={"Host": "other.test", **auth}).status_code == 400
    completes(cluster)


def test_corral_server_can_require_a_token(cluster: Cluster) -> None:
    cluster.start_server("--api-token", "s3cret-token-for-tests", "--token", "cluster-token")
    with bare(cluster) as anon:
        assert anon.get("/v1/nodes").status_code == 401
        assert anon.get("/healthz").status_code == 200
    cluster.add_worker("w1", "--runtime", "process", "--token", "cluster-token")  # workers use the cluster token
    completes(cluster)


def test_a_client_leaving_mid_body_is_not_a_server_error(up: Cluster) -> None:
    """A client (a worker stopped mid-report) that goes away while its body is read: logged as that, not
    as an unexpected 500 with a traceback."""
    import socket

    host, port = up.url.removeprefix("http://").split(":")
    token = up.client.headers["Authorization"]
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(f"POST /v1/jobs HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: {token}\r\n"
                  "Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n{\"tasks\": [".encode())
        time.sleep(0.2)  # the server starts reading the body before the client leaves
    completes(up)  # the server has long handled the disconnect by the time a job ran
    assert up.server
    assert "unexpected error on POST /v1/jobs" not in up.server.output()
