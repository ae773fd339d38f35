"""Starts real Corral processes (`corral up`, `corral server`, `corral worker`) for tests.

Every process is a real subprocess speaking HTTP on a free loopback port; tests talk to it with httpx
exactly as a user would.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

CORRAL = [sys.executable, "-m", "corral"]
TERMINAL = {"completed", "failed", "cancelled"}
TRANSIENT = {429, 502, 503, 504}  # answers a wait tries again after
TRANSIENT_RETRY = 10.0  # seconds Cluster.get tries again after a transient answer
LIVE: list[Cluster] = []  # clusters not closed yet: conftest attaches their logs to a failing test's report
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
TOKENS: dict[str, str] = {}  # server URL -> its access token, for CLI subprocesses (token_env)


def token_env(url: str | None) -> dict[str, str]:
    """The environment a `corral` command needs to reach the test server at ``url`` (its access token)."""
    token = TOKENS.get((url or "").rstrip("/"))
    return {"CORRAL_API_TOKEN": token} if token else {}


def _die_with_parent() -> Callable[[], None] | None:
    """A child set up to be killed when the test process dies, even by SIGKILL (Linux's PR_SET_PDEATHSIG), so
    that a killed pytest run leaves no server behind. The signal follows the *thread* that started the child,
    so only a child started from the main thread gets it."""
    if sys.platform != "linux" or threading.current_thread() is not threading.main_thread():
        return None
    libc = ctypes.CDLL(None, use_errno=True)

    def set_pdeathsig() -> None:
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)

    return set_pdeathsig


# A server the harness gives an SQLite database of its choosing (`corral up`'s data directory, start_server's
# default) starts on a copy of one made once per test process by the same code (``Store``: the migrations, up
# to head), rather than migrating an empty file at each of the suite's hundreds of starts (~1.5 s of CPU each).
# Upgrading from empty and from every revision is what test_migrations checks, on databases of its own.
# CORRAL_TEST_TEMPLATE_DB=0: every such start migrates an empty database, as a first start on a new machine.
TEMPLATE_DB = os.environ.get("CORRAL_TEST_TEMPLATE_DB", "1") != "0"
_template: list[Path] = []
_template_lock = threading.Lock()


def migrated_sqlite(dest: Path) -> None:
    """Put an SQLite database already migrated to head at ``dest``, unless there is one (a restart)."""
    if not TEMPLATE_DB or dest.exists():
        return
    with _template_lock:
        if not _template:
            from corral.store.sql import Store

            where = Path(tempfile.mkdtemp(prefix="corral-test-template-"))
            atexit.register(shutil.rmtree, where, True)
            Store(f"sqlite:///{where / 'head.db'}").close()
            _template.append(where / "head.db")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.closing(sqlite3.connect(_template[0])) as src, contextlib.closing(sqlite3.connect(dest)) as dst:
        src.backup(dst)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Proc:
    args: list[str]
    log: Path
    env: dict[str, str] = field(default_factory=dict)
    popen: subprocess.Popen[bytes] | None = None

    def start(self) -> Proc:
        fh = self.log.open("ab")
        self.popen = subprocess.Popen(CORRAL + self.args, stdout=fh, stderr=subprocess.STDOUT,
                                      env={**os.environ, **self.env}, start_new_session=True,
                                      preexec_fn=_die_with_parent())
        return self

    def kill9(self) -> None:
        assert self.popen is not None
        os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait(10)

    def stop(self) -> None:
        if self.popen is None or self.popen.poll() is not None:
            return
        try:
            os.killpg(self.popen.pid, signal.SIGTERM)
            self.popen.wait(8)
        except (subprocess.TimeoutExpired, ProcessLookupError):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(5)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def wait_until(cond: Callable[[], Any], timeout: float = 20.0, interval: float = 0.05, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = cond()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or cond}: last={last!r}")


class Cluster:
    """A coordinator (standalone or not) plus any number of workers, all real processes."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server: Proc | None = None
        self.workers: list[Proc] = []
        self.client = httpx.Client(base_url=self.url, timeout=30)
        LIVE.append(self)
        self.token: str | None = None  # the API's access token, sent by self.client
        self.grpc_port = free_port()  # for nomad-lite's gRPC API, where a test asks for it (--grpc-port)

    def use_token(self, token: str | None) -> None:
        """Every request of ``client``, and CLI commands run with ``token_env``, carry ``token``."""
        self.token = token
        if token:
            self.client.headers["Authorization"] = f"Bearer {token}"
            TOKENS[self.url] = token
        else:
            self.client.headers.pop("Authorization", None)
            TOKENS.pop(self.url, None)

    def _wait_ready(self) -> None:
        def ok() -> bool:
            assert self.server and self.server.popen
            if self.server.popen.poll() is not None:
                raise AssertionError(f"server exited:\n{self.server.output()}")
            try:
                return self.client.get("/healthz").status_code == 200
            except httpx.HTTPError:
                return False
        wait_until(ok, 60, what="the server to answer")  # a bound, not a check of speed: loaded machines

    def up(self, *extra: str, env: dict[str, str] | None = None) -> Cluster:
        grpc = () if "--grpc-port" in extra else ("--grpc-port", "0")  # off (its default port is shared)
        migrated_sqlite(self.tmp / "data" / "corral.db")
        self.server = Proc(["up", "--port", str(self.port), "--data-dir", str(self.tmp / "data"),
                            "--log-level", "warning", *grpc, *extra], self.tmp / "server.log", env or {}).start()
        self._wait_ready()
        token_file = self.tmp / "data" / "token"
        self.use_token(token_file.read_text().strip() if "--no-token" not in extra else None)
        wait_until(lambda: self.nodes(), 20, what="the local worker")
        return self

    def start_server(self, *extra: str, database_url: str | None = None, env: dict[str, str] | None = None
                     ) -> Cluster:
        if database_url is None:
            migrated_sqlite(self.tmp / "server.db")
        db = database_url or f"sqlite:///{self.tmp / 'server.db'}"
        self.server = Proc(["server", "--port", str(self.port), "--database-url", db, "--log-level", "warning",
                            *extra], self.tmp / "server.log", env or {}).start()
        self._wait_ready()
        if "--api-token" in extra:
            self.use_token(extra[extra.index("--api-token") + 1])
        elif "--auth" in extra:  # the first admin's key, printed once at the first start
            key = wait_until(lambda: re.search(r"crl_[0-9a-f]{16}_[A-Za-z0-9_-]+", self.server.output()
                                               if self.server else ""), 10, what="the first admin's key")
            self.use_token(key.group(0))
        else:
            self.use_token(None)
        return self

    def add_worker(self, name: str, *extra: str, wait: bool = True, env: dict[str, str] | None = None) -> Proc:
        if self.token and "--token" not in extra and "--token" not in (self.server.args if self.server else []):
            extra = (*extra, "--token", self.token)  # no cluster token: /v1/agent/* needs the access token
        # A short drain on SIGTERM (--grace, 30s by default), so that stopping a cluster stays quick.
        w = Proc(["worker", "--server", self.url, "--name", name, "--data-dir", str(self.tmp / f"w-{name}"),
                  "--log-level", "warning", "--grace", "1s", *extra], self.tmp / f"worker-{name}.log",
                 env or {}).start()
        self.workers.append(w)
        if wait:
            wait_until(lambda: any(n["name"] == name and n["state"] == "ready" for n in self.nodes()), 20,
                       what=f"worker {name} to register")
        return w

    def nodes(self) -> list[dict[str, Any]]:
        try:
            r = self.client.get("/v1/nodes")
        except httpx.HTTPError:
            return []
        try:
            body = r.json() if r.status_code == 200 else {}
        except ValueError:
            body = {}
        # Not this cluster's answer (once in a full run, during a restart on the same port, a 200 without
        # items came back: another test's process on that port for a moment): not ready yet.
        return list(body["items"]) if isinstance(body, dict) and "items" in body else []

    def submit(self, job: dict[str, Any]) -> dict[str, Any]:
        r = self.client.post("/v1/jobs", json=job)
        assert r.status_code == 201, r.text
        return dict(r.json())

    def get(self, path: str) -> dict[str, Any]:
        """GET a JSON object that must be there (any API: native or a dialect). A transient answer (a 5xx, a
        429, no connection) is tried again for up to TRANSIENT_RETRY seconds; any other non-200 fails."""
        deadline = time.monotonic() + TRANSIENT_RETRY
        while True:
            try:
                r = self.client.get(path)
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
            else:
                if not (r.status_code in TRANSIENT or r.status_code >= 500) or time.monotonic() > deadline:
                    break
            time.sleep(0.2)
        assert r.status_code == 200, r.text
        return dict(r.json())

    def wait_for(self, path: str, states: set[str], field: str = "state", timeout: float = 30) -> dict[str, Any]:
        """GET ``path`` until its ``field`` is one of ``states``; returns the object. A transient answer (a
        5xx, a 429, no connection: a busy or restarting server) is tried again; any other non-200 fails."""
        last: list[Any] = [None]

        def reached() -> dict[str, Any] | None:
            try:
                r = self.client.get(path)
            except httpx.TransportError as e:
                last[0] = repr(e)
                return None
            if r.status_code in TRANSIENT or r.status_code >= 500:
                last[0] = f"HTTP {r.status_code}: {r.text[:200]}"
                return None
            assert r.status_code == 200, r.text
            o = dict(r.json())
            last[0] = o.get(field)
            return o if o.get(field) in states else None

        try:
            return dict(wait_until(reached, timeout, what=f"{path} to reach {sorted(states)}"))
        except AssertionError as e:
            raise AssertionError(f"{e}; last seen: {last[0]!r}") from None

    def job(self, job_id: str) -> dict[str, Any]:
        return self.get(f"/v1/jobs/{job_id}")

    def wait_job(self, job_id: str, states: set[str] | None = None, timeout: float = 30) -> dict[str, Any]:
        return self.wait_for(f"/v1/jobs/{job_id}", states or TERMINAL, timeout=timeout)

    def logs(self, job_id: str) -> str:
        return self.client.get(f"/v1/jobs/{job_id}/logs").text

    def close(self) -> None:
        nodes: list[str] = []
        if self.server:
            with contextlib.suppress(Exception):
                nodes = [n["id"] for n in self.client.get("/v1/nodes", timeout=2).json()["items"]]
        for w in self.workers:
            w.stop()
        if self.server:
            self.server.stop()
        TOKENS.pop(self.url, None)
        self.client.close()
        if self in LIVE:
            LIVE.remove(self)
        _sweep_containers(nodes)


def _sweep_containers(node_ids: list[str]) -> None:
    """Remove the containers this test's nodes left behind: a worker killed with -9 cannot remove its own
    task or pod containers, and the next test (or the next run on a developer's machine) should not find them."""
    if not node_ids:
        return
    with contextlib.suppress(Exception):
        import docker  # only where the tests use Docker

        client = docker.from_env(timeout=5)
        for label in ("corral.node", "corral.pod.node"):
            for node_id in node_ids:
                for c in client.containers.list(all=True, filters={"label": f"{label}={node_id}"}):
                    c.remove(force=True, v=True)
