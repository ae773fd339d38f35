"""What a job may reach on the host, against real `corral up` processes: bind mounts on every way a job
enters (schedules included, when created and when fired), the symlink escape, other applications' named
volumes, webhooks to loopback (the coordinator's own API), default container limits, and secrets in the
nomad-lite and CloudAI views."""

from __future__ import annotations

import sqlite3
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from threading import Thread
from typing import Any

import docker
import docker.errors
import pytest

from tests.harness import Cluster, wait_until


def bind_job(source: str, image: str = "corral-test/busybox:latest") -> dict[str, Any]:
    return {"name": "binder", "tasks": [{"image": image, "run": "cat /host/etc/shadow",
                                         "mounts": [{"type": "bind", "source": source, "target": "/host"}]}]}


def test_every_schedule_path_refuses_a_bind_mount_outside_the_allowed_roots(cluster: Cluster, tmp_path: Path) -> None:
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    cluster.up("--allow-bind-mount", str(allowed))
    c = cluster.client
    for path, body in [("/v1/schedules", {"cron": "* * * * *", "job": bind_job("/")}),
                       ("/v1/jobs", {**bind_job("/"), "schedule": {"cron": "* * * * *"}}),
                       ("/scheduled-jobs", {"cron": "* * * * *", "name": "binder", "tasks": [
                           {"image": "busybox", "run": "cat /host/etc/shadow",
                            "mounts": [{"type": "bind", "source": "/", "target": "/host"}]}]})]:
        r = c.post(path, json=body)
        assert r.status_code == 400, (path, r.text)
        assert "outside the allowed directories" in r.text, r.text
    assert cluster.get("/v1/schedules")["items"] == []
    # Under the allowed root, a schedule is created.
    assert c.post("/v1/schedules", json={"cron": "* * * * *", "job": bind_job(str(allowed))}).status_code == 201


def test_a_schedule_stored_before_a_policy_change_fails_its_job_when_it_fires(cluster: Cluster,
                                                                              tmp_path: Path) -> None:
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    cluster.up("--allow-bind-mount", str(allowed))
    sch = cluster.client.post("/v1/schedules", json={"cron": "* * * * *", "job": bind_job(str(allowed))})
    assert sch.status_code == 201, sch.text
    assert cluster.server is not None
    cluster.server.stop()
    cluster.up()  # the same data, and bind mounts no longer allowed
    with sqlite3.connect(tmp_path / "data" / "corral.db") as db:  # make the tick due now
        db.execute("UPDATE schedules SET next_run_at = ? WHERE id = ?", (time.time() - 1, sch.json()["id"]))
    fired = wait_until(lambda: cluster.get(f"/v1/schedules/{sch.json()['id']}")["last_job_id"], 10,
                       what="the schedule to fire")
    job = cluster.wait_job(fired)
    assert job["state"] == "failed"
    assert "refused by this server's policy" in job["error"] and "bind mounts are not allowed" in job["error"]
    assert all(t["state"] == "cancelled" for t in job["tasks"])
    # Restarting it is refused for the same reason.
    r = cluster.client.post(f"/v1/jobs/{fired}/restart")
    assert r.status_code == 400 and "bind mounts are not allowed" in r.text


@pytest.mark.docker
def test_a_symlink_left_in_an_allowed_root_does_not_lead_a_mount_out(cluster: Cluster, busybox_image: str,
                                                                     tmp_path: Path) -> None:
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("original\n")
    # A coordinator and a remote worker: the allowed directories reach the worker with the assignment.
    cluster.start_server("--allow-bind-mount", str(allowed))
    cluster.add_worker("w1", "--runtime", "docker")
    mount = {"type": "bind", "source": str(allowed), "target": "/data"}
    first = cluster.submit({"tasks": [{"image": busybox_image, "run": "ln -s / /data/rootlink",
                                       "mounts": [mount]}]})
    assert cluster.wait_job(first["id"])["state"] == "completed"
    assert (allowed / "rootlink").is_symlink()  # the first job left a link to the host's /
    second = cluster.submit({"tasks": [{"image": busybox_image, "run": f"echo pwned > /host{victim}",
                                        "mounts": [{**mount, "source": str(allowed / "rootlink"),
                                                    "target": "/host"}]}]})
    done = cluster.wait_job(second["id"])
    assert done["state"] == "failed"
    assert "refused" in done["tasks"][0]["error"] and "outside the allowed directories" in done["tasks"][0]["error"]
    assert victim.read_text() == "original\n"


@pytest.fixture
def app_volumes(docker_client: docker.DockerClient, busybox_image: str) -> Iterator[list[str]]:
    """Two other applications' named volumes, each holding a secret."""
    names = [f"corral-test-app-{uuid.uuid4().hex[:10]}" for _ in range(2)]
    for name in names:
        docker_client.volumes.create(name)
        docker_client.containers.run(busybox_image, ["sh", "-c", "echo app-secret > /v/secret"],
                                     volumes={name: {"bind": "/v", "mode": "rw"}}, remove=True)
    yield names
    for name in names:
        for v in docker_client.volumes.list(filters={"name": name}):
            v.remove(force=True)


@pytest.mark.docker
def test_another_applications_named_volume_is_reachable_only_when_allowed(
        cluster: Cluster, busybox_image: str, app_volumes: list[str], docker_client: docker.DockerClient) -> None:
    allowed, other = app_volumes
    cluster.up("--allow-volume", allowed)
    script = "cat /v/secret 2>/dev/null || echo no-secret; echo pwned > /v/pwned"
    jobs = [cluster.submit({"tasks": [{"image": busybox_image, "run": script,
                                       "mounts": [{"type": "volume", "source": name, "target": "/v"}]}]})
            for name in (other, allowed)]
    for job in jobs:
        assert cluster.wait_job(job["id"])["state"] == "completed"
    assert cluster.logs(jobs[0]["id"]).split() == ["no-secret"]  # a volume of the job's own, not the app's
    assert cluster.logs(jobs[1]["id"]).split() == ["app-secret"]  # the operator allowed this one by name

    def listing(name: str) -> list[str]:
        return docker_client.containers.run(busybox_image, ["ls", "/v"], remove=True,
                                            volumes={name: {"bind": "/v", "mode": "ro"}}).decode().split()

    assert listing(other) == ["secret"]  # untouched
    assert listing(allowed) == ["pwned", "secret"]
    own = docker_client.volumes.get(f"corral-{jobs[0]['id']}-{other}")
    assert own.attrs["Labels"]["corral.job"] == jobs[0]["id"]
    own.remove(force=True)


class Receiver:
    def __init__(self) -> None:
        self.calls: list[str] = []
        rec = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                self.rfile.read(int(self.headers.get("content-length") or 0))
                rec.calls.append(self.path)
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"


def test_webhooks_to_loopback_are_refused_unless_allowed(cluster: Cluster) -> None:
    receiver = Receiver()
    try:
        cluster.up()
        victim = cluster.submit({"tasks": [{"run": "sleep 30"}]})
        cluster.wait_job(victim["id"], {"running"})
        # A hook aimed at the coordinator's own API (cancel another job), and one at a loopback receiver.
        job = cluster.submit({"tasks": [{"run": "true"}], "webhooks": [
            {"url": f"{cluster.url}/v1/jobs/{victim['id']}/cancel"}, {"url": receiver.url("/hook")}]})
        cluster.wait_job(job["id"])
        assert cluster.server is not None
        server = cluster.server
        wait_until(lambda: server.output().count("refused: its host resolves to 127.0.0.1, a loopback") >= 2, 10,
                   what="the webhook loop to refuse the job's hooks")
        assert receiver.calls == []
        assert cluster.job(victim["id"])["state"] == "running"
        cluster.client.post(f"/v1/jobs/{victim['id']}/cancel")
        server.stop()
        # With the operator's leave, the receiver gets the hook.
        cluster.up("--allow-webhook-host", "127.0.0.1")
        job = cluster.submit({"tasks": [{"run": "true"}], "webhooks": [{"url": receiver.url("/ok"),
                                                                         "if": "{{ job.state == 'COMPLETED' }}"}]})
        cluster.wait_job(job["id"])
        wait_until(lambda: "/ok" in receiver.calls, 10, what="the allowed hook")
    finally:
        receiver.server.shutdown()


@pytest.mark.docker
def test_a_container_that_asks_for_nothing_gets_default_limits(cluster: Cluster, busybox_image: str) -> None:
    cluster.up("--default-memory", "256Mi")
    read = ("cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes; "
            "cat /sys/fs/cgroup/cpu.max 2>/dev/null || cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us")
    plain = cluster.submit({"tasks": [{"image": busybox_image, "run": read}]})
    asked = cluster.submit({"tasks": [{"image": busybox_image, "run": read,
                                       "resources": {"memory": "128Mi", "cpu": 0.5}}]})
    assert cluster.wait_job(plain["id"])["state"] == "completed"
    assert cluster.wait_job(asked["id"])["state"] == "completed"
    memory, cpu = cluster.logs(plain["id"]).split("\n")[:2]
    assert int(memory) == 256 * 2**20
    assert cpu.split()[0] == "100000"  # one core: 100000 us per 100000 us period
    memory, cpu = cluster.logs(asked["id"]).split("\n")[:2]
    assert int(memory) == 128 * 2**20 and cpu.split()[0] == "50000"


def test_nomadlite_and_cloudai_views_redact_secrets(standalone: Cluster) -> None:
    secret = "s3cr3t-" + uuid.uuid4().hex[:8]
    job = standalone.submit({"name": "with-secret", "secrets": {"token": secret},
                             "tasks": [{"run": f"echo using {secret}; exit 3"}]})
    standalone.wait_job(job["id"])
    nid = str(uuid.UUID(hex=job["id"]))
    seq_task = next(t for t in standalone.get("/api/tasks?limit=10")["tasks"] if "REDACTED" in t["command"])
    views = [standalone.get(f"/api/jobs/{nid}"), standalone.client.get("/api/jobs").json(),
             standalone.get(f"/api/tasks/{seq_task['task_id']}"), standalone.get("/api/tasks"),
             standalone.get(f"/v1/jobs/{job['id']}"), standalone.get("/jobs/" + job["id"])]
    for v in views:
        assert secret not in str(v), v
    assert views[0]["command"] == "echo using [REDACTED]; exit 3"
    assert views[2]["command"] == "echo using [REDACTED]; exit 3"
