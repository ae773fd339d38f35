"""Helpers shared by the test modules (which never import from each other): id and time patterns, an image
that cannot be had, making a schedule due and evidence that the cron loop ran, the `corral` CLI as a
subprocess, a stand-in nvidia-smi, waiting for processes to end, and a recorder of a runtime's callbacks."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker

from tests.harness import Cluster, token_env, wait_until

ID_RE = re.compile(r"^[0-9a-f]{32}$")  # a job, task or schedule id (native and Tork)
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")  # nomad-lite's job ids
TORK_TIME_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
ISO_TIME_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+\+00:00$")  # nomad-lite's
TORK_DONE = {"COMPLETED", "FAILED", "CANCELLED"}
# A "billion laughs" YAML: 378 bytes whose aliases stand for 9**9 strings.
LAUGHS = b"""a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
tasks: [{run: echo lol}]
"""

# An image no machine has or can pull: `.invalid` is reserved (RFC 2606) and never resolves, so a pull fails
# at once, with or without a network, whatever images this machine holds.
MISSING_IMAGE = "corral.invalid/missing:never"
MISSING_IMAGE_ERROR = f"image '{MISSING_IMAGE}' could not be pulled"


def due_now(c: Cluster, schedule_id: str) -> None:
    """Make a schedule's next tick due at once in a `corral up`'s database: a minute is too long to wait."""
    db = sqlite3.connect(c.tmp / "data" / "corral.db", timeout=30)
    with db:
        db.execute("UPDATE schedules SET next_run_at = ? WHERE id = ?", (time.time() - 5, schedule_id))
    db.close()


def corral(*args: str, server: str | None, stdin: str | None = None,
           env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run `corral ARGS` with CORRAL_SERVER set to ``server`` (None: unset)."""
    # Not the test runner's terminal size either: a piped `corral` sizes its tables by their content.
    e = {k: v for k, v in os.environ.items() if k not in ("CORRAL_SERVER", "COLUMNS", "LINES")}
    if server is not None:
        e["CORRAL_SERVER"] = server
    e.update(token_env(server))
    e.update(env or {})
    r = subprocess.run([sys.executable, "-m", "corral", *args], capture_output=True, text=True,
                       input=stdin, env=e, timeout=45)
    assert "Traceback" not in r.stderr, r.stderr
    return r


# The query the worker makes (src/corral/agent/capacity.py): anything else is an error, as nvidia-smi's own.
SMI_QUERY = "--query-gpu=index,name,memory.total,uuid --format=csv,noheader,nounits"


def stand_in_nvidia_smi(bindir: Path, rows: list[str]) -> dict[str, str]:
    """Write a stand-in `nvidia-smi` into ``bindir`` that answers the worker's query with ``rows`` (none: a
    machine without GPUs) and fails on any other arguments, recording each call's arguments in
    ``bindir/calls``; returns the environment (PATH first through ``bindir``) to start a process with."""
    bindir.mkdir(parents=True, exist_ok=True)
    body = "".join(f"  echo '{r}'\n" for r in rows) or "  :\n"
    smi = bindir / "nvidia-smi"
    smi.write_text(f"""#!/bin/sh
# A stand-in for nvidia-smi (this test pins the GPUs a node has). It answers one query, the worker's.
echo "$*" >> '{bindir / "calls"}'
if [ "$*" = "{SMI_QUERY}" ]; then
{body}  exit 0
fi
echo "stand-in nvidia-smi: unexpected arguments: $*" >&2
exit 2
""")
    smi.chmod(0o755)
    return {"PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}"}


def cron_pass_evidence(c: Cluster, timeout: float = 15) -> str:
    """Evidence that the cron loop of a `corral up` made a full pass from now on: a schedule of its own is
    made due, its job is awaited, and the schedule deleted; returns that job's id.

    Call it right after making another schedule due (or pausing it): the pass that fires this one looks at
    every due schedule, so a negative check made afterwards ("it did not fire") tests something."""
    name = f"evidence-{uuid.uuid4().hex[:8]}"
    r = c.client.post("/v1/schedules", json={"cron": "0 0 1 1 *", "job": {"name": name, "tasks": [{"run": "true"}]}})
    assert r.status_code == 201, r.text
    sch = r.json()["id"]
    due_now(c, sch)
    job = wait_until(lambda: next((j for j in c.get("/v1/jobs")["items"] if j["name"] == name), None), timeout,
                     what="the evidence schedule's job")
    assert c.client.delete(f"/v1/schedules/{sch}").status_code == 204
    return str(job["id"])


def jobs_named(c: Cluster, name: str) -> list[dict[str, Any]]:
    """The native jobs of that exact name, newest first."""
    return [j for j in c.get("/v1/jobs")["items"] if j["name"] == name]


def process_gone(pid: int) -> bool:
    """Whether the process has ended (no longer there, or a zombie waiting to be reaped)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (FileNotFoundError, ProcessLookupError):  # gone before the open, or between the open and the read
        return True


def wait_processes_gone(pidfile: Path, count: int, timeout: float = 15) -> None:
    """Wait until ``pidfile`` lists ``count`` pids (each task appends its shell's ``$$``) and all have ended:
    evidence for "the process was killed, not left to finish" that needs no fixed sleep."""
    wait_until(lambda: pidfile.exists() and len(pidfile.read_text().split()) >= count, timeout,
               what=f"{count} pids in {pidfile.name}")
    pids = [int(p) for p in pidfile.read_text().split()]
    wait_until(lambda: all(process_gone(p) for p in pids), timeout, what=f"processes {pids} to end")


class Recorder:
    """What a runtime's callbacks receive (``output`` and ``on_started``), in order, and the threads they ran
    on. ``events`` holds ("stdout" | "stderr", line) and ("started", container id); ``on_start``, when set, is
    called at the start and its answer kept in ``at_start``."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str | None]] = []
        self.started = asyncio.Event()
        self.threads: set[int] = set()
        self.cid: str | None = None
        self.on_start: Callable[[str | None], Any] | None = None
        self.at_start: Any = None

    def output(self, stream: str, line: str) -> None:
        self.threads.add(threading.get_ident())
        self.events.append((stream, line))

    def on_started(self, cid: str | None) -> None:
        self.threads.add(threading.get_ident())
        self.events.append(("started", cid))
        self.cid = cid
        if self.on_start is not None:
            self.at_start = self.on_start(cid)
        self.started.set()

    def lines(self, stream: str) -> list[str | None]:
        return [line for s, line in self.events if s == stream]

    def stdout(self) -> list[str | None]:
        return self.lines("stdout")


# A tiny HTTP server answering every GET with its name (argv[1]), listening on argv[2] at a free port that it
# prints first: the backends the NodePort forwarding tests send real traffic to.
HTTP_BACKEND = """
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = sys.argv[1].encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer.request_queue_size = 128
s = http.server.ThreadingHTTPServer((sys.argv[2], 0), H)
print(s.server_address[1], flush=True)
s.serve_forever()
"""

Backends = dict[str, tuple["subprocess.Popen[str]", int]]


@contextlib.contextmanager
def http_backends(*names: str, host: str = "127.0.0.1") -> Iterator[Backends]:
    """One HTTP_BACKEND per name, as ``{name: (process, port)}``; all killed at the end."""
    procs: Backends = {}
    try:
        for name in names:
            p = subprocess.Popen([sys.executable, "-c", HTTP_BACKEND, name, host], stdout=subprocess.PIPE, text=True)
            assert p.stdout is not None
            procs[name] = (p, int(p.stdout.readline()))
        yield procs
    finally:
        for p, _ in procs.values():
            p.kill()
            p.wait()


def remove_containers(client: docker.DockerClient, label: str) -> None:
    """Remove every container with that label (``key=value``), with its anonymous volumes."""
    for c in client.containers.list(all=True, filters={"label": label}):
        c.remove(force=True, v=True)


class RecordingTransport:
    """A coordinator stand-in for driving an Agent without a server (the agent's own batching and ordering
    are what these tests check): hands out the given work on the first poll, then nothing, and keeps every
    report as it came, with its size as JSON. ``delay``: how long each report takes (a slow coordinator
    makes output wait on it); ``node_id``: the id it registers the agent as (containers are labelled with it).
    Pod syncs are kept in ``syncs`` and answered with ``desired`` (the node's whole desired set of pods)."""

    def __init__(self, work: list[dict[str, Any]], delay: float = 0.0, node_id: str = "n1",
                 heartbeat_interval: float = 30.0) -> None:
        self.work = work
        self.delay = delay
        self.node_id = node_id
        self.heartbeat_interval = heartbeat_interval
        self.node_secret: str | None = None
        self.reports: list[tuple[list[dict[str, Any]], list[dict[str, Any]], int]] = []
        self.registered: list[dict[str, Any]] = []
        self.desired: list[dict[str, Any]] = []
        self.log_full: list[dict[str, str]] = []  # {instance_id, container} whose stored log is full
        self.syncs: list[dict[str, Any]] = []

    @property
    def updates(self) -> list[dict[str, Any]]:
        return [u for ups, _, _ in self.reports for u in ups]

    @property
    def logs(self) -> list[dict[str, Any]]:
        return [ln for _, lines, _ in self.reports for ln in lines]

    def final(self, ex: str) -> dict[str, Any] | None:
        return next((u for u in self.updates if u["execution_id"] == ex and u["state"] != "running"), None)

    def pod(self, instance_id: str) -> dict[str, Any] | None:
        """The last status the node sent of this pod instance."""
        for body in reversed(self.syncs):
            for p in body["pods"]:
                if p["instance_id"] == instance_id:
                    return dict(p)
        return None

    def container(self, instance_id: str, name: str) -> dict[str, Any] | None:
        p = self.pod(instance_id)
        return next((c for c in p["containers"] if c["name"] == name), None) if p else None

    def container_history(self, instance_id: str, name: str) -> list[dict[str, Any]]:
        """Every status the node sent of this container, oldest first."""
        return [dict(c) for body in list(self.syncs) for p in body["pods"] if p["instance_id"] == instance_id
                for c in p["containers"] if c["name"] == name]

    def pod_lines(self, instance_id: str, container: str | None = None) -> list[str]:
        return [ln["line"] for body in list(self.syncs) for ln in body["logs"]
                if ln["instance_id"] == instance_id and container in (None, ln["container"])]

    async def register(self, info: dict[str, Any], running: list[str]) -> dict[str, Any]:
        self.registered.append(info)
        return {"node_id": self.node_id, "heartbeat_interval": self.heartbeat_interval}

    async def heartbeat(self, node_id: str, running: list[str], usage: dict[str, Any]) -> list[str]:
        return []

    async def poll(self, node_id: str, known: list[str], wait: float) -> tuple[list[dict[str, Any]], list[str]]:
        work, self.work = self.work, []
        if not work:
            await asyncio.sleep(wait)
        return work, []

    async def report(self, node_id: str, updates: list[dict[str, Any]], logs: list[dict[str, Any]]) -> list[str]:
        self.reports.append((updates, logs, len(json.dumps({"updates": updates, "logs": logs}))))
        if self.delay:
            await asyncio.sleep(self.delay)
        return []

    async def drain(self, node_id: str, running: list[str]) -> list[str]:
        return []

    async def sync_pods(self, node_id: str, body: dict[str, Any]) -> dict[str, Any]:
        self.syncs.append(json.loads(json.dumps(body)))  # as it would travel
        return {"pods": [dict(a) for a in self.desired], "log_full": sorted({f["instance_id"] for f in self.log_full}),
                "log_full_containers": list(self.log_full)}

    async def leave(self, node_id: str) -> None:
        return None

    async def node_services(self, node_id: str) -> list[dict[str, Any]]:
        return []

    async def close(self) -> None:
        return None
